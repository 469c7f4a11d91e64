"""Camera media with a known truth: H.264 clips and scene files composed from real photos.

Not part of the product: the CCTV capacity benchmark streams these clips, the tests use them as
cameras, and the demo (`streetwatch/demo/`) builds its footage on them. They need footage whose
truth is known: a static
street view (a real street photo) in which a vehicle (cut from a real photo) arrives, stands in a
no-parking zone for a chosen time and leaves. Frames carry a little sensor noise and a ticking
on-screen clock, as real CCTV does, so an unchanged view is not mistaken for a frozen image.
Clips are encoded with PyAV's libx264 (in the PyPI wheel) with a fixed key-frame interval.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]

BUS_BOX = (3, 229, 796, 729)
"""The bus in Ultralytics' `bus.jpg` (x1, y1, x2, y2 in its 810x1080 pixels; yolo11n's box)."""

PARKING_ZONE = [[0.15, 0.70], [0.85, 0.70], [0.85, 1.0], [0.15, 1.0]]
"""No-parking zone of `parked_vehicle_clip` (normalised): the strip the vehicle stands on."""


def shared_datasets() -> Path:
    """Where the shared datasets sit when this checkout is beside ../shared ($STREETWATCH_SHARED)."""
    return Path(os.environ.get("STREETWATCH_SHARED", REPO.parent / "shared")) / "datasets"


def real_sample_dir() -> Path:
    """The shared real street photos (street garbage, facades with ads)."""
    return shared_datasets() / "real-sample"


def cut(photo: str | Path, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of `box` in a photo (BGR)."""
    image = cv2.imread(str(photo))
    if image is None:
        raise FileNotFoundError(f"{photo}: cannot read image")
    x1, y1, x2, y2 = box
    return image[y1:y2, x1:x2].copy()


def street_view(photo: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A photo cropped to the aspect of `size` (centre) and scaled to it: the camera's view."""
    image = cv2.imread(str(photo))
    if image is None:
        raise FileNotFoundError(f"{photo}: cannot read image")
    w, h = size
    ih, iw = image.shape[:2]
    if iw / ih > w / h:
        cw = round(ih * w / h)
        image = image[:, (iw - cw) // 2:(iw - cw) // 2 + cw]
    else:
        ch = round(iw * h / w)
        image = image[(ih - ch) // 2:(ih - ch) // 2 + ch]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@dataclass
class Sprite:
    """An object pasted into the view from `start_s` to `end_s`: bottom-centre at (x, bottom), normalised."""

    image: np.ndarray
    x: float
    bottom: float
    height: float  # normalised height in the view
    start_s: float
    end_s: float

    def visible(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        w, h = size
        ph = round(self.height * h)
        pw = round(ph * self.image.shape[1] / self.image.shape[0])
        x1, y2 = round(self.x * w - pw / 2), round(self.bottom * h)
        return max(0, x1), max(0, y2 - ph), min(w, x1 + pw), min(h, y2)

    def paste(self, canvas: np.ndarray) -> None:
        h, w = canvas.shape[:2]
        x1, y1, x2, y2 = self.box((w, h))
        ph = round(self.height * h)
        pw = round(ph * self.image.shape[1] / self.image.shape[0])
        scaled = cv2.resize(self.image, (pw, ph), interpolation=cv2.INTER_AREA)
        ox, oy = x1 - round(self.x * w - pw / 2), y1 - (round(self.bottom * h) - ph)
        canvas[y1:y2, x1:x2] = scaled[oy:oy + (y2 - y1), ox:ox + (x2 - x1)]


@dataclass
class Clip:
    """A written clip and its truth."""

    path: Path
    size: tuple[int, int]
    fps: float
    duration_s: float
    start: datetime
    sprites: list[Sprite] = field(default_factory=list)


class _Noise:
    """A few precomputed noise fields cycled per frame: cheap, and never two identical frames in a row."""

    def __init__(self, size: tuple[int, int], sigma: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        w, h = size
        self.fields = [rng.normal(0, sigma, (h, w, 1)).astype(np.int16) for _ in range(5)] if sigma > 0 else []

    def apply(self, image: np.ndarray, i: int) -> np.ndarray:
        if not self.fields:
            return image
        return np.clip(image.astype(np.int16) + self.fields[i % len(self.fields)], 0, 255).astype(np.uint8)


def render(background: np.ndarray, sprites: list[Sprite], t: float) -> np.ndarray:
    frame = background.copy()
    for s in sprites:
        if s.visible(t):
            s.paste(frame)
    return frame


def write_clip(path: str | Path, background: np.ndarray, sprites: list[Sprite], duration_s: float, *, fps: float = 2.0,
               gop_s: float = 1.0, start: datetime | None = None, noise: float = 2.0, osd: bool = True,
               tz: timedelta = timedelta(hours=8), crf: int = 30, preset: str = "ultrafast") -> Clip:
    """Encode `duration_s` of the view with the sprites as H.264 (container from the suffix: .mp4, .ts, .mkv).

    `start` is written as the container's `creation_time` (mp4/mkv) so replay maps media time to
    the right wall clock; `osd` draws the local time (UTC+`tz`) the way cameras do. `preset`
    ultrafast encodes fastest (tests); faster presets use CABAC and deblocking as cameras do, which
    makes decoding cost realistic (benchmarks).
    """
    import av  # here, not at the top: the bench harness imports this module on GPU hosts without PyAV

    path = Path(path)
    start = start or datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    h, w = background.shape[:2]
    noisy = _Noise((w, h), noise)
    rate = round(fps) if float(fps).is_integer() else fps
    with av.open(str(path), "w") as out:
        if path.suffix in (".mp4", ".mkv", ".mov"):
            out.metadata["creation_time"] = start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        keyint = max(1, round(gop_s * fps))
        stream.options = {"preset": preset, "crf": str(crf), "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        for i in range(round(duration_s * fps)):
            t = i / fps
            image = noisy.apply(render(background, sprites, t), i)
            if osd:
                stamp = (start + tz + timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M:%S")
                cv2.putText(image, stamp, (12, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Clip(path, (w, h), fps, duration_s, start, sprites)


def parked_vehicle_clip(path: str | Path, vehicle_photo: str | Path, street_photo: str | Path, *,
                        vehicle_box: tuple[int, int, int, int] = BUS_BOX, duration_s: float = 600, arrive_s: float = 30,
                        leave_s: float = 450, size: tuple[int, int] = (1280, 720), over: list[Sprite] | None = None,
                        **encode) -> Clip:
    """A street view in which a vehicle stands in `PARKING_ZONE` from `arrive_s` to `leave_s`; `over`: sprites pasted
    over it (another view of a camera turned away, a covered lens)."""
    vehicle = Sprite(cut(vehicle_photo, vehicle_box), x=0.5, bottom=0.95, height=0.55, start_s=arrive_s, end_s=leave_s)
    return write_clip(path, street_view(street_photo, size), [vehicle, *(over or [])], duration_s, **encode)


def write_scene(path: str | Path, camera_id: str, *, zones: list[dict] | None = None, reference: np.ndarray | None = None,
                timezone: str | None = "Asia/Shanghai", dwell_s: float | None = None, clear_s: float | None = None,
                location: dict | None = None) -> Path:
    """A scene file for a test camera: by default one no-parking zone (`PARKING_ZONE`), always enforced;
    `timezone` None: the file names none (it follows the settings' zone); `location` ({lat, lon, address}): where
    the camera looks, which its cases carry (a platform needs it to send a handler).

    `dwell_s`/`clear_s` override illegal parking's thresholds in that zone; `reference` is saved
    next to the scene as its reference snapshot (used by the moved-camera check and OCR).
    """
    path = Path(path)
    if zones is None:
        zone: dict = {"id": "curb", "kind": "no_parking", "polygon": PARKING_ZONE}
        overrides = {k: v for k, v in (("dwell_s", dwell_s), ("clear_s", clear_s)) if v is not None}
        if overrides:
            zone["thresholds"] = {"illegal_parking": overrides}
        zones = [zone]
    scene: dict = {"camera_id": camera_id, **({"timezone": timezone} if timezone else {}),
                   **({"location": location} if location else {}), "zones": zones}
    if reference is not None:
        ref = path.with_name(f"{path.stem}-reference.jpg")
        cv2.imwrite(str(ref), reference)
        scene["reference_snapshot"] = ref.name
    path.write_text(yaml.safe_dump(scene, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def truncate(src: str | Path, dst: str | Path, keep: float = 0.5) -> Path:
    """A copy of `src` cut after `keep` of its bytes (a recording interrupted mid-write)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def concat(parts: list[str | Path], dst: str | Path) -> Path:
    """Byte-concatenate MPEG-TS segments into one stream (e.g. a resolution change mid-stream)."""
    with open(dst, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    return Path(dst)
