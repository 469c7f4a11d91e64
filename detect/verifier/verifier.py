"""The verifier: per-type probabilities for the whole image, a grid of tiles, zones and objects.

COCO has no class for a stall, a goods rack, an A-board or a small ad, so the detector alone cannot
see most of what a city enforces. The verifier judges the scene itself: pooled backbone features
(`pooling.py`) go through one small head per violation type (`heads.py`). A `tiles` head scores
every tile of a half-overlapping grid; the image's probability is that of its best tile (multiple
instance: an image is positive when some tile is), so heads trained from image labels also say
*where*. An `objects` head scores each detected object of its classes from the ground around it
(a car on a footway versus one in a bay), plus, for the parking head, how much the whole scene looks
like obstructive parking (its scene part's best tile).

Verdicts become ordinary detections of class `verified:<type>` (`evidence()`, `zone_evidence()`),
so the taxonomy, zones, tracking, dwell and cases treat them like any detector class: cameras and
photos share one judgement. Object verdicts ride on the detections themselves
(`fields.VERIFIED`), where the rules use them for photos without zones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from detect import fields
from detect.taxonomy import VERIFIED_PREFIX
from detect.verifier.backbones import Backbone, EfficientNetLite0, is_neck
from detect.verifier.heads import HeadSet, LinearHead, VerifierError, object_feature_dim
from detect.verifier.pooling import FeatureMap, tile_boxes

WHOLE = np.array([[0.0, 0.0, 1.0, 1.0]])

#: What an INT8 export of the detector did to the shipped heads' verdicts (docs/verifier.md, "With an INT8 detector"),
#: said whenever heads that read the neck judge with one: a city picking INT8 for speed should know what it trades.
#: Measure again when the heads or the packages (torch, onnx, onnxruntime) change.
INT8_MEASURED = ("on 300 street-scenes photos (2026-12-07) street-v7 changed its verdict on 47 for flyposting (58 found with "
                 "the fp32 export, 45 with INT8), 12 for spillover (38, 30), 6 for stalls (21, 19) and 1 for parking (3, 2)")

#: Object context: the ground strip around where the object stands (x by its width, y by its height
#: about the bottom edge), and the object's own box. Training and inference share this definition.
GROUND_X, GROUND_UP, GROUND_DOWN = 0.5, 0.3, 0.4


def _with_neck(model_id: str) -> str:
    """How to judge with a detector that gives neck features. An export's standard file (`yolo11n-640-dyn-int8`, which
    `--model` runs as named) has none: they ride on its engine variant, which exporting again would not change."""
    from detect.registry import RAW_BOX_SUFFIX, ModelNotFoundError, get_card

    try:
        get_card(model_id + RAW_BOX_SUFFIX)
    except ModelNotFoundError:
        return "export it again (`streetwatch models export`)"
    return f"its engine variant gives them: run --model {model_id}{RAW_BOX_SUFFIX}"


def verified_class(type_id: str) -> str:
    """Class name of a verifier verdict for a violation type (an evidence class in the taxonomy)."""
    return VERIFIED_PREFIX + type_id


def object_features(fmap: FeatureMap, box: np.ndarray, class_name: str, classes: list[str]) -> np.ndarray:
    """Features of one object (normalised `box`) for an `objects` head: pooled ground strip and box,
    where it stands (bottom edge, size, aspect) and which of `classes` it is."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    ground = [max(0.0, x1 - GROUND_X * w), max(0.0, y2 - GROUND_UP * h), min(1.0, x2 + GROUND_X * w), min(1.0, y2 + GROUND_DOWN * h)]
    pooled = fmap.pool(np.array([ground, box]))
    onehot = np.array([class_name == c for c in classes], dtype=np.float32)
    geometry = np.array([y2, np.sqrt(max(w * h, 0.0)), w / max(h, 1e-6)], dtype=np.float32)
    return np.concatenate([pooled[0], pooled[1], geometry, onehot])


VEHICLE_MIN_CONF, VEHICLE_MIN_AREA = 0.3, 0.002
"""The vehicles an `objects` head judges, in training and at inference alike: at least this confident and
this large (share of the image). A smaller or less certain one was never in its training rows: it is
not judged to pass (`Verifier.judge` gives it probability 0)."""
OBJECT_PART_MIN_CONF, OBJECT_PART_MIN_AREA = 0.25, 0.001
"""The detections a tiles head's object part reads, in training and at inference alike: of its classes,
at least this confident and this large (share of the image)."""


def object_rows(fmap: FeatureMap, detections: sv.Detections, width: int, height: int, classes: list[str],
                feature_classes: list[str], min_conf: float, min_area: float,
                inside: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and `object_features` of the detections of `classes` at least `min_conf` confident and
    `min_area` large (only those `inside`, when given): the one filter training and inference share."""
    dim = object_feature_dim(2 * fmap.channels, feature_classes)
    if not len(detections):
        return np.zeros(0, int), np.zeros((0, dim), np.float32)
    names = fields.names(detections)
    boxes = detections.xyxy / [width, height, width, height]
    conf = detections.confidence if detections.confidence is not None else np.ones(len(detections))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = np.isin(names, classes) & (conf >= min_conf) & (area >= min_area)
    if inside is not None:
        keep &= inside
    idx = np.flatnonzero(keep)
    if not len(idx):
        return idx, np.zeros((0, dim), np.float32)
    return idx, np.stack([object_features(fmap, boxes[i], names[i], feature_classes) for i in idx]).astype(np.float32)


def object_part_rows(fmap: FeatureMap, detections: sv.Detections, width: int, height: int, classes: list[str],
                     feature_classes: list[str], inside: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The detections a tiles head's object part reads (`object_rows` with its filter)."""
    return object_rows(fmap, detections, width, height, classes, feature_classes, OBJECT_PART_MIN_CONF, OBJECT_PART_MIN_AREA,
                       inside)


def vehicle_rows(fmap: FeatureMap, detections: sv.Detections, width: int, height: int, classes: list[str],
                 feature_classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The detections an `objects` head judges (`object_rows` with the vehicle filter)."""
    return object_rows(fmap, detections, width, height, classes, feature_classes, VEHICLE_MIN_CONF, VEHICLE_MIN_AREA)


@dataclass
class Verdicts:
    """What the verifier saw in one image (tiles and objects) and the thresholds it judges by."""

    tiles: np.ndarray  # (T, 4) normalised tile boxes; the last row is the whole image
    tile_probs: dict[str, np.ndarray] = field(default_factory=dict)  # tiles heads: type -> (T,)
    object_probs: dict[str, np.ndarray] = field(default_factory=dict)  # objects heads: type -> (N,), NaN = not judged
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def image(self) -> dict[str, float]:
        """Per-type probability of the image: its best tile, or its best object."""
        out = {t: float(p.max()) for t, p in self.tile_probs.items()}
        for t, p in self.object_probs.items():
            judged = p[~np.isnan(p)]
            out[t] = float(judged.max()) if len(judged) else 0.0
        return out

    def found(self, type_id: str) -> bool:
        return self.image.get(type_id, 0.0) >= self.thresholds.get(type_id, 1.0)

    @staticmethod
    def judged_types(verdicts: Verdicts | None) -> frozenset[str]:
        """Types these verdicts decide (the rules read detector classes for the rest); none without verdicts."""
        return frozenset(verdicts.thresholds) if verdicts is not None else frozenset()

    def to_json(self) -> dict:
        """Per-type image probabilities and thresholds, for records and manifests."""
        return {t: {"p": round(p, 4), "threshold": round(self.thresholds[t], 4)} for t, p in self.image.items()}


class Verifier:
    """Heads plus the backbone that feeds them (the detector's neck, or its own network)."""

    def __init__(self, heads: HeadSet, backbone: Backbone | None = None) -> None:
        card = heads.card
        if is_neck(card.backbone):
            backbone = None  # features come with the detector's output
        elif backbone is None:
            if card.backbone != EfficientNetLite0.id:
                raise VerifierError(f"{heads.path}: unknown backbone '{card.backbone}' (use a detector's '-neck' or {EfficientNetLite0.id})")
            backbone = EfficientNetLite0()
        elif backbone.id != card.backbone:
            raise VerifierError(f"{heads.path}: heads were trained on backbone '{card.backbone}', not '{backbone.id}'")
        self.heads, self.backbone = heads, backbone
        self.tiles = np.vstack([tile_boxes(*card.tiles), WHOLE])
        self.types = heads.types

    @property
    def id(self) -> str:
        return self.heads.card.id

    @property
    def needs_detector_features(self) -> bool:
        """True when the heads read the detector's own neck map (`Detector.detect_with_features`)."""
        return self.backbone is None

    def misfit(self, detector_model_id: str, imgsz: int) -> str | None:
        """Why the heads cannot read this detector's neck at this input size, or None when they can (always, for a
        verifier with its own backbone): another model's neck, or the same neck at another size, gives other features."""
        from detect.verifier.backbones import neck_id

        card = self.heads.card
        if not self.needs_detector_features:
            return None
        if neck_id(detector_model_id) != card.backbone:
            return (f"verifier {self.id} reads the neck of {card.backbone[:-5]}, but the detector is {detector_model_id}; use that "
                    f"detector or a verifier trained on its neck (`streetwatch verifier train --backbone`)")
        if imgsz != card.imgsz:
            return (f"verifier {self.id} was trained on the detector's neck at input {card.imgsz}, but the detector runs at {imgsz}, "
                    f"which gives other features; run it at --imgsz {card.imgsz} or train heads at {imgsz} "
                    f"(`streetwatch verifier train --imgsz {imgsz}`)")
        return None

    def int8_caveat(self, detector_model_id: str) -> str | None:
        """What judging with this INT8 detector costs, or None for any other detector (or heads with a backbone of their
        own). The quantised neck is not the fp32 one the heads were trained on (median correlation 0.90 on 2026-12-07),
        and probabilities near a threshold cross it: measured and said, not refused, as INT8 is a city's trade of
        verdicts for speed."""
        from detect.registry import is_int8

        if not self.needs_detector_features or not is_int8(detector_model_id):
            return None
        return (f"detector {detector_model_id} is an INT8 export, whose neck differs from the fp32 one verifier {self.id}'s heads "
                f"were trained on, and verdicts change: {INT8_MEASURED}. Judge with the fp32 export where the verdicts matter "
                "(docs/verifier.md, 'With an INT8 detector')")

    def check_detector(self, detector_model_id: str, has_features: bool, imgsz: int) -> None:
        """Refuse a detector whose neck the heads cannot read (`misfit`) or that gives no neck output."""
        reason = self.misfit(detector_model_id, imgsz)
        if reason:
            raise VerifierError(f"{self.heads.path}: {reason}")
        if self.needs_detector_features and not has_features:
            raise VerifierError(f"detector {detector_model_id} gives no neck features; {_with_neck(detector_model_id)}")

    def feature_map(self, image: np.ndarray, fmap: FeatureMap | None = None) -> FeatureMap:
        if self.backbone is not None:
            return self.backbone.features(image)
        if fmap is None:
            raise VerifierError(f"verifier {self.id} reads the detector's neck: run the detector with detect_with_features()")
        return fmap

    def _check_dim(self, fmap: FeatureMap) -> None:
        if 2 * fmap.channels != self.heads.card.feature_dim:
            raise VerifierError(
                f"{self.heads.path}: heads expect {self.heads.card.feature_dim} features, the backbone gives {2 * fmap.channels}")

    def judge(self, image: np.ndarray, detections: sv.Detections, fmap: FeatureMap | None = None) -> Verdicts:
        """Tile and object probabilities of one image (`fmap`: the detector's neck map, if the heads read it)."""
        fmap = self.feature_map(image, fmap)
        self._check_dim(fmap)
        h, w = image.shape[:2]
        pooled = fmap.pool(self.tiles)
        verdicts = Verdicts(self.tiles)
        for type_id, head in self.heads.heads.items():
            verdicts.thresholds[type_id] = head.spec.threshold
            if head.spec.region == "tiles":
                verdicts.tile_probs[type_id] = head.probs(pooled, self._object_logit(head, fmap, detections, w, h))
            else:
                verdicts.object_probs[type_id] = self._objects(head, fmap, detections, w, h, pooled)
        return verdicts

    def _objects(self, head: LinearHead, fmap: FeatureMap, detections: sv.Detections, w: int, h: int,
                 tiles: np.ndarray) -> np.ndarray:
        """Each object's probability from the ground around it plus, for a head with a scene part, the
        scene's logit (the image's best tile of `tiles`); NaN for detections not of its classes, 0 for those
        too small or unsure to judge (`VEHICLE_MIN_CONF`, `VEHICLE_MIN_AREA`: the head never saw their like)."""
        probs = np.full(len(detections), np.nan)
        if not len(detections):
            return probs
        probs[np.isin(fields.names(detections), head.spec.classes)] = 0.0
        idx, feats = vehicle_rows(fmap, detections, w, h, head.spec.classes, head.spec.feature_classes)
        if len(idx):
            probs[idx] = head.probs(feats, head.scene_logit(tiles))
        return probs

    @staticmethod
    def _object_logit(head: LinearHead, fmap: FeatureMap, detections: sv.Detections | None, w: int, h: int,
                      inside: np.ndarray | None = None) -> float:
        """What a tiles head's object part adds to each of its tiles (0 without one)."""
        if not head.has_object_part:
            return 0.0
        if detections is None:
            detections = sv.Detections.empty()
        _, rows = object_part_rows(fmap, detections, w, h, head.spec.classes, head.spec.feature_classes, inside)
        return head.object_logit(rows)

    def zone_probs(self, fmap: FeatureMap, polygon: np.ndarray, types: list[str], detections: sv.Detections | None = None,
                   size: tuple[int, int] = (1, 1)) -> dict[str, float]:
        """Per-type probability of a zone (normalised polygon): its own crop, or its best tile inside it.
        A head with an object part reads the `detections` (of an image `size` = (width, height)) centred in the zone."""
        import cv2

        poly = np.asarray(polygon, dtype=np.float32)
        box = np.array([[poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()]])
        region = fmap.pool(box, mask=fmap.polygon_mask(poly))
        centres = np.stack([(self.tiles[:-1, 0] + self.tiles[:-1, 2]) / 2, (self.tiles[:-1, 1] + self.tiles[:-1, 3]) / 2], 1)
        inside = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0 for x, y in centres])
        tiles = fmap.pool(self.tiles[:-1][inside]) if inside.any() else None
        w, h = size
        in_zone = None  # the detections centred in the zone, worked out only for a head with an object part
        if detections is not None and len(detections) and any(
                self.heads.heads[t].has_object_part for t in types if t in self.heads.heads):
            centres = detections.get_anchors_coordinates(sv.Position.CENTER) / [w, h]
            in_zone = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0 for x, y in centres])
        out = {}
        for t in types:
            head = self.heads.heads.get(t)
            if head is None or head.spec.region != "tiles":
                continue
            extra = self._object_logit(head, fmap, detections, w, h, in_zone)
            p = float(head.probs(region, extra)[0])
            if tiles is not None:
                p = max(p, float(head.probs(tiles, extra).max()))
            out[t] = p
        return out


def _merge_tiles(tiles: np.ndarray) -> list[np.ndarray]:
    """Groups of overlapping tiles (indices, ascending, groups in order of their first tile), so one thing lit up in
    two tiles is one region: the connected components of the tiles' overlap graph."""
    from scipy.sparse.csgraph import connected_components

    x0, y0, x1, y1 = (tiles[:, k][:, None] for k in range(4))
    overlap = (np.minimum(x1, x1.T) > np.maximum(x0, x0.T)) & (np.minimum(y1, y1.T) > np.maximum(y0, y0.T))
    count, labels = connected_components(overlap, directed=False)
    return [np.flatnonzero(labels == k) for k in range(count)]


def evidence(
    verdicts: Verdicts,
    detections: sv.Detections,
    width: int,
    height: int,
    support: dict[str, list[str]] | None = None,
    counted: dict[str, list[str]] | None = None,
    zone_id: str = "",
    types: list[str] | None = None,
    group_gap: float = 0.5,
) -> sv.Detections:
    """`verified:<type>` detections for every tiles head that found its type.

    Each region of overlapping positive tiles is one detection. Its box is drawn from the tiles,
    refined to the detector boxes of the type's `support` classes (umbrellas, tables, text lines
    ...) whose centre lies in the region, when there are any. `fields.COUNT` is the number of
    clusters of `counted` objects in it (stalls of a market), at least 1.
    """
    from detect.tracking import group_components

    support, counted = support or {}, counted or {}
    n = len(detections)
    names = fields.names(detections) if n else np.array([], dtype=str)
    centres = detections.get_anchors_coordinates(sv.Position.CENTER) if n else np.zeros((0, 2))
    rows: list[tuple[np.ndarray, float, str, int]] = []
    scale = np.array([width, height, width, height], dtype=float)
    grid = verdicts.tiles[:-1]
    for type_id, probs in verdicts.tile_probs.items():
        if types is not None and type_id not in types:
            continue
        th = verdicts.thresholds[type_id]
        positive = np.flatnonzero(probs[:-1] >= th)
        if len(positive):
            regions = [positive[g] for g in _merge_tiles(grid[positive])]
        elif probs[-1] >= th:
            regions = [np.array([len(grid)])]  # only the whole image: no single tile stands out
        else:
            continue
        for group in regions:
            tiles = verdicts.tiles[group]
            box = np.array([tiles[:, 0].min(), tiles[:, 1].min(), tiles[:, 2].max(), tiles[:, 3].max()]) * scale
            inside = (centres[:, 0] >= box[0]) & (centres[:, 0] <= box[2]) & (centres[:, 1] >= box[1]) & (centres[:, 1] <= box[3])
            helpers = inside & np.isin(names, support.get(type_id, []))
            if helpers.any():
                sel = detections.xyxy[helpers]
                box = np.array([sel[:, 0].min(), sel[:, 1].min(), sel[:, 2].max(), sel[:, 3].max()])
            objects = inside & np.isin(names, counted.get(type_id, []))
            count = len(group_components(detections.xyxy[objects], group_gap)) if objects.any() else 1
            rows.append((box, float(probs[group].max()), type_id, max(1, count)))
    return _rows_to_detections(rows, zone_id)


def _rows_to_detections(rows: list[tuple[np.ndarray, float, str, int]], zone_id: str) -> sv.Detections:
    if not rows:
        return sv.Detections.empty()
    n = len(rows)
    return sv.Detections(
        xyxy=np.stack([r[0] for r in rows]).astype(float),
        confidence=np.array([r[1] for r in rows], dtype=float),
        class_id=np.full(n, -1, dtype=int),
        data={
            fields.CLASS_NAME: np.array([verified_class(r[2]) for r in rows], dtype=object),
            fields.COUNT: np.array([r[3] for r in rows], dtype=int),
            fields.ZONE_ID: np.array([zone_id] * n, dtype=object),
        },
    )
