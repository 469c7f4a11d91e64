"""Dataset versions: a YOLO-layout folder plus a manifest that names every file by its hash.

A dataset version is a folder

    images/<name>.jpg      the pictures (copied on import, hard-linked between versions)
    labels/<name>.txt      YOLO boxes `class cx cy w h` (normalised); an empty file = a negative
    manifest.json          classes, source, parents, counts, every file with sha256/group/split
    all.txt, train.txt, val.txt   image lists Ultralytics reads (`./images/...`)
    data.yaml              Ultralytics dataset file for this folder

Versions are never edited in place: import, merge, split and from-cases each write a new
folder. The manifest digest depends only on content (classes, files, labels, split assignment),
so a model card that records it names exactly what the model was trained on, and the same
content always gets the same digest. Groups (camera, location, source photo) travel with each
file so that splits can keep one place on one side.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field

from detect.config_io import ConfigError, load_model
from detect import imageio
from detect.digests import sha256_file

MANIFEST = "manifest.json"
SPLITS = ("train", "val")
#: What the project reads, less HEIC (Ultralytics' trainer would fetch pi-heif at run time for it) and the JPEG
#: suffixes its dataset loader does not list (`.jfif`, `.jpe`: it would train without those images).
IMAGE_SUFFIXES = imageio.IMAGE_SUFFIXES - {".heic", ".heif", ".jfif", ".jpe"}
#: A box may overhang the image by this fraction of its size (labelling tools round at the edge).
EDGE_TOLERANCE = 0.01


class DatasetError(ValueError):
    """A dataset that cannot be read or written; the message names the folder or file and why."""


class FileEntry(BaseModel):
    """One image of a dataset version."""

    image: str = Field(title="Image", description="Path relative to the dataset folder (images/...).")
    sha256: str = Field(title="Image SHA-256")
    label: str | None = Field(None, title="Label file", description="labels/... path; None when the image has none.")
    label_sha256: str | None = Field(None, title="Label SHA-256")
    boxes: int = Field(0, title="Boxes", ge=0)
    group: str = Field(title="Group", description="Location/camera/source id; a split keeps a group on one side.")
    split: Literal["train", "val"] | None = Field(None, title="Split")
    source: str = Field("", title="Source", description="Where the file came from (original path, case id).")
    note: str = Field("", title="Note", description="E.g. why a hard negative was rejected in review.")
    negative_for: list[str] | None = Field(
        None, title="Negative for", description="The classes an empty label file is known to hold none of (a rejected "
        "case's: its type's classes); None: every class of the version. `data merge` leaves the picture out of a "
        "version that trains another class, whose objects it may show.")


class Manifest(BaseModel):
    """What a dataset version contains; `digest` identifies its content."""

    name: str = Field(title="Name")
    digest: str = Field(title="Content digest", description="SHA-256 over classes, files, labels and splits.")
    created: datetime = Field(title="Created (UTC)")
    classes: list[str] = Field(title="Classes", description="Class names by id (YOLO class index).")
    source: str = Field("", title="Source", description="How this version was made (command and inputs).")
    parents: list[str] = Field(default_factory=list, title="Parent digests")
    counts: dict = Field(default_factory=dict, title="Counts", description="Images, boxes, negatives, per class and split.")
    left_out: list[str] = Field(default_factory=list, title="Left out",
                                description="What of its inputs the version left out, and why (`data merge`).")
    files: list[FileEntry] = Field(title="Files")


@dataclass
class Item:
    """One image to put into a new version: where it comes from and what its label file holds."""

    src: Path
    name: str  # file name under images/
    label: bytes | None  # label file content; None = no label file
    group: str
    source: str = ""
    note: str = ""
    split: str | None = None
    negative_for: list[str] | None = None  # FileEntry.negative_for


@dataclass
class LabelFile:
    """Parsed YOLO label file: valid boxes (n, 5: class cx cy w h) and one problem per bad line."""

    boxes: np.ndarray
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0


def parse_labels(data: bytes, nc: int, size: tuple[int, int] | None = None) -> LabelFile:
    """Parse and validate label bytes; bad lines are reported (`line N: reason`) and left out.

    This is the one definition of a valid box: 5 numbers, an integer class id below `nc`,
    normalised centre and size in 0..1, positive size, not overhanging the image beyond
    `EDGE_TOLERANCE`, and (with the image `size` (w, h)) at least 2 pixels each way.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return LabelFile(np.zeros((0, 5)), ["not UTF-8 text (binary or wrong encoding)"])
    rows, problems, seen, dups = [], [], set(), 0
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            hint = " (a segmentation polygon? convert it to its box)" if len(parts) > 5 and len(parts) % 2 else ""
            problems.append(f"line {no}: expected 5 fields 'class cx cy w h', got {len(parts)}{hint}")
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            problems.append(f"line {no}: not numbers: {line.strip()[:60]!r}")
            continue
        cls, cx, cy, w, h = values
        if not np.isfinite(values).all():
            problems.append(f"line {no}: non-finite value")
        elif cls != int(cls) or not 0 <= cls < nc:
            problems.append(f"line {no}: class id {parts[0]} unknown (dataset has {nc} classes: 0..{nc - 1})")
        elif min(cx, cy, w, h) < 0 or max(cx, cy, w, h) > 1:
            problems.append(f"line {no}: coordinates out of range 0..1 (not normalised?): {' '.join(parts[1:])}")
        elif w <= 0 or h <= 0:
            problems.append(f"line {no}: degenerate box (zero width or height)")
        elif min(cx - w / 2, cy - h / 2) < -EDGE_TOLERANCE or max(cx + w / 2, cy + h / 2) > 1 + EDGE_TOLERANCE:
            problems.append(f"line {no}: box extends beyond the image: {' '.join(parts[1:])}")
        elif size and (w * size[0] < 2 or h * size[1] < 2):
            problems.append(f"line {no}: degenerate box ({w * size[0]:.1f}x{h * size[1]:.1f} px)")
        else:
            key = tuple(round(v, 6) for v in values)
            if key in seen:
                dups += 1
                continue
            seen.add(key)
            rows.append(values)
    return LabelFile(np.array(rows, dtype=float).reshape(-1, 5), problems, dups)


def content_digest(classes: list[str], files: list[FileEntry]) -> str:
    """SHA-256 over what a model learns from: class order, images, labels, split assignment."""
    body = {
        "classes": classes,
        "files": sorted((f.image, f.sha256, f.label_sha256, f.split) for f in files),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def count(classes: list[str], files: list[FileEntry], boxes: dict[str, np.ndarray]) -> dict:
    """Images, boxes, negatives and per-class images/boxes, overall and per split."""

    def block(entries: list[FileEntry]) -> dict:
        per_boxes, per_images = Counter(), Counter()
        for e in entries:
            ids = boxes.get(e.image, np.zeros((0, 5)))[:, 0].astype(int)
            per_boxes.update(ids.tolist())
            per_images.update(set(ids.tolist()))
        return {
            "images": len(entries),
            "boxes": int(sum(per_boxes.values())),
            "negatives": sum(1 for e in entries if e.label is not None and e.image in boxes and len(boxes[e.image]) == 0),
            "unlabelled": sum(1 for e in entries if e.label is None),
            "groups": len({e.group for e in entries}),
            "per_class": {c: {"images": per_images[i], "boxes": per_boxes[i]} for i, c in enumerate(classes)},
        }

    out = block(files)
    if any(f.split for f in files):
        out["splits"] = {s: block([f for f in files if f.split == s]) for s in SPLITS}
    return out


class Dataset:
    """A dataset version folder with its manifest (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DatasetError(
                f"{self.root}: not a dataset version (no {MANIFEST}); make one with `streetwatch data import`"
            )
        try:
            self.manifest = load_model(Manifest, path)
        except ConfigError as exc:
            raise DatasetError(str(exc)) from None

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def is_split(self) -> bool:
        return any(f.split for f in self.manifest.files)

    def files(self, split: str | None = None) -> list[FileEntry]:
        return [f for f in self.manifest.files if split is None or f.split == split]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def labels(self, entry: FileEntry) -> LabelFile:
        """The valid boxes of an entry (bad lines left out; `data check` reports them)."""
        if entry.label is None or not self.path(entry.label).is_file():
            return LabelFile(np.zeros((0, 5)))
        return parse_labels(self.path(entry.label).read_bytes(), len(self.classes))

    def eval_split(self) -> str | None:
        """The split evaluation uses: `val` when split, else None (all images)."""
        return "val" if self.is_split else None

    def ultralytics_yaml(self, dest: Path, root: Path | None = None) -> Path:
        """Write an Ultralytics data YAML for this folder (absolute path, so it works from anywhere), or for `root`
        where the folder is to be moved (a version written aside, `write_dataset`)."""
        lists = ("train.txt", "val.txt") if self.is_split else ("all.txt", "all.txt")
        data = {"path": str((root or self.root).resolve()), "train": lists[0], "val": lists[1],
                "names": dict(enumerate(self.classes))}
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(f"# dataset {self.name} digest {self.digest}\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return dest


def write_dataset(
    out: str | Path,
    items: list[Item],
    classes: list[str],
    *,
    name: str,
    source: str,
    parents: list[str] | None = None,
    link: bool = False,
    left_out: list[str] | None = None,
) -> Dataset:
    """Create a new dataset version folder from `items` (refuses to overwrite a non-empty folder).

    `link`: hard-link images instead of copying them (for versions derived from other versions;
    imports copy, so a version never changes when its source does). `left_out`: what of its inputs the version left
    out and why (`Manifest.left_out`).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: already exists and is not empty (dataset versions are never overwritten)")
    # a label file is named by its picture's name without the suffix (as Ultralytics finds it): a.jpg and a.png
    # would write one labels/a.txt, the second overwriting the first
    stems = Counter(Path(i.name).stem for i in items)
    clashes = sorted(i.name for i in items if stems[Path(i.name).stem] > 1)
    if clashes:
        raise DatasetError(f"{out}: two inputs want the same file name (label files go by the name without its "
                           f"suffix): {', '.join(clashes[:6])}")
    with _version_folder(out) as tmp:
        _write_version(tmp, out, items, classes, name=name, source=source, parents=parents, link=link, left_out=left_out)
    return Dataset(out)


@contextmanager
def _version_folder(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out` to write a version in, renamed onto `out` (absent or empty) when the block ends
    and removed when it fails: an import, split, merge or from-cases stopped half way (Ctrl-C, a full disk, a picture
    that cannot be read) left images and labels without a manifest at `out`, which the same command run again
    refused as a version that exists ('never overwritten'). Beside `out`, so hard links and the rename stay on its disk."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.resolve().with_name(f".{out.resolve().name}.{os.getpid()}.partial")
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, out)  # replaces an empty folder, as `write_dataset` accepts one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_version(tmp: Path, out: Path, items: list[Item], classes: list[str], *, name: str, source: str,
                   parents: list[str] | None, link: bool, left_out: list[str] | None) -> None:
    """The pictures, labels, lists, manifest and data.yaml of the version `write_dataset` makes at `out`, in `tmp`."""
    (tmp / "images").mkdir()
    (tmp / "labels").mkdir()
    files, boxes = [], {}
    for item in sorted(items, key=lambda i: i.name):
        image = tmp / "images" / item.name
        _place(item.src, image, link)
        entry = FileEntry(image=f"images/{item.name}", sha256=sha256_file(image), group=item.group,
                          split=item.split, source=item.source, note=item.note, negative_for=item.negative_for)
        if item.label is not None:
            label = tmp / "labels" / (Path(item.name).stem + ".txt")
            label.write_bytes(item.label)
            parsed = parse_labels(item.label, len(classes))
            boxes[entry.image] = parsed.boxes
            entry = entry.model_copy(update={"label": f"labels/{label.name}", "boxes": len(parsed.boxes),
                                             "label_sha256": hashlib.sha256(item.label).hexdigest()})
        files.append(entry)
    manifest = Manifest(
        name=name,
        digest=content_digest(classes, files),
        created=datetime.now(timezone.utc),
        classes=classes,
        source=source,
        parents=parents or [],
        counts=count(classes, files, boxes),
        left_out=left_out or [],
        files=files,
    )
    for list_name, selected in [("all", files)] + [(s, [f for f in files if f.split == s]) for s in SPLITS]:
        if list_name == "all" or selected:
            (tmp / f"{list_name}.txt").write_text("".join(f"./{f.image}\n" for f in selected))
    (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=1))
    Dataset(tmp).ultralytics_yaml(tmp / "data.yaml", root=out)


def _place(src: Path, dst: Path, link: bool) -> None:
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def format_label(rows: np.ndarray) -> bytes:
    """YOLO label text for (n, 5) rows."""
    return "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows).encode()


def derive(dataset: Dataset, entry: FileEntry, *, split: str | None = ..., label: bytes | None = ...,
           name: str | None = None, group: str | None = None) -> Item:
    """An `Item` that carries an existing entry into a new version (optionally changed)."""
    if label is ...:
        label = dataset.path(entry.label).read_bytes() if entry.label and dataset.path(entry.label).is_file() else None
    return Item(
        src=dataset.path(entry.image),
        name=name or Path(entry.image).name,
        label=label,
        group=group if group is not None else entry.group,
        source=entry.source,
        note=entry.note,
        split=entry.split if split is ... else split,
        negative_for=entry.negative_for,
    )
