"""Blur the likely places of faces and licence plates in copies of evidence images meant for sharing.

Limits, stated plainly: no face or plate detector ships with the project (the OpenCV wheel has no
Haar cascades and there are no face/plate weights offline), so the regions are geometric guesses
from the COCO boxes: the top part of every `person` box (where a standing person's head is) and
the lower middle band of every vehicle box (where a front or rear plate sits). Faces of people the
detector missed, and plates outside that band (side views, plates on the roof of a truck), are not
blurred. Originals are never modified; only `shared/` copies are.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

PERSON_CLASSES = {"person"}
VEHICLE_CLASSES = {"car", "bus", "truck", "motorcycle", "motorbike", "van", "tricycle"}

# Fractions of the box: (x1, y1, x2, y2) of the region to blur, relative to the box corners.
HEAD_REGION = (0.0, 0.0, 1.0, 0.25)
PLATE_REGION = (0.2, 0.6, 0.8, 0.98)


def privacy_regions(detections: sv.Detections) -> np.ndarray:
    """(N, 4) xyxy regions to blur, derived from person and vehicle boxes."""
    names = detections.data.get("class_name", np.array([""] * len(detections)))
    regions = []
    for box, name in zip(detections.xyxy, names, strict=True):
        fractions = HEAD_REGION if name in PERSON_CLASSES else PLATE_REGION if name in VEHICLE_CLASSES else None
        if fractions is None:
            continue
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        fx1, fy1, fx2, fy2 = fractions
        regions.append([x1 + fx1 * w, y1 + fy1 * h, x1 + fx2 * w, y1 + fy2 * h])
    return np.asarray(regions, dtype=np.float32).reshape(-1, 4)


def blur_private(image: np.ndarray, detections: sv.Detections) -> np.ndarray:
    """A blurred copy of `image` (the input is left untouched)."""
    regions = privacy_regions(detections)
    out = image.copy()
    if len(regions) == 0:
        return out
    h, w = image.shape[:2]
    kernel = max(15, (min(h, w) // 20) | 1)
    return sv.BlurAnnotator(kernel_size=kernel).annotate(out, sv.Detections(xyxy=regions))
