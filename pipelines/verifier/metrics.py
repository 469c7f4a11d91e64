"""Validation figures per source: precision, recall, F1, AP and 95 % intervals by group bootstrap.

Few positives (a few dozen stalls, under thirty parked cars) make single figures fragile, so each
comes with an interval: groups (a place and day) are resampled with replacement 1,000 times and the
2.5th and 97.5th percentiles reported. Figures are given per source (travel photos, sticker gallery,
Chinese streets ...), for all photos, and without the source that holds most positives, since a
head can score well by learning one gallery's look.
"""

from __future__ import annotations

import numpy as np


def prf(found: np.ndarray, y: np.ndarray) -> tuple[float, float, float, int, int, int]:
    tp = int((found & (y == 1)).sum())
    fp = int((found & (y == 0)).sum())
    fn = int(((~found) & (y == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, tp, fp, fn


def average_precision(scores: np.ndarray, y: np.ndarray) -> float | None:
    if y.sum() == 0:
        return None
    from sklearn.metrics import average_precision_score

    s = np.where(np.isfinite(scores), scores, -1e9)
    return float(average_precision_score(y, s))


def _bootstrap(found, y, groups, n, seed) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    ps, rs, fs = [], [], []
    for _ in range(n):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        p, r, f, *_ = prf(found[pick], y[pick])
        ps.append(p)
        rs.append(r)
        fs.append(f)
    return {k: [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)] for k, v in (("P", ps), ("R", rs), ("F1", fs))}


def subsets(y: np.ndarray, sources: np.ndarray) -> dict[str, np.ndarray]:
    """The photos each figure is given for (a mask per name): `all`, every source, and `all-but-<source with most
    positives>`."""
    masks: dict[str, np.ndarray] = {"all": np.ones(len(y), bool)}
    for s in np.unique(sources):
        masks[str(s)] = sources == s
    pos = {s: int(y[m].sum()) for s, m in masks.items() if s != "all"}
    if len(pos) > 1:
        top = max(pos, key=pos.get)
        masks[f"all-but-{top}"] = sources != top
    return masks


def figures(found: np.ndarray, scores: np.ndarray, y: np.ndarray, sources: np.ndarray, groups: np.ndarray,
            boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Figures for every subset of `subsets`."""
    out = {}
    for name, m in subsets(y, sources).items():
        p, r, f, tp, fp, fn = prf(found[m], y[m])
        ap = average_precision(scores[m], y[m])
        entry = {"P": round(p, 3), "R": round(r, 3), "F1": round(f, 3), "AP": None if ap is None else round(ap, 3),
                 "tp": tp, "fp": fp, "fn": fn, "photos": int(m.sum()), "positives": int(y[m].sum())}
        if y[m].sum() and boot:
            entry["ci95"] = _bootstrap(found[m], y[m], groups[m], boot, seed)
        out[name] = entry
    return out
