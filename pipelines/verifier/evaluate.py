"""`streetwatch verifier eval`: the photo judgement triage runs, on a labelled folder, against today's rules.

Every photo goes through the same steps as in `streetwatch triage` (detector and neck map,
verifier, OCR of posting-like tiles, evidence regions, photo rules) and, side by side, through the
detector-only rules (`--verifier none`). Per type and per source: precision, recall and F1 with 95 %
intervals (group bootstrap). Run it on photos the heads never saw (a city's own held-out set), or
read the training card's figures, which come from a group split of the training data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from detect.engine.profile import StageProfile
from detect.events import ViolationEvent
from detect.frames import Frame
from detect.imageio import decode_image
from detect.judgement import Judgement
from detect.rules import PhotoRules
from pipelines.triage.pipeline import judge_seen, see_photo
from pipelines.triage.text import OcrMode, PhotoText
from pipelines.verifier.data import Dataset, Photo
from pipelines.verifier.metrics import figures
from pipelines.verifier.operating_points import head_of
from pipelines.verifier.run import RULE_TYPES, finds
from pipelines.verifier.validation_csv import verdict_rows

Evidence = dict[str, list[tuple[float, float, float, float]]]
"""One photo's evidence boxes per violation type found, normalised to the photo."""

WHEN = datetime(2026, 1, 1, 4, tzinfo=UTC)


def evaluate(dataset: Dataset, detector, judgement: Judgement, *, ocr: str = "auto", phone_region: str = "CN",
             imgsz: int = 640, boot: int = 1000, progress: Callable[[int, int], None] | None = None) -> tuple[dict, list[dict]]:
    """Figures of the verifier's judgement and of the detector-only rules, per head and source, and each
    photo's verdict per head (`verdict_rows_by_head`)."""
    found_v, found_r, probs, boxes = judge(dataset.photos, detector, judgement, ocr=ocr, phone_region=phone_region, imgsz=imgsz,
                                           progress=progress)
    return figures_by_head(dataset, found_v, found_r, boot), verdict_rows_by_head(dataset, found_v, probs, boxes)


def judge(photos: list[Photo], detector, judgement: Judgement, *, ocr: str = "auto", phone_region: str = "CN", imgsz: int = 640,
          progress: Callable[[int, int], None] | None = None
          ) -> tuple[list[set[str]], list[set[str]], list[dict[str, float]], list[Evidence]]:
    """Per photo: the types triage finds (detector, verifier, OCR of posting-like tiles, evidence
    regions, photo rules), those the detector-only rules find, the verifier's probability per
    type it judges (`Verdicts.image`; empty without a verifier), and the evidence boxes of each type
    found (normalised to the photo: what the case would show, `localisation` measures where they land)."""
    rules = PhotoRules(taxonomy=judgement.taxonomy)
    text = PhotoText(OcrMode(ocr), region=phone_region, gate=judgement.ocr_gate, taxonomy=judgement.taxonomy)
    stages = StageProfile(seconds={})
    found_v, found_r, probs, boxes = [], [], [], []
    for i, photo in enumerate(photos):
        data = photo.path.read_bytes()
        image = decode_image(data, str(photo.path), max_side=imgsz).image
        plain, verdicts = see_photo(image, detector, judgement, stages)
        dets = judge_seen(image, data, photo.file, plain, verdicts, judgement, text, stages)
        frame = Frame(image, photo.file, WHEN)
        events = rules.process(frame, dets, verified=judgement.verified_types)
        found_v.append({e.violation_type for e in events})
        boxes.append(evidence_boxes(events, *image.shape[1::-1]))
        found_r.append({e.violation_type for e in rules.process(frame, plain)})
        probs.append(verdicts.image if verdicts is not None else {})
        if progress:
            progress(i + 1, len(photos))
    return found_v, found_r, probs, boxes


def evidence_boxes(events: list[ViolationEvent], width: int, height: int) -> Evidence:
    """Type -> the normalised evidence boxes of the events of that type (x1, y1, x2, y2, rounded to 1/10,000)."""
    out: Evidence = {}
    for e in events:
        if len(e.detections):
            out.setdefault(e.violation_type, []).extend(
                tuple(round(float(v), 4) for v in b) for b in e.detections.xyxy / [width, height, width, height])
    return out


def figures_by_head(dataset: Dataset, found_v: list[set[str]], found_r: list[set[str]], boot: int = 1000) -> dict:
    """Per label head and source: P/R/F1 (intervals by group bootstrap) of the judgement and of today's rules."""
    sources = np.array([p.source for p in dataset.photos])
    groups = np.array([p.group for p in dataset.photos])
    out = {}
    for head in RULE_TYPES:
        y = dataset.labels(head)
        m = y >= 0  # photos labelled for this head
        if not m.any():
            continue
        v, r = finds(found_v, head)[m], finds(found_r, head)[m]
        out[head] = {"verifier": figures(v, v.astype(float), y[m], sources[m], groups[m], boot),
                     "rules_today": figures(r, r.astype(float), y[m], sources[m], groups[m], 0)}
    return out


def verdict_rows_by_head(dataset: Dataset, found: list[set[str]], probs: list[dict[str, float]],
                         evidence: list[Evidence] | None = None) -> list[dict]:
    """Each photo's verdict per label head from the types the judgement found in it, with the verifier's
    probability for the head (its types' highest; empty where the verifier does not judge the head) and, when
    given, the evidence boxes of the head's types (`validation_csv.write_validation_csv`)."""
    return [row for head in RULE_TYPES if (dataset.labels(head) >= 0).any()
            for row in verdict_rows(dataset, head, finds(found, head), head_probabilities(probs, head),
                                    None if evidence is None else [[b for t in RULE_TYPES[head] for b in e.get(t, [])] for e in evidence])]


def head_probabilities(probs: list[dict[str, float]], head: str) -> np.ndarray:
    """Per photo: the highest verifier probability among the types of `head`; NaN where it judged none of them."""
    return np.array([max((p for t, p in photo.items() if head_of(t) == head), default=np.nan) for photo in probs])
