"""Training the verifier heads: group-split validation, per-source figures, thresholds, calibration.

For every head, photos are split 5 ways by `group` (a place and day stays on one side). Each fold's
heads are trained on the other four, and their threshold is chosen by a second, inner group split
of those four alone, so every validation figure comes from photos the heads and their threshold
never saw. The shipped heads are then trained on all photos; their calibration (Platt scaling) and
threshold come from the out-of-fold scores.

- Tile heads (stalls, spillover, postings, garbage): a tile of a photo with boxes is positive when
  a box of the type covers half of it or half of the box lies in it, negative when no box touches
  it; every tile of a negative photo is negative. A positive photo without boxes trains through its
  best tile (multiple instance: first the whole image, then the tile the first model liked best).
  Positives are weighted so that no source dominates (1 / sqrt of its positive count), and the
  synthetic small-ad composites train flyposting only, with the folds of their base photo.
- The parking head judges vehicles: a vehicle in a parking-positive photo with boxes is positive
  when a parking box covers 30 % of it; in a photo without any parking label, negative.
- Thresholds maximise the mean F-score over the sources with at least 5 positives (F1; F0.5 for
  parking, which must not flood a city with false cases when a photo has no zones).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detect.verifier.pooling import tile_boxes
from detect.verifier.verifier import WHOLE
from pipelines.verifier.data import PARKING, Dataset, group_folds
from pipelines.verifier.features import VEHICLE_CLASSES, Features

log = logging.getLogger(__name__)

TILE_HEADS = ("street_stall", "shopfront_spillover", "flyposting", "exposed_garbage")
PARKING_TYPES = {"illegal_parking": ["car", "truck", "bus"], "nonmotor_parking": ["motorcycle", "bicycle"]}
MIN_POSITIVES = 8
MIN_SOURCE_POSITIVES = 5


@dataclass
class Model:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float) -> Model:
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=1000, tol=1e-4, class_weight="balanced")
    clf.fit((x - mean) / scale, y, sample_weight=w)
    return Model(mean.astype(np.float32), scale.astype(np.float32), clf.coef_[0].astype(np.float32), float(clf.intercept_[0]))


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def tile_labels(grid: np.ndarray, positive: bool, boxes: list | None) -> np.ndarray:
    """+1 / 0 / -1 (ignore) per tile; -2 marks a positive photo without boxes (multiple instance)."""
    if not positive:
        return np.zeros(len(grid), int)
    if not boxes:
        return np.full(len(grid), -2)
    out = np.full(len(grid), -1)
    for j, tile in enumerate(grid):
        area_t = (tile[2] - tile[0]) * (tile[3] - tile[1])
        best = max(max(_overlap(tile, b) / ((b[2] - b[0]) * (b[3] - b[1])), _overlap(tile, b) / area_t) for b in boxes)
        touch = max(_overlap(tile, b) / area_t for b in boxes)
        if best >= 0.5:
            out[j] = 1
        elif touch < 0.02:
            out[j] = 0
    return out


class TileHead:
    """Training rows of one tiles head over a dataset's features."""

    def __init__(self, head: str, dataset: Dataset, feats: Features, grid: np.ndarray, c: float) -> None:
        self.head, self.feats, self.c = head, feats, c
        self.y = dataset.labels(head)
        self.sources = np.array([p.source for p in dataset.photos])
        self.labels = np.stack([tile_labels(grid, bool(self.y[i]), p.boxes.get(head)) for i, p in enumerate(dataset.photos)])
        self.synth = head == "flyposting" and len(feats.synth_tiles) > 0
        if self.synth:
            self.synth_labels = np.stack([tile_labels(grid, True, b) for b in feats.synth_boxes])

    def fit(self, idx: np.ndarray) -> Model:
        labels = self.labels[idx].copy()
        mil = np.flatnonzero(labels[:, 0] == -2)
        labels[labels == -2] = -1
        labels[mil, -1] = 1  # seed: the whole image of a positive photo without boxes
        model = self._fit(idx, labels)
        if len(mil):
            x = self.feats.tiles[idx[mil]]
            best = np.argmax(model.logits(x.reshape(-1, x.shape[-1])).reshape(x.shape[:2]), axis=1)
            labels[mil] = -1
            labels[mil, best] = 1
            model = self._fit(idx, labels)
        return model

    def _fit(self, idx: np.ndarray, labels: np.ndarray) -> Model:
        keep = labels >= 0
        rows = self.feats.tiles[idx][keep]
        ys = labels[keep]
        src = np.repeat(self.sources[idx][:, None], labels.shape[1], 1)[keep]
        if self.synth:
            s = np.isin(self.feats.synth_base, idx)
            sl = self.synth_labels[s]
            sk = sl >= 0
            rows = np.vstack([rows, self.feats.synth_tiles[s][sk]])
            ys = np.concatenate([ys, sl[sk]])
            src = np.concatenate([src, np.full(int(sk.sum()), "synthetic")])
        weights = np.ones(len(ys))
        pos_src, counts = np.unique(src[ys == 1], return_counts=True)
        for s, n in zip(pos_src, counts):
            weights[(ys == 1) & (src == s)] = 1.0 / np.sqrt(n)
        weights[ys == 1] *= (ys == 1).sum() / weights[ys == 1].sum()  # keep the positives' total
        return fit_logistic(rows, ys, weights, self.c)

    def scores(self, model: Model, idx: np.ndarray) -> np.ndarray:
        x = self.feats.tiles[idx]
        return model.logits(x.reshape(-1, x.shape[-1])).reshape(x.shape[:2]).max(axis=1)


class VehicleHead:
    """Training rows of the parking head: one per detected vehicle."""

    def __init__(self, dataset: Dataset, feats: Features, c: float) -> None:
        self.feats, self.c = feats, c
        self.y = dataset.labels(PARKING)
        self.sources = np.array([p.source for p in dataset.photos])
        n = len(feats.vehicles)
        self.labels = np.zeros(n, int)
        for k in range(n):
            i = feats.vehicle_photo[k]
            if not self.y[i]:
                continue
            boxes = dataset.photos[i].boxes.get(PARKING)
            if not boxes:
                self.labels[k] = -2
                continue
            b = feats.vehicle_box[k]
            cover = max(_overlap(b, q) for q in boxes) / max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)
            self.labels[k] = 1 if cover >= 0.3 else -1

    def fit(self, idx: np.ndarray) -> Model:
        m = np.isin(self.feats.vehicle_photo, idx)
        keep = m & (self.labels >= 0)
        x, y = self.feats.vehicles[keep], self.labels[keep]
        model = fit_logistic(x, y, np.ones(len(y)), self.c)
        mil = m & (self.labels == -2)
        if mil.any():
            s = model.logits(self.feats.vehicles)
            add = []
            for i in np.unique(self.feats.vehicle_photo[mil]):
                j = np.flatnonzero(self.feats.vehicle_photo == i)
                add.append(j[np.argmax(s[j])])
            x = np.vstack([x, self.feats.vehicles[add]])
            y = np.concatenate([y, np.ones(len(add), int)])
            model = fit_logistic(x, y, np.ones(len(y)), self.c)
        return model

    def scores(self, model: Model, idx: np.ndarray) -> np.ndarray:
        """Image score: its best vehicle (photos without vehicles: -inf, never found)."""
        out = np.full(len(idx), -np.inf)
        pos = {int(i): k for k, i in enumerate(idx)}
        m = np.isin(self.feats.vehicle_photo, idx)
        for i, s in zip(self.feats.vehicle_photo[m], model.logits(self.feats.vehicles[m])):
            out[pos[int(i)]] = max(out[pos[int(i)]], s)
        return out


def choose_threshold(scores: np.ndarray, y: np.ndarray, sources: np.ndarray, beta: float) -> float:
    """The score threshold maximising the mean F-beta over sources with enough positives."""
    usable = [s for s in np.unique(sources) if y[sources == s].sum() >= MIN_SOURCE_POSITIVES] or list(np.unique(sources))
    candidates = np.unique(scores[np.isfinite(scores) & (y == 1)])
    best, best_th = -1.0, np.inf
    b2 = beta * beta
    for th in candidates:
        fs = []
        for s in usable:
            m = sources == s
            p = scores[m] >= th
            tp = (p & (y[m] == 1)).sum()
            fp = (p & (y[m] == 0)).sum()
            fn = ((~p) & (y[m] == 1)).sum()
            fs.append((1 + b2) * tp / max(1, (1 + b2) * tp + b2 * fn + fp))
        if np.mean(fs) > best:
            best, best_th = float(np.mean(fs)), float(th)
    return best_th


def platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    ok = np.isfinite(scores)
    clf = LogisticRegression(C=1e4).fit(scores[ok, None], y[ok])
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


@dataclass
class HeadResult:
    name: str
    model: Model
    threshold_logit: float
    calibration: tuple[float, float]
    oof_scores: np.ndarray  # validation (out-of-fold) logits per photo
    oof_found: np.ndarray  # validation verdicts (fold thresholds)

    @property
    def threshold(self) -> float:
        a, b = self.calibration
        return float(1.0 / (1.0 + np.exp(-(a * self.threshold_logit + b))))


def train_head(trainer: TileHead | VehicleHead, dataset: Dataset, name: str, folds: int, seed: int,
               progress: Callable[[str], None] | None = None) -> HeadResult:
    y = trainer.y
    sources = trainer.sources
    beta = 0.5 if name == PARKING else 1.0
    oof = np.zeros(len(y))
    found = np.zeros(len(y), bool)
    outer = group_folds(dataset, name, folds, seed)
    for k, (tr, te) in enumerate(outer):
        inner_scores = np.zeros(len(tr))
        sub = _subset(dataset, tr)
        for itr, ite in group_folds(sub, name, folds - 1, seed + 1):
            inner_scores[ite] = trainer.scores(trainer.fit(tr[itr]), tr[ite])
        th = choose_threshold(inner_scores, y[tr], sources[tr], beta)
        s = trainer.scores(trainer.fit(tr), te)
        oof[te] = s
        found[te] = s >= th
        if progress:
            progress(f"{name}: fold {k + 1}/{folds}")
    model = trainer.fit(np.arange(len(y)))
    th = choose_threshold(oof, y, sources, beta)
    return HeadResult(name, model, th, platt(oof, y), oof, found)


def _subset(dataset: Dataset, idx: np.ndarray) -> Dataset:
    return Dataset(dataset.root, [dataset.photos[i] for i in idx], dataset.digest)


def tile_grid(tiles: tuple[int, int]) -> np.ndarray:
    return np.vstack([tile_boxes(*tiles), WHOLE])


def heads_to_train(dataset: Dataset) -> list[str]:
    heads = []
    for h in (*TILE_HEADS, PARKING):
        n = int(dataset.labels(h).sum())
        if n >= MIN_POSITIVES:
            heads.append(h)
        else:
            log.warning("head %s: only %d positive photos (at least %d needed): not trained", h, n, MIN_POSITIVES)
    return heads


__all__ = ["PARKING_TYPES", "VEHICLE_CLASSES", "HeadResult", "TileHead", "VehicleHead", "heads_to_train", "tile_grid", "train_head"]
