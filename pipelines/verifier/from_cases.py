"""Reviewed cases -> a verifier dataset (labels.csv, boxes.csv, images), so the city's reviews train the heads.

Input: the review export of `streetwatch data export-reviews` (`review.jsonl` + the evidence
pictures, checked against their bundle manifests). Each picture becomes one row: a confirmed case
labels its type 1 and its evidence boxes say where (boxes.csv, normalised); a rejected case whose
reason says the scene does not show the type (not a violation, wrong type ...) labels it 0, a hard
negative; a rejection that says the thing is real but legal or a duplicate teaches nothing about
looks and is reported and skipped (the detector path's `case_decision`). A case its reviewer gave another type
(`detected_type` in the line) also labels the type first proposed 0: the photo does not show it, as a `wrong_type`
rejection says. Types a case says nothing about stay empty (not labelled), so a confirmed stall is never taught as
"no parking". The case's grid cell, else its camera or photo batch, is the split group (`case_group`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.retrain.check import Finding
from detect.taxonomy import ViolationType, load_taxonomy
from pipelines.retrain.from_cases import (POSITIVE, SeenPictures, case_decision, case_group, case_image, line_boxes,
                                          frame_size, no_usable_cases, object_boxes, on_frame, picture_stem, review_lines)
from pipelines.verifier.data import write_rows

#: violation type -> label column of the verifier dataset
TYPE_COLUMNS = {"street_stall": "street_stall", "shopfront_spillover": "shopfront_spillover", "flyposting": "flyposting",
                "exposed_garbage": "exposed_garbage", "illegal_parking": "parking_motor", "nonmotor_parking": "parking_nonmotor"}
SOURCE = "cases"


def verifier_dataset_from_cases(export: Path, out: Path) -> tuple[Path, int, list[Finding]]:
    """Write `out/labels.csv`, `out/boxes.csv` and `out/images/cases/...`; returns (labels file, rows, problems).
    DatasetError (`no_usable_cases`, with the reasons) when no line can be used: nothing is written then."""
    export = Path(export)
    if export.is_dir():
        export = export / "review.jsonl"
    if not export.is_file():
        raise FileNotFoundError(f"{export}: review export not found (make one with `streetwatch data export-reviews`)")
    if (out / "labels.csv").exists():
        raise FileExistsError(f"{out / 'labels.csv'} already exists: write into a new folder")
    findings: list[Finding] = []
    rows: dict[str, dict] = {}  # by `picture_key`
    boxes: list[dict] = []
    stems: set[str] = set()  # the pictures' names so far (`picture_stem`)
    seen = SeenPictures()
    taxonomy = load_taxonomy()
    for n, line in enumerate(review_lines(export), start=1):
        if not line.strip():
            continue
        where = f"{export.name}: line {n}"
        try:
            case = json.loads(line)
            column = TYPE_COLUMNS.get(case["violation_type"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            findings.append(Finding(where, f"not a review line: {exc}"))
            continue
        if column is None:
            findings.append(Finding(where, f"type {case['violation_type']!r} has no verifier head: skipped"))
            continue
        try:
            decision = case_decision(case)
        except ValueError as exc:
            findings.append(Finding(where, str(exc), "warning"))
            continue
        try:  # the detector path's checks: a picture altered since review or unreadable, a size or box no frame can have
            image = case_image(case, export)
            key, full = seen.key_and_size(image)
            size = frame_size(case) or full  # boxes on the picture itself when the line names no frame
            xyxy = [b for _, b in line_boxes(case)] if decision in POSITIVE else []
            regions = _normalised_objects(taxonomy.get(case["violation_type"]), xyxy, size)
        except ValueError as exc:
            findings.append(Finding(where, f"{exc}: skipped"))
            continue
        row = rows.get(key)
        if row is None:  # the picture's first case names it
            rel = f"images/{SOURCE}/{picture_stem(case, n, stems)}{image.suffix.lower()}"
            row = rows[key] = {"file": rel, "group": case_group(case, rel), "_src": image}
        value = 1 if decision in POSITIVE else 0
        row[column] = max(int(row.get(column, 0) or 0), value) if column in row else value
        detected = TYPE_COLUMNS.get(case.get("detected_type") or "")
        if detected and detected != column:  # retyped by its reviewer: the photo does not show what was proposed
            row.setdefault(detected, 0)
        # the picture's row, named by its first case: a later case's own name is in no row of labels.csv
        boxes += [{"file": row["file"], "type": column, **box} for box in regions]
    if not rows:
        raise no_usable_cases(export, findings)
    for row in rows.values():
        target = out / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row["_src"], target)
    labels = write_rows(out / "labels.csv", ["file", "group", *TYPE_COLUMNS.values()], list(rows.values()))
    write_rows(out / "boxes.csv", ["file", "type", "x1", "y1", "x2", "y2"], boxes)
    return labels, len(rows), findings


def _normalised_objects(vtype: ViolationType, xyxy: list[list[float]], size: tuple[float, float]) -> list[dict[str, str]]:
    """A box around each object of a case's evidence boxes (`object_boxes`, as the detector dataset's: two small-ad
    slips far apart are two boxes, not one spanning the wall between them), as fractions of its frame clipped to 0..1
    (boxes.csv's x1..y2, written with 4 decimals). ValueError when a box has nothing on the frame (`on_frame`, the
    detector path's check): clipped, it would have x1 >= x2 and stop the set from loading."""
    clipped = [on_frame(b, size, digits=4) for b in xyxy]
    return [{k: f"{v:.4f}" for k, v in zip(("x1", "y1", "x2", "y2"), box)} for box in object_boxes(vtype, clipped, size)]
