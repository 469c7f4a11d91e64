"""Features of a verifier dataset, extracted once and cached: pooled tiles and vehicle contexts.

Training reads each photo once: the detector finds the vehicles (and, for the `neck` backbone,
gives the pooled neck map in the same run), the backbone's map is pooled over the tile grid and
over each vehicle's ground strip (`detect.verifier`, the same code inference runs). Synthetic
small-ad composites (`synth.py`) are made from the flyposting-negative street photos in the same
pass, each tied to its base photo so that it only ever trains folds its base photo is in.
Two caches under the cache folder: each photo's own parts (`PhotoParts`) by its content and the settings that change
them (`photo_dir`), so a dataset one reviewed case larger extracts that one photo; and the assembled features of a
dataset (composites included: they draw on one random sequence over the whole dataset) by backbone, tile grid,
detector, labels and every photo's content, the fast path for running the same command again. Either can be deleted at will.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from detect import fields
from detect.config_io import replaced_atomically
from detect.digests import sha256_file
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
PHOTO_FORMAT = 2
"""Version of what a per-photo cache file holds and how it is computed: a change gives new file names, never old numbers.
2: photos decoded as triage decodes them (`decode_for`), where 1 kept up to 1280 px of a large JPEG."""


def decode_for(detector, path: Path) -> np.ndarray:
    """A photo's pixels as triage decodes them for this detector (a JPEG reduced by 1/2, 1/4 or 1/8 while its long side
    stays at or above the detector's input: pipelines.triage.photos), so a head trains on the pixels it will judge.
    Decoding a 12 MP phone photo at up to 1280 px instead, as train did before, changed its tiles by up to 2 % of their
    range against triage's (a 1280 x 720 photo read at 640 x 360); photos under twice the input size decode the same
    either way (all of street-scenes)."""
    return decode_image(path, str(path), max_side=detector.imgsz).image


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


@dataclass
class PhotoParts:
    """What one photo gives the features, cached per photo (`photo_dir`): as `extract` used to gather them in its loop,
    in the dtypes they are assembled in, so features from the cache and from a fresh run are the same bytes."""

    tiles: np.ndarray  # (T + 1, D) float32: every tile's pooled features, last row the whole image
    vehicles: np.ndarray  # (v, Dv) float32
    vehicle_box: np.ndarray  # (v, 4) float32 normalised
    vehicle_class: np.ndarray  # (v,) str
    objects: np.ndarray  # (o, Do) float32
    object_box: np.ndarray  # (o, 4) float32 normalised
    rules_found: np.ndarray  # str: types today's detector-only rules find


def photo_dir(cache_dir: Path, backbone: str, detector, tiles: tuple[int, int], rules: PhotoRules) -> Path:
    """Folder of the per-photo files (`<content sha256>.npz`) for everything that changes a photo's numbers: backbone,
    detector (model, backend, input size, rectangles, confidence and IoU: a dynamic export's id does not name its
    input size), tile grid, decode size, the rules' taxonomy and settings (they give `rules_found`, the baseline a head
    must beat to ship; per-photo files outlive many datasets) and `PHOTO_FORMAT`."""
    d = detector.describe()
    settings = "|".join(str(v) for v in (backbone, d["model"], d["backend"], d["imgsz"], d["rect"], d["conf"], d["iou"], tiles,
                                         rules.taxonomy.model_dump_json(), rules.settings.model_dump_json(), PHOTO_FORMAT))
    return cache_dir / "verifier-photos" / f"{backbone}-{hashlib.sha256(settings.encode()).hexdigest()[:16]}"


def cache_key(dataset: Dataset, contents: list[str], backbone: str, detector_id: str, tiles: tuple[int, int], synth: int,
              seed: int) -> str:
    """The assembled features' identity: labels, each photo's name and content (`contents`, SHA-256 per photo in order:
    a photo replaced under its own name, one re-exported or cropped, is read again; rows left out change the key), and
    every setting that changes them."""
    files = hashlib.sha256("\n".join(f"{p.file}|{c}" for p, c in zip(dataset.photos, contents)).encode()).hexdigest()
    h = hashlib.sha256(f"{dataset.digest}|{files}|{backbone}|{detector_id}|{tiles}|{synth}|{seed}|{PHOTO_FORMAT}|v2".encode())
    return h.hexdigest()[:16]


def extract(dataset: Dataset, backbone: str, detector, tiles: tuple[int, int], cache_dir: Path, *,
            synth: int = 0, seed: int = 0, font: Path | None = None, progress=None) -> Features:
    """Features of every photo (and `synth` composites), from the cache when it holds them; `progress(i, n, cached)`.
    A photo's own parts come from its per-photo file when there is one; the composites are made again whenever the
    dataset is another (the same random draws in the same order: the picks, then each base photo's in photo order).
    A fresh extraction is returned as read back from the cache it wrote, so the run that extracts and every later run of
    the same command (the one a card records) train on the same numbers: the composites' slip boxes were float64 in the
    first and float32 from the cache, and a tile at an edge of a slip changed sides (the flyposting head and its
    threshold of a card, 0.8948, came out 0.9025 when its own command was run again)."""
    contents = [sha256_file(photo.path) for photo in dataset.photos]  # 0.3 s for street-scenes' 2,096 photos (140 MB)
    key = cache_key(dataset, contents, backbone, detector.model_id, tiles, synth, seed)
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
    rules, cached = PhotoRules(), 0
    folder = photo_dir(cache_dir, backbone, detector, tiles, rules)
    parts: list[PhotoParts] = []
    s_tiles, s_base, s_boxes = [], [], []
    for i, photo in enumerate(dataset.photos):
        file = folder / f"{contents[i]}.npz"
        own = _load_parts(file)
        cached += own is not None
        image = None
        if own is None or i in synth_bases:
            image = decode_for(detector, photo.path)
        if own is None:
            own = _photo_parts(image, photo.file, detector, eff, grid, rules)
            _save_npz(file, **dataclasses.asdict(own))
        parts.append(own)
        if i in synth_bases:
            from pipelines.verifier.synth import compose

            h, w = image.shape[:2]
            for _ in range(synth_bases[i]):
                composite, slips = compose(image, rng, font)
                cmap, _ = _features(composite, detector, eff)
                s_tiles.append(cmap.pool(grid).astype(np.float32))
                s_base.append(i)
                s_boxes.append([(s.box[0] / w, s.box[1] / h, s.box[2] / w, s.box[3] / h) for s in slips])
        if progress is not None:
            progress(i + 1, len(dataset.photos), cached)
    log.info("features of %d photos: %d from the per-photo cache (%s), %d extracted; %d composites", len(parts), cached,
             folder, len(parts) - cached, len(s_tiles))
    feats = _assemble(parts, s_tiles, s_base, s_boxes, len(grid))
    _save_npz(path, tiles=feats.tiles, vehicles=feats.vehicles, vehicle_photo=feats.vehicle_photo, vehicle_box=feats.vehicle_box,
              vehicle_class=feats.vehicle_class.astype(str), synth_tiles=feats.synth_tiles, synth_base=feats.synth_base,
              synth_box=np.array([b for bs in feats.synth_boxes for b in bs], dtype=np.float32).reshape(-1, 4),
              synth_box_of=np.array([k for k, bs in enumerate(feats.synth_boxes) for _ in bs], dtype=int),
              rules_found=np.array([";".join(r) for r in feats.rules_found]), objects=feats.objects,
              object_photo=feats.object_photo, object_box=feats.object_box)
    return _cached(path)


def _photo_parts(image: np.ndarray, file: str, detector, eff, grid: np.ndarray, rules: PhotoRules) -> PhotoParts:
    """One photo's parts, read fresh: detections, the backbone's map pooled over the tiles and the objects' ground strips,
    and the types today's rules find."""
    fmap, dets = _features(image, detector, eff)
    h, w = image.shape[:2]
    found = sorted({e.violation_type for e in rules.process(Frame(image, file, datetime(2026, 1, 1, 12, tzinfo=UTC)), dets)})
    o_idx, o_rows = object_part_rows(fmap, dets, w, h, OBJECT_PART_CLASSES, OBJECT_PART_CLASSES)
    v_idx, v_rows = vehicle_rows(fmap, dets, w, h, VEHICLE_CLASSES, VEHICLE_CLASSES)
    scale = [w, h, w, h]
    return PhotoParts(fmap.pool(grid).astype(np.float32), v_rows, (dets.xyxy[v_idx] / scale).astype(np.float32).reshape(-1, 4),
                      np.array(fields.names(dets)[v_idx], dtype=str), o_rows,
                      (dets.xyxy[o_idx] / scale).astype(np.float32).reshape(-1, 4), np.array(found, dtype=str))


def _load_parts(path: Path) -> PhotoParts | None:
    """A photo's parts from its per-photo file; None when there is none, or (with a warning) when it cannot be read:
    the photo is then extracted again and the file rewritten."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return PhotoParts(**{f.name: z[f.name] for f in dataclasses.fields(PhotoParts)})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("%s: unreadable feature cache file (%s): extracting the photo again", path, e)
        return None


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write `arrays` to `path` whole or not at all (`replaced_atomically`): runs sharing a cache folder never read a
    half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _assemble(parts: list[PhotoParts], s_tiles: list, s_base: list, s_boxes: list, grid_rows: int) -> Features:
    """The dataset's features from its photos' parts (in photo order) and composites."""
    dim = parts[0].tiles.shape[1]

    def rows(name: str, width: int) -> np.ndarray:
        return np.array([r for p in parts for r in getattr(p, name)], dtype=np.float32).reshape(-1, width)

    def photo_of(name: str) -> np.ndarray:
        return np.array([i for i, p in enumerate(parts) for _ in getattr(p, name)], dtype=int)

    return Features(
        np.stack([p.tiles for p in parts]), rows("vehicles", object_feature_dim(dim, VEHICLE_CLASSES)), photo_of("vehicles"),
        rows("vehicle_box", 4), np.array([str(c) for p in parts for c in p.vehicle_class], dtype=object),
        np.stack(s_tiles) if s_tiles else np.zeros((0, grid_rows, dim), np.float32), np.array(s_base, dtype=int),
        s_boxes, [[str(t) for t in p.rules_found] for p in parts],
        rows("objects", object_feature_dim(dim, OBJECT_PART_CLASSES)), photo_of("objects"), rows("object_box", 4))


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
