"""Pooling a backbone's feature map over parts of the image: tiles, zones and boxes.

A backbone gives one map of C channels per stride-32 patch of its input. Every region the verifier
judges (the whole image, a grid of overlapping tiles, a zone's polygon, the ground around a parked
vehicle) is described by the mean and the max of the patches it covers: the mean says what the
region is mostly, the max catches a small thing in it (a slip on a pole). One map per image, many
regions, no second network run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureMap:
    """A backbone's (C, H, W) map and where the image lies on it.

    Image point (u, v) in normalised image coordinates (0..1) falls on cell
    (u * sx + ox, v * sy + oy): letterboxed inputs have an offset (the padding), resized ones none.
    """

    data: np.ndarray  # (C, H, W) float32
    sx: float
    sy: float
    ox: float = 0.0
    oy: float = 0.0

    @property
    def channels(self) -> int:
        return int(self.data.shape[0])

    def cells(self, box: np.ndarray) -> tuple[int, int, int, int]:
        """Cell index range [c1, c2) x [r1, r2) covered by a normalised box (x1, y1, x2, y2); never empty."""
        _, h, w = self.data.shape
        c1 = int(np.floor(box[0] * self.sx + self.ox))
        c2 = int(np.ceil(box[2] * self.sx + self.ox))
        r1 = int(np.floor(box[1] * self.sy + self.oy))
        r2 = int(np.ceil(box[3] * self.sy + self.oy))
        c1, r1 = min(max(c1, 0), w - 1), min(max(r1, 0), h - 1)
        return c1, max(c2, c1 + 1) if c2 <= w else w, r1, max(r2, r1 + 1) if r2 <= h else h

    def pool(self, boxes: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """(N, 2C) mean and max features of N normalised boxes (one per row).

        `mask` (H, W) bool, when given, restricts every box to those cells (a zone's polygon); a
        box with no masked cell falls back to all its cells.
        """
        boxes = np.atleast_2d(np.asarray(boxes, dtype=float))
        out = np.empty((len(boxes), 2 * self.channels), dtype=np.float32)
        for i, box in enumerate(boxes):
            c1, c2, r1, r2 = self.cells(box)
            patch = self.data[:, r1:r2, c1:c2].reshape(self.channels, -1)
            if mask is not None:
                keep = mask[r1:r2, c1:c2].reshape(-1)
                if keep.any():
                    patch = patch[:, keep]
            out[i, : self.channels] = patch.mean(axis=1)
            out[i, self.channels :] = patch.max(axis=1)
        return out

    def polygon_mask(self, polygon: np.ndarray) -> np.ndarray:
        """(H, W) bool: cells whose centre lies in a normalised polygon (at least the nearest cell)."""
        import cv2

        _, h, w = self.data.shape
        pts = np.asarray(polygon, dtype=float) * [self.sx, self.sy] + [self.ox, self.oy]
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(pts * 8).astype(np.int32)], 1, shift=3)  # sub-cell precision
        if not mask.any():
            cx, cy = np.clip(pts.mean(0).astype(int), 0, [w - 1, h - 1])
            mask[cy, cx] = 1
        return mask.astype(bool)


def tile_boxes(cols: int, rows: int) -> np.ndarray:
    """Normalised boxes of a grid of half-overlapping tiles: each tile spans 2/(cols+1) of the
    width and 2/(rows+1) of the height, so every point not on the border is in two tiles per axis."""
    tw, th = 2.0 / (cols + 1), 2.0 / (rows + 1)
    return np.array([[c * tw / 2, r * th / 2, c * tw / 2 + tw, r * th / 2 + th] for r in range(rows) for c in range(cols)])
