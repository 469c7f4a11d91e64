"""`streetwatch retrain`: the whole loop for a scheduled job, one step after the other.

reviewed cases -> dataset (+ existing labelled sets, merged onto the project classes) ->
grouped split -> data check -> train -> ONNX export -> evaluation (box + case metrics) ->
registry card -> promotion gate (promotes only when asked). Every step writes its own
artifact (dataset versions under `work_dir`, the run folder, the card, the gate decision),
and `retrain.json` in `work_dir` lists them, so a failed night can be read and resumed by hand
with the single commands.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from detect.export import export_onnx
from detect.registry import promotion_target, runs_dir, save_card
from pipelines.retrain.dataset import Dataset, DatasetError
from pipelines.retrain.evaluate import evaluate_model
from pipelines.retrain.check import Finding
from pipelines.retrain.from_cases import NoUsableCases, dataset_from_cases, skipped_counts
from pipelines.retrain.merge import merge_datasets
from pipelines.retrain.promote import DEFAULT_TOLERANCE, GateDecision, promote, promoted_record_model
from pipelines.retrain.split import split_dataset
from pipelines.retrain.train import ensure_new_model_id, train_model, update_card

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    summary: dict
    decision: GateDecision


def from_cases_step(ds: Dataset, findings: list[Finding]) -> dict:
    """`retrain.json`'s record of the cases' dataset: with the problems, the skipped lines counted as `data from-cases`
    counts them (`skipped_counts`), so that the cases left out for their verifier's regions alone (expected, not a
    fault of the export) are not read as a broken export, nor missed."""
    return {"dataset": str(ds.root), "digest": ds.digest, "counts": ds.manifest.counts,
            "problems": [str(f) for f in findings], "skipped": skipped_counts(findings)}


def retrain(
    *,
    name: str,
    base_model: str,
    work_dir: Path,
    cases: Path | None = None,
    settings=None,
    datasets: list[Dataset] | None = None,
    mapping: dict[str, str | None] | None = None,
    drop_unmapped: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    epochs: int = 30,
    hours: float | None = None,
    imgsz: int = 640,
    batch: int = 16,
    device: str = "cpu",
    workers: int = 0,
    eval_data: Dataset | None = None,
    backend: str = "onnx",
    int8: bool = False,
    do_promote: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_check_failures: bool = False,
) -> RetrainResult:
    """Run the loop; `do_promote` makes the model the promoted one if it passes the gate.

    `settings` (`pipelines.settings.Settings`): export the reviewed cases from that deployment's
    case store and evidence store first (instead of a `cases` export file: with both, the file is read).
    """
    ensure_new_model_id(name)  # before the night's export and datasets, not after them
    if do_promote:  # a promotion a record read first would outvote is refused now, not after the night's training
        promotion_target("registry", name, promoted_record_model)
    work_dir = Path(work_dir)
    inputs = list(datasets or [])
    summary: dict = {"name": name, "base_model": base_model, "work_dir": str(work_dir), "steps": {}}
    steps = summary["steps"]
    if settings is not None and cases is None:
        from pipelines.evidence_store import open_evidence_store
        from pipelines.retrain.reviews import export_reviews

        cases, n, problems = export_reviews(settings.cases.open(), open_evidence_store(settings.evidence_store),
                                            work_dir / "reviews")
        steps["export_reviews"] = {"file": str(cases), "cases": n, "problems": [str(f) for f in problems]}
    if cases is not None:
        try:
            ds, findings = dataset_from_cases(cases, work_dir / "cases", name=f"{name}-cases")
        except NoUsableCases as exc:
            if not inputs:  # nothing else to train on
                raise
            # a night whose reviews give the detector nothing (the verifier's region-only cases) trains on the --data
            # sets: failing it every night would leave the model as stale as no loop at all
            log.warning("%s; training on the --data sets alone", exc)
            steps["from_cases"] = {"skipped": str(exc)}
        else:
            steps["from_cases"] = from_cases_step(ds, findings)
            inputs.append(ds)
    if not inputs:
        raise DatasetError("nothing to train on: give --cases and/or --data")
    merged = merge_datasets(inputs, work_dir / "merged", mapping=mapping or {}, drop_unmapped=drop_unmapped, name=name)
    steps["merge"] = {"dataset": str(merged.root), "digest": merged.digest, "classes": merged.classes,
                      "left_out": merged.manifest.left_out}
    data = split_dataset(merged, work_dir / "split", val_fraction=val_fraction, seed=seed)
    steps["split"] = {"dataset": str(data.root), "digest": data.digest, "splits": data.manifest.counts.get("splits")}
    log.info("training %s on %s (%s)", name, data.root, data.digest[:12])
    trained = train_model(data, base_model, model_id=name, epochs=epochs, imgsz=imgsz, device=device, batch=batch,
                          workers=workers, seed=seed, hours=hours, allow_check_failures=allow_check_failures)
    steps["train"] = {"run_dir": str(trained.run_dir), "weights": str(trained.weights), "final_val": trained.metrics}
    exported = export_onnx(name, imgsz=imgsz, dynamic=True, int8=int8, calib=data.root / "images" if int8 else None)
    steps["export"] = {"onnx": str(exported.path), "id": exported.card.id, "sha256": exported.card.sha256,
                       "engine": str(exported.engine_path) if exported.engine_path else None}
    evaluation = eval_data or data
    result = evaluate_model(name, evaluation, out_dir=runs_dir() / name / "eval", backend=backend, device=device,
                            imgsz=imgsz)
    card = update_card(name, metrics=result.card_metrics(), thresholds=result.cases.thresholds)
    for onnx_card in filter(None, (exported.card, exported.engine_card)):  # the standard export and the engine's variant
        save_card(onnx_card.model_copy(update={"dataset": card.dataset, "training": card.training,
                                               "thresholds": card.thresholds, "metrics": {**onnx_card.metrics, **card.metrics}}))
    steps["eval"] = {"out_dir": str(result.out_dir), "box": result.box.get("overall", result.box),
                     "cases": result.cases.per_type}
    decision = promote(name, evaluation, tolerance=tolerance,
                       backend=backend, device=device, imgsz=imgsz, candidate_eval=result, apply=do_promote)
    steps["gate"] = decision.as_dict()
    summary["model"] = name
    summary["promoted"] = decision.promoted
    (work_dir / "retrain.json").write_text(json.dumps(summary, indent=1, default=str))
    return RetrainResult(summary, decision)
