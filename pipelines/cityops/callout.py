"""The call-out list (追呼/停机) for flyposting phone numbers.

Small ads carry a phone number, and cities fight them by calling the number again and again
(追呼) until the operator cuts the line (停机), fining the owner before it is reconnected. Every
number OCR read on a flyposting case (`details.phones`) is one entry: first and last seen, how
many cases, where, which cases and photos, and a status the city keeps up to date. The list is
exported (CSV/Excel) for the call-out system and its results are imported back; a number the list
does not know is reported and the other rows are applied. Nothing is deleted: a status only moves
by an explicit update, and `sync` recomputes the sightings from the cases without touching it.

Cut-offs feed the assessment quota (at least N numbers cut off per month): `cut_off(numbers,
start, end)` is the number status source the analytics' quota items read, and
`monthly_cut_offs` counts them per squad (the squad of the grid cell where a number was first
seen, from the grid file's `squad` property).
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from detect.text import control_character
from pipelines.cases.schema import cases
from pipelines.cases.states import CaseState
from pipelines.cases.store import Audit, audited, holding
from pipelines.cityops.schema import callout_numbers
from pipelines.tables import PhoneText, RowError, read_rows, row_message, row_phone, row_time, write_csv, write_xlsx
from pipelines.times import as_utc

FLYPOSTING = "flyposting"
NOTE_MAX = 2000
"""The most characters of a number's note (备注), set by `PUT /api/v1/callout/{number}` or a results row (`_note`)."""


class Status(StrEnum):
    TO_CALL = "to_call"
    CALLED = "called"
    CUT_OFF = "cut_off"
    RECONNECTED_AFTER_FINE = "reconnected_after_fine"
    FINED = "fined"


LABELS_ZH = {Status.TO_CALL: "待追呼", Status.CALLED: "已追呼", Status.CUT_OFF: "已停机",
             Status.RECONNECTED_AFTER_FINE: "罚款后复机", Status.FINED: "已罚款"}
#: The words operators and call-out systems write in a result sheet for a status besides the list's own labels (the
#: operator's 停机/复机 without the list's wording); one mapping, read by `_row_status` and named in its refusal.
STATUS_WORDS = {"停机": Status.CUT_OFF, "关停": Status.CUT_OFF, "已关停": Status.CUT_OFF,
                "复机": Status.RECONNECTED_AFTER_FINE, "已复机": Status.RECONNECTED_AFTER_FINE,
                "罚款": Status.FINED, "已处罚": Status.FINED,
                "已呼叫": Status.CALLED, "已拨打": Status.CALLED, "未追呼": Status.TO_CALL, "待呼叫": Status.TO_CALL}
_STATUS_BY_TEXT = {**{s.value: s for s in Status}, **{zh: s for s, zh in LABELS_ZH.items()}, **STATUS_WORDS}

EXPORT_HEADER = ["number 号码", "status 状态", "status_zh 状态说明", "count 次数", "first_seen 首次发现", "last_seen 最近发现",
                 "places 地点", "squad 中队", "cases 案件", "photos 照片", "cut_off_at 停机时间", "amount 罚款金额", "note 备注"]
IMPORT_COLUMNS = {
    "number": ("号码", "电话", "phone", "number 号码"),
    "status": ("状态", "result", "结果", "status 状态"),
    "status_zh": ("状态说明", "status_zh 状态说明"),
    "cut_off_at": ("停机时间", "cut_off_at 停机时间"),
    "amount": ("罚款金额", "fine", "amount 罚款金额"),
    "note": ("备注", "note 备注"),
}




@dataclass(frozen=True)
class Entry:
    number: str
    status: Status
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    places: list[dict[str, Any]]
    cases: list[str]
    photos: list[str]
    squad: str | None
    cut_off_at: datetime | None
    amount: float | None
    note: str | None
    status_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}
        out["status"] = self.status.value
        out["status_zh"] = LABELS_ZH[self.status]
        return out


@dataclass
class ImportReport:
    applied: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the file read with something to check (its encoding)

    def as_dict(self) -> dict[str, Any]:
        return {"applied": len(self.applied), "numbers": self.applied, "unknown": self.unknown, "errors": self.errors,
                "warnings": self.warnings}


#: What the sightings written hold: how many numbers, their cases counted together, the latest sighting (`numbers_stamp`).
NumbersStamp = tuple[int, int | None, datetime | None]

#: What `sync` computes of a number from the cases (with `updated_at`, set when they change).
_SIGHTINGS = ("first_seen", "last_seen", "count", "cases", "places", "photos", "squad")

#: Per case store (its URL): the squads and the flyposting cases' stamp the list was last synced with in this process,
#: and the list's `numbers_stamp` as that sync left it (`sync_if_changed`).
_SYNCED: dict[str, tuple[Callable[[str | None], str | None], tuple[int, datetime | None], NumbersStamp]] = {}
_SYNCED_LOCK = threading.Lock()


class CallOutList:
    """The list, in the case store's database (`engine` of an open `CaseStore`). `squad_of(grid_cell)` names a
    cell's squad (or None)."""

    warnings: tuple[str, ...] = ()  # a number status source (`analytics.quota.NumberStatus`) with nothing to check

    def __init__(self, engine: Engine, squad_of: Callable[[str | None], str | None] | None = None, tz: ZoneInfo | None = None):
        self.engine = engine
        self._writer = engine.execution_options(writer=True)  # SQLite: BEGIN IMMEDIATE, as the store's writes
        self.squad_of = squad_of or (lambda cell: None)
        self.tz = tz or ZoneInfo("Asia/Shanghai")

    # ---- from the cases -------------------------------------------------------------------

    def sync(self) -> int:
        """Recompute every number's sightings from the flyposting cases (rejected ones excluded);
        new numbers enter as `to_call`. Returns how many numbers the list holds."""
        return self._sync()[0]

    def _sync(self) -> NumbersStamp:
        """`sync`, answering the list's `numbers_stamp` as its own transaction left it."""
        query = (sa.select(cases.c.id, cases.c.details, cases.c.address, cases.c.grid_cell, cases.c.first_seen_at,
                           cases.c.opened_at, cases.c.created_at, cases.c.evidence_boxes)
                 .where(cases.c.violation_type == FLYPOSTING, cases.c.state != CaseState.REJECTED.value)
                 .order_by(cases.c.opened_at, cases.c.id))
        seen: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                m = row._mapping
                at = m["first_seen_at"] or m["opened_at"] or m["created_at"]
                for number in sorted({str(p) for p in (m["details"] or {}).get("phones") or [] if p}):
                    s = seen.setdefault(number, {"first": at, "last": at, "cases": [], "places": [], "photos": [], "cell": m["grid_cell"]})
                    s["first"], s["last"] = min(s["first"], at), max(s["last"], at)
                    s["cases"].append(m["id"])
                    place = {"address": m["address"], "grid_cell": m["grid_cell"], "squad": self.squad_of(m["grid_cell"])}
                    if place not in s["places"]:
                        s["places"].append(place)
                    image = (m["evidence_boxes"] or {}).get("image")
                    if image:
                        s["photos"].append(f"{m['id']}/{image}")
        now = datetime.now(UTC)
        facts = {number: {"first_seen": s["first"], "last_seen": s["last"], "count": len(s["cases"]), "cases": s["cases"],
                          "places": s["places"], "photos": s["photos"], "squad": self.squad_of(s["cell"]), "updated_at": now}
                 for number, s in seen.items()}
        try:
            return self._write_sightings(facts)
        except sa.exc.IntegrityError:
            # Another sync (the city page's list, an export: each syncs first) inserted a new number after this one
            # looked; PostgreSQL only (SQLite's writers queue). It is known now: written again, its facts updated.
            return self._write_sightings(facts)

    def cases_stamp(self) -> tuple[int, datetime | None]:
        """How many flyposting cases there are and when the latest of them changed: every write to a case sets its
        updated_at and none is deleted, so while this stamp stands `sync` would write what it wrote at it (a case
        retyped away lowers the count, one retyped in or rejected is the latest change). One scan of the cases'
        types, about 10 ms at 20,000 cases on SQLite."""
        query = sa.select(sa.func.count(), sa.func.max(cases.c.updated_at)).where(cases.c.violation_type == FLYPOSTING)
        with self.engine.connect() as conn:
            count, latest = conn.execute(query).one()
        return count, latest

    @staticmethod
    def numbers_stamp(conn: sa.Connection) -> NumbersStamp:
        """How many numbers the list holds, their sightings counted together and the latest: what `sync` writes and
        nothing else does, so it stands while the list's sightings are as written (a status set, by hand or imported,
        leaves it; the table emptied, restored from a backup or synced elsewhere moves it). One scan of the list."""
        query = sa.select(sa.func.count(), sa.func.sum(callout_numbers.c.count), sa.func.max(callout_numbers.c.last_seen))
        rows, sightings, latest = conn.execute(query).one()
        return rows, None if sightings is None else int(sightings), latest

    def sync_if_changed(self) -> bool:
        """`sync` unless this process synced the list with the same squads (`squad_of`, the same object: keep it, as
        the service's `loaded_file` does) at the flyposting cases' present `cases_stamp`, and the list's
        `numbers_stamp` is still what that sync left; True when it synced. Each GET of the list synced every flyposting
        case and wrote every number, 0.6-3 s at 3,300 cases, though the cases had not changed since the last; and with
        the cases alone compared, a list emptied or restored under this process (a restore, another process) stayed
        so until a case changed. The cases' stamp is taken before the sync, so a case changed meanwhile is synced
        next; the list's in the sync's transaction, so a change to it after is seen at the next call."""
        key = self.engine.url.render_as_string(hide_password=False)
        squads, cases_now = self.squad_of, self.cases_stamp()
        with _SYNCED_LOCK:
            synced = _SYNCED.get(key)
        if synced is not None and synced[:2] == (squads, cases_now):
            with self.engine.connect() as conn:
                if self.numbers_stamp(conn) == synced[2]:
                    return False
        numbers = self._sync()
        with _SYNCED_LOCK:
            _SYNCED[key] = (squads, cases_now, numbers)
        return True

    def _write_sightings(self, facts: dict[str, dict[str, Any]]) -> NumbersStamp:
        """Each number's `facts` in one transaction: updated when listed with other sightings, else entered as
        `to_call`; the list's `numbers_stamp` after (its length first). A number whose sightings are as written is
        left alone, its `updated_at` with it: a new case rewrote a district's every number, 500 rows for one."""
        columns = [callout_numbers.c[name] for name in _SIGHTINGS]
        with self._writer.begin() as conn:
            written = {r.number: tuple(r)[1:] for r in conn.execute(sa.select(callout_numbers.c.number, *columns))}
            for number, values in facts.items():
                if number not in written:
                    conn.execute(callout_numbers.insert().values(number=number, status=Status.TO_CALL.value, **values))
                elif written[number] != tuple(values[name] for name in _SIGHTINGS):
                    conn.execute(callout_numbers.update().where(callout_numbers.c.number == number).values(**values))
            return self.numbers_stamp(conn)

    # ---- reading --------------------------------------------------------------------------

    def entries(self, status: Status | None = None) -> list[Entry]:
        with self.engine.connect() as conn:
            return [_entry(r) for r in conn.execute(self._listed(status))]

    def page(self, status: Status | None = None, *, q: str | None = None, limit: int, offset: int = 0) -> tuple[list[Entry], int]:
        """`limit` entries from the `offset`-th in `entries`' order, only the numbers holding `q` when given, and how
        many there are (all pages): a district's list is hundreds of numbers, thousands over the years."""
        query = self._listed(status)
        if q:
            query = query.where(*holding(q, (callout_numbers.c.number,)))
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
            return [_entry(r) for r in conn.execute(query.limit(limit).offset(offset))], total

    @staticmethod
    def _listed(status: Status | None) -> sa.Select:
        """The numbers, last seen first, only those in `status` when given."""
        query = sa.select(callout_numbers).order_by(callout_numbers.c.last_seen.desc(), callout_numbers.c.number)
        return query if status is None else query.where(callout_numbers.c.status == Status(status).value)

    def get(self, number: str) -> Entry | None:
        with self.engine.connect() as conn:
            return self._get(conn, number)

    @staticmethod
    def _get(conn: sa.Connection, number: str) -> Entry | None:
        row = conn.execute(sa.select(callout_numbers).where(callout_numbers.c.number == number)).first()
        return None if row is None else _entry(row)

    # ---- the city's updates ---------------------------------------------------------------

    def set_status(self, number: str, status: Status | str, *, amount: float | None = None, note: str | None = None,
                   cut_off_at: datetime | None = None, now: datetime | None = None, audit: Audit[Entry] | None = None) -> Entry:
        """Record what the city did with a number. `cut_off_at` defaults to now when it becomes `cut_off`;
        it is kept afterwards (a reconnected line was still cut off that month). `status_at` is when the
        status last changed: the same status again (an export imported back unchanged) keeps it. `audit`: the
        update's record, in its transaction (`audited`). KeyError: unknown number."""
        with self._writer.begin() as conn:
            return audited(conn, self._set_status(conn, number, status, amount=amount, note=note, cut_off_at=cut_off_at,
                                                  now=now), audit)

    def _set_status(self, conn: sa.Connection, number: str, status: Status | str, *, amount: float | None,
                    note: str | None, cut_off_at: datetime | None, now: datetime | None = None) -> Entry:
        """`set_status` in the transaction of `conn`: the entry as it is after."""
        status = Status(status)
        now = now or datetime.now(UTC)
        entry = self._get(conn, number)
        if entry is None:
            raise KeyError(number)
        values: dict[str, Any] = {"status": status.value, "updated_at": now}
        if status is not entry.status:
            values["status_at"] = now
        if cut_off_at is not None:
            values["cut_off_at"] = cut_off_at
        elif status is Status.CUT_OFF and entry.cut_off_at is None:
            values["cut_off_at"] = now
        if amount is not None:
            values["amount"] = float(amount)
        if note is not None:
            values["note"] = note
        conn.execute(callout_numbers.update().where(callout_numbers.c.number == number).values(**values))
        return self._get(conn, number)  # type: ignore[return-value]

    # ---- files ----------------------------------------------------------------------------

    def export(self, path: Path, status: Status | None = None) -> Path:
        """The list for the call-out system: `.xlsx` as Excel, anything else as CSV (UTF-8 with BOM); numbers as text
        in both (`PhoneText`), so a landline keeps its leading 0."""
        rows = [[PhoneText(e.number), e.status.value, LABELS_ZH[e.status], e.count, self._local(e.first_seen), self._local(e.last_seen),
                 [p["address"] or p["grid_cell"] or "" for p in e.places], e.squad or "", e.cases, e.photos,
                 self._local(e.cut_off_at), e.amount, e.note or ""] for e in self.entries(status)]
        if path.suffix.lower() == ".xlsx":
            return write_xlsx(path, "追呼清单", EXPORT_HEADER, rows)
        return write_csv(path, EXPORT_HEADER, rows)

    def import_results(self, data: bytes, name: str, encoding: str | None = None, *,
                       audit: Audit[ImportReport] | None = None) -> ImportReport:
        """Apply the call-out system's results (number, status, optional cut_off_at, amount, note), in one transaction
        with `audit`'s record of the import (`audited`): every row applied or, on a failure, none. `encoding`: the
        CSV's (`pipelines.tables.sheet_encoding`), else it is found; a note on the one found is in the warnings."""
        report = ImportReport()
        rows = read_rows(data, name, IMPORT_COLUMNS, required=("number", "status"), encoding=encoding, notes=report.warnings)
        with self._writer.begin() as conn:
            for line, row in rows:
                try:
                    number = row_phone(row.get("number"), "number", ("，或使用导出的 .xlsx", " or use the exported .xlsx"))
                    status = _row_status(row, self._get(conn, number))
                    cut_off_at = self._time(row.get("cut_off_at"))
                    amount = _amount(row.get("amount"))
                    note = _note(row.get("note"))
                except RowError as exc:
                    report.errors.append(row_message(name, line, exc, IMPORT_COLUMNS))
                    continue
                try:
                    self._set_status(conn, number, status, amount=amount, note=note, cut_off_at=cut_off_at)
                except KeyError:
                    report.unknown.append(number)
                    report.errors.append(row_message(name, line, RowError(
                        "number", f"{number} 不在追呼清单上（没有小广告案件带有这个号码）",
                        f"number {number}: not on the call-out list (no flyposting case carries it)"), IMPORT_COLUMNS))
                    continue
                report.applied.append(number)
            return audited(conn, report, audit)

    # ---- quota ----------------------------------------------------------------------------

    def cut_off(self, numbers: Iterable[str], start: datetime, end: datetime) -> dict[str, datetime]:
        """Of `numbers`, those cut off in [start, end), with when (the analytics' number status source)."""
        wanted = set(numbers)
        if not wanted:
            return {}
        query = sa.select(callout_numbers.c.number, callout_numbers.c.cut_off_at).where(
            callout_numbers.c.number.in_(wanted), callout_numbers.c.cut_off_at.is_not(None),
            callout_numbers.c.cut_off_at >= start, callout_numbers.c.cut_off_at < end)
        with self.engine.connect() as conn:
            return {r.number: r.cut_off_at for r in conn.execute(query)}

    def monthly_cut_offs(self, year: int) -> dict[str, dict[str, int]]:
        """`YYYY-MM` -> squad -> numbers cut off that (local) month; squad "(未标注 none)" when unknown."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        query = sa.select(callout_numbers.c.cut_off_at, callout_numbers.c.squad).where(callout_numbers.c.cut_off_at.is_not(None))
        with self.engine.connect() as conn:
            for at, squad in conn.execute(query):
                local = at.astimezone(self.tz)
                if local.year == year:
                    out[f"{local:%Y-%m}"][squad or "(未标注 none)"] += 1
        return {month: dict(squads) for month, squads in sorted(out.items())}

    # ---- internals ------------------------------------------------------------------------

    def _local(self, t: datetime | None) -> str:
        return t.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if t else ""

    def _time(self, value: Any) -> datetime | None:
        if value in (None, ""):
            return None
        at = row_time(value, "cut_off_at")
        try:  # staff type local times: no offset = the city's zone
            return as_utc(at, self.tz)
        except ValueError:
            raise RowError("cut_off_at", f"{value!r} 超出可用的时间范围", f"cut_off_at: {value!r} is out of range") from None


def _note(value: Any) -> str | None:
    """A results row's note (备注) under the rules of `PUT /api/v1/callout/{number}`: at most `NOTE_MAX` characters, line
    breaks and tabs but no other control character. Taken as it came, a megabyte of a note went out in every page of
    the list that showed its number, and a NUL (which PostgreSQL refuses in text) stopped the whole import there."""
    if value in (None, ""):
        return None
    text = str(value)
    if len(text) > NOTE_MAX:
        raise RowError("note", f"取值不可用：超过 {NOTE_MAX} 个字符", f"note: String should have at most {NOTE_MAX} characters")
    if (found := control_character(text, lines=True)) is not None:
        raise RowError("note", f"含控制字符（{found}），不是文字（可换行）",
                       f"note: the text has a control character ({found}) that is no text (line breaks and tabs are allowed)")
    return text


def _amount(value: Any) -> float | None:
    """A fine in yuan as staff type it (`200`, `200元`, `¥1,000.50`: Excel's currency and thousands formats),
    a finite number >= 0 as `PUT /api/v1/callout/{number}` requires (`float()` alone takes "nan", "inf"
    and "-5", which the list would keep and show as no fine or a negative one)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        amount = float(value)
    else:
        text = str(value).strip().replace(",", "").replace("，", "").removeprefix("¥").removeprefix("￥").removesuffix("元").strip()
        try:
            amount = float(text)
        except ValueError:
            raise RowError("amount", f"{value!r} 不是以元计的金额（如 200 或 200元）",
                           f"amount: {value!r} is not an amount in yuan (e.g. 200 or 200元)") from None
    if not math.isfinite(amount) or amount < 0:
        raise RowError("amount", f"{value!r} 不是以元计的金额（应为不小于 0 的数）", f"amount: {value!r} is not an amount in yuan (a number >= 0)")
    return amount


def _row_status(row: dict[str, Any], entry: Entry | None) -> Status:
    """The status a result row asks for. The export has `status` and its Chinese label `status_zh`, and staff
    edit either: when the two disagree, the one that differs from the number's current status is the edit
    (the other is the exported value left as it was); when both differ, the row is refused."""
    given: dict[str, Status] = {}
    for column in ("status", "status_zh"):
        text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(row.get(column) or ""))).lower()
        if column == "status_zh" and not text:
            continue
        if text not in _STATUS_BY_TEXT:
            words = "、".join([*LABELS_ZH.values(), *STATUS_WORDS])
            raise RowError(column, f"{row.get(column)!r} 不是可用的状态（{words}）",
                           f"{column}: {row.get(column)!r} is not one of {', '.join(s.value for s in Status)} "
                           f"({words})")
        given[column] = _STATUS_BY_TEXT[text]
    if len(set(given.values())) == 1 or entry is None:  # an unknown number is reported as such by the caller
        return given["status"]
    edited = [s for s in given.values() if s is not entry.status]
    if len(edited) == 1:
        return edited[0]
    raise RowError("status", f"状态 {LABELS_ZH[given['status']]} 与状态说明 {LABELS_ZH[given['status_zh']]} 不一致"
                             f"（现为 {LABELS_ZH[entry.status]}）：只改其中一列",
                   f"status: {given['status'].value} and status_zh: {LABELS_ZH[given['status_zh']]} disagree "
                   f"(now {entry.status.value}): change one of the two columns")


def _entry(row) -> Entry:
    m = row._mapping
    return Entry(number=m["number"], status=Status(m["status"]), count=m["count"], first_seen=m["first_seen"],
                 last_seen=m["last_seen"], places=list(m["places"] or []), cases=list(m["cases"] or []),
                 photos=list(m["photos"] or []), squad=m["squad"], cut_off_at=m["cut_off_at"], amount=m["amount"],
                 note=m["note"], status_at=m["status_at"])


def number_status_source(analytics, engine: Engine, tz: ZoneInfo, cutoffs: Path | None = None):
    """The number status source the analytics' quota items read (`analytics.number_status`): the call-out
    list, the cut-off CSV (`cutoffs` overrides `analytics.cutoffs`), or None (quotas not scored)."""
    if analytics.number_status == "callout" and cutoffs is None:
        return CallOutList(engine, tz=tz)
    path = cutoffs or analytics.cutoffs
    if path is None:
        return None
    from pipelines.analytics.quota import CutoffFile

    return CutoffFile(path, tz)
