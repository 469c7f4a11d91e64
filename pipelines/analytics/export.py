"""Cases as CSV or Excel, filtered by type, state, period, grid cell, street, camera and source.

One filter builder (`case_filter`) for the CLI, the API and the review page: each value is
checked and a bad one is refused naming the filter and the reason, before anything is read.
Times are written in local time (the analytics time zone), as city staff read them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from detect.candidates import WHOLE_IMAGE
from detect.config_io import replaced_atomically
from detect.taxonomy import Severity, Taxonomy
from pipelines.analytics.casedata import CaseFact, CaseFilter, CaseNote
from pipelines.analytics.periods import PeriodError, parse_period
from pipelines.cases.states import STATE_NAMES_ZH, CaseState
from pipelines.cases.vocabulary import SOURCE_NAMES_ZH as KIND_NAMES_ZH, reason_label, review_label
from pipelines.analytics.tables import Table, csv_chunks, write_xlsx_rows
from pipelines.tables import PhoneText

SOURCES = {"camera": "camera", "photo": "photo_batch"}
SOURCE_NAMES_ZH = {value: KIND_NAMES_ZH[kind] for value, kind in SOURCES.items()}
"""What city staff call each source filter value (the map page's 来源 choices say the same): its source kind's name."""
COLUMNS = ["案件编号 id", "类型 type", "类型名称 type name", "状态 state", "状态名称 state name", "来源 source",
           "来源名称 source name", "摄像头/批次 camera or batch", "网格 grid", "街道 street", "中队 squad", "区域 zone", "地址 address",
           "纬度 lat", "经度 lon", "发现时间 opened (local)", "目标数 objects", "号码 phones", "标签 tags", "严重程度 severity",
           "严重程度名称 severity name", "核验模型 verifier", "审核 review", "审核理由 review reason",
           "审核说明 review note", "派遣目标 dispatch target", "派遣编号 dispatch ref", "描述 description",
           "备注 notes"]
NOTE_INDENT = "    "
"""What begins each further line of a note in the 备注 notes cell (`notes_text`): a line flush with the cell begins a note."""
LOCAL_TIME = "%Y-%m-%d %H:%M:%S"
"""How the export writes a time, in the analytics time zone."""
EXPORT_SHEET = ("cases", "案件 Cases")
"""The export's table key and sheet title."""


def local_time(at: str, zone: str) -> str:
    """An ISO time a file records in UTC (`generated_at`) as staff read every other time of a report or workbook: on the
    clock of `zone`, no offset ('2026-12-01T16:05:00+00:00' was 00:05 on the 2nd in Shanghai)."""
    return datetime.fromisoformat(at).astimezone(ZoneInfo(zone)).strftime(LOCAL_TIME)


class FilterError(ValueError):
    """A filter value that cannot be used; the message names the filter, and `field` too (the API's query parameter
    and the command's option of that name), so the service's 422 names it in `errors[].loc` as for any other field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def case_filter(taxonomy: Taxonomy, tz: ZoneInfo, *, types: Sequence[str] = (), states: Sequence[str] = (),
                period: str | None = None, since: str | None = None, grid_cells: Sequence[str] = (), streets: Sequence[str] = (),
                cameras: Sequence[str] = (), source: str | None = None, reviewed: bool | None = None,
                severities: Sequence[str] = (), known_streets: Collection[str] | None = None) -> CaseFilter:
    """Check every value (unknown type/state/source, unreadable period or day) and build the filter.

    `since` (a local day, YYYY-MM-DD) starts the cases there, within `period` if one is given too: the map's
    default window is its last days, which no period names, and its export covers those days.

    `known_streets` (the grid file's streets) refuses a street no cell names: streets come only from the
    grid file, so a misspelt or unconfigured one would otherwise export nothing, silently."""
    for t in types:
        if t not in taxonomy.types:
            raise FilterError("type", f"type {t!r}: unknown violation type (known: {', '.join(sorted(taxonomy.types))})")
    known_states = [s.value for s in CaseState]
    for s in states:
        if s not in known_states:
            raise FilterError("state", f"state {s!r}: not a case state (states: {', '.join(known_states)})")
    if source is not None and source not in SOURCES:
        raise FilterError("source", f"source {source!r}: one of {', '.join(SOURCES)}")
    if known_streets is not None:
        for s in streets:
            if s not in known_streets:
                raise FilterError("street", f"street {s!r}: no cell of the grid file (analytics.grid) is in it "
                                  f"(streets: {', '.join(sorted(known_streets)) or 'none; set analytics.grid to a file whose cells name their street'})")
    known_severities = [s.value for s in Severity]
    for s in severities:
        if s not in known_severities:
            raise FilterError("severity", f"severity {s!r}: not a case severity (severities: {', '.join(known_severities)})")
    start = end = None
    if period:
        try:
            start, end = parse_period(period).bounds(tz)
        except PeriodError as exc:
            raise FilterError("period", str(exc)) from None
    if since:
        first = _first_moment(since, tz)
        start = first if start is None else max(start, first)
    return CaseFilter(types=tuple(types), states=tuple(states), start=start, end=end, grid_cells=tuple(grid_cells),
                      streets=tuple(streets), cameras=tuple(cameras), source_kind=SOURCES.get(source or ""), reviewed=reviewed,
                      severities=tuple(Severity(s) for s in severities))


def _first_moment(day: str, tz: ZoneInfo) -> datetime:
    """The local midnight that starts `day` (YYYY-MM-DD, the `since` filter), as aware UTC."""
    try:
        period = parse_period(day)
    except PeriodError as exc:
        raise FilterError("since", f"since {day!r}: not a day YYYY-MM-DD ({exc})") from None
    if period.kind != "day":
        raise FilterError("since", f"since {day!r}: not a day YYYY-MM-DD (the first local day to export)")
    return period.bounds(tz)[0]


def write_export(path: Path, rows: Iterable[list]) -> int:
    """`rows` (`export_rows`) written to `path` as the service streams them, CSV or, for a .xlsx name, Excel, and
    how many there were. Written row by row, as they are read (`iter_cases`), to a file beside `path` renamed onto
    it at the end: a city's years of cases are never in memory at once, and an export that fails half way (the
    store gone, Ctrl-C, a full disk) leaves no half file and any earlier export of that name as it was."""
    count = 0

    def counted() -> Iterator[list]:
        nonlocal count
        for row in rows:
            count += 1
            yield row

    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        if path.suffix.lower() == ".xlsx":
            write_xlsx_rows(tmp, Table(*EXPORT_SHEET, COLUMNS), counted())
        else:
            with tmp.open("w", encoding="utf-8", newline="") as f:
                f.writelines(csv_chunks(COLUMNS, counted()))
    return count


def export_rows(cases: Iterable[CaseFact], taxonomy: Taxonomy, tz: ZoneInfo) -> Iterator[list]:
    """Each case's row of `COLUMNS`, as `cases` gives them: the service streams a city's years of cases through it."""
    def name(t: str) -> str:
        return taxonomy.types[t].name_zh if t in taxonomy.types else t

    for c in cases:
        source = "camera" if c.source_kind == "camera" else "photo"
        yield [c.id, c.violation_type, name(c.violation_type), c.state.value, STATE_NAMES_ZH[c.state], source,
               SOURCE_NAMES_ZH[source], c.source_id, c.grid_cell, c.street, c.squad, _zone(c.zone_id), c.address, _degrees(c.lat), _degrees(c.lon),
               c.at.astimezone(tz).strftime(LOCAL_TIME), c.object_count, PhoneText(";".join(c.phones)),
               ";".join(c.tags), c.severity.value, c.severity.name_zh, c.verifier_id, review_label(c.review_decision),
               reason_label(c.review_reason), c.review_note, c.dispatch_target,
               c.dispatch_ref, c.description, notes_text(c.notes, tz)]


def _zone(zone_id: str | None) -> str | None:
    """The zone staff read: none for a photo or frame judged as a whole (`WHOLE_IMAGE`, the case's `image`), which said
    `image` in the 区域 zone column where the triage report says nothing."""
    return None if zone_id == WHOLE_IMAGE else zone_id


def _degrees(value: float | None) -> float | None:
    """A latitude or longitude to 6 decimals (about 0.1 m): written as stored it showed the float's noise
    (120.10199999999999 for 120.102)."""
    return None if value is None else round(value, 6)


def notes_text(notes: Sequence[CaseNote], tz: ZoneInfo) -> str:
    """Reviewers' notes in one cell, a line each, oldest first: `local time actor: text`. A column of their own, not
    in 描述 description, which is the case's own text (sent to the platform); text a spreadsheet would take for a
    formula is kept text by the writers as any cell's. A note of several lines has its further lines after
    `NOTE_INDENT` (its line breaks, CR LF or CR too, written as one), so a line it holds that reads as a note
    (`2026-12-05 10:00:00 张科长: 同意作废`) is not taken for another person's."""
    def note(n: CaseNote) -> str:
        text = ("\n" + NOTE_INDENT).join(n.text.splitlines())
        return f"{n.at.astimezone(tz).strftime(LOCAL_TIME) if n.at else '?'} {n.by}: {text}"

    return "\n".join(note(n) for n in notes)
