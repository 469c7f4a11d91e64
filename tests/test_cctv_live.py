"""Live mode: an RTSP stream from GStreamer's RTSP server on 127.0.0.1, metrics over HTTP, reload."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from detect.evidence.signing import read_manifest
from detect.scenes import Scene
from pipelines.cctv.config import Camera, CameraConfig
from pipelines.cctv.reader import CameraReader, ReaderHooks
from pipelines.cctv.service import Watcher
from tests.cctv_helpers import cameras_file, make_intake, parked_clip, scene_for
from tests.conftest import REPO, start_server, stop_process
from tests.pg import free_port

SYSTEM_PYTHON = "/usr/bin/python3"


def _until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture
def rtsp_url(tmp_path, bus_jpg, real_sample_dir):
    """A 60 s clip (the bus parks at 1 s) served live over RTSP by scripts/rtsp_server.py."""
    if not Path(SYSTEM_PYTHON).is_file():
        pytest.fail(f"{SYSTEM_PYTHON} not found: the RTSP server runs with the system Python (scripts/install-system-deps.sh)")
    clip = parked_clip(tmp_path / "served.mp4", bus_jpg, real_sample_dir, duration_s=60, arrive_s=1, leave_s=60)
    port = free_port()
    proc = start_server([SYSTEM_PYTHON, str(REPO / "scripts" / "rtsp_server.py"), str(clip.path), "--port", str(port), "--path", "/cam1"],
                        "127.0.0.1", port, tmp_path / "rtsp.log")
    try:
        yield f"rtsp://127.0.0.1:{port}/cam1"
    finally:
        stop_process(proc)


@pytest.mark.slow  # 12 s: a GStreamer RTSP server and a watch process
def test_rtsp_stream_end_to_end_with_metrics_and_reload(tmp_path, rtsp_url, bus_jpg, real_sample_dir, onnx_detector):
    parked_clip(tmp_path / "local.mp4", bus_jpg, real_sample_dir, duration_s=60, arrive_s=30, leave_s=60)
    for cid in ("rtsp-1", "file-1", "file-2"):
        scene_for(tmp_path, cid, real_sample_dir, dwell_s=4, clear_s=5)
    rtsp = {"id": "rtsp-1", "url": rtsp_url, "scene": "rtsp-1.yaml", "analysis_fps": 2}
    local = {"id": "file-1", "url": "local.mp4", "scene": "file-1.yaml"}  # a file played at its own pace, like a camera
    cams = cameras_file(tmp_path / "cameras.yaml", [rtsp, local])
    intake = make_intake(tmp_path / "data")
    watcher = Watcher(cams, onnx_detector, intake)
    port = free_port()
    server = watcher.metrics.serve(port)
    runner = threading.Thread(target=lambda: watcher.run(poll_s=0.2))
    runner.start()
    try:
        _until(lambda: [c for c in intake.store.list(source_id="rtsp-1") if c.evidence_ref])  # drafted, then evidence stored
        [case] = intake.store.list(source_id="rtsp-1")
        now = datetime.now(UTC)
        assert now - timedelta(seconds=30) < case.opened_at <= now  # live frames carry wall-clock time
        assert case.evidence_ref is not None and case.violation_type == "illegal_parking"
        times = read_manifest(intake.evidence.path(case.evidence_ref))["times"]  # and the manifest says whose clock
        assert times["sources"] == {"first_seen": "stream", "opened": "stream"}

        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'streetwatch_cctv_camera_status{camera="rtsp-1",streetwatch_cctv_camera_status="online"} 1.0' in text
        assert 'streetwatch_cctv_cases_opened_total{camera="rtsp-1",type="illegal_parking"} 1.0' in text
        for name in ("frames_read_total", "frames_analysed_total", "lag_seconds_count"):
            assert watcher.metrics.value(f"streetwatch_cctv_{name}", camera="rtsp-1") > 0
        assert "streetwatch_cctv_queue_depth" in text and "streetwatch_cctv_inference_seconds_count" in text
        lag = watcher.metrics.value("streetwatch_cctv_lag_seconds_sum", camera="rtsp-1") / watcher.metrics.value(
            "streetwatch_cctv_lag_seconds_count", camera="rtsp-1")
        assert 0 <= lag < 10

        # Reload on file change: file-1 is replaced by file-2; the RTSP camera keeps its reader and rules.
        before = watcher.runtimes["rtsp-1"]
        time.sleep(0.05)
        cameras_file(cams, [rtsp, {**local, "id": "file-2", "scene": "file-2.yaml"}])
        _until(lambda: "file-2" in watcher.runtimes and "file-1" not in watcher.runtimes, 10)
        assert watcher.runtimes["rtsp-1"] is before and before.reader.is_alive()
        _until(lambda: watcher.metrics.value("streetwatch_cctv_frames_read_total", camera="file-2") > 0, 20)

        # A broken cameras file is refused whole and everything keeps running.
        cams.write_text("cameras: [")
        watcher.request_reload()
        time.sleep(0.6)
        assert set(watcher.runtimes) == {"rtsp-1", "file-2"} and before.reader.is_alive()
    finally:
        watcher.stop()
        runner.join(60)
        server.shutdown()
    assert not runner.is_alive()
    summary = watcher.summary()
    assert summary["in_flight"] == 0 and summary["cameras"]["rtsp-1"]["status"] == "stopped"


def test_a_cameras_password_is_masked_in_its_status_health_and_log(rtsp_url, caplog):
    """FFmpeg names the URL in its reasons (`404 Not Found: 'rtsp://admin:PASSWORD@…'`), and they reached the log,
    the events file, GET /cameras' health and the exit summary with the camera's password; it is shown as ***."""
    url = rtsp_url.replace("rtsp://", "rtsp://admin:S3cret@").replace("/cam1", "/no-such-path")
    backoff = {"initial_s": 0.05, "max_s": 0.1, "offline_after": 2}
    camera = Camera(CameraConfig(id="cam", url=url, scene="unused.yaml", backoff=backoff), Scene(camera_id="cam"))
    statuses, health = [], []
    reader = CameraReader(camera, ReaderHooks(frame=lambda frame: None, health=health.append,
                                              status=lambda cid, status, detail: statuses.append((status.value, detail))))
    with caplog.at_level(logging.INFO, logger="pipelines.cctv"):
        reader.start()
        _until(lambda: any(status == "offline" for status, _ in statuses))
        reader.stop()
        reader.join(10)
    told = [detail for _, detail in statuses] + [event.detail for event in health] + [r.getMessage() for r in caplog.records]
    assert [s for s, _ in statuses] == ["reconnecting", "offline", "stopped"] and caplog.records
    assert not [line for line in told if "S3cret" in line]
    assert "404 Not Found" in statuses[0][1] and "rtsp://admin:***@127.0.0.1" in statuses[0][1]


def test_a_camera_restarted_by_a_reload_ends_its_readers_health_gauges(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    """A camera offline (no server at its URL) whose URL was fixed in the cameras file: the reload's new reader went
    online, but streetwatch_cctv_health_active{kind="offline"} and {kind="reconnecting"} stayed 1 for good (the new
    reader never ends its predecessor's conditions), so an alert on them never resolved. A reader that starts sets
    them to 0; so does removing a camera."""
    parked_clip(tmp_path / "local.mp4", bus_jpg, real_sample_dir, duration_s=30, arrive_s=30, leave_s=30)
    for cid in ("cam", "gone"):
        scene_for(tmp_path, cid, real_sample_dir)
    backoff = {"initial_s": 0.05, "max_s": 0.1, "offline_after": 2}
    dead = {"id": "cam", "url": f"rtsp://127.0.0.1:{free_port()}/cam", "scene": "cam.yaml", "backoff": backoff}
    gone = {"id": "gone", "url": f"rtsp://127.0.0.1:{free_port()}/gone", "scene": "gone.yaml", "backoff": backoff}
    cams = cameras_file(tmp_path / "cameras.yaml", [dead, gone])
    watcher = Watcher(cams, onnx_detector, make_intake(tmp_path / "data"))
    active = lambda cid, kind: watcher.metrics.value("streetwatch_cctv_health_active", camera=cid, kind=kind)  # noqa: E731
    runner = threading.Thread(target=lambda: watcher.run(poll_s=0.1))
    runner.start()
    try:
        _until(lambda: all(active(cid, "offline") == 1 for cid in ("cam", "gone")))
        assert active("cam", "reconnecting") == 1
        time.sleep(0.05)
        cameras_file(cams, [{**dead, "url": "local.mp4"}])  # its URL fixed, and the other camera taken out
        _until(lambda: watcher.metrics.value("streetwatch_cctv_frames_analysed_total", camera="cam") > 0)
        assert watcher.runtimes["cam"].reader.status == "online" and "gone" not in watcher.runtimes
        assert [active(cid, kind) for cid in ("cam", "gone") for kind in ("reconnecting", "offline")] == [0, 0, 0, 0]
    finally:
        watcher.stop()
        runner.join(60)


def test_a_camera_that_stays_offline_logs_its_first_failures_then_a_line_per_interval(tmp_path, caplog):
    """A camera offline for days logged a warning at every retry, one a minute per camera at the longest wait, for
    ever. Its first `offline_after` failures are logged each, then one 'still offline' line per `log_every_s`; every
    attempt still reaches the reader's retry hook (streetwatch_cctv_reconnect_attempts_total)."""
    url = f"rtsp://127.0.0.1:{free_port()}/cam"  # nothing listens there: each attempt is refused
    for log_every_s in (3600.0, 0.001):
        backoff = {"initial_s": 0.01, "max_s": 0.02, "offline_after": 2, "log_every_s": log_every_s}
        camera = Camera(CameraConfig(id="cam", url=url, scene="unused.yaml", backoff=backoff), Scene(camera_id="cam"))
        attempts = []
        reader = CameraReader(camera, ReaderHooks(frame=lambda frame: None, health=lambda event: None,
                                                  status=lambda cid, status, detail: None, retry=attempts.append))
        with caplog.at_level(logging.WARNING, logger="pipelines.cctv"):
            reader.start()
            _until(lambda: len(attempts) >= 12)
            reader.stop()
            reader.join(10)
        lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.cctv.reader"]
        caplog.clear()
        each = [line for line in lines if "; attempt " in line]
        still = [line for line in lines if "still offline" in line]
        assert [line.split("; attempt ")[1].split(",")[0] for line in each] == ["1", "2"] and len(lines) == len(each) + len(still)
        if log_every_s == 3600.0:  # 12 and more attempts, two lines
            assert still == []
        else:  # every attempt past the second is over an interval after the line before
            assert len(still) == len(attempts) - 2
            assert still[0].startswith("camera cam: still offline for 0 min, 3 attempts; last: camera cam: cannot open rtsp://127.0.0.1:")


def test_rtsp_server_without_gstreamer_says_what_to_install(tmp_path, bus_jpg, real_sample_dir):
    """Run by a Python without python3-gi (the project's virtualenv, a machine without the Debian packages), the RTSP
    helper died in a traceback ending `No module named 'gi'`; one line says what to install and which Python to use."""
    clip = parked_clip(tmp_path / "served.mp4", bus_jpg, real_sample_dir, duration_s=2, arrive_s=0, leave_s=2)
    without_gi = ("import runpy, sys; sys.modules['gi'] = None; sys.argv = sys.argv[1:]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", without_gi, str(REPO / "scripts" / "rtsp_server.py"), str(clip.path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    line, = out.stderr.splitlines()
    assert line.startswith("error: GStreamer's RTSP server is not available") and "/usr/bin/python3" in line
    assert "scripts/install-system-deps.sh" in line and "gir1.2-gst-rtsp-server-1.0" in line
