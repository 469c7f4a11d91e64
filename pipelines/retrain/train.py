"""`streetwatch train`: fine-tune a checkpoint on a dataset version with Ultralytics' own trainer.

We add what Ultralytics does not know about: the dataset must pass `data check` and be split,
the run folder records the dataset digest next to Ultralytics' config (args.yaml), metrics
(results.csv) and curves (*.png), and the best weights are registered under a model id with a
card naming the data, the base model and the training settings. Training stays offline-safe
(`prepare_ultralytics_env` before the first ultralytics import; no AMP check download on CPU).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from detect.registry import MODEL_ID, ModelCard, get_card, id_taken, path_model_id, registry_dir, resolve_weights, runs_dir, save_card
from detect.digests import sha256_file
from pipelines.retrain.check import check_dataset
from pipelines.retrain.dataset import Dataset, DatasetError

_ID = re.compile(MODEL_ID)


@dataclass
class TrainResult:
    model_id: str
    run_dir: Path
    weights: Path
    card: ModelCard
    metrics: dict


def ensure_trainable(dataset: Dataset, allow_check_failures: bool = False) -> None:
    """Refuse datasets that fail `data check` (unless allowed) or have no train/val split."""
    report = check_dataset(dataset)
    if not report.ok and not allow_check_failures:
        first = "\n  ".join(str(f) for f in report.errors[:10])
        raise DatasetError(f"{report.summary()}\n  {first}\nfix it, or pass --allow-check-failures to train anyway")
    if not dataset.files("train") or not dataset.files("val"):
        raise DatasetError(f"{dataset.root}: needs a train/val split: run `streetwatch data split {dataset.root} --out DIR`")


def ensure_new_model_id(model_id: str) -> None:
    """Refuse an id another model answers to (`id_taken`), before any training: the new card would replace an export's
    card or shadow a shipped card, a release name or the promoted id, so `--model ID` and the pipelines' default would
    load weights nobody evaluated. The error names that model and suggests a free id."""
    reason = id_taken(model_id)
    if reason:
        free = next(c for c in (f"{model_id}-ft{n if n > 1 else ''}" for n in itertools.count(1)) if not id_taken(c))
        raise ValueError(f"--name {model_id}: {reason}: choose another --name, e.g. {free}")


def train_model(
    dataset: Dataset,
    base: str,
    *,
    model_id: str,
    epochs: int = 50,
    imgsz: int = 640,
    device: str = "cpu",
    batch: int = 16,
    workers: int = 0,
    patience: int = 50,
    seed: int = 0,
    hours: float | None = None,
    allow_check_failures: bool = False,
    extra: dict | None = None,
) -> TrainResult:
    """Fine-tune `base` (model id or .pt) on `dataset` and register the best weights as `model_id`.

    `hours`: wall-clock budget; Ultralytics then fits the number of epochs to it after the first
    epoch and stops when it is spent (how a nightly job bounds its run).
    """
    if not _ID.match(model_id):
        raise ValueError(f"model id {model_id!r}: use letters, digits, '.', '_' and '-' only")
    if imgsz <= 0 or imgsz % 32:
        raise ValueError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    ensure_new_model_id(model_id)
    target = registry_dir().parent / f"{model_id}.pt"
    run_dir = runs_dir() / model_id
    ensure_trainable(dataset, allow_check_failures)
    weights, base_card = resolve_weights(base)
    base_id = base_card.id if base_card else path_model_id(weights)  # by content: every run's weights are best.pt
    data_yaml = dataset.ultralytics_yaml(run_dir / "data.yaml")

    from detect.runtime_env import import_yolo

    YOLO = import_yolo()
    import torch
    import ultralytics

    settings = dict(epochs=epochs, imgsz=imgsz, device=device, batch=batch, workers=workers, patience=patience,
                    seed=seed, amp=not device.startswith("cpu"), plots=True, **({"time": hours} if hours else {}),
                    **(extra or {}))
    started = time.monotonic()
    model = YOLO(str(weights), task="detect")
    model.train(data=str(data_yaml), project=str(run_dir.parent), name=run_dir.name, exist_ok=True, verbose=False,
                **settings)
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    shutil.copyfile(best, target)
    metrics = {k: round(float(v), 5) for k, v in (trainer.metrics or {}).items()}
    training = {
        "base": base_id,
        "base_sha256": sha256_file(weights),
        **{k: v for k, v in settings.items() if k != "plots"},
        "run_dir": str(run_dir),
        "epochs_run": int(trainer.epoch) + 1,
        "seconds": round(time.monotonic() - started, 1),
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
    }
    card = ModelCard(
        id=model_id,
        format="pt",
        files=[target.name],
        source=f"fine-tuned from {base_id} on dataset {dataset.name} ({dataset.digest[:12]})",
        license=base_card.license if base_card else "AGPL-3.0",
        imgsz=imgsz,
        classes=list(dataset.classes),
        sha256={target.name: sha256_file(target)},
        exported_from=base_id,
        metrics={"train_final_val": metrics},
        dataset=dataset_record(dataset),
        training=training,
        created=datetime.now(timezone.utc),
    )
    save_card(card)
    (run_dir / "streetwatch.json").write_text(json.dumps({"model_id": model_id, "dataset": card.dataset, "training": training,
                                                          "final_val": metrics}, indent=1))
    return TrainResult(model_id, run_dir, target, card, metrics)


def dataset_record(dataset: Dataset) -> dict:
    """What a model card says about its training data."""
    counts = dataset.manifest.counts
    return {
        "name": dataset.name,
        "digest": dataset.digest,
        "path": str(dataset.root.resolve()),
        "classes": list(dataset.classes),
        "images": counts.get("images"),
        "boxes": counts.get("boxes"),
        "splits": {s: {"images": v["images"], "boxes": v["boxes"]} for s, v in counts.get("splits", {}).items()},
    }


def update_card(model_id: str, **fields) -> ModelCard:
    """Merge `fields` into a registered card (dicts are merged one level deep) and save it."""
    card = get_card(model_id)
    update = {k: {**(getattr(card, k) or {}), **v} if isinstance(v, dict) else v for k, v in fields.items()}
    card = card.model_copy(update=update)
    save_card(card)
    return card
