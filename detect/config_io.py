"""Configuration files: one base model, loading with messages that name file, field and reason.

Every model of a configuration file (taxonomy, scenes, cameras, settings) derives from
`ConfigModel`, so an unknown key (usually a typo) is refused everywhere, and every file goes
through `load_model`, so a bad file is refused the same way everywhere:
`scenes/cam-01.yaml: zones.0.polygon: 多边形至少需要 3 个点… — polygon needs at least 3 points`, and with the value refused where the
reason does not quote it: `sheet.yaml: sections.0.items.0.deduct: Input should be a valid number … (got '1分')`.
The same models give
the JSON schemas `streetwatch config schema` writes for editors and the UI (`json_schema`).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticKnownError

from detect.digests import sha256_bytes

M = TypeVar("M", bound=BaseModel)
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class ConfigModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, not silently ignored settings."""

    model_config = ConfigDict(extra="forbid")


def overlay(base: M, override: M | None) -> M:
    """`base` with the fields that `override` sets explicitly (in its file) replacing its own.

    How a narrower place (a camera) changes some knobs of a wider one (the settings file's
    defaults) without repeating the rest; both were validated as the same model.
    """
    if override is None:
        return base
    return base.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})


def json_schema(model: type[BaseModel], title: str | None = None) -> dict[str, Any]:
    """The JSON schema (2020-12) of the files `model` validates: what an editor or a form may write."""
    schema = model.model_json_schema(mode="validation")
    if title:
        schema["title"] = title
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file, field and reason."""


class FieldError(ConfigError):
    """A `ConfigError` of one field, found by a check the file's model cannot make (a violation type the taxonomy does
    not know, a road grade): `source: dotted.field: reason`, the field kept as its path too, so that the API refuses a
    request body's field naming it in `errors[].loc` as the model's own refusals are (`api.problems.invalid`)."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"{source}: {field}: {reason}")
        self.source, self.field, self.reason = source, tuple(field.split(".")), reason


def one_line(message: str) -> str:
    """A refusal `message` as one line, for logs of one line per record: a YAML error's lines (its position, the line
    it quotes) joined, the caret line under the quote dropped (its column says where)."""
    return " ".join(part for line in message.splitlines() if (part := line.strip()) and part != "^")


class DuplicateKeyError(ValueError):
    """A key written twice in one YAML mapping or JSON object, which PyYAML and `json` read as the last value without a
    word. YAML gives both lines; `json` gives no positions, so a JSON file's message names the key alone."""

    def __init__(self, key: Any, first_line: int | None = None, second_line: int | None = None) -> None:
        if first_line is None:
            super().__init__(f"key {key!r} is written twice in one object: JSON would keep the second without a word; "
                             "delete or rename one")
        else:
            super().__init__(f"key {key!r} is written twice in one mapping (lines {first_line} and {second_line}): "
                             "YAML would keep the second without a word; delete or rename one")
        self.key, self.first_line, self.second_line = key, first_line, second_line


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json`'s `object_pairs_hook` that refuses a key written twice in one object, as `_UniqueKeyLoader` does for YAML: a
    property copied down and edited in a GeoJSON grid or zone file (a second `"squad"`) would otherwise vanish silently."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key written twice in one mapping: a setting copied down and edited
    (`deduct: 1` twice, a second `cameras:`) would otherwise make one of the two vanish silently."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden: that is what it is for
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: PyYAML's own error names it
                    continue
        return super().construct_mapping(node, deep=deep)


#: Leading bytes of the binary files people hand over where a YAML file is expected, and what to call them.
_SIGNATURES = ((b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office 97-2003 file (.xls / .doc / WPS .et)"), (b"%PDF-", "a PDF document"),
               (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"Rar!", "a RAR archive"),
               (b"7z\xbc\xaf", "a 7-Zip archive"), (b"\x1f\x8b", "a gzip archive"))
#: Folders inside a zip file that make it an Office document (Excel, WPS and LibreOffice write these).
_OFFICE_ZIPS = (("xl/", "an Excel workbook (.xlsx)"), ("word/", "a Word document (.docx)"), ("ppt/", "a PowerPoint file (.pptx)"))
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # Notepad's "Unicode": text, refused below as not UTF-8


def _binary_kind(data: bytes) -> str | None:
    """What a binary file is (`an Excel workbook (.xlsx)`), or None when it may be text: a sheet kept in Excel and
    given as `--sheet 细则.xlsx` is otherwise called 'not UTF-8 text', which sends the user to the wrong fix."""
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            names = []
        return next((what for folder, what in _OFFICE_ZIPS if any(n.startswith(folder) for n in names)), "a zip archive")
    what = next((what for magic, what in _SIGNATURES if data.startswith(magic)), None)
    if what is None and b"\x00" in data[:8192] and not data.startswith(_UTF16_BOMS):
        what = "binary data, not text"
    return what


#: Files read as JSON, whatever YAML would make of them: GeoJSON is JSON, and GIS tools that indent it with tabs write
#: what YAML refuses (a tab cannot indent YAML).
JSON_SUFFIXES = (".json", ".geojson")


#: A file's change stamp (modified time in ns, size, inode; None: it cannot be read), what `files_read` records.
Stamp = tuple[int, int, int] | None
#: A file as `files_read` records it: its path, its stamp before it was read, and the digest of what was read while the
#: stamp could not yet be trusted (`UNSETTLED_NS`), else None.
Read = tuple[Path, Stamp, str | None]
_READ: ContextVar[list[Read] | None] = ContextVar("files_read", default=None)
#: How long after a file's modification an edit in place of the same size may leave its stamp as it was: the file
#: system's timestamp tick (a jiffy on ext4, up to 2 s on FAT and some network file systems).
UNSETTLED_NS = 2_000_000_000


def stamp_of(path: Path) -> Stamp:
    """`path`'s change stamp: its modified time, size and inode, so an edit that changes the size within the clock's
    tick or a file replaced by another (`write_text_atomic`) changes it too; an edit of the same size within the tick
    does not, which is why a file modified within `UNSETTLED_NS` is recorded with its digest (`files_read`)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _settled(stamp: Stamp) -> bool:
    """Whether a file of `stamp` was modified long enough ago (`UNSETTLED_NS`; a time ahead of the clock is not) that
    an edit now moves its modified time."""
    return stamp is None or time.time_ns() - stamp[0] >= UNSETTLED_NS


def _record(path: Path, stamp: Stamp, data: bytes | None) -> None:
    """Note `path` (its `stamp` before it was read, `data` what was read) for `files_read`, with its digest while the
    stamp alone cannot say it is unchanged."""
    if (read := _READ.get()) is not None:
        read.append((path, stamp, None if data is None or _settled(stamp) else sha256_bytes(data)))


def unchanged(read: list[Read]) -> list[Read] | None:
    """`read` (`files_read`'s records) as it stands now when no file in it changed, None when one did: its stamp, and
    for one recorded unsettled its content too (read again; its digest dropped once it has settled, so that the check
    is a stat again)."""
    now: list[Read] = []
    for path, stamp, digest in read:
        if stamp_of(path) != stamp:
            return None
        if digest is not None:
            try:
                if sha256_bytes(path.read_bytes()) != digest:
                    return None
            except OSError:
                return None
            digest = None if _settled(stamp) else digest
        now.append((path, stamp, digest))
    return now


@contextmanager
def files_read() -> Iterator[list[Read]]:
    """(path, stamp before reading, digest while unsettled) of every file `read_mapping` reads within the block, those
    it could not read too, and those of a block within it: what a cache of a loaded file (`loaded_file`) checks
    (`unchanged`), as a map-zones file's grades file, which no setting names, is read through the zones file."""
    outer = _READ.get()
    read: list[Read] = []
    token = _READ.set(read)
    try:
        yield read
    finally:
        _READ.reset(token)
        if outer is not None:
            outer.extend(read)


T = TypeVar("T")


class Same:
    """`value` as a cache's key by identity: what a loader is given that is no hashable value (the app's taxonomy)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.value is self.value


#: Loaded files kept (`loaded_file`): the sheet, the map's, the case routes' grid and zones, the call-out squads, the
#: cameras file and one checked scene per camera (a district's hundreds), and one description per report folder, which
#: `GET /reports` lists (a few years of daily, weekly and monthly reports).
LOADED_FILES_KEPT = 4096
_LOADED: OrderedDict[tuple[Callable[..., Any], tuple[Hashable, ...]], tuple[list[Read], Any]] = OrderedDict()
_LOADED_LOCK = threading.Lock()


def loaded_file(load: Callable[..., T], *args: Hashable) -> T:
    """`load(*args)` read once and again only when a file it read changes (`unchanged`: the stamp of each file
    `files_read` saw it read, a map-zones file's grades file too, and the content of one modified just before): the one cache of the configuration files
    routes read (the analytics sheet and map files, the grid and map zones a retype or a move reads, the reports'
    descriptions, the call-out list's squads, the cameras file, its grades and each checked scene), so a file edited while `serve` runs is taken at the next request. A `Same` arg keys by identity;
    `load` itself is a key, so pass a function, not a new lambda. An error (a `ConfigError`) is not kept. `load` may
    call `loaded_file` itself: the files of what it finds kept count as read by it."""
    key = (load, args)
    with _LOADED_LOCK:
        kept = _LOADED.get(key)
    if kept is not None and (now := unchanged(kept[0])) is not None:
        with _LOADED_LOCK:
            if _LOADED.get(key) is kept:
                _LOADED[key] = (now, kept[1])
                _LOADED.move_to_end(key)
        if (outer := _READ.get()) is not None:  # a loader of `loaded_file` calling it: its files are that loader's too
            outer.extend(now)
        return kept[1]
    with files_read() as read:
        value = load(*(a.value if isinstance(a, Same) else a for a in args))
    with _LOADED_LOCK:
        _LOADED[key] = (read, value)
        _LOADED.move_to_end(key)
        while len(_LOADED) > LOADED_FILES_KEPT:
            _LOADED.popitem(last=False)
    return value


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON file (by its suffix, `JSON_SUFFIXES`) whose top level must be a mapping; a key written
    twice in one mapping is refused (naming the key, and both lines in YAML) rather than read as the last one."""
    path = Path(path)
    stamp = stamp_of(path)
    kind = "JSON" if path.suffix.lower() in JSON_SUFFIXES else "YAML"
    try:
        data = path.read_bytes()
    except OSError as exc:
        _record(path, stamp, None)
        if isinstance(exc, FileNotFoundError):
            raise ConfigError(f"{path}: file not found") from None
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    _record(path, stamp, data)
    if what := _binary_kind(data):
        raise ConfigError(f"{path}: a {kind} file (text, as an editor writes it) is expected, and this is {what}")
    try:
        text = data.decode("utf-8-sig")  # Windows Notepad's "UTF-8 with BOM" too
    except UnicodeDecodeError as exc:  # an editor on a Chinese Windows saves GBK ("ANSI") by default
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8, not GBK/ANSI") from None
    try:
        parsed = json.loads(text, object_pairs_hook=_unique_json_object) if kind == "JSON" else yaml.load(text, Loader=_UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    if parsed is None and not text.strip():
        raise ConfigError(f"{path}: empty file")
    if not isinstance(parsed, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(parsed).__name__}")
    return parsed


SHOWN_INPUT_CHARS = 80  # a bad value longer than this is shown cut, with `…`


def _given(err: dict[str, Any]) -> str:
    """` (got '1分')`: the value a field refused, so `deduct: Input should be a valid number` says which line of the
    file is meant; nothing for a missing field, for a section (a mapping, or a list of them: the dotted field already
    points at it) or for text the reason already quotes (`unknown time zone 'Mars/Olympus'`)."""
    value = err.get("input")
    section = isinstance(value, dict) or isinstance(value, list) and any(isinstance(v, dict) for v in value)
    if err["type"] == "missing" or "input" not in err or section:
        return ""
    shown = repr(value)
    if isinstance(value, str) and shown in err["msg"]:
        return ""
    if len(shown) > SHOWN_INPUT_CHARS:
        shown = shown[:SHOWN_INPUT_CHARS - 1] + "…"
    return f" (got {shown})"


#: How a refusal worded for city staff joins its Chinese and its English: `多边形自相交 — polygon is self-intersecting`.
ZH_EN = " — "


def zh_en(message: str) -> tuple[str | None, str]:
    """A refusal's Chinese and English halves when it is worded Chinese first (`中文 — English`, as the polygon and text
    checks word theirs), so a report that says its own Chinese first can put each where it goes; (None, message)
    when it has no Chinese half."""
    zh, sep, en = message.partition(ZH_EN)
    if sep and any("\u4e00" <= ch <= "\u9fff" for ch in zh):
        return zh, en
    return None, message


#: pydantic's own checks worded in Chinese (`pydantic_zh`), for the half of a refusal city staff read: a text's length,
#: and a list's (a case's tags; `too_long` of a text measured after its validator is a text's: `_kind`).
PYDANTIC_ZH = {"string_too_long": "超过 {max_length} 个字符", "string_too_short": "少于 {min_length} 个字符",
               "too_long": "超过 {max_length} 项", "too_short": "少于 {min_length} 项"}
#: A text of an annotated type (`detect.text.OneLine`) is measured after its validator, and pydantic then calls a
#: text too long a Value's `too_long` ("at most 64 items"): the same check as `string_too_long`.
_TEXT_AFTER_VALIDATOR = {"too_long": "string_too_long", "too_short": "string_too_short"}


def _kind(error: dict[str, Any]) -> str:
    """The type of one of pydantic's errors, a text measured after its validator (`_TEXT_AFTER_VALIDATOR`) as the
    text check it is."""
    kind = error.get("type", "")
    return _TEXT_AFTER_VALIDATOR.get(kind, kind) if (error.get("ctx") or {}).get("field_type") == "Value" else kind


def pydantic_zh(error: dict[str, Any]) -> str | None:
    """The Chinese of one of pydantic's own errors (a text too long or too short, with its limit), None for the
    others: a model's own checks word theirs Chinese first (`zh_en`)."""
    template = PYDANTIC_ZH.get(_kind(error))
    return template.format(**error["ctx"]) if template else None


def pydantic_en(error: dict[str, Any]) -> str:
    """The English of one of pydantic's errors: its message, but a text measured after its validator worded as
    pydantic words a text's length ('String should have at most 64 characters'), not as a Value's ('at most 64
    items after validation, not 65'), which reads as a list to whoever typed a licence number or a note."""
    kind = _kind(error)
    return PydanticKnownError(kind, error["ctx"]).message() if kind != error.get("type") else str(error.get("msg", ""))


def validation_message(source: str, exc: ValidationError) -> str:
    """One line per problem: `source: dotted.field: reason (got value)`."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {pydantic_en(err)}{_given(err)}")
    return "\n".join(lines)


def validate_model(model: type[M], data: Any, source: str) -> M:
    """Validate already-parsed data; `source` names where it came from (file, request, camera)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc)) from None


def load_model(model: type[M], path: str | Path) -> M:
    """Read a YAML/JSON file and validate it as `model`."""
    return validate_model(model, read_mapping(path), str(path))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small configuration file (a model card, a promotion record) whole or not at all: a process
    killed mid-write must not leave a truncated `promoted.yaml` that every pipeline then refuses."""
    path = Path(path)
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all (`replaced_atomically`): a camera's snapshot that the service
    reads while `watch` replaces it, a saved rules state a stop killed mid-write."""
    path = Path(path)
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(data)
    return path


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` (same folder, so the rename cannot cross disks) to write, renamed onto `path`
    when the block ends and removed when it fails: a file written for minutes (a city's case export) is there
    whole or not at all, and a failed write leaves the file it was to replace as it was. An OSError naming the
    temporary file (a folder that cannot hold files, `path` a folder) is raised naming `path`, the file the user
    gave: the hidden name is nothing they can find or change."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename not in (tmp, str(tmp)):
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
