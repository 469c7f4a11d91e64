"""Helpers for the triage tests: real photos re-encoded with the EXIF a phone would write."""

from __future__ import annotations

import struct
import zlib
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import piexif


def _rational(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    deg = int(value)
    minutes = int((value - deg) * 60)
    seconds = (value - deg - minutes / 60) * 3600
    return (deg, 1), (minutes, 1), (round(seconds * 10000), 10000)


def phone_photo(
    src: Path,
    dst: Path,
    *,
    taken: datetime | None = None,
    offset: str | None = None,
    gps: tuple[float, float] | None = None,
    orientation: int | None = None,
    rotate: int | None = None,
    crop: float = 0.0,
    gain: float = 1.0,
    exif_extra: dict | None = None,
) -> Path:
    """Re-encode a real photo with EXIF capture time, GPS (lat, lon) and orientation.

    `rotate` (a cv2.ROTATE_* code) turns the stored pixels, as a phone held sideways does;
    `crop` trims that fraction from each edge and `gain` scales brightness (a re-take of a scene).
    """
    image = cv2.imread(str(src))
    if crop:
        h, w = image.shape[:2]
        image = image[int(h * crop): h - int(h * crop), int(w * crop): w - int(w * crop)]
    if gain != 1.0:
        image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    if rotate is not None:
        image = cv2.rotate(image, rotate)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    ifd0 = {piexif.ImageIFD.Make: b"TestPhone", piexif.ImageIFD.Model: b"T1"}
    if orientation is not None:
        ifd0[piexif.ImageIFD.Orientation] = orientation
    exif_ifd = {}
    if taken is not None:
        exif_ifd[piexif.ExifIFD.DateTimeOriginal] = taken.strftime("%Y:%m:%d %H:%M:%S").encode()
    if offset is not None:
        exif_ifd[piexif.ExifIFD.OffsetTimeOriginal] = offset.encode()
    gps_ifd = {}
    if gps is not None:
        lat, lon = gps
        gps_ifd = {
            piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
            piexif.GPSIFD.GPSLatitude: _rational(abs(lat)),
            piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
            piexif.GPSIFD.GPSLongitude: _rational(abs(lon)),
        }
    for ifd, tags in (exif_extra or {}).items():
        {"0th": ifd0, "Exif": exif_ifd, "GPS": gps_ifd}[ifd].update(tags)
    exif = piexif.dump({"0th": ifd0, "Exif": exif_ifd, "GPS": gps_ifd})
    dst.parent.mkdir(parents=True, exist_ok=True)
    piexif.insert(exif, buf.tobytes(), str(dst))
    return dst


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A tiny PNG whose header claims a huge picture (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def as_heic(jpeg: Path, dst: Path, max_side: int = 640) -> Path:
    """A phone's HEIC of the same picture, keeping its EXIF (pillow-heif encodes it)."""
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    with Image.open(jpeg) as im:
        exif = im.info.get("exif", b"")
        im.thumbnail((max_side, max_side))
        im.save(dst, format="HEIF", quality=80, exif=exif)
    jpeg.unlink()
    return dst
