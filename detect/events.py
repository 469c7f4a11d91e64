"""Violation events: what the rules emit and what the evidence builder and case store consume.

A violation has one id for its whole life, (source, zone, type, object/group), and emits each
lifecycle event once: `opened` when dwell is reached, `updated` optionally (e.g. the stall count
of a street market changed), `cleared` when absent for the clear time. Photos, which have no
dwell, emit `opened` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from detect.frames import Frame
from detect.taxonomy import Severity

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip


class EventKind(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    CLEARED = "cleared"


def _no_detections() -> sv.Detections:
    """An event's default boxes, made when an event is (supervision imported then, not with this module)."""
    import supervision as sv

    return sv.Detections.empty()


@dataclass
class ViolationEvent:
    """One lifecycle step of one violation.

    `detections` are the evidence boxes at this event in `frame` pixel coordinates (with
    `fields.CLASS_NAME`); `first_frame` is the frame at first sight, kept for the evidence bundle.
    `thresholds` records the values the rules used so the manifest can state them. `object_id`
    names the tracked object or group within the zone (`t12`, `g3`; `o0` on photos).
    """

    kind: EventKind
    violation_id: str
    violation_type: str
    source_id: str
    at: datetime
    first_seen: datetime
    zone_id: str | None = None
    zone_kind: str | None = None
    opened_at: datetime | None = None
    cleared_at: datetime | None = None
    dwell_s: float = 0.0
    score: float = 0.0
    detections: sv.Detections = field(default_factory=_no_detections)
    frame: Frame | None = None
    first_frame: Frame | None = None
    texts: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    object_count: int = 1
    thresholds: dict[str, float] = field(default_factory=dict)
    object_id: str | None = None
    severity: Severity = Severity.GENERAL  # the type's, or its road grade's or zone's
