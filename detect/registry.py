"""Model registry: model cards and where weight files are found.

A model card (`models/cards/<id>.yaml` shipped with the project, `models/registry/<id>.yaml`
written by `models export` and the retraining pipeline) names a model's files, source, classes,
input size, digest and lineage. Weight lookup order: an explicit path, then each directory in
`$STREETWATCH_MODELS` (os.pathsep-separated), then the checkout's `models/` and `./models` (a pip-installed
streetwatch: `./models`, then the copy of the committed `models/` its wheel ships as `streetwatch_models`). Online
users may instead let Ultralytics download the official release file. New cards, exports and weights go into the
first writable of these folders, never the wheel's copy (`writable_models_dir`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

import yaml
from pydantic import BaseModel, Field

from detect.config_io import ConfigError, load_model, read_mapping, write_text_atomic
from detect.digests import sha256_file

_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = _ROOT / "streetwatch_models"
"""The wheel's copy of the checkout's committed `models/` (cards, verifier heads; setup.py ships it), beside this
package in site-packages: a pip install judges with the same default verifier as a checkout. Read, never written."""
PROJECT_MODELS = SHIPPED_MODELS if SHIPPED_MODELS.is_dir() else _ROOT / "models"
_RELEASE_NAME = re.compile(r"^yolo(v\d+|\d+)[nsmlx]$")
PROMOTED_FILE = "promoted.yaml"  # in registry/ beside the cards: which model pipelines load by default
#: A model id: what cards, promotion records, `train --name` and the ids of models given by path are made of (it is
#: also a file stem in models/).
MODEL_ID = r"^[A-Za-z0-9._-]+$"
WEIGHT_SUFFIXES = (".pt", ".onnx")  #: weights files `--model` takes by path (Ultralytics/PyTorch, ONNX Runtime)
_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class ModelNotFoundError(FileNotFoundError):
    """No weight file for a model id; the message says where we looked and what to do."""


class BrokenCardError(ModelNotFoundError, ConfigError):
    """The model named has a card that cannot be read or validated; the message names the file and the reason. A
    `ModelNotFoundError` (every command already answers those with one line) and a `ConfigError` (it is a bad file)."""


@dataclass(frozen=True)
class BrokenCard:
    """A card file that cannot be used, kept apart so that it refuses only its own model, not the whole registry."""

    id: str  #: the id the file claims (its `id:` when that can be read, else its file name), which it keeps from others
    path: Path
    reason: str  #: `ConfigError`'s message: the file, field and why


class ModelCard(BaseModel):
    """Metadata of one registered model (a base checkpoint or an export / fine-tune of one)."""

    id: str = Field(title="Model id", description="Name used with --model.", pattern=MODEL_ID)
    format: Literal["pt", "onnx"] = Field(title="Format", description="pt = Ultralytics/PyTorch, onnx = ONNX Runtime.")
    files: list[str] = Field(title="Files", description="Weight file names looked up in order.", min_length=1)
    download: str | None = Field(None, title="Download name", description="Release asset Ultralytics can download when online.")
    source: str = Field("", title="Source", description="Where the weights come from.")
    license: str = Field("AGPL-3.0", title="License")
    imgsz: int = Field(640, title="Input size", description="Square network input in pixels.", gt=0, multiple_of=32)
    classes: list[str] | None = Field(None, title="Classes", description="Class names by id; read from the weights when absent.")
    sha256: dict[str, str] = Field(default_factory=dict, title="SHA-256", description="Known digests per file name.")
    exported_from: str | None = Field(None, title="Exported from", description="Id of the model this one was exported or trained from.")
    dynamic: bool = Field(False, title="Dynamic axes", description="ONNX batch and image size are dynamic.")
    half: bool = Field(False, title="FP16")
    int8: bool = Field(False, title="INT8", description="Static QDQ INT8 quantised with calibration images.")
    batch: int = Field(1, title="Static batch size", gt=0)
    raw_box_head: bool = Field(
        False, title="Raw-box head",
        description="streetwatch's engine-only variant: box decoding cut off the graph (the engine finishes it); "
                    "Ultralytics and other ONNX tools run the standard export of the same id without `-rawbox`.")
    metrics: dict = Field(default_factory=dict, title="Metrics", description="Evaluation or export-accuracy figures.")
    dataset: dict | None = Field(None, title="Training data",
                                 description="Name, manifest digest and counts of the dataset version the model was trained on.")
    training: dict | None = Field(None, title="Training config", description="Base model and trainer settings.")
    thresholds: dict | None = Field(None, title="Thresholds",
                                    description="Detector confidence and per-type rule thresholds the metrics were measured at.")
    created: datetime | None = Field(None, title="Created (UTC)")
    notes: str = Field("", title="Notes")


def model_dirs() -> list[Path]:
    """Directories searched for weights and cards, in priority order (duplicates removed)."""
    return [d for _, d in named_model_dirs()]


def named_model_dirs() -> list[tuple[str, Path]]:
    """(name, directory) of `model_dirs`, each named as the docs name it (`$STREETWATCH_MODELS`, the project's `models`,
    `./models`): how the service names them in what it answers, never by the server's path (`api.config.named_files`).
    Several `$STREETWATCH_MODELS` folders are named by their place in it, counted from 1 (`$STREETWATCH_MODELS[2]`),
    so an admin can tell which one an error means."""
    env = [Path(p).expanduser() for p in os.environ.get("STREETWATCH_MODELS", "").split(os.pathsep) if p]
    dirs = [(f"$STREETWATCH_MODELS[{i}]" if len(env) > 1 else "$STREETWATCH_MODELS", d) for i, d in enumerate(env, 1)]
    local = ("./models", Path.cwd() / "models")
    # the wheel's copy comes last: the deployer's folders (their promotions, exports) before the shipped defaults
    project = ("models", PROJECT_MODELS)
    dirs += [local, project] if PROJECT_MODELS == SHIPPED_MODELS else [project, local]
    seen, out = set(), []
    for name, d in dirs:
        key = d.resolve() if d.exists() else d.absolute()
        if key not in seen:
            seen.add(key)
            out.append((name, d))
    return out


class NoWritableModelFolder(PermissionError):
    """No model folder this user may write: the message names the folders tried and what to do. A `PermissionError`
    without a file name, which the CLI's line for OS errors (a path and the system's reason) does not cover, so it
    has its own (`streetwatch.cli._user_error`): every command that writes a model file says this one line."""


def writable_models_dir() -> Path:
    """The model folder new cards, exports, weights and promotions go into: the first of `model_dirs` this user may
    write (`$STREETWATCH_MODELS`' first, else the checkout's `models/`, else `./models`), never the wheel's copy in
    site-packages, which a reinstall replaces and other users share. Raises `NoWritableModelFolder` naming the folders."""
    candidates = [d for d in model_dirs() if d != SHIPPED_MODELS]
    for d in candidates:
        if may_write(d):
            return d
    raise NoWritableModelFolder(
        "no model folder this user may write (new cards, exports, weights and promotions go into one): tried "
        + ", ".join(str(d) for d in candidates) + "; set $STREETWATCH_MODELS to a folder you may write")


def may_write(folder: Path) -> bool:
    """Whether `folder` can be written or created: its nearest existing ancestor is a writable folder."""
    d = folder.absolute()
    while not d.exists() and d != d.parent:
        d = d.parent
    return d.is_dir() and os.access(d, os.W_OK | os.X_OK)


class PromotionOutvoted(ValueError):
    """A promotion this user may write would change nothing: a record in a model folder read before (an unwritable
    `$STREETWATCH_MODELS`) names another model or verifier. The message names that record and what to do."""


def promotion_target(folder: str, wanted: str, record_id: Callable[[Path], str]) -> tuple[Path, bool]:
    """Where a promotion of `wanted` (`<folder>/promoted.yaml`: `registry` for models, `verifiers` for verifiers) takes
    effect, and whether it has already: the first writable model folder's record, since readers take the first record
    found. A record in a folder read before that one outvotes it; naming `wanted` (`record_id`), it is in effect
    already (returned, True), else `PromotionOutvoted` names it, so that nothing is written (nor evaluated first) for a
    promotion the readers would never see. Both `models promote` and `verifier promote` write through here."""
    target = writable_models_dir() / folder / PROMOTED_FILE
    dirs = model_dirs()
    for record in (d / folder / PROMOTED_FILE for d in dirs[:dirs.index(target.parent.parent)]):
        if not record.is_file():
            continue
        if (current := record_id(record)) == wanted:
            return record, True
        raise PromotionOutvoted(
            f"{record} promotes {current} and is read before {target}, where this user may write, so promoting "
            f"{wanted} there would change nothing: have that file's owner promote {wanted} in it (or remove it), or "
            "set $STREETWATCH_MODELS to a folder you may write, which is read first")
    return target, False


def write_promotion(folder: str, wanted: str, record_id: Callable[[Path], str], text: str) -> Path:
    """Write `text`, the record promoting `wanted`, where it takes effect (`promotion_target`); the path read, which
    is a record read first when that one names `wanted` already (nothing written then)."""
    target, in_effect = promotion_target(folder, wanted, record_id)
    if not in_effect:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, text)
    return target


def registry_dir() -> Path:
    """Where new cards are written: `registry/` in `writable_models_dir` (created if needed)."""
    d = writable_models_dir() / "registry"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _scan_cards() -> dict[str, ModelCard | BrokenCard]:
    """Every card found by id, the first occurrence of each id winning, a broken one too: a hand edit gone wrong in
    registry/ then refuses its model by name instead of letting a shipped card of that id load other weights."""
    cards: dict[str, ModelCard | BrokenCard] = {}
    for d in model_dirs():
        for sub in ("registry", "cards"):
            for f in sorted((d / sub).glob("*.yaml")):
                if f.name == PROMOTED_FILE:
                    continue
                try:
                    card: ModelCard | BrokenCard = load_model(ModelCard, f)
                except ConfigError as exc:
                    card = BrokenCard(_claimed_id(f), f, str(exc))
                cards.setdefault(card.id, card)
    return cards


def _claimed_id(path: Path) -> str:
    """The id a card that failed to load meant: its `id:` when the file reads as a mapping, else its file name."""
    try:
        claimed = read_mapping(path).get("id")
    except ConfigError:
        claimed = None
    return claimed if isinstance(claimed, str) and claimed else path.stem


def list_cards() -> list[ModelCard]:
    """All usable cards found, the first occurrence of each id winning (broken ones: `broken_cards`)."""
    return [c for c in _scan_cards().values() if isinstance(c, ModelCard)]


def broken_cards() -> list[BrokenCard]:
    """Card files that cannot be used, each with its reason, for `models list` to show beside the others."""
    return [c for c in _scan_cards().values() if isinstance(c, BrokenCard)]


def get_card(model_id: str) -> ModelCard:
    """The card for `model_id`; official Ultralytics release names get an implicit card.

    Raises `BrokenCardError` when the card of that id cannot be used (only then: other cards' models still load)."""
    found = _scan_cards().get(model_id)
    if isinstance(found, BrokenCard):
        raise BrokenCardError(f"the card of model '{model_id}' cannot be used: {found.reason}")
    if found is not None:
        return found
    if _RELEASE_NAME.match(model_id):
        return ModelCard(id=model_id, format="pt", files=[f"{model_id}.pt"], download=f"{model_id}.pt",
                         source="Ultralytics release")
    known = ", ".join(sorted(c.id for c in list_cards())) or "none"
    path = Path(model_id)
    if path.exists():  # a file or folder given by mistake: "nor a file path" was wrong about it
        what = "a folder" if path.is_dir() else f"a {path.suffix} file" if path.suffix else "a file without a suffix"
        raise ModelNotFoundError(f"model '{model_id}' is {what}, not a model: give a registered id (known: {known}) or "
                                 f"a weights file ({' or '.join(WEIGHT_SUFFIXES)})")
    raise ModelNotFoundError(f"unknown model '{model_id}': not a registered id (known: {known}) nor a file path")


def find_file(card: ModelCard) -> Path | None:
    """First existing file of the card in the search directories."""
    for d in model_dirs():
        for name in card.files:
            if (d / name).is_file():
                return d / name
    return None


def resolve_weights(model: str | Path) -> tuple[Path, ModelCard | None]:
    """Path of the weights for a model id or file path; downloads via Ultralytics only when online.

    Raises `ModelNotFoundError` with the searched directories and the fix.
    """
    path = Path(model)
    if path.suffix in WEIGHT_SUFFIXES:  # another file is refused by get_card, saying what it is
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        return path, None
    card = get_card(str(model))
    found = find_file(card)
    if found is not None:
        return found, card
    if card.download and not _offline():
        return _download(card), card
    dirs = "\n  ".join(str(d) for d in model_dirs())
    wanted = " or ".join(card.files)
    raise ModelNotFoundError(
        f"no weights for model '{card.id}': looked for {wanted} in\n  {dirs}\n"
        f"Put {card.files[0]} in models/ (or a directory listed in $STREETWATCH_MODELS)"
        + (f", or unset YOLO_OFFLINE on a machine with internet so Ultralytics downloads {card.download}."
           if card.download else ".")
    )


PATH_DIGEST_CHARS = 8
"""Hex digits of a weights file's SHA-256 in the id of a model given by path (`path_model_id`)."""


def path_model_id(weights: Path) -> str:
    """The id a weights file given by path answers to, by its content: the registered model whose id loads these very
    bytes (a copy of yolo11n's file is yolo11n), else the file's stem and the start of its SHA-256 (best-3fa2c1d0).

    By content, not by name: every training run's weights are `best.pt`, and two of them must neither share one export
    (its card and .onnx) nor pass for each other's neck (`detect.verifier.backbones.neck_id`); the same file given
    again must find its own export instead of being exported again."""
    digest = sha256_file(weights)
    for card in list_cards():
        if card.format == "pt" and digest in card.sha256.values():
            found = find_file(card)
            if found is not None and sha256_file(found) == digest:
                return card.id
    stem = _NOT_ID_CHARS.sub("-", weights.stem).strip("-.") or "model"  # `my model.pt`, `模型.pt`: an id cards accept
    return f"{stem}-{digest[:PATH_DIGEST_CHARS]}"


def runs_dir() -> Path:
    """Where training and evaluation run folders go (ignored by git)."""
    return registry_dir().parent / "runs"


def id_taken(model_id: str, replaceable: Callable[[ModelCard], bool] = lambda card: False, *,
             promoted_ok: bool = False) -> str | None:
    """Why `model_id` cannot name a new model (a card, the promoted pointer, its weights or run folder), or None: a new
    card of that id would replace an existing card (its files then unreachable) or shadow a shipped card, a release
    name or the promoted id, so `--model ID` would load weights nobody meant. `replaceable` says which existing card
    the caller may write over (an export refreshing its own earlier export); `promoted_ok`: the promoted id is no
    obstacle (an export's id is fixed by its model and settings, so a promotion naming it names this very export)."""
    try:
        card = get_card(model_id)
        if replaceable(card):
            return None
        return (f"the registry already has the {card.format} model {model_id!r} ({card.source or 'no source given'}), "
                "which a new card of that id would replace or shadow")
    except BrokenCardError as exc:  # its file is someone's work to mend, not to be written over
        return str(exc)
    except ModelNotFoundError:
        pass
    if not promoted_ok and model_id == promoted_model():
        return f"{model_id!r} is the promoted model (registry/promoted.yaml), which pipelines load by default"
    for existing in (registry_dir().parent / f"{model_id}.pt", runs_dir() / model_id):
        if existing.exists():
            return f"{existing} already exists (models are never overwritten)"
    return None


def save_card(card: ModelCard) -> Path:
    """Write a card into the registry directory (overwriting an older card of that id)."""
    if card.created is None:
        card = card.model_copy(update={"created": datetime.now(timezone.utc)})
    path = registry_dir() / f"{card.id}.yaml"
    return write_text_atomic(path, yaml.safe_dump(card.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True))


DEFAULT_MODEL = "yolo11n"


class Promotion(BaseModel):
    """The promoted model: what pipelines load when no model is named (written by `models promote`)."""

    model: str = Field(title="Model id", pattern=MODEL_ID)
    promoted_at: datetime = Field(title="Promoted at (UTC)")
    previous: str | None = Field(None, title="Previously promoted model")
    forced: bool = Field(False, title="Forced", description="Promoted with --force despite the gate.")
    reason: str = Field("", title="Reason", description="Why it was forced (required with --force).")
    data_digest: str | None = Field(None, title="Evaluation data digest", description="Dataset the gate compared on.")
    gate: dict = Field(default_factory=dict, title="Gate result", description="Per-type comparison the decision rests on.")


def promoted() -> Promotion | None:
    """The current promotion record: the first `registry/promoted.yaml` in the model directories."""
    for d in model_dirs():
        path = d / "registry" / PROMOTED_FILE
        if path.is_file():
            return load_model(Promotion, path)
    return None


def promoted_model() -> str | None:
    """Id of the promoted model, or None when nothing was promoted."""
    record = promoted()
    return record.model if record else None


def default_model() -> str:
    """The model pipelines use when none is named: the promoted one, else yolo11n (COCO)."""
    return promoted_model() or DEFAULT_MODEL


def promoted_record_model(path: Path) -> str:
    """The model a `registry/promoted.yaml` names (`promotion_target`'s reader for models)."""
    return load_model(Promotion, path).model


def set_promoted(record: Promotion) -> Path:
    """Make `record.model` the promoted model, written where it takes effect (`write_promotion`: refused with
    `PromotionOutvoted` when a record read first names another model)."""
    return write_promotion("registry", record.model, promoted_record_model,
                           yaml.safe_dump(record.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def _offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes")


def _download(card: ModelCard) -> Path:
    """Let Ultralytics fetch an official release file into the first model directory."""
    from detect.runtime_env import prepare_ultralytics_env

    prepare_ultralytics_env()
    from ultralytics.utils.downloads import attempt_download_asset

    target = writable_models_dir()
    target.mkdir(parents=True, exist_ok=True)
    path = Path(attempt_download_asset(str(target / card.download)))
    if not path.is_file():
        raise ModelNotFoundError(f"download of {card.download} failed; put it in {target} by hand")
    return path


RAW_BOX_SUFFIX = "-rawbox"
"""Marks the id and file name of an engine-only raw-box export (`detect.export`)."""


def export_id(base_id: str, imgsz: int, dynamic: bool, half: bool, int8: bool, raw_box: bool = False) -> str:
    """Deterministic id (and file stem) of an ONNX export of `base_id`; `raw_box`: the engine-only variant."""
    return (f"{base_id}-{imgsz}" + ("-dyn" if dynamic else "") + ("-fp16" if half else "") + ("-int8" if int8 else "")
            + (RAW_BOX_SUFFIX if raw_box else ""))


def is_int8(model_id: str) -> bool:
    """Whether `model_id` is a registered INT8 export (its card says so); a file nobody registered is not known to be."""
    try:
        return get_card(model_id).int8
    except ModelNotFoundError:
        return False


def find_export(base_id: str, imgsz: int, dynamic: bool, half: bool, int8: bool,
                raw_box: bool = False) -> tuple[Path, ModelCard] | None:
    """A registered ONNX export of `base_id` with these settings whose file exists."""
    wanted = export_id(base_id, imgsz, dynamic, half, int8, raw_box)
    for card in list_cards():
        if card.id == wanted and card.format == "onnx":
            found = find_file(card)
            if found is not None:
                return found, card
    return None
