"""`data import --format street-scenes`: photos labelled per image with coarse boxes (labels.csv + boxes.csv, the
`street-scenes` format, docs/verifier.md) as a detector dataset version, so that a detector can learn what a stall,
a shop's goods or a small ad look like (issue #13: the verifier heads' frozen features fall short on real photos).

It lives here rather than beside the YOLO and COCO importers (pipelines.retrain.importers) because it reads the folder
with this package's reader (`load_dataset`, which checks every row and box), and this package already builds on
pipelines.retrain: the import contract allows no cycle between the two.

Types map onto the project classes (datasets/classes.yaml) by `TYPE_CLASSES`. Parking imports no class: a parked car
is a COCO vehicle the stock detector already finds, and whether it obstructs is a matter of its place (rules,
verifier), not of its look. Per photo, judged on the imported types alone (`left_out_reason`):

- positive for an imported type with boxes for every imported type it is positive for: its boxes go in (boxes of
  other types are dropped);
- negative for every imported type: a background picture (an empty label file), the hard negatives a detector needs,
  marked negative for the imported classes alone (`FileEntry.negative_for`): the photo may show a shop sign or a
  parked car, so `data merge` leaves it out of a version that trains other classes;
- otherwise left out and counted by reason, never silently: positive with no box for the type (the sticker gallery's
  postings, the Chinese photos: an empty label would teach the posting as background), `uncertain` = 1 (close calls,
  unless asked for), a type not labelled (empty cell), a box of a type the row labels 0.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from detect.imageio import ImageReadError, decode_image
from pipelines.retrain.dataset import Dataset, DatasetError, Item, format_label, write_dataset
from pipelines.retrain.importers import group_of
from pipelines.verifier.data import DatasetError as LabelsError
from pipelines.verifier.data import Photo, load_dataset

#: label column -> project class its boxes train (parking: none, see the module docstring)
TYPE_CLASSES = {"street_stall": "stall", "shopfront_spillover": "goods_display", "flyposting": "small_ad",
                "exposed_garbage": "garbage"}
UNCERTAIN = "uncertain=1 (close calls: --uncertain imports them)"
NO_BOX = "without a box for it"
WHY_NO_BOX = "a positive without its box is left out: an empty label would teach what it shows as background"


def parse_types(text: str | None) -> list[str]:
    """`--types a,b`: the label columns to import, in `TYPE_CLASSES` order (so the class ids, and the digest, do not
    depend on how they were typed); None or '' is all of them."""
    if not text:
        return list(TYPE_CLASSES)
    asked = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(asked - TYPE_CLASSES.keys())
    if unknown or not asked:
        parking = " (parking imports no class: a parked car is a COCO vehicle, its obstruction is its place)" \
            if any(t.startswith("parking") for t in unknown) else ""
        raise DatasetError(f"--types {text}: unknown type(s) {', '.join(unknown) or '(none given)'}; choose from "
                           f"{', '.join(TYPE_CLASSES)}{parking}")
    return [t for t in TYPE_CLASSES if t in asked]


def left_out_reason(photo: Photo, types: list[str], uncertain: bool) -> str | None:
    """Why `photo` cannot go into a detector dataset of `types` (None: it can; see the module docstring)."""
    if photo.uncertain and not uncertain:
        return UNCERTAIN
    for t in types:
        if t not in photo.labels:
            return f"not labelled for {t}"
    for t in types:
        if photo.labels[t] == 1 and not photo.boxes.get(t):
            return f"positive for {t} {NO_BOX}"
        if photo.labels[t] == 0 and photo.boxes.get(t):
            return f"a {t} box on a photo labelled 0 for it"
    return None


def yolo_rows(photo: Photo, types: list[str]) -> np.ndarray:
    """The photo's boxes of `types` as YOLO rows (class cx cy w h); the class id is the type's place in `types`."""
    rows = [[i, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
            for i, t in enumerate(types) for x1, y1, x2, y2 in photo.boxes.get(t, [])]
    return np.array(rows, dtype=float).reshape(-1, 5)


def _readable(photo: Photo, labels_csv: Path) -> None:
    """DatasetError naming the photo and its list when the file is no picture the project's reader decodes (a JPEG at
    1/8 scale: cheap). `detect.imageio`, not `PIL.Image.open`: once ultralytics is imported, its patched `Image.open`
    answers a file that is no image by trying to install pi-heif (ModuleNotFoundError offline)."""
    try:
        decode_image(photo.path, str(photo.path), max_side=1)
    except ImageReadError as exc:
        raise DatasetError(f"{labels_csv} ({photo.file}): {photo.path} is not a readable image: {exc.reason}") from None


def import_street_scenes(src: Path, out: Path, *, types: list[str] | None = None, uncertain: bool = False,
                         name: str | None = None, group_regex: str | None = None) -> Dataset:
    """A detector dataset version of the labelled photos under `src` (labels.csv, boxes.csv, the photos), copied to
    `out`; each picture's group is its `group` cell (or `group_regex` on its file name), its source the repository it
    came from. What is left out is counted in the version's `left_out`."""
    src = Path(src)
    types = types or list(TYPE_CLASSES)
    try:
        labelled = load_dataset(src)  # every row, the uncertain ones too: counted here, under this command's option
    except LabelsError as exc:
        raise DatasetError(str(exc)) from None
    classes = [TYPE_CLASSES[t] for t in types]
    items: list[Item] = []
    left: Counter[str] = Counter()
    for photo in labelled.photos:
        if why := left_out_reason(photo, types, uncertain):
            left[why] += 1
            continue
        _readable(photo, src / "labels.csv")
        rows = yolo_rows(photo, types)
        items.append(Item(src=photo.path, name="__".join(p for p in Path(photo.file).parts if p != "images"),
                          label=format_label(rows), group=group_of(photo.file, group_regex) if group_regex else photo.group,
                          source=photo.origin or photo.file, negative_for=None if len(rows) else classes))
    summary = ", ".join(f"{n} {why}" for why, n in sorted(left.items(), key=lambda kv: (-kv[1], kv[0])))
    summary += f" ({WHY_NO_BOX})" if any(NO_BOX in why for why in left) else ""
    if not items:
        raise DatasetError(f"{src}: none of its {len(labelled.photos)} labelled photos can be imported for "
                           f"{', '.join(types)}: {summary}")
    left_out = ([f"{sum(left.values())} of {len(labelled.photos)} labelled photos: {summary}"] if left else []) + labelled.notes
    how = f"import street-scenes {src} types={','.join(types)}" + (" uncertain" if uncertain else "")
    return write_dataset(out, items, classes, name=name or src.name, source=how,
                         left_out=left_out)
