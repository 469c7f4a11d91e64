"""Labelling the verifier's close calls (`verifier to-label`) against labelling photos at random.

A simulation on a labelled dataset (default `street-scenes`), with the features `verifier train`
cached: a 5-fold group split; in each fold's training part, a random start of `--start` labelled
photos, then `--rounds` rounds that each label `--batch` more photos, either those `verifier to-label`
picks (`pipelines.verifier.to_label.pick`: closest to the head's threshold, at most 2 of a group) or
as many at random; after each round the head is refitted on what is labelled and its AP measured on
the fold's photos, which no strategy ever labels. Both strategies start from the same photos.
The threshold each round is chosen on the labelled photos' own scores (no nested split: a
simulation of the ranking, not of a card). Prints, per head and round, the mean AP and the
positives labelled so far; `--out` writes every run.

    python -m benchmarks.labelling_strategy [--heads shopfront_spillover,street_stall] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_limits

from benchmarks.media import shared_datasets
from pipelines.triage.record import PhotoRecord, TypeVerdict
from pipelines.verifier.data import group_folds, load_datasets
from pipelines.verifier.options import TrainOptions
from pipelines.verifier.run import features, head_trainer
from pipelines.verifier.to_label import pick
from pipelines.verifier.train import choose_threshold, tile_grid


def _probability(logit: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logit))


def close_calls(head: str, scores: np.ndarray, threshold: float, idx: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """The `n` photos of `idx` that `verifier to-label` would pick for `head`, as records of their scores."""
    p, t = _probability(scores), float(_probability(np.array(threshold)))
    records = [PhotoRecord(source=str(i), sha256=str(i), status="ok", verifier={head: TypeVerdict(p=float(pi), threshold=t)})
               for i, pi in zip(idx, p)]
    return np.array([int(c.record.sha256) for c in pick(records, n, [head], groups={str(i): groups[i] for i in idx})], dtype=int)


def simulate(head: str, dataset, feats, options: TrainOptions, start: int, batch: int, rounds: int, repeats: int) -> list[dict]:
    trainer = head_trainer(head, dataset, feats, tile_grid(options.tiles), options)
    y, sources = trainer.y, trainer.sources
    groups = np.array([p.group for p in dataset.photos])
    runs = []
    for fold, (pool, test) in enumerate(group_folds(dataset, head, options.folds, options.seed)):
        for repeat in range(repeats):
            first = np.random.default_rng(100 * fold + repeat).choice(pool, start, replace=False)
            for strategy in ("random", "close calls"):
                rng = np.random.default_rng(7 + 100 * fold + repeat)
                labelled = np.sort(first)
                for round_ in range(rounds + 1):
                    model = trainer.fit(labelled)
                    ap = average_precision_score(y[test], trainer.scores(model, test))
                    runs.append({"head": head, "fold": fold, "repeat": repeat, "strategy": strategy, "round": round_,
                                 "labelled": len(labelled), "positives": int(y[labelled].sum()), "ap": round(float(ap), 4)})
                    if round_ == rounds:
                        break
                    rest = np.setdiff1d(pool, labelled)
                    if strategy == "random":
                        added = rng.choice(rest, batch, replace=False)
                    else:
                        threshold = choose_threshold(trainer.scores(model, labelled), y[labelled], sources[labelled], 1.0)
                        added = close_calls(head, trainer.scores(model, rest), threshold, rest, groups, batch)
                    labelled = np.union1d(labelled, added)
    return runs


def summary(runs: list[dict]) -> list[str]:
    by = defaultdict(list)
    for r in runs:
        by[(r["head"], r["round"], r["strategy"])].append(r)
    lines = []
    for head in dict.fromkeys(r["head"] for r in runs):
        lines.append(f"{head}: AP on the held-out fold (positives labelled), random -> close calls")
        for round_ in sorted({r["round"] for r in runs if r["head"] == head}):
            a, b = by[(head, round_, "random")], by[(head, round_, "close calls")]
            gain = np.array([y["ap"] - x["ap"] for x, y in zip(a, b)])
            lines.append(f"  {np.mean([x['labelled'] for x in a]):5.0f} labelled: {np.mean([x['ap'] for x in a]):.3f} "
                         f"({np.mean([x['positives'] for x in a]):.0f}) -> {np.mean([x['ap'] for x in b]):.3f} "
                         f"({np.mean([x['positives'] for x in b]):.0f}); close calls better in {int((gain > 0).sum())} of {len(gain)} runs")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_datasets() / "street-scenes")
    parser.add_argument("--heads", default="shopfront_spillover,street_stall")
    parser.add_argument("--start", type=int, default=300, help="photos labelled at random before the first round")
    parser.add_argument("--batch", type=int, default=150, help="photos labelled per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="random starts per fold")
    parser.add_argument("--cache", type=Path, default=Path(".cache/verifier"), help="the feature cache of `verifier train`")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    dataset = load_datasets([args.data])
    options = TrainOptions()
    _, feats = features(dataset, options, args.cache)
    runs = []
    with threadpool_limits(limits=1):  # as `verifier train` fits
        for head in args.heads.split(","):
            runs += simulate(head, dataset, feats, options, args.start, args.batch, args.rounds, args.repeats)
    lines = summary(runs)
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"command": "python -m benchmarks.labelling_strategy " + " ".join(sys.argv[1:] if argv is None else argv),
                                        "dataset": dataset.digest, "summary": lines, "runs": runs}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
