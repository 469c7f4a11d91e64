"""The frame record that every source (camera or photo) hands to the detector and the rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class GeoPoint:
    """WGS-84 position (what phones write to EXIF and what dispatch platforms expect)."""

    lat: float
    lon: float


EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


def distance_m(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance in metres (haversine; plenty for the tens of metres that group photos and patrol fixes).
    Anything with `lat` and `lon` in degrees will do."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


VIEW_LOST = "view_lost"
"""`Frame.meta` key: why a camera's frame does not show the scene its zones were drawn on (black, covered, turned away;
set from the reader's health check, pipelines.cctv.health). The rules count the time up to such a frame as no absence
of what is open (absence of evidence while the camera is blind is not evidence of absence), and still judge what it
shows."""

TIME_SOURCE = "time_source"
"""`Frame.meta` key: where a frame's `ts` came from. A photo's (`pipelines.triage`): `exif`, `name` (the file name),
`file` (its modification time, often the day it was copied), `run` (the time it was read). A camera's
(`pipelines.cctv.reader`): `stream` (a live stream, timed by this server's clock as its frames arrive); a replayed
file's start plus its media time, the start being the camera's `start_time` setting (`start_time`), the recording's
`creation_time` tag (`creation_time`), the file's modification time (`file`) or the time of the run (`run`). The
evidence manifest records it beside the times (`times.sources`): a time the picture did not carry is no proof of
when the scene was seen."""


@dataclass
class Frame:
    """One image with the facts the rules and the evidence need.

    `ts` is timezone-aware UTC: for cameras the stream time mapped to wall clock, for photos the
    EXIF capture time (or the upload time when EXIF has none). `source_id` is the camera id, or
    for photos a stable id such as the content hash. `image` is BGR uint8 (OpenCV order).
    """

    image: np.ndarray
    source_id: str
    ts: datetime
    frame_id: str = ""
    geo: GeoPoint | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
