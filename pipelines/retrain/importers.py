"""`data import`: YOLO folders (Ultralytics, Roboflow, CVAT "YOLO 1.1") and COCO JSON -> a version.

Imports copy pictures and label files as they are (COCO boxes are converted to YOLO) and
report what cannot be imported per file; bad label lines are kept so that `data check` shows
them with line numbers instead of an import quietly "fixing" someone's labels.

Groups: `group_regex` is matched against each file name and its first capture group (or the
whole match) becomes the group (`img_(\\d+)\\d\\.` puts img_170..img_179 in group 17). Without it
each picture is its own group, except that Roboflow's augmented copies (`x_jpg.rf.<hash>.jpg`)
share their source picture's group.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pipelines.retrain.check import Finding, is_image, scan_orphans
from pipelines.retrain.dataset import Dataset, DatasetError, Item, format_label, write_dataset

_ROBOFLOW = re.compile(r"_(jpe?g|png|webp)\.rf\.[0-9a-f]+$", re.IGNORECASE)
CLASS_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names")


def group_of(file_name: str, group_regex: str | None) -> str:
    """The group key of a file (see module docstring)."""
    stem = Path(file_name).stem
    if group_regex:
        m = re.search(group_regex, Path(file_name).name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return _ROBOFLOW.sub("", stem)


def read_class_names(src: Path, classes_file: Path | None = None) -> list[str]:
    """Class names from --classes, or data.yaml/dataset.yaml (`names`), classes.txt or obj.names in `src`."""
    candidates = [classes_file] if classes_file else [src / n for n in CLASS_FILES]
    for path in candidates:
        if path is None or not path.is_file():
            continue
        if path.suffix in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise DatasetError(f"{path}: not valid YAML: {exc}") from None
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict):
                if sorted(int(k) for k in names) != list(range(len(names))):
                    raise DatasetError(f"{path}: names ids must be 0..{len(names) - 1} without gaps")
                names = [names[k] for k in sorted(names, key=int)]
            if not isinstance(names, list) or not names:
                raise DatasetError(f"{path}: no `names` list")
            nc = data.get("nc")
            if nc is not None and nc != len(names):
                raise DatasetError(f"{path}: nc is {nc} but {len(names)} names are listed (wrong class count)")
            return [str(n) for n in names]
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise DatasetError(f"{path}: empty class list")
        return names
    raise DatasetError(f"{src}: no class names found (looked for {', '.join(CLASS_FILES)}); pass --classes FILE")


def label_path_for(image: Path) -> Path:
    """YOLO convention: .../images/x.jpg -> .../labels/x.txt; without an images/ folder, beside it."""
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
        return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def import_yolo(src: Path, out: Path, *, name: str | None = None, group_regex: str | None = None,
                classes_file: Path | None = None) -> tuple[Dataset, list[Finding]]:
    """Import a YOLO folder; returns the new version and what could not be imported."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder")
    classes = read_class_names(src, classes_file)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    images = [p for p in files if is_image(p) and "labels" not in p.relative_to(src).parts]
    if not images:
        raise DatasetError(f"{src}: no images found")
    labels = [p for p in files if p.suffix == ".txt" and p.name not in CLASS_FILES and
              ("labels" in p.relative_to(src).parts or p.parent.name.startswith("obj_"))]
    findings = scan_orphans(images, labels, label_path_for)
    items = []
    for image in images:
        rel = image.relative_to(src)
        label = label_path_for(image)
        items.append(Item(
            src=image,
            name="__".join(p for p in rel.parts if p != "images"),
            label=label.read_bytes() if label.is_file() else None,
            group=group_of(image.name, group_regex),
            source=str(rel),
        ))
    dataset = write_dataset(out, items, classes, name=name or src.name, source=f"import yolo {src}")
    return dataset, findings


def import_coco(ann: Path, out: Path, *, images_dir: Path | None = None, name: str | None = None,
                group_regex: str | None = None) -> tuple[Dataset, list[Finding]]:
    """Import a COCO detection JSON (boxes [x, y, w, h] in pixels); images listed without
    annotations become negatives."""
    ann = Path(ann)
    if ann.is_dir():
        raise DatasetError(f"{ann}: a folder; COCO is read from its annotation file (`data import ANNOTATIONS.json "
                           "[--images FOLDER]`), and a folder as YOLO (--format yolo) or street-scenes")
    try:
        coco = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{ann}: not a readable COCO JSON: {exc}") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{ann}: COCO JSON needs lists `images`, `annotations` and `categories`")
    images_dir = Path(images_dir) if images_dir else _coco_images_dir(ann)
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    classes = [str(c["name"]) for c in cats]
    findings: list[Finding] = []
    by_image: dict[int, list[list[float]]] = defaultdict(list)
    image_ids = {im.get("id") for im in coco["images"]}
    for a in coco["annotations"]:
        where = f"{ann.name}: annotation {a.get('id')}"
        if a.get("image_id") not in image_ids:
            findings.append(Finding(where, f"refers to unknown image_id {a.get('image_id')}"))
        elif a.get("category_id") not in cat_index:
            findings.append(Finding(where, f"unknown category_id {a.get('category_id')} (wrong class count?)"))
        elif not (isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4):
            findings.append(Finding(where, "no [x, y, w, h] bbox"))
        else:
            by_image[a["image_id"]].append([cat_index[a["category_id"]], *map(float, a["bbox"])])
    items = []
    for im in coco["images"]:
        path = images_dir / str(im.get("file_name", ""))
        if not path.is_file():
            findings.append(Finding(str(path), f"listed in {ann.name} (image id {im.get('id')}) but not found"))
            continue
        with Image.open(path) as pil:
            size = pil.size
        w, h = im.get("width") or size[0], im.get("height") or size[1]
        if (w, h) != size:
            findings.append(Finding(str(path), f"size {size[0]}x{size[1]} differs from {w}x{h} in {ann.name}; boxes normalised by the JSON size", "warning"))
        rows = np.array(by_image.get(im["id"], []), dtype=float).reshape(-1, 5)
        yolo = np.column_stack([rows[:, 0], (rows[:, 1] + rows[:, 3] / 2) / w, (rows[:, 2] + rows[:, 4] / 2) / h,
                                rows[:, 3] / w, rows[:, 4] / h])
        rel = Path(str(im["file_name"]))
        items.append(Item(src=path, name="__".join(rel.parts), label=format_label(yolo),
                          group=group_of(rel.name, group_regex), source=f"{ann.name}#{im['id']}"))
    if not items:
        raise DatasetError(f"{ann}: none of its {len(coco['images'])} images were found under {images_dir}")
    dataset = write_dataset(out, items, classes, name=name or ann.stem, source=f"import coco {ann}")
    return dataset, findings


def _coco_images_dir(ann: Path) -> Path:
    for d in (ann.parent / "images", ann.parent):
        if d.is_dir():
            return d
    return ann.parent
