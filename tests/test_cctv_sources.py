"""Camera readers on real generated media, without the detector: sampling, time, keyframes, health, snapshots."""

from __future__ import annotations

import http.server
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from detect.frames import VIEW_LOST
from detect.scenes import Scene
from pipelines.cctv.config import Camera, CameraConfig
from pipelines.cctv.reader import CameraReader, ReaderHooks
from pipelines.logs import BoundedLog
from benchmarks.media import Sprite, street_view, write_clip
from tests.cctv_helpers import SIZE, CameraHandler, other_view, parked_clip, played_picture, rotated_copy, street, ts_copy


def _read(url: str, replay: bool = True, reference: str | None = None, **cfg):
    frames, health, status = [], [], []
    camera = Camera(CameraConfig(id="cam", url=url, scene="unused.yaml", **cfg), Scene(camera_id="cam", reference_snapshot=reference))
    reads = []
    hooks = ReaderHooks(frame=frames.append, health=health.append, status=lambda c, s, d: status.append((s.value, d)),
                        read=reads.append)
    reader = CameraReader(camera, hooks, replay=replay)
    return reader, frames, health, status, reads


def _until(condition, timeout_s: float = 20.0) -> None:
    """Wait for a condition another thread makes true (fails the test if it never does)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@contextmanager
def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` on a threaded HTTP server at 127.0.0.1 (a free port) -> its base URL; shut down after."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a camera's endless response must not hold up the shutdown
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run(*args, **kw):
    reader, frames, health, status, reads = _read(*args, **kw)
    reader.start()
    reader.join(60)
    assert not reader.is_alive()
    return frames, health, status, reads


def test_replay_samples_by_media_time_and_keyframes_only_decodes_less(tmp_path, bus_jpg, real_sample_dir):
    clip = parked_clip(tmp_path / "c.mp4", bus_jpg, real_sample_dir, duration_s=30, fps=4, gop_s=2.0)
    frames, health, status, reads = _run(str(clip.path), analysis_fps=1, max_side=320)
    assert len(reads) == 120 and len(frames) == 30
    assert [f.ts - clip.start for f in frames[:3]] == [timedelta(seconds=s) for s in (0, 1, 2)]  # creation_time + media time
    assert frames[0].image.shape == (180, 320, 3) and frames[0].meta["stream_size"] == SIZE
    assert [s for s, _ in status] == ["online", "finished"] and health == []

    key_frames, _, _, key_reads = _run(str(clip.path), analysis_fps=1, keyframes_only=True)
    assert len(key_reads) == 15 and len(key_frames) == 15  # one key frame every 2 s: the analysis rate is capped by it
    assert [f.ts - clip.start for f in key_frames[:2]] == [timedelta(0), timedelta(seconds=2)]


def test_a_replayed_mpeg_ts_is_timed_from_its_start_of_playback(tmp_path, bus_jpg, real_sample_dir):
    """An MPEG-TS's timestamps start at 1.4 s or wherever its recorder's clock stood (here 101.4 s), and one begun
    between key frames shows its first picture only at the next key frame (here 3 s into playback): its frames are
    the start time plus their time since the start of playback, as a player shows them. They were timed from the
    first picture decoded, 3 s too early."""
    clip = parked_clip(tmp_path / "c.mp4", bus_jpg, real_sample_dir, duration_s=10, fps=2, gop_s=4.0)
    ts = ts_copy(clip.path, tmp_path / "dvr.ts", 100, from_s=1)  # key frames at 4 s and 8 s of the clip
    frames, _, status, _ = _run(str(ts), analysis_fps=1, start_time="2025-06-01T08:30:00")  # Asia/Shanghai = UTC+8
    start = datetime(2025, 6, 1, 0, 30, tzinfo=UTC)
    assert [f.ts - start for f in frames] == [timedelta(seconds=s) for s in range(3, 9)]
    assert frames[0].meta["media_s"] == 3.0 and status[-1] == ("finished", "")


def test_a_portrait_phone_video_is_judged_upright(tmp_path, bus_jpg, real_sample_dir):
    """A display rotation (a phone filming upright writes landscape pixels and a rotation) is applied as
    players apply it; the pictures were judged lying on their side, against zones drawn on the upright view."""
    clip = parked_clip(tmp_path / "c.mp4", bus_jpg, real_sample_dir, duration_s=2, fps=2)
    portrait = rotated_copy(clip.path, tmp_path / "portrait.mp4")
    played = played_picture(portrait, tmp_path)
    assert played.shape == (640, 360, 3)
    frames, _, status, _ = _run(str(portrait), analysis_fps=1)
    assert frames[0].image.shape == (640, 360, 3) and frames[0].meta["stream_size"] == (360, 640)
    assert np.abs(frames[0].image.astype(int) - played).mean() < 2  # the same picture, not merely the same shape
    assert status[0] == ("online", "360x640")
    small, _, _, _ = _run(str(portrait), analysis_fps=1, max_side=320)
    assert small[0].image.shape == (320, 180, 3)


def test_configured_start_time_is_local_to_the_camera(tmp_path, bus_jpg, real_sample_dir):
    clip = parked_clip(tmp_path / "c.mp4", bus_jpg, real_sample_dir, duration_s=3)
    frames, *_ = _run(str(clip.path), start_time="2025-06-01T08:30:00")  # Asia/Shanghai = UTC+8
    assert frames[0].ts.isoformat() == "2025-06-01T00:30:00+00:00"


def test_frozen_and_black_pictures_are_health_events(tmp_path, real_sample_dir):
    view = street_view(street(real_sample_dir), SIZE)
    black = Sprite(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), x=0.5, bottom=1.0, height=1.0, start_s=40, end_s=70)
    # A dead encoder: no sensor noise, no clock, and a black lens for 30 s in the middle.
    clip = write_clip(tmp_path / "dead.mp4", view, [black], 80, fps=1, noise=0, osd=False)
    cfg = {"health": {"frozen_s": 20, "blind_s": 10, "check_every_s": 5}}
    _, health, _, _ = _run(str(clip.path), **cfg)
    events = [(e.kind.value, e.active, int((e.at - clip.start).total_seconds())) for e in health]
    frozen = [(active, t) for kind, active, t in events if kind == "frozen"]
    assert frozen[0] in ((True, 25), (True, 30)) and frozen[1] == (False, 40)  # unchanged for 20 s; ends when the lens goes black
    assert ("black", True, 50) in events and ("black", False, 70) in events
    assert all(kind != "covered" for kind, _, _ in events)


def test_a_black_and_white_picture_is_the_infrared_health_condition(tmp_path, real_sample_dir):
    """A camera in its infrared night mode sends black-and-white pictures, where the verifier's heads (trained on colour
    daylight photos) find few stalls and spillover: staff see the condition start and end. The colour street before
    and after it is not one."""
    view = street_view(street(real_sample_dir), SIZE)
    night = cv2.cvtColor(cv2.cvtColor(view, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    infrared = Sprite(night, x=0.5, bottom=1.0, height=1.0, start_s=20, end_s=50)
    clip = write_clip(tmp_path / "night.mp4", view, [infrared], 70, fps=1)
    _, health, _, _ = _run(str(clip.path), health={"infrared_s": 10, "check_every_s": 5})
    events = [(e.active, int((e.at - clip.start).total_seconds())) for e in health if e.kind == "infrared"]
    assert events == [(True, 30), (False, 50)], events
    assert "colour spread" in health[0].detail and all(e.kind == "infrared" for e in health)
    _, off, _, _ = _run(str(clip.path), health={"infrared_s": 10, "check_every_s": 5, "infrared_chroma": 0})
    assert off == []  # a monochrome or thermal camera turns the check off


def test_moved_camera_against_the_reference_snapshot(tmp_path, real_sample_dir, bus_jpg):
    view = street_view(street(real_sample_dir), SIZE)
    reference = tmp_path / "reference.jpg"
    cv2.imwrite(str(reference), view)
    turned = np.roll(view, 60, axis=1)  # the camera was knocked sideways at 30 s
    turn = Sprite(turned, x=0.5, bottom=1.0, height=1.0, start_s=30, end_s=60)
    clip = write_clip(tmp_path / "turned.mp4", view, [turn], 60, fps=1)
    cfg = {"health": {"moved_s": 10, "check_every_s": 5}}
    _, health, _, _ = _run(str(clip.path), reference=str(reference), **cfg)
    moved = [(e.active, int((e.at - clip.start).total_seconds())) for e in health if e.kind == "moved"]
    assert moved == [(True, 40)]

    # A bus parked in front of the camera hides half the view but does not move it.
    parked = parked_clip(tmp_path / "bus.mp4", bus_jpg, real_sample_dir, duration_s=40, arrive_s=0, leave_s=40)
    _, health, _, _ = _run(str(parked.path), reference=str(reference), **cfg)
    assert [e for e in health if e.kind == "moved"] == []


def test_a_view_off_its_reference_is_said_at_once_on_every_frame(tmp_path, real_sample_dir, bus_jpg):
    """A PTZ camera turned away for 20 s: `moved` waits for `moved_s` (120 s), but the rules must know at once that
    the frames do not show the zones, or a stall there clears at its `clear_s`. Each frame carries the latest check's
    verdict (VIEW_LOST) and the `view_lost` condition starts at the first check off the reference, with the words
    staff read; a bus parked in front of the camera is still the same view."""
    view = street_view(street(real_sample_dir), SIZE)
    reference = tmp_path / "reference.jpg"
    cv2.imwrite(str(reference), view)
    clip = write_clip(tmp_path / "turned.mp4", view, [other_view(real_sample_dir, 20, 40)], 50, fps=1)
    frames, health, _, _ = _run(str(clip.path), reference=str(reference))
    lost = [int((f.ts - clip.start).total_seconds()) for f in frames if f.meta[VIEW_LOST]]
    assert lost == list(range(20, 40)), lost
    assert "视角偏移" in frames[20].meta[VIEW_LOST] and "features match the reference" in frames[20].meta[VIEW_LOST]
    events = [(e.kind.value, e.active, int((e.at - clip.start).total_seconds())) for e in health]
    assert events == [("view_lost", True, 20), ("view_lost", False, 40)], events
    assert "违规保持开启" in health[0].detail

    parked = parked_clip(tmp_path / "bus.mp4", bus_jpg, real_sample_dir, duration_s=20, arrive_s=0, leave_s=20)
    frames, health, _, _ = _run(str(parked.path), reference=str(reference))
    assert health == [] and not any(f.meta[VIEW_LOST] for f in frames)


@pytest.fixture
def snapshot_server(tmp_path, real_sample_dir):
    """A camera's /snapshot.jpg on 127.0.0.1 (a real JPEG of the street), /flapping.jpg the same but every third
    request a 503 (a camera that answers, drops and answers again), /flaky.jpg two requests answered and two 503s
    (a camera that drops and fails its first reconnect attempt), and a 404 elsewhere."""
    ok, jpeg = cv2.imencode(".jpg", street_view(street(real_sample_dir), (1280, 720)))
    flapping, flaky = itertools.count(1), itertools.count(1)

    class Handler(CameraHandler):
        def do_GET(self):
            if ((self.path == "/flapping.jpg" and next(flapping) % 3 == 0)
                    or (self.path == "/flaky.jpg" and next(flaky) % 4 in (0, 3))):
                self.send_error(503)
                return
            if self.path not in ("/snapshot.jpg", "/flapping.jpg", "/flaky.jpg"):
                self.send_error(404)
                return
            self.send_jpeg(jpeg.tobytes())

    with _serve(Handler) as base:
        yield base


def test_snapshot_url_polled_at_the_analysis_rate(snapshot_server):
    reader, frames, health, status, _ = _read(f"{snapshot_server}/snapshot.jpg", snapshot=True, analysis_fps=10, max_side=640)
    reader.start()
    _until(lambda: len(frames) >= 3)
    reader.stop()
    reader.join(10)
    assert len(frames) >= 3 and frames[0].image.shape == (360, 640, 3)
    assert status[0][0] == "online" and status[-1][0] == "stopped"

    reader, frames, health, status, _ = _read(f"{snapshot_server}/missing.jpg", snapshot=True,
                                              backoff={"initial_s": 0.05, "max_s": 0.1, "offline_after": 2})
    reader.start()
    _until(lambda: any(s == "offline" for s, _ in status))
    reader.stop()
    reader.join(10)
    # status and reason in one line (httpx's own added "For more information check: https://developer.mozilla.org/…")
    assert frames == [] and status[0][1] == f"camera cam: snapshot {snapshot_server}/missing.jpg: HTTP 404 Not Found"
    assert [(e.kind.value, e.active) for e in health] == [("reconnecting", True), ("offline", True)]


def test_a_snapshot_urls_password_is_masked_in_its_status(snapshot_server):
    """httpx names the URL in its reasons (`for url 'http://admin:PASSWORD@…'`), a snapshot CGI's query holds it too."""
    base = snapshot_server.replace("http://", "http://admin:S3cret@")
    reader, frames, health, status, _ = _read(f"{base}/cgi-bin/snap.cgi?usr=admin&pwd=S3cret", snapshot=True,
                                              backoff={"initial_s": 0.05, "max_s": 0.1, "offline_after": 2})
    reader.start()
    _until(lambda: any(s == "offline" for s, _ in status))
    reader.stop()
    reader.join(10)
    masked = snapshot_server.replace("http://", "http://admin:***@")
    assert status[0][1] == f"camera cam: snapshot {masked}/cgi-bin/snap.cgi?usr=admin&pwd=***: HTTP 404 Not Found"
    assert not [d for d in [d for _, d in status] + [e.detail for e in health] if "S3cret" in d]


def test_a_flapping_camera_logs_its_first_losses_then_a_line_per_interval(snapshot_server, caplog):
    """A camera that connects, sends and drops again logged 'stream lost' at every drop, with no limit. Losses in a
    row, each after less than `log_every_s` of frames, are logged as an outage's failed attempts are: the first
    `offline_after` each, then a line per interval; each loss is still a reconnecting health event (the metrics')."""
    each = f"camera cam: stream lost: camera cam: snapshot {snapshot_server}/flapping.jpg: HTTP 503 Service Unavailable"
    for log_every_s in (3600.0, 1e-6):
        backoff = {"initial_s": 0.01, "max_s": 0.02, "offline_after": 2, "log_every_s": log_every_s}
        reader, frames, health, status, _ = _read(f"{snapshot_server}/flapping.jpg", replay=False, snapshot=True,
                                                  analysis_fps=30, backoff=backoff)
        losses = lambda: [now for before, now in zip(status, status[1:]) if before[0] == "online" and now[0] == "reconnecting"]  # noqa: E731
        with caplog.at_level(logging.WARNING, logger="pipelines.cctv"):
            reader.start()
            _until(lambda: len(losses()) >= 8)
            reader.stop()
            reader.join(10)
        lost = [r.getMessage() for r in caplog.records if "stream lost" in r.getMessage()]
        caplog.clear()
        assert len(losses()) >= 8 and len([e for e in health if e.kind == "reconnecting" and e.active]) >= len(losses())
        if log_every_s == 3600.0:  # 8 and more losses, each after well under an hour of frames: two lines
            assert lost == [each] * 2
        else:  # each loss after longer than the interval of frames: a stream lost now and then, logged each time
            assert lost == [each] * len(losses())


def test_a_flapping_camera_logs_its_first_reconnect_attempts_once_across_drops(snapshot_server, caplog):
    """Each drop of a flapping camera began a fresh outage whose failed attempts were counted from 1, so a camera that
    dropped and failed its first reconnect attempt logged 'attempt 1' at every drop. The attempts are counted across
    a run of losses: the first `offline_after` of the run logged each, as the first outage's are; a drop after a
    longer flow starts afresh; every attempt still counted (streetwatch_cctv_reconnect_attempts_total's hook)."""
    each = f"camera cam: snapshot {snapshot_server}/flaky.jpg: HTTP 503 Service Unavailable; attempt 1, next in 0.0s"
    for log_every_s in (3600.0, 1e-6):
        backoff = {"initial_s": 0.01, "max_s": 0.02, "offline_after": 2, "log_every_s": log_every_s}
        reader, frames, health, status, _ = _read(f"{snapshot_server}/flaky.jpg", replay=False, snapshot=True,
                                                  analysis_fps=30, backoff=backoff)
        retries = []
        reader.hooks.retry = retries.append
        losses = lambda: [now for before, now in zip(status, status[1:]) if before[0] == "online" and now[0] == "reconnecting"]  # noqa: E731
        with caplog.at_level(logging.WARNING, logger="pipelines.cctv"):
            reader.start()
            _until(lambda: len(losses()) >= 6)
            reader.stop()
            reader.join(10)
        attempts = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
        caplog.clear()
        assert len(retries) >= len(losses()) - 1 >= 5  # each drop's failed attempt counted, logged or not
        if log_every_s == 3600.0:  # 5 and more drops within the hour, one failed attempt each: the first two logged
            assert attempts == [each] * 2
        else:  # each drop after longer than the interval of frames: an outage now and then, its attempts logged each
            assert len(attempts) >= len(losses()) - 1 and set(attempts) == {each}


def test_a_recurring_failure_is_logged_first_each_then_once_per_interval():
    """The one rule for an outage's failed attempts and a flapping camera's losses, at given monotonic times."""
    bounded = BoundedLog(first=2, every_s=600.0)
    due = [bounded.due(n, now) for n, now in [(1, 0.0), (2, 1.0), (3, 2.0), (4, 590.0), (5, 601.0), (6, 700.0), (7, 1201.0)]]
    assert due == ["each", "each", None, None, "summary", None, "summary"]  # an interval after the line before
    assert BoundedLog(first=2, every_s=600.0).due(3, 0.0) == "summary"  # nothing logged yet: the first line past `first`


@pytest.fixture
def mjpeg_server(real_sample_dir):
    """An MJPEG camera on 127.0.0.1 (multipart/x-mixed-replace, about 10 JPEGs a second of the real street)."""
    view = street_view(street(real_sample_dir), SIZE)

    class Handler(CameraHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for i in range(600):
                    image = view.copy()
                    cv2.putText(image, f"{i:04d}", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
                    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg))
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

    with _serve(Handler) as base:
        yield f"{base}/video"


def test_mjpeg_over_http_is_sampled_by_arrival_time(mjpeg_server):
    """MJPEG has no timestamps (FFmpeg would invent 25 frame/s): pictures are timed and sampled on arrival."""
    reader, frames, health, status, reads = _read(mjpeg_server, replay=False, analysis_fps=2)
    started = datetime.now(UTC)
    reader.start()
    _until(lambda: len(frames) >= 3)
    reader.stop()
    reader.join(15)
    assert len(reads) > len(frames) >= 3 and frames[0].image.shape == (360, 640, 3)
    assert all(started <= f.ts <= datetime.now(UTC) for f in frames) and frames[0].meta["media_s"] is None
    assert [s for s, _ in status] == ["online", "stopped"]


@pytest.fixture
def hls_server(tmp_path, bus_jpg, real_sample_dir):
    """An HLS camera on 127.0.0.1: a real H.264 clip cut into 2 s MPEG-TS segments by FFmpeg, served over HTTP."""
    import shutil
    import subprocess

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg is needed: run scripts/install-system-deps.sh")
    clip = parked_clip(tmp_path / "c.mp4", bus_jpg, real_sample_dir, duration_s=12, fps=4, gop_s=1.0)
    site = tmp_path / "hls"
    site.mkdir()
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(clip.path), "-c", "copy", "-f", "hls", "-hls_time", "2",
                    "-hls_playlist_type", "vod", str(site / "live.m3u8")], check=True, timeout=60)
    assert len(list(site.glob("*.ts"))) >= 5
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(site), **kw)

        def log_message(self, *args):
            pass

    with _serve(Handler) as base:
        yield f"{base}/live.m3u8"


def test_hls_over_http_is_sampled_by_media_time(hls_server):
    """HLS carries timestamps: its pictures are sampled on the stream's clock across segment boundaries."""
    reader, frames, health, status, reads = _read(hls_server, analysis_fps=1)
    reader.start()
    _until(lambda: len(reads) >= 48, timeout_s=60)  # every picture of the 12 s clip at 4 frame/s
    reader.stop()
    reader.join(15)
    first = frames[:12]
    assert len(first) == 12 and first[0].image.shape == (360, 640, 3)
    media = [f.meta["media_s"] for f in first]
    assert all(b - a == pytest.approx(1.0, abs=0.01) for a, b in zip(media, media[1:])), media
    assert status[0][0] == "online"
    # A camera's playlist that ends is a dropped stream, not a finished file: the reader reconnects.
    assert ("reconnecting", "end of stream") in status and status[-1][0] == "stopped"


def test_a_stream_that_ends_cleanly_is_logged_as_reopened(hls_server, caplog):
    """A server that ends its stream cleanly (a camera's playlist that ends; an RTSP server's end of stream) had the
    reader reopen it without a line, so nothing in the log said why the camera's frames stopped for a while. Each end
    is logged naming the camera, bounded as lost streams are: the first `offline_after` of a run, then by interval."""
    backoff = {"initial_s": 0.01, "max_s": 0.02, "offline_after": 2, "log_every_s": 3600.0}
    reader, frames, health, status, reads = _read(hls_server, replay=False, analysis_fps=1, backoff=backoff)
    with caplog.at_level(logging.WARNING, logger="pipelines.cctv"):
        reader.start()
        _until(lambda: status.count(("reconnecting", "end of stream")) >= 4, timeout_s=60)
        reader.stop()
        reader.join(15)
    assert [r.getMessage() for r in caplog.records if "end of stream" in r.getMessage()] == ["camera cam: end of stream, reopening"] * 2
