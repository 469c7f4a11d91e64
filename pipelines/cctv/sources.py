"""Camera sources: decoded pictures with their media time, from streams, files and snapshot URLs.

PyAV (FFmpeg) opens everything FFmpeg can: RTSP (over TCP by default: packet loss on UDP turns
into grey smears), HTTP(S) MJPEG and HLS, local files. A source only decodes and says when a
picture was taken in media seconds; sampling, wall-clock time and reconnects belong to the
reader (`pipelines.cctv.reader`). Keyframe-only decoding (`skip_frame = "NONKEY"`) lets the
decoder skip every P/B frame, which is most of the decode cost at 1 analysed frame/s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import av
import httpx
import numpy as np

from detect.imageio import ImageReadError, decode_image, media_origin, upright
from pipelines.cctv.config import CameraConfig, is_url, without_password

log = logging.getLogger(__name__)

MAX_BAD_PACKETS = 200
"""Undecodable packets in a row after which a stream counts as dead (single ones are skipped)."""


UNTIMED_FORMATS = {"mpjpeg", "mjpeg", "jpeg_pipe", "image2pipe"}


class SourceError(RuntimeError):
    """The source cannot be opened or stopped delivering; the message names camera and reason, and the
    URL without its password (`without_password`)."""

    def __init__(self, message: str):
        super().__init__(without_password(message))


@dataclass
class Picture:
    """One decoded picture. `media_s`: seconds on the stream's clock (None: no clock, e.g. snapshots)."""

    frame: av.VideoFrame | np.ndarray
    media_s: float | None
    keyframe: bool = True

    @property
    def rotation(self) -> float:
        """Display rotation in degrees counter-clockwise (a video filmed on a phone held upright); 0: none."""
        return 0 if isinstance(self.frame, np.ndarray) else getattr(self.frame, "rotation", 0) or 0  # PyAV >= 14 reads it

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as players show the picture (after its display rotation)."""
        if isinstance(self.frame, np.ndarray):
            return int(self.frame.shape[1]), int(self.frame.shape[0])
        w, h = int(self.frame.width), int(self.frame.height)
        return (h, w) if round(self.rotation / 90) % 2 else (w, h)

    def to_bgr(self, size: tuple[int, int]) -> np.ndarray:
        """BGR pixels at `size` (width, height), upright; FFmpeg scales while converting, which is cheap."""
        if isinstance(self.frame, np.ndarray):
            if self.size == size:
                return self.frame
            import cv2

            return cv2.resize(self.frame, size, interpolation=cv2.INTER_AREA)
        w, h = size if not round(self.rotation / 90) % 2 else size[::-1]
        return upright(self.frame.to_ndarray(format="bgr24", width=w, height=h), self.rotation)


def capped_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """Scale (w, h) so the longer side is at most `max_side`; even numbers (what scalers like)."""
    w, h = size
    if max_side is None or max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


class VideoSource:
    """A stream or file opened with PyAV; iterate `pictures()` until it ends or fails."""

    def __init__(self, config: CameraConfig):
        self.config = config
        self.container: av.container.InputContainer | None = None
        self.stream = None
        self.start_time: datetime | None = None  # the file's creation_time tag, if any
        self.origin: float | None = None  # media seconds at which playback starts (`media_origin`)

    def open(self) -> None:
        cfg = self.config
        options = {}
        if cfg.url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = cfg.rtsp_transport
        if not is_url(cfg.url) and not Path(cfg.url).is_file():
            raise SourceError(f"camera {cfg.id}: {cfg.url}: file not found")
        try:
            self.container = av.open(cfg.url, format=cfg.input_format, options=options, timeout=(cfg.timeout_s, cfg.timeout_s))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"camera {cfg.id}: cannot open {cfg.url}: {exc}") from None
        if not self.container.streams.video:
            self.close()
            raise SourceError(f"camera {cfg.id}: {cfg.url} has no video stream")
        self.stream = self.container.streams.video[0]
        self.origin = media_origin(self.container)
        self.stream.thread_count = cfg.decode_threads
        if cfg.keyframes_only:
            self.stream.codec_context.skip_frame = "NONKEY"
        tag = self.container.metadata.get("creation_time") or self.stream.metadata.get("creation_time")
        if tag:
            try:
                self.start_time = datetime.fromisoformat(tag.replace("Z", "+00:00"))
                if self.start_time.tzinfo is None:
                    self.start_time = self.start_time.replace(tzinfo=UTC)
            except ValueError:
                log.warning("camera %s: unreadable creation_time tag %r", cfg.id, tag)

    def pictures(self, wait: Callable[[float], object] = time.sleep) -> Iterator[Picture]:
        """Decoded pictures in stream order. Single corrupt packets are skipped (counted in
        `bad_packets`); a run of them, a read error or a timeout raises `SourceError`; the end of
        a file just ends the iteration."""
        assert self.container is not None and self.stream is not None
        self.bad_packets = 0
        bad_run = 0
        media = 0.0
        # MJPEG over HTTP has no timestamps (FFmpeg invents 25 frame/s): its pictures are timed on arrival.
        untimed = self.container.format.name in UNTIMED_FORMATS
        tb = self.stream.time_base
        try:
            for packet in self.container.demux(self.stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:  # corrupt packet: skip it, like players do
                    self.bad_packets += 1
                    bad_run += 1
                    if bad_run >= MAX_BAD_PACKETS:
                        raise SourceError(f"camera {self.config.id}: {bad_run} undecodable packets in a row ({exc})") from None
                    continue
                bad_run = 0
                for frame in frames:
                    # A picture without a timestamp (the first of some RTSP sessions) shares the previous one's.
                    if frame.pts is not None and tb is not None:
                        media = float(frame.pts * tb)
                    yield Picture(frame, None if untimed else media, bool(frame.key_frame))
        except SourceError:
            raise
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"camera {self.config.id}: stream failed: {exc}") from None

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except (av.FFmpegError, OSError):  # closing a broken stream must not raise
                pass
            self.container = None


class SnapshotSource:
    """A URL that answers one still image per request (many IP cameras' /snapshot.jpg), polled
    at the analysis rate. httpx's transport retries cover connection blips; longer outages
    surface as `SourceError` and the reader's back-off takes over."""

    def __init__(self, config: CameraConfig):
        self.config = config
        self.client: httpx.Client | None = None
        self.start_time = None
        self.origin = None  # no media clock

    def open(self) -> None:
        self.client = httpx.Client(timeout=self.config.timeout_s, transport=httpx.HTTPTransport(retries=1), follow_redirects=True)
        self._fetch()  # fail at open when the URL does not answer, like a stream would

    def _fetch(self) -> np.ndarray:
        cfg = self.config
        assert self.client is not None
        try:
            answer = self.client.get(cfg.url)
        except httpx.HTTPError as exc:
            raise SourceError(f"camera {cfg.id}: snapshot {cfg.url}: {exc}") from None
        if answer.is_error:  # one line: httpx's raise_for_status adds a second, pointing at developer.mozilla.org
            raise SourceError(f"camera {cfg.id}: snapshot {cfg.url}: HTTP {answer.status_code} {answer.reason_phrase}")
        try:
            return decode_image(answer.content, cfg.url, max_side=cfg.max_side).image
        except ImageReadError as exc:
            raise SourceError(f"camera {cfg.id}: snapshot {cfg.url}: {exc}") from None

    def pictures(self, wait: Callable[[float], object] = time.sleep) -> Iterator[Picture]:
        """One fetch per analysis period; `wait` sleeps (the reader passes its stop event's wait)."""
        period = 1.0 / self.config.analysis_fps
        while True:
            started = time.monotonic()
            yield Picture(self._fetch(), None)
            if wait(max(0.0, period - (time.monotonic() - started))):
                return

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def open_source(config: CameraConfig) -> VideoSource | SnapshotSource:
    """The right source for a camera, opened (raises `SourceError`)."""
    source = SnapshotSource(config) if config.snapshot else VideoSource(config)
    try:
        source.open()
    except SourceError:
        source.close()
        raise
    return source
