"""What the service keeps per running camera: rules, ring buffer, OCR state, and re-checks.

The inference worker is the only thread that touches a camera's rules and ring (they are
stateful and ordered by frame time); the intake thread gets events and re-check requests with
everything they need, so it never reads rules state.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import supervision as sv

from detect.candidates import candidates, scene_views
from detect.events import ViolationEvent
from detect.evidence.builder import BundleContext
from detect.evidence.ring import FrameRing
from detect.frames import Frame, GeoPoint
from detect.ocr import TextEvidence, merge_with_texts
from detect.rules import CameraRules
from detect.scenes import Scene
from detect.taxonomy import Taxonomy
from pipelines.cctv.config import Camera
from pipelines.cctv.reader import CameraReader

STRIP_BEFORE_S = 20.0
"""Seconds of ring-buffer frames before an opening that go into the evidence strip."""

STRIP_AFTER_S = 10.0
"""Seconds after an opening whose frames join the strip (posted once they have been seen)."""


@dataclass
class CameraRuntime:
    camera: Camera
    rules: CameraRules
    ring: FrameRing
    reader: CameraReader
    generation: int
    text: TextEvidence | None = None
    texts: sv.Detections = field(default_factory=sv.Detections.empty)
    next_ocr: datetime | None = None
    next_verify: datetime | None = None
    strips_due: list[tuple[str, datetime]] = field(default_factory=list)  # (violation id, opened at)

    @property
    def id(self) -> str:
        return self.camera.id

    def with_texts(self, frame: Frame, detections: sv.Detections) -> sv.Detections:
        """Detector boxes plus OCR text lines; text is read every `ocr_interval_s` and reused between reads
        (posters do not move), so flyposting dwell is judged on every frame."""
        interval = self.camera.config.ocr_interval_s
        if self.text is None or interval is None:
            return detections
        if self.next_ocr is None or frame.ts >= self.next_ocr:
            self.texts = self.text.detect(frame.image)
            self.next_ocr = frame.ts + timedelta(seconds=interval)
        return merge_with_texts(detections, self.texts) if len(self.texts) else detections

    def strips_ready(self, ts: datetime) -> list[tuple[str, list[Frame]]]:
        """Violations opened at least STRIP_AFTER_S ago, with the ring frames after their opening."""
        ready = [(vid, at) for vid, at in self.strips_due if (ts - at).total_seconds() >= STRIP_AFTER_S]
        self.strips_due = [d for d in self.strips_due if d not in ready]
        return [(vid, [f for f in self.ring.around(at, 0.0, STRIP_AFTER_S) if f.ts > at]) for vid, at in ready]

    def verify_due(self, ts: datetime) -> bool:
        if self.next_verify is not None and ts < self.next_verify:
            return False
        self.next_verify = ts + timedelta(seconds=self.camera.config.verify_every_s)
        return True

    def context(self, event: ViolationEvent, frame_detections: sv.Detections | None = None) -> BundleContext:
        """The scene's facts for an event's evidence bundle, with the ring-buffer frames before it and
        all boxes of the frame (so passers-by are blurred in shared copies too)."""
        scene = self.camera.scene
        zone = next((z for z in scene.zones if z.id == event.zone_id), None)
        strip = self.ring.around(event.at, STRIP_BEFORE_S, 0.0) if event.kind == "opened" else []
        return BundleContext(
            source_kind="camera", source_id=self.id,
            address=scene.location.address if scene.location else None, grid_cell=scene.grid_cell,
            geo=GeoPoint(scene.location.lat, scene.location.lon) if scene.location else None,
            zone_polygon=[tuple(p) for p in zone.polygon] if zone else None,
            strip=strip, privacy_detections=frame_detections if frame_detections is not None else event.detections)


def present(scene: Scene, taxonomy: Taxonomy, frame: Frame, detections: sv.Detections, zone_id: str | None,
            violation_type: str, group_gap: float, verified: Collection[str] = ()) -> sv.Detections:
    """Evidence of `violation_type` in `zone_id` on one frame (empty: the place is clear).

    The same judgement the rules make, without dwell and whatever the schedule: a re-check asks
    whether the thing is still there, not whether it is an offence right now.
    """
    views = [v for v in scene_views(scene, detections, frame.width, frame.height, frame.ts, taxonomy) if v.zone_id == zone_id]
    for view in views:
        view.active = True

    def ids(zone: str, type_id: str, objects: list, dets: sv.Detections) -> list[str]:
        return [f"r{i}" for i in range(len(objects))]

    found = [c for c in candidates(views, detections, taxonomy, frame.width * frame.height, ids, group_gap, verified=verified)
             if c.vtype.id == violation_type]
    if not found:
        return detections[:0] if len(detections) else sv.Detections.empty()
    return sv.Detections.merge([c.detections for c in found])
