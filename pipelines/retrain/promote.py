"""`streetwatch models promote`: make a model the one pipelines load, only if it is not worse.

The gate compares the candidate with the currently promoted model (yolo11n when none) on one
evaluation set, per violation type, with the product metric (image-level case precision and
recall after the photo rules): for every type the set can evaluate, neither may drop by more
than `tolerance`. It also refuses a candidate that cannot produce a type the current model can
(a garbage-only model would silently end parking detection), since no evaluation set can vouch
for a type it does not label. `--force` with a reason overrides; every decision, passed,
refused or forced, is appended to `registry/promotions.jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from detect.registry import (PROMOTED_FILE, BrokenCardError, ModelNotFoundError, Promotion, default_model, get_card,
                             promoted_record_model, promotion_target, registry_dir, set_promoted)
from detect.taxonomy import Taxonomy, load_taxonomy
from pipelines.retrain.dataset import Dataset
from pipelines.retrain.evaluate import EvalResult, can_show, evaluate_model

DEFAULT_TOLERANCE = 0.02
DECISIONS_LOG = "promotions.jsonl"


@dataclass
class GateDecision:
    candidate: str
    current: str
    data_digest: str
    tolerance: float
    passed: bool
    per_type: dict[str, dict] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    forced: bool = False
    reason: str = ""
    promoted: bool = False
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def as_dict(self) -> dict:
        return asdict(self)


def gate(candidate: EvalResult, current: EvalResult, *, tolerance: float, taxonomy: Taxonomy) -> GateDecision:
    """Pass when no evaluable type loses more than `tolerance` of precision or recall, and no type
    the current model can show becomes impossible."""
    decision = GateDecision(candidate.model, current.model, candidate.cases.digest, tolerance, True)
    for t in candidate.cases.evaluable:
        new, old = candidate.cases.per_type[t], current.cases.per_type.get(t, {})
        row = {"candidate": {k: new.get(k) for k in ("precision", "recall")},
               "current": {k: old.get(k) for k in ("precision", "recall")}, "verdict": "ok"}
        for k in ("precision", "recall"):
            # no predicted cases at all: no false alarms, precision counts as perfect (recall shows the loss)
            n = 1.0 if new.get(k) is None else new[k]
            o = 1.0 if old.get(k) is None else old[k]
            if n < o - tolerance:
                row["verdict"] = "worse"
                decision.reasons.append(f"{t}: case {k} {n:.3f} < current {o:.3f} - tolerance {tolerance}")
        decision.per_type[t] = row
    for t in taxonomy.types.values():
        if can_show(t, current.classes) and not can_show(t, candidate.classes):
            decision.per_type.setdefault(t.id, {})["verdict"] = "lost"
            decision.reasons.append(f"{t.id}: the current model can detect it, the candidate has none of its evidence classes")
    decision.passed = not decision.reasons
    return decision


def promote(
    model_id: str,
    dataset: Dataset,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    force: bool = False,
    reason: str = "",
    backend: str = "onnx",
    device: str = "cpu",
    imgsz: int | None = None,
    out_dir: Path | None = None,
    taxonomy: Taxonomy | None = None,
    candidate_eval: EvalResult | None = None,
    apply: bool = True,
) -> GateDecision:
    """Evaluate candidate and current model on `dataset`, decide, and promote when allowed.

    `apply=False` only decides (the retrain loop without --promote); the decision is logged either way. With `apply`,
    a promotion a record read first would outvote (`promotion_target`) is refused before anything is evaluated.
    """
    if force and not reason.strip():
        raise ValueError("--force needs --reason: say why the gate is overridden (it is recorded)")
    get_card(model_id)  # unknown ids fail before any work
    taxonomy = taxonomy or load_taxonomy()
    current_id = default_model()
    if current_id == model_id:
        return GateDecision(model_id, current_id, dataset.digest, tolerance, False, reasons=["already the promoted model"])
    if apply:  # a record read first that would outvote it refuses the promotion before the evaluations, not after
        promotion_target("registry", model_id, promoted_record_model)
    out_dir = out_dir or registry_dir().parent / "runs" / f"promote-{model_id}-{dataset.digest[:8]}"
    common = dict(backend=backend, device=device, imgsz=imgsz, taxonomy=taxonomy)
    if candidate_eval is None or candidate_eval.cases.digest != dataset.digest:
        candidate_eval = evaluate_model(model_id, dataset, out_dir=out_dir / "candidate", **common)
    try:
        get_card(current_id)
    except ModelNotFoundError as exc:  # its card deleted or broken: every pipeline refuses it, and only a promotion
        # (or mending the card) gets them going
        why = str(exc) if isinstance(exc, BrokenCardError) else "it has no card any more"
        if not force:
            raise ValueError(f"the promoted model '{current_id}' ({registry_dir() / PROMOTED_FILE}) cannot be compared "
                             f"with: {why}; mend its card, or promote with --force --reason to replace it") from None
        decision = GateDecision(model_id, current_id, dataset.digest, tolerance, False,
                                reasons=[f"the promoted model '{current_id}' was not compared: {why}"])
    else:
        current_eval = evaluate_model(current_id, dataset, out_dir=out_dir / "current", **common)
        decision = gate(candidate_eval, current_eval, tolerance=tolerance, taxonomy=taxonomy)
    decision.forced, decision.reason = force and not decision.passed, reason.strip()
    if apply and (decision.passed or force):
        set_promoted(Promotion(
            model=model_id, promoted_at=datetime.now(timezone.utc), previous=current_id,  # the default too: what to go back to
            forced=decision.forced, reason=decision.reason, data_digest=dataset.digest,
            gate={"tolerance": tolerance, "current": current_id, "per_type": decision.per_type, "reasons": decision.reasons},
        ))
        decision.promoted = True
    with open(registry_dir() / DECISIONS_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(decision.as_dict(), default=str) + "\n")
    return decision
