"""The writer stage: a photo and its detections -> findings, thumbnail, and its record (`record.PhotoRecord`).

Runs on its own thread behind the detector, so drawing and JPEG-encoding thumbnails and the
rules never hold up inference. Thumbnails are drawn from the reduced-resolution pixels already
in memory (the report needs ~360 px, not 12 MP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from detect import fields
from detect.engine.profile import StageProfile
from detect.evidence.builder import VerifierInfo
from detect.evidence import drawing
from detect.rules import PhotoRules
from detect.taxonomy import Taxonomy
from detect.verifier import Verdicts
from pipelines.triage.findings import Finding, merge_events
from pipelines.triage.grouping import perceptual_hash
from pipelines.triage.journal import OutputUnwritable
from pipelines.triage.photos import Photo
from pipelines.triage.record import PhotoFinding, PhotoRecord, RecordStatus, TypeVerdict, VerifierModel, boxes_of

THUMBS = "thumbs"


class Analyser:
    """Photo rules (no dwell), per-type findings and report thumbnails for decoded photos."""

    def __init__(self, rules: PhotoRules, taxonomy: Taxonomy, out_dir: Path, thumb_side: int, model_id: str,
                 verifier: VerifierInfo | None = None) -> None:
        """`verifier`: what judges with the detector (`VerifierInfo.of` the checked judgement), named in every record."""
        self.rules = rules
        self.taxonomy = taxonomy
        self.thumb_dir = out_dir / THUMBS
        self.thumb_dir.mkdir(parents=True, exist_ok=True)
        self.thumb_side = thumb_side
        self.model_id = model_id
        self.verifier = VerifierModel(**verifier.to_json()) if verifier is not None else None

    def findings(self, photo: Photo, detections: sv.Detections, verified: frozenset[str] = frozenset()) -> list[Finding]:
        return merge_events(self.rules.process(photo.frame(), detections, verified=verified, grade=photo.grade))

    def record(self, photo: Photo, detections: sv.Detections, stages: StageProfile, verdicts: Verdicts | None = None) -> PhotoRecord:
        """The photo's record; positives also get a thumbnail and a perceptual hash.

        Times the `rules` (findings) and `evidence` (thumbnail, hash) stages into `stages`.
        `verdicts`: the verifier's (None when it is off); its per-type probabilities go in the record.
        """
        with stages.timed("rules"):
            findings = self.findings(photo, detections, verified=Verdicts.judged_types(verdicts))
        extra: dict[str, Any] = {}
        if verdicts is not None:
            extra["verifier"] = {t: TypeVerdict(**v) for t, v in verdicts.to_json().items()}
        if findings:
            with stages.timed("evidence"):
                h, w = photo.image.shape[:2]
                k = min(1.0, self.thumb_side / max(h, w))
                small = cv2.resize(photo.image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
                extra["phash"] = f"{perceptual_hash(small):016x}"  # from the clean thumbnail: 6x cheaper than full size
                thumb = self.thumb_dir / f"{photo.photo_id}.jpg"
                write_thumbnail(thumb, small, k, findings, self.taxonomy)
                extra["thumb"] = f"{THUMBS}/{thumb.name}"
        return PhotoRecord(
            source=photo.source.name,
            **photo.source.locator(),
            **photo.stamp_fields(),
            sha256=photo.sha256,
            status=RecordStatus.OK,
            photo_id=photo.photo_id,
            **photo.facts(),
            model=self.model_id,
            verifier_model=self.verifier,
            detections=boxes_of(detections, photo.scale),
            findings=[PhotoFinding.of(f, self.taxonomy, photo.scale) for f in findings],
            **extra,
        )

def write_thumbnail(path: Path, small: np.ndarray, k: float, findings: list[Finding], taxonomy: Taxonomy | None = None) -> None:
    """The thumbnail (`small` = decoded photo scaled by `k`) with the evidence boxes of its findings drawn, each
    finding in its colour and labelled once, above the box around all its boxes: a label above each box covered the
    box above it (the three lines of a small ad hidden by their own labels at 360 px). The label is the box's class for
    a one-box finding, else the type; in Chinese (`taxonomy`'s names) where a Chinese font letters it, as the
    evidence. The report's caption names every box's class."""
    chinese = taxonomy is not None and drawing.chinese_font() is not None
    names_zh = taxonomy.class_names_zh if chinese else {}
    small = small.copy()
    around, labels, colours = [], [], []
    for colour, finding in enumerate(findings):
        dets = finding.event.detections
        if not len(dets):
            continue
        scaled = sv.Detections(xyxy=dets.xyxy * k, class_id=np.full(len(dets), colour))
        small = sv.BoxAnnotator(thickness=2).annotate(small, scaled)
        around.append([*scaled.xyxy[:, :2].min(0), *scaled.xyxy[:, 2:].max(0)])
        one = str(fields.names(dets)[0])
        labels.append(names_zh.get(one, one) if len(dets) == 1 else (taxonomy.get(finding.type).name_zh if chinese else finding.type))
        colours.append(colour)
    small = drawing.label_boxes(small, np.array(around).reshape(-1, 4), labels, colours, 12 if chinese else 8, padding=2)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if ok:
        try:
            path.write_bytes(buf.tobytes())
        except OSError as exc:
            if exc.errno in OutputUnwritable.FOLDER_ERRNOS:
                raise OutputUnwritable(path, exc) from None
            raise
