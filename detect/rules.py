"""Violation rules: candidates over time become violations with a lifecycle (docs/rules.md).

Camera: a candidate starts a *pending* violation (internal, never emitted); it *opens* once when
it has stood still in the zone for `dwell_s` while the zone's schedule applies; it may be
*updated* when its object count (stalls in a street market) changes and holds; it *clears* once
when nothing of it was seen for `clear_s` of frames (a stream outage, or frames whose picture does not show the
scene, `detect.frames.VIEW_LOST`, is not absence). A violation
is one (camera, zone, type, object/group).
Misses shorter than the tracker's `lost_s` keep the track id; longer ones are bridged here by
position (a new track where an unseen pending/open violation stood takes it over). After a
violation clears, a new candidate on the same spot within `cooldown_s` does not open another.

Photo: the same candidates without time: each opens at once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from detect.candidates import Candidate, ZoneView, candidates, scene_views, whole_image_views
from detect import fields
from detect.cityzones import CityZones
from detect.config_io import ConfigModel
from detect.events import EventKind, ViolationEvent
from detect.frames import VIEW_LOST, Frame
from detect.grades import Grade
from detect.scenes import Scene
from detect.taxonomy import Taxonomy, load_taxonomy
from detect.tracking import GroupIds, Tracker, TrackingConfig

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip


class RuleSettings(ConfigModel):
    """Knobs of the lifecycle that are not per-type thresholds."""

    group_gap: float = Field(
        0.5, title="Group gap", description="Boxes closer than this x their size (sqrt of area) form one group (one stall).", ge=0
    )
    rematch_iou: float = Field(
        0.3, title="Re-match IoU", description="IoU with an unseen violation's last box for a new track to take it over, or to fall under its cooldown.", gt=0, le=1
    )
    update_stable_s: float = Field(
        30.0, title="Update stable seconds", description="An object count must hold this long before an `updated` event.", ge=0
    )


def _texts_and_phones(dets: sv.Detections) -> tuple[list[str], list[str]]:
    """OCR text and phone numbers carried by evidence detections (see detect.ocr)."""
    texts = [str(t) for t in dets.data.get(fields.TEXT, []) if str(t)]
    phones = [p for joined in dets.data.get(fields.PHONES, []) for p in fields.split(joined)]
    return texts, sorted(set(phones))


@dataclass
class _Violation:
    vid: str
    cand: Candidate
    first_seen: datetime
    since: datetime
    last_seen: datetime
    first_frame: Frame
    frame: Frame
    opened_at: datetime | None = None
    reemit: bool = False  # its `opened` is sent again at the next sighting (`reopen`), keeping `opened_at`
    reported_count: int = 0
    pending_count: int | None = None
    count_since: datetime | None = None
    blind_s: float = 0.0  # seconds since last_seen the camera did not look (`CameraRules._gap`), or looked elsewhere: not absence

    def absent_s(self, ts: datetime) -> float:
        """Seconds the camera looked and did not see the object, up to `ts`."""
        return (ts - self.last_seen).total_seconds() - self.blind_s

    def event(self, kind: EventKind, at: datetime, frame: Frame, source_id: str, cleared_at: datetime | None = None) -> ViolationEvent:
        c = self.cand
        texts, phones = _texts_and_phones(c.detections)
        return ViolationEvent(
            kind=kind,
            violation_id=self.vid,
            violation_type=c.vtype.id,
            source_id=source_id,
            at=at,
            first_seen=self.first_seen,
            zone_id=c.zone_id,
            zone_kind=str(c.zone.kind) if c.zone else None,
            opened_at=self.opened_at,
            cleared_at=cleared_at,
            dwell_s=(self.last_seen - self.since).total_seconds(),
            score=c.score,
            detections=c.detections,
            frame=frame,
            first_frame=self.first_frame,
            texts=texts,
            phones=phones,
            object_count=c.count,
            thresholds=c.thresholds.threshold_values(),
            object_id=c.object_id,
            severity=c.thresholds.severity,
        )


@dataclass
class _Cooldown:
    zone_id: str
    type_id: str
    box: np.ndarray
    until: datetime


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    import supervision as sv

    return float(sv.box_iou_batch(a[None], b[None])[0, 0])


@dataclass
class CameraRules:
    """Stateful rules for one camera: feed `process(frame, detections)` in capture order."""

    scene: Scene
    taxonomy: Taxonomy = field(default_factory=load_taxonomy)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    settings: RuleSettings = field(default_factory=RuleSettings)

    def __post_init__(self) -> None:
        self.tracker = Tracker(self.tracking, self.taxonomy.families)
        self._violations: dict[str, _Violation] = {}
        self._by_key: dict[tuple[str, str, str], str] = {}
        self._cooldowns: list[_Cooldown] = []
        self._groups: dict[tuple[str, str], GroupIds] = {}
        self._last_ts: datetime | None = None

    def process(self, frame: Frame, detections: sv.Detections, verified: Collection[str] = ()) -> list[ViolationEvent]:
        """Track, judge and advance every violation of this camera by one frame.

        `verified`: the types whose verdicts the frame's detections carry (`detect.judgement`)."""
        if frame.source_id != self.scene.camera_id:
            raise ValueError(f"frame from source {frame.source_id!r} fed to the rules of camera {self.scene.camera_id!r}")
        ts = frame.ts
        gap, outage = self._gap(ts)
        if outage or frame.meta.get(VIEW_LOST):  # not looking, or looking at something else: not absence
            for v in self._violations.values():
                v.blind_s += gap  # back to 0 for what this frame sees after all (`_observe`)
                if outage and v.opened_at is None:  # dwell is time the camera saw it stand there: an outage is not presence
                    v.since += timedelta(seconds=gap)
        tracked = self.tracker.update(detections, ts)
        views: list[ZoneView] = scene_views(self.scene, tracked, frame.width, frame.height, ts, self.taxonomy)
        cands = candidates(views, tracked, self.taxonomy, frame.width * frame.height, self._object_ids(ts), self.settings.group_gap,
                           verified=verified)
        events: list[ViolationEvent] = []
        seen: set[str] = set()
        present = {self._by_key[c.key] for c in cands if c.key in self._by_key}
        for cand in cands:
            v = self._find(cand, seen | present)
            if v is None:
                if not cand.judged or self._cooling(cand, ts):
                    continue
                v = self._start(cand, frame)
            seen.add(v.vid)
            events.extend(self._observe(v, cand, frame))
        for vid in [vid for vid in self._violations if vid not in seen]:
            v = self._violations[vid]
            if v.absent_s(ts) >= v.cand.thresholds.clear_s:
                if v.opened_at is not None:
                    events.append(v.event(EventKind.CLEARED, ts, frame, self.scene.camera_id, cleared_at=ts))
                    cool = v.cand.thresholds.cooldown_s
                    self._cooldowns.append(_Cooldown(v.cand.zone_id, v.cand.vtype.id, v.cand.box, ts + timedelta(seconds=cool)))
                self._drop(v)
        self._cooldowns = [c for c in self._cooldowns if c.until > ts]
        return events

    def _gap(self, ts: datetime) -> tuple[float, bool]:
        """Seconds since the previous frame, and whether the camera did not look in them: a gap longer than the tracker
        keeps a track (`lost_s`) and than three sampling intervals is a stream that dropped and came back (or an owner
        that restarted), not time the place was seen empty. Counted as absence, a minute's outage cleared a car parked
        throughout at the first frame back (its new track is confirmed only at its second sighting), and the cooldown
        then kept it unreported.

        A frame whose picture does not show the scene (`VIEW_LOST`: black, covered, off its reference) makes its gap
        not absence either, however short: a PTZ camera turned away cleared a stall standing there at `clear_s`,
        long before `moved` was reported. Such a frame is still judged (what it does show counts): a reference that
        no longer matches at night, say, holds what is open without stopping the camera from opening cases."""
        last, self._last_ts = self._last_ts, ts
        gap = (ts - last).total_seconds() if last is not None else 0.0
        return gap, gap > max(self.tracking.lost_s, 3 / self.tracking.frame_rate)

    @property
    def last_frame_at(self) -> datetime | None:
        """Capture time of the last frame judged (None: none yet)."""
        return self._last_ts

    def opened_ids(self) -> list[str]:
        """Ids of the violations open now (their `opened` event was emitted)."""
        return [vid for vid, v in self._violations.items() if v.opened_at is not None]

    def reopen(self, violation_ids: Collection[str]) -> None:
        """Emit `opened` again (same id) at these violations' next sighting: after a restart from a saved
        state whose `opened` events never reached the case store (`pipelines.cluster.watch`). The event
        keeps the violation's `opened_at`, so its case opens when the violation did, not at the restart."""
        for vid in violation_ids:
            if (v := self._violations.get(vid)) is not None and v.opened_at is not None:
                v.reemit = True

    def _object_ids(self, ts: datetime):
        """Track ids for single objects; inherited group ids for groups (see tracking.GroupIds)."""

        def ids(zone_id: str, type_id: str, objects: list[np.ndarray], dets: sv.Detections) -> list[str]:
            if not self.taxonomy.types[type_id].group:
                return [f"t{int(dets.tracker_id[m[0]])}" for m in objects]
            registry = self._groups.setdefault((zone_id, type_id), GroupIds())
            gids = registry.assign([set(dets.tracker_id[m].tolist()) for m in objects], ts)
            return [f"g{g}" for g in gids]

        return ids

    def _find(self, cand: Candidate, taken: set[str]) -> _Violation | None:
        """The violation of this object, or one of the same zone/type on the same spot whose own
        object is not in this frame (`taken`: violations already matched or present)."""
        vid = self._by_key.get(cand.key)
        if vid is not None:
            return self._violations[vid]
        best, best_iou = None, self.settings.rematch_iou
        for v in self._violations.values():
            if v.vid in taken or v.cand.key[:2] != cand.key[:2]:
                continue
            iou = _iou(v.cand.box, cand.box)
            if iou >= best_iou:
                best, best_iou = v, iou
        if best is not None:  # a new track id where an unseen violation stood: the same object
            del self._by_key[best.cand.key]
            self._by_key[cand.key] = best.vid
        return best

    def _cooling(self, cand: Candidate, ts: datetime) -> bool:
        return any(
            c.zone_id == cand.zone_id and c.type_id == cand.vtype.id and c.until > ts and _iou(c.box, cand.box) >= self.settings.rematch_iou
            for c in self._cooldowns
        )

    def _start(self, cand: Candidate, frame: Frame) -> _Violation:
        ts = frame.ts
        # UTC, as its Z says: a replayed file's frames carry the scene's zone (its modification time), a stream's UTC
        vid = f"{self.scene.camera_id}:{cand.zone_id}:{cand.vtype.id}:{cand.object_id}:{ts.astimezone(UTC):%Y%m%dT%H%M%SZ}"
        v = _Violation(vid, cand, ts, ts, ts, frame, frame, reported_count=cand.count)
        self._violations[vid] = v
        self._by_key[cand.key] = vid
        return v

    def _drop(self, v: _Violation) -> None:
        del self._violations[v.vid]
        self._by_key.pop(v.cand.key, None)

    def _observe(self, v: _Violation, cand: Candidate, frame: Frame) -> list[ViolationEvent]:
        ts = frame.ts
        v.cand, v.last_seen, v.frame, v.blind_s = cand, ts, frame, 0.0
        if v.opened_at is None:
            if not cand.judged:  # out of enforcement hours: dwell does not accumulate
                self._drop(v)
                return []
            if cand.vtype.stationary and cand.moved:
                v.since = ts
            if (ts - v.since).total_seconds() >= cand.thresholds.dwell_s:
                v.opened_at = ts
                v.reported_count = cand.count
                return [v.event(EventKind.OPENED, ts, frame, self.scene.camera_id)]
            return []
        if v.reemit:
            v.reemit = False
            return [v.event(EventKind.OPENED, ts, frame, self.scene.camera_id)]
        if cand.count == v.reported_count:
            v.pending_count = v.count_since = None
            return []
        if cand.count != v.pending_count or v.count_since is None:
            v.pending_count, v.count_since = cand.count, ts
        if (ts - v.count_since).total_seconds() >= self.settings.update_stable_s:
            v.reported_count, v.pending_count, v.count_since = cand.count, None, None
            return [v.event(EventKind.UPDATED, ts, frame, self.scene.camera_id)]
        return []


@dataclass
class PhotoRules:
    """Rules for single photos: same candidates as cameras, no dwell, each opens at once.

    Zones come from the photo's scene when it has one (a fixed spot photographed again), else from
    city-wide map zones at its GPS position, else the whole photo is judged (an inspector chose to
    take it).
    """

    taxonomy: Taxonomy = field(default_factory=load_taxonomy)
    city_zones: CityZones | None = None
    settings: RuleSettings = field(default_factory=RuleSettings)

    def process(self, frame: Frame, detections: sv.Detections, scene: Scene | None = None,
                verified: Collection[str] = (), grade: Grade | None = None) -> list[ViolationEvent]:
        """Violations of one photo; `verified`: the types whose verdicts its detections carry (`detect.judgement`);
        `grade`: the road grade of its grid cell, for a photo judged as a whole (scene and map zones carry their own)."""
        detections = detections[:] if len(detections) else detections
        detections.tracker_id = None
        if scene is not None:
            views = scene_views(scene, detections, frame.width, frame.height, frame.ts, self.taxonomy)
        elif self.city_zones is not None and frame.geo is not None:
            views = whole_image_views(self.city_zones.at(frame.geo), len(detections), frame.ts.astimezone(self.city_zones.tz), grade)
        else:
            views = whole_image_views([], len(detections), None, grade)

        def ids(zone_id: str, type_id: str, objects: list[np.ndarray], dets: sv.Detections) -> list[str]:
            return [f"o{int(m.min())}" for m in objects]

        events = []
        for cand in candidates(views, detections, self.taxonomy, frame.width * frame.height, ids, self.settings.group_gap, verified=verified):
            if not cand.judged:
                continue
            v = _Violation(f"{frame.source_id}:{cand.zone_id}:{cand.vtype.id}:{cand.object_id}", cand, frame.ts, frame.ts, frame.ts, frame, frame)
            v.opened_at = frame.ts
            events.append(v.event(EventKind.OPENED, frame.ts, frame, frame.source_id))
        return events
