"""Operating points: thresholds stricter than a head's F-best one, measured on validation, and cards that use them.

Why: the shipped threshold maximises F1 (F0.5 for parking) on validation, which for stalls means about
three false findings for each true one. A city that would rather miss some stalls than send inspectors
after café terraces needs to know what a stricter threshold keeps, and a way to use it everywhere a
verifier is named. Training reports, for each precision target (`PRECISION_TARGETS`), what each fold's
own threshold for it found on the fold's photos (nested, as the F-best figures are) and the threshold
for it on every validation score; `streetwatch verifier threshold` writes a card that uses one: it
reads the same weights file, so `--verifier`, `triage.verifier` and `verifier promote` take it as they
take any card.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from detect.verifier.heads import HeadsCard, HeadSet, VerifierError, write_card
from pipelines.verifier.data import PARKING
from pipelines.verifier.metrics import figures
from pipelines.verifier.train import PARKING_TYPES, HeadResult


THRESHOLDS_SET_FROM = "Thresholds set from"
"""How a card's notes say `with_thresholds` set its thresholds (then the source card's id), read by `threshold_source`."""


def operating_points(r: HeadResult, y: np.ndarray, m: np.ndarray, sources: np.ndarray, groups: np.ndarray) -> list[dict]:
    """Per precision target: its threshold (probability on every validation score of photos `m`; None when no
    threshold reaches it) and, per source with positives, what each fold's own threshold for it found."""
    out = []
    for target, logit in r.threshold_logit_at.items():
        per_source = figures(r.oof_found_at[target][m], r.oof_scores[m], y[m], sources[m], groups[m], 0)
        out.append({"precision_target": target, "threshold": round(r.prob(logit), 4) if np.isfinite(logit) else None,
                    "verifier": {src: {k: f[k] for k in ("P", "R", "tp", "fp")} for src, f in per_source.items() if f["positives"]}})
    return out


def head_of(type_id: str) -> str:
    """The card's metrics key of a violation type (the parking head judges two types)."""
    return PARKING if type_id in PARKING_TYPES else type_id


def with_thresholds(card_path: Path, settings: list[str], new_id: str) -> tuple[Path, list[str]]:
    """Write card `new_id` beside `card_path`: the same heads and weights, with the thresholds of `settings`
    ('HEAD=P' a probability, 'HEAD=pT' the operating point of precision target T; HEAD a type or `parking`); the new
    card and what changed (`street_stall 0.13 -> 0.65 (precision target 0.7: validation P 0.31 R 0.06)`, as its notes
    say), so the command can show what the new thresholds find before anyone promotes them.
    Each error names the setting, the source card and the reason; nothing is written unless every setting is good."""
    heads = HeadSet.load(card_path)
    try:  # the card's own id rule (letters, digits, '.', '_', '-'): also keeps the file beside its source
        card = HeadsCard.model_validate({**heads.card.model_dump(), "id": new_id})
    except ValidationError:
        raise VerifierError(f"--id {new_id!r}: give the new card an id of letters, digits, '.', '_' or '-'") from None
    target = card_path.parent / f"{new_id}.yaml"
    if target.exists():
        raise VerifierError(f"{target}: exists already; choose another --id")
    changes = []
    for setting in settings:
        name, sep, value = setting.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise VerifierError(f"--set {setting!r}: expected HEAD=PROBABILITY or HEAD=pTARGET, e.g. street_stall=0.4 or street_stall=p0.7")
        types = [t for t in card.heads if name in (t, head_of(t))]
        if not types:
            raise VerifierError(f"--set {setting!r}: {heads.card.id} has no head '{name}' (heads: {', '.join(sorted({head_of(t) for t in card.heads}))})")
        threshold, how = _threshold(heads.card, head_of(types[0]), value, setting)
        for t in types:
            changes.append(f"{t} {card.heads[t].threshold} -> {threshold}{how}")
            card.heads[t].threshold = threshold
    card.notes = (f"{card.notes} {THRESHOLDS_SET_FROM} {heads.card.id} (`streetwatch verifier threshold`): {'; '.join(changes)}. "
                  f"The metrics are those of {heads.card.id}'s thresholds; operating_points give the others.").strip()
    write_card(card, target)
    return target, changes


def _threshold(card, head: str, value: str, setting: str) -> tuple[float, str]:
    """A probability, and how it was chosen (for the card's notes)."""
    if value.lower().startswith("p"):
        try:
            want = float(value[1:])
        except ValueError:
            raise VerifierError(f"--set {setting!r}: {value!r} is not a precision target such as p0.7") from None
        points = card.metrics.get(head, {}).get("operating_points") or []
        point = next((p for p in points if abs(p["precision_target"] - want) < 1e-9), None)
        if point is None:
            have = ", ".join(f"p{p['precision_target']}" for p in points) or "none (trained before operating points were measured)"
            raise VerifierError(f"--set {setting!r}: {card.id} has no operating point for precision {want} on {head} (it has: {have})")
        if point["threshold"] is None:
            raise VerifierError(f"--set {setting!r}: no threshold of {head} reached precision {want} on validation")
        fig = point["verifier"].get("all", {})
        return float(point["threshold"]), f" (precision target {want}: validation P {fig.get('P', 0):.2f} R {fig.get('R', 0):.2f})"
    try:
        p = float(value)
    except ValueError:
        raise VerifierError(f"--set {setting!r}: {value!r} is neither a probability nor a precision target such as p0.7") from None
    if not 0.0 < p < 1.0:
        raise VerifierError(f"--set {setting!r}: a probability threshold lies between 0 and 1")
    return p, ""


def threshold_source(card: HeadsCard) -> str:
    """Where the card's thresholds come from, for a run to say what it judged with: training's (each head's best F1 on
    validation, F0.5 for parking) or those `with_thresholds` set from another card (the last, if set more than once)."""
    sources = re.findall(rf"{THRESHOLDS_SET_FROM} (\S+) \(", card.notes)
    if sources:
        return f"thresholds set from {sources[-1]} by `streetwatch verifier threshold`"
    return "thresholds as trained (each head's best F1 on validation, F0.5 for parking)"
