"""The case store: cases, their state history, and the dispatch outbox, in one database.

SQLite by default (WAL, `BEGIN IMMEDIATE` so concurrent writers queue instead of failing),
PostgreSQL by URL through the same SQLAlchemy Core code. Every state change goes through
`transition`, which checks the allowed-transition table, compares-and-sets the state and writes a
history row in the same transaction. Queuing a case writes its outbox entry in that same
transaction too, so a crash can never leave a queued case without a delivery or the reverse.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from detect.candidates import WHOLE_IMAGE
from detect.frames import GeoPoint
from detect.grades import Grade, graded_severity
from detect.taxonomy import Severity, Taxonomy
from detect.text import control_character
from pipelines.cases.schema import audit_log, batches, case_history, cases, migrate, outbox
from pipelines.cases.states import EDITABLE, ON_PLATFORM, STATE_NAMES_ZH, CaseState, check_transition
from pipelines.cases.vocabulary import OutboxStatus
from pipelines.times import as_utc

if TYPE_CHECKING:
    from detect.scenes import ZoneRules
    from pipelines.grid import GridCells

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///streetwatch-data/cases.db"
STORE_URLS = "sqlite:///path/to/cases.db or postgresql+psycopg://user@host/db"


def check_store_url(url: str) -> str:
    """`url` when it names a database the store runs on (SQLite, PostgreSQL) through a driver installed here; else
    ValueError saying what to write. Checked where the settings are read: a URL that did not parse, named another
    database (`postgres://`, as hosting platforms write it, is not SQLAlchemy's name) or a driver not installed
    stopped every command with SQLAlchemy's traceback, naming neither `cases.url` nor the settings file."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(f"not a database URL: write {STORE_URLS}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        named = "postgres:// is not SQLAlchemy's name for PostgreSQL" if parsed.get_backend_name() == "postgres" else (
            f"{parsed.drivername}:// is not a database the case store runs on")
        raise ValueError(f"{named}: write {STORE_URLS}")
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        raise ValueError(f"{parsed.drivername}://: its driver is not installed ({exc}); PostgreSQL: postgresql+psycopg:// "
                         "with psycopg installed (pip install 'streetwatch[postgres]')") from None
    except sa.exc.NoSuchModuleError:
        raise ValueError(f"{parsed.drivername}://: no such driver: write {STORE_URLS}") from None
    return url
# Columns `update()` may change; the state only moves through `transition()`, ids never change.
_FIXED = {"id", "state", "created_at", "updated_at"}

T = TypeVar("T")
Audit = Callable[[Connection, T], None]
"""Writes the audit record of a person's action on the connection of the transaction that did it, given what that
transaction wrote (a case, a shop, an import's report): the action and its record commit together or not at all
(`audited`; the store's review writes, the frontage register's and the call-out list's)."""


def holding(text: str, columns: Iterable[sa.ColumnElement[Any]]) -> list[sa.ColumnElement[bool]]:
    """For each of `columns`, whether it holds `text`, case aside, its %, _ and \\ taken as written (a search box's)."""
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return [sa.func.lower(col).like(pattern, escape="\\") for col in columns]


def audited(conn: Connection, done: T, audit: Audit[T] | None) -> T:
    """`done`, once `audit` (if given) has written its record in the transaction of `conn`, before it commits: written
    after the action's own transaction, a failed audit write left the action done with no record of it, and the person,
    answered an error, acting again. A failing `audit` rolls the action back with it."""
    if audit is not None:
        audit(conn, done)
    return done


class CaseNotFound(KeyError):
    def __str__(self) -> str:
        return f"no case {self.args[0]!r} in the case store"


class CaseStoreError(RuntimeError):
    """A request the store cannot honour (named case, reason)."""


class CaseStoreUnreachable(RuntimeError):
    """The store's database could not be opened: a server that is down or refuses us (a password missing or wrong:
    libpq reads it from the URL, $PGPASSWORD or ~/.pgpass, the last two keeping it out of the settings file), a
    SQLite file that cannot be opened. Raised in place of SQLAlchemy's connect error so that whoever shows it (the CLI's
    one error line) can name the store (password masked) and what to check, not the driver's traceback.
    Not a CaseStoreError: the service must not answer it as a conflict of the request (nor show callers the URL)."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"cannot open the case store {url}: {reason} (cases.url; check {_what_to_check(url, reason)})")


def _what_to_check(url: str, reason: str) -> str:
    """What to look at when the store at `url` could not be opened for `reason` (the driver's words)."""
    if not url.startswith("sqlite"):
        return ("that the server runs and accepts connections at that host and port, and the user, password "
                "and database name; the password is best kept out of the settings file, in $PGPASSWORD or "
                "~/.pgpass where the command runs")
    if "not a database" in reason:  # SQLite's SQLITE_NOTADB: a file of another kind, or one damaged or cut short
        return ("that it names the store's database file: this file is not a SQLite database (another file given, "
                "or the store damaged: restore it from its backup)")
    if EMPTY_FILE in reason:
        return ("that it names the store's database file: this one is empty, no store (restore the store from its "
                "backup, or delete the empty file to start a new store)")
    return "that the file's folder exists and can be written, and that the path is not a folder"


class CaseStoreFull(RuntimeError):
    """A write the store's disk had no room for (SQLite's SQLITE_FULL 'database or disk is full', PostgreSQL's
    disk_full 53100): raised in place of SQLAlchemy's error, whose traceback every command printed, so that whoever
    shows it (the CLI's one error line) names the store and where to free space. The write's transaction is rolled
    back: nothing of it is kept, and nothing already stored is lost."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        database = sqlite_file(url)
        where = (f"the disk holding {database} (and its -wal file beside it)" if database is not None else
                 "the database server's data disk")
        super().__init__(f"case store {url}: {reason}: this write was not kept (what the store held before is); free "
                         f"space on {where} and run the command again")


class CaseChanged(CaseStoreError):
    """The case changed after the reviewer loaded it (another reviewer, a dispatch status): acting on what they
    saw would overwrite what they did not see, so nothing is done and they reload it (Chinese first, for the pages).
    `case` is what the page needs to say so in its own words (it reloads by itself): id, state, last_by, updated_at."""

    def __init__(self, message: str, case: dict[str, Any]):
        super().__init__(message)
        self.case = case


class NotCandidate(CaseStoreError):
    """An action only a candidate takes (an approval without dispatch) asked of a case in another state (both states
    named, Chinese first): answered as an invalid transition."""


class NotReopenable(CaseStoreError):
    """A case whose rejection cannot be undone here: not rejected, rejected by a platform or by triage rather than in
    review, a delivery that reached (or may have reached) a platform, or rejected longer ago than the window (why,
    Chinese first, for the pages)."""


class CaseOnPlatform(CaseStoreError):
    """A reviewer's reject of a case a dispatch platform holds (`ON_PLATFORM`): the platform owns it and may send a
    handler, so the store must not say 已作废 here on the reviewer's word alone. Staff void it on the platform, whose
    status update (作废 by webhook, a poll) then moves the case here; a platform without a voided status (`voids`
    False: Open311) is told to close it, which reads here as handled (`handled_state`). Names the platform and its task
    number, Chinese first; `case`: id, state, dispatch_target and dispatch_ref, for a client that says it in its own words."""

    def __init__(self, case: Case, *, voids: bool = True):
        target, ref = case.dispatch_target or "?", case.dispatch_ref or "?"
        if voids:
            zh, en = "请在平台作废，平台的状态更新会同步到这里", "void it on the platform, whose status update then moves it here"
        else:
            after = handled_state(case)
            zh = f"{target} 没有作废状态，请在平台办结/关闭，关闭后这里转为{STATE_NAMES_ZH[after]}"
            en = f"{target} has no voided status: close it there, and its closing moves the case here to {after.value}"
        super().__init__(f"案件 {case.id} 已上报 {target}（任务号 {ref}，现为{STATE_NAMES_ZH[case.state]}），由平台处理，"
                         f"不能在此作废：{zh} — case {case.id} is held by {target} as {ref} ({case.state.value}): it "
                         f"cannot be rejected here; {en}")
        self.case = {"id": case.id, "state": case.state.value, "dispatch_target": case.dispatch_target,
                     "dispatch_ref": case.dispatch_ref}


class PlaceError(CaseStoreError):
    """A place a reviewer gave that cannot be one (the field and why, Chinese first for the pages): bad input,
    not a conflict with the case's state. `field` and `reason` apart, so the service's 422 names the field in
    `errors[].loc` as for any other; the message is `field: reason`."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


TAG = re.compile(r"^[a-z0-9_]{1,32}$")
MAX_TAGS = 10


def severity_of(details: dict[str, Any] | None) -> Severity:
    """A case's severity (`details["severity"]`); cases recorded before severity existed count as general
    (`recorded_severity` is the same reading in SQL)."""
    return Severity((details or {}).get("severity") or Severity.GENERAL)


def recorded_severity() -> sa.ColumnElement[str]:
    """`severity_of` as an SQL expression over `cases.details`, for filters (SQLite and PostgreSQL)."""
    return sa.func.coalesce(cases.c.details["severity"].as_string(), Severity.GENERAL.value)


def check_tags(tags: list[str]) -> list[str]:
    """Tags sorted and unique, or CaseStoreError naming the bad one (lower-case letters, digits, `_`)."""
    out = sorted(set(tags))
    bad = [t for t in out if not TAG.match(t)]
    if bad:
        raise CaseStoreError(f"tag {bad[0]!r}: use 1-32 lower-case letters, digits or _ (e.g. food_on_site)")
    if len(out) > MAX_TAGS:
        raise CaseStoreError(f"{len(out)} tags: at most {MAX_TAGS} per case")
    return out


MAX_ADDRESS = 200  # characters: a street address with a landmark, not a note (that is the description)
MAX_NOTE = 2000  # characters of a reviewer's note (add_note), as a review action's note


def check_place(address: str | None, lat: float | None, lon: float | None) -> tuple[str | None, GeoPoint | None]:
    """The address trimmed and the coordinates as a point (None: not given), or PlaceError naming the field and
    why: an empty, overlong or multi-line address, one coordinate without the other, a value outside WGS-84's range."""
    if address is not None:
        address = address.strip()
        if not address:
            raise PlaceError("address", "地址为空 — the address is empty (give the street and number or a landmark)")
        if len(address) > MAX_ADDRESS:
            raise PlaceError("address", f"地址过长（{len(address)} 字，最多 {MAX_ADDRESS}） — the address has {len(address)} "
                             f"characters, at most {MAX_ADDRESS} (write notes in the description)")
        if control_character(address) is not None:  # PostgreSQL refuses NUL; platforms take one line
            raise PlaceError("address", "地址含控制字符（换行、制表符等） — the address has a control character (a line break, "
                             "tab or NUL): give it as one line of text")
    if (lat is None) != (lon is None):
        missing = "lon" if lon is None else "lat"
        raise PlaceError(missing, f"经纬度须同时填写 — give both lat and lon, or neither ({missing} is missing)")
    if lat is None or lon is None:
        return address, None
    for name, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
        if not -limit <= value <= limit:  # NaN fails this too
            raise PlaceError(name, f"坐标超出范围（{value}，应在 -{limit} 到 {limit} 之间） — {name} {value} is not "
                             f"between -{limit} and {limit} (WGS-84 degrees)")
    return address, GeoPoint(lat, lon)


def _derived_severity(case: Case, values: dict[str, Any], cell: tuple[str, Grade | None] | None, grid: GridCells | None,
                      zone: ZoneRules | None, taxonomy: Taxonomy, revisions: list[dict[str, Any]]) -> tuple[Severity, str] | None:
    """The severity the rules would give `case` after an edit setting `values` (a new `grid_cell`, whose `cell` it is,
    or `violation_type`), and what it derives from; None where the edit does not make it: a reviewer set it (a
    `severity` revision not `derived_from` a place or type), or its grade or zone is not known here.

    A photo judged as a whole gets its cell's road grade for its type (`graded_severity`; a case in a cell `grid` does
    not have keeps its severity). A case of a zone (a camera's scene zone, a photo's map zone) keeps it when moved, as
    the zone's rules gave it, but
    retyped it gets the zone's thresholds for the new type (the grade folded in), as the rules derive it
    (`ZoneView.overrides`), when `zone` is that zone."""
    vtype = taxonomy.types.get(values.get("violation_type", case.violation_type))
    if vtype is None or any(r["field"] == "severity" and not r.get("derived_from") for r in revisions):
        return None
    if case.zone_id not in (None, WHOLE_IMAGE):
        if "violation_type" not in values or zone is None or zone.id != case.zone_id:
            return None
        return vtype.with_overrides(zone.thresholds.get(vtype.id)).severity, "violation_type"
    if "grid_cell" in values:
        return graded_severity(vtype, cell[1] if cell else None), "grid_cell"
    if "violation_type" not in values:
        return None
    if case.grid_cell is not None:  # retyped where it is: that cell's grade
        cell = grid.cell(case.grid_cell) if grid is not None else None
        if cell is None:
            return None
    return graded_severity(vtype, cell[1] if cell else None), "violation_type"


def withdrawn_but_held(target: str, state: CaseState, delivered: str) -> str:
    """What a case withdrawn here says once `target` turns out to hold it (its delivery was in flight, or an earlier
    attempt had reached them): staff must have it voided there, since no protocol of ours can take it back."""
    return (f"撤回后仍送达 {target}，请联系平台作废 — reached {target} after the case was {state.value} here "
            f"({delivered}): ask {target} to void it")


def _delivery_refusal(case: Case, entry: OutboxEntry, now: datetime) -> str | None:
    """Why `entry` (of `case`, rejected in review after it was queued) keeps the case from being reopened, or None: an
    entry withdrawn unsent, or pending, never sent and not leased, is no delivery anyone holds. Delivered, the
    platform holds the case (staff were told to have it voided there: reopening would count it unsent); parked, it
    may have reached them (someone must check there first); pending but leased or in doubt, a dispatcher is settling
    it now (look-up, then delivered or withdrawn): after that the answer is one of the others."""
    if entry.status is OutboxStatus.DELIVERED:
        return (f"案件 {case.id} 驳回后仍送达 {entry.target}（{entry.remote_ref}），不能重新打开，请联系平台作废 "
                f"case {case.id} reached {entry.target} as {entry.remote_ref} after it was rejected: it cannot be reopened "
                f"here; ask {entry.target} to void it")
    if entry.status is OutboxStatus.PARKED:
        return (f"案件 {case.id} 的派遣已挂起（{entry.target}：{entry.parked_reason}），可能已送达平台，不能重新打开 "
                f"case {case.id}: its delivery to {entry.target} was parked ({entry.parked_reason}) and may have reached "
                f"them: it cannot be reopened")
    leased = entry.lease_until is not None and as_utc(entry.lease_until, UTC) >= now
    if entry.status is OutboxStatus.PENDING and (leased or entry.in_doubt_since is not None):
        return being_withdrawn(case.id, entry.target)
    return None


def being_withdrawn(case_id: str, target: str) -> str:
    """Why a case whose delivery a dispatcher is settling cannot be reopened yet (Chinese first)."""
    return (f"案件 {case_id} 正在撤回对 {target} 的派遣，请稍后再试 case {case_id}: its delivery to {target} is being "
            "withdrawn (an attempt may have reached them): try again once the dispatcher has settled it")


@dataclass(frozen=True)
class NewCase:
    """What the evidence/intake step knows when it drafts a case."""

    violation_type: str
    source_kind: str  # "camera" or "photo_batch"
    source_id: str
    violation_id: str | None = None
    zone_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    grid_cell: str | None = None
    description: str | None = None
    first_seen_at: datetime | None = None
    opened_at: datetime | None = None
    cleared_at: datetime | None = None
    evidence_boxes: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    id: str
    violation_id: str | None
    violation_type: str
    state: CaseState
    source_kind: str
    source_id: str
    zone_id: str | None
    lat: float | None
    lon: float | None
    address: str | None
    grid_cell: str | None
    description: str | None
    first_seen_at: datetime | None
    opened_at: datetime | None
    cleared_at: datetime | None
    evidence_ref: str | None
    evidence_digest: str | None
    dispatch_target: str | None
    dispatch_ref: str | None
    review_decision: str | None
    reviewer: str | None
    reviewed_at: datetime | None
    review_reason: str | None
    review_note: str | None
    evidence_boxes: dict[str, Any] | None
    reason: str | None
    verification_ref: str | None
    details: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def evidence_removed_at(self) -> str | None:
        """When the rejected cases' evidence retention removed its bundle (`EVIDENCE_REMOVED`), or None: its
        `evidence_ref` and digest stay, for the record, but nothing is stored there any more."""
        return (self.details or {}).get(EVIDENCE_REMOVED)

    @property
    def voided_by_platform(self) -> bool:
        """`platform_voided`: its dispatch platform voided it (作废) after its review here approved it."""
        return platform_voided(self.state, self.review_decision)


EVIDENCE_REMOVED = "evidence_removed_at"
"""The key of a case's details noting when `cases.rejected_evidence_keep_days` removed its evidence bundle."""

EVIDENCE_REMOVAL_DONE = "evidence_removed_done_at"
"""The key of a case's details noting when the evidence store finished deleting the bundle marked `EVIDENCE_REMOVED`
(the mark comes first, the deletion after it): the later rounds check only the marked cases without it."""


#: The Chinese name of a rejected case's evidence removed by the retention (`evidence_removed`).
EVIDENCE_REMOVED_ZH = "证据已按保留期删除"


def evidence_removed(case: Case) -> str:
    """What a reader of `case`'s removed evidence is told (the review page, the export of reviews, a reopening,
    `cases show`)."""
    return evidence_removed_on(case.evidence_removed_at)


def evidence_removed_on(removed_at: str | None) -> str:
    """`evidence_removed`'s words from the removal's time alone, for a reader that has no `Case` (`evidence verify`
    reads the time only, `CaseStore.evidence_removal`)."""
    return (f"{EVIDENCE_REMOVED_ZH}（{(removed_at or '')[:10]}，驳回案件证据保留期 cases.rejected_evidence_keep_days） "
            f"evidence removed after the retention period on {(removed_at or '?')[:10]} "
            "(cases.rejected_evidence_keep_days); the case and its evidence digest are kept")


def platform_voided(state: CaseState, review_decision: str | None) -> bool:
    """Rejected though its review approved it: only a dispatch platform's 作废 does that (a reviewer's reject records
    `review_decision` rejected, triage withdraws only unreviewed candidates). The platform's why (not a violation,
    a duplicate, not theirs) is not known here, so neither is whether the case was a violation: retraining leaves
    such a case out and the analytics count it apart from a rejection here (平台作废), not as a false finding."""
    return state is CaseState.REJECTED and review_decision == "approved"


def handled_state(case: Case) -> CaseState:
    """Where a case goes when its platform says it was dealt with: a camera case is re-checked (`verifying`); a photo
    case has no camera to look again, so it is `closed`."""
    return CaseState.VERIFYING if case.source_kind == "camera" else CaseState.CLOSED


@dataclass(frozen=True)
class HistoryEntry:
    case_id: str
    from_state: CaseState | None
    to_state: CaseState
    at: datetime
    actor: str
    reason: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    case_id: str
    target: str
    idempotency_key: str
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    lease_owner: str | None  # the dispatcher holding the lease
    in_doubt_since: datetime | None  # an attempt may have reached the other side: look it up before sending again
    last_error: str | None
    parked_reason: str | None
    remote_ref: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class CaseQuery:
    """Filters, sort and page of `CaseStore.search` (all filters optional, combined with AND)."""

    violation_type: str | None = None
    state: CaseState | None = None
    source_id: str | None = None  # camera id or photo batch id
    grid_cell: str | None = None
    since: datetime | None = None  # opened at or after
    until: datetime | None = None  # opened before
    text: str | None = None  # in the id, address, description or violation id (case-insensitive)
    text_types: tuple[str, ...] = ()  # type ids whose name holds `text` (Taxonomy.types_named): their cases match it too
    reviewed: bool | None = None  # True: has a review decision; False: none yet
    severity: Severity | None = None  # `details.severity` (cases recorded before it: general)
    sort: str = "opened_at"
    descending: bool = True
    limit: int = 50
    offset: int = 0

    SORTABLE = ("opened_at", "created_at", "updated_at", "first_seen_at", "violation_type", "state", "id")

    def conditions(self) -> list[Any]:
        if self.sort not in self.SORTABLE:
            raise CaseStoreError(f"cannot sort by {self.sort!r} (one of: {', '.join(self.SORTABLE)})")
        c = cases.c
        where: list[Any] = []
        for column, value in ((c.violation_type, self.violation_type), (c.source_id, self.source_id),
                              (c.grid_cell, self.grid_cell)):
            if value is not None:
                where.append(column == value)
        if self.state is not None:
            where.append(c.state == CaseState(self.state).value)
        if self.since is not None:
            where.append(c.opened_at >= self.since)
        if self.until is not None:
            where.append(c.opened_at < self.until)
        if self.reviewed is not None:
            where.append(c.review_decision.is_not(None) if self.reviewed else c.review_decision.is_(None))
        if self.severity is not None:
            where.append(recorded_severity() == Severity(self.severity).value)
        if self.text:
            where.append(sa.or_(*holding(self.text, (c.id, c.address, c.description, c.violation_id)),
                                *([c.violation_type.in_(self.text_types)] if self.text_types else [])))
        return where


def _without_boxes() -> sa.ColumnElement[bool]:
    """A case with stored evidence (`evidence_ref`) and no boxes: `evidence_boxes` SQL NULL (never written), JSON null
    (written as None) or without an `image` (what every reader of the boxes starts from). Portable: SQLAlchemy's JSON
    path is json_extract on SQLite and ->> on PostgreSQL, and both give NULL for a path that is not there."""
    image = cases.c.evidence_boxes["image"].as_string()
    return sa.and_(cases.c.evidence_ref.is_not(None), cases.c.evidence_ref != "",
                   sa.or_(cases.c.evidence_boxes.is_(None), image.is_(None), image == ""))


def _row_to(cls, row) -> Any:
    values = {f.name: row._mapping[f.name] for f in fields(cls)}
    for key in ("state", "from_state", "to_state"):
        if values.get(key) is not None:
            values[key] = CaseState(values[key])
    if cls is OutboxEntry:
        values["status"] = OutboxStatus(values["status"])
    return cls(**values)


def new_case_id(now: datetime | None = None, zone: tzinfo = UTC) -> str:
    """Readable, sortable by day, unique without coordination: `SW20250314-3f9c2a7b1d0e`. The day is `now`'s in
    `zone` (the city's, `analytics.timezone`, in which the reports count days): named by the UTC date, a case opened
    at 00:30 in Shanghai bore the day before's."""
    now = now or datetime.now(UTC)
    return f"SW{now.astimezone(zone):%Y%m%d}-{uuid.uuid4().hex[:12]}"


def idempotency_key(case_id: str, target: str) -> str:
    return f"streetwatch:{target}:{case_id}"


@dataclass(frozen=True)
class PoolLimits:
    """The connection pool of a store opened from the settings (`cases.pool_size`, `cases.max_overflow`,
    `cases.pool_timeout`): SQLAlchemy's own (5 kept, 10 more, 30 s) made the 16th of `serve`'s 40 worker threads wait
    for a connection and fail after 30 s, and each connection past the 5th was opened and closed per request."""

    pool_size: int = 10  # kept open once opened
    max_overflow: int = 40  # opened beyond them when all are in use, closed when returned
    pool_timeout: float = 30.0  # seconds a thread waits for a connection before sa.exc.TimeoutError


def make_engine(url: str, pool: PoolLimits | None = None) -> Engine:
    """An engine with the SQLite settings the store relies on (WAL, busy wait, immediate writes), whose
    connect failures raise CaseStoreUnreachable; `pool`: its connection pool (None: `PoolLimits()`), for a database
    server or a SQLite file (an in-memory SQLite database has one connection per thread)."""
    engine = _make_engine(url, pool or PoolLimits())
    sa.event.listen(engine, "handle_error", _store_error)
    return engine


def _store_error(ctx: sa.engine.ExceptionContext) -> RuntimeError | None:
    """The store's own error for a driver's error that says what to do about it (a full disk, a store that cannot be
    opened); None leaves SQLAlchemy's."""
    return _full_store(ctx) or _unreachable_store(ctx)


def _full_store(ctx: sa.engine.ExceptionContext) -> CaseStoreFull | None:
    """A write refused for want of disk space as CaseStoreFull naming the engine's URL without its password."""
    error = ctx.original_exception
    if ctx.engine is None or not (getattr(error, "sqlite_errorname", None) == "SQLITE_FULL"
                                  or getattr(error, "sqlstate", None) == "53100"):  # PostgreSQL's disk_full
        return None
    reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return CaseStoreFull(ctx.engine.url.render_as_string(hide_password=True), reason)


def _unreachable_store(ctx: sa.engine.ExceptionContext) -> CaseStoreUnreachable | None:
    """A failure to connect (no connection yet; not the pool's ping of an old one, which it replaces by itself; a file
    that is not a SQLite database: its DatabaseError), or a connection lost while in use (the database server restarted
    or stopped under a query: the driver's disconnect, which `serve` answered 500 with a traceback and a job showed in
    the driver's words), as CaseStoreUnreachable naming the engine's URL without its password; other errors unchanged."""
    if (ctx.is_pre_ping or ctx.engine is None or (ctx.connection is not None and not ctx.is_disconnect)
            or not isinstance(ctx.sqlalchemy_exception, (sa.exc.DatabaseError, sa.exc.InterfaceError))):
        return None
    reason = "; ".join(line.strip() for line in str(ctx.original_exception).splitlines() if line.strip())
    if ctx.connection is not None:
        reason = f"connection lost while in use: {reason}"
    return CaseStoreUnreachable(ctx.engine.url.render_as_string(hide_password=True), reason)


def sqlite_file(url: str) -> str | None:
    """The database file a SQLite URL names (`sqlite:///streetwatch-data/cases.db`: `streetwatch-data/cases.db`);
    None for another database, an in-memory one or a URL that does not parse (`create_engine` says why)."""
    if not url.startswith("sqlite"):
        return None
    try:
        database = sa.engine.make_url(url).database
    except sa.exc.ArgumentError:
        return None
    return database if database and database != ":memory:" else None


OPENED_FILE = "streetwatch_sqlite_file"
"""Key of a pooled SQLite connection's `info`: the (device, inode) of the database file when it was opened."""


def _file_id(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`; None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _check_same_file(conn: Connection, url: str, database: str) -> None:
    """`CaseStoreUnreachable` naming `database` when the file an open connection holds is no longer the one at that
    path (the folder or the file deleted, or replaced, while the store was open): SQLite would go on reading and
    writing the deleted file, every write "succeeding" and lost with it. The connection is dropped; the next one opens
    whatever is at the path then (or fails to, naming it)."""
    opened = conn.connection.info.get(OPENED_FILE)
    if opened is None or _file_id(database) == opened:
        return
    conn.invalidate()
    raise _lost_file(url, database, "was deleted or replaced while the store had it open; nothing more is written to "
                                    "the deleted one")


def _check_still_there(url: str, database: str) -> None:
    """`CaseStoreUnreachable` naming `database` when a new connection would open it after it was deleted (the file
    alone, its folder kept): SQLite would make an empty database in its place, and the next write fail with 'no such
    table: cases', or a later start take the empty file for the store."""
    if _file_id(database) is None:
        raise _lost_file(url, database, "was deleted after the store opened it; no empty one is made in its place")


EMPTY_FILE = "the database file is empty (0 bytes)"
"""The reason a SQLite store whose file is empty is refused (`_check_not_empty`); `_what_to_check` reads it."""


def _check_not_empty(url: str, database: str) -> None:
    """`CaseStoreUnreachable` naming `database` when its file is there and stays empty (a copy or restore that failed, a
    disk that filled while it was written): SQLite takes an empty file for a new database, and the store's migration
    quietly built an empty store in it, every case of the lost one then missing without a word. A store this code
    makes is never empty once its first connection has set WAL mode (that writes the file's header); until then, for
    an instant, it is, so an empty file is looked at again for `EMPTY_GRACE_S` before it is refused (another process
    or thread of the service opening a brand-new store at that instant was refused)."""
    import tenacity

    def empty() -> bool:
        try:
            found = os.stat(database)
        except OSError:  # not there: a new store, or `_check_still_there`'s lost one
            return False
        return stat.S_ISREG(found.st_mode) and found.st_size == 0  # (a folder: SQLite says why)

    waited = tenacity.Retrying(retry=tenacity.retry_if_result(bool), wait=tenacity.wait_fixed(0.05),
                               stop=tenacity.stop_after_delay(EMPTY_GRACE_S), retry_error_callback=lambda rs: True)
    if waited(empty):
        raise CaseStoreUnreachable(url, f"{database}: {EMPTY_FILE}, not a case store (a copy or restore that failed?)")


EMPTY_GRACE_S = 1.0
"""How long an empty SQLite file may stay empty before `_check_not_empty` refuses it: a store being made by another
connection writes its header within milliseconds; a failed copy stays empty."""


def _lost_file(url: str, database: str, what: str) -> CaseStoreUnreachable:
    """The refusal of a store whose SQLite file is no longer the one it opened (`what` happened to it)."""
    return CaseStoreUnreachable(url, f"{database}: the database file {what} (restore the file, or restart with the "
                                     "store where it is now)")


def _make_engine(url: str, pool: PoolLimits) -> Engine:
    """The engine of `make_engine`. Its errors never quote a statement's parameters (`hide_parameters`): they are
    what people typed (a note, a shop's name and contact, a phone number), and a failed write's error goes to the log
    whole, in a traceback, where it was kept for as long as the log is."""
    limits = {"pool_size": pool.pool_size, "max_overflow": pool.max_overflow, "pool_timeout": pool.pool_timeout}
    if url.startswith("sqlite"):
        if (database := sqlite_file(url)) is not None:
            database = os.path.abspath(database)  # as the connections opened it, whatever the working folder later
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, hide_parameters=True, **(limits if database is not None else {}))
        opened = False  # once a connection has opened (or made) the file, a missing one is a lost store, not a new one

        @sa.event.listens_for(engine, "do_connect")
        def _sqlite_open(_dialect, _record, _cargs, _cparams) -> None:
            if database is not None:
                if opened:
                    _check_still_there(url, database)
                _check_not_empty(url, database)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, record) -> None:
            nonlocal opened
            opened = True
            dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" below issue BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            if database is not None:
                record.info[OPENED_FILE] = _file_id(database)

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            if database is not None:
                _check_same_file(conn, url, database)
            # Writers take the write lock up front (a deferred transaction that later writes can
            # fail with "database is locked" instead of waiting); readers stay deferred (WAL lets
            # them run beside a writer).
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writer") else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True, **limits)


class CaseStore:
    """All reads and writes of cases, history and outbox. Safe to share between threads."""

    def __init__(self, url: str = DEFAULT_URL, *, engine: Engine | None = None, migrate_schema: bool = True,
                 pool: PoolLimits | None = None):
        self.url = url
        self.engine = engine or make_engine(url, pool)
        # Same pool, marked so SQLite transactions take the write lock at BEGIN (see make_engine).
        self._writer = self.engine.execution_options(writer=True)
        if migrate_schema:  # readers that must not change a database (evidence verify) skip it
            with self._writer.begin() as conn:
                migrate(conn)

    @staticmethod
    def exists(url: str) -> bool:
        """Whether there is a store to read at `url` (a SQLite file must exist; other URLs are servers)."""
        if not url.startswith("sqlite"):
            return True
        database = sqlite_file(url)
        return database is not None and Path(database).is_file()

    def sealed_digest(self, case_id: str) -> str | None:
        """The digest recorded when the case's bundle was sealed (CaseNotFound if there is no such case).

        Reads only columns every schema version has, so it works on a store not yet migrated."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(cases.c.evidence_digest).where(cases.c.id == case_id)).first()
        if row is None:
            raise CaseNotFound(case_id)
        return row[0]

    def evidence_removal(self, case_id: str) -> str | None:
        """When the rejected cases' evidence retention removed the case's bundle (`Case.evidence_removed_at`), or None
        (so too for no such case). Reads only the details column every schema version has, as `sealed_digest`."""
        with self.engine.connect() as conn:
            details = conn.execute(sa.select(cases.c.details).where(cases.c.id == case_id)).scalar()
        return (details or {}).get(EVIDENCE_REMOVED)

    def close(self) -> None:
        self.engine.dispose()

    # ---- cases ---------------------------------------------------------------------------

    def create_case(self, new: NewCase, *, actor: str = "system", now: datetime | None = None,
                    zone: tzinfo = UTC) -> Case:
        """Insert a `candidate` case; a second call for the same violation returns the first case. `zone`: the one
        whose date names the case (`new_case_id`)."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            if new.violation_id is not None:
                existing = conn.execute(sa.select(cases).where(cases.c.violation_id == new.violation_id)).first()
                if existing is not None:
                    return _row_to(Case, existing)
            case_id = new_case_id(now, zone)
            values = {f.name: getattr(new, f.name) for f in fields(NewCase)}
            conn.execute(
                cases.insert().values(
                    id=case_id, state=CaseState.CANDIDATE.value, created_at=now, updated_at=now, **values
                )
            )
            self._history(conn, case_id, None, CaseState.CANDIDATE, now, actor, "case drafted", {})
            return self._get(conn, case_id)

    def get(self, case_id: str) -> Case:
        with self.engine.connect() as conn:
            return self._get(conn, case_id)

    def find(self, *, violation_id: str | None = None, dispatch_ref: str | None = None,
             target: str | None = None) -> Case | None:
        """Look a case up by the rules' violation id or by the dispatch system's reference."""
        query = sa.select(cases)
        if violation_id is not None:
            query = query.where(cases.c.violation_id == violation_id)
        if dispatch_ref is not None:
            query = query.where(cases.c.dispatch_ref == dispatch_ref)
        if target is not None:
            query = query.where(cases.c.dispatch_target == target)
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return None if row is None else _row_to(Case, row)

    def list(self, *, state: CaseState | None = None, source_id: str | None = None, target: str | None = None,
             limit: int | None = None) -> list[Case]:
        query = sa.select(cases).order_by(cases.c.created_at, cases.c.id)
        if state is not None:
            query = query.where(cases.c.state == CaseState(state).value)
        if source_id is not None:
            query = query.where(cases.c.source_id == source_id)
        if target is not None:
            query = query.where(cases.c.dispatch_target == target)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_row_to(Case, r) for r in conn.execute(query)]

    def count_without_boxes(self) -> int:
        """How many cases `without_boxes` gives (the total a fill's progress counts to)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(cases).where(_without_boxes())).scalar_one()

    def without_boxes(self, *, page: int = 500) -> Iterator[Case]:
        """The cases with stored evidence and no recorded boxes (what `cases fill-boxes` fills), in `list`'s order,
        `page` at a time, each page read on a connection of its own: a city's years of cases are never all in memory
        and no read is held open across the fill's writes. Paged by the last case seen, not by an offset, so a case
        filled meanwhile (it leaves the query) shifts no page."""
        after: list[sa.ColumnElement[bool]] = []
        while True:
            query = sa.select(cases).where(_without_boxes(), *after).order_by(cases.c.created_at, cases.c.id).limit(page)
            with self.engine.connect() as conn:
                found = [_row_to(Case, r) for r in conn.execute(query)]
            yield from found
            if len(found) < page:
                return
            last = found[-1]
            after = [sa.or_(cases.c.created_at > last.created_at,
                            sa.and_(cases.c.created_at == last.created_at, cases.c.id > last.id))]

    def claim_batch(self, name: str, folder: str, *, now: datetime | None = None) -> str:
        """The batch id for a new run in `folder`: `name`, or `name-2`, `-3`... the first that no case holds as its
        source and no other run has claimed, claimed in the same transaction (`batches`). Checked and then written
        to the folder, two folders of one name started together both chose `name` before either wrote a case. On
        PostgreSQL two claims may both find an id free: the second's insert fails on the key and it looks again."""
        now = now or datetime.now(UTC)
        for _ in range(10):
            try:
                with self._writer.begin() as conn:
                    chosen, n = name, 1
                    while (conn.execute(sa.select(batches.c.id).where(batches.c.id == chosen)).first() is not None
                           or conn.execute(sa.select(cases.c.id).where(cases.c.source_id == chosen).limit(1)).first()
                           is not None):
                        n += 1
                        chosen = f"{name}-{n}"
                    conn.execute(batches.insert().values(id=chosen, folder=folder, claimed_at=now))
                return chosen
            except sa.exc.IntegrityError:
                continue
        raise CaseStoreError(f"batch {name}: could not claim an id for {folder} (others claimed each one tried)")

    def search(self, query: CaseQuery) -> tuple[list[Case], int]:
        """One page of cases matching `query`, and how many match in all (for paging)."""
        where = query.conditions()
        order = getattr(cases.c, query.sort)
        order = order.desc() if query.descending else order.asc()
        page = sa.select(cases).where(*where).order_by(order, cases.c.id).limit(query.limit).offset(query.offset)
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(cases).where(*where)).scalar_one()
            return [_row_to(Case, r) for r in conn.execute(page)], total

    def revise(self, case_id: str, *, actor: str, violation_type: str | None = None, description: str | None = None,
               tags: list[str] | None = None, severity: Severity | None = None, address: str | None = None,
               lat: float | None = None, lon: float | None = None, grid: GridCells | None = None,
               clear_coordinates: bool = False, taxonomy: Taxonomy | None = None, zone: ZoneRules | None = None,
               editable: frozenset[CaseState] = EDITABLE,
               now: datetime | None = None, unchanged_since: datetime | None = None, audit: Audit[Case] | None = None) -> Case:
        """A reviewer corrects the type, description or place before the case leaves, or sets its tags or severity.

        The place (`address`, and `lat`/`lon` together, checked by `check_place`) is what a platform sends a
        handler to: a photo without GPS has none until a reviewer adds it. New coordinates move the case to
        the cell of `grid` they lie in (None outside every cell), as intake files a photo by its GPS; without
        a grid the cell is left as it was (an address alone names no cell). `clear_coordinates` removes coordinates
        set by mistake (with a grid, the cell too: no point lies in one), as new ones would replace them. A photo's case judged as a whole
        (zone `image`) moved to another cell gets the severity intake would have given it there (`graded_severity`
        of the cell's road grade, with `taxonomy`), recorded as a revision of the same edit, unless a reviewer
        set the severity (a `severity` revision of theirs, or `severity` given now): a camera's zone keeps its own.
        That revision says `derived_from: grid_cell`, so a later move recomputes it again. A new type likewise gives
        such a case the severity intake gives that type in its cell (with `grid` to read the cell's grade; without
        it, or in a cell the grid no longer has, a case in a cell keeps its severity), `derived_from: violation_type`,
        and a case of a zone (a camera's, a photo's map zone) the severity its zone's rules give that type (`zone`: the
        case's zone as what opened it loads it; None, or another zone, keeps its severity) (`_derived_severity`).

        Each change is appended to `details["revisions"]` (who, when, field, from, to) and the type
        the detector proposed is kept once as `details["detected_type"]`, so retraining can tell a
        relabelled case (same boxes, other type) from one that was right first time. Tags
        (`details["tags"]`, what scoring sheets count, e.g. `food_on_site`) are the city's own
        bookkeeping, never sent: they may change in any state. So may the severity
        (`details["severity"]`: general, major, serious; set at opening from the type or its road grade),
        which reports count by. `unchanged_since`: see `check_unchanged`; `audit`: see `audited` (not called when
        nothing changed).
        """
        now = now or datetime.now(UTC)
        tags = check_tags(tags) if tags is not None else None
        address, point = check_place(address, lat, lon)
        if clear_coordinates and point is not None:
            raise PlaceError("lat", "经纬度不能既清除又填写 — give coordinates or clear them, not both")
        with self._writer.begin() as conn:
            case = self._check_unchanged(conn, self._lock(conn, case_id), unchanged_since)
            details = dict(case.details or {})
            revisions = list(details.get("revisions", []))
            values: dict[str, Any] = {}
            given = {"violation_type": violation_type, "description": description, "address": address}
            changes = {column: new for column, new in given.items() if new is not None}
            cell: tuple[str, Grade | None] | None = None
            if point is not None and (point.lat, point.lon) != (case.lat, case.lon):
                changes.update(lat=point.lat, lon=point.lon)
                if grid is not None:
                    cell = grid.cell_at(point)
                    changes["grid_cell"] = cell[0] if cell else None
            if clear_coordinates:
                changes.update(lat=None, lon=None, **({"grid_cell": None} if grid is not None else {}))
            for column, new in changes.items():
                if new != getattr(case, column):
                    revisions.append({"field": column, "from": getattr(case, column), "to": new, "by": actor, "at": now.isoformat()})
                    values[column] = new
            if values and case.state not in editable:
                raise CaseStoreError(f"案件 {case_id} 现为{STATE_NAMES_ZH[case.state]}，只有"
                                     f"{'、'.join(STATE_NAMES_ZH[s] for s in sorted(editable))}的案件可以修改类型、描述和地点 "
                                     f"case {case_id} is {case.state}: only {', '.join(sorted(editable))} cases can be edited")
            if tags is not None and tags != sorted(details.get("tags") or []):
                revisions.append({"field": "tags", "from": details.get("tags") or [], "to": tags, "by": actor, "at": now.isoformat()})
                details["tags"] = tags
            old_severity, derived = severity_of(details), {}
            if severity is None and taxonomy is not None and (
                    found := _derived_severity(case, values, cell, grid, zone, taxonomy, revisions)) is not None:
                severity, source = found
                derived = {"derived_from": source}  # the place's or type's, not a reviewer's choice: recomputed again
            if severity is not None and severity != old_severity:
                revisions.append({"field": "severity", "from": old_severity.value, "to": severity.value, "by": actor, "at": now.isoformat(),
                                  **derived})
                details["severity"] = severity.value
            if not values and len(revisions) == len(details.get("revisions", [])):
                return case
            if "violation_type" in values:
                details.setdefault("detected_type", case.violation_type)
            details["revisions"] = revisions
            conn.execute(cases.update().where(cases.c.id == case_id).values(updated_at=now, details=details, **values))
            return audited(conn, self._get(conn, case_id), audit)

    def add_note(self, case_id: str, *, actor: str, text: str, now: datetime | None = None,
                 audit: Audit[Case] | None = None) -> Case:
        """Append a reviewer's note (`details["notes"]`: by, at, text) to a case in any state: what a reviewer who finds a
        case false once a platform holds it (已上报, 已立案: only the platform voids it) has to record it here.

        Nothing else changes: not the state, not the signed evidence, not `updated_at`, which the review actions check
        a page's copy against (`check_unchanged`): a colleague's note changes nothing they act on, so it must not refuse
        their confirm or edit as 'changed meanwhile'. `text` is kept as given (the route checks it, 1-`MAX_NOTE`
        characters, not blank); `audit`: see `audited`."""
        if not text.strip() or len(text) > MAX_NOTE:
            raise CaseStoreError(f"case {case_id}: a note is 1-{MAX_NOTE} characters, not blank")
        at = (now or datetime.now(UTC)).isoformat()
        with self._writer.begin() as conn:
            details = dict(self._lock(conn, case_id).details or {})
            details["notes"] = [*details.get("notes", []), {"by": actor, "at": at, "text": text}]
            conn.execute(cases.update().where(cases.c.id == case_id).values(details=details))
            return audited(conn, self._get(conn, case_id), audit)

    def history(self, case_id: str, *, conn: Connection | None = None) -> list[HistoryEntry]:
        """The case's state history, oldest first; `conn`: read in that transaction (an `Audit` callback's)."""
        query = sa.select(case_history).where(case_history.c.case_id == case_id).order_by(case_history.c.id)
        if conn is not None:
            return [_row_to(HistoryEntry, r) for r in conn.execute(query)]
        with self.engine.connect() as conn:
            return [_row_to(HistoryEntry, r) for r in conn.execute(query)]

    def update(self, case_id: str, *, unchanged_since: datetime | None = None, **values: Any) -> Case:
        """Change facts of a case that are not its state (evidence reference, the wait reason...);
        `unchanged_since`: see `check_unchanged`."""
        if "state" in values:
            raise CaseStoreError(f"case {case_id}: change the state with transition(), not update()")
        unknown = set(values) - (set(cases.c.keys()) - _FIXED)
        if unknown:
            raise CaseStoreError(f"case {case_id}: cannot update {', '.join(sorted(unknown))}")
        with self._writer.begin() as conn:
            self._check_unchanged(conn, self._lock(conn, case_id), unchanged_since)
            conn.execute(cases.update().where(cases.c.id == case_id).values(updated_at=datetime.now(UTC), **values))
            return self._get(conn, case_id)

    def transition(self, case_id: str, to: CaseState, *, actor: str, reason: str | None = None,
                   details: dict[str, Any] | None = None, now: datetime | None = None, only_from: CaseState | None = None,
                   **values: Any) -> Case:
        """Move a case to `to` if the table allows it, record history, and set `values` with it. `only_from`: only
        while the case is in that state, checked in the same transaction (CaseStoreError otherwise): a machine
        withdrawing a candidate it looked up a moment ago must not reject what a reviewer queued since."""
        with self._writer.begin() as conn:
            if only_from is not None and (current := self._lock(conn, case_id).state) is not only_from:
                raise CaseStoreError(f"case {case_id} is {current.value} now, not {only_from.value}: left as it is")
            return self._transition(conn, case_id, CaseState(to), actor, reason, details or {}, now, values)

    def review(self, case_id: str, *, approve: bool, reviewer: str, target: str | None = None,
               reason_code: str | None = None, note: str | None = None, now: datetime | None = None,
               unchanged_since: datetime | None = None, audit: Audit[Case] | None = None,
               voids: Callable[[str | None], bool] | None = None) -> Case:
        """Record a reviewer's decision: approval queues the case for `target`, refusal rejects it, but not once a
        platform holds it (`ON_PLATFORM`: CaseOnPlatform, nothing done; the platform's voiding moves it). `voids`:
        whether the platform a case went to (its dispatch target) can void it, which words that refusal's advice (void
        it there, or close it); None: every platform can.

        `reason_code` is the machine-readable why (`not_a_violation`, `wrong_type`, ...): the
        retraining pipeline turns rejected cases into hard negatives by it. `unchanged_since`: see
        `check_unchanged` (a queued case may still be rejected, so a page that never saw another
        reviewer confirm it would otherwise reject it over their decision). `audit`: see `audited`.
        """
        now = now or datetime.now(UTC)
        review = {"review_decision": "approved" if approve else "rejected", "reviewer": reviewer,
                  "reviewed_at": now, "review_reason": reason_code, "review_note": note}
        if not approve:  # the case's reason is the reviewer's (not a delivery's retry it waited on before)
            why = note or reason_code or "rejected in review"
            with self._writer.begin() as conn:
                if (case := self._check_unchanged(conn, self._lock(conn, case_id), unchanged_since)).state in ON_PLATFORM:
                    raise CaseOnPlatform(case, voids=voids is None or voids(case.dispatch_target))
                return audited(conn, self._transition(conn, case_id, CaseState.REJECTED, reviewer, why, {}, now,
                                                            {**review, "reason": why}), audit)
        if target is None:
            raise CaseStoreError(f"case {case_id}: approving needs the dispatch target to queue it for")
        return self.queue(case_id, target, actor=reviewer, now=now, unchanged_since=unchanged_since, audit=audit, **review)

    def approve(self, case_id: str, *, reviewer: str, note: str | None = None, now: datetime | None = None,
                unchanged_since: datetime | None = None, audit: Audit[Case] | None = None) -> Case:
        """Record a reviewer's approval of a candidate without queuing it (no dispatch). The check that it is still an
        unapproved candidate and the write are one transaction, and the write is conditional on both, so a reviewer
        confirming at the moment another rejects or queues it (or approved it first) cannot record an approval on a
        case that is no longer one to approve, nor overwrite the earlier approval: NotCandidate / CaseStoreError,
        nothing done. `unchanged_since`: see `check_unchanged`; `audit`: see `audited`."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            case = self._check_unchanged(conn, self._lock(conn, case_id), unchanged_since)
            self._approvable(case)
            done = conn.execute(cases.update().where(cases.c.id == case_id, cases.c.state == CaseState.CANDIDATE.value,
                                                     cases.c.review_decision.is_(None))
                                .values(review_decision="approved", reviewer=reviewer, reviewed_at=now, review_note=note,
                                        updated_at=now))
            if done.rowcount != 1:  # only possible without BEGIN IMMEDIATE / row locks: say what it is now
                self._approvable(self._get(conn, case_id))
                raise CaseStoreError(f"case {case_id}: changed concurrently while approving it")
            return audited(conn, self._get(conn, case_id), audit)

    @staticmethod
    def _approvable(case: Case) -> None:
        """Nothing when `case` may be approved without dispatch: a candidate nobody approved yet."""
        if case.state is not CaseState.CANDIDATE:
            raise NotCandidate(f"案件 {case.id} 现为{STATE_NAMES_ZH[case.state]}，只有{STATE_NAMES_ZH[CaseState.CANDIDATE]}的案件可以确认 "
                               f"case {case.id} is {case.state}: only candidate cases can be confirmed")
        if case.review_decision is not None:
            raise CaseStoreError(f"案件 {case.id} 已由 {case.reviewer} 确认（未派遣），本次确认未执行；要派遣请选择派遣 "
                                 f"case {case.id} was already approved by {case.reviewer}: nothing done (confirm with "
                                 f"dispatch to queue it)")

    def queue(self, case_id: str, target: str, *, actor: str = "system", now: datetime | None = None,
              unchanged_since: datetime | None = None, audit: Audit[Case] | None = None, **values: Any) -> Case:
        """candidate -> queued and the outbox entry for `target`, in one transaction (`unchanged_since`: see
        `check_unchanged`; `audit`: see `audited`). A case reopened after its entry for `target` was withdrawn unsent gets that entry back
        (pending, same idempotency key, its doubt kept so a look-up comes first): one entry per case and target,
        so it is delivered once."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            case = self._check_unchanged(conn, self._lock(conn, case_id), unchanged_since)
            if case.evidence_ref is None:
                raise CaseStoreError(f"case {case_id}: cannot queue before its evidence is stored"
                                     + (f" (waiting: {case.reason})" if case.reason else ""))
            case = self._transition(conn, case_id, CaseState.QUEUED, actor, f"queued for {target}", {"target": target},
                                    now, {"dispatch_target": target, "reason": None, **values})
            revived = conn.execute(outbox.update().where(  # queued for it before, withdrawn unsent, then reopened
                outbox.c.case_id == case_id, outbox.c.target == target, outbox.c.status == OutboxStatus.WITHDRAWN,
            ).values(status=OutboxStatus.PENDING, next_attempt_at=now, lease_until=None, lease_owner=None,
                     last_error=None, parked_reason=None))
            if revived.rowcount == 0:
                conn.execute(outbox.insert().values(
                    case_id=case_id, target=target, idempotency_key=idempotency_key(case_id, target),
                    status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now, created_at=now))
            return audited(conn, case, audit)

    def reopen(self, case_id: str, *, actor: str, note: str, within: timedelta, now: datetime | None = None,
               unchanged_since: datetime | None = None, audit: Audit[Case] | None = None) -> Case:
        """Undo a rejection made in review (a mis-click): the case is a candidate again, unreviewed (back in the queue),
        its history saying who reopened it, why (`note`) and whose rejection it undid. Only what `reopen_refusal`
        allows, checked in the same transaction (NotReopenable naming why). `unchanged_since`: see `check_unchanged`;
        `audit`: see `audited` (`history(conn=)` on its connection ends with the reopening, naming what it undid)."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            case = self._check_unchanged(conn, self._lock(conn, case_id), unchanged_since)
            refusal = self._reopen_refusal(conn, case, within, now)
            if refusal is not None:
                raise NotReopenable(refusal)
            undone = {"rejected_by": case.reviewer, "rejected_at": case.reviewed_at and case.reviewed_at.isoformat(),
                      "review_reason": case.review_reason, "review_note": case.review_note}
            withdrawn = self._withdraw_unsent(conn, case_id, now)
            cleared = dict.fromkeys(("review_decision", "reviewer", "reviewed_at", "review_reason", "review_note", "reason",
                                     "dispatch_target"))
            case = self._transition(conn, case_id, CaseState.CANDIDATE, actor, note,
                                    {"reopened": undone, **({"withdrawn_outbox": withdrawn} if withdrawn else {})}, now,
                                    cleared, reopening=True)
            return audited(conn, case, audit)

    @staticmethod
    def _withdraw_unsent(conn: Connection, case_id: str, now: datetime) -> list[int]:
        """Close as withdrawn the pending entries of a case being reopened, which `_reopen_refusal` let through only as
        never sent and not leased (no dispatcher has got to them since the rejection): a reopened candidate has no
        live delivery, and confirming it again revives its entry (`queue`). The ids closed.

        On PostgreSQL a dispatcher may lease an entry between that check and this update (SQLite's writer lock keeps
        it out): the update leaves a leased entry alone, and then the reopening is refused, as the check would have
        refused it a moment later, rather than leave a live delivery under a candidate."""
        unsent = [outbox.c.case_id == case_id, outbox.c.status == OutboxStatus.PENDING, outbox.c.in_doubt_since.is_(None),
                  sa.or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now)]
        ids = list(conn.execute(outbox.update().where(*unsent)
                                .values(status=OutboxStatus.WITHDRAWN, lease_until=None, lease_owner=None)
                                .returning(outbox.c.id)).scalars())
        held = conn.execute(sa.select(outbox.c.target).where(outbox.c.case_id == case_id,
                                                             outbox.c.status == OutboxStatus.PENDING)).scalars().first()
        if held is not None:
            raise NotReopenable(being_withdrawn(case_id, held))
        return ids

    def reopen_refusal(self, case_id: str, *, within: timedelta, now: datetime | None = None) -> str | None:
        """Why `reopen` would refuse the case now (Chinese first), or None when a reviewer may reopen it."""
        with self.engine.connect() as conn:
            return self._reopen_refusal(conn, self._get(conn, case_id), within, now or datetime.now(UTC))

    def _reopen_refusal(self, conn: Connection, case: Case, within: timedelta, now: datetime) -> str | None:
        """Only a reviewer's rejection of a candidate here is undone: `review_decision` rejected and the move into
        `rejected` theirs. A platform's voiding (the case was queued and sent; they hold it voided) and a triage
        withdrawal (the photo batch, run again, no longer makes the case; a rerun would not know it came back) leave
        `review_decision` as it was. A case queued before its rejection is reopened only while no delivery of it can
        have reached a platform (`_delivery_refusal`): they would hold a case we no longer count as sent."""
        zh = STATE_NAMES_ZH[case.state]
        if case.state is not CaseState.REJECTED:
            return (f"案件 {case.id} 现为{zh}，只有{STATE_NAMES_ZH[CaseState.REJECTED]}的案件可以重新打开 "
                    f"case {case.id} is {case.state}: only rejected cases can be reopened")
        row = conn.execute(sa.select(case_history).where(case_history.c.case_id == case.id,
                                                         case_history.c.to_state == CaseState.REJECTED.value,
                                                         case_history.c.from_state != CaseState.REJECTED.value)
                           .order_by(case_history.c.id.desc()).limit(1)).first()
        actor, why = (row.actor, row.reason or "") if row else ("?", "")
        entries = [_row_to(OutboxEntry, r) for r in conn.execute(sa.select(outbox).where(outbox.c.case_id == case.id))]
        if case.review_decision != "rejected" or actor != case.reviewer:
            if entries or case.dispatch_ref:
                return (f"案件 {case.id} 由派遣平台作废（{actor}：{why}），不能在此重新打开 "
                        f"case {case.id} was voided by the dispatch platform ({actor}: {why}): only a rejection in review here can be undone")
            return (f"案件 {case.id} 由 {actor} 撤回（{why}），不是审核驳回，不能重新打开 "
                    f"case {case.id} was withdrawn by {actor} ({why}), not rejected in review: only a rejection in review here can be undone")
        refusal = next((r for e in entries if (r := _delivery_refusal(case, e, now)) is not None), None)
        if refusal is not None:
            return refusal
        if case.evidence_removed_at is not None:  # a candidate without its pictures could be neither judged nor sent
            return (f"案件 {case.id} 的证据已按保留期删除，无法重新审核，不能重新打开 case {case.id} cannot be reopened: "
                    f"{evidence_removed(case)}; without it the case can be neither judged nor dispatched")
        rejected_at = as_utc(case.reviewed_at, UTC) if case.reviewed_at else None
        if rejected_at is None or now - rejected_at > within:
            days = within / timedelta(days=1)
            at = f"{rejected_at:%Y-%m-%d %H:%M} UTC" if rejected_at else "?"
            return (f"案件 {case.id} 于 {at} 驳回，已超过 {days:g} 天，不能重新打开 "
                    f"case {case.id} was rejected at {at}, more than {days:g} days ago: too late to reopen")
        return None

    def rejected_before(self, cutoff: datetime) -> list[tuple[Case, datetime]]:
        """The rejected cases whose stored evidence is still there (`evidence_removed_at` unset), each with the time of
        its rejection (its last move into rejected: a review's, a withdrawal's, a platform's voiding) when that is before
        `cutoff`, the oldest first. A bundle still in the spool (no `evidence_ref` yet) waits for a later round."""
        rejected = (sa.select(case_history.c.case_id, sa.func.max(case_history.c.at).label("at"))
                    .where(case_history.c.to_state == CaseState.REJECTED.value).group_by(case_history.c.case_id).subquery())
        query = (sa.select(cases, rejected.c.at.label("rejected_at")).join(rejected, rejected.c.case_id == cases.c.id)
                 .where(cases.c.state == CaseState.REJECTED.value, cases.c.evidence_ref.is_not(None), rejected.c.at < cutoff)
                 .order_by(rejected.c.at, cases.c.id))
        with self.engine.connect() as conn:
            found = [(_row_to(Case, r), as_utc(r.rejected_at, UTC)) for r in conn.execute(query)]
        return [(case, at) for case, at in found if case.evidence_removed_at is None]

    def mark_evidence_removed(self, case_id: str, *, cutoff: datetime, record: dict[str, Any],
                              now: datetime | None = None) -> Case | None:
        """Mark a rejected case's evidence removed (`EVIDENCE_REMOVED`) and write the audit record of the removal (actor
        `retention`, role `system`, `record` its details), the case's row held only for that: the evidence store deletes
        the bundle after the commit, since on SQLite every writer (reviewers, jobs) would wait while a folder or an S3
        bundle's objects went one by one. None, nothing written, when the case is no longer rejected before `cutoff`
        (reopened, rejected again since) or another round marked it. A deletion that fails after the mark is tried
        again by the next rounds (`evidence_marked_removed`) until one finishes it (`finish_evidence_removal`). The
        case, its `evidence_ref` and digest stay."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            case = self._lock(conn, case_id)
            rejected_at = conn.execute(sa.select(sa.func.max(case_history.c.at)).where(
                case_history.c.case_id == case_id, case_history.c.to_state == CaseState.REJECTED.value)).scalar()
            if (case.state is not CaseState.REJECTED or case.evidence_ref is None or case.evidence_removed_at is not None
                    or rejected_at is None or as_utc(rejected_at, UTC) >= cutoff):
                return None
            conn.execute(cases.update().where(cases.c.id == case_id).values(
                details={**(case.details or {}), EVIDENCE_REMOVED: now.isoformat()}))
            conn.execute(audit_log.insert().values(at=now, actor="retention", role="system", action="remove_evidence",
                                                   case_id=case_id, details=record))
            return self._get(conn, case_id)

    def evidence_marked_removed(self) -> list[Case]:
        """The cases whose evidence the retention marked removed (`mark_evidence_removed`) but whose deletion is not
        known finished (`finish_evidence_removal`): the round that marked each deleted its bundle after the mark, so
        the next rounds check (through the evidence store) that none is left; only these, not every case ever marked,
        since on S3 each check is one listing."""
        details = cases.c.details
        query = (sa.select(cases).where(cases.c.evidence_ref.is_not(None), details[EVIDENCE_REMOVED].as_string().is_not(None),
                                        details[EVIDENCE_REMOVAL_DONE].as_string().is_(None)).order_by(cases.c.id))
        with self.engine.connect() as conn:
            return [_row_to(Case, r) for r in conn.execute(query)]

    def finish_evidence_removal(self, case_id: str, *, now: datetime | None = None) -> None:
        """Note that the evidence store has no bundle left of a case marked removed (`EVIDENCE_REMOVAL_DONE`), so that
        `evidence_marked_removed` no longer lists it."""
        at = (now or datetime.now(UTC)).isoformat()
        with self._writer.begin() as conn:
            details = {**(self._lock(conn, case_id).details or {}), EVIDENCE_REMOVAL_DONE: at}
            conn.execute(cases.update().where(cases.c.id == case_id).values(details=details))

    def apply_remote_state(self, case_id: str, to: CaseState, *, actor: str, reason: str | None = None,
                           details: dict[str, Any] | None = None, now: datetime | None = None) -> Case:
        """A status from the dispatch system (poll or webhook). Repeats are no-ops, so a webhook
        delivered twice or a poll that sees the same status again changes nothing."""
        with self._writer.begin() as conn:
            case = self._lock(conn, case_id)
            if case.state is CaseState(to):
                return case
            return self._transition(conn, case_id, CaseState(to), actor, reason, details or {}, now, {})

    def mark_handled(self, case_id: str, *, actor: str, note: str | None = None,
                     now: datetime | None = None) -> Case:
        """The other side says the case was dealt with. A camera case enters `verifying` (the camera
        re-checks the scene); a photo case has no camera to look again, so it is `closed`."""
        to = handled_state(self.get(case_id))
        return self.apply_remote_state(case_id, to, actor=actor,
                                       reason=note or "handled on the dispatch side" + ("; re-check pending" if to is CaseState.VERIFYING else ""),
                                       now=now)

    def record_verification(self, case_id: str, cleared: bool, *, actor: str, verification_ref: str | None = None,
                            note: str | None = None, now: datetime | None = None) -> Case:
        """The re-check's outcome: `verified_cleared` or `still_present`, with its evidence frame's reference."""
        to = CaseState.VERIFIED_CLEARED if cleared else CaseState.STILL_PRESENT
        return self.transition(case_id, to, actor=actor, reason=note or f"re-check: {to}", now=now,
                               details={"verification_ref": verification_ref}, verification_ref=verification_ref)

    def waiting_for_evidence(self, limit: int = 100) -> list[Case]:
        """Candidates whose evidence bundle is not stored yet (storage was down): intake retries them."""
        query = (sa.select(cases).where(cases.c.state == CaseState.CANDIDATE.value, cases.c.evidence_ref.is_(None))
                 .order_by(cases.c.created_at).limit(limit))
        with self.engine.connect() as conn:
            return [_row_to(Case, r) for r in conn.execute(query)]

    # ---- outbox --------------------------------------------------------------------------

    def claim_due(self, *, target: str | None = None, limit: int = 10, lease_s: float = 60.0,
                  now: datetime | None = None, owner: str | None = None, skip: Collection[int] = ()) -> list[OutboxEntry]:
        """Lease up to `limit` pending entries whose time has come, for `owner` (a dispatcher's token).

        The lease (not a status flag) marks an entry as in flight, so an entry held by a
        dispatcher that died becomes due again by itself when the lease runs out. A dispatcher
        claims one entry at a time and renews the lease when it sends (`begin_send`), so a lease
        never has to cover entries still waiting their turn.
        """
        now = now or datetime.now(UTC)
        free = sa.or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now)
        query = sa.select(outbox.c.id).where(outbox.c.status == OutboxStatus.PENDING, outbox.c.next_attempt_at <= now, free)
        if target is not None:
            query = query.where(outbox.c.target == target)
        if skip:  # entries this pass already handled
            query = query.where(outbox.c.id.not_in(list(skip)))
        query = query.order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)
        claimed = []
        with self._writer.begin() as conn:
            for entry_id in conn.execute(query).scalars().all():
                result = conn.execute(outbox.update().where(outbox.c.id == entry_id, free)
                                      .values(lease_until=now + timedelta(seconds=lease_s), lease_owner=owner))
                if result.rowcount == 1:
                    claimed.append(self._entry(conn, entry_id))
        return claimed

    def begin_send(self, entry_id: int, owner: str, lease_s: float, *, now: datetime | None = None) -> bool:
        """Just before a request leaves: renew `owner`'s lease for the request's length and record that
        the dispatch system may from now on hold the case (`in_doubt_since`), so whoever sends this
        entry next looks the case up there first. False when the lease was lost (ran out and another
        dispatcher claimed the entry): then nothing must be sent."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            result = conn.execute(outbox.update().where(
                outbox.c.id == entry_id, outbox.c.status == OutboxStatus.PENDING, outbox.c.lease_owner == owner,
                outbox.c.lease_until >= now,
            ).values(lease_until=now + timedelta(seconds=lease_s),
                     in_doubt_since=sa.func.coalesce(outbox.c.in_doubt_since, now)))
            return result.rowcount == 1

    def clear_doubt(self, entry_id: int, owner: str | None = None) -> None:
        """The dispatch system was asked and does not hold the case: a new attempt is a first one again."""
        with self._writer.begin() as conn:
            conn.execute(outbox.update().where(outbox.c.id == entry_id, outbox.c.status == OutboxStatus.PENDING,
                                               *self._held(owner)).values(in_doubt_since=None))

    def mark_delivered(self, entry_id: int, remote_ref: str, *, now: datetime | None = None,
                       found: bool = False) -> Case:
        """The other side has the case: record its reference and move the case to `submitted`.

        `found`: the reference came from looking the case up on their side (an earlier attempt had
        reached them although its answer was lost), not from the answer to a request. Recorded
        whoever holds the lease: it is what the other side holds.
        """
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            entry = self._entry(conn, entry_id)
            if entry.status is OutboxStatus.DELIVERED:  # a second dispatcher whose lease had run out: nothing to do
                if entry.remote_ref != remote_ref:
                    log.error("case %s: delivered to %s as %s, and again as %s: a duplicate on their side",
                              entry.case_id, entry.target, entry.remote_ref, remote_ref)
                return self._get(conn, entry.case_id)
            conn.execute(outbox.update().where(outbox.c.id == entry_id).values(
                status=OutboxStatus.DELIVERED, remote_ref=remote_ref, delivered_at=now, lease_until=None, lease_owner=None,
                in_doubt_since=None, attempts=outbox.c.attempts + (0 if found else 1), last_error=None))
            case = self._lock(conn, entry.case_id)
            facts = {"dispatch_target": entry.target, "dispatch_ref": remote_ref, "reason": None}
            why = (f"found on {entry.target} as {remote_ref} (an earlier attempt had reached it)" if found
                   else f"delivered as {remote_ref}")
            if case.state is CaseState.QUEUED:
                return self._transition(conn, case.id, CaseState.SUBMITTED, f"dispatch:{entry.target}",
                                        why, {"attempts": entry.attempts + (0 if found else 1)}, now, facts)
            # Withdrawn here (rejected) while its delivery was in flight, or after an attempt that reached them: they
            # hold it all the same. Their reference is kept, and the history and the case's reason say so, for someone
            # to have it voided there; recorded silently, the case read as withdrawn and never sent.
            held = withdrawn_but_held(entry.target, case.state, why)
            conn.execute(cases.update().where(cases.c.id == case.id).values(updated_at=now, **{**facts, "reason": held}))
            self._history(conn, case.id, case.state, case.state, now, f"dispatch:{entry.target}", held,
                          {"dispatch_ref": remote_ref, "found": found})
            return self._get(conn, case.id)

    def schedule_retry(self, entry_id: int, error: str, next_attempt_at: datetime, *, owner: str | None = None) -> None:
        """A failed attempt: count it and persist when to try again (a restart keeps the schedule), and say so in the
        queued case's reason (`cases list`'s "waiting because"), which was left empty however often it failed.

        With `owner`, only while that dispatcher still holds the lease (else the entry is another's now).
        """
        with self._writer.begin() as conn:
            done = conn.execute(outbox.update().where(outbox.c.id == entry_id, outbox.c.status == OutboxStatus.PENDING,
                                                      *self._held(owner))
                                .values(attempts=outbox.c.attempts + 1, last_error=error, next_attempt_at=next_attempt_at,
                                        lease_until=None, lease_owner=None))
            if done.rowcount == 1:
                entry = self._entry(conn, entry_id)
                self._waiting(conn, entry, f"attempt {entry.attempts} failed ({error})", next_attempt_at)

    def defer(self, entry_id: int, until: datetime, why: str, *, owner: str | None = None) -> None:
        """Give a claimed entry back without counting an attempt (its target's circuit is open); the queued case's
        reason says `why` (the circuit, its last error) and when it is tried again."""
        with self._writer.begin() as conn:
            done = conn.execute(outbox.update().where(outbox.c.id == entry_id, outbox.c.status == OutboxStatus.PENDING,
                                                      *self._held(owner))
                                .values(lease_until=None, lease_owner=None, next_attempt_at=until))
            if done.rowcount == 1:
                self._waiting(conn, self._entry(conn, entry_id), why, until)

    def _waiting(self, conn: Connection, entry: OutboxEntry, why: str, next_attempt_at: datetime) -> None:
        """A queued case's reason while its delivery waits: why, and when it is tried next (UTC, as `cases list`)."""
        when = next_attempt_at.astimezone(UTC)
        conn.execute(cases.update().where(cases.c.id == entry.case_id, cases.c.state == CaseState.QUEUED).values(
            reason=f"dispatch to {entry.target}: {why}; next attempt {when:%Y-%m-%d %H:%M:%S} UTC"))

    def close_withdrawn(self, entry_id: int, *, owner: str | None = None, now: datetime | None = None,
                        why: str | None = None) -> None:
        """The entry of a case withdrawn here (rejected) before it was ever sent: closed, not parked, since nobody has
        anything to fix, and the case keeps the reason its reviewer gave (parking overwrote it). `why`: the history's
        words when it is closed for another reason (the case is queued for another platform now)."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            entry = self._entry(conn, entry_id)
            if entry.status is not OutboxStatus.PENDING or (owner is not None and entry.lease_owner != owner):
                return
            conn.execute(outbox.update().where(outbox.c.id == entry_id).values(
                status=OutboxStatus.WITHDRAWN, lease_until=None, lease_owner=None))
            case = self._get(conn, entry.case_id)
            self._history(conn, case.id, case.state, case.state, now, f"dispatch:{entry.target}",
                          why or f"not sent to {entry.target}: the case was withdrawn before it was sent",
                          {"outbox_id": entry_id})

    def awaiting_status(self, target: str, limit: int = 500) -> list[Case]:
        """Cases at `target` whose outcome on their side is still open (what status polling checks)."""
        states = [s.value for s in ON_PLATFORM]
        query = (sa.select(cases).where(cases.c.dispatch_target == target, cases.c.state.in_(states),
                                        cases.c.dispatch_ref.is_not(None))
                 .order_by(cases.c.updated_at).limit(limit))
        with self.engine.connect() as conn:
            return [_row_to(Case, r) for r in conn.execute(query)]

    def park(self, entry_id: int, reason: str, *, now: datetime | None = None, owner: str | None = None) -> None:
        """Stop retrying an entry the other side refused; the case stays `queued` with the reason. The case's reason
        says why its delivery to the platform it is queued for waits, so an entry of a case not queued for this
        platform (stale: queued elsewhere since; or rejected here, its reason the reviewer's) leaves it alone and is
        said in the case's history instead."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            entry = self._entry(conn, entry_id)
            if entry.status is not OutboxStatus.PENDING or (owner is not None and entry.lease_owner != owner):
                return
            conn.execute(outbox.update().where(outbox.c.id == entry_id).values(
                status=OutboxStatus.PARKED, parked_reason=reason, last_error=reason, lease_until=None, lease_owner=None,
                attempts=outbox.c.attempts + 1))
            why = f"dispatch to {entry.target} parked: {reason}"
            case = self._get(conn, entry.case_id)
            if case.state is not CaseState.QUEUED or case.dispatch_target not in (None, entry.target):
                self._history(conn, case.id, case.state, case.state, now, f"dispatch:{entry.target}", why,
                              {"outbox_id": entry_id})
                return
            conn.execute(cases.update().where(cases.c.id == entry.case_id).values(reason=why, updated_at=now))

    def requeue(self, entry_id: int, *, actor: str, now: datetime | None = None) -> None:
        """A human fixed the cause of a parked entry: deliver it again (same idempotency key)."""
        now = now or datetime.now(UTC)
        with self._writer.begin() as conn:
            entry = self._entry(conn, entry_id)
            case = self._get(conn, entry.case_id)
            if entry.status in (OutboxStatus.PARKED, OutboxStatus.WITHDRAWN) and case.state is not CaseState.QUEUED:
                raise CaseStoreError(f"outbox entry {entry_id}: case {case.id} is {case.state.value}, not queued "
                                     f"({case.reason or 'no reason given'}): there is nothing to deliver")
            if entry.status is not OutboxStatus.PARKED:
                raise CaseStoreError(f"outbox entry {entry_id}: only parked entries can be requeued (it is {entry.status})")
            conn.execute(outbox.update().where(outbox.c.id == entry_id).values(
                status=OutboxStatus.PENDING, parked_reason=None, next_attempt_at=now))
            conn.execute(cases.update().where(cases.c.id == entry.case_id).values(reason=None, updated_at=now))
            self._history(conn, entry.case_id, CaseState.QUEUED, CaseState.QUEUED, now, actor,
                          f"parked delivery to {entry.target} requeued", {"outbox_id": entry_id})

    def outbox_entries(self, *, status: OutboxStatus | str | None = None, case_id: str | None = None) -> list[OutboxEntry]:
        query = sa.select(outbox).order_by(outbox.c.id)
        if status is not None:
            query = query.where(outbox.c.status == OutboxStatus(status).value)
        if case_id is not None:
            query = query.where(outbox.c.case_id == case_id)
        with self.engine.connect() as conn:
            return [_row_to(OutboxEntry, r) for r in conn.execute(query)]

    def outbox_counts(self) -> dict[str, int]:
        query = sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)
        with self.engine.connect() as conn:
            return {status: n for status, n in conn.execute(query)}

    def next_due_at(self) -> datetime | None:
        """When the earliest pending entry becomes due (None when nothing is pending)."""
        query = sa.select(sa.func.min(outbox.c.next_attempt_at)).where(outbox.c.status == OutboxStatus.PENDING)
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return None if value is None else (value if value.tzinfo else value.replace(tzinfo=UTC))

    # ---- internals -----------------------------------------------------------------------

    def _get(self, conn: Connection, case_id: str) -> Case:
        row = conn.execute(sa.select(cases).where(cases.c.id == case_id)).first()
        if row is None:
            raise CaseNotFound(case_id)
        return _row_to(Case, row)

    def _lock(self, conn: Connection, case_id: str) -> Case:
        """The case, its row held until the writing transaction ends (FOR UPDATE; SQLite's BEGIN IMMEDIATE holds the
        whole file already). A writer checks what it read (`check_unchanged`, the state it moves from) and then writes:
        on PostgreSQL an unlocked read let two reviewers both pass the check on one case and both write."""
        row = conn.execute(sa.select(cases).where(cases.c.id == case_id).with_for_update()).first()
        if row is None:
            raise CaseNotFound(case_id)
        return _row_to(Case, row)

    def _check_unchanged(self, conn: Connection, case: Case, seen: datetime | None) -> Case:
        """`case` if it is as the client loaded it: `seen` is its `updated_at` then (None: no check). Otherwise
        CaseChanged naming when it changed, who last acted on it and its state now, so a page left open
        does not overwrite what another reviewer did meanwhile. Called inside the writing transaction."""
        if seen is None or as_utc(seen, UTC) == as_utc(case.updated_at, UTC):
            return case
        last = conn.execute(sa.select(case_history.c.actor, case_history.c.at).where(case_history.c.case_id == case.id)
                            .order_by(case_history.c.id.desc()).limit(1)).first()
        moves = [(as_utc(last.at, UTC), last.actor)] if last else []
        moves += [(as_utc(datetime.fromisoformat(r["at"]), UTC), r["by"]) for r in (case.details or {}).get("revisions", [])]
        if case.reviewer and case.reviewed_at:  # a confirm without dispatch moves no state and revises nothing
            moves.append((as_utc(case.reviewed_at, UTC), case.reviewer))
        by = max(moves)[1] if moves else "?"
        zh = STATE_NAMES_ZH[case.state]
        raise CaseChanged(f"案件 {case.id} 在您打开后已被修改（最后操作人 {by}，现为{zh}），本次操作未执行，请刷新后再操作 "
                          f"case {case.id} changed at {case.updated_at.isoformat()} after it was loaded "
                          f"(as of {seen.isoformat()}; last by {by}, now {case.state}): nothing done, reload it and act again",
                          {"id": case.id, "state": case.state, "last_by": by, "updated_at": case.updated_at.isoformat()})

    @staticmethod
    def _held(owner: str | None) -> list[Any]:
        """The condition that `owner` still holds an entry's lease (none when no owner is given)."""
        return [] if owner is None else [outbox.c.lease_owner == owner]

    def _entry(self, conn: Connection, entry_id: int) -> OutboxEntry:
        row = conn.execute(sa.select(outbox).where(outbox.c.id == entry_id)).first()
        if row is None:
            raise CaseStoreError(f"no outbox entry {entry_id}")
        return _row_to(OutboxEntry, row)

    def _transition(self, conn: Connection, case_id: str, to: CaseState, actor: str, reason: str | None,
                    details: dict[str, Any], now: datetime | None, values: dict[str, Any], *, reopening: bool = False) -> Case:
        now = now or datetime.now(UTC)
        current = self._lock(conn, case_id).state
        check_transition(case_id, current, to, reopening=reopening)
        result = conn.execute(cases.update().where(cases.c.id == case_id, cases.c.state == current.value)
                              .values(state=to.value, updated_at=now, **values))
        if result.rowcount != 1:  # only possible without BEGIN IMMEDIATE / row locks; be explicit anyway
            raise CaseStoreError(f"case {case_id}: state changed concurrently while moving {current} -> {to}")
        self._history(conn, case_id, current, to, now, actor, reason, details)
        return self._get(conn, case_id)

    @staticmethod
    def _history(conn: Connection, case_id: str, from_state: CaseState | None, to: CaseState, at: datetime,
                 actor: str, reason: str | None, details: dict[str, Any]) -> None:
        conn.execute(case_history.insert().values(
            case_id=case_id, from_state=None if from_state is None else from_state.value, to_state=to.value,
            at=at, actor=actor, reason=reason, details=details))
