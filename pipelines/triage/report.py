"""The run's outputs for people: `report.html` (one self-contained file) and `cases.csv`.

Both are rebuilt from `results.jsonl` at the end of every run (and of every resumed run), so they
always describe all photos recorded so far. Only positive photos are held in memory (a few
fields each, for grouping); errors and photos without violations are streamed from the journal
straight into the page. Thumbnails are embedded as data URIs so the report can be mailed or
opened from a USB stick; past `report_max_cases` cases they are left out to keep the page light.
"""

from __future__ import annotations

import base64
import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape

from pipelines.triage.grouping import Group, Member
from pipelines.triage.journal import read_records

REPORT = "report.html"
CASES_CSV = "cases.csv"


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


def collect_members(results: Path) -> tuple[list[Member], Tally]:
    """One `Member` per (positive photo, violation type) and the run's counts, streamed from disk."""
    members: list[Member] = []
    tally = Tally()
    for r in read_records(results):
        tally.photos += 1
        status = r["status"]
        if status == "duplicate":
            tally.duplicates += 1
            continue
        if status != "ok":
            tally.errors += 1
            continue
        tally.ok += 1
        tally.positives += bool(r["findings"])
        phash = int(r["phash"], 16) if r.get("phash") else None
        for f in r["findings"]:
            tally.by_type[f["type"]] = tally.by_type.get(f["type"], 0) + 1
            facts = {k: r.get(k) for k in ("photo_id", "path", "member", "thumb", "time_source", "grid_cell", "width",
                                           "height", "warnings", "detections")}
            members.append(Member(
                sha256=r["sha256"], source=r["source"], type=f["type"], score=f["score"],
                taken_at=datetime.fromisoformat(r["taken_at"]), lat=r.get("lat"), lon=r.get("lon"), phash=phash,
                facts={**facts, **f},
            ))
    return members, tally


def write_csv(path: Path, groups: list[Group], refs: list[CaseRef], tz: ZoneInfo) -> None:
    """One row per candidate case, ranked; UTF-8 with BOM so spreadsheet programs show the Chinese."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "case_id", "type", "name_zh", "name_en", "score", "photos", "lead_photo", "all_photos",
                    "first_taken_at", "last_taken_at", "lat", "lon", "grid_cell", "phones", "texts", "evidence", "state", "case_note"])
        for rank, (g, ref) in enumerate(zip(groups, refs, strict=True), 1):
            lead, times = g.lead, sorted(m.taken_at for m in g.members)
            w.writerow([
                rank, ref.case_id or "", g.type, lead.facts["name_zh"], lead.facts["name_en"], f"{g.score:.3f}",
                len(g.members), lead.source, ";".join(m.source for m in g.members),
                times[0].astimezone(tz).isoformat(), times[-1].astimezone(tz).isoformat(),
                "" if lead.lat is None else lead.lat, "" if lead.lon is None else lead.lon, lead.facts.get("grid_cell") or "",
                ";".join(sorted({p for m in g.members for p in m.facts.get("phones", [])})),
                " | ".join(dict.fromkeys(t for m in g.members for t in m.facts.get("texts", []))),
                ref.evidence or "", ref.state or "", ref.error or "",
            ])
    os.replace(tmp, path)


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
    """Render the report by streaming (the page for 50,000 photos is never one string in memory)."""
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

    def problems() -> Iterator[dict[str, Any]]:
        return (r for r in read_records(results) if r["status"] != "ok")

    def negatives() -> Iterator[dict[str, Any]]:
        return (r for r in read_records(results) if r["status"] == "ok" and not r["findings"])

    type_names = {g.type: (g.lead.facts["name_zh"], g.lead.facts["name_en"]) for g in groups}
    template = _env().get_template("report.html")
    tmp = path.with_suffix(".html.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for chunk in template.generate(
            cases=list(zip(groups, refs, strict=True)), tally=tally, run=run, local=local, data_uri=data_uri,
            problems=problems, negatives=negatives, max_thumb_cases=max_thumb_cases, timezone=str(tz), type_names=type_names,
        ):
            fh.write(chunk)
    os.replace(tmp, path)
