"""How the verifier heads' verdicts hold on degraded pictures: night infrared, camera substreams, messaging apps.

The heads are trained on daylight colour photos of 375-960 px; cameras judge zones at night in infrared,
often over a D1 substream, and inspectors forward photos through messaging apps. This benchmark makes
degraded copies of the labelled photos (`VARIANTS`, deterministic), extracts their features with the
extractor and per-photo cache of `verifier train` (pipelines.verifier.features.extract), and for every
head trains exactly as `verifier train` does (pipelines.verifier.train.train_head: the card's group
folds, each fold's threshold from its inner split) on the ORIGINAL photos. Each held-out photo is then
scored twice by its fold's head and threshold: as it is, and its degraded copy. Per type, variant and
source: AP, F1, photos found and false findings, original -> degraded, and how many verdicts flip; per
fold, AP original -> degraded (the split's own noise, to read the differences against).

The sticker gallery (`--gallery`, close-ups cameras do not see) is not degraded: figures are on the
other photos. Flyposting is judged by its look and threshold alone (the OCR gate is not run).

`--augment VARIANT` tries one remedy in the same run: each fold's heads are trained again with the
degraded copies of that fold's training photos added as extra photos of their groups (a validation
photo's copy never trains), and the held-out photos are scored again, original and degraded.

    python -m benchmarks.verifier_robustness --data ../shared/datasets/street-scenes \\
        --cache .cache/verifier --out benchmarks/results/verifier-robustness-street-v7-DATE.json
    python -m benchmarks.verifier_robustness --limit 40 --variants night-ir  # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmarks.environment import environment
from benchmarks.media import shared_datasets
from pipelines.verifier.data import Dataset, load_datasets
from pipelines.verifier.features import Features, extract
from pipelines.verifier.metrics import average_precision, figures, subsets
from pipelines.verifier.options import TrainOptions
from pipelines.verifier.run import features, head_trainer
from pipelines.verifier.train import HeadResult, heads_to_train, tile_grid, train_head

SUBSTREAM_SIDE = 704
"""A D1 substream's width (704 x 576 PAL, 704 x 480 NTSC)."""
SMALL_SIDE = 320


def _long_side(image: Image.Image, side: int) -> Image.Image:
    """`image` scaled down (never up) so that its long side is `side`."""
    scale = side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)


def night_ir(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A camera's night infrared picture: grey (the same value in all three channels, as IR streams are sent), contrast
    halved about mid-grey, Gaussian sensor noise of sigma 6 grey levels; stored losslessly (PNG)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    low = 128 + 0.5 * (grey - 128) + rng.normal(0, 6, grey.shape)
    g = np.clip(np.rint(low), 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([g, g, g])), {"format": "PNG", "compress_level": 1}


def grey(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """Colour removed and nothing else (a black-and-white photo; night-ir without its low contrast and noise): the same
    value in all three channels, stored losslessly (PNG)."""
    g = np.asarray(image.convert("L"))
    return Image.fromarray(np.dstack([g, g, g])), {"format": "PNG", "compress_level": 1}


def substream(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A camera's D1 substream frame: long side at most 704 px, JPEG quality 55 (4:2:0)."""
    return _long_side(image, SUBSTREAM_SIDE), {"format": "JPEG", "quality": 55, "subsampling": "4:2:0"}


def messaging(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A photo forwarded through a messaging app: recompressed at JPEG quality 50 with 4:2:0 chroma subsampling
    (the apps also cap the long side near 1280 px, above every photo here)."""
    return image, {"format": "JPEG", "quality": 50, "subsampling": "4:2:0"}


def small(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A thumbnail-sized picture: long side 320 px, stored losslessly (PNG), so only the size changes."""
    return _long_side(image, SMALL_SIDE), {"format": "PNG", "compress_level": 1}


VARIANTS: dict[str, Callable[[Image.Image, np.random.Generator], tuple[Image.Image, dict]]] = {
    "night-ir": night_ir, "grey": grey, "substream": substream, "messaging": messaging, "small": small}
SHIPPED_HEADS = ["street_stall", "shopfront_spillover", "flyposting", "parking"]
"""The heads `street-v7` ships (its garbage head, 11 positives, is refused: garbage stays with the detector)."""
SOURCE_NAMES = {"mmj": "travel", "cn2": "Chinese streets"}
"""street-scenes' sources as the record names them; any other source outside the gallery is `other`."""


def degrade(src: Path, variant: str, dest: Path, name: str) -> Path:
    """Write the `variant` copy of photo `src` under `dest` (`name`, the photo's path in its dataset, with the variant's
    suffix) and return its path. The noise is drawn from a generator seeded by the variant and `name`, so every run
    writes the same bytes."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{variant}|{name}".encode()).digest()[:8], "little"))
    with Image.open(src) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")  # upright, as the decoder reads the original
    out, save = VARIANTS[variant](image, rng)
    path = (dest / name).with_suffix(".png" if save["format"] == "PNG" else ".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, **save)
    return path


def degraded_dataset(dataset: Dataset, chosen: np.ndarray, variant: str, work: Path, progress: Callable[[str], None]) -> Dataset:
    """The `variant` copies of the photos `chosen` (indices into `dataset`), with their labels, boxes and groups."""
    photos = []
    for n, i in enumerate(chosen):
        p = dataset.photos[i]
        photos.append(dataclasses.replace(p, path=degrade(p.path, variant, work / variant, p.file), labels=dict(p.labels),
                                          boxes={k: list(v) for k, v in p.boxes.items()}))
        if (n + 1) % 100 == 0 or n + 1 == len(chosen):
            progress(f"{variant}: {n + 1}/{len(chosen)} copies written")
    return Dataset(work / variant, photos, f"{dataset.digest}|{variant}")


def joined(base: Features, extra: list[Features]) -> Features:
    """`base` with the photos of `extra` appended (their vehicles and objects renumbered); composites from `base` only."""
    parts = [base, *extra]
    offsets = np.cumsum([0] + [len(f.tiles) for f in parts])[:-1]
    return Features(
        np.concatenate([f.tiles for f in parts]), np.concatenate([f.vehicles for f in parts]),
        np.concatenate([f.vehicle_photo + o for f, o in zip(parts, offsets)]), np.concatenate([f.vehicle_box for f in parts]),
        np.concatenate([f.vehicle_class for f in parts]), base.synth_tiles, base.synth_base, base.synth_boxes,
        [r for f in parts for r in f.rules_found], np.concatenate([f.objects for f in parts]),
        np.concatenate([f.object_photo + o for f, o in zip(parts, offsets)]), np.concatenate([f.object_box for f in parts]))


class WithCopies:
    """A trainer whose fits add the degraded copies of the photos it is fitted on (`copy_of`: photo -> its copy's
    index, itself where it has none); scores as the trainer does. Copies share their photo's group and fold, so a
    held-out photo's copy never trains its fold's head."""

    def __init__(self, trainer, copy_of: np.ndarray) -> None:
        self.trainer, self.copy_of = trainer, copy_of
        self.y, self.sources = trainer.y, trainer.sources

    def fit(self, idx: np.ndarray):
        return self.trainer.fit(np.union1d(idx, self.copy_of[idx]))

    def scores(self, model, idx: np.ndarray) -> np.ndarray:
        return self.trainer.scores(model, idx)


def judged(trainer, result: HeadResult, copy_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per photo: the fold index that held it out, and its copy's score and verdict by that fold's head and threshold."""
    n = len(copy_of)
    fold, score, found = np.full(n, -1), np.full(n, -np.inf), np.zeros(n, bool)
    for k, f in enumerate(result.folds):
        fold[f.validation] = k
        score[f.validation] = trainer.scores(f.model, copy_of[f.validation])
        found[f.validation] = score[f.validation] >= f.threshold_logit
    return fold, score, found


def compare(dataset: Dataset, name: str, result: HeadResult, scored: tuple, keep: np.ndarray) -> dict:
    """Original against degraded on the held-out photos `keep` (bool per photo): per source the figures of each and the
    verdicts that flip, per fold the AP of each."""
    fold, score, found = scored
    y = dataset.labels(name)
    m = keep & (y >= 0) & (fold >= 0)
    sources = np.array([SOURCE_NAMES.get(p.source, "other") for p in dataset.photos])
    groups = np.array([p.group for p in dataset.photos])
    orig_found, orig_score = result.oof_found[: len(y)], result.oof_scores[: len(y)]
    before = figures(orig_found[m], orig_score[m], y[m], sources[m], groups[m], 0)
    after = figures(found[m], score[m], y[m], sources[m], groups[m], 0)
    was, now, ym = orig_found[m], found[m], y[m]
    out: dict = {"by_source": {}, "folds": []}
    for key, sub in subsets(ym, sources[m]).items():  # the subsets `figures` gave figures for
        out["by_source"][key] = {"original": before[key], "degraded": after[key],
                                 "flips": int((was[sub] != now[sub]).sum()),
                                 "found_lost": int((was[sub] & ~now[sub] & (ym[sub] == 1)).sum()),
                                 "false_added": int((~was[sub] & now[sub] & (ym[sub] == 0)).sum())}
    for k in range(len(result.folds)):
        f = m & (fold == k)
        out["folds"].append({"photos": int(f.sum()), "positives": int((y[f] == 1).sum()),
                             "AP_original": _ap(orig_score[f], y[f]), "AP_degraded": _ap(score[f], y[f])})
    return out


def _ap(scores: np.ndarray, y: np.ndarray) -> float | None:
    ap = average_precision(scores, y)
    return None if ap is None else round(ap, 3)


def summary(heads: dict) -> list[str]:
    """One line per head, variant and source: AP, F1, found and false, original -> degraded, and flips."""
    lines = []
    for training, by_head in heads.items():
        lines.append(f"== heads trained {training}")
        for name, by_variant in by_head.items():
            for variant, c in by_variant.items():
                spread = [f["AP_degraded"] - f["AP_original"] for f in c["folds"] if f["AP_original"] is not None]
                lines.append(f"{name} / {variant}: AP change per fold {', '.join(f'{d:+.3f}' for d in spread)}")
                for source, s in c["by_source"].items():
                    o, d = s["original"], s["degraded"]
                    lines.append(f"  {source:16s} {o['positives']:4d} pos  AP {_f(o['AP'])} -> {_f(d['AP'])}  F1 {o['F1']:.3f} -> "
                                 f"{d['F1']:.3f}  found {o['tp']} -> {d['tp']}  false {o['fp']} -> {d['fp']}  flips {s['flips']}")
    return lines


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    """The whole benchmark; the record `--out` holds."""
    started = time.monotonic()
    dataset = load_datasets([args.data])
    options = TrainOptions(folds=args.folds, synth=args.synth, heads=args.heads)
    detector, feats = features(dataset, options, args.cache, progress)
    outside = np.array([p.source != args.gallery for p in dataset.photos])
    chosen = np.flatnonzero(outside)
    if args.limit:
        chosen = np.sort(np.random.default_rng(0).choice(chosen, min(args.limit, len(chosen)), replace=False))
    timings = {"original features": round(time.monotonic() - started, 1)}
    n, copies, extra, copy_of = len(dataset.photos), [], [], {}
    for variant in args.variants:
        t = time.monotonic()
        copy = degraded_dataset(dataset, chosen, variant, args.work, progress)
        extra.append(extract(copy, options.backbone, detector, options.tiles, args.cache, seed=options.seed,
                             progress=lambda i, total, cached, v=variant: _every(progress, f"{v}: features {i}/{total} ({cached} cached)", i, total)))
        copy_of[variant] = np.arange(n)
        copy_of[variant][chosen] = n + sum(len(c.photos) for c in copies) + np.arange(len(chosen))
        copies.append(copy)
        timings[f"{variant} copies and features"] = round(time.monotonic() - t, 1)
    combined = Dataset(dataset.root, dataset.photos + [p for c in copies for p in c.photos], dataset.digest)
    all_feats = joined(feats, extra)
    keep = np.isin(np.arange(n), chosen)
    grid = tile_grid(options.tiles)
    trainings = {"on the original photos": None} | ({f"with {args.augment} copies of the training photos": args.augment} if args.augment else {})
    heads: dict = {}
    for training, augment in trainings.items():
        heads[training] = {}
        for name in heads_to_train(dataset, options.heads):
            trainer = head_trainer(name, combined, all_feats, grid, options)
            fit = WithCopies(trainer, copy_of[augment]) if augment else trainer
            t = time.monotonic()
            result = train_head(fit, combined, name, options.folds, options.seed, progress, within=np.arange(n))
            heads[training][name] = {v: compare(dataset, name, result, judged(trainer, result, copy_of[v]), keep) for v in args.variants}
            timings[f"{name} {training}"] = round(time.monotonic() - t, 1)
    return {"command": "python -m benchmarks.verifier_robustness " + " ".join(args.argv),
            "environment": environment(),
            "dataset": {"root": str(args.data), "labels_sha256": dataset.digest, "photos": n, "gallery": args.gallery,
                        "degraded": {SOURCE_NAMES.get(s, "other"): int(sum(dataset.photos[i].source == s for i in chosen))
                                     for s in sorted({dataset.photos[i].source for i in chosen})}},
            "options": {"backbone": options.backbone, "imgsz": options.imgsz, "tiles": options.tiles_text, "folds": options.folds,
                        "seed": options.seed, "synth": options.synth, "limit": args.limit},
            "variants": {v: " ".join((VARIANTS[v].__doc__ or "").split()) for v in args.variants},
            "heads": heads, "seconds": timings | {"total": round(time.monotonic() - started, 1)}}


def _every(progress: Callable[[str], None], message: str, i: int, total: int) -> None:
    if i % 50 == 0 or i == total:
        progress(message)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verifier_robustness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_datasets() / "street-scenes", help="the labelled dataset (default street-scenes)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/verifier"),
                        help="the feature cache of `verifier train` (its photos' features are read from there; the copies' are added)")
    parser.add_argument("--work", type=Path, default=Path(".cache/verifier-robustness"), help="where the degraded copies are written")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                        help=f"comma-separated degradations (default all: {','.join(VARIANTS)})")
    parser.add_argument("--limit", type=int, default=0, help="degrade only this many photos (a seeded sample; 0: all outside the gallery)")
    parser.add_argument("--gallery", default="stk", help="the source of close-ups left out of the degraded set (default stk, the stickers)")
    parser.add_argument("--heads", type=lambda s: s.split(","), default=SHIPPED_HEADS,
                        help=f"comma-separated heads (default those the card ships: {','.join(SHIPPED_HEADS)})")
    parser.add_argument("--folds", type=int, default=TrainOptions.folds, help="group folds (default the card's, 5)")
    parser.add_argument("--synth", type=int, default=TrainOptions.synth, help="synthetic small-ad composites (default the card's, 400)")
    parser.add_argument("--augment", choices=list(VARIANTS), help="also train with this variant's copies of each fold's training photos")
    parser.add_argument("--out", type=Path, help="write the record (JSON) here")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants {','.join(unknown)}: no such degradation (known: {', '.join(VARIANTS)})")
    if args.augment and args.augment not in args.variants:
        args.variants.append(args.augment)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    start = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - start:7.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        record = run(args, progress)
    except ValueError as exc:  # DatasetError (a bad --data) and --heads a training cannot fit, named with the reason
        sys.exit(f"python -m benchmarks.verifier_robustness: error: {exc}")
    print("\n".join(summary(record["heads"])))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
        progress(f"record written to {args.out}")


if __name__ == "__main__":
    main()
