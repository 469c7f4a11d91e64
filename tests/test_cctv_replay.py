"""Replay of generated street clips through the whole CCTV service: detector, tracker, rules, cases, evidence."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import supervision as sv

from detect.evidence.signing import read_manifest, verify_bundle
from detect.frames import TIME_SOURCE
from pipelines.cases import CaseState
from pipelines.cctv.service import Watcher
from benchmarks.media import Sprite, street_view, write_clip
from tests.cctv_helpers import KEY, SIZE, cameras_file, make_intake, other_view, parked_clip, scene_for, street


def _watch(tmp_path, detector, intake, cameras: list[dict]) -> tuple[Watcher, dict]:
    watcher = Watcher(cameras_file(tmp_path / "cameras.yaml", cameras), detector, intake, replay=True)
    return watcher, watcher.run(poll_s=0.1)


def _violations(watcher: Watcher) -> list[tuple[str, str]]:
    return [(r["kind"], r["violation_id"]) for r in watcher.records if r["event"] == "violation"]


def test_replay_opens_one_case_then_clears_it_with_signed_evidence(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    clip = parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=150, arrive_s=10, leave_s=100)
    scene_for(tmp_path, "cam-01", real_sample_dir, dwell_s=60, clear_s=30)
    intake = make_intake(tmp_path / "data")

    watcher, summary = _watch(tmp_path, onnx_detector, intake, [{"id": "cam-01", "url": "cam-01.mp4", "scene": "cam-01.yaml"}])

    cam = summary["cameras"]["cam-01"]
    assert cam["status"] == "finished" and cam["frames_queued"] == cam["frames_analysed"] == 150 and cam["frames_dropped"] == 0
    assert summary["cases_opened"] == 1 and summary["in_flight"] == 0
    [case] = intake.store.list()
    assert (case.violation_type, case.zone_id, case.source_kind, case.source_id) == ("illegal_parking", "curb", "camera", "cam-01")
    # Media time drives the rules: the bus arrives at 10 s, dwell is 60 s; last seen at 99 s, clear is 30 s.
    assert timedelta(seconds=70) <= case.opened_at - clip.start <= timedelta(seconds=75)
    assert timedelta(seconds=129) <= case.cleared_at - clip.start <= timedelta(seconds=135)
    assert [k for k, _ in _violations(watcher)] == ["opened", "cleared"]
    assert len({vid for _, vid in _violations(watcher)}) == 1

    bundle = intake.evidence.path(case.evidence_ref)
    report = verify_bundle(bundle, KEY)
    assert report.ok, report
    roles = {a["role"] for a in read_manifest(bundle)["artifacts"]}
    assert (bundle / "originals" / "opened_original.jpg").is_file() and list((bundle / "crops").glob("*bus*.jpg"))
    assert len(list((bundle / "strip").glob("*.jpg"))) >= 2  # ring-buffer frames before the opening
    assert [b["class_name"] for b in case.evidence_boxes["boxes"]] == ["bus"]
    assert (case.evidence_boxes["width"], case.evidence_boxes["height"]) == SIZE
    assert {"original_opened", "crop"} <= roles
    # the clip's creation_time tag timed it, and the manifest says so (a photo's says exif, name …)
    assert read_manifest(bundle)["times"]["sources"] == {"first_seen": "creation_time", "opened": "creation_time"}
    # The real clip has sensor noise and a clock: no health alarms on a working camera.
    assert [r for r in watcher.records if r["event"] == "camera_health"] == []


@pytest.mark.slow  # ~15 s: two 75 s clips judged by the detector; the default suite's ~15-minute budget
def test_a_camera_that_stops_seeing_its_zone_does_not_clear_the_violation_it_had_open(tmp_path, bus_jpg, real_sample_dir,
                                                                                       onnx_detector):
    """Found replaying a clip: a PTZ camera turned away (or its lens went black) for longer than `clear_s` cleared the
    stall's case while the stall stood there, and the cooldown then kept the stall from a new case when the view came
    back; `moved` (after `moved_s`, 120 s) came too late. Now the frames that do not show the scene hold the violation:
    cam-01's bus stands throughout (another street 15-40 s) and its one case clears 10 s after it leaves at 55 s;
    cam-02's bus leaves while the lens is black (15-40 s) and its case clears 10 s after the picture is back."""
    black = Sprite(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), x=0.5, bottom=1.0, height=1.0, start_s=15, end_s=40)
    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=75, arrive_s=2, leave_s=55,
                over=[other_view(real_sample_dir, 15, 40)])
    clip = parked_clip(tmp_path / "cam-02.mp4", bus_jpg, real_sample_dir, duration_s=75, arrive_s=2, leave_s=30, over=[black])
    for cid in ("cam-01", "cam-02"):
        scene_for(tmp_path, cid, real_sample_dir, dwell_s=4, clear_s=10)
    intake = make_intake(tmp_path / "data")

    watcher, summary = _watch(tmp_path, onnx_detector, intake, [{"id": cid, "url": f"{cid}.mp4", "scene": f"{cid}.yaml"}
                                                                for cid in ("cam-01", "cam-02")])

    assert summary["cases_opened"] == 2
    cases = {case.source_id: case for case in intake.store.list()}
    assert sorted(cases) == ["cam-01", "cam-02"] and len(intake.store.list()) == 2
    cleared = {cid: (case.cleared_at - clip.start).total_seconds() for cid, case in cases.items()}
    assert 64 <= cleared["cam-01"] <= 68, cleared  # last seen at 54 s; cleared at 25 s before
    assert 49 <= cleared["cam-02"] <= 52, cleared  # seen again from 40 s without the bus; cleared at 24 s before
    for cid in cases:
        assert [k for k, vid in _violations(watcher) if vid.startswith(cid)] == ["opened", "cleared"]
    lost = [(r["camera_id"], r["active"], round((datetime.fromisoformat(r["at"]) - clip.start).total_seconds()))
            for r in watcher.records if r["event"] == "camera_health" and r["kind"] == "view_lost"]
    assert sorted(lost) == [("cam-01", False, 40), ("cam-01", True, 15), ("cam-02", False, 40), ("cam-02", True, 15)], lost


@pytest.mark.slow  # 12 s: a clip judged twice; the default suite's ~15-minute budget
def test_reverification_records_still_present_then_verified_cleared(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    scene_for(tmp_path, "cam-02", real_sample_dir, dwell_s=20, clear_s=10)
    intake = make_intake(tmp_path / "data")
    cam = {"id": "cam-02", "scene": "cam-02.yaml", "verify_every_s": 5}
    parked_clip(tmp_path / "parked.mp4", bus_jpg, real_sample_dir, duration_s=50, arrive_s=2, leave_s=35)
    _watch(tmp_path, onnx_detector, intake, [{**cam, "url": "parked.mp4"}])
    [case] = intake.store.list()
    assert case.cleared_at is not None and case.state is CaseState.CANDIDATE

    # The city handled it; the case waits in `verifying` for the camera.
    intake.store.review(case.id, approve=True, reviewer="li.wei", target="cn-dcm")
    [entry] = intake.store.claim_due()
    intake.store.mark_delivered(entry.id, "DCM-1")
    intake.store.mark_handled(case.id, actor="dispatch:cn-dcm")

    # Later footage with the bus still there (shorter than the dwell: no new case).
    parked_clip(tmp_path / "still.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=12)
    watcher, _ = _watch(tmp_path, onnx_detector, intake, [{**cam, "url": "still.mp4", "start_time": "2025-03-14T11:00:00"}])
    checked = intake.store.get(case.id)
    assert checked.state is CaseState.STILL_PRESENT and checked.verification_ref
    assert [r["outcome"] for r in watcher.records if r["event"] == "reverification"] == ["still_present"]
    assert len(intake.store.list()) == 1

    intake.store.mark_handled(case.id, actor="dispatch:cn-dcm")
    write_clip(tmp_path / "empty.mp4", street_view(street(real_sample_dir), SIZE), [], 12, fps=2)
    watcher, _ = _watch(tmp_path, onnx_detector, intake, [{**cam, "url": "empty.mp4", "start_time": "2025-03-14T12:00:00"}])
    done = intake.store.get(case.id)
    assert done.state is CaseState.VERIFIED_CLEARED and done.verification_ref != checked.verification_ref
    bundle = intake.evidence.path(done.evidence_ref)
    assert len(list((bundle / "verification").glob("verification_*_original.jpg"))) == 2 and verify_bundle(bundle, KEY).ok


def test_a_case_closed_in_review_while_verifying_leaves_no_absence_behind(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    """The re-check remembered since when each `verifying` case was not seen, and forgot it only when the camera
    re-checked the case; a case closed in review in the meantime stayed remembered for as long as the watcher ran,
    one more per such case. It is forgotten at the camera's next re-check."""
    import supervision as sv

    from detect.frames import Frame

    scene_for(tmp_path, "cam-02", real_sample_dir, dwell_s=4, clear_s=600)
    intake = make_intake(tmp_path / "data")
    cam = {"id": "cam-02", "scene": "cam-02.yaml", "verify_every_s": 2}
    parked_clip(tmp_path / "parked.mp4", bus_jpg, real_sample_dir, duration_s=10, arrive_s=1, leave_s=10)
    _watch(tmp_path, onnx_detector, intake, [{**cam, "url": "parked.mp4"}])
    [case] = intake.store.list()
    intake.store.review(case.id, approve=True, reviewer="li.wei", target="cn-dcm")
    [entry] = intake.store.claim_due()
    intake.store.mark_delivered(entry.id, "DCM-1")
    intake.store.mark_handled(case.id, actor="dispatch:cn-dcm")

    empty = street_view(street(real_sample_dir), SIZE)
    write_clip(tmp_path / "empty.mp4", empty, [], 6, fps=2)  # gone, but not for the 600 s clear time yet
    watcher, _ = _watch(tmp_path, onnx_detector, intake, [{**cam, "url": "empty.mp4", "start_time": "2025-03-14T12:00:00"}])
    assert intake.store.get(case.id).state is CaseState.VERIFYING and watcher.sink._absent_since  # its absence remembered

    intake.store.transition(case.id, CaseState.CLOSED, actor="li.wei", reason="closed in review")
    later = Frame(empty, "cam-02", datetime(2025, 3, 14, 4, 1, tzinfo=UTC), frame_id="later")
    watcher.sink.post_check(watcher.runtimes["cam-02"].camera, later, sv.Detections.empty())
    watcher.sink.close()
    watcher.sink.run()  # what was posted, in this thread
    assert not watcher.sink._absent_since


def test_replay_starts_at_the_files_time_only_when_a_recording_can_have_begun_then(tmp_path, real_sample_dir, onnx_detector, caplog):
    """A replayed file with no start_time and no creation_time tag (.ts) is timed by its modification time, which
    was taken unchecked: a camera's unset 1970, a zip's 1980 or a time in the future dated every frame and case so.
    Such a time is refused by triage's rule (possible_capture): the replay runs as of now, with a warning naming
    the file and why; a possible one is still the start."""
    write_clip(tmp_path / "clip.ts", street_view(street(real_sample_dir), SIZE), [], 2, fps=2)
    scene_for(tmp_path, "cam-04", real_sample_dir)
    cameras = [{"id": "cam-04", "url": "clip.ts", "scene": "cam-04.yaml"}]
    intake = make_intake(tmp_path / "data")

    def first_frame_time(modified: datetime, source: str = "file", **camera) -> datetime:
        os.utime(tmp_path / "clip.ts", (modified.timestamp(), modified.timestamp()))
        frames: list = []
        Watcher(cameras_file(tmp_path / "cameras.yaml", [{**cameras[0], **camera}]), onnx_detector, intake, replay=True,
                on_analysed=frames.append).run(poll_s=0.1)
        assert frames, "no frame judged"
        assert {f.meta[TIME_SOURCE] for f in frames} == {source}  # where the times came from, as the manifest records it
        return min(f.ts for f in frames)

    recorded = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    assert first_frame_time(recorded) == recorded
    # the camera's start_time, naive in its zone (+08:00), comes before the file's time, and the frames say so
    assert first_frame_time(recorded, "start_time", start_time="2024-06-02 08:00:00") == datetime(2024, 6, 2, tzinfo=UTC)
    for modified, why in ((datetime(1980, 1, 1, tzinfo=UTC), "is before 2000"), (datetime.now(UTC) + timedelta(days=30), "is in the future")):
        caplog.clear()
        before = datetime.now(UTC)
        started = first_frame_time(modified, "run")
        assert before <= started <= datetime.now(UTC)
        [warning] = [r.getMessage() for r in caplog.records if "replay start" in r.getMessage()]
        assert str(tmp_path / "clip.ts") in warning and why in warning and "replayed as of now" in warning


def test_a_creation_time_tag_a_recording_cannot_have_begun_at_gives_way_to_the_files_time(tmp_path, real_sample_dir,
                                                                                         onnx_detector, caplog):
    """A recording's creation_time tag was taken unchecked: a camera whose clock was never set writes 1970 there, and
    every frame and case of the replay was dated so (or 1980, as here). Refused by the same rule as the file's time (possible_capture),
    with a warning, and the file's time is tried next; a possible tag is still the start."""
    write_clip(tmp_path / "plain.mp4", street_view(street(real_sample_dir), SIZE), [], 2, fps=2)
    scene_for(tmp_path, "cam-05", real_sample_dir)
    intake = make_intake(tmp_path / "data")
    modified = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)

    def first_frame_time(tag: str) -> tuple[datetime, set[str]]:
        clip = tmp_path / "clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "plain.mp4"), "-c", "copy",
                        "-metadata", f"creation_time={tag}", str(clip)], check=True)
        os.utime(clip, (modified.timestamp(), modified.timestamp()))
        frames: list = []
        Watcher(cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-05", "url": "clip.mp4", "scene": "cam-05.yaml"}]),
                onnx_detector, intake, replay=True, on_analysed=frames.append).run(poll_s=0.1)
        assert frames, "no frame judged"
        return min(f.ts for f in frames), {f.meta[TIME_SOURCE] for f in frames}  # where the times came from

    assert first_frame_time("2024-05-01T08:00:00.000000Z") == (datetime(2024, 5, 1, 8, tzinfo=UTC), {"creation_time"})
    caplog.clear()
    # (1970, the mp4 "unset", ffmpeg does not read back)
    assert first_frame_time("1980-01-01T00:00:00.000000Z") == (modified, {"file"})
    [warning] = [r.getMessage() for r in caplog.records if "replay start" in r.getMessage()]
    assert "creation_time" in warning and "is before 2000" in warning and "the file's time is tried instead" in warning


@pytest.mark.slow
def test_ten_minute_clip_tests_the_default_five_minute_dwell(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    """The taxonomy's own thresholds (dwell 300 s, clear 60 s) on a 10-minute clip, judged in media time."""
    clip = parked_clip(tmp_path / "cam-03.mp4", bus_jpg, real_sample_dir, duration_s=600, arrive_s=30, leave_s=450, fps=1)
    scene_for(tmp_path, "cam-03", real_sample_dir)
    intake = make_intake(tmp_path / "data")
    watcher, summary = _watch(tmp_path, onnx_detector, intake,
                              [{"id": "cam-03", "url": "cam-03.mp4", "scene": "cam-03.yaml", "keyframes_only": True}])
    assert summary["cameras"]["cam-03"]["frames_analysed"] == 600
    [case] = intake.store.list()
    assert timedelta(seconds=330) <= case.opened_at - clip.start <= timedelta(seconds=336)
    assert timedelta(seconds=509) <= case.cleared_at - clip.start <= timedelta(seconds=516)
    assert [k for k, _ in _violations(watcher)] == ["opened", "cleared"]


@pytest.mark.slow  # ~6 s: one clip judged twice; the default suite's ~15-minute budget
def test_a_replay_judged_again_without_saved_states_opens_no_second_case_and_counts_none(tmp_path, bus_jpg, real_sample_dir,
                                                                                       onnx_detector):
    """The same recording replayed again with no saved rules states (`watch --replay --no-state` run twice): its
    violation is the one already recorded (the same violation id), so no case is drafted, yet the summary and the
    `cases_opened` metric counted it as opened (`cases_opened: 2` for two runs of one bus). They count new cases only;
    the events file's opened line names the case it already has."""
    start = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    scene_for(tmp_path, "cam-01", real_sample_dir, dwell_s=4, clear_s=3)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-01", "url": "cam-01.mp4", "scene": "cam-01.yaml", "analysis_fps": 2}])
    intake = make_intake(tmp_path / "data")
    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=1, leave_s=12, start=start)
    assert Watcher(cams, onnx_detector, intake, replay=True).run(poll_s=0.1)["cases_opened"] == 1
    [case] = intake.store.list()
    again = Watcher(cams, onnx_detector, intake, replay=True)
    assert again.run(poll_s=0.1)["cases_opened"] == 0
    assert [c.id for c in intake.store.list()] == [case.id]
    assert [(r["kind"], r["case_id"]) for r in again.records if r["event"] == "violation"] == [("opened", case.id)]


@pytest.mark.slow  # 8 s: a clip judged across a restart (test_cctv_cli's through the CLI is slow too); the default suite's ~15-minute budget
def test_a_restart_with_saved_rules_states_keeps_the_violation_and_its_one_case(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    """`watch` stopped and started again while a bus stood in the zone: the restarted watcher began every camera
    afresh, so the bus opened a second case at its next dwell and the first was never cleared. With `state_path`
    the stop saves each camera's rules and the start restores them: the same violation goes on, one case, cleared."""
    start = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    scene_for(tmp_path, "cam-01", real_sample_dir, dwell_s=4, clear_s=3)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-01", "url": "cam-01.mp4", "scene": "cam-01.yaml", "analysis_fps": 2}])
    intake = make_intake(tmp_path / "data")
    state = tmp_path / "state" / "cctv-rules.pickle"

    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=1, leave_s=12, start=start)
    Watcher(cams, onnx_detector, intake, replay=True, state_path=state).run(poll_s=0.1)
    [case] = intake.store.list()
    assert case.cleared_at is None and state.is_file()

    # The camera's next recording: the bus still stands there, and drives off 6 s in.
    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=6,
                start=start + timedelta(seconds=12))
    again = Watcher(cams, onnx_detector, intake, replay=True, state_path=state)
    summary = again.run(poll_s=0.1)
    assert summary["cases_opened"] == 0 and _violations(again) == [("cleared", case.violation_id)]
    [case] = intake.store.list()
    assert case.cleared_at is not None


def test_saved_rules_states_that_cannot_be_read_are_named_and_the_cameras_start_afresh(tmp_path, bus_jpg, real_sample_dir,
                                                                                        onnx_detector, caplog):
    """A state file cut short (a full disk) or a camera's state saved by another version: `watch` must start all the
    same, each camera afresh, with a warning naming the file and why."""
    import pickle

    from pipelines.cctv.state import camera_key

    scene_for(tmp_path, "cam-01", real_sample_dir, dwell_s=2, clear_s=3)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-01", "url": "cam-01.mp4", "scene": "cam-01.yaml", "analysis_fps": 2}])
    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=6, arrive_s=1, leave_s=6)
    state = tmp_path / "cctv-rules.pickle"
    for damage in ("file", "camera"):
        intake = make_intake(tmp_path / damage)
        watcher = Watcher(cams, onnx_detector, intake, replay=True, state_path=state)
        key = camera_key(watcher.runtimes["cam-01"].camera)
        state.write_bytes(b"\x80\x05\x95 cut short" if damage == "file" else
                          pickle.dumps({"cam-01": (key, datetime(2025, 3, 14, tzinfo=UTC), b"not a state")}))
        with caplog.at_level("WARNING", logger="pipelines.cctv"):
            summary = watcher.run(poll_s=0.1)
        assert summary["cases_opened"] == 1 and summary["cameras"]["cam-01"]["frames_analysed"] == 12
        [warning] = [r.getMessage() for r in caplog.records if str(state) in r.getMessage()]
        assert "starts afresh" in warning or "start afresh" in warning
        caplog.clear()


def test_a_violation_id_carries_its_first_sighting_in_utc_whatever_zone_the_frames_are_in(tmp_path, bus_jpg, real_sample_dir,
                                                                                          onnx_detector):
    """A replayed file without a creation_time tag (.ts) is timed by its modification time in the scene's zone, so its
    frames are Asia/Shanghai times: the violation id wrote their local clock with a UTC `Z` (a bus first seen at 09:30
    UTC was `...:20240601T173000Z`), eight hours off for whoever reads the id, a platform included."""
    parked_clip(tmp_path / "cam-05.ts", bus_jpg, real_sample_dir, duration_s=8, arrive_s=0, leave_s=8)
    recorded = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    os.utime(tmp_path / "cam-05.ts", (recorded.timestamp(), recorded.timestamp()))
    scene_for(tmp_path, "cam-05", real_sample_dir, dwell_s=3)
    intake = make_intake(tmp_path / "data")
    watcher, _ = _watch(tmp_path, onnx_detector, intake, [{"id": "cam-05", "url": "cam-05.ts", "scene": "cam-05.yaml"}])
    [case] = intake.store.list()
    first = case.first_seen_at.astimezone(UTC)
    assert recorded <= first <= recorded + timedelta(seconds=3)
    assert case.violation_id.endswith(f":{first:%Y%m%dT%H%M%S}Z") and ":20240601T0930" in case.violation_id, case.violation_id
    # the events file's times are all UTC: the violation's was the frame's +08:00 beside its statuses' +00:00
    times = {r["event"]: r["at"] for r in watcher.records if r.get("at")}
    assert {"violation", "camera_status"} <= times.keys() and all(at.endswith("+00:00") for at in times.values()), times
    assert recorded <= datetime.fromisoformat(times["violation"]) <= recorded + timedelta(seconds=10), times


def test_an_events_file_with_a_replays_local_times_is_read_as_the_same_instants_in_utc(tmp_path):
    """Events files written before every time in them was UTC hold a replay's times in the camera's zone (+08:00):
    the service reads them as the same instants, and answers them in UTC as it does the new ones."""
    from api.cameras import CameraEvents

    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(r) for r in (
        {"event": "camera_status", "camera_id": "cam-05", "status": "online", "detail": None, "at": "2024-06-01T17:30:00+08:00"},
        {"event": "camera_health", "camera_id": "cam-05", "kind": "view_lost", "active": True, "detail": "covered",
         "at": "2024-06-01T17:31:00.500000+08:00"},
        {"event": "camera_status", "camera_id": "cam-06", "status": "online", "detail": None, "at": "2024-06-01T09:30:00+00:00"},
    )) + "\n", encoding="utf-8")
    shown = CameraEvents(events)
    shown.refresh()
    old, new = shown.of("cam-05"), shown.of("cam-06")
    assert old["since"] == new["since"] == "2024-06-01T09:30:00+00:00"
    assert old["conditions"] == [{"kind": "view_lost", "since": "2024-06-01T09:31:00.500000+00:00", "detail": "covered"}]


def test_a_replay_resumed_from_its_state_does_not_report_the_health_it_reported_already(tmp_path, real_sample_dir,
                                                                                        onnx_detector):
    """A replay run again with its saved state skips the frames it judged, yet their pictures were checked again: a
    black-and-white recording reported its `infrared` condition a second time, an hour-old start counted again in
    streetwatch_cctv_health_events_total and the events file. What the state covers is not reported again."""
    import cv2

    grey = cv2.cvtColor(cv2.cvtColor(street_view(street(real_sample_dir), SIZE), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    write_clip(tmp_path / "night.mp4", grey, [], 8, fps=2)
    scene_for(tmp_path, "cam-06", real_sample_dir)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-06", "url": "night.mp4", "scene": "cam-06.yaml",
                                                    "health": {"infrared_s": 2, "check_every_s": 1}}])
    intake = make_intake(tmp_path / "data")
    state = tmp_path / "cctv-rules.pickle"

    def health(watcher: Watcher) -> list[tuple[str, bool]]:
        return [(r["kind"], r["active"]) for r in watcher.records if r["event"] == "camera_health"]

    first = Watcher(cams, onnx_detector, intake, replay=True, state_path=state)
    first.run(poll_s=0.1)
    assert health(first) == [("infrared", True)]
    again = Watcher(cams, onnx_detector, intake, replay=True, state_path=state)
    summary = again.run(poll_s=0.1)
    assert summary["cameras"]["cam-06"]["frames_analysed"] == 0 and health(again) == []


def test_what_a_camera_reports_while_the_case_store_is_down_is_recorded_once_it_is_back(tmp_path, real_sample_dir,
                                                                                       bus_event, caplog):
    """`watch` with the case store down (PostgreSQL restarted): the case sink logged each event's traceback and dropped
    it, so a violation opened then never became a case, its clearing later finding 'no case to update'. The sink holds
    the event, says so once, and records it when the store answers. The store: its SQLite file moved away and back."""
    from dataclasses import replace

    from detect.evidence.builder import BundleContext
    from detect.taxonomy import load_taxonomy
    from pipelines.cctv.case_sink import CaseSink
    from pipelines.cctv.config import load_cameras
    from pipelines.cctv.metrics import Metrics
    from tests.dispatch_helpers import small_event

    scene_for(tmp_path, "cam-01", real_sample_dir)
    [camera] = load_cameras(cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-01", "url": "rtsp://127.0.0.1:1/x",
                                                                       "scene": "cam-01.yaml"}])).cameras
    intake = make_intake(tmp_path / "data")
    database, aside = tmp_path / "data" / "cases.db", tmp_path / "data" / "aside.db"
    database.rename(aside)
    sink = CaseSink(intake, load_taxonomy(), Metrics())
    sink.store_retry_s = 0.05
    event = replace(small_event(bus_event), violation_id="cam-01:curb:illegal_parking:t1")
    with caplog.at_level("INFO", logger="pipelines.cctv.case_sink"):
        sink.start()
        sink.post_event(camera, event, BundleContext(source_id="cam-01"))
        for _ in range(500):
            if "what the cameras report waits for it" in caplog.text or "failed" in caplog.text:
                break
            sink._closing.wait(0.01)
        sink._closing.wait(0.2)  # several more tries meet the outage: still one line
        assert caplog.text.count("what the cameras report waits for it") == 1 and "failed" not in caplog.text
        sink.post_check(camera, event.frame, sv.Detections.empty())
        assert sink._queue.empty()  # a re-check holds a whole frame: none is queued through the outage
        aside.rename(database)
        for _ in range(500):  # the next try records it
            if intake.store.list():
                break
            sink._closing.wait(0.01)
        sink.close()
        sink.join(timeout=60)
    [case] = intake.store.list()
    assert (case.violation_id, case.source_id, case.violation_type) == (event.violation_id, "cam-01", "illegal_parking")
    assert "the case store answers again" in caplog.text
