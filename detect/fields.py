"""The keys of `sv.Detections.data` that travel from the engine to the events, named once.

supervision keeps per-box extras in `Detections.data`; every stage here reads and writes the same
few, so they are constants (as supervision names its own `CLASS_NAME_DATA_FIELD`), each with the
value a box has when its producer did not set it. `merge` joins detections of different producers
(detector boxes, OCR lines, verifier regions) into one `Detections` with every key filled.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

CLASS_NAME = "class_name"
"""Detector class name (or `text`, `small_ad_text`, `verified:<type>` ...)."""
TEXT = "text"
"""OCR text of a text line."""
PHONES = "phones"
"""`;`-joined normalised phone numbers read in a text line."""
KEYWORDS = "keywords"
"""`;`-joined small-ad keywords found in a text line."""
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

#: value of each key for a box whose producer did not set it (object arrays for strings)
DEFAULTS: dict[str, object] = {TEXT: "", PHONES: "", KEYWORDS: "", ZONE_ID: "", COUNT: 1, VERIFIED: np.nan, VERIFIED_PASS: True}
_DTYPES = {COUNT: int, VERIFIED: float, VERIFIED_PASS: bool}


def column(key: str, n: int) -> np.ndarray:
    """A column of `n` default values for `key`."""
    return np.full(n, DEFAULTS[key], dtype=_DTYPES.get(key, object))


def merge(parts: list[sv.Detections]) -> sv.Detections:
    """Detections of several producers in one, every key of any part present in all (defaults)."""
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
                data[k] = np.array([""] * len(p), dtype=object)
            else:
                data[k] = column(k, len(p))
        p.data = data
        filled.append(p)
    return sv.Detections.merge(filled) if len(filled) > 1 else filled[0]
