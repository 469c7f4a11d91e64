"""`data from-cases`: reviewed cases -> a dataset version (positives and hard negatives).

Input: a review export (`pipelines.retrain.reviews.export_reviews` writes it from the case
store), JSON Lines, one reviewed case per line:

    {"case_id": "c-20240501-0007", "violation_type": "street_stall",
     "decision": "confirmed" | "approved" | "rejected",
     "reason_code": "not_a_violation", "reason": "a parked delivery tricycle",   # optional
     "image": "evidence/c-20240501-0007/frame.jpg",      # relative to the export file, or absolute
     "image_sha256": "…",                                 # optional; checked when present
     "source_id": "cam-07",                               # camera / photo batch: the split group
     "grid_cell": "330102001001",                          # optional: the split group instead (`case_group`)
     "width": 1920, "height": 1080,                       # optional: the frame the boxes are on
     "boxes": [{"class_name": "umbrella", "xyxy": [x1, y1, x2, y2]}, …]}   # pixels

Confirmed cases become positives. Boxes whose class is a project training class are kept as
labelled; when a case has none (the detector's evidence was COCO classes such as umbrella +
dining table), a box around each object of its boxes (nearby boxes are one object, as the rules group them:
two slips far apart on one wall are two boxes) is labelled with the type's training class (the first
evidence: street_stall -> stall). OCR text lines without a phone number or small-ad keyword (`text`, `new_text`: a
shop's sign, a notice) are no small ad's box and are left out of those boxes; only the lines that carried the finding
(`small_ad_text`) may become it. The verifier's regions (`verified:<type>`: the whole image or
its tiles) are no object's box and are left out: a confirmed flyposting case whose evidence is
the verifier's tile would otherwise teach the detector that a whole wall or street is a small
ad; a case with nothing else is skipped with a finding (`VERIFIER_REGIONS_ONLY`), and its
picture is then no hard negative for another case's rejection either. The verifier dataset
(`pipelines.verifier.from_cases`) keeps them as region labels.
Rejected cases become hard negatives: the picture with an empty label file and the rejection reason in the manifest,
only where the rejection speaks of every class the dataset trains (`rejected_classes`: a rejected stall says nothing of
a real small ad beside it, which an empty label would teach as background), the classes it does speak of recorded
(`negative_for`, for `data merge`); except rejections whose reason code
says the object is real and only the case is not, or says nothing about the picture
(`pipelines.cases.vocabulary.REASONS`: a permitted stall still looks like a stall, and teaching
the detector otherwise would blind it; a privacy rejection is not about what was seen). One picture in several cases
gets the boxes of all its confirmed cases. Lines that cannot be used are reported, not guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detect.candidates import object_members
from detect.digests import sha256_file
from detect.imageio import decode_image
from detect.ocr import PLAIN_TEXT
from detect.rules import RuleSettings
from detect.taxonomy import VERIFIED_PREFIX, Taxonomy, ViolationType, load_taxonomy
from pipelines.cases.vocabulary import RejectReason, is_hard_negative
from pipelines.retrain.check import Finding
from pipelines.retrain.classes import ProjectClasses, load_classes
from pipelines.retrain.dataset import Dataset, DatasetError, Item, format_label, write_dataset

POSITIVE = {"confirmed", "approved"}
NEGATIVE = {"rejected"}
VERIFIER_REGIONS_ONLY = "its only evidence is the verifier's image/tile regions"
"""Start of the finding of a confirmed case that teaches the detector nothing (`_training_boxes`), counted apart by
`skipped_summary`: such cases are expected (flyposting is found by the verifier), not a fault of the export."""


NOT_A_NEGATIVE = "picture left out: no hard negative"
"""Start of the finding of a picture `read_review_export` leaves out (not a review line), counted apart by
`skipped_summary`."""


SAYS_NOTHING = "its rejection says nothing about"
"""Middle of the finding of a rejected picture left out as a hard negative for the classes its dataset trains that
its rejection does not speak of (`rejected_classes`): counted apart by `skipped_summary`."""


class NoObjectBox(ValueError):
    """A confirmed case whose boxes are none of an object (`_training_boxes`): skipped, and its picture is no hard
    negative either (`read_review_export`), as an empty label would teach the detector the confirmed thing is
    background. `shows` ends the finding that leaves the picture out: what the case's boxes were."""

    shows = "only text lines without a phone number or small-ad keyword show"


class RegionsOnly(NoObjectBox):
    """A confirmed case whose only boxes are the verifier's regions: counted apart (`skipped_summary`)."""

    shows = "only the verifier's regions show"


@dataclass
class _Picture:
    path: Path
    group: str
    stem: str  # its file name in the dataset, without the suffix (`picture_stem`)
    boxes: list[tuple[str, list[float]]] = field(default_factory=list)  # [x1, y1, x2, y2] as fractions of the picture
    cases: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    negative_for: set[str] = field(default_factory=set)  # the classes its rejections say it holds none of


def rejected_classes(type_id: str, taxonomy: Taxonomy, classes: ProjectClasses) -> set[str]:
    """The project classes a rejected case of `type_id` says its picture holds none of: those that alone are evidence
    of the type and are evidence of no other type. A rejected stall says nothing of a real small ad beside it, nor of
    `goods_display`, which is a shop's spillover as much as a stall's (a rejected spillover case so says nothing at
    all: its goods are real goods); a type no project class stands for (parking: cars are COCO's) none."""
    try:
        vtype = taxonomy.get(type_id)
    except KeyError:
        return set()
    others = {classes.match(n) for t in taxonomy.types.values() if t.id != vtype.id for n in t.evidence}
    own = {classes.match(n) for n, weight in vtype.evidence.items() if weight >= vtype.min_evidence}
    return own - others - {None}


def training_class_for(type_id: str, taxonomy: Taxonomy, classes: ProjectClasses) -> str | None:
    """The project class that labels a confirmed case of `type_id` when its boxes name none."""
    vtype = taxonomy.get(type_id)
    for name, weight in vtype.evidence.items():
        if name in classes.classes and weight >= vtype.min_evidence:
            return name
    return None


def read_review_export(path: Path, taxonomy: Taxonomy, classes: ProjectClasses) -> tuple[dict[str, _Picture], list[Finding]]:
    """Parse the export into pictures with their boxes, and one finding per unusable line/box."""
    pictures: dict[str, _Picture] = {}  # by `picture_key`
    findings: list[Finding] = []
    stems: set[str] = set()
    no_object: dict[str, dict[str, list[str]]] = {}  # picture_key -> what they show -> confirmed cases of no object box
    seen = SeenPictures()
    for no, line in enumerate(review_lines(path), 1):
        if not line.strip():
            continue
        where = f"{Path(path).name}:{no}"
        try:
            case = json.loads(line)
            if not isinstance(case, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            findings.append(Finding(where, f"not a JSON object: {exc}"))
            continue
        where += f" (case {case.get('case_id', '?')})"
        try:
            decision = case_decision(case)
        except ValueError as exc:
            findings.append(Finding(where, str(exc), "warning"))
            continue
        try:
            image = case_image(case, Path(path))
        except ValueError as exc:
            findings.append(Finding(where, str(exc)))
            continue
        boxes = []
        try:  # each line's boxes on its own frame: another line of the same picture may name another size, or none
            key, full = seen.key_and_size(image)
            if decision in POSITIVE:
                boxes = _training_boxes(case, frame_size(case) or full, taxonomy, classes)
        except NoObjectBox as exc:
            findings.append(Finding(where, str(exc)))
            no_object.setdefault(key, {}).setdefault(exc.shows, []).append(str(case.get("case_id", "?")))
            continue
        except ValueError as exc:
            findings.append(Finding(where, str(exc)))
            continue
        pic = pictures.get(key)
        if pic is None:
            pic = pictures[key] = _Picture(image, case_group(case, image.stem), picture_stem(case, no, stems))
        pic.cases.append(case_file_stem(case, no))
        pic.boxes += boxes
        if decision in NEGATIVE:
            why = case.get("reason") or case.get("reason_code") or "no reason given"
            pic.rejections.append(f"{case.get('violation_type', '?')}: {why}")
            pic.negative_for |= rejected_classes(str(case.get("violation_type")), taxonomy, classes)
    for key, shown in no_object.items():
        pic = pictures.get(key)
        if pic is not None and not pic.boxes:  # an empty label would teach the detector the confirmed thing is background
            del pictures[key]
            why = "; ".join(f"case {', '.join(cases)} confirmed on it what {shows}" for shows, cases in shown.items())
            findings.append(Finding(f"{Path(path).name} (cases {','.join(pic.cases)})", f"{NOT_A_NEGATIVE}, as {why}"))
    return pictures, findings


def review_lines(path: Path) -> list[str]:
    """The review export's lines, for the detector and the verifier dataset alike; DatasetError naming the file and
    the reason when it cannot be read as UTF-8 text (a folder, a file saved as GBK by another tool)."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the review export: {exc}") from None


SHOWN_SKIPS = 20
"""Skipped lines `no_usable_cases` names at most (then a count of the rest)."""


class NoUsableCases(DatasetError):
    """A review export that was read whole but none of whose lines can be used (not one that cannot be read): the
    nightly `retrain` goes on with its `--data` sets then, as the cases add nothing rather than something wrong."""


def no_usable_cases(export: Path, findings: list[Finding]) -> NoUsableCases:
    """The refusal of a review export none of whose lines can be used, for the detector and the verifier dataset alike:
    an empty dataset trains nothing, and the reasons the lines were skipped are what to fix in the export."""
    if not findings:
        return NoUsableCases(f"{export}: no usable reviewed cases: the export holds no review line")
    shown = "".join(f"\n  {f.path}: {f.reason}" for f in findings[:SHOWN_SKIPS])
    more = f"\n  … and {len(findings) - SHOWN_SKIPS} more" if len(findings) > SHOWN_SKIPS else ""
    return NoUsableCases(f"{export}: no usable reviewed cases ({len(findings)} lines skipped):{shown}{more}")


REAL = "the object is real, not a hard negative"
"""Why a rejection that says the object is real and only the case is not (legal, duplicate …) teaches nothing."""
PRIVATE = ("涉及隐私，该图片不得用于训练 a reviewer judged the picture private: it must not be used for training, "
           "and the rejection says nothing about what it shows")
"""Why a privacy rejection (涉及隐私) is left out: not that the object is real, which it need not be."""


def case_decision(case: dict) -> str:
    """The line's decision as POSITIVE/NEGATIVE spell it; another tool may write "Confirmed". ValueError when the line
    teaches nothing: any other decision (pending, a list, none), or a rejection whose reason code says the object is
    real or says nothing about the picture (`is_hard_negative`). Such a line is said, never guessed or a traceback."""
    decision = str(case.get("decision", "")).lower()
    if decision not in POSITIVE | NEGATIVE:
        raise ValueError(f"decision {case.get('decision')!r} is not confirmed/approved/rejected: skipped")
    code = str(case.get("reason_code") or "").lower()
    if decision in NEGATIVE and not is_hard_negative(code):
        raise ValueError(f"rejected as {code!r}: {PRIVATE if RejectReason(code) is RejectReason.PRIVACY else REAL}: skipped")
    return decision


def case_group(case: dict, fallback: str) -> str:
    """The split group of a review line's picture, the place it shows, for the detector and the verifier dataset alike:
    `grid:<cell>` where the line names its grid cell (`grid_cell`: 数字城管's cell, from the photo's GPS or the camera's
    scene), else its `source_id` (a camera, one place; an upload batch or patrol video, one group however many places it
    holds), else `fallback`. Why the cell first: an upload batch (`triage:<job>`) or patrol video (`patrol:<video>`) is
    one day's round, and the next day's round shoots the same corners under another id, so grouped by source the same
    place was on both sides of a split."""
    cell = case.get("grid_cell")
    return f"grid:{cell}" if cell else str(case.get("source_id") or fallback)


def case_file_stem(case: dict, line: int) -> str:
    """The name a review line's picture is written under in a dataset: its case id with every character but
    A-Z a-z 0-9 . _ - made _, or `line<N>` without one. Another tool's case id may hold `/` or `..` (it would write
    the picture outside the dataset folder) or characters Windows cannot hold in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(case.get("case_id") or f"line{line}"))


def picture_key(image: Path) -> str:
    """What makes two review lines' pictures one picture: their content (SHA-256), not their path. `export-reviews`
    copies each case's evidence into a folder of its own, so a photo that opened a stall case and a spillover case
    comes as two files; as two pictures it was written twice, the rejected case's copy an empty label file (no stall
    either) beside the confirmed case's copy with the stall box."""
    return sha256_file(image)


@dataclass
class SeenPictures:
    """Each picture's `picture_key` and `picture_size`, worked out once however many review lines name it (by path,
    then by content: `export-reviews` copies a photo once per case): decoding a thumbnail for every line of a
    picture named by many lines cost as many decodes."""

    by_path: dict[Path, tuple[str, tuple[int, int]]] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # by picture_key

    def key_and_size(self, image: Path) -> tuple[str, tuple[int, int]]:
        """(`picture_key`, `picture_size`) of `image`; ImageReadError (a ValueError) when it cannot be decoded."""
        path = Path(image).resolve()
        if path not in self.by_path:
            key = picture_key(path)
            if key not in self.sizes:
                self.sizes[key] = picture_size(path)
            self.by_path[path] = (key, self.sizes[key])
        return self.by_path[path]


def picture_stem(case: dict, line: int, taken: set[str]) -> str:
    """The name, without its suffix, a review line's picture gets in a dataset: `case_file_stem`, with `-line<N>` added
    when another picture has it already (ids alike once made safe, `a/b` and `a_b`), so that each keeps a file (and a
    label file: those go by this name alone) of its own. The name is added to `taken`, the names given so far."""
    stem = case_file_stem(case, line)
    if stem in taken:
        stem = f"{stem}-line{line}"
    taken.add(stem)
    return stem


def case_image(case: dict, export: Path) -> Path:
    """The picture a review line names (relative to the export's folder, or absolute). ValueError when the line names
    none, it is missing, or its sha256 differs from the recorded one: evidence altered after review must teach nothing."""
    if not case.get("image"):
        raise ValueError("no image path")
    if not isinstance(case["image"], str):
        raise ValueError(f"image {case['image']!r} is not a path")
    image = Path(case["image"])
    image = image if image.is_absolute() else export.parent / image
    if not image.is_file():
        raise ValueError(f"image {image} not found")
    if case.get("image_sha256") and sha256_file(image) != case["image_sha256"]:
        raise ValueError(f"image {image} does not match its recorded sha256 (evidence altered?)")
    return image


def frame_size(case: dict) -> tuple[float, float] | None:
    """(w, h) of the frame the boxes are on, None when the line does not say; another tool's export may write
    `"1920px"` or 0, which would otherwise stop the whole build or divide by zero: such a line is reported."""
    if not (case.get("width") and case.get("height")):
        return None
    try:
        size = (float(case["width"]), float(case["height"]))
    except (TypeError, ValueError):
        size = (0.0, 0.0)
    if not all(np.isfinite(size)) or min(size) <= 0:
        raise ValueError(f"width {case['width']!r} and height {case['height']!r} must be positive numbers of pixels")
    return size


def picture_size(image: Path) -> tuple[int, int]:
    """(w, h) of the picture as stored (after EXIF orientation): the frame a line's boxes are on when it names none.
    Decodes a thumbnail's worth only, and so proves the picture readable; ImageReadError (a ValueError) otherwise."""
    return decode_image(image, max_side=64).full_size


def line_boxes(case: dict) -> list[tuple[str, list[float]]]:
    """The line's boxes as (class name, [x1, y1, x2, y2]) in pixels; ValueError when one is not such a box. A swapped
    corner would become a label with a negative size (the picture then counts as a negative, or the set fails to load)."""
    raw = case.get("boxes") or []
    try:
        boxes = [(str(b["class_name"]), [float(v) for v in b["xyxy"]]) for b in raw]
    except (KeyError, TypeError, ValueError):
        raise ValueError("boxes must be [{class_name, xyxy: [x1, y1, x2, y2]}, …]") from None
    if any(len(xyxy) != 4 for _, xyxy in boxes):
        raise ValueError("every xyxy needs 4 numbers")
    bad = [xyxy for _, xyxy in boxes if not (np.isfinite(xyxy).all() and xyxy[0] < xyxy[2] and xyxy[1] < xyxy[3])]
    if bad:
        raise ValueError(f"box {bad[0]} is not [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
    return boxes


def on_frame(xyxy: list[float], size: tuple[float, float], digits: int = 6) -> list[float]:
    """A pixel box as fractions of its (w, h) frame, clipped to 0..1 and rounded to the `digits` its file is written
    with: a box that overhangs the picture is labelled where it is seen. ValueError when nothing of it is on the frame
    (beyond the edge or starting on it): it would be written with coordinates out of 0..1 or no size, and the line's
    width/height is then likely not the frame its boxes were drawn on."""
    w, h = size
    c = [round(min(1.0, max(0.0, v / side)), digits) for v, side in zip(xyxy, (w, h, w, h))]
    if not (c[0] < c[2] and c[1] < c[3]):
        raise ValueError(f"box {xyxy} lies outside the {w:g} x {h:g} frame (wrong width/height?)")
    return c


def _training_boxes(case: dict, size: tuple[float, float], taxonomy: Taxonomy,
                    classes: ProjectClasses) -> list[tuple[str, list[float]]]:
    """The confirmed case's object boxes in project classes, as fractions of its (w, h) frame: its own, else a box
    around each object of them (`object_boxes`) labelled with the type's class. The verifier's regions (`verified:<type>`, the image or its tiles) are no
    object's box: as one, a flyposting tile or the whole frame became a `small_ad` box as large as the street. Nor is
    a text line that carried no phone number or small-ad keyword (`PLAIN_TEXT`): a shop sign beside the pasted ad
    became part of the `small_ad` box. Every box is checked against the frame, kept or not: one off it says the
    line's frame is wrong."""
    checked = [(n, on_frame(xyxy, size)) for n, xyxy in line_boxes(case)]
    boxes = [(n, xyxy) for n, xyxy in checked if not n.startswith(VERIFIED_PREFIX) and n not in PLAIN_TEXT]
    own = [(classes.match(n), xyxy) for n, xyxy in boxes if classes.match(n)]
    if own:
        return own
    if not boxes:
        regions = ", ".join(sorted({n for n, _ in checked if n.startswith(VERIFIED_PREFIX)}))
        if regions:
            raise RegionsOnly(f"{VERIFIER_REGIONS_ONLY} ({regions}), no object box for the detector: skipped "
                             "(`--verifier` keeps it)")
        if checked:
            raise NoObjectBox(f"its only boxes are text lines without a phone number or small-ad keyword "
                              f"({', '.join(sorted({n for n, _ in checked}))}), no object box for the detector: skipped")
        raise ValueError("confirmed case without boxes: cannot label it")
    try:
        vtype = taxonomy.get(str(case.get("violation_type")))
    except KeyError as exc:
        raise ValueError(str(exc).strip('"')) from None
    target = training_class_for(vtype.id, taxonomy, classes)
    if target is None:
        raise ValueError(f"no training class stands for violation type {case.get('violation_type')!r} "
                         f"(its evidence classes {', '.join(b[0] for b in boxes)} are not project classes): skipped")
    return [(target, box) for box in object_boxes(vtype, [b for _, b in boxes], size)]


def object_boxes(vtype: ViolationType, xyxy: list[list[float]], size: tuple[float, float]) -> list[list[float]]:
    """One box around each object of a case's evidence boxes (fractions of its (w, h) frame), the objects as the rules
    make them (`object_members`, with the rules' default group gap, in the frame's pixels): a photo case holds every
    object of its type in the photo (`pipelines.triage.findings`), and one box around them all spanned the wall
    between two small-ad slips, or the street between two stalls."""
    scale = np.array([*size, *size])
    fractions = np.array(xyxy, dtype=float).reshape(-1, 4)
    members = object_members(vtype, fractions * scale, RuleSettings().group_gap)
    return [[*fractions[m, :2].min(0), *fractions[m, 2:].max(0)] for m in members]


def skipped_counts(findings: list[Finding]) -> dict[str, int]:
    """The review lines skipped, of them those whose only evidence is the verifier's regions (no fault of the export:
    flyposting is found by the verifier), and the pictures left out: `data from-cases`'s last line and `retrain`'s
    summary count alike."""
    pictures = sum(f.reason.startswith(NOT_A_NEGATIVE) for f in findings)
    return {"lines": len(findings) - pictures,
            "verifier_regions_only": sum(f.reason.startswith(VERIFIER_REGIONS_ONLY) for f in findings),
            "pictures_left_out": pictures,
            "rejection_says_nothing": sum(f.reason.startswith(f"{NOT_A_NEGATIVE}, as {SAYS_NOTHING}") for f in findings)}


def skipped_summary(findings: list[Finding]) -> str:
    """One line of `skipped_counts`, for `data from-cases` to print under its findings."""
    counts = skipped_counts(findings)
    regions, pictures, silent = counts["verifier_regions_only"], counts["pictures_left_out"], counts["rejection_says_nothing"]
    apart = f" ({regions} with only the verifier's image/tile regions, kept by --verifier)" if regions else ""
    why = f": {silent} rejected for a type that says nothing about a class the dataset trains" if silent else ""
    left_out = f"; {pictures} pictures left out (no hard negative{why})" if pictures else ""
    return f"skipped {counts['lines']} review lines{apart}{left_out}"


def dataset_from_cases(export: Path, out: Path, *, name: str = "cases", taxonomy: Taxonomy | None = None,
                       classes: ProjectClasses | None = None) -> tuple[Dataset, list[Finding]]:
    """Build a version from a review export (see module docstring)."""
    taxonomy = taxonomy or load_taxonomy()
    classes = classes or load_classes()
    pictures, findings = read_review_export(export, taxonomy, classes)
    used = trained_classes(pictures.values(), classes)
    for key, pic in list(pictures.items()):
        silent = [] if pic.boxes else [c for c in used if c not in pic.negative_for]
        if silent or not (pic.boxes or used):  # an empty label would say these are background: unknown
            del pictures[key]
            what = ", ".join(silent) or "any training class"
            findings.append(Finding(f"{Path(export).name} (cases {','.join(pic.cases)})",
                                    f"{NOT_A_NEGATIVE}, as {SAYS_NOTHING} {what} (rejected {'; '.join(pic.rejections)})"))
    if not pictures:
        raise no_usable_cases(export, findings)
    index = {c: i for i, c in enumerate(used)}
    items = []
    for pic in pictures.values():
        rows = [[index[c], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1] for c, (x1, y1, x2, y2) in pic.boxes]
        note = "" if pic.boxes else "hard negative: rejected " + "; ".join(pic.rejections)
        items.append(Item(src=pic.path, name=f"{pic.stem}{pic.path.suffix.lower()}",
                          label=format_label(np.array(rows).reshape(-1, 5)), group=pic.group,
                          source="cases " + ",".join(pic.cases), note=note,
                          negative_for=None if pic.boxes else classes.order(pic.negative_for)))
    dataset = write_dataset(out, items, used, name=name, source=f"from-cases {export}")
    return dataset, findings


def trained_classes(pictures: Iterable[_Picture], classes: ProjectClasses) -> list[str]:
    """The classes a cases dataset trains: those of its confirmed boxes, else (rejections alone) those its rejections
    say their pictures hold none of. A rejected picture goes in only when it holds none of every one of them
    (`_Picture.negative_for`): its empty label says all of them are background."""
    pictures = list(pictures)
    return classes.order({c for p in pictures for c, _ in p.boxes}) or classes.order({c for p in pictures for c in p.negative_for})
