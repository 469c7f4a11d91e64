"""Tracking for sparsely sampled camera frames (0.2-5 fps), stillness, and stall grouping.

Association is ByteTrack from the `trackers` package (the tracker that supervision itself now
delegates to); we only configure it for slow sampling and add what rules need on top:

- `lost_s` is the number of seconds a track survives without a detection. ByteTrack counts its
  buffer in 30 fps frames and, when fed timestamps, uses `lost_track_buffer / 30` seconds, so
  we pass `lost_s * 30` and the capture time of every frame (sampling may be irregular).
- One ByteTrack per class family: an umbrella over a table over a vendor overlap heavily, and a
  class-agnostic IoU match would swap their ids. Families merge classes a detector confuses
  (car/truck/van): the taxonomy's `classes:` name them (`family`), a settings file's
  `tracking.families` adds to them. Ids are made unique across families here.
- Stillness: each track keeps a rest point (bottom-centre of its box); when the bottom-centre
  strays more than `still_tolerance` x box size (sqrt of area) from it, the track "moved" and the
  rest point resets. Jitter within the tolerance never resets it, so dwell keeps counting.
- Grouping: boxes of different classes close to each other (gap relative to their size) form one
  object (umbrella + table + person + goods = one stall); a group keeps its id while any member
  carries over, so people coming and going do not make a new stall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from detect import fields
from detect.config_io import ConfigModel
from detect.taxonomy import default_taxonomy

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip
    from trackers import ByteTrackTracker


class TrackingConfig(ConfigModel):
    """How camera frames are tracked; one per camera stream."""

    frame_rate: float = Field(1.0, title="Sampled frame rate", description="Frames per second fed to the tracker (0.2-5 typical).", gt=0, le=60)
    lost_s: float = Field(
        20.0, title="Lost-track seconds", description="Seconds a track survives without a detection (misses, brief occlusion).", ge=0
    )
    activation_conf: float = Field(
        0.25, title="Activation confidence", description="Minimum confidence for a detection to start a track.", ge=0, le=1
    )
    high_conf: float = Field(
        0.5, title="High confidence", description="ByteTrack's split between first-stage and second-stage (recovery) matches.", ge=0, le=1
    )
    min_iou: float = Field(0.1, title="Minimum IoU", description="IoU needed to continue a track.", ge=0, le=1)
    still_tolerance: float = Field(
        0.3, title="Still tolerance", description="Bottom-centre movement, as a fraction of box size, that still counts as standing still.", gt=0
    )
    families: dict[str, str] = Field(
        default_factory=dict,
        title="Class families",
        description="Class name -> family, added to (and replacing for the classes named) the taxonomy's `classes:` families; "
        "classes of one family share a tracker (a car re-detected as truck keeps its id).",
    )


@dataclass
class _Rest:
    point: np.ndarray
    since: datetime
    last_seen: datetime


@dataclass
class Tracker:
    """ByteTrack per class family, with global ids and per-track stillness.

    `update` returns the input detections with `tracker_id` set (-1 for a detection not yet
    confirmed: ByteTrack confirms a track on its second sighting) and `fields.MOVED` (bool:
    the track left its rest point at this update) and `fields.STILL_SINCE` (datetime objects).
    `class_families`: the taxonomy's families (`Taxonomy.families`; default the shipped taxonomy's),
    under the config's own `families`.
    """

    config: TrackingConfig = field(default_factory=TrackingConfig)
    class_families: dict[str, str] | None = None
    _trackers: dict[str, ByteTrackTracker] = field(default_factory=dict)
    _ids: dict[tuple[str, int], int] = field(default_factory=dict)
    _rest: dict[int, _Rest] = field(default_factory=dict)
    _next_id: int = 0
    _t0: datetime | None = None
    _families: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        base = default_taxonomy().families if self.class_families is None else self.class_families
        self._families = {**base, **self.config.families}

    def _tracker(self, family: str) -> ByteTrackTracker:
        if family not in self._trackers:
            from trackers import ByteTrackTracker

            cfg = self.config
            self._trackers[family] = ByteTrackTracker(
                lost_track_buffer=math.ceil(cfg.lost_s * 30),
                frame_rate=cfg.frame_rate,
                track_activation_threshold=cfg.activation_conf,
                high_conf_det_threshold=cfg.high_conf,
                minimum_iou_threshold=cfg.min_iou,
                minimum_consecutive_frames=1,
            )
        return self._trackers[family]

    def update(self, detections: sv.Detections, ts: datetime) -> sv.Detections:
        """Track one frame's detections captured at `ts` (UTC-aware, non-decreasing)."""
        import supervision as sv

        self._t0 = self._t0 or ts
        seconds = (ts - self._t0).total_seconds()
        families = np.array([self._families.get(n, n) for n in fields.names(detections)], dtype=object)
        zoned = fields.values(detections, fields.ZONE_ID).astype(str) != ""
        parts = [self._zone_tracks(detections[zoned])] if zoned.any() else []
        if zoned.any():
            detections, families = detections[~zoned], families[~zoned]
        for family in sorted(set(families) | set(self._trackers)):
            part = detections[families == family] if len(detections) else detections
            tracked = self._tracker(family).update(part, timestamp=seconds)
            tracked.tracker_id = np.array(
                [self._global_id(family, int(t)) if t >= 0 else -1 for t in tracked.tracker_id], dtype=int
            )
            parts.append(tracked)
        merged = sv.Detections.merge([p for p in parts if len(p)]) if any(len(p) for p in parts) else _empty_tracked()
        self._update_rest(merged, ts)
        return merged

    def _zone_tracks(self, dets: sv.Detections) -> sv.Detections:
        """Verifier verdicts on a zone's crop are that zone's own track: one stable id per zone and type."""
        dets = dets[:]
        keys = zip(dets.data[fields.ZONE_ID].astype(str), fields.names(dets))
        dets.tracker_id = np.array([self._global_id(f"zone:{z}", hash(c) & 0x7FFFFFFF) for z, c in keys], dtype=int)
        return dets

    def _global_id(self, family: str, local: int) -> int:
        if (family, local) not in self._ids:
            self._next_id += 1
            self._ids[(family, local)] = self._next_id
        return self._ids[(family, local)]

    def _update_rest(self, dets: sv.Detections, ts: datetime) -> None:
        """Move each track's rest point when it strayed beyond the tolerance; record moved/still_since."""
        import supervision as sv

        moved = np.zeros(len(dets), dtype=bool)
        still_since = np.full(len(dets), ts, dtype=object)
        if len(dets):
            points = dets.get_anchors_coordinates(sv.Position.BOTTOM_CENTER)
            sizes = np.sqrt(np.maximum(dets.area, 1.0))
            for i, tid in enumerate(dets.tracker_id):
                if tid < 0:
                    continue
                rest = self._rest.get(int(tid))
                if rest is None:
                    rest = self._rest[int(tid)] = _Rest(points[i], ts, ts)
                elif np.linalg.norm(points[i] - rest.point) > self.config.still_tolerance * sizes[i]:
                    rest.point, rest.since, moved[i] = points[i], ts, True
                rest.last_seen = ts
                still_since[i] = rest.since
        dets.data[fields.MOVED] = moved
        dets.data[fields.STILL_SINCE] = still_since
        horizon = self.config.lost_s + 1.0  # ByteTrack has dropped the track by then
        gone = {t for t, r in self._rest.items() if (ts - r.last_seen).total_seconds() > horizon}
        for tid in gone:
            del self._rest[tid]
        if gone:
            self._ids = {k: v for k, v in self._ids.items() if v not in gone}


def _empty_tracked() -> sv.Detections:
    import supervision as sv

    empty = sv.Detections.empty()
    empty.tracker_id = np.zeros(0, dtype=int)
    empty.data[fields.CLASS_NAME] = np.zeros(0, dtype=str)
    return empty


def group_components(xyxy: np.ndarray, gap: float) -> list[list[int]]:
    """Indices of boxes that touch after each grows by `gap` x its own size (sqrt of area) per side."""
    import supervision as sv
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(xyxy)
    if n == 0:
        return []
    size = np.sqrt(np.maximum((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]), 1.0))
    grown = xyxy + np.stack([-size, -size, size, size], axis=1) * gap
    touching = sv.box_iou_batch(grown, grown) > 0
    _, labels = connected_components(csr_matrix(touching), directed=False)
    return [np.flatnonzero(labels == lab).tolist() for lab in np.unique(labels)]


@dataclass
class GroupIds:
    """Stable ids for groups whose members (track ids) change over time.

    A new grouping inherits the id of the previous group it shares the most members with, so a
    stall keeps its id while the vendor walks off and a customer walks in. Groups unseen for
    `keep_s` are forgotten (their tracks are gone by then too).
    """

    keep_s: float = 600.0
    _members: dict[int, tuple[set[int], datetime]] = field(default_factory=dict)
    _next: int = 1

    def assign(self, groups: list[set[int]], ts: datetime) -> list[int]:
        """Ids for this frame's groups (member track-id sets), in order."""
        ids: list[int] = []
        for members in groups:
            overlaps = {gid: len(members & old) for gid, (old, _) in self._members.items() if gid not in ids and members & old}
            if overlaps:
                gid = max(overlaps, key=lambda g: (overlaps[g], -g))
            else:
                gid, self._next = self._next, self._next + 1
            ids.append(gid)
        for gid, members in zip(ids, groups):
            self._members[gid] = (set(members), ts)
        for gid in [g for g, (_, seen) in self._members.items() if (ts - seen).total_seconds() > self.keep_s]:
            del self._members[gid]
        return ids
