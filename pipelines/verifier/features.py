"""Features of a verifier dataset, extracted once and cached: pooled tiles and vehicle contexts.

Training reads each photo once: the detector finds the vehicles (and, for the `neck` backbone,
gives the pooled neck map in the same run), the backbone's map is pooled over the tile grid and
over each vehicle's ground strip (`detect.verifier`, the same code inference runs). Synthetic
small-ad composites (`synth.py`) are made from the flyposting-negative street photos in the same
pass, each tied to its base photo so that it only ever trains folds its base photo is in.
The result is cached under the cache folder by backbone, tile grid, detector and data digest.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from detect import fields
from detect.frames import Frame
from detect.imageio import decode_image
from detect.rules import PhotoRules
from detect.verifier.backbones import is_neck, neck_id
from detect.verifier.heads import object_feature_dim
from detect.verifier.pooling import FeatureMap, tile_boxes
from detect.verifier.verifier import WHOLE, object_part_rows, vehicle_rows
from pipelines.verifier.data import Dataset

log = logging.getLogger(__name__)

VEHICLE_CLASSES = ["car", "truck", "bus", "motorcycle", "bicycle"]
"""Detector classes the parking head judges (illegal_parking: the first three; nonmotor_parking: the rest)."""
OBJECT_PART_CLASSES = ["umbrella", "dining table", "chair", "bench", "potted plant", "suitcase", "person", "bicycle", "motorcycle",
                       "truck", "car", "bottle"]
"""Detector classes a tiles head's object part reads (the stall head: a stall's umbrellas, tables, goods, vendors, carts)."""
MAX_SIDE = 1280
"""Photos are decoded at up to this long side (as triage does for 12 MP phone photos), or at the detector's input size if larger."""


@dataclass
class Features:
    tiles: np.ndarray  # (N, T + 1, D): every tile's pooled features, last row the whole image
    vehicles: np.ndarray  # (V, Dv)
    vehicle_photo: np.ndarray  # (V,) photo index
    vehicle_box: np.ndarray  # (V, 4) normalised
    vehicle_class: np.ndarray  # (V,) class names
    synth_tiles: np.ndarray  # (S, T + 1, D) composites
    synth_base: np.ndarray  # (S,) base photo index
    synth_boxes: list[list[tuple[float, float, float, float]]]  # slips per composite, normalised
    rules_found: list[list[str]]  # per photo: types today's detector-only rules find (the baseline)
    objects: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (O, Do) object-part features
    object_photo: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (O,) photo index
    object_box: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (O, 4) normalised


def cache_key(dataset: Dataset, backbone: str, detector_id: str, tiles: tuple[int, int], synth: int, seed: int) -> str:
    files = hashlib.sha256("\n".join(p.file for p in dataset.photos).encode()).hexdigest()  # rows left out change the key
    h = hashlib.sha256(f"{dataset.digest}|{files}|{backbone}|{detector_id}|{tiles}|{synth}|{seed}|{MAX_SIDE}|v2".encode())
    return h.hexdigest()[:16]


def extract(dataset: Dataset, backbone: str, detector, tiles: tuple[int, int], cache_dir: Path, *,
            synth: int = 0, seed: int = 0, font: Path | None = None, progress=None) -> Features:
    """Features of every photo (and `synth` composites), from the cache when it holds them. A fresh extraction is
    returned as read back from the cache it wrote, so the run that extracts and every later run of the same command
    (the one a card records) train on the same numbers: the composites' slip boxes were float64 in the first and
    float32 from the cache, and a tile at an edge of a slip changed sides (the flyposting head and its threshold of a
    card, 0.8948, came out 0.9025 when its own command was run again)."""
    key = cache_key(dataset, backbone, detector.model_id, tiles, synth, seed)
    path = cache_dir / f"verifier-features-{backbone}-{key}.npz"
    if path.is_file():
        return _cached(path)
    if is_neck(backbone) and neck_id(detector.model_id) != backbone:
        raise ValueError(f"backbone {backbone} is the neck of another detector than {detector.model_id}")
    eff = None
    if not is_neck(backbone):
        from detect.verifier.backbones import EfficientNetLite0

        eff = EfficientNetLite0()
    grid = np.vstack([tile_boxes(*tiles), WHOLE])
    rng = np.random.default_rng(seed)
    synth_bases = _synth_bases(dataset, synth, rng)
    out_tiles, vehicles, v_photo, v_box, v_class = [], [], [], [], []
    objects, o_photo, o_box = [], [], []
    s_tiles, s_base, s_boxes = [], [], []
    rules, rules_found = PhotoRules(), []
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    for i, photo in enumerate(dataset.photos):
        image = decode_image(photo.path, str(photo.path), max_side=max(MAX_SIDE, detector.imgsz)).image
        fmap, dets = _features(image, detector, eff)
        out_tiles.append(fmap.pool(grid).astype(np.float32))
        h, w = image.shape[:2]
        rules_found.append(sorted({e.violation_type for e in rules.process(Frame(image, photo.file, when), dets)}))
        names = fields.names(dets)
        o_idx, o_rows = object_part_rows(fmap, dets, w, h, OBJECT_PART_CLASSES, OBJECT_PART_CLASSES)
        objects.extend(o_rows)
        o_photo.extend([i] * len(o_idx))
        o_box.extend(dets.xyxy[o_idx] / [w, h, w, h])
        v_idx, v_rows = vehicle_rows(fmap, dets, w, h, VEHICLE_CLASSES, VEHICLE_CLASSES)
        vehicles.extend(v_rows)
        v_photo.extend([i] * len(v_idx))
        v_box.extend(dets.xyxy[v_idx] / [w, h, w, h])
        v_class.extend(names[v_idx])
        if i in synth_bases:
            from pipelines.verifier.synth import compose

            for _ in range(synth_bases[i]):
                composite, slips = compose(image, rng, font)
                cmap, _ = _features(composite, detector, eff)
                s_tiles.append(cmap.pool(grid).astype(np.float32))
                s_base.append(i)
                s_boxes.append([(s.box[0] / w, s.box[1] / h, s.box[2] / w, s.box[3] / h) for s in slips])
        if progress is not None:
            progress(i + 1, len(dataset.photos))
    dim = out_tiles[0].shape[1]
    feats = Features(
        np.stack(out_tiles), np.array(vehicles, dtype=np.float32).reshape(-1, object_feature_dim(dim, VEHICLE_CLASSES)),
        np.array(v_photo, dtype=int), np.array(v_box, dtype=np.float32).reshape(-1, 4), np.array(v_class, dtype=object),
        np.stack(s_tiles) if s_tiles else np.zeros((0, len(grid), dim), np.float32), np.array(s_base, dtype=int),
        s_boxes, rules_found,
        np.array(objects, dtype=np.float32).reshape(-1, object_feature_dim(dim, OBJECT_PART_CLASSES)), np.array(o_photo, dtype=int),
        np.array(o_box, dtype=np.float32).reshape(-1, 4))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, tiles=feats.tiles, vehicles=feats.vehicles, vehicle_photo=feats.vehicle_photo, vehicle_box=feats.vehicle_box,
             vehicle_class=feats.vehicle_class.astype(str), synth_tiles=feats.synth_tiles, synth_base=feats.synth_base,
             synth_box=np.array([b for bs in feats.synth_boxes for b in bs], dtype=np.float32).reshape(-1, 4),
             synth_box_of=np.array([k for k, bs in enumerate(feats.synth_boxes) for _ in bs], dtype=int),
             rules_found=np.array([";".join(r) for r in rules_found]), objects=feats.objects, object_photo=feats.object_photo,
             object_box=feats.object_box)
    return _cached(path)


def _cached(path: Path) -> Features:
    """The features a cache file holds (what `extract` wrote there)."""
    z = np.load(path, allow_pickle=False)
    boxes = [[tuple(b) for b in z["synth_box"][z["synth_box_of"] == k]] for k in range(len(z["synth_base"]))]
    return Features(z["tiles"], z["vehicles"], z["vehicle_photo"], z["vehicle_box"], z["vehicle_class"].astype(str),
                    z["synth_tiles"], z["synth_base"], boxes, [str(r).split(";") if r else [] for r in z["rules_found"]],
                    z["objects"], z["object_photo"], z["object_box"])


def _features(image: np.ndarray, detector, eff) -> tuple[FeatureMap, object]:
    if eff is None:
        dets, fmap = detector.detect_with_features([image])[0]
        return fmap, dets
    return eff.features(image), detector.detect([image])[0]


def _synth_bases(dataset: Dataset, n: int, rng: np.random.Generator) -> dict[int, int]:
    """Photo index -> composites to make from it: street scenes without flyposting, off the sticker
    gallery's close-ups (the slips must land on streets)."""
    if n <= 0:
        return {}
    pool = [i for i, p in enumerate(dataset.photos) if p.labels.get("flyposting", 0) == 0 and p.street_scene and p.source != "stk"]
    if not pool:
        return {}
    picks = rng.choice(pool, size=n, replace=n > len(pool))
    out: dict[int, int] = {}
    for i in picks:
        out[int(i)] = out.get(int(i), 0) + 1
    return out
