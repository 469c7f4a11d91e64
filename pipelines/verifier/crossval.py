"""`streetwatch verifier crossval`: the whole photo judgement, validated on a group split of the training data.

The card's figures come from the heads alone: each photo's out-of-fold head score against its
fold's threshold. What a city gets from `triage` is more than that: the detector, the heads, OCR
of the posting-like tiles (on street photos phone numbers and small-ad words carry flyposting), the
evidence regions, the stall-versus-spillover decision and the photo rules. This command measures
that. It splits the photos `folds` ways by group (a place and day stays on one side), trains every
head on the other folds exactly as `verifier train` does (synthetic small ads pasted on training
photos only; thresholds, OCR gate and calibration from the training part alone), and judges each
held-out photo as `triage` does with those heads (`evaluate.judge`). Per type and source: P/R/F1
with group-bootstrap intervals, beside today's detector-only rules on the same photos; and where the
found photos' evidence boxes land against the labelled boxes of `boxes.csv` (`localisation`).

It costs one training per fold (without the nested thresholds the card's figures need) and one
detector pass over every photo, plus OCR where the gate opens.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detect.judgement import Judgement, load_judgement
from detect.taxonomy import Taxonomy
from detect.verifier.heads import HeadsCard, HeadSet
from pipelines.verifier.data import PARKING, Dataset, stratified_group_folds
from detect.verifier.pooling import tile_boxes
from pipelines.verifier.evaluate import Evidence, figures_by_head, judge, verdict_rows_by_head
from pipelines.verifier.localisation import localisation
from pipelines.verifier.options import TrainOptions
from pipelines.verifier.run import features, head_arrays, train_heads
from pipelines.verifier.train import TILE_HEADS

log = logging.getLogger(__name__)


@dataclass
class CrossValidation:
    figures: dict  # head -> {"verifier": per-source figures of the whole judgement, "rules_today": ...}
    folds: list[dict] = field(default_factory=list)  # per fold: photos trained on and judged, heads shipped and refused
    fold_of: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # per photo: the fold that judged it
    found: list[set[str]] = field(default_factory=list)  # per photo: the violation types the judgement found
    probabilities: list[dict[str, float]] = field(default_factory=list)  # per photo: its fold's verifier probability per type
    evidence: list[Evidence] = field(default_factory=list)  # per photo: the normalised evidence boxes of each type found
    localisation: dict = field(default_factory=dict)  # where those boxes land against boxes.csv (`localisation.localisation`)

    def describe(self) -> dict:
        return {"figures": self.figures, "folds": self.folds, "localisation": self.localisation}

    def verdict_rows(self, dataset: Dataset) -> list[dict]:
        """Each photo's verdict per label head, for `validation_csv.write_validation_csv`."""
        return verdict_rows_by_head(dataset, self.found, self.probabilities, self.evidence)


def photo_folds(dataset: Dataset, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """One split for every head: groups kept whole, each source's photos and each type's positives
    spread over the folds (stratified by source and by the rarest type a photo shows)."""
    labels = {h: dataset.labels(h) for h in (*TILE_HEADS, PARKING)}
    rarest_first = sorted(labels, key=lambda h: int((labels[h] == 1).sum()))
    shown = [next((n + 1 for n, h in enumerate(rarest_first) if labels[h][i] == 1), 0) for i in range(len(dataset.photos))]
    sources = sorted({p.source for p in dataset.photos})
    strat = np.array([s + (len(rarest_first) + 1) * sources.index(p.source) for s, p in zip(shown, dataset.photos, strict=True)])
    return stratified_group_folds(strat, np.array([p.group for p in dataset.photos]), k, seed)


def cross_validate(dataset: Dataset, options: TrainOptions, cache: Path, taxonomy: Taxonomy, *, ocr: str = "auto",
                   phone_region: str = "CN", boot: int = 1000, progress: Callable[[str], None] | None = None) -> CrossValidation:
    """Every photo judged as triage judges it, by heads trained without its group (see the module doc)."""
    detector, feats = features(dataset, options, cache, progress)
    n = len(dataset.photos)
    found_v: list[set[str]] = [set() for _ in range(n)]
    found_r: list[set[str]] = [set() for _ in range(n)]
    probs: list[dict[str, float]] = [{} for _ in range(n)]
    boxes: list[Evidence] = [{} for _ in range(n)]
    fold_of = np.full(n, -1)
    folds = []
    splits = photo_folds(dataset, options.folds, options.seed)
    with tempfile.TemporaryDirectory(prefix="verifier-crossval-") as tmp:
        for k, (train, held_out) in enumerate(splits):
            step = f"fold {k + 1}/{len(splits)}"
            if progress:
                progress(f"{step}: training the heads on {len(train)} photos")
            results, refused = train_heads(dataset, feats, options, within=train, nested=False)
            judgement = _judgement(Path(tmp), f"{options.verifier_id}-fold{k + 1}", options, feats.tiles.shape[2], results, refused,
                                   taxonomy)
            judgement.check(detector)
            photos = [dataset.photos[i] for i in held_out]
            fv, fr, fp, fb = judge(photos, detector, judgement, ocr=ocr, phone_region=phone_region, imgsz=options.imgsz,
                               progress=progress and (lambda i, total: progress(f"{step}: judging {i}/{total}")))
            for i, v, r, p, b in zip(held_out, fv, fr, fp, fb, strict=True):
                found_v[i], found_r[i], probs[i], boxes[i], fold_of[i] = v, r, p, b, k
            folds.append({"trained_on": len(train), "judged": len(held_out), "heads": sorted(judgement.verified_types),
                          "refused": {h: round(f1, 3) for h, f1 in refused.items()}})
            log.info("%s: %s", step, folds[-1])
    return CrossValidation(figures_by_head(dataset, found_v, found_r, boot), folds, fold_of, found_v, probs, boxes,
                           localisation(dataset, boxes, tile_boxes(*options.tiles)))


def _judgement(folder: Path, verifier_id: str, options: TrainOptions, dim: int, results, refused, taxonomy: Taxonomy) -> Judgement:
    """A fold's heads as a verifier on disk (card + weights), loaded the way triage loads one."""
    specs, arrays = head_arrays(results, refused)
    if not specs:
        return Judgement(None, taxonomy)
    card = HeadsCard(id=verifier_id, backbone=options.backbone, feature_dim=dim, imgsz=options.imgsz, tiles=options.tiles,
                     weights=f"{verifier_id}.npz", heads=specs, notes="cross-validation fold heads")
    path = folder / f"{verifier_id}.yaml"
    HeadSet(card, {}).save(path, arrays)
    return load_judgement(str(path), taxonomy)
