"""Near-duplicate grouping: photos of the same violation become one candidate case.

Inspectors take several shots of one stall or one parked car. Two findings of the same type are
the same violation when they were taken within the time window and at the same spot: within
the GPS radius when both photos have a position, else with perceptual hashes (pHash, from the
`imagehash` package) a few bits apart, which catches re-takes and burst shots of one scene.
Grouping is transitive (photos linked through others are one case) up to a bounded span: no photo of a case
with GPS lies more than `span_m` from its first photo with GPS, else a drive or walk past a row of stalls,
each frame within the radius of the next, chained a whole street into one case (and one place). The
best-scoring photo leads its case. Only positive
photos take part, each with a few scalars, so this stays small for a 50,000-photo day.
A case is not a training split's group: `verifier to-label` keeps the photos of a place and day together
(`pipelines.verifier.to_label.places`), coarser on purpose and of any type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import imagehash
import numpy as np
from PIL import Image
from scipy.cluster.hierarchy import DisjointSet
from scipy.spatial import cKDTree

from detect.frames import EARTH_RADIUS_M, distance_m
from pipelines.triage.record import PhotoFinding, PhotoRecord


@dataclass
class Member:
    """One photo's finding of one type: the photo's record and that finding (the report, the CSV and the
    case read them); grouping reads a few of their fields."""

    record: PhotoRecord
    finding: PhotoFinding
    phash: int | None = field(init=False)

    def __post_init__(self) -> None:
        if self.record.sha256 is None or self.record.photo_id is None or self.record.taken_at is None:
            raise ValueError(f"{self.record.source}: a finding's record needs sha256, photo_id and taken_at")
        self.phash = int(self.record.phash, 16) if self.record.phash else None

    @property
    def sha256(self) -> str:
        return self.record.sha256  # type: ignore[return-value]  # checked at construction

    @property
    def photo_id(self) -> str:
        return self.record.photo_id  # type: ignore[return-value]  # checked at construction

    @property
    def source(self) -> str:
        return self.record.source

    @property
    def type(self) -> str:
        return self.finding.type

    @property
    def score(self) -> float:
        return self.finding.score

    @property
    def taken_at(self) -> datetime:
        return self.record.capture_time

    @property
    def lat(self) -> float | None:
        return self.record.lat

    @property
    def lon(self) -> float | None:
        return self.record.lon

    @property
    def has_gps(self) -> bool:
        return self.record.has_gps


@dataclass
class Group:
    """A candidate case: one violation type, photos best first (`members[0]` leads)."""

    type: str
    members: list[Member]

    @property
    def lead(self) -> Member:
        return self.members[0]

    @property
    def score(self) -> float:
        return self.lead.score

    @property
    def placed(self) -> Member | None:
        """The member whose position and grid cell are the case's: the lead when it has GPS, else the best
        member that has (a shot without a fix joins the others by its perceptual hash, and the case must
        not lose the place its re-takes recorded); None when no photo of the case has GPS."""
        return next((m for m in self.members if m.has_gps), None)


def perceptual_hash(image_bgr: np.ndarray) -> int:
    """64-bit pHash of a BGR image, as an int (stored as 16 hex digits in the JSONL)."""
    return int(str(imagehash.phash(Image.fromarray(image_bgr[:, :, ::-1]))), 16)


def same_spot(a: Member, b: Member, radius_m: float, max_bits: int) -> bool:
    if a.has_gps and b.has_gps:
        return distance_m(a, b) <= radius_m
    if a.phash is None or b.phash is None:
        return False
    return (a.phash ^ b.phash).bit_count() <= max_bits


def _gps_pairs(members: list[Member], idx: list[int], window_s: float, radius_m: float) -> set[tuple[int, int]]:
    """Pairs of `idx` (members with GPS) that may be within `radius_m` and `window_s`: a k-d tree (scipy's cKDTree,
    Chebyshev norm) over east and north metres and time, each scaled to its box's half-width, so a pair inside the
    radius and the window always falls inside the box. The east metres use the smallest cos(latitude) of the
    photos, which never makes a pair further apart than the haversine says; the box is 1 % and 1 cm wider."""
    lat = np.radians([members[i].lat for i in idx])
    lon = np.radians([members[i].lon for i in idx])
    t = np.array([members[i].taken_at.timestamp() for i in idx])
    half_m, half_s = radius_m * 1.01 + 0.01, window_s + 1e-3
    east = EARTH_RADIUS_M * max(float(np.cos(lat).min()), 1e-9) * lon
    points = np.column_stack([east / half_m, EARTH_RADIUS_M * lat / half_m, t / half_s])
    return {(idx[a], idx[b]) for a, b in cKDTree(points).query_pairs(1.0, p=np.inf, output_type="ndarray")}


def _hash_pairs(members: list[Member], idx: list[int], window_s: float, max_bits: int) -> set[tuple[int, int]]:
    """Pairs of `idx` (members with a perceptual hash, in time order) within `window_s` whose hashes are at most
    `max_bits` apart and at least one of which lacks GPS (two with GPS go by distance). Hashes a dozen bits
    apart share too little for an index to narrow them, so each photo's hash is XORed with those of the
    photos after it in the window at once (numpy's bitwise_count), only the pairs found going on."""
    hashes = np.array([members[i].phash for i in idx], dtype=np.uint64)
    t = np.array([members[i].taken_at.timestamp() for i in idx])
    placed = np.array([members[i].has_gps for i in idx], dtype=bool)
    ends = np.searchsorted(t, t + window_s + 1e-3, side="right")
    pairs: set[tuple[int, int]] = set()
    for a in range(len(idx)):
        near = np.bitwise_count(hashes[a + 1 : ends[a]] ^ hashes[a]) <= max_bits
        near &= ~(placed[a + 1 : ends[a]] & placed[a])
        pairs.update((idx[a], idx[a + 1 + b]) for b in np.flatnonzero(near))
    return pairs


def candidate_pairs(members: list[Member], window_s: float, radius_m: float, max_bits: int) -> set[tuple[int, int]]:
    """Pairs of member indices of one type that may be at the same spot within the window: those near in place
    through a k-d tree (`_gps_pairs`), those of like hashes through numpy (`_hash_pairs`). Thousands of photos
    sharing one time (no EXIF, all copied at once) were compared pair by pair in Python, minutes at 30,000
    findings. Every pair that `same_spot` accepts within the window is among them."""
    by_type: dict[str, list[int]] = {}
    for i in sorted(range(len(members)), key=lambda i: members[i].taken_at):
        by_type.setdefault(members[i].type, []).append(i)
    pairs: set[tuple[int, int]] = set()
    for idx in by_type.values():
        placed = [i for i in idx if members[i].has_gps]
        if len(placed) > 1:
            pairs |= _gps_pairs(members, placed, window_s, radius_m)
        pairs |= _hash_pairs(members, [i for i in idx if members[i].phash is not None], window_s, max_bits)
    return pairs


def within_span(photos: list[Member], span_m: float) -> bool:
    """Whether every photo with GPS is within `span_m` of the first (by time) with GPS: the bound on a case's extent."""
    placed = sorted((m for m in photos if m.has_gps), key=lambda m: (m.taken_at, m.source))
    return all(distance_m(placed[0], m) <= span_m for m in placed[1:])


def group_members(members: list[Member], window_s: float, radius_m: float, max_bits: int, span_m: float = math.inf) -> list[Group]:
    """Cases ranked by lead score (then photo count); members of each case best first. Photos pairwise at the same spot
    within the window (the pairs checked those `candidate_pairs` finds) are linked, in time order, through scipy's
    `DisjointSet`; a link that would put a photo with GPS more than `span_m` from the merged case's first photo with
    GPS is not followed (`within_span`), so frames 10 m apart along a 300 m street are several cases, not one."""
    links = [(i, j) for i, j in candidate_pairs(members, window_s, radius_m, max_bits)
             if abs((members[j].taken_at - members[i].taken_at).total_seconds()) <= window_s
             and same_spot(members[i], members[j], radius_m, max_bits)]
    rank = [0] * len(members)  # each photo's place in time order
    for r, k in enumerate(sorted(range(len(members)), key=lambda k: (members[k].taken_at, members[k].source))):
        rank[k] = r
    links.sort(key=lambda p: (max(rank[p[0]], rank[p[1]]), min(rank[p[0]], rank[p[1]])))
    sets = DisjointSet(range(len(members)))
    placed = {i: [i] for i, m in enumerate(members) if m.has_gps}  # by set: its photos with GPS, its first (by time) first
    for i, j in links:
        a, b = sets[i], sets[j]
        if a == b:
            continue
        first, other = placed.get(a, []), placed.get(b, [])
        if other and (not first or rank[other[0]] < rank[first[0]]):
            first, other = other, first
        # the earlier set's first photo stays the merged set's first, so only the other set's photos are checked
        if other and not within_span([members[first[0]], *(members[k] for k in other)], span_m):
            continue
        sets.merge(a, b)
        placed.pop(a, None)
        placed.pop(b, None)
        if first:
            first.extend(other)
            placed[sets[a]] = first
    clusters = [[members[k] for k in subset] for subset in sets.subsets()]
    groups = [Group(ms[0].type, sorted(ms, key=lambda m: (-m.score, m.taken_at, m.source))) for ms in clusters]
    return sorted(groups, key=lambda g: (-g.score, -len(g.members), g.lead.taken_at, g.lead.source))
