"""`data split`: train/val by group (camera, location, source photo), stratified by class.

A split that puts neighbouring shots of one street on both sides measures memory, not
generalisation, so whole groups go to one side; pictures that are near-identical (perceptual
hash, the same test `data check` applies) join one group first, whatever their names say.
Within that constraint groups are placed by iterative stratification so every class lands in
val in about the asked proportion. Seeded: same dataset and seed, same split (and digest).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from pipelines.retrain.check import NEAR_DUPLICATE_BITS, image_phash
from pipelines.retrain.dataset import Dataset, DatasetError, derive, write_dataset
from pipelines.retrain.importers import group_of


def assign_groups(groups: dict[str, Counter], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """group -> "train"/"val"; `groups`: group -> Counter of images per class id plus "all".

    Iterative stratification over groups (after Sechidis et al., 2011): groups holding the
    rarest class go first (larger groups before smaller ones, which then even out the
    proportions), each to the side that still wants most of that class; a class with
    several groups never ends up with none in val (nothing could be measured for it).
    """
    if not 0 < val_fraction < 1:
        raise DatasetError(f"--val must be between 0 and 1, got {val_fraction}")
    if len(groups) < 2:
        raise DatasetError(f"cannot split {len(groups)} group(s) into train and val: "
                           "every group stays on one side (use a finer --group-regex?)")
    totals: Counter = sum(groups.values(), Counter())
    n_groups = Counter(c for g in groups.values() for c in g)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    rarest = {g: min((c for c in groups[g] if c != "all"), key=lambda c: (totals[c], str(c)), default="all") for g in order}
    order.sort(key=lambda g: (totals[rarest[g]], -groups[g]["all"]))  # big groups first, small ones fill up
    want = {"train": 1 - val_fraction, "val": val_fraction}
    have = {side: Counter() for side in want}
    out = {}
    for g in order:
        c = rarest[g]

        def score(side: str) -> tuple:
            starved = have[side][c] == 0 and n_groups[c] > 1 and any(have[o][c] for o in want if o != side)
            return (starved, want[side] * totals[c] - have[side][c], want[side] * totals["all"] - have[side]["all"])

        side = max(want, key=score)
        out[g] = side
        have[side].update(groups[g])
    if "val" not in out.values():  # tiny datasets: make sure both sides exist
        out[order[-1]] = "val"
    if "train" not in out.values():
        out[order[0]] = "train"
    return out


def near_duplicate_groups(dataset: Dataset, groups: dict[str, str], bits: int = NEAR_DUPLICATE_BITS) -> dict[str, str]:
    """`groups` (image -> group) with the groups of near-identical pictures joined into one, named after the first
    of its groups by name (scipy's `connected_components` over the groups, as triage's cases)."""
    names = [f.image for f in dataset.files()]
    hashes = {n: h for n in names if (h := image_phash(dataset.path(n))) is not None}
    ordered = sorted(set(groups.values()))
    index = {g: k for k, g in enumerate(ordered)}
    rows, cols = [], []  # the groups of near-identical pictures
    keyed = [n for n in names if n in hashes]
    if keyed:
        matrix = np.stack([hashes[n] for n in keyed])
        for i, n in enumerate(keyed):
            for j in np.flatnonzero((matrix[i + 1:] != matrix[i]).sum(axis=1) <= bits) + i + 1:
                rows.append(index[groups[n]])
                cols.append(index[groups[keyed[j]]])
    joined = coo_array((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(ordered), len(ordered)))
    labels = connected_components(joined, directed=False)[1]
    first: dict[int, str] = {}
    for g, label in zip(ordered, labels, strict=True):
        first.setdefault(int(label), g)
    return {n: first[int(labels[index[g]])] for n, g in groups.items()}


def split_dataset(dataset: Dataset, out: Path, *, val_fraction: float = 0.2, seed: int = 0,
                  group_regex: str | None = None, name: str | None = None) -> Dataset:
    """A new version of `dataset` with every file assigned to train or val (groups kept whole)."""
    files = dataset.files()
    groups = {f.image: group_of(f.image, group_regex) if group_regex else f.group for f in files}
    groups = near_duplicate_groups(dataset, groups)
    per_group: dict[str, Counter] = defaultdict(Counter)
    for f in files:
        per_group[groups[f.image]].update(["all", *set(dataset.labels(f).boxes[:, 0].astype(int).tolist())])
    sides = assign_groups(per_group, val_fraction, seed)
    items = [derive(dataset, f, split=sides[groups[f.image]], group=groups[f.image]) for f in files]
    how = f"split {dataset.name} val={val_fraction} seed={seed}" + (f" group_regex={group_regex}" if group_regex else "")
    return write_dataset(out, items, dataset.classes, name=name or dataset.name, source=how,
                         parents=[dataset.digest], link=True)
