"""Demo footage, scenes and photos for `streetwatch demo`, made from photos that ship with Ultralytics.

A fresh machine has no camera and no street photos of its own, so the demo composes them with the
camera-media generator (`benchmarks.media`): the real buildings of Ultralytics'
`bus.jpg` above a rendered road and shop wall, the real bus cut from the same photo parking in a
no-parking zone for a while, and a rendered small-ad poster (phone number, 开锁/办证 words) that
appears on the shop wall. The scenes draw no-parking, no-vending and no-posting zones with short
dwell/clear thresholds, so the real detector, OCR and rules open and clear cases within a minute
of media time. Chinese text needs a CJK font: a system one is used when found; otherwise the
poster carries Latin words and the phone number (still a small ad to OCR) and the caller is told.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont

from benchmarks.media import BUS_BOX, PARKING_ZONE, Sprite, cut, render, write_clip, write_scene
from detect.fonts import find_cjk_font

SIZE = (960, 540)
DURATION_S = 150.0
BUS_ARRIVE_S, BUS_LEAVE_S = 10.0, 80.0
POSTER_S = 15.0
PHONE = "138 0013 8000"
WALL_ZONE = [[0.05, 0.45], [0.95, 0.45], [0.95, 0.80], [0.05, 0.80]]
PAVEMENT_ZONE = [[0.0, 0.82], [1.0, 0.82], [1.0, 1.0], [0.0, 1.0]]
#: Where the demo cameras look (made up, in Hangzhou as the example scene): their cases carry it, and a dispatch
#: platform parks a case that says nowhere.
LOCATIONS = {"cam-01": {"lat": 30.2788, "lon": 120.1301, "address": "杭州市西湖区文三路（演示摄像头 demo camera 1）"},
             "cam-02": {"lat": 30.2791, "lon": 120.1310, "address": "杭州市西湖区学院路（演示摄像头 demo camera 2）"}}


def ultralytics_photos() -> list[Path]:
    """bus.jpg and zidane.jpg from the installed ultralytics package (real photos, no download)."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        # the console script answers it with the line naming the extra (`streetwatch[torch]`), as for any command
        raise ModuleNotFoundError("No module named 'ultralytics' (the demo's photos are its assets)", name="ultralytics")
    assets = Path(spec.origin).parent / "assets"
    photos = [assets / "bus.jpg", assets / "zidane.jpg"]
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"photos missing from the ultralytics package: {', '.join(missing)}")
    return photos


def _text(draw: ImageDraw.ImageDraw, xy, text: str, font_path: Path | None, size: int, fill) -> None:
    font = ImageFont.truetype(str(font_path), size) if font_path else ImageFont.load_default(size)
    draw.text(xy, text, font=font, fill=fill)


def poster(font_path: Path | None) -> np.ndarray:
    """A small-ad poster (BGR): locksmith / fake certificates words and a mobile number."""
    img = Image.new("RGB", (360, 270), (250, 250, 240))
    d = ImageDraw.Draw(img)
    if font_path:
        _text(d, (20, 18), "专业开锁 疏通", font_path, 40, (10, 10, 10))
        _text(d, (20, 90), "办证 刻章", font_path, 40, (200, 0, 0))
    else:
        _text(d, (20, 18), "LOCKSMITH 24H", None, 36, (10, 10, 10))
        _text(d, (20, 90), "CERTIFICATES", None, 36, (200, 0, 0))
    _text(d, (20, 170), PHONE, font_path, 44, (10, 10, 10))
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)


def _street_top(bus_jpg: Path, size: tuple[int, int], height: int) -> np.ndarray:
    """The real buildings above the bus in bus.jpg, scaled across the view's top `height` pixels."""
    band = cut(bus_jpg, (0, 0, 810, BUS_BOX[1]))
    return cv2.resize(band, (size[0], height), interpolation=cv2.INTER_AREA)


def road_view(bus_jpg: Path, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Camera 1: real buildings over a rendered road with a yellow no-parking kerb line."""
    w, h = size
    view = np.full((h, w, 3), (95, 95, 95), np.uint8)
    view[: int(h * 0.5)] = _street_top(bus_jpg, size, int(h * 0.5))
    cv2.rectangle(view, (0, int(h * 0.5)), (w, int(h * 0.62)), (150, 150, 145), -1)  # pavement
    cv2.line(view, (0, int(h * 0.66)), (w, int(h * 0.66)), (0, 215, 255), 6)  # yellow kerb: no parking
    return view


def wall_view(bus_jpg: Path, font_path: Path | None, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Camera 2: real buildings, a rendered shop wall with its own sign, and the pavement."""
    w, h = size
    view = np.full((h, w, 3), (150, 150, 145), np.uint8)
    view[: int(h * 0.35)] = _street_top(bus_jpg, size, int(h * 0.35))
    cv2.rectangle(view, (0, int(h * 0.35)), (w, int(h * 0.82)), (150, 165, 185), -1)  # shop wall
    img = Image.fromarray(cv2.cvtColor(view, cv2.COLOR_BGR2RGB))
    d = ImageDraw.Draw(img)
    d.rectangle((int(w * 0.55), int(h * 0.38), int(w * 0.95), int(h * 0.47)), fill=(180, 30, 30))
    _text(d, (int(w * 0.60), int(h * 0.385)), "王记面馆" if font_path else "WANG NOODLES", font_path, 36, (255, 230, 0))
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)


@dataclass
class DemoMedia:
    """What `make_media` wrote: the cameras file, the clips, triage photos, and the font used."""

    cameras_file: Path
    clips: dict[str, Path]
    photos: list[Path]
    font: Path | None


def _zone(zone_id: str, kind: str, polygon, vtype: str, dwell_s: float, clear_s: float) -> dict:
    return {"id": zone_id, "kind": kind, "polygon": polygon, "thresholds": {vtype: {"dwell_s": dwell_s, "clear_s": clear_s}}}


def make_media(folder: Path, *, start: datetime | None = None, regenerate: bool = False) -> DemoMedia:
    """Clips, scenes, cameras file and still photos in `folder` (clips are kept between runs).

    `start` is the wall-clock time of media time 0 written into the cameras file (default: the
    clip length before now), so each run's cases carry today's times.
    """
    folder.mkdir(parents=True, exist_ok=True)
    bus_jpg, zidane_jpg = ultralytics_photos()
    font = find_cjk_font()
    road, wall = road_view(bus_jpg), wall_view(bus_jpg, font)
    bus = Sprite(cut(bus_jpg, BUS_BOX), x=0.5, bottom=0.95, height=0.55, start_s=BUS_ARRIVE_S, end_s=BUS_LEAVE_S)
    ad = Sprite(poster(font), x=0.28, bottom=0.78, height=0.30, start_s=POSTER_S, end_s=DURATION_S + 1)
    clips = {"cam-01": folder / "cam-01-road.mp4", "cam-02": folder / "cam-02-wall.mp4"}
    for cid, (view, sprite) in {"cam-01": (road, bus), "cam-02": (wall, ad)}.items():
        if regenerate or not clips[cid].is_file():
            write_clip(clips[cid], view, [sprite], DURATION_S, fps=1.0, gop_s=2.0, preset="ultrafast")
    write_scene(folder / "cam-01.yaml", "cam-01", reference=road, location=LOCATIONS["cam-01"],
                zones=[_zone("curb", "no_parking", PARKING_ZONE, "illegal_parking", 20, 15),
                       _zone("pavement", "no_vending", [[0.0, 0.5], [1.0, 0.5], [1.0, 0.62], [0.0, 0.62]], "street_stall", 60, 30)])
    write_scene(folder / "cam-02.yaml", "cam-02", reference=wall, location=LOCATIONS["cam-02"],
                zones=[_zone("shop-wall", "no_posting", WALL_ZONE, "flyposting", 20, 30),
                       _zone("pavement", "no_vending", PAVEMENT_ZONE, "street_stall", 60, 30)])
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=DURATION_S)
    common = {"analysis_fps": 1.0, "start_time": start.isoformat()}
    cameras = {"cameras": [
        {"id": "cam-01", "url": clips["cam-01"].name, "scene": "cam-01.yaml", **common},
        {"id": "cam-02", "url": clips["cam-02"].name, "scene": "cam-02.yaml", "ocr_interval_s": 5, **common},
    ]}
    cameras_file = folder / "cameras.yaml"
    cameras_file.write_text(yaml.safe_dump(cameras, sort_keys=False), encoding="utf-8")
    photos = folder / "photos"
    photos.mkdir(exist_ok=True)
    for src in (bus_jpg, zidane_jpg):
        shutil.copyfile(src, photos / src.name)
    cv2.imwrite(str(photos / "demo-parked-bus.jpg"), render(road, [bus], BUS_ARRIVE_S + 1), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(photos / "demo-small-ad.jpg"), render(wall, [ad], POSTER_S + 1), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return DemoMedia(cameras_file, clips, sorted(photos.glob("*.jpg")), font)
