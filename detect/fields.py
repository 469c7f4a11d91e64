"""The keys of `sv.Detections.data` that travel from the engine to the events, named once.

supervision keeps per-box extras in `Detections.data`; every stage here reads and writes the same
few, so they are constants (as supervision names its own `CLASS_NAME_DATA_FIELD`), each with the
value a box has when its producer did not set it. `merge` joins detections of different producers
(detector boxes, OCR lines, verifier regions) into one `Detections` with every key filled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip

CLASS_NAME = "class_name"
"""Detector class name (or `text`, `small_ad_text`, `verified:<type>` ...)."""
TEXT = "text"
"""OCR text of a text line."""
PHONES = "phones"
"""`;`-joined normalised phone numbers read in a text line (`split` them)."""
KEYWORDS = "keywords"
"""`;`-joined small-ad keywords found in a text line (`split` them)."""
ZONE_ID = "zone_id"
"""A verifier region judged on one zone's crop is in that zone only ('' = placed by its anchor)."""
COUNT = "count"
"""Objects a verifier region counted (stalls of a market); 1 for everything else."""
VERIFIED = "verified"
"""An object head's probability for this box (NaN: not judged)."""
VERIFIED_PASS = "verified_pass"
"""The object passed its head's threshold (True when not judged)."""
MOVED = "moved"
"""Tracker: the track left its rest point at this update."""
STILL_SINCE = "still_since"
"""Tracker: when the track came to rest."""

SEPARATOR = ";"
"""Joins the several values of one box in a string key (`PHONES`, `KEYWORDS`)."""

#: value of each key for a box whose producer did not set it (object arrays for strings)
DEFAULTS: dict[str, object] = {TEXT: "", PHONES: "", KEYWORDS: "", ZONE_ID: "", COUNT: 1, VERIFIED: np.nan, VERIFIED_PASS: True}
_DTYPES = {COUNT: int, VERIFIED: float, VERIFIED_PASS: bool}


def column(key: str, n: int) -> np.ndarray:
    """A column of `n` default values for `key`."""
    return np.full(n, DEFAULTS[key], dtype=_DTYPES.get(key, object))


def names(detections: sv.Detections) -> np.ndarray:
    """The class name of every box as `str` ('' where no producer named it)."""
    value = detections.data.get(CLASS_NAME)
    if value is None:
        return np.full(len(detections), "", dtype=object).astype(str)
    return np.asarray(value, dtype=object).astype(str)


def values(detections: sv.Detections, key: str) -> np.ndarray:
    """The column `key` of every box, or its default (`DEFAULTS`) where no producer set it."""
    value = detections.data.get(key)
    return np.asarray(value) if value is not None else column(key, len(detections))


def join(items: Iterable[str]) -> str:
    """Several values of one box as one string key value (phones, keywords)."""
    return SEPARATOR.join(items)


def split(joined: object) -> list[str]:
    """The values a `join`ed key holds (none for '')."""
    return [item for item in str(joined).split(SEPARATOR) if item]


def merge(parts: list[sv.Detections]) -> sv.Detections:
    """Detections of several producers in one, every key of any part present in all (defaults)."""
    import supervision as sv

    parts = [p for p in parts if len(p)]
    if not parts:
        return sv.Detections.empty()
    keys = [CLASS_NAME] + sorted({k for p in parts for k in p.data if k in DEFAULTS})
    filled = []
    for p in parts:
        p = p[:]
        if p.confidence is None:
            p.confidence = np.ones(len(p))
        if p.class_id is None:
            p.class_id = np.full(len(p), -1, dtype=int)
        data = {}
        for k in keys:
            if k in p.data:
                data[k] = np.asarray(p.data[k], dtype=_DTYPES.get(k, object))
            elif k == CLASS_NAME:
                data[k] = np.full(len(p), "", dtype=object)
            else:
                data[k] = column(k, len(p))
        p.data = data
        filled.append(p)
    return sv.Detections.merge(filled) if len(filled) > 1 else filled[0]
