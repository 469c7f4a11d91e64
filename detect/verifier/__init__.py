"""The verifier: scene-level judgement of violations the detector has no class for (docs/verifier.md).

Cards and heads live in `verifiers/` of each model folder (`detect.registry.model_dirs`): the project's
`models/verifiers/` (ours, trained from labelled street photos with `streetwatch verifier train`, shipped in the wheel
too), or that of any folder of `$STREETWATCH_MODELS` or `./models`. `promoted.yaml` in the first of those folders
that has one names the default one (`verifier promote` writes it into the first writable model folder, never the
wheel's copy in site-packages, and refuses when a record in a folder read before that one names another verifier);
`--verifier none` turns it off.
"""

from __future__ import annotations

from pathlib import Path

from detect.config_io import ConfigError, read_mapping
from detect.verifier.heads import HeadsCard, HeadSet, VerifierError
from detect.verifier.verifier import Verdicts, Verifier, evidence, verified_class

__all__ = ["HeadSet", "HeadsCard", "Verdicts", "Verifier", "VerifierError", "evidence", "find_card", "load_verifier",
           "promote_verifier", "promoted_id", "verified_class", "verifier_dirs", "writable_verifier_dir"]

NONE = "none"
PROMOTED = "promoted.yaml"


VERIFIERS = "verifiers"
"""The folder of verifier cards, heads and `promoted.yaml` in each model folder."""


def verifier_dirs() -> list[Path]:
    """`verifiers/` of each model folder, in the registry's order (the wheel's shipped heads last)."""
    from detect.registry import model_dirs

    return [d / VERIFIERS for d in model_dirs()]


def writable_verifier_dir() -> Path:
    """Where new heads go unless told: `verifiers/` of the first model folder this user may write
    (`writable_models_dir`: `$STREETWATCH_MODELS`' first, else the checkout's `models/`, else `./models`), the folder
    `promote_verifier` writes into, so heads trained for a deployment sit where its promotion and every reader look,
    not in `models/verifiers` under whatever folder the command was run from."""
    from detect.registry import writable_models_dir

    return writable_models_dir() / VERIFIERS


_NONE_PROMOTED = (
    "no promoted verifier ({missing} missing): put the project's models/verifiers/ (promoted.yaml, the cards and their "
    ".npz heads) in a folder of $STREETWATCH_MODELS as verifiers/, promote one (`streetwatch verifier promote ID`), or "
    "pass --verifier none to judge by the detector's classes alone")
"""Said when none is promoted (a checkout or wheel whose models/verifiers/ was removed): the folders alone did not say
what to do."""


def promoted_id() -> str | None:
    """The id `promoted.yaml` in the first of `verifier_dirs` that has one names; None when none does."""
    record = next((f for f in (d / PROMOTED for d in verifier_dirs()) if f.is_file()), None)
    return None if record is None else _record_id(record)


def _record_id(record: Path) -> str:
    """The id a `promoted.yaml` names; a file that is not YAML, or names none, is refused naming it (config_io's
    reader, as every other file the project reads)."""
    try:
        data = read_mapping(record)
    except ConfigError as exc:
        raise VerifierError(str(exc)) from None
    if not isinstance(data.get("id"), str):
        raise VerifierError(f"{record}: expected `id: <verifier id>`")
    return data["id"]


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

    The record goes where it takes effect (`detect.registry.write_promotion`, as `models promote`'s): the first
    writable model folder, read before the project's and the wheel's copy, wherever the card lives (written beside a
    card in the project's folder, it lost to a record in `$STREETWATCH_MODELS`; written into site-packages, a
    reinstall would undo it). A record in a folder read before that one naming another verifier is refused naming it,
    nothing written; naming this one, it is in effect already and is the path returned.

    A card given by path is recorded by its id, and only where that id finds this very card: the record is read from
    every folder a command runs in, and a relative path (`vout/h48a.yaml`) written into it left every run elsewhere
    (the service's too) stopping at `verifier card not found`.
    """
    from detect.registry import PromotionOutvoted, write_promotion

    card = find_card(verifier_id)
    heads = HeadSet.load(card)
    if Path(verifier_id).suffix in (".yaml", ".yml"):
        verifier_id = heads.card.id
        try:
            by_id = find_card(verifier_id).resolve() == card.resolve()
        except VerifierError:
            by_id = False
        if not by_id:
            raise VerifierError(f"{card}: a promotion names a verifier by its id ('{verifier_id}'), which finds another card or none, "
                                f"as this card lies outside the verifier folders ({', '.join(str(d) for d in verifier_dirs())}): copy it "
                                f"and its heads ({heads.card.weights}) into {writable_verifier_dir()}, then promote '{verifier_id}'")
    text = f"# The verifier detect, triage, watch, demo and serve use unless told otherwise.\nid: {verifier_id}\n"
    try:
        return write_promotion(VERIFIERS, verifier_id, _record_id, text), heads.card
    except PromotionOutvoted as exc:
        raise VerifierError(str(exc)) from None
