"""Latest analysed frame per camera as `<dir>/<camera id>.jpg`, for the service's camera page.

`watch` and `serve` may be separate processes; a file per camera, replaced atomically, is the
simplest hand-over (the service reads `service.snapshot_dir/<camera id>.jpg`). Writes are
throttled per camera so a JPEG encode does not ride on every analysed frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from detect.config_io import write_bytes_atomic
from detect.frames import Frame


def write_snapshot(folder: Path, camera_id: str, jpeg: bytes) -> None:
    """`<folder>/<camera id>.jpg`, replaced atomically: the service never reads a half-written picture."""
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / f"{camera_id}.jpg", jpeg)


class SnapshotWriter:
    """Callable for `Watcher(on_analysed=...)`: keeps `<folder>/<camera>.jpg` at most `every_s` old."""

    def __init__(self, folder: Path, every_s: float = 10.0, quality: int = 85) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.every_s = every_s
        self.quality = quality
        self._last: dict[str, float] = {}

    def __call__(self, frame: Frame) -> None:
        now = time.monotonic()
        if now - self._last.get(frame.source_id, -1e9) < self.every_s:
            return
        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        write_snapshot(self.folder, frame.source_id, jpeg.tobytes())
        self._last[frame.source_id] = now
