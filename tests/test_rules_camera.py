"""Camera rules on scripted detection sequences (no model): exact lifecycle events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import supervision as sv

from detect.config_io import validate_model
from detect.events import EventKind
from detect.frames import VIEW_LOST, Frame
from detect.rules import CameraRules
from detect.scenes import Scene
from detect.tracking import TrackingConfig

W, H = 640, 360
IMAGE = np.zeros((H, W, 3), dtype=np.uint8)
# 2024-06-03 is a Monday; 02:00 UTC = 10:00 in Asia/Shanghai
T0 = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)
CAR1 = (100, 200, 300, 300)
CAR2 = (380, 210, 580, 310)


def scene(**zones) -> Scene:
    data = {"camera_id": "cam-1", "timezone": "Asia/Shanghai", "zones": [{"id": k, **v} for k, v in zones.items()]}
    return validate_model(Scene, data, "test-scene")


ROAD = {"kind": "no_parking", "polygon": [[0, 0.4], [1, 0.4], [1, 1], [0, 1]]}


def dets(*objects: tuple[str, tuple[float, float, float, float]], conf: float = 0.8) -> sv.Detections:
    if not objects:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([box for _, box in objects], dtype=float),
        confidence=np.full(len(objects), conf),
        class_id=np.zeros(len(objects), dtype=int),
        data={"class_name": np.array([name for name, _ in objects])},
    )


def run(rules: CameraRules, timeline, start=T0, step_s=2.0, end_s=None, outage=(0.0, 0.0), lost=(0.0, 0.0)):
    """timeline(t_seconds) -> detections; returns [(kind, t_seconds, event)]. No frame comes in `outage` (from, until);
    the frames in `lost` (from, until) do not show the scene (`VIEW_LOST`, as the camera's health check marks them)."""
    out = []
    t = 0.0
    end_s = end_s if end_s is not None else 900
    while t <= end_s:
        if not outage[0] <= t < outage[1]:
            meta = {VIEW_LOST: "视角偏移 view off the reference"} if lost[0] <= t < lost[1] else {}
            frame = Frame(image=IMAGE, source_id="cam-1", ts=start + timedelta(seconds=t), meta=meta)
            for ev in rules.process(frame, timeline(t)):
                out.append((ev.kind, t, ev))
        t += step_s
    return out


def jitter(box, t, px=3.0):
    rng = np.random.default_rng(int(t * 10))
    return tuple(np.array(box, dtype=float) + rng.uniform(-px, px, 4))


def test_car_parked_six_minutes_opens_once_at_dwell_and_clears_once_after_leaving():
    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(("car", jitter(CAR1, t))) if t < 360 else dets())
    assert [(k, t) for k, t, _ in events] == [(EventKind.OPENED, 302.0), (EventKind.CLEARED, 418.0)]
    opened, cleared = events[0][2], events[1][2]
    assert opened.violation_id == cleared.violation_id
    assert (opened.violation_type, opened.zone_id, opened.zone_kind) == ("illegal_parking", "road", "no_parking")
    assert opened.dwell_s == 300.0 and opened.thresholds["dwell_s"] == 300.0
    assert opened.first_seen == T0 + timedelta(seconds=2)  # confirmed on its second sighting
    assert list(opened.detections.data["class_name"]) == ["car"] and opened.frame is not None
    assert cleared.opened_at == T0 + timedelta(seconds=302) and cleared.cleared_at == T0 + timedelta(seconds=418)


def test_a_reopened_violation_keeps_its_opening_time_after_a_restart_from_a_saved_state():
    """An owner saved its state after the opening, but died before the case reached the store: the restored rules send
    `opened` again at the next sighting, with the violation's own opening time (the case's opened_at), not the restart's."""
    import pickle

    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))
    parked = lambda t: dets(("car", jitter(CAR1, t)))  # noqa: E731
    [(kind, t_open, opened)] = run(rules, parked, end_s=310)
    assert kind is EventKind.OPENED and t_open == 302.0
    restored = pickle.loads(pickle.dumps(rules))  # what a checkpoint holds
    restored.reopen([opened.violation_id, "cam-1:nowhere:illegal_parking:t9:20240603T020000Z"])  # an unknown id is ignored
    [(kind, t_again, again)] = run(restored, parked, start=T0 + timedelta(seconds=312), end_s=20)
    assert kind is EventKind.OPENED and t_again == 0.0 and again.violation_id == opened.violation_id
    assert again.opened_at == opened.opened_at == T0 + timedelta(seconds=302) and again.at == T0 + timedelta(seconds=312)
    assert run(restored, parked, start=T0 + timedelta(seconds=334), end_s=20) == []  # sent once


def test_brief_stops_and_passing_cars_produce_nothing():
    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))

    def timeline(t):
        if t < 120:  # a 2-minute stop
            return dets(("car", CAR1))
        if 300 <= t < 400:  # driving through the zone, 15 px per second
            x = (t - 300) * 15
            return dets(("car", (x, 220, x + 200, 320)))
        if 500 <= t < 740:  # a 4-minute stop, still under the 5-minute dwell
            return dets(("car", CAR2))
        return dets()

    assert run(rules, timeline) == []


def test_detector_misses_and_jitter_do_not_split_a_violation():
    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5, lost_s=20))

    def timeline(t):
        if t >= 500:
            return dets()
        if 100 <= t < 140 or 250 <= t < 290:  # two 40 s gaps: longer than the tracker's 20 s
            return dets()
        if int(t) % 6 == 0:  # and one frame in three missed throughout
            return dets()
        return dets(("car", jitter(CAR1, t, px=8)), conf=0.45 if int(t) % 10 == 2 else 0.8)

    events = run(rules, timeline)
    kinds = [k for k, _, _ in events]
    assert kinds == [EventKind.OPENED, EventKind.CLEARED]
    # t=0 missed, t=2 too weak to start a track, t=4 starts it, t=6 missed, t=8 confirms it:
    # dwell runs from 8 s, straight through both gaps
    assert events[0][1] == 308.0
    assert events[0][2].first_seen == T0 + timedelta(seconds=8)
    assert len({e.violation_id for _, _, e in events}) == 1


def test_a_stream_outage_is_neither_absence_nor_presence():
    """A stream that dropped for 70 s and came back with the car still parked: the outage counted as absence, so the
    first frame back (the car's new track is confirmed at its second sighting) cleared it and the cooldown kept it
    unreported. Time without frames counts now for neither; a car gone during the outage clears after clear_s (60)
    of frames without it."""
    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(("car", jitter(CAR1, t))) if t < 600 else dets(), end_s=800, outage=(320, 390))
    assert [(k, t) for k, t, _ in events] == [(EventKind.OPENED, 302.0), (EventKind.CLEARED, 658.0)]  # last seen at 598
    assert len({e.violation_id for _, _, e in events}) == 1

    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(("car", jitter(CAR1, t))) if t < 320 else dets(), end_s=800, outage=(320, 390))
    assert [(k, t) for k, t, _ in events] == [(EventKind.OPENED, 302.0), (EventKind.CLEARED, 450.0)]  # 390 + 60


def test_frames_that_do_not_show_the_scene_hold_what_is_open_and_are_still_judged():
    """A PTZ camera turned away for 3 minutes (its frames marked VIEW_LOST, no car in them) cleared the car parked
    throughout after clear_s (60), and the cooldown kept it unreported when the view came back. Those frames are not
    absence: the car seen again is the same violation; one gone while the camera looked away clears clear_s after
    the view is back. What such a frame shows is still judged: a car seen on it opens as on any frame (a reference
    that matches badly at night must not stop a camera opening cases)."""
    def rules() -> CameraRules:
        return CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))

    away = (320, 500)
    parked = run(rules(), lambda t: dets() if away[0] <= t < away[1] else dets(("car", jitter(CAR1, t))), end_s=800, lost=away)
    assert [(k, t) for k, t, _ in parked] == [(EventKind.OPENED, 302.0)]
    left = run(rules(), lambda t: dets(("car", jitter(CAR1, t))) if t < away[0] else dets(), end_s=800, lost=away)
    assert [(k, t) for k, t, _ in left] == [(EventKind.OPENED, 302.0), (EventKind.CLEARED, 558.0)]  # the last frame away at 498, + 60
    seen_anyway = run(rules(), lambda t: dets(("car", jitter(CAR1, t))), end_s=400, lost=(0, 400))
    assert [(k, t) for k, t, _ in seen_anyway] == [(EventKind.OPENED, 302.0)]


def test_a_stream_outage_does_not_count_towards_dwell():
    """A car seen for 3 minutes before the stream dropped for 2 minutes: the outage counted as presence, so the first
    frames back opened it (dwell 300 s 'reached', 180 s of it seen). Dwell is time the camera saw the car stand there:
    it opens once it has been seen for the other 2 minutes, and its dwell_s says what was seen."""
    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(("car", jitter(CAR1, t))), end_s=600, outage=(182, 302))
    [(kind, t_open, opened)] = events
    assert kind is EventKind.OPENED and 420.0 <= t_open <= 424.0  # 180 s seen before (2..182) + 120 s seen after 302
    assert opened.first_seen == T0 + timedelta(seconds=2) and opened.dwell_s == 300.0


def test_second_car_is_a_second_violation_and_cooldown_blocks_the_same_spot():
    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))

    def timeline(t):
        objs = []
        if t < 400:
            objs.append(("car", CAR1))
        if 200 <= t < 700:  # arrives while the first is still there, at another spot
            objs.append(("car", CAR2))
        if 600 <= t < 1000:  # back on the first spot within its 600 s cooldown
            objs.append(("car", CAR1))
        return dets(*objs)

    events = run(rules, timeline, end_s=1100)
    summary = [(k, t, e.object_id) for k, t, e in events]
    opened = [e for k, _, e in events if k == EventKind.OPENED]
    assert len(opened) == 2, summary
    assert opened[0].violation_id != opened[1].violation_id
    assert [(k, t) for k, t, _ in events] == [
        (EventKind.OPENED, 302.0),
        (EventKind.CLEARED, 458.0),
        (EventKind.OPENED, 502.0),
        (EventKind.CLEARED, 758.0),
    ]


def test_same_spot_after_cooldown_is_a_new_violation():
    rules = CameraRules(scene(road={**ROAD, "thresholds": {"illegal_parking": {"dwell_s": 60, "cooldown_s": 120}}}), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(("car", CAR1)) if t < 100 or t >= 300 else dets(), end_s=500)
    assert [(k, t) for k, t, _ in events] == [(EventKind.OPENED, 62.0), (EventKind.CLEARED, 158.0), (EventKind.OPENED, 362.0)]
    assert events[0][2].thresholds["dwell_s"] == 60.0


def test_enforcement_hours_respected():
    hours = {**ROAD, "schedule": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "21:00"}]}
    # 13:30 UTC = 21:30 local, Monday: outside enforcement hours
    rules = CameraRules(scene(road=hours), tracking=TrackingConfig(frame_rate=0.5))
    assert run(rules, lambda t: dets(("car", CAR1)), start=datetime(2024, 6, 3, 13, 30, tzinfo=UTC), end_s=600) == []
    # Saturday 10:00 local: not a listed day
    rules = CameraRules(scene(road=hours), tracking=TrackingConfig(frame_rate=0.5))
    assert run(rules, lambda t: dets(("car", CAR1)), start=datetime(2024, 6, 8, 2, 0, tzinfo=UTC), end_s=600) == []
    # Monday 10:00 local: enforced
    rules = CameraRules(scene(road=hours), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(("car", CAR1)), end_s=600)
    assert [k for k, _, _ in events] == [EventKind.OPENED]


STALL = [("umbrella", (200, 120, 320, 200)), ("dining table", (210, 200, 310, 260)), ("person", (300, 150, 340, 265))]
MARKET = {
    "street": {"kind": "no_vending", "polygon": [[0, 0.3], [1, 0.3], [1, 1], [0, 1]]},
    "night-market": {
        "kind": "vending_permitted",
        "polygon": [[0.2, 0.5], [0.6, 0.5], [0.6, 0.9], [0.2, 0.9]],
        "schedule": [{"start": "18:00", "end": "22:00"}],
    },
}


def test_vending_in_permitted_zone_during_hours_is_legal_after_hours_a_violation():
    # 11:00 UTC = 19:00 local: inside the permitted hours
    rules = CameraRules(scene(**MARKET), tracking=TrackingConfig(frame_rate=0.5))
    assert run(rules, lambda t: dets(*STALL), start=datetime(2024, 6, 3, 11, 0, tzinfo=UTC), end_s=700) == []
    # 15:00 UTC = 23:00 local: after hours
    rules = CameraRules(scene(**MARKET), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(*STALL), start=datetime(2024, 6, 3, 15, 0, tzinfo=UTC), end_s=700)
    # the stall stands in the street and in the (closed) market area: one case, in the smaller zone
    assert [(k, t, e.zone_id, e.violation_type, e.object_count) for k, t, e in events] == [
        (EventKind.OPENED, 302.0, "night-market", "street_stall", 2)  # people are not counted
    ]
    assert sorted(events[0][2].detections.data["class_name"].tolist()) == ["dining table", "person", "umbrella"]


def test_stall_group_keeps_one_violation_while_people_come_and_go_and_updates_its_count():
    rules = CameraRules(scene(street=MARKET["street"]), tracking=TrackingConfig(frame_rate=0.5))
    extra_stall = [("umbrella", (330, 120, 440, 200)), ("dining table", (335, 200, 435, 260))]

    def timeline(t):
        objs = list(STALL[:2])
        if int(t // 60) % 2 == 0:  # the vendor walks off every other minute
            objs.append(STALL[2])
        if 400 <= t < 600:  # a neighbour sets up next to it
            objs += extra_stall
        return dets(*objs) if t < 700 else dets()

    events = run(rules, timeline, end_s=900)
    # opened with 2 stall parts; the neighbour's 2 parts hold 30 s -> 4; they leave -> 2; cleared
    assert [(k, t, e.object_count) for k, t, e in events] == [
        (EventKind.OPENED, 302.0, 2),
        (EventKind.UPDATED, 432.0, 4),
        (EventKind.UPDATED, 630.0, 2),
        (EventKind.CLEARED, 818.0, 2),
    ]
    assert len({e.violation_id for _, _, e in events}) == 1


def test_lone_umbrella_or_person_is_not_a_stall():
    rules = CameraRules(scene(street=MARKET["street"]), tracking=TrackingConfig(frame_rate=0.5))
    assert run(rules, lambda t: dets(STALL[0]) if t < 300 else dets(STALL[2]), end_s=700) == []


def test_custom_model_class_works_through_the_taxonomy():
    rules = CameraRules(scene(street=MARKET["street"]), tracking=TrackingConfig(frame_rate=0.5))
    events = run(rules, lambda t: dets(("vendor_cart", (200, 150, 330, 260))), end_s=400)
    assert [(k, e.violation_type) for k, _, e in events] == [(EventKind.OPENED, "street_stall")]


def test_frame_from_another_camera_is_refused():
    rules = CameraRules(scene(road=ROAD))
    with pytest.raises(ValueError, match="source 'cam-2' fed to the rules of camera 'cam-1'"):
        rules.process(Frame(image=IMAGE, source_id="cam-2", ts=T0), dets())
