"""`data stats`: what is in a version: counts per class and split, box sizes, and a contact sheet
of sample crops per class (the fastest way to spot a class whose labels mean something else)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detect.imageio import ImageReadError, read_image
from pipelines.retrain.dataset import Dataset

#: Box size bins: sqrt(box area / image area), i.e. the side of a square box relative to the image.
SIZE_BINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.01)
TILE = 128


def size_label(i: int) -> str:
    lo, hi = SIZE_BINS[i], min(SIZE_BINS[i + 1], 1.0)
    return f"{lo * 100:g}-{hi * 100:g}%"


def dataset_stats(dataset: Dataset) -> dict:
    """Manifest counts plus a per-class histogram of relative box sizes."""
    hist = {c: [0] * (len(SIZE_BINS) - 1) for c in dataset.classes}
    for e in dataset.files():
        boxes = dataset.labels(e).boxes
        rel = np.sqrt(boxes[:, 3] * boxes[:, 4])
        for c, r in zip(boxes[:, 0].astype(int), rel):
            hist[dataset.classes[c]][int(np.digitize(r, SIZE_BINS[1:-1]))] += 1
    return {
        "name": dataset.name,
        "digest": dataset.digest,
        "classes": dataset.classes,
        "counts": dataset.manifest.counts,
        "box_size_bins": [size_label(i) for i in range(len(SIZE_BINS) - 1)],
        "box_size_histogram": hist,
    }


def contact_sheets(dataset: Dataset, out_dir: Path, per_class: int = 24, columns: int = 6) -> dict[str, Path]:
    """One JPEG per class with up to `per_class` crops (box plus a margin), spread over the dataset."""
    out_dir.mkdir(parents=True, exist_ok=True)
    crops: dict[int, list[tuple]] = {i: [] for i in range(len(dataset.classes))}
    for e in dataset.files():
        for row in dataset.labels(e).boxes:
            crops[int(row[0])].append((e, row))
    sheets = {}
    for c, found in crops.items():
        if not found:
            continue
        picks = [found[int(i)] for i in np.linspace(0, len(found) - 1, min(per_class, len(found)))]
        tiles = [t for e, row in picks if (t := _tile(dataset, e, row)) is not None]
        if not tiles:
            continue
        rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
        rows[-1] += [np.full_like(tiles[0], 40)] * (columns - len(rows[-1]))
        sheet = np.vstack([np.hstack(r) for r in rows])
        title = np.full((28, sheet.shape[1], 3), 255, np.uint8)
        cv2.putText(title, f"{dataset.classes[c]}: {len(tiles)} of {len(found)} boxes", (6, 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        path = out_dir / f"contact-{dataset.classes[c]}.jpg"
        cv2.imwrite(str(path), np.vstack([title, sheet]), [cv2.IMWRITE_JPEG_QUALITY, 85])
        sheets[dataset.classes[c]] = path
    return sheets


def _tile(dataset: Dataset, entry, row: np.ndarray) -> np.ndarray | None:
    """The box with 15% margin, letterboxed into a TILE x TILE square with the box drawn."""
    try:
        image = read_image(dataset.path(entry.image))
    except ImageReadError:
        return None
    h, w = image.shape[:2]
    _, cx, cy, bw, bh = row
    x1, y1, x2, y2 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
    mx, my = 0.15 * (x2 - x1) + 2, 0.15 * (y2 - y1) + 2
    X1, Y1, X2, Y2 = int(max(0, x1 - mx)), int(max(0, y1 - my)), int(min(w, x2 + mx)), int(min(h, y2 + my))
    crop = image[Y1:Y2, X1:X2].copy()
    if crop.size == 0:
        return None
    cv2.rectangle(crop, (int(x1 - X1), int(y1 - Y1)), (int(x2 - X1), int(y2 - Y1)), (0, 200, 255), 1)
    scale = TILE / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    tile = np.full((TILE, TILE, 3), 40, np.uint8)
    oy, ox = (TILE - crop.shape[0]) // 2, (TILE - crop.shape[1]) // 2
    tile[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
    return tile
