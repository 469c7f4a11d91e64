"""Which photos to label next: the verifier's close calls in a triage run, as a folder to label.

Labelled positives are scarce (65 stall photos, 28 parking ones: docs/verifier.md), and labelling a
city's uploads at random mostly yields more negatives. The photos a head is least sure about, whose
probability lies near its threshold on either side (its false findings and its near misses), hold
positives far more often: simulated on `street-scenes` (`benchmarks.labelling_strategy`), the first
150 photos picked so held five times as many stalls and spillover photos as 150 at random; the heads
refitted on them gained spillover AP +0.02-0.03 and nothing for stalls (their features, not the labels,
limit them). A triage run already recorded every photo's probability and threshold
per type (`results.jsonl`), so this judges nothing again: it ranks each type's photos by how close
they are to its threshold (on the logit scale, where 0.5 -> 0.6 and 0.01 -> 0.02 are alike), takes the
types in turn so that a rare type gets its share, keeps at most `per_group` photos of one place and
day (a market photographed 200 times would fill the list otherwise), and writes the folder that
`streetwatch verifier train --data` reads once the label cells are filled in:

- `labels.csv`: the columns of `street-scenes` (`file`, `group`, one empty cell per label, `uncertain`,
  `notes`; the groups of picked photos within 100 m of each other on one day joined, and a photo that near one
  labelled in an earlier round (`--skip`) given that photo's group, `joined_groups`), plus what the labeller may want to see (`picked_for`, the verifier's probabilities) and
  the provenance (`source_path`, `sha256`);
- `images/<source>/<row>-<photo id>.<ext>`: the photos, copied (a zip member is extracted), numbered in
  the sheet's order;
- `index.html`: the photos with their row numbers and what each was picked for, to look at beside the sheet;
- `README.md`: how to fill it in (in Chinese and English).

An empty label cell means "not labelled for that type" and trains nothing, so a labeller may answer
only the type a photo was picked for.
"""

from __future__ import annotations

import math
import re
import shutil
import zipfile
from collections import defaultdict
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from detect.digests import sha256_file
from detect.frames import EARTH_RADIUS_M, distance_m
from detect.taxonomy import default_taxonomy
from pipelines.triage.exif import read_facts
from pipelines.triage.journal import RecordError, read_records
from pipelines.triage.record import PhotoRecord
from pipelines.triage.sources import open_archive
from pipelines.verifier.data import LABEL_TYPES, DatasetError, dataset_rows, write_rows

LABEL_COLUMNS = tuple(LABEL_TYPES)
"""The label columns of a verifier dataset."""
TYPE_LABEL = {"illegal_parking": "parking_motor", "nonmotor_parking": "parking_nonmotor"}
"""A violation type's label column where the names differ (the others share their type's name)."""
RESULTS = "results.jsonl"


class ToLabelError(ValueError):
    """A triage run or output folder that cannot be used; the message names it and the reason."""


VISIT_GAP_S = 15 * 60
"""Photos without a position taken within this gap of each other (EXIF times), in one folder, are one place (a visit)."""
JOIN_RADIUS_M = 100.0
"""Picked photos of one day this close to each other share a group in labels.csv, whatever place cells they fell in."""
MAX_MARGIN = math.log(100)
"""Farther from the threshold than odds 100 times its own, the verifier is sure (a photo without a bicycle
for non-motor parking): nothing to learn from labelling it."""


@dataclass(frozen=True)
class Pick:
    """One photo to label: the type it was picked for and how close the verifier was to its threshold."""

    record: PhotoRecord
    type: str
    margin: float  # |logit(p) - logit(threshold)|: 0 is a coin toss at the threshold
    group: str  # place and day (`places`)

    @property
    def found(self) -> bool:
        """The verifier finds the type in the photo (else it just misses it)."""
        verdict = (self.record.verifier or {})[self.type]
        return verdict.p >= verdict.threshold


@dataclass(frozen=True)
class Labelled:
    """A photo of an earlier labelling folder (`--skip`): not picked again, and its group, where and on which day it was
    taken (when known) so that a photo picked now close to it joins its group (`joined_groups`)."""

    sha256: str
    group: str
    lat: float | None = None
    lon: float | None = None
    day: str | None = None


@dataclass(frozen=True)
class Earlier:
    """The photos of the earlier labelling folders, and how many of them could not be read for their position."""

    photos: list[Labelled]
    unread: int = 0

    @property
    def sha256(self) -> set[str]:
        return {p.sha256 for p in self.photos}


def label_column(violation_type: str) -> str:
    return TYPE_LABEL.get(violation_type, violation_type)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)  # records round to 4 decimals: 0 and 1 are "at most 1e-4 away"
    return math.log(p / (1 - p))


def _key(record: PhotoRecord) -> str:
    return record.sha256 or record.source


def _day(record: PhotoRecord) -> str:
    """The day of a photo's group: its capture date, else `undated`."""
    return record.taken_at.date().isoformat() if record.taken_at else "undated"


def places(records: list[PhotoRecord], visit_gap_s: float = VISIT_GAP_S) -> dict[str, str]:
    """Each photo's `group` for the labels (photos of one place and day stay on one side of every split).

    The place is the 单元网格 cell, else the GPS position to ~100 m, else the visit: photos of one folder
    whose EXIF times are less than `visit_gap_s` apart (an inspector walking a street). A photo with
    neither position nor EXIF time is its own place: a file's time is often the copy's or the upload's. Not triage's
    near-duplicate grouping (`pipelines.triage.grouping`), which joins one violation's re-takes into one case (one
    type, minutes and metres apart): a split group keeps every photo of a place and day together, of any type."""
    out: dict[str, str] = {}
    unplaced: dict[str, list[PhotoRecord]] = defaultdict(list)
    for r in records:
        day = _day(r)
        if r.grid_cell:
            out[_key(r)] = f"{day}@cell {r.grid_cell}"
        elif r.has_gps:
            out[_key(r)] = f"{day}@{r.lat:.3f},{r.lon:.3f}"
        elif r.taken_at is None or r.time_source != "exif":
            out[_key(r)] = f"{day}@{r.source}"
        else:
            unplaced[str(Path(r.path or r.source).parent)].append(r)
    for folder, photos in unplaced.items():
        photos.sort(key=lambda r: r.capture_time)
        start = previous = photos[0].capture_time
        for r in photos:
            if (r.capture_time - previous).total_seconds() > visit_gap_s:
                start = r.capture_time
            previous = r.capture_time
            out[_key(r)] = f"{start.date().isoformat()}@{folder} {start:%H:%M}"
    return out


def read_run(results: Path) -> list[PhotoRecord]:
    """The judged photos of a triage run (`results.jsonl`, or the folder holding it) that the verifier judged."""
    path = results / RESULTS if results.is_dir() else results
    if not path.is_file():
        raise ToLabelError(f"{results}: no {RESULTS} (give a triage output folder or its {RESULTS})")
    try:
        records = [r for r in read_records(path) if r.ok]
    except RecordError as exc:
        raise ToLabelError(str(exc)) from None
    judged = [r for r in records if r.verifier]
    if not judged:
        raise ToLabelError(f"{path}: none of its {len(records)} judged photos has verifier probabilities "
                           "(run triage with a verifier, not --verifier none)")
    return judged


def pick(records: list[PhotoRecord], count: int, types: list[str] | None = None, per_group: int = 2,
         skip_sha256: set[str] = frozenset(), groups: dict[str, str] | None = None) -> list[Pick]:  # type: ignore[assignment]
    """Up to `count` photos, the types taking turns, each type's closest call to its threshold first (none
    farther than `MAX_MARGIN`), at most `per_group` of one place and day, none whose SHA-256 is in `skip_sha256`.
    `groups`: each photo's place and day by SHA-256 (default: `places`)."""
    known = sorted({t for r in records for t in (r.verifier or {})})
    by_label = {label: t for t, label in TYPE_LABEL.items()}
    wanted = [by_label.get(t, t) for t in types] if types else known  # parking_motor names illegal_parking
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise ToLabelError(f"no photo of this run was judged for {', '.join(unknown)} (judged: {', '.join(known)})")
    group = groups if groups is not None else places(records)
    queues = {}
    for t in wanted:
        scored = [(abs(_logit(v.p) - _logit(v.threshold)), _key(r), r) for r in records
                  if (v := (r.verifier or {}).get(t)) is not None and (r.sha256 or "") not in skip_sha256]
        queues[t] = [Pick(r, t, margin, group[key]) for margin, key, r in sorted(scored, key=lambda s: s[:2]) if margin <= MAX_MARGIN]
    picked: list[Pick] = []
    taken: set[str] = set()
    per_place: dict[str, int] = defaultdict(int)
    position = dict.fromkeys(wanted, 0)
    while len(picked) < count:
        progressed = False
        for t in wanted:
            queue = queues[t]
            while position[t] < len(queue):
                candidate = queue[position[t]]
                position[t] += 1
                key = _key(candidate.record)
                if key in taken or per_place[candidate.group] >= per_group:
                    continue
                picked.append(candidate)
                taken.add(key)
                per_place[candidate.group] += 1
                progressed = True
                break
            if len(picked) >= count:
                break
        if not progressed:
            break
    return picked


class _Point(NamedTuple):
    """A photo placed for `joined_groups`: a pick, or one labelled in an earlier round."""

    lat: float
    lon: float
    day: str
    group: str
    earlier: bool


def joined_groups(picks: list[Pick], radius_m: float = JOIN_RADIUS_M, earlier: list[Labelled] = ()) -> list[Pick]:  # type: ignore[assignment]
    """The picks, the groups of photos taken on one day within `radius_m` of each other joined into one, named after
    the first of its groups by name (scipy's `connected_components`, as triage's cases and retrain's near-duplicates).

    `places` cuts positions into bounded cells (GPS to 3 decimals, 单元网格 cells), so that `--per-group` bounds what
    one place gives; but two photos a few metres apart across a cell's edge fall in two groups, and could land on both
    sides of a train/validation split. Joining every pair within 100 m while picking chains a busy day into one group
    (50,000 photos over 11 km were one), so only the picked photos, few and spread out, are joined, as labels.csv
    is written; a joined group may so hold more than `per_group` photos.

    The photos labelled in `earlier` rounds split with these: a pick that close to one on its day takes its group
    (the first by name of the earlier groups its joined group reaches), and the earlier groups never change."""
    points = [_Point(p.record.lat, p.record.lon, _day(p.record), p.group, False) for p in picks if p.record.has_gps]
    points += [_Point(e.lat, e.lon, e.day, e.group, True) for e in earlier if e.lat is not None and e.lon is not None and e.group]
    ordered = sorted({p.group for p in picks} | {pt.group for pt in points})
    index = {g: k for k, g in enumerate(ordered)}
    points.sort(key=lambda pt: pt.lat)
    band = math.degrees(radius_m / EARTH_RADIUS_M)  # the latitude difference past which no pair is that close
    rows, cols = [], []
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            if b.lat - a.lat > band:
                break
            if b.group != a.group and not (a.earlier and b.earlier) and a.day == b.day and distance_m(a, b) <= radius_m:
                rows.append(index[a.group])
                cols.append(index[b.group])
    joined = coo_array((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(ordered), len(ordered)))
    labels = connected_components(joined, directed=False)[1]
    kept = {e.group for e in earlier}
    first: dict[int, str] = {}
    for g in [g for g in ordered if g in kept] + ordered:  # an earlier group names its joined group
        first.setdefault(int(labels[index[g]]), g)
    return [replace(p, group=first[int(labels[index[p.group]])]) for p in picks]


def read_labelled(folders: list[Path], records: list[PhotoRecord], tz: ZoneInfo) -> Earlier:
    """The photos already in these labelling folders' labels.csv (`--skip`): not picked again, and their groups kept for
    the photos picked now near them (`joined_groups`).

    A photo is known by its SHA-256. A row without a `sha256` (or street-scenes' `sha256_original`) column, as `data
    from-cases --verifier` and a hand-made folder write it, is known by the file it names: such a folder skipped nothing,
    and the reviewed cases' photos were picked again. labels.csv holds no position: a photo's position and day are its
    record's in this run (`records`), else its file's EXIF (times without an offset read in `tz`, as triage reads them);
    a photo whose file cannot be read is counted in `Earlier.unread`."""
    by_sha = {r.sha256: r for r in records if r.sha256}
    photos, unread = [], 0
    for folder in folders:
        path = folder / "labels.csv"
        if not path.is_file():
            raise ToLabelError(f"{folder}: no labels.csv (--skip takes a folder written by `verifier to-label` or in its format)")
        try:
            rows = dataset_rows(path.read_bytes(), path)
        except DatasetError as exc:
            raise ToLabelError(str(exc)) from None
        for n, row in enumerate(rows, start=2):
            digest = (row.get("sha256") or row.get("sha256_original") or "").strip()
            rel = (row.get("file") or "").strip()
            if not digest and rel:
                digest = _file_sha256(folder, rel, f"{path}: row {n}")
            if not digest:
                continue
            group = (row.get("group") or "").strip()
            record = by_sha.get(digest)
            if record is not None:
                place = (record.lat, record.lon, _day(record)) if record.has_gps else (None, None, None)
            else:
                place = _exif_place(folder / rel, tz) if rel else None
                unread += place is None
            photos.append(Labelled(digest, group, *(place or (None, None, None))))
    return Earlier(photos, unread)


def _exif_place(photo: Path, tz: ZoneInfo) -> tuple[float | None, float | None, str | None] | None:
    """Where and on which day a labelled photo was taken, from its EXIF, as triage reads it (Nones without GPS);
    None when the file cannot be read."""
    try:
        with Image.open(photo) as img:
            facts = read_facts(img.getexif(), tz)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if facts.geo is None:
        return None, None, None
    return facts.geo.lat, facts.geo.lon, facts.taken_at.date().isoformat() if facts.taken_at else "undated"


def _file_sha256(folder: Path, rel: str, where: str) -> str:
    """The SHA-256 of the photo a labels.csv row names (relative to its folder); ToLabelError when it cannot be read."""
    try:
        return sha256_file(folder / rel)
    except OSError as exc:
        raise ToLabelError(f"{where}: {rel}: {exc.strerror or exc} (no sha256 column to know the photo by)") from None


def _copy_photo(record: PhotoRecord, dst: Path) -> None:
    """The photo's bytes as triage read them (a zip member is extracted); OSError/KeyError when gone."""
    if record.member:
        with open_archive(record.path or record.source) as zf, zf.open(record.member) as src, dst.open("wb") as out:
            shutil.copyfileobj(src, out)
    else:
        shutil.copyfile(record.path or record.source, dst)


def write_folder(picks: list[Pick], out: Path, source: str, earlier: list[Labelled] = ()) -> tuple[list[Pick], list[str]]:  # type: ignore[assignment]
    """Copy the picked photos under `out/images/<source>/` and write `labels.csv` and `README.md`.

    Returns the picks written (their groups joined, with those of the `earlier` labelled photos near them:
    `joined_groups`) and, for each photo that could not be read
    again (moved, deleted), why: those are passed over, never written half."""
    if not re.fullmatch(r"[\w.-]+", source):
        raise ToLabelError(f"source {source!r} (--source; default the run folder's name): use letters, digits, '-', '_' or '.' "
                           "(it names a folder under images/)")
    if (out / "labels.csv").exists():
        raise ToLabelError(f"{out}: labels.csv exists (labels may have been filled in there): choose another --out")
    images = out / "images" / source
    images.mkdir(parents=True, exist_ok=True)
    picks = joined_groups(picks, earlier=earlier)
    judged = sorted({t for p in picks for t in (p.record.verifier or {})})
    rows, written, passed_over = [], [], []
    for p in picks:
        r = p.record
        # numbered in the order of labels.csv, so the photo folder lists them as the rows come
        rel = (f"images/{source}/{len(written) + 1:04d}-{r.photo_id or (r.sha256 or '')[:16]}"
               f"{Path(r.member or r.path or r.source).suffix.lower() or '.jpg'}")
        try:
            _copy_photo(r, out / rel)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            passed_over.append(f"{r.source}: {exc.__class__.__name__}: {exc}")
            continue
        verdicts = r.verifier or {}
        rows.append({"file": rel, "group": p.group, "picked_for": label_column(p.type), "margin": f"{p.margin:.3f}",
                     "threshold": f"{verdicts[p.type].threshold:.4f}", "source_path": r.source, "sha256": r.sha256 or "",
                     **{f"p_{t}": f"{verdicts[t].p:.4f}" for t in judged if t in verdicts}})
        written.append(p)
    columns = ["file", "group", *LABEL_COLUMNS, "street_scene", "uncertain", "notes", "picked_for", "margin", "threshold",
               *[f"p_{t}" for t in judged], "source_path", "sha256"]
    write_rows(out / "labels.csv", columns, rows)
    (out / "README.md").write_text(README, encoding="utf-8")
    (out / "index.html").write_text(contact_sheet(written, rows), encoding="utf-8")
    return written, passed_over


def contact_sheet(picks: list[Pick], rows: list[dict]) -> str:
    """`index.html`: each photo with its row number and what it was picked for, to look at beside the sheet."""
    taxonomy = default_taxonomy()
    cells = []
    for n, (p, row) in enumerate(zip(picks, rows), start=2):  # the spreadsheet's row number (row 1 is the header)
        verdict = (p.record.verifier or {})[p.type]
        name = taxonomy.get(p.type)
        cells.append(f'<figure><a href="{escape(row["file"])}"><img src="{escape(row["file"])}" loading="lazy" alt=""></a>'
                     f'<figcaption>row {n} · {escape(row["file"].rsplit("/", 1)[-1])}<br>{escape(row["picked_for"])}: '
                     f'{escape(name.name_zh)} / {escape(name.name_en)} · p {verdict.p:.2f} (threshold {verdict.threshold:.2f})'
                     f'</figcaption></figure>')
    return ("<!doctype html><meta charset=utf-8><title>Photos to label / 待标注照片</title>"
            "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:.5em;width:420px;vertical-align:top}"
            "img{width:100%}figcaption{font-size:.85em}</style>"
            f"<h1>Photos to label / 待标注照片 ({len(cells)})</h1><p>labels.csv, README.md</p>" + "".join(cells))


README = """# Photos to label / 待标注照片

Picked by `streetwatch verifier to-label`: the photos the verifier was least sure about, per type.
由 `streetwatch verifier to-label` 选出：核验模型最拿不准的照片（按违规类型）。

Look at the photos in `index.html` (row numbers as in the sheet; the photos in `images/` are numbered in
the same order) and fill in `labels.csv` (keep the columns; in Excel or WPS save it as "CSV UTF-8") /
在 `index.html` 中查看照片（行号与表格一致；`images/` 中的照片按同一顺序编号），在 `labels.csv` 中填写
（列不要改；用 Excel 或 WPS 时另存为"CSV UTF-8"）：

| column 列 | meaning 含义 |
|---|---|
| `street_stall` | 1 = a street stall / 占道经营（流动摊贩） is shown, 0 = not |
| `shopfront_spillover` | 1 = a shop's goods, tables, racks or boards out on the pavement / 店外经营（出店经营） |
| `parking_motor` | 1 = a car, van or motorbike parked where it obstructs (footway, crossing, plaza) / 机动车违停 |
| `parking_nonmotor` | 1 = bicycles or e-bikes parked where they obstruct / 非机动车乱停放 |
| `flyposting` | 1 = stickers, small ads or posters stuck where they are not allowed / 乱张贴（小广告） |
| `exposed_garbage` | 1 = garbage piled or spilling in the open / 暴露垃圾 |
| `street_scene` | 0 = not an outdoor public place (indoors, a close-up of an object); else leave empty / 非街景填 0 |
| `uncertain` | 1 = a close call (say why in `notes`) / 拿不准填 1，并在 notes 说明 |
| `notes` | what the photo shows, close calls / 照片内容、疑难说明 |

An empty label cell means "not labelled for that type" and trains nothing: answer at least the type in
`picked_for`; the other types when you can. `parking_motor` and `parking_nonmotor` train one head: a 0 in one
of them trains it only when the other is filled in too (answer both). `group` keeps photos of one place and day
together in validation: change it only to merge two groups that show the same place.
标注格为空表示"未标注该类型"，不参与训练：至少填写 `picked_for` 所列类型。`parking_motor` 与
`parking_nonmotor` 训练同一个模型：其中一列填 0 时，另一列也须填写才参与训练（两列都填）。`group`
使同一地点同一天的照片在验证时不被拆开，除合并同一地点外不要修改。

Then train with it beside the shared data / 然后与共享数据一起训练：

    streetwatch verifier train --data ../shared/datasets/street-scenes --data THIS_FOLDER --id NEW_ID
"""
