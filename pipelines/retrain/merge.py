"""`data merge`: several versions -> one version on the project's training classes.

Each source class goes to a project class by an explicit `--map SRC=DST` (`SRC=-` drops it),
else by name or alias (`datasets/classes.yaml`); a class that maps nowhere stops the merge
unless `drop_unmapped` says to drop such boxes. File names and groups are prefixed with the
input's name so two inputs never collide and one input's places never merge with another's.
Split assignments are not carried over: split the merged version again (grouped). A negative known to hold none of
only some classes (a rejected case's picture, `FileEntry.negative_for`) is left out of a merge that trains another
class, and the version says so (`Manifest.left_out`).
"""

from __future__ import annotations

import numpy as np

from pipelines.retrain.check import check_dataset
from pipelines.retrain.classes import ProjectClasses, classes_path, load_classes
from pipelines.retrain.dataset import Dataset, DatasetError, FileEntry, derive, format_label, write_dataset

DROP = "-"


def parse_mapping(specs: list[str], classes: ProjectClasses) -> dict[str, str | None]:
    """`["cantilever=signboard", "window=-"]` -> {"cantilever": "signboard", "window": None}."""
    out: dict[str, str | None] = {}
    for spec in specs:
        src, sep, dst = spec.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise DatasetError(f"--map {spec!r}: expected SOURCE=TARGET (TARGET a project class, or - to drop)")
        dst = dst.strip()
        if dst != DROP and dst not in classes.classes:
            raise DatasetError(f"--map {spec!r}: '{dst}' is not a project class ({classes_path()}: {', '.join(classes.names)})")
        out[src.strip()] = None if dst == DROP else dst
    return out


def class_map(dataset: Dataset, mapping: dict[str, str | None], classes: ProjectClasses,
              drop_unmapped: bool) -> dict[int, str | None]:
    """Source class id -> project class name (None = drop) for one input."""
    out, missing = {}, []
    for i, name in enumerate(dataset.classes):
        if name in mapping:
            out[i] = mapping[name]
        elif (matched := classes.match(name)) is not None:
            out[i] = matched
        elif drop_unmapped:
            out[i] = None
        else:
            missing.append(name)
    if missing:
        raise DatasetError(
            f"{dataset.root}: classes {', '.join(repr(m) for m in missing)} match no project class: map them "
            f"(--map {missing[0]}=CLASS, or --map {missing[0]}=- to drop) or pass --drop-unmapped"
        )
    return out


def merge_datasets(inputs: list[Dataset], out, *, mapping: dict[str, str | None], drop_unmapped: bool = False,
                   classes: ProjectClasses | None = None, name: str = "merged") -> Dataset:
    """Merge `inputs` (each must pass `data check`) into a new version at `out`."""
    classes = classes or load_classes()
    if not inputs:
        raise DatasetError("merge needs at least one dataset")
    for ds in inputs:
        report = check_dataset(ds)
        if not report.ok:
            raise DatasetError(f"{report.summary()}: run `streetwatch data check {ds.root}` and fix it before merging")
    maps = [class_map(ds, mapping, classes, drop_unmapped) for ds in inputs]
    used = {t for ds, m in zip(inputs, maps) for e in ds.files() for c in ds.labels(e).boxes[:, 0].astype(int)
            if (t := m[c]) is not None}
    if not used:
        raise DatasetError("the merge keeps no boxes at all: check the --map options")
    target = classes.order(used)
    index = {c: i for i, c in enumerate(target)}
    items, left_out = [], []
    for ds, m in zip(inputs, maps):
        prefix = _prefix(ds, inputs)
        partial = {e.image: unspoken(e, target, mapping, classes) for e in ds.files()}
        if any(partial.values()):
            left_out.append(partial_negatives(ds, partial))
        for e in ds.files():
            if partial[e.image]:
                continue
            rows = ds.labels(e).boxes
            keep = [r for r in rows if m[int(r[0])] is not None]
            new = np.array([[index[m[int(r[0])]], *r[1:]] for r in keep]).reshape(-1, 5)
            label = format_label(new) if e.label is not None else None
            items.append(derive(ds, e, split=None, label=label, name=f"{prefix}__{e.image.split('/', 1)[1].replace('/', '__')}",
                                group=f"{prefix}:{e.group}"))
    mapped = "; ".join(f"{ds.name}: " + ", ".join(f"{ds.classes[i]}->{t or DROP}" for i, t in m.items()) for ds, m in zip(inputs, maps))
    return write_dataset(out, items, target, name=name, source=f"merge ({mapped})", parents=[ds.digest for ds in inputs], link=True,
                         left_out=left_out)


def unspoken(entry: FileEntry, target: list[str], mapping: dict[str, str | None], classes: ProjectClasses) -> list[str]:
    """The merged classes a negative known to hold none of only some classes (`FileEntry.negative_for`: a rejected
    case's picture) says nothing about: its empty label would teach them as background, though the picture may show
    them (a real small ad beside a rejected stall). Empty for every other picture."""
    if entry.negative_for is None or entry.boxes:
        return []
    known = {mapping[n] if n in mapping else classes.match(n) for n in entry.negative_for}
    return [c for c in target if c not in known]


def partial_negatives(ds: Dataset, partial: dict[str, list[str]]) -> str:
    """`Manifest.left_out`'s line for an input's negatives left out by `unspoken`."""
    pictures = [p for p, classes in partial.items() if classes]
    silent = sorted({c for classes in partial.values() for c in classes})
    return (f"{ds.name}: {len(pictures)} hard negatives (rejected cases) left out, as their rejection says nothing "
            f"about {', '.join(silent)}, which the merge trains: {', '.join(pictures[:5])}{' …' if len(pictures) > 5 else ''}")


def _prefix(ds: Dataset, inputs: list[Dataset]) -> str:
    """The input's name, made unique among the inputs."""
    same = [d for d in inputs if d.name == ds.name]
    return ds.name if len(same) == 1 else f"{ds.name}{same.index(ds) + 1}"

