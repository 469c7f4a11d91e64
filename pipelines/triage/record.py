"""One photo's record: the line triage writes to `results.jsonl`, and what everything after reads back.

The analyser (`analyse.Analyser.record`) makes a `PhotoRecord` of a photo (its facts: time, place,
size), the detector's boxes, the photo rules' findings (one per violation type, with its boxes,
texts and phone numbers) and the verifier's verdicts; `journal.Journal` writes it as one JSON line;
`journal.read_records` gives it back typed to the report and CSV (`report.py`), the grouping and the
case writer (`grouping.py`, `cases.py`) and the API (`GET /api/v1/triage/jobs/{id}/results`).
A finding goes back to a `ViolationEvent` in one place, `PhotoFinding.event`, the inverse of
`PhotoFinding.of`; boxes go back to `sv.Detections` in one place, `detections_of`.

Lines stay readable across releases (`--resume` of an older run): a record holds the fields its
writer set and `to_json` writes only those (an error has no photo facts, a box without text no
`text`), fields added since the first release have defaults (`path`, `member`, `thresholds`,
`verifier`, `file_size`), and keys this release does not know are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import numpy as np
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from detect import fields
from detect.events import EventKind, ViolationEvent
from detect.frames import Frame
from detect.taxonomy import Severity, Taxonomy
from pipelines.triage.findings import Finding

IsoTime = Annotated[datetime, PlainSerializer(lambda t: t.isoformat(), return_type=str, when_used="json")]
"""A time written as Python's ISO 8601 (`2024-06-03T09:00:00+08:00`), as every release wrote it."""


class RecordModel(BaseModel):
    """Base of the record's parts: unknown keys (a newer release's) are ignored, not errors."""

    model_config = ConfigDict(extra="ignore")

    def to_json(self) -> dict[str, Any]:
        """The fields its writer set, as JSON values (what a `results.jsonl` line holds)."""
        return self.model_dump(mode="json", exclude_unset=True)


class RecordStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    DUPLICATE = "duplicate"


class Box(RecordModel):
    """One box in full-resolution pixels of the upright photo."""

    class_name: str = Field(description="Detector class (or `text`, `small_ad_text`, `verified:<type>` ...).")
    conf: float = Field(description="Confidence (a verifier region: its probability).")
    xyxy: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in full-resolution pixels.")
    text: str | None = Field(None, description="OCR text of a text line (text boxes only).")


def boxes_of(detections: sv.Detections, scale: float) -> list[Box]:
    """Boxes of `detections` (decoded-image pixels) in full-resolution pixels (`scale` = full / decoded)."""
    names = fields.names(detections)
    conf = detections.confidence if detections.confidence is not None else np.ones(len(detections))
    texts = detections.data.get(fields.TEXT)
    out = []
    for i in range(len(detections)):
        text = str(texts[i]) if texts is not None and str(texts[i]) else None
        out.append(Box(class_name=str(names[i]), conf=round(float(conf[i]), 4),
                       xyxy=[round(float(v) * scale, 1) for v in detections.xyxy[i]], **({"text": text} if text else {})))
    return out


def detections_of(boxes: Sequence[Box]) -> sv.Detections:
    """Recorded boxes as detections (full-resolution pixels). A record keeps class names, not the ids of
    the model that saw them, so `class_id` is -1 (no detector class), as `fields.merge` fills it."""
    if not boxes:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([b.xyxy for b in boxes], dtype=float),
        confidence=np.array([b.conf for b in boxes], dtype=float),
        class_id=np.full(len(boxes), -1, dtype=int),
        data={fields.CLASS_NAME: np.array([b.class_name for b in boxes], dtype=object),
              fields.TEXT: np.array([b.text or "" for b in boxes], dtype=object)},
    )


class VerifierModel(RecordModel):
    """Which verifier heads judged a photo (`detect.evidence.VerifierInfo`): without it a line named the detector only,
    and the results of two runs either side of a `verifier promote` could not be told apart."""

    id: str = Field(description="The verifier's id; `none` when the detector's classes judged alone.")
    card_sha256: str | None = Field(None, description="SHA-256 of its card (the thresholds).")
    heads_sha256: str | None = Field(None, description="SHA-256 of its heads file (the weights).")


class TypeVerdict(RecordModel):
    """The verifier's judgement of one violation type on the whole photo."""

    p: float = Field(description="Probability of the photo: its best tile, or its best object.")
    threshold: float = Field(description="The type's threshold.")


class PhotoFinding(RecordModel):
    """One violation type seen in one photo: all its objects' boxes, texts and phone numbers."""

    type: str = Field(description="Violation type id.")
    name_zh: str = Field(description="Chinese name of the type.")
    name_en: str = Field(description="English name of the type.")
    score: float = Field(description="The best object's score.")
    zone_id: str | None = Field(None, description="Zone of the best object (`image`: the photo judged as a whole).")
    zone_kind: str | None = Field(None, description="Kind of that zone.")
    object_count: int = Field(1, description="Objects counted (stalls of a market, cars on the pavement).")
    boxes: list[Box] = Field(default_factory=list, description="Evidence boxes.")
    texts: list[str] = Field(default_factory=list, description="OCR text of the evidence.")
    phones: list[str] = Field(default_factory=list, description="Normalised phone numbers in that text.")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Thresholds the rules used.")
    severity: Severity = Field(Severity.GENERAL, description="Severity of the case it opens (general, major, serious): the type's or its road grade's.")

    @classmethod
    def of(cls, finding: Finding, taxonomy: Taxonomy, scale: float) -> PhotoFinding:
        """The record of a finding (the photo rules' events of one type, merged; decoded-image pixels)."""
        e = finding.event
        vt = taxonomy.get(e.violation_type)
        return cls(type=e.violation_type, name_zh=vt.name_zh, name_en=vt.name_en, score=round(finding.score, 4),
                   zone_id=e.zone_id, zone_kind=e.zone_kind, object_count=e.object_count,
                   boxes=boxes_of(e.detections, scale), texts=e.texts, phones=e.phones, thresholds=e.thresholds,
                   severity=e.severity)

    def detections(self) -> sv.Detections:
        """The evidence boxes as detections (full-resolution pixels)."""
        return detections_of(self.boxes)

    def event(self, photo: PhotoRecord, violation_id: str, frame: Frame | None = None, *,
              first_seen: datetime | None = None, first_frame: Frame | None = None,
              group: Sequence[PhotoFinding] = ()) -> ViolationEvent:
        """This finding of `photo` as the `opened` event the photo rules made of it: the one way back from a
        record to an event (evidence boxes in full-resolution pixels, `frame` the photo at full resolution).

        `group`: findings of the same violation in other photos (a case's near-duplicates); their texts and
        phone numbers join this one's, and the case takes the most serious of their severities.
        `first_seen`: when the violation was first photographed (default: this photo's time).
        """
        together = [self, *group]
        return ViolationEvent(
            kind=EventKind.OPENED,
            violation_id=violation_id,
            violation_type=self.type,
            source_id=photo.photo_id or "",
            at=photo.capture_time,
            first_seen=first_seen or photo.capture_time,
            opened_at=photo.capture_time,
            zone_id=self.zone_id,
            zone_kind=self.zone_kind,
            score=self.score,
            detections=self.detections(),
            frame=frame,
            first_frame=first_frame,
            texts=sorted({t for f in together for t in f.texts}),
            phones=sorted({p for f in together for p in f.phones}),
            object_count=self.object_count,
            thresholds=dict(self.thresholds),
            severity=Severity.most_serious(f.severity for f in together),
        )


class PhotoRecord(RecordModel):
    """One input of a triage run: a photo judged (`ok`), or why it was not (`error`, `duplicate`)."""

    source: str = Field(description="The input as the user named it (`archive.zip!member` for a zip member).")
    path: str | None = Field(None, description="The file to read the photo again from (the archive, for a member).")
    member: str | None = Field(None, description="The member's name in that archive.")
    sha256: str | None = Field(None, description="Content digest (the photo's id).")
    status: RecordStatus = Field(description="ok, error or duplicate.")
    reason: str | None = Field(None, description="Why it is not `ok`.")
    reason_zh: str | None = Field(None, description="That reason in Chinese, as inspectors read it (`reasons.reason_zh`).")
    duplicate_of: str | None = Field(None, description="The input with the same content recorded first.")
    file_size: int | None = Field(None, description="Bytes of the file it was read from (the archive, for a member), "
                                                    "as it was before it was read.")
    file_mtime_ns: int | None = Field(None, description="That file's modification time (ns since 1970): while it and "
                                                        "`file_size` are unchanged, `--resume` keeps the record unread.")
    photo_id: str | None = Field(None, description="First 16 hex digits of the SHA-256: names thumbnails and evidence.")
    width: int | None = Field(None, description="Full-resolution width, after the EXIF orientation.")
    height: int | None = Field(None, description="Full-resolution height.")
    taken_at: IsoTime | None = Field(None, description="Capture time (ISO 8601 with offset).")
    time_source: str | None = Field(None, description="Where the time came from: exif, name (the file name: mmexport…, IMG_20231129_101522 …), "
                                                  "file (its modification time) or run.")
    lat: float | None = Field(None, description="WGS-84 latitude from EXIF GPS (None: no GPS).")
    lon: float | None = Field(None, description="WGS-84 longitude.")
    grid_cell: str | None = Field(None, description="单元网格 cell at that position (with --grid).")
    warnings: list[str] = Field(default_factory=list, description="What could not be read (EXIF time ...), the photo still judged.")
    model: str | None = Field(None, description="The detector that saw it.")
    detections: list[Box] = Field(default_factory=list, description="Every box the detector (and OCR) found.")
    findings: list[PhotoFinding] = Field(default_factory=list, description="Violations found, one per type, best first.")
    verifier: dict[str, TypeVerdict] | None = Field(None, description="Verifier verdicts per type (absent when it was off).")
    verifier_model: VerifierModel | None = Field(None, description="The verifier that judged it, as its evidence manifest's "
                                                                   "`verifier` (id `none`: the detector's classes alone).")
    phash: str | None = Field(None, description="Perceptual hash (16 hex digits) of a photo with findings.")
    thumb: str | None = Field(None, description="Its thumbnail, relative to the output folder.")

    @property
    def ok(self) -> bool:
        return self.status is RecordStatus.OK

    @property
    def capture_time(self) -> datetime:
        """`taken_at` of a judged photo (every `ok` record has it)."""
        if self.taken_at is None:
            raise ValueError(f"{self.source}: record has no taken_at")
        return self.taken_at

    @property
    def has_gps(self) -> bool:
        return self.lat is not None and self.lon is not None
