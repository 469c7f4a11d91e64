"""Blur the likely places of faces and licence plates in copies of evidence images meant for sharing.

Limits, stated plainly: no face or plate detector ships with the project (the OpenCV wheel has no
Haar cascades and there are no face/plate weights offline), so the regions are geometric guesses
from the detector's boxes: the top part of every box of a `privacy: head` class (where a standing
person's head is) and the lower middle band of every box of a `privacy: plate` class (where a
vehicle's front or rear plate sits); the taxonomy's `classes:` say which classes those are. Faces
of people the detector missed, and plates outside that band (side views, plates on the roof of a
truck), are not blurred. Originals are never modified; only `shared/` copies are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from detect import fields
from detect.taxonomy import PrivacyRegion, Taxonomy, default_taxonomy

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip

#: Fractions of the box: (x1, y1, x2, y2) of the region to blur, relative to the box corners.
REGIONS = {
    PrivacyRegion.HEAD: (0.0, 0.0, 1.0, 0.25),
    PrivacyRegion.PLATE: (0.2, 0.6, 0.8, 0.98),
}


def privacy_regions(detections: sv.Detections, taxonomy: Taxonomy | None = None) -> np.ndarray:
    """(N, 4) xyxy regions to blur, from the boxes of the classes the taxonomy marks `privacy`
    (default: the shipped taxonomy: heads of people, plates of vehicles)."""
    by_class = (taxonomy or default_taxonomy()).privacy_regions
    regions = []
    for box, name in zip(detections.xyxy, fields.names(detections), strict=True):
        region = by_class.get(name)
        if region is None:
            continue
        fractions = REGIONS[region]
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        fx1, fy1, fx2, fy2 = fractions
        regions.append([x1 + fx1 * w, y1 + fy1 * h, x1 + fx2 * w, y1 + fy2 * h])
    return np.asarray(regions, dtype=np.float32).reshape(-1, 4)


def blur_private(image: np.ndarray, detections: sv.Detections, taxonomy: Taxonomy | None = None) -> np.ndarray:
    """A blurred copy of `image` (the input is left untouched)."""
    import supervision as sv

    regions = privacy_regions(detections, taxonomy)
    out = image.copy()
    if len(regions) == 0:
        return out
    h, w = image.shape[:2]
    kernel = max(15, (min(h, w) // 20) | 1)
    return sv.BlurAnnotator(kernel_size=kernel).annotate(out, sv.Detections(xyxy=regions))
