"""Tracker wrapper: ids survive `lost_s` of misses at sparse sampling; stillness; stable group ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import supervision as sv

from detect.tracking import GroupIds, Tracker, TrackingConfig, group_components

T0 = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)


def car(box, name="car") -> sv.Detections:
    return sv.Detections(xyxy=np.array([box], dtype=float), confidence=np.array([0.8]), class_id=np.array([2]), data={"class_name": np.array([name])})


def ids_over(tracker, timeline, seconds):
    out = []
    for t in seconds:
        d = tracker.update(timeline(t), T0 + timedelta(seconds=t))
        out.append(int(d.tracker_id[0]) if len(d) else None)
    return out


def test_track_survives_misses_shorter_than_lost_s_and_not_longer():
    box = (100, 200, 300, 300)
    tracker = Tracker(TrackingConfig(frame_rate=0.5, lost_s=20))
    seen = ids_over(tracker, lambda t: car(box) if not (10 <= t < 26) else sv.Detections.empty(), range(0, 40, 2))
    assert seen[0] == -1 and len({i for i in seen if i not in (None, -1)}) == 1  # 16 s gap: same id
    tracker = Tracker(TrackingConfig(frame_rate=0.5, lost_s=20))
    seen = ids_over(tracker, lambda t: car(box) if not (10 <= t < 40) else sv.Detections.empty(), range(0, 60, 2))
    assert len({i for i in seen if i not in (None, -1)}) == 2  # 30 s gap: a new track


def test_car_relabelled_truck_keeps_its_id_and_other_classes_do_not_steal_it():
    tracker = Tracker(TrackingConfig(frame_rate=1.0))
    a = tracker.update(car((100, 200, 300, 300)), T0)
    b = tracker.update(car((101, 201, 301, 301), "truck"), T0 + timedelta(seconds=1))
    c = tracker.update(car((102, 200, 300, 300), "truck"), T0 + timedelta(seconds=2))
    assert a.tracker_id[0] == -1 and b.tracker_id[0] == c.tracker_id[0] > 0
    both = sv.Detections.merge([car((100, 200, 300, 300)), car((110, 190, 290, 310), "person")])
    d = tracker.update(both, T0 + timedelta(seconds=3))
    assert dict(zip(d.data["class_name"], d.tracker_id))["car"] == c.tracker_id[0]


def test_stillness_ignores_jitter_and_notices_movement():
    tracker = Tracker(TrackingConfig(frame_rate=1.0, still_tolerance=0.3))
    boxes = [(100, 200, 300, 300), (100, 200, 300, 300), (104, 202, 303, 298), (98, 199, 299, 302), (160, 200, 360, 300), (161, 200, 361, 300)]
    moved, since = [], []
    for i, b in enumerate(boxes):
        d = tracker.update(car(b), T0 + timedelta(seconds=i))
        if d.tracker_id[0] >= 0:
            moved.append(bool(d.data["moved"][0]))
            since.append((d.data["still_since"][0] - T0).total_seconds())
    assert moved == [False, False, False, True, False]
    assert since == [1, 1, 1, 4, 4]


def test_group_components_and_inherited_group_ids():
    boxes = np.array([[200, 120, 320, 200], [210, 200, 310, 260], [300, 150, 340, 265], [600, 100, 640, 200]], dtype=float)
    assert group_components(boxes, gap=0.5) == [[0, 1, 2], [3]]
    groups = GroupIds()
    assert groups.assign([{1, 2, 3}, {9}], T0) == [1, 2]
    assert groups.assign([{1, 2, 7}], T0 + timedelta(seconds=5)) == [1]  # the vendor left, a customer came
    assert groups.assign([{5, 6}], T0 + timedelta(seconds=10)) == [3]
