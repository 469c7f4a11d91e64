"""From one frame's detections to violation candidates: zone, type, object, evidence score.

This is the judgment that cameras and photos share (DESIGN §4: they differ only in time). For
each zone that applies and each violation type judged in that kind of zone, the detections of
the type's evidence classes that pass its thresholds and stand in the zone become objects
(single tracks, or groups for types like street stalls), and an object is a candidate when its
distinct classes carry enough evidence weight. Cameras then add dwell and lifecycle
(`detect.rules.CameraRules`); photos open at once (`detect.rules.PhotoRules`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from detect import fields
from detect.grades import Grade
from detect.scenes import Scene, ZoneRules, anchor_points
from detect.taxonomy import VERIFIED_PREFIX, Taxonomy, ThresholdOverrides, Thresholds, ViolationType, ZoneKind
from detect.tracking import group_components

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip

WHOLE_IMAGE = "image"
"""Zone id used for photos judged without any zone (no scene, no map zone at their GPS point)."""


@dataclass
class ZoneView:
    """A zone at one frame: which detections stand in it and whether its schedule applies now."""

    zone: ZoneRules | None  # None: the whole image, every type applies (photos without zones)
    inside: np.ndarray
    active: bool
    area: float = 1.0  # only compared between views of one frame: smaller = more specific
    grade: Grade | None = None  # the whole image's road grade (a photo in a graded grid cell); zones fold in their own

    @property
    def zone_id(self) -> str:
        return self.zone.id if self.zone else WHOLE_IMAGE

    @property
    def types(self) -> list[str] | None:
        """The violation types judged in this view (None: every type)."""
        if self.zone is not None:
            return self.zone.types
        return self.grade.types if self.grade is not None else None

    def overrides(self, type_id: str) -> ThresholdOverrides | None:
        """This view's thresholds of a type over the taxonomy's: the zone's, else the whole image's grade."""
        if self.zone is not None:
            return self.zone.thresholds.get(type_id)
        return self.grade.thresholds.get(type_id) if self.grade is not None else None


@dataclass
class Candidate:
    """One object that is evidence of one violation type in one zone at one frame."""

    zone: ZoneRules | None
    zone_id: str
    vtype: ViolationType
    thresholds: Thresholds
    object_id: str
    indices: np.ndarray  # of the members in the frame's detections
    detections: sv.Detections
    box: np.ndarray
    score: float
    moved: bool
    judged: bool  # the zone's schedule applies: new violations may start and dwell may grow
    count: int  # members that count as objects (people at a stall do not)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.zone_id, self.vtype.id, self.object_id)


ObjectIds = Callable[[str, str, list[np.ndarray], "sv.Detections"], list[str]]
"""(zone id, type id, member index arrays, detections) -> one stable object id per object."""


def scene_views(scene: Scene, detections: sv.Detections, width: int, height: int, ts: datetime,
                taxonomy: Taxonomy | None = None) -> list[ZoneView]:
    """The scene's zones at capture time `ts`, with each detection's membership by its anchor (the
    taxonomy's `anchor` of its class).

    A detection that names its zone (`fields.ZONE_ID`: a verifier verdict on that zone's crop)
    is in that zone only."""
    anchors = anchor_points(detections, width, height, taxonomy)
    local = scene.local_time(ts)
    named = detections.data.get(fields.ZONE_ID) if len(detections) else None
    views = []
    for z in scene.zones:
        inside = z.contains(anchors)
        if named is not None:
            own = named.astype(str)
            inside = np.where(own != "", own == z.id, inside)
        views.append(ZoneView(z, inside, z.active(local), z.area))
    return views


def whole_image_views(zones: list[ZoneRules], n: int, local: datetime | None, grade: Grade | None = None) -> list[ZoneView]:
    """Views where every detection is inside: map zones at a photo's GPS point (smallest first),
    or no zone at all (judged by the `grade` of the photo's grid cell, when it has one)."""
    inside = np.ones(n, dtype=bool)
    if not zones:
        return [ZoneView(None, inside, True, grade=grade)]
    return [ZoneView(z, inside, z.active(local) if local else True, float(rank)) for rank, z in enumerate(zones)]


def _union(views: list[ZoneView], kind: ZoneKind, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for v in views:
        if v.zone is not None and v.zone.kind == kind and v.active:
            mask |= v.inside
    return mask


def _judged_kind(view: ZoneView) -> tuple[ZoneKind | None, bool] | None:
    """The kind a zone is judged as now and whether its schedule applies; None: judges nothing."""
    if view.zone is None:
        return None, True
    if view.zone.kind == ZoneKind.IGNORE:
        return None
    if view.zone.kind == ZoneKind.VENDING_PERMITTED:
        return None if view.active else (ZoneKind.NO_VENDING, True)
    return view.zone.kind, view.active


def candidates(
    views: list[ZoneView],
    detections: sv.Detections,
    taxonomy: Taxonomy,
    image_area: float,
    object_ids: ObjectIds,
    group_gap: float,
    verified: Collection[str] = (),
) -> list[Candidate]:
    """All candidates of a frame (see module docstring).

    `verified`: the types a verifier judged on this frame (`detect.verifier`). Its `tiles` types count only
    evidence that is enough alone (their `verified:` class, custom classes), and in a view without
    a zone an `objects` type counts only objects the verifier passed (`fields.VERIFIED_PASS`).

    An active `ignore` zone removes its detections from every rule; an active
    `vending_permitted` zone exempts its detections from types judged in `no_vending` zones;
    outside its hours a `vending_permitted` zone is itself judged as `no_vending`. Where zones
    overlap, a detection counts for a type in one zone only: the smallest zone whose schedule
    applies (a market area inside a street), so one stall is one case. Within one zone a
    detection is evidence of one violation only, of the first type in taxonomy order (a table
    and umbrella on a photo without zones are a street stall, not also shop-front spillover).
    """
    n = len(detections)
    if n == 0:
        return []
    names = fields.names(detections)
    conf = detections.confidence if detections.confidence is not None else np.ones(n)
    usable = ~_union(views, ZoneKind.IGNORE, n)
    if detections.tracker_id is not None:
        usable &= detections.tracker_id >= 0
    permitted = _union(views, ZoneKind.VENDING_PERMITTED, n)
    is_verified = np.char.startswith(names.astype(str), VERIFIED_PREFIX)
    passed = detections.data.get(fields.VERIFIED_PASS)
    passed = np.asarray(passed, dtype=bool) if passed is not None else np.ones(n, dtype=bool)
    judged_views = [(v, jk) for v in views if (jk := _judged_kind(v)) is not None]
    judged_views.sort(key=lambda vj: (not vj[1][1], vj[0].area))
    out: list[Candidate] = []
    used = {id(view): np.zeros(n, dtype=bool) for view, _ in judged_views}
    for vtype in taxonomy.types.values():
        claimed = np.zeros(n, dtype=bool)
        for view, (kind, judged) in judged_views:
            if view.types is not None and vtype.id not in view.types:
                continue
            if kind is not None and kind not in vtype.zone_kinds:
                continue
            th = vtype.with_overrides(view.overrides(vtype.id))
            judged_by_verifier = vtype.id in verified
            sel = view.inside & usable & ~claimed & ~used[id(view)] & np.isin(names, vtype.evidence_classes_for(judged_by_verifier))
            scores = conf
            if judged_by_verifier and vtype.verify == "objects" and view.zone is None:
                sel &= passed  # a photo without zones: the verifier's judgement of the ground decides, and scores
                scores = np.nan_to_num(np.asarray(detections.data.get(fields.VERIFIED, conf), dtype=float))
            # a `verified:` region passed its head's own threshold (stored with the head): the detector
            # confidence floor is not for it (a stall at p 0.2 > its threshold 0.12 is a finding)
            sel &= ((conf >= th.min_conf) | is_verified) & (detections.area >= th.min_area * image_area)
            if ZoneKind.NO_VENDING in vtype.zone_kinds:
                sel &= ~permitted
            claimed |= sel
            found = _objects(view, vtype, th, judged, np.flatnonzero(sel), detections, names, scores, object_ids, group_gap)
            for cand in found:
                used[id(view)][cand.indices] = True
            out.extend(found)
    return out


def object_members(vtype: ViolationType, xyxy: np.ndarray, group_gap: float) -> list[list[int]]:
    """Which of `vtype`'s evidence boxes (pixels) make one object: for a grouped type the boxes near each other
    (`group_components`: the lines of one posting, a stall's umbrella and table), else each box alone. The rules judge
    each object; `data from-cases` labels each object of a confirmed case with one box."""
    if vtype.group:
        return group_components(np.asarray(xyxy, dtype=float).reshape(-1, 4), group_gap)
    return [[i] for i in range(len(xyxy))]


def _objects(
    view: ZoneView,
    vtype: ViolationType,
    th: Thresholds,
    judged: bool,
    idx: np.ndarray,
    detections: sv.Detections,
    names: np.ndarray,
    conf: np.ndarray,
    object_ids: ObjectIds,
    group_gap: float,
) -> list[Candidate]:
    """Selected detections of one zone and type -> objects (tracks or groups) with enough evidence."""
    if len(idx) == 0:
        return []
    objects = [idx[c] for c in object_members(vtype, detections.xyxy[idx], group_gap)]
    out = []
    for members, oid in zip(objects, object_ids(view.zone_id, vtype.id, objects, detections)):
        member_names = names[members].tolist()
        evidence = vtype.evidence_score(member_names)
        member_dets = detections[members]
        count = _count(member_dets, member_names, vtype.uncounted)
        if evidence < vtype.min_evidence or count < th.min_count:
            continue
        moved = member_dets.data.get(fields.MOVED)
        out.append(
            Candidate(
                zone=view.zone,
                zone_id=view.zone_id,
                vtype=vtype,
                thresholds=th,
                object_id=oid,
                indices=members,
                detections=member_dets,
                box=np.concatenate([member_dets.xyxy[:, :2].min(0), member_dets.xyxy[:, 2:].max(0)]),
                score=round(float(min(1.0, evidence / vtype.min_evidence) * conf[members].max()), 4),
                moved=bool(moved is not None and moved.all()),
                judged=judged,
                count=count,
            )
        )
    return out


def _count(members: sv.Detections, names: list[str], uncounted: list[str]) -> int:
    """Objects an evidence group counts: a verifier region counts what it saw (`fields.COUNT`:
    stalls of a market), any other member one, people at a stall none."""
    counts = members.data.get(fields.COUNT)
    total = 0
    for i, name in enumerate(names):
        if name in uncounted:
            continue
        total += int(counts[i]) if counts is not None and name.startswith(VERIFIED_PREFIX) else 1
    return total
