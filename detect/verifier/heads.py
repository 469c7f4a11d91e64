"""Verifier heads: one small linear model per violation type over pooled backbone features.

The heads are ours (trained here from labelled street photos, `streetwatch verifier train`), a few
hundred kilobytes in one `.npz` beside a YAML card that says which backbone and tile grid they read,
what they were trained on, and how well they did on photos they never saw. A head is a
standardiser and a logistic regression over one region's features; its raw score (the logit) is
turned into a calibrated probability (Platt scaling fitted on out-of-fold scores), and the type's
threshold on that probability was chosen on validation and is stored with it.

An `objects` head may carry a *scene* part: a second linear model over the image's tiles whose best
tile's logit adds to every object's. The parking head has one: a vehicle counts only where both the
ground around it and the scene look like obstructive parking (on three group splits this halved the
false parking findings of photos without zones; docs/verifier.md). The other way round, a `tiles`
head may carry an *object* part: a linear model over the detected objects of its `classes` (each
from its ground strip and box, as vehicles are), whose best object's logit adds to every tile's
(the stall head: an umbrella or a table that looks like a stall's makes every tile more stall-like).

Loading refuses heads that do not match the backbone (feature size, backbone id), that name an
unknown violation type, or whose arrays are missing or malformed, naming the file and the reason.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError

from detect.config_io import ConfigModel, write_text_atomic

HEAD_ARRAYS = ("mean", "scale", "coef")
SCENE_ARRAYS = ("scene_mean", "scene_scale", "scene_coef")
OBJECT_ARRAYS = ("object_mean", "object_scale", "object_coef")


def object_feature_dim(pooled: int, classes: list[str]) -> int:
    """Size of one object's features (`verifier.object_features`) for a backbone pooling to `pooled` values per
    region: its ground strip and its box pooled, where it stands (3 values), and a one-hot of `classes`."""
    return 2 * pooled + 3 + len(classes)


class VerifierError(ValueError):
    """Heads or backbone that cannot be used; the message names the file and the reason."""


class HeadSpec(ConfigModel):
    """One type's head: which regions it judges and how its score becomes a verdict."""

    region: Literal["tiles", "objects"] = Field(
        title="Region", description="tiles: the image's tile grid (and zones); objects: the ground around each detected object of `classes`.")
    classes: list[str] = Field(default_factory=list, title="Object classes",
                               description="Detector classes judged by an `objects` head, or read by a `tiles` head's object part.")
    feature_classes: list[str] = Field(
        default_factory=list, title="Feature classes", description="The class list of an `objects` head's one-hot feature (its training classes).")
    intercept: float = Field(title="Intercept", description="Logistic-regression intercept on standardised features.")
    calibration: tuple[float, float] = Field(
        (1.0, 0.0), title="Calibration", description="Platt scaling (a, b): probability = sigmoid(a * logit + b).")
    threshold: float = Field(0.5, title="Threshold", description="Calibrated probability at and above which the type is found.", ge=0, le=1)
    ocr_gate: float | None = Field(
        None, title="OCR gate", description="Tiles at or above this probability are read by OCR (flyposting).", ge=0, le=1)
    scene_intercept: float | None = Field(
        None, title="Scene intercept",
        description="objects heads: intercept of the scene part over the image's tiles (arrays scene_mean/scale/coef); its best tile's "
                    "logit adds to every object's. None: no scene part.")
    object_intercept: float | None = Field(
        None, title="Object intercept",
        description="tiles heads: intercept of the object part over the detected objects of `classes` (arrays object_mean/scale/coef); "
                    "its best object's logit adds to every tile's. None: no object part.")
    object_floor: float | None = Field(
        None, title="Object floor", description="tiles heads with an object part: the logit it adds for an image without such objects.")


class HeadsCard(ConfigModel):
    """The YAML card of a head set: what it reads, what it judges, how it was made and measured."""

    id: str = Field(title="Verifier id", pattern=r"^[A-Za-z0-9._-]+$")
    backbone: str = Field(title="Backbone", description="Feature source the heads were trained on (see detect.verifier.backbones).")
    feature_dim: int = Field(title="Feature size", description="Pooled feature length (mean + max of the backbone's channels).", gt=0)
    imgsz: int = Field(640, title="Detector input", gt=0, multiple_of=32,
                       description="Input size in pixels of the detector whose neck the heads read (neck backbones): the same "
                                   "photo at another size gives other features, so the heads judge only at this one.")
    tiles: tuple[int, int] = Field((5, 3), title="Tile grid", description="Columns x rows of half-overlapping tiles.")
    weights: str = Field(title="Weights file", description="The .npz beside the card holding every head's arrays.")
    heads: dict[str, HeadSpec] = Field(title="Heads", description="Violation type id -> head.")
    dataset: dict = Field(default_factory=dict, title="Training data", description="Data digest, counts and sources.")
    metrics: dict = Field(default_factory=dict, title="Validation metrics", description="Per type and per source, on photos the heads never saw.")
    command: str = Field("", title="Command", description="The one command that reproduces these heads.")
    notes: str = Field("", title="Notes")


class LinearHead:
    """Standardise, dot, calibrate: a head at inference time (numpy only)."""

    def __init__(self, spec: HeadSpec, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                 scene: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 objects: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        self.spec = spec
        self.w, self.b = _folded(mean, scale, coef, spec.intercept)
        self.scene = None
        if scene is not None and spec.scene_intercept is not None:
            self.scene = _folded(*scene, spec.scene_intercept)
        self.objects = None
        if objects is not None and spec.object_intercept is not None:
            self.objects = _folded(*objects, spec.object_intercept)

    def logits(self, features: np.ndarray, added: float = 0.0) -> np.ndarray:
        """`added`: the other part's logit of the image (`scene_logit`, `object_logit`), 0 without one."""
        return features @ self.w + self.b + added

    def probs(self, features: np.ndarray, added: float = 0.0) -> np.ndarray:
        a, b = self.spec.calibration
        return 1.0 / (1.0 + np.exp(-(a * self.logits(features, added) + b)))

    def scene_logit(self, tiles: np.ndarray) -> float:
        """The scene part's logit of an image (its best tile of `tiles`, pooled tile features); 0 without one."""
        if self.scene is None:
            return 0.0
        w, b = self.scene
        return float((tiles @ w + b).max())

    @property
    def has_object_part(self) -> bool:
        return self.objects is not None

    def object_logit(self, objects: np.ndarray) -> float:
        """The object part's logit of an image: its best object of `objects` (rows of object features), the
        stored floor when it has none; 0 without an object part."""
        if self.objects is None:
            return 0.0
        if not len(objects):
            return float(self.spec.object_floor or 0.0)
        w, b = self.objects
        return float((objects @ w + b).max())


def _folded(mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float) -> tuple[np.ndarray, float]:
    """Fold the standardiser into the weights: (x - m) / s . w + c = x . (w / s) + c - m . (w / s)."""
    return (coef / scale).astype(np.float32), float(intercept - np.dot(mean / scale, coef))


class HeadSet:
    """Every type's head of one verifier, loaded from its card and weights."""

    def __init__(self, card: HeadsCard, heads: dict[str, LinearHead], path: Path | None = None) -> None:
        self.card, self.heads, self.path = card, heads, path

    @property
    def types(self) -> list[str]:
        return list(self.heads)

    @classmethod
    def load(cls, card_path: str | Path, known_types: set[str] | None = None) -> HeadSet:
        card_path = Path(card_path)
        if not card_path.is_file():
            raise VerifierError(f"{card_path}: verifier card not found")
        try:
            card = HeadsCard.model_validate(yaml.safe_load(card_path.read_text(encoding="utf-8")) or {})
        except (ValidationError, yaml.YAMLError) as exc:
            raise VerifierError(f"{card_path}: not a verifier card: {exc}") from exc
        weights = card_path.parent / card.weights
        if not weights.is_file():
            raise VerifierError(f"{weights}: weights of verifier {card.id} not found (named by {card_path.name})")
        # np.load takes any file that is not a zip for a pickle, and its refusal suggests loading it unsafely
        if not zipfile.is_zipfile(weights):
            raise VerifierError(f"{weights}: cannot read the heads: not an .npz archive (cut short, corrupt or another file); "
                                f"copy the weights of verifier {card.id} again")
        try:
            arrays = dict(np.load(weights, allow_pickle=False))
        except (OSError, ValueError, zipfile.BadZipFile) as exc:  # a damaged member
            raise VerifierError(f"{weights}: cannot read the heads: {exc}") from exc
        heads = {}
        for type_id, spec in card.heads.items():
            if known_types is not None and type_id not in known_types:
                raise VerifierError(f"{card_path}: head '{type_id}' is not a violation type of the taxonomy")
            object_dim = object_feature_dim(card.feature_dim, spec.feature_classes)
            dim = card.feature_dim if spec.region == "tiles" else object_dim
            parts = _arrays(arrays, weights, card, type_id, HEAD_ARRAYS, dim, f"a {spec.region} head")
            scene = None
            if spec.scene_intercept is not None:
                if spec.region != "objects":
                    raise VerifierError(f"{card_path}: head '{type_id}' is a {spec.region} head; only objects heads have a scene part")
                scene = tuple(_arrays(arrays, weights, card, type_id, SCENE_ARRAYS, card.feature_dim, "its scene part"))
            objects = None
            if spec.object_intercept is not None:
                if spec.region != "tiles" or not spec.classes:
                    raise VerifierError(f"{card_path}: head '{type_id}' has an object part but is not a tiles head with object classes")
                objects = tuple(_arrays(arrays, weights, card, type_id, OBJECT_ARRAYS, object_dim, "its object part"))
            heads[type_id] = LinearHead(spec, *parts, scene=scene, objects=objects)
        return cls(card, heads, card_path)

    def save(self, card_path: Path, arrays: dict[str, np.ndarray]) -> None:
        """Write the card and its weights (`arrays`: '<type>/<mean|scale|coef>' and, for a scene or object part,
        '<type>/<scene_|object_><mean|scale|coef>' -> vector)."""
        card_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(card_path.parent / self.card.weights, **{k: v.astype(np.float32) for k, v in arrays.items()})
        write_card(self.card, card_path)


def write_card(card: HeadsCard, card_path: Path) -> None:
    """The card as YAML (its weights file is named in it and not written here)."""
    write_text_atomic(card_path, yaml.safe_dump(card.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def _arrays(arrays: dict, weights: Path, card: HeadsCard, type_id: str, names: tuple[str, ...], dim: int, what: str) -> list[np.ndarray]:
    """A head's named arrays from its weights file, each checked to hold `dim` features."""
    parts = []
    for name in names:
        arr = arrays.get(f"{type_id}/{name}")
        if arr is None:
            raise VerifierError(f"{weights}: head '{type_id}' has no '{name}' array")
        if arr.shape != (dim,):
            raise VerifierError(
                f"{weights}: head '{type_id}' {name} has shape {arr.shape}, but the card's backbone "
                f"{card.backbone} gives {dim} features for {what}")
        parts.append(arr.astype(np.float32))
    return parts
