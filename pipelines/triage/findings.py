"""Per-photo findings: the photo rules' violation events folded to one finding per violation type.

The rules judge each object (every parked car is its own violation), which is right for a camera
that follows each car over time. An inspector's photo is one report of one scene: three cars on
the pavement in one picture are one illegal-parking case with three boxes. So events of the same
type in one photo are merged here (boxes combined, best score, all texts and phone numbers); the
record of a finding is `record.PhotoFinding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import supervision as sv

from detect import fields
from detect.events import ViolationEvent


@dataclass
class Finding:
    """One violation type seen in one photo."""

    event: ViolationEvent  # the merged event (boxes of all its objects, in decoded-image pixels)
    objects: int = 1
    zones: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.event.violation_type

    @property
    def score(self) -> float:
        return float(self.event.score)


def merge_events(events: list[ViolationEvent]) -> list[Finding]:
    """One finding per violation type, best-scoring first; the best event gives zone and id."""
    by_type: dict[str, list[ViolationEvent]] = {}
    for e in events:
        by_type.setdefault(e.violation_type, []).append(e)
    out = []
    for group in by_type.values():
        group.sort(key=lambda e: -e.score)
        best = group[0]
        dets = sv.Detections.merge([_plain(e.detections) for e in group]) if len(group) > 1 else best.detections
        merged = replace(
            best,
            detections=dets,
            texts=[t for e in group for t in e.texts],
            phones=sorted({p for e in group for p in e.phones}),
            object_count=sum(e.object_count for e in group),
        )
        out.append(Finding(merged, objects=len(group), zones=sorted({e.zone_id or "" for e in group})))
    return sorted(out, key=lambda f: -f.score)


def _plain(dets: sv.Detections) -> sv.Detections:
    """Detections reduced to the fields every event has, so different events merge."""
    keep = {k: v for k, v in dets.data.items() if k in (fields.CLASS_NAME, fields.TEXT, fields.PHONES)}
    out = sv.Detections(xyxy=dets.xyxy, confidence=dets.confidence, class_id=dets.class_id, data=keep)
    for name in (fields.TEXT, fields.PHONES):
        if name not in out.data:
            out.data[name] = fields.column(name, len(out))
    return out
