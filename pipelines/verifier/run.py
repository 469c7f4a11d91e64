"""`streetwatch verifier train`: features, heads, validation figures, card — one command.

Writes `<out>/<id>.yaml` (the card: backbone, tile grid, per-type thresholds and calibration,
validation figures per source with intervals, today's detector-only rules on the same photos for
comparison, the data digest and the exact command) and `<out>/<id>.npz` (the heads' arrays).
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import numpy as np

from detect.verifier.backbones import EFFICIENTNET, is_neck, neck_id
from detect.verifier.heads import HeadsCard, HeadSet, HeadSpec, VerifierError
from pipelines.verifier.data import PARKING, Dataset
from pipelines.verifier.features import OBJECT_PART_CLASSES, VEHICLE_CLASSES, Features, extract
from pipelines.verifier.metrics import figures
from pipelines.verifier.operating_points import operating_points
from pipelines.verifier.options import TrainOptions
from pipelines.verifier.train import (MIN_SHIP_F1, OBJECT_PART_HEADS, PARKING_TYPES, HeadResult, SummedModel, TileHead, heads_to_train,
                                      parking_head, tiles_objects_head, train_head)
from pipelines.verifier.validation_csv import verdict_rows, write_validation_csv

log = logging.getLogger(__name__)

#: label head -> what today's rules call a finding of it (the baseline in the card)
RULE_TYPES = {"street_stall": ["street_stall"], "shopfront_spillover": ["shopfront_spillover"], "flyposting": ["flyposting"],
              "exposed_garbage": ["exposed_garbage"], PARKING: ["illegal_parking", "nonmotor_parking"]}


def detector_for(backbone: str, imgsz: int = 640):
    """The detector the features are read with (its neck is the backbone, or it finds the vehicles), at input `imgsz`."""
    from detect.engine import load_detector

    model = backbone[: -len("-neck")] if is_neck(backbone) else "yolo11n"
    return load_detector(model, backend="onnx", features=is_neck(backbone), imgsz=imgsz)


def new_card(out: Path, verifier_id: str) -> Path:
    """Where `train` writes the card of `verifier_id` in `out`; VerifierError when a card or heads of that id are there
    already. Why: `--out` and `--id` default to models/verifiers and street-v7, and the next step `data from-cases
    --verifier` and `verifier to-label` print names no --id, so minutes of training overwrote the shipped (often
    promoted) heads and the card whose figures the docs quote, and nothing was left to go back to. A new id keeps both,
    as `verifier threshold` and the detector's `train --name` do; a free one is suggested. An `out` that is a file, or
    lies under one, is refused here too: found only when the card was written, it cost the whole training."""
    blocking = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise VerifierError(f"--out {out}: {blocking} exists and is not a folder; name the folder for the card and heads")

    def taken(vid: str) -> Path | None:
        return next((f for f in (out / f"{vid}.yaml", out / f"{vid}.npz") if f.exists()), None)

    found = taken(verifier_id)
    if found is not None:
        free = next(f"{verifier_id}-{n}" for n in range(2, 10_000) if taken(f"{verifier_id}-{n}") is None)
        raise VerifierError(f"{found}: verifier '{verifier_id}' exists already, and training would overwrite it: choose "
                            f"another --id (e.g. --id {free}), or another --out")
    return out / f"{verifier_id}.yaml"


def train(dataset: Dataset, out: Path, cache: Path, options: TrainOptions, progress=None,
          validation_csv: Path | None = None) -> tuple[Path, HeadsCard]:
    """Train, validate and write the card and heads; `validation_csv`: also each photo's validation verdict there."""
    path = new_card(out, options.verifier_id)
    _, feats = features(dataset, options, cache, progress)
    results, refused = train_heads(dataset, feats, options, progress)
    card, arrays = _card(dataset, feats, results, options, refused)
    out.mkdir(parents=True, exist_ok=True)
    path = new_card(out, options.verifier_id)  # one written meanwhile by another run is not overwritten either
    HeadSet(card, {}).save(path, arrays)
    if validation_csv is not None:
        write_validation_csv(validation_csv, [row for name, r in results.items()
                                              for row in verdict_rows(dataset, name, r.oof_found, r.probs(r.oof_scores))])
    return path, card


def features(dataset: Dataset, options: TrainOptions, cache: Path, progress=None):
    """The detector the features are read with, and every photo's features (from the cache when it holds them)."""
    if not is_neck(options.backbone) and options.backbone != EFFICIENTNET:
        raise ValueError(f"--backbone {options.backbone}: use a detector's neck (e.g. yolo11n-neck) or {EFFICIENTNET}")
    heads_to_train(dataset, options.heads)  # a named head that cannot be trained, or none at all, before any photo is read
    detector = detector_for(options.backbone, options.imgsz)
    if is_neck(options.backbone) and neck_id(detector.model_id) != options.backbone:
        raise ValueError(f"--backbone {options.backbone}: the detector loaded is {detector.model_id}")
    from pipelines.verifier.synth import slip_font

    font = slip_font() if options.synth else None
    if options.synth and font is None:
        raise ValueError("--synth needs a font with Chinese glyphs (Debian: fonts-noto-cjk, scripts/install-system-deps.sh)")
    feats = extract(dataset, options.backbone, detector, options.tiles, cache, synth=options.synth, seed=options.seed,
                    font=font, progress=progress and (lambda i, n, cached: progress(f"features {i}/{n} ({cached} cached)")))
    return detector, feats


def train_heads(dataset: Dataset, feats: Features, options: TrainOptions, progress=None, *, within: np.ndarray | None = None,
                nested: bool = True) -> tuple[dict[str, HeadResult], dict[str, float]]:
    """Every head (on the photos in `within`, when given) and the heads refused by `ships` (their types
    stay with the detector's classes), with their validation F1."""
    grid = _grid(options.tiles)
    sources = np.array([p.source for p in dataset.photos])
    groups = np.array([p.group for p in dataset.photos])
    inside = np.ones(len(dataset.photos), bool) if within is None else np.isin(np.arange(len(dataset.photos)), within)
    results: dict[str, HeadResult] = {}
    refused: dict[str, float] = {}
    for name in heads_to_train(dataset, options.heads, warn=False):  # `features` warned of the others
        trainer = head_trainer(name, dataset, feats, grid, options)
        log.info("training head %s", name)
        r = results[name] = train_head(trainer, dataset, name, options.folds, options.seed, progress, within=within, nested=nested)
        y = dataset.labels(name)
        m = (y >= 0) & inside  # labelled for it, in `within`
        found = r.oof_found[m] if nested else r.oof_scores[m] >= r.threshold_logit
        head = figures(found, r.oof_scores[m], y[m], sources[m], groups[m], 0)["all"]
        rules = rule_verdicts(feats, name)[m]
        if not ships(head, figures(rules, rules.astype(float), y[m], sources[m], groups[m], 0)["all"]):
            refused[name] = head["F1"]
            log.warning("head %s: validation F1 %.3f < %.2f and no better than today's rules: not shipped (its types stay with "
                        "the detector's classes)", name, head["F1"], MIN_SHIP_F1)
    return results, refused


def head_trainer(name: str, dataset: Dataset, feats: Features, grid: np.ndarray, options: TrainOptions):
    """The trainer of head `name`: the parking head's two parts, a tiles head with an object part
    (`OBJECT_PART_HEADS`), or a tiles head."""
    if name == PARKING:
        return parking_head(dataset, feats, grid, options.c_for(name), options.seed)
    if name in OBJECT_PART_HEADS and len(feats.objects):
        return tiles_objects_head(name, dataset, feats, grid, options.c_for(name), options.seed)
    return TileHead(name, dataset, feats, grid, options.c_for(name), options.seed)


def ships(head: dict, rules: dict) -> bool:
    """Whether a head replaces today's detector rules for its types: when its validation F1 reaches
    `MIN_SHIP_F1`, or when it beats rules that do make findings on both F1 and precision.

    Why the second way: a refused head hands its types back to those rules, and for parking they flag
    every vehicle of a photo without zones (precision 0.05 on `street-scenes`). A parking head at F1
    0.13 in one cross-validation fold was refused that way and its photos judged by the rules; it was
    still four times as precise. Rules that find nothing (garbage) leave a weak head refused."""
    if head["F1"] >= MIN_SHIP_F1:
        return True
    return rules["tp"] + rules["fp"] > 0 and head["F1"] > rules["F1"] and head["P"] > rules["P"]


def rule_verdicts(feats: Features, name: str) -> np.ndarray:
    """Per photo: whether today's detector-only rules find a type of head `name` in it."""
    return finds(feats.rules_found, name)


def finds(found: list, name: str) -> np.ndarray:
    """Per photo: whether its found violation types include a type of head `name` (`RULE_TYPES`)."""
    types = set(RULE_TYPES[name])
    return np.array([bool(set(f) & types) for f in found], dtype=bool)


def head_arrays(results: dict[str, HeadResult], refused: dict[str, float]) -> tuple[dict[str, HeadSpec], dict[str, np.ndarray]]:
    """The card's head specs and the weights file's arrays of the heads that ship."""
    specs, arrays = {}, {}
    for name, r in results.items():
        if name in refused:
            continue
        types = PARKING_TYPES if name == PARKING else {name: []}
        model, scene, objects = r.model, None, None
        if isinstance(r.model, SummedModel) and name == PARKING:
            model, scene = r.model.main, r.model.added  # vehicles, plus the scene's best tile
        elif isinstance(r.model, SummedModel):
            model, objects = r.model.main, r.model.added  # tiles, plus the best stall-like object
            types = {name: list(OBJECT_PART_CLASSES)}
        for type_id, classes in types.items():
            specs[type_id] = HeadSpec(
                region="objects" if name == PARKING else "tiles", classes=classes,
                feature_classes=list(VEHICLE_CLASSES) if name == PARKING else list(classes), intercept=model.intercept,
                calibration=r.calibration, threshold=round(r.threshold, 4),
                ocr_gate=round(r.ocr_gate, 4) if r.ocr_gate is not None else None,
                scene_intercept=scene.intercept if scene is not None else None,
                object_intercept=objects.intercept if objects is not None else None,
                object_floor=float(r.model.floor) if objects is not None else None)
            arrays.update({f"{type_id}/mean": model.mean, f"{type_id}/scale": model.scale, f"{type_id}/coef": model.coef})
            for part, m in (("scene", scene), ("object", objects)):
                if m is not None:
                    arrays.update({f"{type_id}/{part}_mean": m.mean, f"{type_id}/{part}_scale": m.scale, f"{type_id}/{part}_coef": m.coef})
    return specs, arrays


def _grid(tiles):
    from pipelines.verifier.train import tile_grid

    return tile_grid(tiles)


def _card(dataset: Dataset, feats: Features, results: dict[str, HeadResult], options: TrainOptions,
          refused: dict[str, float]) -> tuple[HeadsCard, dict]:
    sources = np.array([p.source for p in dataset.photos])
    groups = np.array([p.group for p in dataset.photos])
    metrics = {}
    for name, r in results.items():
        y = dataset.labels(name)
        m = y >= 0  # photos labelled for this head
        rules = rule_verdicts(feats, name)
        metrics[name] = {
            "verifier": figures(r.oof_found[m], r.oof_scores[m], y[m], sources[m], groups[m], options.bootstrap, options.seed),
            "rules_today": figures(rules[m], rules[m].astype(float), y[m], sources[m], groups[m], 0),
            "operating_points": operating_points(r, y, m, sources, groups),
        }
    specs, arrays = head_arrays(results, refused)
    dim = feats.tiles.shape[2]
    command = "streetwatch verifier train " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else ""
    card = HeadsCard(
        id=options.verifier_id, backbone=options.backbone, feature_dim=dim, imgsz=options.imgsz, tiles=options.tiles,
        weights=f"{options.verifier_id}.npz", heads=specs,
        dataset={"root": dataset.name, "labels_sha256": dataset.digest, **dataset.counts(),
                 "synthetic_small_ads": int(len(feats.synth_base)), "vehicles": int(len(feats.vehicles)), "notes": dataset.notes},
        metrics=metrics,
        command=command,
        notes=(f"Validation: {options.folds}-fold group split (each fold's threshold from an inner group split of its training part); "
               f"{options.c_text}; parking head shared by illegal_parking (car, truck, bus) and nonmotor_parking (motorcycle, bicycle) "
               f"over {', '.join(VEHICLE_CLASSES)}, plus its scene part over the tiles; figures on real photos only (synthetic small ads train flyposting, never validate)."),
    )
    if refused:
        card.notes += f" Not shipped (validation F1 below {MIN_SHIP_F1}, no better than today's rules): " + ", ".join(f"{k} ({v:.2f})" for k, v in refused.items()) + "."
    parking_dim = feats.vehicles.shape[1] if len(feats.vehicles) else None
    if parking_dim is not None and any(s.region == "objects" for s in specs.values()):
        card.notes += f" Object heads read {parking_dim} features (see detect.verifier.object_features)."
    return card, arrays
