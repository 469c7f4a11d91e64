"""Verifier training data: photos labelled per image (0/1 per type), coarse boxes, and groups.

The format is the one of `street-scenes` (its README): `labels.csv` with `file` (relative to the
folder), `group` (same place / same day: one side of every split), one 0/1 column per label, and
optionally `boxes.csv` (`file`, `type`, `x1..y2` normalised) saying where a positive is. Reviewed
cases exported by `streetwatch data from-cases --verifier` use the same format, so the city's own
reviewed photos join the training.

Label columns map to violation types (`LABEL_TYPES`); `parking_motor` and `parking_nonmotor` both
train the one vehicle-context head. Every row is checked: a missing or unreadable file, a label
other than 0/1, or a photo labelled in two rows, stops loading with the file, the row and the reason; rows are never dropped silently
(a photo of an earlier `--data` folder, by content, is kept once with its labels merged, and noted)
(`uncertain` rows are counted and kept unless `--no-uncertain`; rows with every label cell empty, a
`to-label` sheet half filled in, are counted and left out).
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detect.config_io import ConfigError
from pipelines.tables import csv_cell, csv_text, csv_value
from pipelines.wording import counted

#: label column -> violation type whose head it trains
LABEL_TYPES = {
    "street_stall": "street_stall",
    "shopfront_spillover": "shopfront_spillover",
    "flyposting": "flyposting",
    "exposed_garbage": "exposed_garbage",
    "parking_motor": "parking",
    "parking_nonmotor": "parking",
}
PARKING = "parking"
"""The vehicle-context head's training name; it serves `illegal_parking` and `nonmotor_parking`."""


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file, the row and the reason."""


@dataclass
class Photo:
    file: str  # relative to the dataset folder
    path: Path
    group: str
    source: str  # first folder under images/ (mmj, stk, cn2 ...) or the dataset name
    labels: dict[str, int]  # head name -> 0/1 (a head missing here: not labelled for it)
    uncertain: bool = False
    street_scene: bool = True  # an outdoor public place is shown (where synthetic small ads may be pasted)
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)  # head name -> normalised boxes
    notes: str = ""  # the labeller's words (what the photo shows, close calls)
    origin: str = ""  # where the photo was taken from (labels.csv's source_repo@source_commit:source_path), when it says


@dataclass
class Dataset:
    root: Path
    photos: list[Photo]
    digest: str  # SHA-256 of labels.csv and boxes.csv: which labels the heads were trained on
    notes: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # every --data folder joined (load_datasets); empty: `root` alone

    @property
    def name(self) -> str:
        """What the card calls the data: each folder's name (`street-scenes + cases`). With `root`'s alone, a card
        trained on street-scenes and reviewed cases read as trained on street-scenes."""
        return " + ".join(f.name for f in self.folders or [self.root])

    def labels(self, head: str) -> np.ndarray:
        """0/1 per photo, -1 where the photo is not labelled for this head (reviewed cases of other types)."""
        return np.array([p.labels.get(head, -1) for p in self.photos])

    def close_call_negatives(self, head: str) -> np.ndarray:
        """Per photo: negative for this head and marked `uncertain` (a close call somewhere in its row, or two
        labellers disagreeing): the parking head does not train on these (pipelines.verifier.train)."""
        return np.array([p.uncertain and p.labels.get(head) == 0 for p in self.photos])

    def counts(self) -> dict:
        by_source = Counter(p.source for p in self.photos)
        heads = sorted({h for p in self.photos for h in p.labels})
        positives = {h: {s: sum(1 for p in self.photos if p.source == s and p.labels.get(h) == 1) for s in sorted(by_source)} for h in heads}
        return {"photos": len(self.photos), "groups": len({p.group for p in self.photos}), "by_source": dict(sorted(by_source.items())),
                "positives": positives, "uncertain": sum(p.uncertain for p in self.photos)}


def _source(rel: str, default: str) -> str:
    parts = Path(rel).parts
    return parts[1] if len(parts) > 2 and parts[0] == "images" else default


def _origin(row: dict) -> str:
    """`source_repo@source_commit:source_path` of a labels.csv row ('' without them): a detector dataset made from the
    photos records it per picture, so a model card leads back to the repository each photo came from."""
    repo, commit, path = ((row.get(k) or "").strip() for k in ("source_repo", "source_commit", "source_path"))
    return f"{repo}@{commit}:{path}" if repo else ""


class _Rows(csv.DictReader):
    """A dataset CSV's rows, each cell as it was before `write_rows` guarded it (`pipelines.tables.csv_value`)."""

    def __next__(self) -> dict:
        row = super().__next__()
        return {k: csv_value(v) if isinstance(v, str) else v for k, v in row.items()}


def dataset_rows(data: bytes, path: Path) -> csv.DictReader:
    """The rows of a CSV `write_rows` writes (labels.csv, boxes.csv, a verdicts sheet), each cell as `write_rows` was
    given it (`pipelines.tables.csv_text`: with or without Excel's byte-order mark, never GBK)."""
    try:
        return _Rows(io.StringIO(csv_text(data, str(path)), newline=""))
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None


def write_rows(path: Path, columns: list[str], rows: list[dict]) -> Path:
    """A dataset CSV (labels.csv, boxes.csv, a validation sheet) as UTF-8 with a byte-order mark: Excel and WPS, where
    people label and check these, otherwise show the Chinese group and camera names garbled. Keys of a row that are
    not columns are left out, columns a row lacks are empty. Text a spreadsheet would run as a formula (a photo's path
    or a camera id such as `=HYPERLINK(…)`, which people open these sheets in) is written as text (`csv_cell`), and
    `dataset_rows` reads it back as it was, so the trainer sees the same names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return path


def head_labels(cells: dict[str, str]) -> dict[str, int]:
    """A row's label per head from its label cells ('0', '1' or '' not labelled): 1 when any column of the head says 1,
    0 only when every column of the head the file has says 0. Why: `parking_motor` and `parking_nonmotor` train the one
    parking head, and a photo known to show no obstructive car (a case rejected as illegal_parking, a to-label row
    answered for its `picked_for` column alone) says nothing of the bicycles on it: read as a parking negative it
    taught the head that a pavement of shared bikes is no parking, and clashed with a folder labelling it 1."""
    by_head: dict[str, list[str]] = defaultdict(list)
    for col, value in cells.items():
        by_head[LABEL_TYPES[col]].append(value)
    labels: dict[str, int] = {}
    for head, values in by_head.items():
        if "1" in values:
            labels[head] = 1
        elif all(v == "0" for v in values):
            labels[head] = 0
    return labels


def _blank_row(row: dict) -> bool:
    """Whether a CSV row has no value in any cell (an extra field past the header is a list of cells)."""
    cells = [c for v in row.values() for c in (v if isinstance(v, list) else [v])]
    return not any((c or "").strip() for c in cells)


def load_datasets(roots: list[Path], *, uncertain: bool = True) -> Dataset:
    """Several labelled folders as one dataset (street-scenes plus reviewed cases, say); the digest covers all. A photo
    (by content) already in an earlier folder is kept once (`_one_per_content`); one folder alone loads as it is."""
    parts = [load_dataset(r, uncertain=uncertain) for r in roots]
    if len(parts) == 1:
        return parts[0]
    digest = hashlib.sha256("|".join(p.digest for p in parts).encode()).hexdigest()
    photos, notes = _one_per_content(parts)
    return Dataset(parts[0].root, photos, digest, [n for p in parts for n in p.notes] + notes, [p.root for p in parts])


def _one_per_content(parts: list[Dataset]) -> tuple[list[Photo], list[str]]:
    """The photos of `parts`, a photo whose content (SHA-256) an earlier folder has already left out, its labels merged
    into that folder's row. A to-label sheet and a `from-cases --verifier` folder may both name one photo: counted
    twice it weighed double in every figure and could sit on both sides of a split. Labels that disagree (one
    says 1, the other 0) are refused naming both rows: which is right is for a person to say. Inside one folder
    nothing changes (what `street-scenes` loads, and so its heads, stays as trained)."""
    from detect.digests import sha256_file

    kept: list[Photo] = []
    seen: dict[str, tuple[Photo, Path]] = {}  # content -> its first photo and folder
    notes: list[str] = []
    for part in parts:
        own: dict[str, Photo] = {}
        dropped = 0
        for photo in part.photos:
            key = sha256_file(photo.path)
            first = seen.get(key)
            if first is None:
                kept.append(photo)
                own.setdefault(key, photo)
                continue
            _merge_into(first[0], first[1], photo, part.root)
            dropped += 1
        for key, photo in own.items():
            seen.setdefault(key, (photo, part.root))
        if dropped:
            notes.append(f"{part.root}: {dropped} photos are (by content) photos of an earlier --data folder: "
                         "kept once, their labels merged into its rows")
    return kept, notes


def _merge_into(first: Photo, first_root: Path, later: Photo, later_root: Path) -> None:
    """Add to `first` what `later`, the same photo in a later folder, says: the types only it labels, its boxes, its
    close call and notes. DatasetError naming both rows when they label a type differently."""
    for head, value in later.labels.items():
        if first.labels.get(head, value) != value:
            raise DatasetError(f"{first_root / 'labels.csv'} ({first.file}) and {later_root / 'labels.csv'} ({later.file}) are "
                               f"the same photo but label {head} {first.labels[head]} and {value}: correct or remove one row")
    for head, value in later.labels.items():
        first.labels.setdefault(head, value)
    for head, boxes in later.boxes.items():
        first.boxes.setdefault(head, []).extend(b for b in boxes if b not in first.boxes[head])
    first.uncertain = first.uncertain or later.uncertain
    first.notes = "; ".join(n for n in dict.fromkeys((first.notes, later.notes)) if n)


def load_dataset(root: str | Path, *, uncertain: bool = True, check_files: bool = True) -> Dataset:
    """Read and check `labels.csv` (+ `boxes.csv`) under `root`."""
    root = Path(root)
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise DatasetError(f"{labels_csv}: not found (a verifier dataset has labels.csv, see docs/verifier.md)")
    data = labels_csv.read_bytes()
    digest = hashlib.sha256(data)
    reader = dataset_rows(data, labels_csv)
    columns = reader.fieldnames or []
    missing = [c for c in ("file", "group") if c not in columns]
    if missing:
        raise DatasetError(f"{labels_csv}: missing column(s) {', '.join(missing)}")
    for col in columns:
        meant = _meant_label(col)
        if meant:
            raise DatasetError(f"{labels_csv}: column {col!r} is no label column: did you mean {meant!r}? (its labels would be "
                               f"left out unread; label columns: {', '.join(LABEL_TYPES)})")
    label_cols = [c for c in columns if c in LABEL_TYPES]
    if not label_cols:
        raise DatasetError(f"{labels_csv}: no label column (expected some of {', '.join(LABEL_TYPES)})")
    photos, notes, skipped_uncertain, unlabelled, partial = [], [], 0, 0, 0
    first_row: dict[str, int] = {}  # a photo labelled in two rows would count twice in every figure, maybe in two folds
    listed: set[str] = set()  # every photo labels.csv names, used or left out
    blank = 0
    for n, row in enumerate(reader, start=2):
        if _blank_row(row):  # Excel and WPS save a row whose cells were cleared as `,,,,`: nothing to read there
            blank += 1
            continue
        rel = (row.get("file") or "").strip()
        if not rel:
            raise DatasetError(f"{labels_csv}: row {n}: empty file name")
        cells: dict[str, str] = {}
        for col in label_cols:
            value = cells[col] = (row.get(col) or "").strip()
            if value not in ("0", "1", ""):
                raise DatasetError(f"{labels_csv}: row {n} ({rel}): {col} is {value!r}, expected 0, 1 or empty (not labelled)")
        labels = head_labels(cells)
        path = root / rel
        if check_files and not path.is_file():
            raise DatasetError(f"{labels_csv}: row {n}: {path} not found")
        listed.add(rel)
        if not labels:  # a `to-label` row nobody answered yet, or one answering a parking column alone with 0
            partial += any(cells.values())
            unlabelled += not any(cells.values())
            continue
        if rel in first_row:
            raise DatasetError(f"{labels_csv}: row {n} ({rel}): the photo is already in row {first_row[rel]}; keep one row per photo")
        first_row[rel] = n
        is_uncertain = (row.get("uncertain") or "0").strip() == "1"
        if is_uncertain and not uncertain:
            skipped_uncertain += 1
            continue
        street = (row.get("street_scene") or "1").strip() != "0"
        photos.append(Photo(rel, path, (row.get("group") or "").strip() or rel, _source(rel, root.name), labels, is_uncertain, street,
                            notes=(row.get("notes") or "").strip(), origin=_origin(row)))
    if skipped_uncertain:
        notes.append(f"{skipped_uncertain} rows with uncertain=1 left out (--no-uncertain)")
    if blank:
        notes.append(f"{labels_csv}: {blank} blank rows (every cell empty) passed over")
    if unlabelled:
        notes.append(f"{labels_csv}: {counted(unlabelled, 'row')} with every label cell empty left out (labelled for no type)")
    if partial:
        notes.append(f"{labels_csv}: {partial} rows label one parking column 0 and leave the other empty, which says nothing "
                     "for the parking head (parking_motor and parking_nonmotor train it together): left out")
    boxes_csv = root / "boxes.csv"
    if boxes_csv.is_file():
        data = boxes_csv.read_bytes()
        digest.update(data)
        by_file = {p.file: p for p in photos}
        strays: list[str] = []
        other_types: Counter[str] = Counter()
        for n, row in enumerate(dataset_rows(data, boxes_csv), start=2):
            type_name = (row.get("type") or "").strip()
            kind = LABEL_TYPES.get(type_name)
            file = (row.get("file") or "").strip()
            photo = by_file.get(file)
            if file not in listed:  # a typo in the file name would drop the box unsaid
                strays.append(f"row {n} ({file or 'no file'})")
                continue
            meant = _meant_label(type_name)
            if meant:
                raise DatasetError(f"{boxes_csv}: row {n}: type {type_name!r} is no label column: did you mean {meant!r}?")
            if kind is None:
                other_types[type_name or "no type"] += 1
                continue
            if photo is None:
                continue  # a row left out above
            try:
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{boxes_csv}: row {n}: x1, y1, x2, y2 must be numbers") from None
            if not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
                raise DatasetError(f"{boxes_csv}: row {n}: box {box} is not inside 0..1 with x1 < x2, y1 < y2")
            photo.boxes.setdefault(kind, []).append(box)  # type: ignore[arg-type]
        if strays:
            notes.append(f"{boxes_csv}: {counted(len(strays), 'row')} {'names' if len(strays) == 1 else 'name'} a photo labels.csv does not list, left out: "
                         + ", ".join(strays[:5]) + (" ..." if len(strays) > 5 else ""))
        if other_types:
            notes.append(f"{boxes_csv}: {sum(other_types.values())} rows of a type no head trains on left out: "
                         + ", ".join(f"{t} {k}" for t, k in sorted(other_types.items())))
    return Dataset(root, photos, digest.hexdigest(), notes)


def _meant_label(name: str) -> str | None:
    """The label column a column or box type named `name` was likely meant to be (`shopfront_spilover`, `Street_Stall`),
    None for a label column itself, `street_scene`, `to-label`'s `p_<type>` and any name unlike them. Why: an unknown
    column is passed over (a sheet carries notes and provenance too), so a misspelt header left every label in it
    unread, and training went on without a word on what was left out."""
    from difflib import get_close_matches

    if name in LABEL_TYPES or name == "street_scene" or name.startswith("p_"):
        return None
    match = get_close_matches(name.lower(), list(LABEL_TYPES), n=1, cutoff=0.8)
    return match[0] if match else None


def group_folds(dataset: Dataset, head: str, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, validation) index splits that keep every group on one side and spread each
    source's positives across the folds."""
    y = np.maximum(dataset.labels(head), 0)
    sources = sorted({p.source for p in dataset.photos})
    strat = np.array([y[i] + 2 * sources.index(p.source) for i, p in enumerate(dataset.photos)])
    return stratified_group_folds(strat, np.array([p.group for p in dataset.photos]), k, seed)


def stratified_group_folds(strat: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k splits keeping each group whole and each `strat` class spread over the folds as far as groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    with warnings.catch_warnings():  # a class with fewer photos than folds (2 stalls in a source) is the data's nature
        warnings.filterwarnings("ignore", "The least populated class in y", UserWarning)
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(strat)), strat, groups))


def positives_by_source(dataset: Dataset, head: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for p in dataset.photos:
        out[p.source] += p.labels.get(head, 0)
    return dict(out)
