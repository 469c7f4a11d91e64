"""When and where a phone photo was taken: from its EXIF (capture time, GPS), else from its file name.

Phones write the capture time as local wall-clock text (`2024:05:01 14:03:22`), with the UTC
offset in a separate tag only on recent models, so a photo without an offset is read in the
configured time zone of the city. Each time tag has its own offset tag (`DateTimeOriginal` with
`OffsetTimeOriginal`, `DateTime` with `OffsetTime`); the best readable pair wins, so a
`0000:00:00 00:00:00` original (a camera whose clock was never set, an app that blanked it) falls
back to the file's `DateTime` before the file's modification time, with a warning. GPS is
degrees/minutes/seconds rationals with N/S and E/W references; (0, 0) is what some phones write
when they had no fix, so it is dropped with a warning rather than placing a violation in the Gulf
of Guinea. Broken EXIF never costs the picture: every unreadable field becomes a warning in the
photo's record.

WeChat and phone exports often strip the EXIF, but their file names carry the time, which is
closer to the capture than the file's modification time (the day it was copied): `name_time`
reads `mmexport1701234567890.jpg` and `wx_camera_1701234567890.jpg` (milliseconds since 1970,
an absolute time) and `微信图片_20231129101522`, `IMG_20231129_101522`, `IMG20231129101522`,
`PXL_20231129_101522123`, `VID_20231129_101522`, `Screenshot_2023-11-29-10-15-22` (local wall
clock, read in the configured time zone). A name whose date is impossible (before 2000 or 2000-01-01
00:00 on its local clock, after now: `pipelines.times.possible_capture`) is not a capture time: it is
a warning, and the file's time is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from PIL import Image

from detect.frames import GeoPoint
from pipelines.times import possible_capture

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
DATETIME = 0x0132
DATETIME_ORIGINAL = 0x9003
DATETIME_DIGITIZED = 0x9004
OFFSET_TIME = 0x9010
OFFSET_TIME_ORIGINAL = 0x9011
OFFSET_TIME_DIGITIZED = 0x9012
#: Capture-time tags, best first, each with the offset tag that belongs to it (both in the EXIF
#: sub-IFD, except `DateTime`, which is in IFD0).
TIME_TAGS = ((DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL), (DATETIME_DIGITIZED, OFFSET_TIME_DIGITIZED), (DATETIME, OFFSET_TIME))
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
#: File names that carry their time (module docstring): milliseconds since 1970, or a local date and time.
_EPOCH_MS_NAME = re.compile(r"^(?:mmexport|wx_camera_)(\d{13})(?!\d)", re.IGNORECASE)
_LOCAL_NAME = re.compile(r"^(?:IMG|VID|PXL|Screenshot|微信图片)[_-]?(\d{4})-?(\d{2})-?(\d{2})[_-]?(\d{2})-?(\d{2})-?(\d{2})",
                         re.IGNORECASE)


@dataclass
class PhotoFacts:
    """Capture time (aware, or None) and position read from EXIF, plus what could not be read."""

    taken_at: datetime | None = None
    geo: GeoPoint | None = None
    warnings: list[str] = field(default_factory=list)


def read_facts(exif: Image.Exif | None, tz: ZoneInfo) -> PhotoFacts:
    """Capture time and GPS position; missing tags are simply absent, broken ones are warnings."""
    facts = PhotoFacts()
    if not exif:
        return facts
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except Exception as exc:  # noqa: BLE001 - a broken sub-IFD must not lose the photo
        facts.warnings.append(f"EXIF sub-directory unreadable: {exc}")
        sub = {}
    for time_tag, offset_tag in TIME_TAGS:
        raw_time = (exif if time_tag == DATETIME else sub).get(time_tag)
        if not raw_time:
            continue
        try:
            facts.taken_at = parse_exif_time(raw_time, sub.get(offset_tag), tz)
            break
        except ValueError as exc:
            if (warning := f"EXIF capture time unreadable: {exc}") not in facts.warnings:  # all three tags alike: once
                facts.warnings.append(warning)
    try:
        gps = exif.get_ifd(GPS_IFD)
    except Exception as exc:  # noqa: BLE001
        facts.warnings.append(f"EXIF GPS unreadable: {exc}")
        gps = {}
    if gps:
        try:
            facts.geo = parse_gps(gps)
        except ValueError as exc:
            facts.warnings.append(f"EXIF GPS unreadable: {exc}")
    return facts


def parse_exif_time(value: str | bytes, offset: str | bytes | None, tz: ZoneInfo) -> datetime:
    """`YYYY:MM:DD HH:MM:SS` (+ optional `+08:00` offset tag) -> aware datetime."""
    text = _text(value).strip("\x00 ")
    try:
        naive = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"{text!r} is not 'YYYY:MM:DD HH:MM:SS'") from None
    m = _OFFSET.match(_text(offset).strip("\x00 ")) if offset else None
    if m:
        sign = 1 if m.group(1) == "+" else -1
        return naive.replace(tzinfo=timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))))
    return naive.replace(tzinfo=tz)


def name_time(name: str, tz: ZoneInfo) -> datetime | None:
    """The capture time a phone or app wrote into file name `name` (no folders: a zip member's own name),
    aware; None when the name carries none. A time in a name that is impossible (before 2000, in the
    future, no such day) raises ValueError naming the name and why."""
    if m := _EPOCH_MS_NAME.match(name):
        taken = datetime.fromtimestamp(int(m.group(1)) / 1000, timezone.utc).astimezone(tz)
    elif m := _LOCAL_NAME.match(name):
        year, month, day, hour, minute, second = map(int, m.groups())
        try:
            taken = datetime(year, month, day, hour, minute, second, tzinfo=tz)
        except ValueError as exc:
            raise ValueError(f"{name!r}: {m.group(0)!r} is no date and time ({exc})") from None
    else:
        return None
    return possible_capture(taken, name)


def parse_gps(gps: dict) -> GeoPoint | None:
    """GPS IFD -> WGS-84 point; None when it has no position; ValueError when it is nonsense."""
    if 2 not in gps or 4 not in gps:
        return None
    lat = _degrees(gps[2]) * (-1 if _text(gps.get(1, "N")).upper().startswith("S") else 1)
    lon = _degrees(gps[4]) * (-1 if _text(gps.get(3, "E")).upper().startswith("W") else 1)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"position out of range: lat {lat}, lon {lon}")
    if lat == 0 and lon == 0:
        raise ValueError("position 0, 0 (phone had no GPS fix): ignored")
    return GeoPoint(lat=round(lat, 7), lon=round(lon, 7))


def _degrees(dms) -> float:
    """(deg, min, sec) rationals, or a single decimal-degrees value, -> decimal degrees."""
    try:
        values = [float(v) for v in (dms if isinstance(dms, (tuple, list)) else [dms])]
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"bad coordinate {dms!r}") from None
    if not values or any(v != v for v in values):  # NaN from a 0/0 rational
        raise ValueError(f"bad coordinate {dms!r}")
    deg, minutes, seconds = (values + [0.0, 0.0])[:3]
    return deg + minutes / 60 + seconds / 3600


def _text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
