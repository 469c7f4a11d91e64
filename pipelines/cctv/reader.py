"""One reader thread per camera: connect, decode, sample, stamp, hand over; reconnect on failure.

A reader never waits for inference: `hooks.frame` puts into the scheduler's queue, which drops
its oldest frame when full (only replay, which must judge every sampled frame, waits). A failed
connection is retried with exponential back-off (tenacity), reported as `reconnecting` and,
after `offline_after` failures in a row, `offline`; the back-off starts over once frames flow
again. In replay a file is read once: its end finishes the camera, a file that cannot be read
fails it. Nothing here can stop another camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from detect.config_io import ConfigError
from detect.frames import TIME_SOURCE, VIEW_LOST, Frame
from detect.scenes import read_reference
from pipelines.cctv.clock import MediaClock, Sampler
from pipelines.cctv.config import Camera, is_url
from pipelines.cctv.health import HealthEvent, HealthKind, ImageHealth
from pipelines.cctv.sources import Picture, SourceError, capped_size, open_source
from pipelines.logs import BoundedLog
from pipelines.times import as_utc, possible_capture, written_time

log = logging.getLogger(__name__)

LIVE_TIME = "stream"
"""`TIME_SOURCE` of a live camera's frames (and of a file played as if live): timed by this server's clock as they
arrive (`MediaClock`), not by the camera's."""


class Status(StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    FINISHED = "finished"  # replay: the file was read to its end
    FAILED = "failed"  # replay: the file cannot be read
    STOPPED = "stopped"
    REFUSED = "refused"  # invalid configuration (scene): never started
    LEFT_BEHIND = "left_behind"  # watch --ray: its owner did not stop within cluster.stop_wait_s (the detail: the state kept)


@dataclass(frozen=True)
class CameraStatus:
    """A camera's stream status as the watcher writes it to its events file and the service reads it back
    (`{"event": "camera_status", "camera_id", "status", "detail", "at"}`)."""

    camera_id: str
    status: Status | str  # a status another version's watcher wrote is kept as written
    detail: str | None
    at: datetime | None

    EVENT = "camera_status"

    def to_record(self) -> dict[str, str | None]:
        return {"event": self.EVENT, "camera_id": self.camera_id, "status": str(self.status), "detail": self.detail,
                "at": self.at.isoformat() if self.at else None}

    @classmethod
    def from_record(cls, record: dict) -> CameraStatus | None:
        """The status a record states; None when it is not a camera status record."""
        if record.get("event") != cls.EVENT or "camera_id" not in record or record.get("status") is None:
            return None
        value = str(record["status"])
        try:
            at = written_time(str(record["at"])) if record.get("at") else None
        except ValueError:
            at = None
        return cls(str(record["camera_id"]), Status(value) if value in Status._value2member_map_ else value,
                   None if record.get("detail") is None else str(record["detail"]), at)


@dataclass
class ReaderHooks:
    """Where a reader's output goes (the service's queue, event log and metrics)."""

    frame: Callable[[Frame], None]
    health: Callable[[HealthEvent], None]
    status: Callable[[str, Status, str], None]
    read: Callable[[str], None] = lambda camera_id: None  # one picture decoded
    retry: Callable[[str], None] = lambda camera_id: None  # one failed connection attempt, to be retried


class _Stopped(Exception):
    pass


class CameraReader(threading.Thread):
    def __init__(self, camera: Camera, hooks: ReaderHooks, *, replay: bool = False):
        super().__init__(name=f"reader-{camera.id}", daemon=True)
        self.camera, self.cfg, self.hooks = camera, camera.config, hooks
        self.replay_file = replay and not is_url(self.cfg.url)
        self.paced_file = not replay and not is_url(self.cfg.url)
        self.stop_event = threading.Event()
        self.status = Status.STARTING
        self.detail = ""  # why the camera is in its status (the summary names why a file failed)
        self.frames = 0
        self.bad_packets = 0
        self._delivered = 0
        self._size: tuple[int, int] | None = None
        self._raw_size: tuple[int, int] | None = None
        self._attempts_log = BoundedLog(self.cfg.backoff.offline_after, self.cfg.backoff.log_every_s)
        self._losses_log = BoundedLog(self.cfg.backoff.offline_after, self.cfg.backoff.log_every_s)
        self._losses, self._losses_since = 0, 0.0  # streams lost or ended in a row, each after less than log_every_s of frames
        self._run_attempts = 0  # failed reconnect attempts since that run's first loss (since the start before one)
        self._flowing_since = 0.0  # monotonic time the stream came online
        self._time_source = LIVE_TIME  # TIME_SOURCE of the frames: set at each connection (`_session`)
        try:
            reference = read_reference(camera.scene)
        except ConfigError as exc:
            reference = None
            log.warning("camera %s: reference snapshot %s: no moved-camera check", camera.id, exc)
        self.health = ImageHealth(camera.id, self.cfg.health, reference)

    def stop(self) -> None:
        self.stop_event.set()

    # ---- state --------------------------------------------------------------------------

    def _set(self, status: Status, detail: str = "") -> None:
        previous, self.status, self.detail = self.status, status, detail
        if status != previous:
            self.hooks.status(self.camera.id, status, detail)
        now = datetime.now(UTC)
        for kind, on in ((HealthKind.RECONNECTING, Status.RECONNECTING), (HealthKind.OFFLINE, Status.OFFLINE)):
            was = previous == on or (kind is HealthKind.RECONNECTING and previous == Status.OFFLINE)
            now_on = status == on or (kind is HealthKind.RECONNECTING and status == Status.OFFLINE)
            if now_on and not was:
                self.hooks.health(HealthEvent(self.camera.id, kind, True, now, detail))
            elif was and not now_on and status == Status.ONLINE:
                self.hooks.health(HealthEvent(self.camera.id, kind, False, now, "frames flow again"))

    def _before_sleep(self, rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        failing = Status.OFFLINE if rs.attempt_number >= self.cfg.backoff.offline_after else Status.RECONNECTING
        wait = rs.next_action.sleep if rs.next_action else 0
        self.hooks.retry(self.camera.id)
        self._log_failure(rs, exc, wait)
        self._set(failing, str(exc))

    def _log_failure(self, rs: RetryCallState, exc: BaseException | None, wait: float) -> None:
        """A failed attempt of an outage: a camera offline for days logged a warning at every retry (one a minute at
        the longest wait, for each such camera); the first attempts are logged each, then a line per interval. The
        attempts are counted across the outages of a flapping camera's run of losses: counted per outage, a camera
        that dropped and failed to reconnect at once logged 'attempt 1' again at every drop."""
        self._run_attempts += 1
        line = self._attempts_log.due(self._run_attempts, time.monotonic())
        if line is BoundedLog.EACH:
            log.warning("%s; attempt %d, next in %.1fs", exc, rs.attempt_number, wait)
        elif line is BoundedLog.SUMMARY and self._losses > 1:
            log.warning("camera %s: %d failed reconnect attempts after %d streams lost or ended in %d min, this time %d in %d s; "
                        "last: %s", self.camera.id, self._run_attempts, self._losses,
                        int(time.monotonic() - self._losses_since) // 60, rs.attempt_number,
                        int(rs.seconds_since_start or 0), exc)
        elif line is BoundedLog.SUMMARY:
            log.warning("camera %s: still offline for %d min, %d attempts; last: %s", self.camera.id,
                        int(rs.seconds_since_start or 0) // 60, rs.attempt_number, exc)

    def _stream_stopped(self, why: str) -> None:
        """A stream lost after frames, or ended cleanly (a server's end of stream, a live file's end): a camera that
        connects, sends and drops again (flapping) logged every loss, and a clean end was reopened without a line.
        Stops each after less than `log_every_s` of frames are one run, logged as the failed attempts of an outage
        are; a stop after a longer flow starts a fresh run, so a stream lost now and then is logged each time."""
        now = time.monotonic()
        if not self._losses or (self._delivered and now - self._flowing_since >= self.cfg.backoff.log_every_s):
            self._losses, self._losses_since, self._run_attempts = 0, now, 0
        self._losses += 1
        line = self._losses_log.due(self._losses, now)
        if line is BoundedLog.EACH:
            log.warning("camera %s: %s", self.camera.id, why)
        elif line is BoundedLog.SUMMARY:
            log.warning("camera %s: stream lost or ended %d times in %d min, back for less than %d s each time; last: %s",
                        self.camera.id, self._losses, int(now - self._losses_since) // 60,
                        int(self.cfg.backoff.log_every_s), why)

    # ---- loop ---------------------------------------------------------------------------

    def run(self) -> None:
        b = self.cfg.backoff
        retry = retry_if_exception(lambda e: isinstance(e, SourceError) and not self._delivered and not self.replay_file)
        try:
            while not self.stop_event.is_set():
                self._delivered = 0
                try:
                    Retrying(retry=retry, wait=wait_exponential(multiplier=b.initial_s, max=b.max_s), sleep=self._sleep,
                             before_sleep=self._before_sleep, reraise=True)(self._session)
                except SourceError as exc:
                    if self.replay_file:
                        self._set(Status.FAILED, str(exc))
                        return
                    self._stream_stopped(f"stream lost: {exc}")  # after frames: a fresh back-off
                    self._set(Status.RECONNECTING, str(exc))
                    self._sleep(b.initial_s)
                    continue
                if self.replay_file:
                    self._set(Status.FINISHED if self.frames else Status.FAILED, "" if self.frames else "no frames in file")
                    return
                if not self.stop_event.is_set():  # a live file ended (or a stream closed cleanly): reopen
                    self._stream_stopped("end of stream, reopening")
                    self._set(Status.RECONNECTING, "end of stream")
                    self._sleep(b.initial_s)
        except _Stopped:
            pass
        except Exception as exc:  # noqa: BLE001 - a bug in one camera must not take the others down
            log.exception("camera %s: reader crashed", self.camera.id)
            self._set(Status.FAILED, f"reader crashed: {exc}")
            return
        self._set(Status.STOPPED)

    def _sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise _Stopped

    def _session(self) -> None:
        """One connection: open, read until the end or a failure."""
        if self.stop_event.is_set():
            raise _Stopped
        source = open_source(self.cfg)
        try:
            # A file played live is its own capture clock: a reader that falls behind shows as lag, not as a re-anchor.
            # where the frames' times come from (`detect.frames.TIME_SOURCE`): the replay's start, or the server's clock
            replay_start, self._time_source = self._replay_start(source) if self.replay_file else (None, LIVE_TIME)
            clock = MediaClock(replay_start=replay_start, origin=source.origin if self.replay_file else None,
                               max_drift_s=float("inf") if self.paced_file else 5.0)
            sampler = Sampler(self.cfg.analysis_fps)
            for picture in source.pictures(wait=self.stop_event.wait):
                if self.stop_event.is_set():
                    raise _Stopped
                self.hooks.read(self.camera.id)
                media = clock.media(picture.media_s) if picture.media_s is not None else None
                # Streams without timestamps (MJPEG, snapshots) are sampled by arrival time.
                if not sampler.take(media if media is not None else time.monotonic()):
                    continue
                if self.paced_file and media is not None:
                    self._sleep(max(0.0, clock.due_in(media)))
                self._deliver(picture, clock.wall(media), media)
        finally:
            self.bad_packets += getattr(source, "bad_packets", 0)
            source.close()

    def _replay_start(self, source) -> tuple[datetime, str]:
        """When the replayed file began, and where that came from (`detect.frames.TIME_SOURCE`): the camera's
        `start_time`, the recording's `creation_time` tag, the file's modification time (`file`), or now (`run`)."""
        if self.cfg.start_time is not None:
            return as_utc(self.cfg.start_time, self.camera.scene.tz), "start_time"  # no offset: the camera's zone
        if source.start_time is not None:  # the recording's creation_time tag: a camera's unset clock writes 1970 there too
            try:
                return possible_capture(source.start_time, f"{self.cfg.url} (creation_time tag)"), "creation_time"
            except ValueError as exc:
                log.warning("camera %s: replay start: creation_time impossible: %s; the file's time is tried instead",
                            self.camera.id, exc)
        return self._file_time()

    def _file_time(self) -> tuple[datetime, str]:
        """The replayed file's modification time (`file`), when a recording can have begun then (`possible_capture`); a
        clock never set (1970, a zip's 1980) or a time in the future would date every case by it: now (`run`) instead,
        with a warning naming the file and why."""
        modified = datetime.fromtimestamp(Path(self.cfg.url).stat().st_mtime, self.camera.scene.tz)  # its clock's zone
        try:
            return possible_capture(modified, self.cfg.url), "file"
        except ValueError as exc:
            log.warning("camera %s: replay start: file time impossible: %s; replayed as of now (set the camera's start_time)",
                        self.camera.id, exc)
            return datetime.now(UTC), "run"

    def _deliver(self, picture: Picture, ts: datetime, media: float | None) -> None:
        raw = picture.size
        size = capped_size(raw, self.cfg.max_side)
        if self._raw_size is not None and raw != self._raw_size:
            self.hooks.health(HealthEvent(self.camera.id, HealthKind.RESOLUTION_CHANGED, True, ts,
                                          f"{self._raw_size[0]}x{self._raw_size[1]} -> {raw[0]}x{raw[1]}"))
        if self._size is not None and abs(size[0] / size[1] - self._size[0] / self._size[1]) < 0.01:
            size = self._size  # same shape after a resolution change: keep the frame size, so tracks and boxes carry over
        self._raw_size, self._size = raw, size
        image = picture.to_bgr(size)
        self.frames += 1
        self._delivered += 1
        if self.status != Status.ONLINE:
            self._flowing_since = time.monotonic()
            self._set(Status.ONLINE, f"{raw[0]}x{raw[1]}")
        for event in self.health.observe(image, ts):
            self.hooks.health(event)
        meta = {"media_s": media, "decoded_at": time.time(), "stream_size": raw, VIEW_LOST: self.health.view_lost,
                TIME_SOURCE: self._time_source}
        self.hooks.frame(Frame(image, self.camera.id, ts, frame_id=f"{self.camera.id}-{self.frames:06d}", meta=meta))
