"""The run's outputs for people: `report.html` (one self-contained file) and `cases.csv`.

Both are rebuilt from `results.jsonl` at the end of every run (and of every resumed run), so they
always describe all photos recorded so far. Only positive photos are held in memory (their
records, for grouping and cases); errors and photos without violations are streamed from the
journal straight into the page. Thumbnails are embedded as data URIs so the report can be mailed or
opened from a USB stick, each photo's once (`shown_thumbs`), at most `THUMBS_PER_CASE` a case; past
`report_max_cases` cases they are left out to keep the page light.
"""

from __future__ import annotations

import base64
import csv
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from detect.config_io import replaced_atomically
from detect.taxonomy import Severity
from pipelines.tables import PhoneText, csv_cell
from pipelines.triage.grouping import Group, Member
from pipelines.triage.journal import read_records
from pipelines.triage.record import PhotoRecord, RecordStatus

REPORT = "report.html"
CASES_CSV = "cases.csv"
FIRST_ERRORS = 5
#: Thumbnails shown per case in report.html, the lead's first; the case's other photos are listed by name below
#: them (另有 N 张): a case of 500 photos embedded 500, and the report of 2,000 photos weighed 25 MB.
THUMBS_PER_CASE = 12


@dataclass(frozen=True)
class Thumb:
    """A thumbnail embedded once in the report, as an SVG `<image>` each case showing it refers to (`<use>`)."""

    id: str
    width: int
    height: int
    path: Path


@dataclass
class CaseRef:
    """Where a group went in the case store (filled by the case writer when there is one)."""

    case_id: str | None = None
    evidence: str | None = None
    state: str | None = None
    error: str | None = None  # why the case has no stored evidence (yet)
    found: bool = False  # the case store held it already (an earlier run over these photos drafted it): not drafted again


@dataclass
class Tally:
    """Counts over all records in the journal (all runs)."""

    photos: int = 0
    ok: int = 0
    positives: int = 0
    errors: int = 0
    duplicates: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    first_errors: list[tuple[str, str]] = field(default_factory=list)
    """(input, reason) of the first `FIRST_ERRORS` unreadable inputs, for the terminal: the report lists all."""


def collect_members(results: Path) -> tuple[list[Member], Tally]:
    """One `Member` per (positive photo, violation type) and the run's counts, streamed from disk."""
    members: list[Member] = []
    tally = Tally()
    for r in read_records(results):
        tally.photos += 1
        if r.status is RecordStatus.DUPLICATE:
            tally.duplicates += 1
            continue
        if not r.ok:
            tally.errors += 1
            if len(tally.first_errors) < FIRST_ERRORS:
                tally.first_errors.append((r.source, r.reason or r.status))
            continue
        tally.ok += 1
        tally.positives += bool(r.findings)
        for f in r.findings:
            tally.by_type[f.type] = tally.by_type.get(f.type, 0) + 1
            members.append(Member(r, f))
    return members, tally


def write_csv(path: Path, groups: list[Group], refs: list[CaseRef], tz: ZoneInfo) -> None:
    """One row per candidate case, ranked; UTF-8 with BOM so spreadsheet programs show the Chinese, and a small ad's
    text that a spreadsheet would take for a formula (`=HYPERLINK(…)` on a poster) and its phone numbers (`PhoneText`)
    written as text (`csv_cell`). Written beside it and renamed onto it (`replaced_atomically`): a failed write
    leaves an earlier run's file as it was and no half file."""
    with replaced_atomically(path) as tmp, tmp.open("w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "case_id", "type", "name_zh", "name_en", "score", "photos", "lead_photo", "all_photos",
                    "first_taken_at", "last_taken_at", "lat", "lon", "grid_cell", "severity", "phones", "texts", "evidence", "state", "case_note"])
        for rank, (g, ref) in enumerate(zip(groups, refs, strict=True), 1):
            lead, placed, times = g.lead, g.placed, sorted(m.taken_at for m in g.members)
            w.writerow([csv_cell(v) for v in [
                rank, ref.case_id or "", g.type, lead.finding.name_zh, lead.finding.name_en, f"{g.score:.3f}",
                len(g.members), lead.source, ";".join(m.source for m in g.members),
                times[0].astimezone(tz).isoformat(), times[-1].astimezone(tz).isoformat(),
                *((placed.lat, placed.lon, placed.record.grid_cell or "") if placed is not None else ("", "", "")),
                str(Severity.most_serious(m.finding.severity for m in g.members)),
                PhoneText(";".join(sorted({p for m in g.members for p in m.finding.phones}))),
                " | ".join(dict.fromkeys(t for m in g.members for t in m.finding.texts)),
                ref.evidence or "", ref.state or "", ref.error or "",
            ]])


def shown_thumbs(groups: list[Group], out_dir: Path, max_thumb_cases: int) -> dict[str, Thumb]:
    """Thumbnail file (`PhotoRecord.thumb`) -> its `Thumb`, for the first `THUMBS_PER_CASE` photos of the first
    `max_thumb_cases` cases: each photo's once, though a photo of two types is in two cases (it was embedded
    twice). Only their sizes are read here; their bytes go into the page one by one at its end."""
    thumbs: dict[str, Thumb] = {}
    for g in groups[:max_thumb_cases]:
        for m in g.members[:THUMBS_PER_CASE]:
            rel = m.record.thumb
            if rel and rel not in thumbs and (out_dir / rel).is_file():
                with Image.open(out_dir / rel) as im:
                    thumbs[rel] = Thumb(f"thumb-{len(thumbs)}", im.width, im.height, out_dir / rel)
    return thumbs


def class_label(name: str, names_zh: Mapping[str, str]) -> str:
    """A box's class as staff read it, the detector's name beside it (`客车 bus`, a verifier's `verified:<type>` after
    its type's Chinese name), as the review pages label the evidence (`SW.boxLabel`); the name alone without one."""
    zh = names_zh.get(name)
    return f"{zh} {name}" if zh else name


def _env() -> Environment:
    env = Environment(loader=PackageLoader("pipelines.triage", "templates"), autoescape=select_autoescape(["html"]))
    env.trim_blocks = env.lstrip_blocks = True
    return env


def write_report(
    path: Path,
    results: Path,
    groups: list[Group],
    refs: list[CaseRef],
    tally: Tally,
    run: dict[str, Any],
    tz: ZoneInfo,
    max_thumb_cases: int,
    class_names: Mapping[str, str] | None = None,
) -> None:
    """Render the report by streaming (the page for 50,000 photos is never one string in memory), into a file renamed
    onto `path` at the end (`replaced_atomically`), as `write_csv`. `class_names`: class name -> Chinese name, for
    the captions' boxes (`Taxonomy.class_names_zh`)."""
    out_dir = path.parent

    def local(value: datetime | str | None) -> str:
        if value is None:
            return ""
        t = datetime.fromisoformat(value) if isinstance(value, str) else value
        return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    def data_uri(thumb: Thumb) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(thumb.path.read_bytes()).decode("ascii")

    def label(name: str) -> str:
        return class_label(name, class_names or {})

    def problems() -> Iterator[PhotoRecord]:
        return (r for r in read_records(results) if not r.ok)

    def negatives() -> Iterator[PhotoRecord]:
        return (r for r in read_records(results) if r.ok and not r.findings)

    type_names = {g.type: (g.lead.finding.name_zh, g.lead.finding.name_en) for g in groups}
    # under 候选案件 Candidate cases, each type's row gives its cases with its photos: its photos alone (a burst of 3
    # shots one case) read as cases, the rows adding up to more than the total above them
    cases_by_type = Counter(g.type for g in groups)
    template = _env().get_template("report.html")
    with replaced_atomically(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for chunk in template.generate(
            cases=list(zip(groups, refs, strict=True)), tally=tally, run=run, local=local, data_uri=data_uri,
            problems=problems, negatives=negatives, max_thumb_cases=max_thumb_cases, timezone=str(tz), type_names=type_names,
            cases_by_type=cases_by_type,
            thumbs=shown_thumbs(groups, out_dir, max_thumb_cases), thumbs_per_case=THUMBS_PER_CASE, label=label,
        ):
            fh.write(chunk)
