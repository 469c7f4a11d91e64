"""`streetwatch eval`: box metrics per class and the product metric per violation type.

Box metrics (precision, recall, mAP50, mAP50-95 per class, confusion matrix and PR curves as
images) come from Ultralytics' validator; they only mean something when the model's classes are
the dataset's classes, so they are skipped otherwise.

The product metric counts cases, not boxes: every evaluation picture goes through the detector
and the photo rules (`detect.rules.PhotoRules`: taxonomy evidence, per-type min_conf/min_area)
exactly as photo triage runs them, and a picture is a predicted case of a type when the rules
open one. Ground truth: a picture is a case of a type when its labelled classes carry enough of
the type's evidence (taxonomy weights summed over distinct classes >= min_evidence; for the
project's own classes one box is enough). Only types whose evidence the dataset labels at all
are *evaluable*: a dataset of garbage photos cannot say whether a model finds parked cars.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from detect.frames import Frame
from detect.imageio import ImageReadError, read_image
from detect.taxonomy import Taxonomy, ViolationType, load_taxonomy
from pipelines.retrain.dataset import Dataset

NONE = "none"
BATCH = 8


@dataclass
class TypeScore:
    """Image-level counts and rates of one violation type."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def as_dict(self) -> dict:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {**asdict(self), "positives": self.tp + self.fn, "predicted": self.tp + self.fp,
                "precision": r(self.precision), "recall": r(self.recall)}


@dataclass
class CaseMetrics:
    """Product metric of one model on one dataset split."""

    model: str
    dataset: str
    digest: str
    split: str | None
    images: int
    evaluable: list[str]
    per_type: dict[str, dict]
    confusion: dict[str, dict[str, int]]
    thresholds: dict
    per_image: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def can_show(vtype: ViolationType, class_names: list[str] | set[str]) -> bool:
    """Whether classes with these names can, together, be evidence of `vtype`."""
    return vtype.evidence_score(set(class_names)) >= vtype.min_evidence


def truth_types(class_names: set[str], taxonomy: Taxonomy) -> set[str]:
    """Violation types a picture's labelled classes make it a case of."""
    return {t.id for t in taxonomy.types.values() if can_show(t, class_names)}


def evaluable_types(dataset_classes: list[str], taxonomy: Taxonomy) -> list[str]:
    return [t.id for t in taxonomy.types.values() if can_show(t, dataset_classes)]


def detector_conf(taxonomy: Taxonomy) -> float:
    """Run the detector at the lowest min_conf of any type; each type's rule applies its own."""
    return min(t.min_conf for t in taxonomy.types.values())


def case_metrics(detector, dataset: Dataset, *, taxonomy: Taxonomy | None = None, split: str | None = "default",
                 model_name: str = "") -> CaseMetrics:
    """Run `detector` + photo rules over the split (default: val when split, else all images)."""
    from detect.rules import PhotoRules

    taxonomy = taxonomy or load_taxonomy()
    split = dataset.eval_split() if split == "default" else split
    entries = dataset.files(split)
    rules = PhotoRules(taxonomy=taxonomy)
    evaluable = evaluable_types(dataset.classes, taxonomy)
    scores = {t: TypeScore() for t in evaluable}
    confusion: dict[str, Counter] = {}
    per_image, unreadable = [], []
    now = datetime.now(timezone.utc)
    for start in range(0, len(entries), BATCH):
        batch, images = [], []
        for e in entries[start:start + BATCH]:
            try:
                images.append(read_image(dataset.path(e.image)))
                batch.append(e)
            except ImageReadError as exc:
                unreadable.append(str(exc))
        for e, image, dets in zip(batch, images, detector.detect(images) if images else []):
            frame = Frame(image=image, source_id=e.image, ts=now, path=str(dataset.path(e.image)))
            predicted = {ev.violation_type for ev in rules.process(frame, dets)} & set(evaluable)
            labelled = {dataset.classes[int(c)] for c in dataset.labels(e).boxes[:, 0]}
            truth = truth_types(labelled, taxonomy) & set(evaluable)
            for t in evaluable:
                s = scores[t]
                if t in truth:
                    s.tp += t in predicted
                    s.fn += t not in predicted
                else:
                    s.fp += t in predicted
                    s.tn += t not in predicted
            for g in sorted(truth) or [NONE]:
                row = confusion.setdefault(g, Counter())
                row.update(sorted(predicted) or [NONE])
            per_image.append({"image": e.image, "truth": sorted(truth), "predicted": sorted(predicted)})
    labels = [*evaluable, NONE]
    return CaseMetrics(
        model=model_name or getattr(detector, "model_id", ""),
        dataset=dataset.name,
        digest=dataset.digest,
        split=split,
        images=len(per_image),
        evaluable=evaluable,
        per_type={t: scores[t].as_dict() for t in evaluable},
        confusion={g: {p: int(confusion.get(g, Counter())[p]) for p in labels} for g in labels},
        thresholds=thresholds_record(taxonomy, evaluable),
        per_image=per_image,
        unreadable=unreadable,
    )


def thresholds_record(taxonomy: Taxonomy, types: list[str]) -> dict:
    return {"detector_conf": detector_conf(taxonomy),
            "types": {t: {"min_conf": taxonomy.types[t].min_conf, "min_area": taxonomy.types[t].min_area,
                          "min_evidence": taxonomy.types[t].min_evidence} for t in types}}


def box_metrics(weights: Path, model_classes: list[str], dataset: Dataset, out_dir: Path, *, imgsz: int,
                device: str = "cpu", batch: int = 8, split: str | None = "default") -> dict:
    """Ultralytics' validator on the split: overall and per-class P/R/mAP, plots into `out_dir`."""
    if weights.suffix != ".pt":
        return {"skipped": f"box metrics need the .pt checkpoint, got {weights.name}"}
    if list(model_classes) != list(dataset.classes):
        return {"skipped": f"model classes {model_classes[:6]}{'…' if len(model_classes) > 6 else ''} differ from the "
                           f"dataset's {dataset.classes}: box metrics only compare like with like"}
    split = dataset.eval_split() if split == "default" else split
    if split is None:  # an unsplit evaluation set: all.txt is both lists of its data.yaml
        split = "val"
    data_yaml = dataset.ultralytics_yaml(out_dir / "data.yaml")

    from detect.runtime_env import import_yolo

    YOLO = import_yolo()
    m = YOLO(str(weights), task="detect").val(
        data=str(data_yaml), split=split, imgsz=imgsz, batch=batch, device=device, plots=True, workers=0,
        project=str(out_dir.parent), name=out_dir.name, exist_ok=True, verbose=False,
    )
    r = lambda v: round(float(v), 4)  # noqa: E731
    per_class = {
        row["Class"]: {"images": int(row["Images"]), "instances": int(row["Instances"]), "precision": r(row["Box-P"]),
                       "recall": r(row["Box-R"]), "mAP50": r(row["mAP50"]), "mAP50-95": r(row["mAP50-95"])}
        for row in m.summary()
    }
    return {
        "overall": {"precision": r(m.box.mp), "recall": r(m.box.mr), "mAP50": r(m.box.map50), "mAP50-95": r(m.box.map)},
        "per_class": per_class,
        "plots": sorted(p.name for p in out_dir.glob("*.png")),
    }


@dataclass
class EvalResult:
    """Everything `streetwatch eval` measured for one model."""

    model: str
    classes: list[str]
    box: dict
    cases: CaseMetrics
    out_dir: Path

    def as_dict(self, per_image: bool = True) -> dict:
        cases = asdict(self.cases)
        if not per_image:
            cases.pop("per_image")
        return {"model": self.model, "classes": self.classes, "box": self.box, "cases": cases, "out_dir": str(self.out_dir)}

    def card_metrics(self) -> dict:
        """What goes into the model card (per-image detail stays in the eval folder)."""
        c = self.cases
        return {"eval": {"dataset": c.dataset, "digest": c.digest, "split": c.split, "images": c.images,
                         "box": {k: v for k, v in self.box.items() if k != "plots"},
                         "cases": {"evaluable": c.evaluable, "per_type": c.per_type, "confusion": c.confusion}}}


def evaluate_model(model: str, dataset: Dataset, *, out_dir: Path, backend: str = "onnx", device: str = "cpu",
                   imgsz: int | None = None, taxonomy: Taxonomy | None = None, split: str | None = "default") -> EvalResult:
    """Box metrics and case metrics of `model` (id or weights file) on `dataset`; writes eval.json."""
    from detect.engine import load_detector
    from detect.registry import get_card, path_model_id, resolve_weights

    taxonomy = taxonomy or load_taxonomy()
    weights, card = resolve_weights(model)
    if card is None and weights.suffix != ".onnx":
        try:
            card = get_card(path_model_id(weights))  # the card of its export, or of the registered model with these bytes
        except FileNotFoundError:
            card = None
    imgsz = imgsz or (card.imgsz if card else 640)
    detector = load_detector(model, backend=backend, device=device, conf=detector_conf(taxonomy), imgsz=imgsz)
    names = [detector.names[i] for i in sorted(detector.names)]
    out_dir.mkdir(parents=True, exist_ok=True)
    box = box_metrics(weights, names, dataset, out_dir / "box", imgsz=imgsz, device=device, split=split)
    cases = case_metrics(detector, dataset, taxonomy=taxonomy, split=split, model_name=str(model))
    result = EvalResult(str(model), names, box, cases, out_dir)
    (out_dir / "eval.json").write_text(json.dumps(result.as_dict(), indent=1, default=str))
    return result


def comparison_rows(a: EvalResult, b: EvalResult) -> list[tuple[str, str, str, str]]:
    """(metric, a, b, b - a) rows: per-type case precision/recall, then per-class box mAP50."""

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    def delta(x, y) -> str:
        return "-" if x is None or y is None else f"{y - x:+.3f}"

    rows = []
    for t in sorted(set(a.cases.evaluable) | set(b.cases.evaluable)):
        for k in ("precision", "recall"):
            x, y = a.cases.per_type.get(t, {}).get(k), b.cases.per_type.get(t, {}).get(k)
            rows.append((f"{t} case {k}", fmt(x), fmt(y), delta(x, y)))
    pa, pb = a.box.get("per_class", {}), b.box.get("per_class", {})
    for c in sorted(set(pa) | set(pb)):
        for k in ("mAP50", "mAP50-95"):
            x, y = pa.get(c, {}).get(k), pb.get(c, {}).get(k)
            rows.append((f"{c} box {k}", fmt(x), fmt(y), delta(x, y)))
    return rows
