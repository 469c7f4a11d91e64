"""The frame record that every source (camera or photo) hands to the detector and the rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class GeoPoint:
    """WGS-84 position (what phones write to EXIF and what dispatch platforms expect)."""

    lat: float
    lon: float


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
