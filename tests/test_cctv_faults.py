"""Faults: broken cameras report their state and retry or fail alone; every other camera keeps running."""

from __future__ import annotations

import pytest

from pipelines.cctv.service import Watcher
from benchmarks.media import concat, truncate
from tests.cctv_helpers import cameras_file, make_intake, parked_clip, scene_for
from tests.pg import free_port


@pytest.fixture(scope="module")
def clips(tmp_path_factory, bus_jpg, real_sample_dir):
    folder = tmp_path_factory.mktemp("clips")
    mp4 = parked_clip(folder / "parked.mp4", bus_jpg, real_sample_dir, duration_s=40, arrive_s=2, leave_s=28)
    ts = parked_clip(folder / "parked.ts", bus_jpg, real_sample_dir, duration_s=40, arrive_s=2, leave_s=28)
    return folder, mp4, ts


@pytest.mark.slow  # 13 s: eight camera clips judged; the default suite's ~15-minute budget
def test_eight_cameras_one_process_broken_ones_alone(tmp_path, clips, real_sample_dir, onnx_detector):
    folder, mp4, ts = clips
    (tmp_path / "empty.mp4").write_bytes(b"")
    truncate(mp4.path, tmp_path / "cut.mp4", keep=0.4)  # no index at the end: unreadable
    truncate(ts.path, tmp_path / "cut.ts", keep=0.5)  # a stream: readable up to the cut
    good = [f"good-{i}" for i in range(4)]
    urls = {**{cid: str(mp4.path) for cid in good}, "zero": "empty.mp4", "cut-mp4": "cut.mp4", "cut-ts": "cut.ts",
            "no-server": f"rtsp://127.0.0.1:{free_port()}/cam"}
    for cid in urls:
        scene_for(tmp_path, cid, real_sample_dir, dwell_s=10, clear_s=6)
    (tmp_path / "bad-scene.yaml").write_text("camera_id: bad-scene\nzones:\n  - {id: z, kind: no_parking, polygon: [[0, 0], [1, 1]]}\n")
    cams = [{"id": cid, "url": url, "scene": f"{cid}.yaml", "analysis_fps": 0.5,
             "backoff": {"initial_s": 0.2, "max_s": 0.5, "offline_after": 2}} for cid, url in urls.items()]
    cams.append({"id": "bad-scene", "url": str(mp4.path), "scene": "bad-scene.yaml"})
    intake = make_intake(tmp_path / "data")

    watcher = Watcher(cameras_file(tmp_path / "cameras.yaml", cams), onnx_detector, intake, replay=True)
    summary = watcher.run(poll_s=0.1)

    cameras = summary["cameras"]
    for cid in good:
        assert cameras[cid]["status"] == "finished" and cameras[cid]["frames_analysed"] == cameras[cid]["frames_queued"] == 20
        assert [c.source_id for c in intake.store.list(source_id=cid)] == [cid]
    assert cameras["zero"]["status"] == "failed" and cameras["zero"]["frames_read"] == 0
    assert cameras["cut-mp4"]["status"] == "failed"
    # the summary printed at exit says why a file failed, as it does for a refused camera
    assert cameras["zero"]["reason"].startswith(f"camera zero: cannot open {tmp_path / 'empty.mp4'}: ")
    assert "cut.mp4" in cameras["cut-mp4"]["reason"] and "reason" not in cameras["good-0"] and "reason" not in cameras["cut-ts"]
    assert cameras["cut-ts"]["status"] == "finished" and 0 < cameras["cut-ts"]["frames_analysed"] < 20
    assert cameras["no-server"]["status"] in ("reconnecting", "offline", "stopped") and cameras["no-server"]["frames_read"] == 0
    assert cameras["bad-scene"]["status"] == "refused"
    assert "bad-scene.yaml: zones.0.polygon" in cameras["bad-scene"]["reason"] and "at least 3 points" in cameras["bad-scene"]["reason"]

    status = {(r["camera_id"], r["status"]): r["detail"] for r in watcher.records if r["event"] == "camera_status"}
    assert "empty.mp4" in status[("zero", "failed")]
    assert "cut.mp4" in status[("cut-mp4", "failed")]
    health = [(r["camera_id"], r["kind"], r["active"]) for r in watcher.records if r["event"] == "camera_health"]
    assert ("no-server", "reconnecting", True) in health and ("no-server", "offline", True) in health
    assert "Connection refused" in status[("no-server", "reconnecting")]
    assert summary["cases_opened"] == 5  # the four good ones, and the cut stream before its cut (bus from 2 s, dwell 10 s)


@pytest.mark.slow  # 4 s: a clip whose resolution changes mid-stream; the default suite's ~15-minute budget
def test_resolution_change_mid_stream_keeps_one_violation(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    """A stream switching from 640x360 to 1280x720 with the bus standing throughout: frames keep their
    size (zones and tracks carry over), the change is reported, and the bus is one case, not two."""
    small = parked_clip(tmp_path / "a.ts", bus_jpg, real_sample_dir, duration_s=20, arrive_s=0, leave_s=20)
    large = parked_clip(tmp_path / "b.ts", bus_jpg, real_sample_dir, duration_s=20, arrive_s=0, leave_s=12, size=(1280, 720))
    concat([small.path, large.path], tmp_path / "cam.ts")
    scene_for(tmp_path, "cam", real_sample_dir, dwell_s=15, clear_s=5)
    intake = make_intake(tmp_path / "data")
    sizes = []
    watcher = Watcher(cameras_file(tmp_path / "cameras.yaml", [{"id": "cam", "url": "cam.ts", "scene": "cam.yaml"}]),
                      onnx_detector, intake, replay=True, on_record=lambda r: None)
    original = watcher.detector.detect
    watcher.detector = type("Spy", (), {"detect": lambda self, images: (sizes.extend(i.shape for i in images), original(images))[1]})()
    summary = watcher.run(poll_s=0.1)

    assert summary["cameras"]["cam"]["frames_analysed"] == 40
    assert set(sizes) == {(360, 640, 3)}
    changes = [r for r in watcher.records if r["event"] == "camera_health" and r["kind"] == "resolution_changed"]
    assert [c["detail"] for c in changes] == ["640x360 -> 1280x720"]
    [case] = intake.store.list()
    kinds = [r["kind"] for r in watcher.records if r["event"] == "violation"]
    assert kinds == ["opened", "cleared"] and case.cleared_at is not None


def test_a_refusal_is_logged_on_one_line_with_yaml_s_position(tmp_path, real_sample_dir, onnx_detector, caplog):
    """A scene or cameras file broken as YAML was logged over four lines (YAML's position, the line it quotes, a caret),
    though logs are one line per record: whatever reads the log took the three after the first for records of their
    own. A camera refused at start, a running one kept on its last scene and a reload refused each log one line."""
    for cid in ("cam-01", "cam-02"):
        scene_for(tmp_path, cid, real_sample_dir)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": cid, "url": "a.mp4", "scene": f"{cid}.yaml"} for cid in ("cam-01", "cam-02")])
    (tmp_path / "cam-02.yaml").write_text("camera_id: cam-02\nzones: x: y\n")
    with caplog.at_level("ERROR", logger="pipelines.cctv"):
        watcher = Watcher(cams, onnx_detector, make_intake(tmp_path / "data"))
        (tmp_path / "cam-01.yaml").write_text("camera_id: cam-01\nzones: x: y\n")
        assert watcher.reload() and "cam-01" in watcher.kept
        cams.write_text(cams.read_text() + "oops: a: b\n")
        assert not watcher.reload()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert [m.split(":")[0] for m in errors] == ["camera cam-02 refused", "camera cam-01 keeps running on its last valid configuration; "
                                                 "its new one is refused", "reload refused, keeping the running cameras"]
    for message in errors:
        assert "\n" not in message and "mapping values are not allowed here" in message and ", line " in message, message
