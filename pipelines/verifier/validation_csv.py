"""Each photo's validation verdict per head, as a CSV the data team can sort and review.

Why: the card says how many false findings and misses a head makes; relabelling needs to know which.
Half of `street-v7`'s false stall findings turned out to be café terraces and a third close calls
(docs/verifier.md), which only a look at the photos with the labeller's notes beside them shows.
`verifier train` writes the heads' out-of-fold verdicts (each photo judged by heads and a threshold
that never saw its group) with their calibrated probability; `verifier crossval` and `verifier eval`
the whole judgement's (as triage judges: OCR and the photo rules may decide beside the heads), with the
verifier's probability for the head where it judges it. False findings come first (most confident
first), then misses (least confident first), then the photos it got right. `verifier diff` compares two
such files of the same photos (another backend, device, precision or card).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.verifier.data import Dataset, DatasetError, dataset_rows, write_rows

FIELDS = ["head", "outcome", "probability", "evidence", "file", "source", "group", "label", "uncertain", "notes"]
OUTCOME_ORDER = {"false finding": 0, "missed": 1, "found": 2, "rightly not found": 3}


def verdict_rows(dataset: Dataset, head: str, found: np.ndarray, probability: np.ndarray | None = None,
                 evidence: list[list] | None = None) -> list[dict]:
    """One row per photo labelled for `head`: its outcome from `found` (per photo) and, when given, its
    probability (NaN: none for that photo) and the evidence boxes of a found photo (normalised x1 y1 x2 y2,
    `;` between boxes: where the case would point, to set beside the photo)."""
    y = dataset.labels(head)
    rows = []
    for i in np.flatnonzero(y >= 0):
        p, positive = dataset.photos[i], bool(y[i] == 1)
        outcome = ("found" if found[i] else "missed") if positive else ("false finding" if found[i] else "rightly not found")
        missing = probability is None or np.isnan(probability[i])
        boxes = "; ".join(" ".join(f"{v:.3f}" for v in b) for b in evidence[i]) if evidence is not None and found[i] else ""
        rows.append({"head": head, "outcome": outcome, "probability": "" if missing else round(float(probability[i]), 4), "evidence": boxes,
                     "file": p.file, "source": p.source, "group": p.group, "label": int(y[i]), "uncertain": int(p.uncertain),
                     "notes": p.notes})
    return rows


def write_validation_csv(path: Path, rows: list[dict]) -> int:
    """Write the rows, sorted for review, as UTF-8 with a byte-order mark (spreadsheet programs then read the
    Chinese notes); their count."""
    def order(row: dict):
        p = row["probability"] if row["probability"] != "" else 0.0
        return row["head"], OUTCOME_ORDER[row["outcome"]], -p if row["outcome"] in ("false finding", "found") else p, row["file"]

    write_rows(path, FIELDS, sorted(rows, key=order))
    return len(rows)


class VerdictsCsvError(ValueError):
    """A verdicts CSV that cannot be read or compared; the message names the file."""


def read_verdicts(path: Path) -> dict[tuple[str, str], tuple[str, float | None]]:
    """(head, file) -> (outcome, probability or None) of a CSV written by `write_validation_csv`."""
    try:
        rows = list(dataset_rows(path.read_bytes(), path))  # its cells as written, a formula-like file name unmarked
    except OSError as exc:
        raise VerdictsCsvError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except DatasetError as exc:
        raise VerdictsCsvError(str(exc)) from None
    if rows and not {"head", "file", "outcome", "probability"} <= set(rows[0]):
        raise VerdictsCsvError(f"{path}: not a verdicts CSV (needs the columns head, file, outcome, probability; see --validation-csv)")
    out = {}
    for n, r in enumerate(rows, start=2):
        if r["outcome"] not in OUTCOME_ORDER:
            raise VerdictsCsvError(f"{path}: row {n}: unknown outcome {r['outcome']!r} (expected one of {', '.join(OUTCOME_ORDER)})")
        try:
            out[r["head"], r["file"]] = (r["outcome"], float(r["probability"]) if r["probability"] else None)
        except ValueError:
            raise VerdictsCsvError(f"{path}: row {n}: probability {r['probability']!r} is not a number") from None
    return out


def verdict_changes(a: dict[tuple[str, str], tuple[str, float | None]],
                    b: dict[tuple[str, str], tuple[str, float | None]]) -> dict[str, dict]:
    """Per head: how many photos both judged, the largest change of probability where both have one, and
    the photos whose outcome differs (file, (outcome, probability) in a, in b).

    Why: the same heads judged by another backend, device or precision (a GPU in fp16, an INT8 export)
    should change few verdicts and move probabilities little; the photos it flips are the ones to look at."""
    out: dict[str, dict] = {}
    for head, file in sorted(a.keys() & b.keys()):
        entry = out.setdefault(head, {"compared": 0, "max_probability_change": None, "changed": []})
        entry["compared"] += 1
        (was, p), (now, q) = a[head, file], b[head, file]
        if p is not None and q is not None:
            entry["max_probability_change"] = max(entry["max_probability_change"] or 0.0, abs(p - q))
        if was != now:
            entry["changed"].append((file, (was, p), (now, q)))
    return out
