"""The verifier: scene-level judgement of violations the detector has no class for (docs/verifier.md).

Cards and heads live in `verifiers/` of each model folder (`detect.registry.model_dirs`): the project's
`models/verifiers/` (ours, trained from labelled street photos with `streetwatch verifier train`, shipped in the wheel
too), or that of any folder of `$STREETWATCH_MODELS` or `./models`. `promoted.yaml` in the first of those folders
that has one names the default one (`verifier promote` writes it into the first writable model folder, never the
wheel's copy in site-packages); `--verifier none` turns it off.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from detect.config_io import write_text_atomic
from detect.verifier.heads import HeadsCard, HeadSet, VerifierError
from detect.verifier.verifier import Verdicts, Verifier, evidence, verified_class

__all__ = ["HeadSet", "HeadsCard", "Verdicts", "Verifier", "VerifierError", "evidence", "find_card", "load_verifier",
           "promote_verifier", "promoted_id", "verified_class", "verifier_dirs"]

NONE = "none"
PROMOTED = "promoted.yaml"


def verifier_dirs() -> list[Path]:
    """`verifiers/` of each model folder, in the registry's order (the wheel's shipped heads last)."""
    from detect.registry import model_dirs

    return [d / "verifiers" for d in model_dirs()]


_NONE_PROMOTED = (
    "no promoted verifier ({missing} missing): put the project's models/verifiers/ (promoted.yaml, the cards and their "
    ".npz heads) in a folder of $STREETWATCH_MODELS as verifiers/, promote one (`streetwatch verifier promote ID`), or "
    "pass --verifier none to judge by the detector's classes alone")
"""Said when none is promoted (a checkout or wheel whose models/verifiers/ was removed): the folders alone did not say
what to do."""


def promoted_id() -> str | None:
    for folder in verifier_dirs():
        f = folder / PROMOTED
        if f.is_file():
            data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
            if not isinstance(data, dict) or not isinstance(data.get("id"), str):
                raise VerifierError(f"{f}: expected `id: <verifier id>`")
            return data["id"]
    return None


def find_card(verifier: str | Path | None = None) -> Path:
    """The card of a verifier id, a card path, or (None) the promoted verifier."""
    if verifier is None:
        verifier = promoted_id()
        if verifier is None:
            raise VerifierError(_NONE_PROMOTED.format(missing=" or ".join(str(d / PROMOTED) for d in verifier_dirs())))
    p = Path(verifier)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise VerifierError(f"{p}: verifier card not found")
        return p
    for folder in verifier_dirs():
        card = folder / f"{verifier}.yaml"
        if card.is_file():
            return card
    raise VerifierError(f"verifier '{verifier}' not found in {', '.join(str(d) for d in verifier_dirs())}")


def load_verifier(verifier: str | Path | None = None, known_types: set[str] | None = None) -> Verifier | None:
    """The verifier to judge with: an id, a card path, None for the promoted one, or 'none' (off)."""
    if isinstance(verifier, str) and verifier.lower() == NONE:
        return None
    return Verifier(HeadSet.load(find_card(verifier), known_types))


def promote_verifier(verifier_id: str) -> tuple[Path, HeadsCard]:
    """Record `verifier_id` as the promoted verifier; the record's path and the card (loaded with its heads first: a
    card whose heads cannot load is refused and nothing is written).

    The record goes into the first writable model folder, read before the project's and the wheel's copy, wherever
    the card lives: written beside a card in the project's folder, it lost to a record in `$STREETWATCH_MODELS` and
    changed nothing; written into site-packages, a reinstall would undo it.
    """
    from detect.registry import writable_models_dir

    card = find_card(verifier_id)
    heads = HeadSet.load(card)
    target = writable_models_dir() / "verifiers" / PROMOTED
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, f"# The verifier detect, triage, watch, demo and serve use unless told otherwise.\nid: {verifier_id}\n")
    return target, heads.card
