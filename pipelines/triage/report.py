"""The run's outputs for people: `report.html` (one self-contained file) and `cases.csv`.

Both are rebuilt from `results.jsonl` at the end of every run (and of every resumed run), so they
always describe all photos recorded so far. Only positive photos are held in memory (their
records, for grouping and cases); errors and photos without violations are streamed from the
journal straight into the page. Thumbnails are embedded as data URIs so the report can be mailed or
opened from a USB stick; past `report_max_cases` cases they are left out to keep the page light.
"""

from __future__ import annotations

import base64
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape

from detect.config_io import replaced_atomically
from detect.taxonomy import Severity
from pipelines.tables import PhoneText, csv_cell
from pipelines.triage.grouping import Group, Member
from pipelines.triage.journal import read_records
from pipelines.triage.record import PhotoRecord, RecordStatus

REPORT = "report.html"
CASES_CSV = "cases.csv"
FIRST_ERRORS = 5


@dataclass
class CaseRef:
    """Where a group went in the case store (filled by the case writer when there is one)."""

    case_id: str | None = None
    evidence: str | None = None
    state: str | None = None
    error: str | None = None  # why the case has no stored evidence (yet)


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
) -> None:
    """Render the report by streaming (the page for 50,000 photos is never one string in memory), into a file renamed
    onto `path` at the end (`replaced_atomically`), as `write_csv`."""
    out_dir = path.parent

    def local(value: datetime | str | None) -> str:
        if value is None:
            return ""
        t = datetime.fromisoformat(value) if isinstance(value, str) else value
        return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    def data_uri(rel: str | None) -> str | None:
        if not rel or not (out_dir / rel).is_file():
            return None
        return "data:image/jpeg;base64," + base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")

    def problems() -> Iterator[PhotoRecord]:
        return (r for r in read_records(results) if not r.ok)

    def negatives() -> Iterator[PhotoRecord]:
        return (r for r in read_records(results) if r.ok and not r.findings)

    type_names = {g.type: (g.lead.finding.name_zh, g.lead.finding.name_en) for g in groups}
    template = _env().get_template("report.html")
    with replaced_atomically(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for chunk in template.generate(
            cases=list(zip(groups, refs, strict=True)), tally=tally, run=run, local=local, data_uri=data_uri,
            problems=problems, negatives=negatives, max_thumb_cases=max_thumb_cases, timezone=str(tz), type_names=type_names,
        ):
            fh.write(chunk)
