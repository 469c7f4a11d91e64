"""Where the evidence boxes land: out-of-fold findings against the coarse boxes of `boxes.csv`.

The verdicts (found or not per photo and type) say nothing of the box an inspector is shown: a box
around the wrong shop, or the whole street, costs the case its credibility. For every photo found for
a type that has labelled boxes of that type, a finding *hits* when one of its evidence boxes meets a
labelled box by the rule (`RULES`; `HEADLINE` is the one reported first). Its size is the area the
boxes cover, as a share of the photo. Two baselines on the same photos say what the boxes add: the
whole photo (hits by every rule, area 1) and one tile of the verifier's grid drawn at random (its
expected hit rate: the share of the grid's tiles that hit, averaged over the photos).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.verifier.data import PARKING, Dataset
from pipelines.verifier.run import RULE_TYPES
from pipelines.wording import counted

HEADS = ("street_stall", "shopfront_spillover", "flyposting", PARKING)
COVERS = 0.3
"""The share of a labelled box an evidence box must cover to hit it under the `covers` rule. The labels are
drawn on a 12 x 8 grid (each edge good to a cell), so a box that covers a third of one is on the thing."""
WHOLE_AREA = 0.95
"""A finding whose boxes cover at least this share of the photo shows the inspector the whole photo."""


def _covers(ev: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """(E, L): the share of each labelled box that each evidence box covers is at least `COVERS`."""
    w = np.clip(np.minimum(ev[:, None, 2], lab[None, :, 2]) - np.maximum(ev[:, None, 0], lab[None, :, 0]), 0, None)
    h = np.clip(np.minimum(ev[:, None, 3], lab[None, :, 3]) - np.maximum(ev[:, None, 1], lab[None, :, 1]), 0, None)
    return w * h >= COVERS * ((lab[:, 2] - lab[:, 0]) * (lab[:, 3] - lab[:, 1]))[None, :]


def _centre(ev: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """(E, L): each evidence box contains each labelled box's centre."""
    cx, cy = (lab[:, 0] + lab[:, 2]) / 2, (lab[:, 1] + lab[:, 3]) / 2
    return ((ev[:, None, 0] <= cx) & (cx <= ev[:, None, 2]) & (ev[:, None, 1] <= cy) & (cy <= ev[:, None, 3]))


RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"covers": _covers, "centre": _centre}
"""Hit rules: `covers` (an evidence box covers at least `COVERS` of a labelled box) and `centre` (an evidence
box contains a labelled box's centre)."""
HEADLINE = "covers"
RULE_WORDS = {"covers": f"an evidence box covers >= {COVERS:.0%} of a labelled box", "centre": "an evidence box contains a labelled box's centre"}


def hits(evidence: np.ndarray, labelled: np.ndarray, rule: str) -> bool:
    """Whether some evidence box (normalised x1, y1, x2, y2 rows) hits some labelled box by `rule`."""
    return bool(len(evidence) and len(labelled) and RULES[rule](np.asarray(evidence, float), np.asarray(labelled, float)).any())


def union_area(boxes: np.ndarray) -> float:
    """The share of the photo the normalised boxes cover together (overlaps counted once): exact, on the grid
    of their own edges."""
    b = np.clip(np.asarray(boxes, float).reshape(-1, 4), 0, 1)
    if not len(b):
        return 0.0
    xs, ys = np.unique(b[:, [0, 2]]), np.unique(b[:, [1, 3]])
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    inside = ((b[:, 0, None] <= cx) & (cx <= b[:, 2, None]))[:, :, None] & ((b[:, 1, None] <= cy) & (cy <= b[:, 3, None]))[:, None, :]
    return float((np.diff(xs)[:, None] * np.diff(ys)[None, :] * inside.any(0)).sum())


def localisation(dataset: Dataset, evidence: list[dict[str, list]], grid: np.ndarray) -> dict:
    """Per head of `HEADS` and source (and `all`): over the photos found for the head (`evidence`: per photo,
    type found -> its normalised boxes) that have labelled boxes of it, the hit rate by each rule, the boxes'
    area (median share of the photo, share of findings shown the whole photo), and the random-tile baseline
    (`grid`: the verifier's tiles, normalised, without the whole image)."""
    out: dict = {"rules": RULE_WORDS, "headline": HEADLINE,
                 "baselines": {"whole_photo": "hits by every rule, area 1.0",
                               "random_tile": "one tile of the grid drawn at random: its expected hit rate, area the tile's"},
                 "heads": {}}
    tile_area = float(np.mean((grid[:, 2] - grid[:, 0]) * (grid[:, 3] - grid[:, 1])))
    for head in HEADS:
        rows = []  # (source, hit per rule, area, tile hit rate per rule)
        for photo, found in zip(dataset.photos, evidence, strict=True):
            labelled = np.array(photo.boxes.get(head, []), float).reshape(-1, 4)
            boxes = np.array([b for t in RULE_TYPES[head] for b in found.get(t, [])], float).reshape(-1, 4)
            if not len(labelled) or not any(t in found for t in RULE_TYPES[head]):
                continue
            rows.append((photo.source, {r: hits(boxes, labelled, r) for r in RULES}, union_area(boxes),
                         {r: float(RULES[r](grid, labelled).any(1).mean()) for r in RULES}))
        if rows:
            out["heads"][head] = {src: _summary([r for r in rows if src in ("all", r[0])], tile_area)
                                  for src in ("all", *sorted({r[0] for r in rows}))}
    return out


def _summary(rows: list, tile_area: float) -> dict:
    areas = np.array([r[2] for r in rows])
    return {"photos": len(rows),
            "hit_rate": {rule: round(float(np.mean([r[1][rule] for r in rows])), 3) for rule in RULES},
            "area_median": round(float(np.median(areas)), 3),
            "whole_photo": round(float(np.mean(areas >= WHOLE_AREA)), 3),
            "random_tile": {"hit_rate": {rule: round(float(np.mean([r[3][rule] for r in rows])), 3) for rule in RULES},
                            "area": round(tile_area, 3)}}


def localisation_table(loc: dict) -> str:
    """The printed summary: per head and source, hit rates beside the random tile's, and the boxes' size."""
    rules = list(RULES)
    lines = [f"  where the evidence lands (found photos with labelled boxes; hit: {' | '.join(RULE_WORDS[r] for r in rules)};"
             " the whole photo hits always, area 1.00)"]
    for head, by_source in loc["heads"].items():
        lines.append(f"  {head}")
        for src, s in by_source.items():
            hit, tile = (" / ".join(f"{rates[r]:.2f}" for r in rules) for rates in (s["hit_rate"], s["random_tile"]["hit_rate"]))
            lines.append(f"    {src:<16} {counted(s['photos'], 'photo'):>10}  hit {hit}  (random tile {tile}, area {s['random_tile']['area']:.2f})"
                         f"  box area median {s['area_median']:.2f}, whole photo {s['whole_photo']:.0%}")
    if not loc["heads"]:
        lines.append("    no photo found with labelled boxes (boxes.csv) of its type")
    return "\n".join(lines)
