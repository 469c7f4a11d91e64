"""GPS tracks of patrol vehicles: GPX, NMEA 0183 logs, and the SRT subtitles dashcams write.

Read with the well-kept parsers (`gpxpy` for GPX, `pynmea2` for NMEA sentences, `srt` for the
subtitle blocks); only the coordinate text inside a dashcam's subtitle is matched here, since
every maker writes it differently (DJI `[latitude: 30.27] [longitude: 120.15]`, older DJI
`GPS(120.15,30.27,18)`, dashcams `N30.2741 E120.1551`). A position between two fixes is
interpolated linearly; none is given before the first fix, after the last, or inside a gap
longer than `max_gap_s` (a tunnel): a frame there cannot be placed and is skipped by the caller.

GPX and NMEA carry UTC times; SRT blocks are timed by video time, and carry a wall-clock time
only when the maker writes one (local time, in the configured zone).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from detect.frames import GeoPoint

SUFFIXES = {".gpx": "gpx", ".nmea": "nmea", ".nma": "nmea", ".log": "nmea", ".srt": "srt"}


class TrackError(ValueError):
    """A track that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Fix:
    """One position: `t` is UTC for absolute tracks, seconds of video time for video-timed ones."""

    t: datetime | float
    lat: float
    lon: float


@dataclass
class Track:
    path: Path
    fixes: list[Fix]
    video_timed: bool  # SRT without wall-clock times: `t` is video seconds
    start: datetime | None = None  # wall clock of video time 0, when the track itself says (SRT with times)
    max_gap_s: float = 10.0
    warnings: list[str] = field(default_factory=list)  # what was skipped in reading it (the run reports them)

    def __post_init__(self) -> None:
        self.fixes.sort(key=lambda f: f.t)
        self._keys = [self._key(f.t) for f in self.fixes]

    @staticmethod
    def _key(t: datetime | float) -> float:
        return t.timestamp() if isinstance(t, datetime) else float(t)

    @property
    def first(self) -> datetime | float:
        return self.fixes[0].t

    @property
    def last(self) -> datetime | float:
        return self.fixes[-1].t

    def at(self, t: datetime | float) -> GeoPoint | None:
        """Interpolated position at `t` (same kind as the fixes' times), or None where the track has none."""
        k = self._key(t)
        keys = self._keys
        if not keys or k < keys[0] or k > keys[-1]:
            return None
        i = bisect.bisect_left(keys, k)
        if keys[i] == k:
            f = self.fixes[i]
            return GeoPoint(round(f.lat, 7), round(f.lon, 7))
        a, b = self.fixes[i - 1], self.fixes[i]
        span = keys[i] - keys[i - 1]
        if span > self.max_gap_s:
            return None
        w = (k - keys[i - 1]) / span
        return GeoPoint(round(a.lat + (b.lat - a.lat) * w, 7), round(a.lon + (b.lon - a.lon) * w, 7))


def load_track(path: str | Path, tz: ZoneInfo, max_gap_s: float = 10.0) -> Track:
    """Read a GPX, NMEA or SRT track (by suffix); TrackError when it has no usable fix."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise TrackError(f"{path}: unknown track format {path.suffix!r} (use .gpx, .nmea/.log or a dashcam .srt)")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise TrackError(f"{path}: file not found") from None
    except OSError as exc:
        raise TrackError(f"{path}: cannot read: {exc.strerror}") from None
    track = {"gpx": _gpx, "nmea": _nmea, "srt": _srt}[kind](path, text, tz)
    if not track.fixes:
        raise TrackError(f"{path}: no GPS fixes in the file (a video without GPS cannot be placed on the map)")
    track.max_gap_s = max_gap_s
    return track


def _gpx(path: Path, text: str, tz: ZoneInfo) -> Track:
    import gpxpy

    try:
        gpx = gpxpy.parse(text)
    except Exception as exc:  # noqa: BLE001 - gpxpy raises its own and XML errors
        raise TrackError(f"{path}: not a readable GPX file: {exc}") from None
    points = [p for t in gpx.tracks for s in t.segments for p in s.points]
    if not points:
        raise TrackError(f"{path}: no track points (<trkpt>)" + _gpx_holds(gpx) + ": a patrol needs the recorded track, "
                         "<trk> with <trkpt> points and their <time> (export the recording, not the planned route)")
    untimed = [p for p in points if p.time is None]
    if len(untimed) == len(points):
        raise TrackError(f"{path}: none of its {len(points)} track points has a <time>: the frames cannot be matched "
                         "to positions (export the recording with its times)")
    fixes = []
    for point in points:
        if point.time is None or not _plausible((point.latitude, point.longitude)):
            continue
        when = point.time if point.time.tzinfo else point.time.replace(tzinfo=UTC)
        fixes.append(Fix(when.astimezone(UTC), point.latitude, point.longitude))
    track = Track(path, fixes, video_timed=False)
    if untimed:
        first = untimed[0]
        track.warnings.append(f"{path}: {len(untimed)} of {len(points)} track points have no <time> (the first at "
                              f"{first.latitude}, {first.longitude}) and were skipped; the frames are placed on the others")
    return track


def _gpx_holds(gpx) -> str:
    """What a GPX without track points holds instead (waypoints, routes), for its refusal."""
    held = [f"{n} waypoint(s) (<wpt>)" for n in [len(gpx.waypoints)] if n]
    held += [f"{len(gpx.routes)} route(s) (<rte>) of {n} point(s)" for n in [sum(len(r.points) for r in gpx.routes)] if gpx.routes]
    return f", only {' and '.join(held)}, places without the times they were passed" if held else ""


def _nmea(path: Path, text: str, tz: ZoneInfo) -> Track:
    """RMC sentences (they carry the date); invalid fixes (status V) and broken lines are skipped.

    A log of GGA sentences alone is refused naming that: GGA gives the time of day but no date, and taking the
    date from the video's start would be wrong across midnight UTC (08:00 in Beijing, mid-patrol), so the
    simple correct answer is to ask for RMC (or a GPX), which every logger can write. A log whose RMC sentences
    all say status V (a receiver that never got a fix: indoors, a dead antenna) is refused saying so, where the
    generic 'no GPS fixes' left one looking for a wrong format.

    A line with a good checksum can still be broken: pynmea2 hands back the raw text of a date or time
    it cannot read (day 32, hour 25), and empty or out-of-range coordinates as numbers (0, 0 or 99°N),
    so those are checked here like the SRT reader checks its positions."""
    import pynmea2

    fixes, rmc, gga, void = [], 0, 0, 0
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("$") and line[3:6] == "GGA":
            gga += 1
        if not line.startswith("$") or line[3:6] != "RMC":
            continue
        rmc += 1
        try:
            msg = pynmea2.parse(line)
            if getattr(msg, "status", "") == "V":  # no fix: its position fields are empty or stale
                void += 1
                continue
            lat, lon = msg.latitude, msg.longitude
        except (pynmea2.ParseError, ValueError):
            continue
        if getattr(msg, "status", "") != "A" or not isinstance(msg.datestamp, date) or not isinstance(msg.timestamp, time):
            continue
        if not _plausible((lat, lon)):
            continue
        when = datetime.combine(msg.datestamp, msg.timestamp)
        fixes.append(Fix((when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC), lat, lon))
    if not rmc and gga:
        raise TrackError(f"{path}: no RMC sentences, the ones with a date: its {gga} GGA sentence(s) give the time of day "
                         "but no date, so the frames cannot be matched to positions (log RMC too, or convert the log to GPX)")
    if rmc and void == rmc:
        raise TrackError(f"{path}: its {rmc} RMC sentence(s) are all without a fix (status V): the receiver never had a "
                         "position while it logged, so the video cannot be placed on the map (record once the receiver "
                         "shows a fix)")
    return Track(path, fixes, video_timed=False)


_DJI = re.compile(r"latitude\s*:\s*(-?\d+(?:\.\d+)?)\]?.*?long(?:t)?itude\s*:\s*(-?\d+(?:\.\d+)?)", re.I | re.S)
_DJI_OLD = re.compile(r"GPS\s*\(\s*(-?\d+\.\d+)\s*,\s*(-?\d+\.\d+)")  # (lon, lat, alt)
_HEMI = re.compile(r"([NS])\s*(\d+\.\d+)\W+([EW])\s*(\d+\.\d+)", re.I)
_WHEN = re.compile(r"(\d{4})[-/.](\d{2})[-/.](\d{2})[ T]+(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?")


def _position(text: str) -> tuple[float, float] | None:
    if m := _DJI.search(text):
        return float(m.group(1)), float(m.group(2))
    if m := _DJI_OLD.search(text):
        return float(m.group(2)), float(m.group(1))
    if m := _HEMI.search(text):
        lat = float(m.group(2)) * (-1 if m.group(1).upper() == "S" else 1)
        lon = float(m.group(4)) * (-1 if m.group(3).upper() == "W" else 1)
        return lat, lon
    return None


def _plausible(pos: tuple[float, float]) -> bool:
    """On the globe and not 0, 0 (what receivers write before they have a fix)."""
    return -90 <= pos[0] <= 90 and -180 <= pos[1] <= 180 and pos != (0.0, 0.0)


def _srt(path: Path, text: str, tz: ZoneInfo) -> Track:
    import srt

    try:
        blocks = list(srt.parse(text))
    except srt.SRTParseError as exc:
        raise TrackError(f"{path}: not a readable SRT file: {exc}") from None
    fixes, start = [], None
    for block in blocks:
        pos = _position(block.content)
        if pos is None or not _plausible(pos):
            continue
        offset = block.start.total_seconds()
        fixes.append(Fix(offset, *pos))
        if start is None and (m := _WHEN.search(block.content)):
            y, mo, d, h, mi, s, frac = m.groups()
            local = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), int((frac or "0")[:6].ljust(6, "0")), tzinfo=tz)
            start = local.astimezone(UTC) - timedelta(seconds=offset)
    return Track(path, fixes, video_timed=True, start=start)
