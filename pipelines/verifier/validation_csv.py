"""Each photo's validation verdict per head, as a CSV the data team can sort and review.

Why: the card says how many false findings and misses a head makes; relabelling needs to know which.
Half of `street-v7`'s false stall findings turned out to be café terraces and a third close calls
(docs/verifier.md), which only a look at the photos with the labeller's notes beside them shows. The
rows are the out-of-fold verdicts of `verifier train` (each photo judged by heads and a threshold
that never saw its group), false findings first (most confident first), then misses (least
confident first), then the photos it got right.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipelines.verifier.data import Dataset
from pipelines.verifier.train import HeadResult

FIELDS = ["head", "outcome", "probability", "file", "source", "group", "label", "uncertain", "notes"]
OUTCOME_ORDER = {"false finding": 0, "missed": 1, "found": 2, "rightly not found": 3}


def validation_rows(dataset: Dataset, results: dict[str, HeadResult]) -> list[dict]:
    """One row per head and photo labelled for it: its validation outcome and calibrated probability."""
    rows = []
    for name, r in results.items():
        y = dataset.labels(name)
        for i in np.flatnonzero(y >= 0):
            p = dataset.photos[i]
            found, positive = bool(r.oof_found[i]), bool(y[i] == 1)
            outcome = ("found" if found else "missed") if positive else ("false finding" if found else "rightly not found")
            prob = r.prob(float(r.oof_scores[i])) if np.isfinite(r.oof_scores[i]) else 0.0
            rows.append({"head": name, "outcome": outcome, "probability": round(prob, 4), "file": p.file, "source": p.source,
                         "group": p.group, "label": int(y[i]), "uncertain": int(p.uncertain), "notes": p.notes})
    rows.sort(key=lambda row: (row["head"], OUTCOME_ORDER[row["outcome"]],
                               -row["probability"] if row["outcome"] in ("false finding", "found") else row["probability"]))
    return rows


def write_validation_csv(path: Path, dataset: Dataset, results: dict[str, HeadResult]) -> int:
    """Write the rows (UTF-8 with a byte-order mark, so spreadsheet programs read the Chinese notes); their count."""
    rows = validation_rows(dataset, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
