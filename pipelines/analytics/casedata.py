"""Read-only queries of the case store for the analytics: cases as flat facts, and handling times.

The analytics read the `cases` and `case_history` tables directly (SQLAlchemy Core on the store's
engine) instead of adding report-shaped methods to `CaseStore`: the store stays about writing
cases safely, and these queries can change with the reports. Streets and squads are joined in
from the grid file (`places`), not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from detect.taxonomy import Severity
from pipelines.analytics.places import NONE_UNIT, Places, Unit
from pipelines.cases.schema import case_history, cases
from pipelines.cases.states import REOPEN, CaseState
from pipelines.cases.store import platform_voided, recorded_severity, severity_of

# A case a person (or the auto-queue) has let through: approved in review, or past `candidate`.
_DISPATCHED = {CaseState.QUEUED, CaseState.SUBMITTED, CaseState.ACCEPTED, CaseState.VERIFYING,
               CaseState.VERIFIED_CLEARED, CaseState.STILL_PRESENT, CaseState.CLOSED}
_DONE = {CaseState.CLOSED.value, CaseState.VERIFIED_CLEARED.value}
IN_THE_STREET: tuple[str, ...] = tuple(s.value for s in CaseState if s is not CaseState.REJECTED)
"""The states of a problem in the street, what the reports and the map count: every one but `rejected` (a false alarm
rejected here, a triage withdrawal, a platform's voiding), which they show only when asked for."""
T = TypeVar("T")
VOIDED_BY_PLATFORM = "平台作废"
"""What the reports and scores call a case its dispatch platform voided after approval here (`CaseFact.voided_by_platform`)."""


class CaseNote(NamedTuple):
    """A reviewer's note on a case (`details.notes`, `CaseStore.add_note`); `at` aware UTC, None where unreadable."""

    at: datetime | None
    by: str
    text: str


@dataclass(frozen=True)
class CaseFact:
    """One case as the analytics see it (times aware UTC)."""

    id: str
    violation_type: str
    state: CaseState
    source_kind: str
    source_id: str
    zone_id: str | None
    grid_cell: str | None
    address: str | None
    lat: float | None
    lon: float | None
    opened_at: datetime | None
    created_at: datetime
    review_decision: str | None
    dispatch_target: str | None
    dispatch_ref: str | None
    description: str | None
    object_count: int = 1
    phones: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    shop: str | None = None  # a shop's name or id when the case names one (`details.shop`)
    severity: Severity = Severity.GENERAL  # `details.severity` (pipelines.cases.store.severity_of)
    street: str | None = None
    squad: str | None = None
    notes: tuple[CaseNote, ...] = ()  # reviewers' notes, oldest first (as added)
    verifier_id: str | None = None  # what judged it (`details.verifier_id`, as its bundle names it; none: detector alone)
    review_reason: str | None = None  # a rejection's reason code (`not_a_violation` …: pipelines.cases.vocabulary.REASONS)
    review_note: str | None = None  # what the reviewer wrote with the decision

    @property
    def at(self) -> datetime:
        return self.opened_at or self.created_at

    @property
    def confirmed(self) -> bool:
        """Approved in review, or already on its way to / at the dispatch system (auto-queued too)."""
        return self.state in _DISPATCHED or (self.state is CaseState.CANDIDATE and self.review_decision == "approved")

    @property
    def voided_by_platform(self) -> bool:
        """Voided by its dispatch platform (作废) after approval here (`platform_voided`, as `Case.voided_by_platform`)."""
        return platform_voided(self.state, self.review_decision)

    @property
    def rejected_here(self) -> bool:
        """Rejected in review here or withdrawn (triage): a false finding of the camera, the verifier or a photo, what
        the reports count as rejected; a case the platform voided is not one (`voided_by_platform`)."""
        return self.state is CaseState.REJECTED and not self.voided_by_platform

    @property
    def camera(self) -> str | None:
        return self.source_id if self.source_kind == "camera" else None

    def unit(self, by: Unit) -> str:
        """The grid cell / street / squad / camera the case is scored and counted under."""
        value = {"grid": self.grid_cell, "street": self.street, "squad": self.squad, "camera": self.camera}[by]
        return value or NONE_UNIT


@dataclass(frozen=True)
class CaseFilter:
    """Filters shared by the export, the map and the reports (all optional, combined with AND)."""

    types: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    start: datetime | None = None  # opened at or after (aware)
    end: datetime | None = None  # opened before
    grid_cells: tuple[str, ...] = ()
    streets: tuple[str, ...] = ()  # via the grid file's cells
    cameras: tuple[str, ...] = ()  # source ids
    source_kind: str | None = None  # camera | photo_batch
    zone_ids: tuple[str, ...] = ()
    reviewed: bool | None = None  # True: has a review decision; False: none yet (the review queue's default view)
    severities: tuple[Severity, ...] = ()  # `details.severity` (cases recorded before it: general)


def _int(value: Any, default: int = 1) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return default


def _notes(details: dict[str, Any]) -> tuple[CaseNote, ...]:
    """The case's notes as `CaseStore.add_note` appends them, oldest first; a time that does not read is None, the
    note kept (what a reviewer wrote is never dropped from an export)."""
    def at(value: Any) -> datetime | None:
        try:
            return datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return None

    return tuple(CaseNote(at(n.get("at")), str(n.get("by") or ""), str(n.get("text") or ""))
                 for n in details.get("notes") or [] if isinstance(n, dict))


def _fact(row: Any, places: Places) -> CaseFact:
    m = row._mapping
    details = m["details"] or {}
    tags = details.get("tags") or []
    return CaseFact(
        id=m["id"], violation_type=m["violation_type"], state=CaseState(m["state"]), source_kind=m["source_kind"],
        source_id=m["source_id"], zone_id=m["zone_id"], grid_cell=m["grid_cell"], address=m["address"], lat=m["lat"],
        lon=m["lon"], opened_at=m["opened_at"], created_at=m["created_at"], review_decision=m["review_decision"],
        dispatch_target=m["dispatch_target"], dispatch_ref=m["dispatch_ref"], description=m["description"],
        object_count=_int(details.get("object_count")),
        phones=tuple(sorted({str(p) for p in details.get("phones") or [] if p})),
        tags=tuple(str(t) for t in (tags if isinstance(tags, list) else [tags])),
        shop=str(details["shop"]) if details.get("shop") else None,
        severity=severity_of(details),
        street=places.street_of(m["grid_cell"]), squad=places.squad_of(m["grid_cell"]), notes=_notes(details),
        verifier_id=str(details["verifier_id"]) if details.get("verifier_id") else None,
        review_reason=m["review_reason"], review_note=m["review_note"],
    )


_COLUMNS = [cases.c[name] for name in (
    "id", "violation_type", "state", "source_kind", "source_id", "zone_id", "grid_cell", "address", "lat", "lon",
    "opened_at", "created_at", "review_decision", "review_reason", "review_note", "dispatch_target", "dispatch_ref", "description", "details")]


#: Cases read from the store at a time by `iter_cases` (a page of facts is a few MB at most).
PAGE = 1000


class CasePoint(NamedTuple):
    """Where a case is: all the map counts it by, in a grid cell and in the zones."""

    grid_cell: str | None
    lat: float | None
    lon: float | None


_POINT_COLUMNS = [cases.c[name] for name in CasePoint._fields]


Box = tuple[float, float, float, float]  # (west, south, east, north): longitudes and latitudes, edges included


def load_cases(engine: Engine, places: Places, flt: CaseFilter = CaseFilter(), newest: int | None = None, *,
               after: tuple[datetime, str] | None = None, within: Box | None = None) -> list[CaseFact]:
    """Cases matching `flt`, oldest first (the period is on `opened_at`, as in `CaseStore.search`). `newest`: only
    that many, the newest, read from the store (the map's cap: a city's years of cases are never all in memory).
    `after`: only those after this (opening time, id), as `newest_beyond` gives it; `within`: only those whose
    position is in this box (a zone's bounds: its list reads the cases near it, not all the map's)."""
    return _load(engine, places, flt, newest, _COLUMNS, lambda row: _fact(row, places), after=after, within=within)


def newest_beyond(engine: Engine, places: Places, flt: CaseFilter, n: int) -> tuple[datetime, str] | None:
    """(opening time, id) of the newest case of `flt` past its newest `n` (None: no more than `n` match): the cases
    `after` it are those `load_cases(..., newest=n)` reads, found by their key alone. `flt` must bound the opening
    time (`start`), as the map's does: a case never opened sorts differently on SQLite and PostgreSQL."""
    where = _where(places, flt)
    if where is None:
        return None
    c = cases.c
    query = sa.select(c.opened_at, c.id).where(*where).order_by(c.opened_at.desc(), c.id.desc()).offset(n).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else (row.opened_at, row.id)


def load_points(engine: Engine, places: Places, flt: CaseFilter = CaseFilter(), newest: int | None = None) -> list[CasePoint]:
    """The cells and positions of `load_cases`' cases, in its order, read without the rest of each case: the map's
    counts need no more, and 20,000 rows made into CaseFacts (their details and times decoded) took half of each map."""
    return _load(engine, places, flt, newest, _POINT_COLUMNS, lambda row: CasePoint(*row))


def _load(engine: Engine, places: Places, flt: CaseFilter, newest: int | None, columns: list[Any],
          make: Callable[[Any], T], *, after: tuple[datetime, str] | None = None, within: Box | None = None) -> list[T]:
    """`columns` of the cases of `flt` made into `make`'s objects, in `load_cases`' order (see there)."""
    where = _where(places, flt)
    if where is None:
        return []
    c = cases.c
    if within is not None:
        west, south, east, north = within
        where += [c.lon.between(west, east), c.lat.between(south, north)]
    query = sa.select(*columns).where(*where, *_after(after))
    if newest is None:
        query = query.order_by(sa.nulls_first(c.opened_at.asc()), c.id)
    else:
        query = query.order_by(c.opened_at.desc(), c.id.desc()).limit(newest)
    with engine.connect() as conn:
        found = [make(row) for row in conn.execute(query)]
    return found if newest is None else found[::-1]


def iter_cases(engine: Engine, places: Places, flt: CaseFilter = CaseFilter(), page: int | None = None) -> Iterator[CaseFact]:
    """The cases of `load_cases`, in its order, read from the store `page` (`PAGE`) at a time after the last one given
    (by opening time and id, so a case never comes twice), without holding a connection between pages: an export of a
    city's years of cases streams to the client instead of being built whole in the server's memory."""
    where = _where(places, flt)
    if where is None:
        return
    page = page or PAGE
    c = cases.c
    after: tuple[datetime | None, str] | None = None
    while True:
        query = sa.select(*_COLUMNS).where(*where, *_after(after)).order_by(sa.nulls_first(c.opened_at.asc()), c.id)
        with engine.connect() as conn:
            rows = conn.execute(query.limit(page)).all()
        yield from (_fact(row, places) for row in rows)
        if len(rows) < page:
            return
        last = rows[-1]._mapping
        after = (last["opened_at"], last["id"])


def _after(key: tuple[datetime | None, str] | None) -> list[Any]:
    """The condition for the cases after `key` (opening time, id) in `load_cases`' order, where an unset opening
    time comes first."""
    if key is None:
        return []
    c = cases.c
    opened, case_id = key
    if opened is None:
        return [sa.or_(c.opened_at.is_not(None), sa.and_(c.opened_at.is_(None), c.id > case_id))]
    # the first condition alone lets the store walk its index of opening times from the key on
    return [c.opened_at >= opened, sa.or_(c.opened_at > opened, sa.and_(c.opened_at == opened, c.id > case_id))]


def _where(places: Places, flt: CaseFilter) -> list[Any] | None:
    """The store's conditions for `flt`; None when no case can match (streets no cell of the grid file is in)."""
    c = cases.c
    where: list[Any] = []
    if flt.types:
        where.append(c.violation_type.in_(flt.types))
    if flt.states:
        where.append(c.state.in_([CaseState(s).value for s in flt.states]))
    if flt.start is not None:
        where.append(c.opened_at >= flt.start)
    if flt.end is not None:
        where.append(c.opened_at < flt.end)
    cells = set(flt.grid_cells)
    if flt.streets:
        in_streets = places.cells_where(streets=list(flt.streets))
        cells = (cells & in_streets) if cells else in_streets
        if not cells:
            return None
    if cells:
        where.append(c.grid_cell.in_(sorted(cells)))
    if flt.cameras:
        where.append(c.source_id.in_(flt.cameras))
    if flt.source_kind:
        where.append(c.source_kind == flt.source_kind)
    if flt.zone_ids:
        where.append(c.zone_id.in_(flt.zone_ids))
    if flt.reviewed is not None:
        where.append(c.review_decision.is_not(None) if flt.reviewed else c.review_decision.is_(None))
    if flt.severities:
        where.append(recorded_severity().in_([Severity(s).value for s in flt.severities]))
    return where


@dataclass(frozen=True)
class Handling:
    """How long a case took through review and dispatch (hours; None where it has not got there)."""

    case_id: str
    to_review: float | None  # created -> its latest review decision, else -> queued unreviewed (auto-queue) since last
    # reopened; None for a case never reviewed (waiting, or withdrawn by triage unreviewed) or reopened and waiting again
    to_dispatch: float | None  # created -> submitted (the platform acknowledged it)
    to_close: float | None  # opened -> closed or verified_cleared


def handling_times(engine: Engine, case_ids: Iterable[str]) -> dict[str, Handling]:
    """From the state history: the first time each case reached each milestone; review, the case's latest decision
    (`reviewed_at`), else `_decided_since_reopened`."""
    ids = list(case_ids)
    firsts: dict[str, dict[str, datetime]] = {i: {} for i in ids}
    h = case_history.c
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):  # bounded IN lists
            chunk = ids[start:start + 500]
            query = (sa.select(h.case_id, h.to_state, sa.func.min(h.at)).where(h.case_id.in_(chunk))
                     .group_by(h.case_id, h.to_state))
            for case_id, state, at in conn.execute(query):
                firsts[case_id][state] = at
            decided = _decided_since_reopened(conn, chunk)
            times = sa.select(cases.c.id, cases.c.created_at, cases.c.opened_at, cases.c.reviewed_at).where(cases.c.id.in_(chunk))
            for case_id, created, opened, reviewed in conn.execute(times):
                firsts[case_id]["_created"], firsts[case_id]["_opened"] = created, opened or created
                if (reviewed := reviewed or decided.get(case_id)) is not None:
                    firsts[case_id]["_reviewed"] = reviewed

    def hours(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else max(0.0, (b - a).total_seconds() / 3600)

    out = {}
    for case_id, f in firsts.items():
        if "_created" not in f:
            continue
        reviewed = f.get("_reviewed")
        done = min((f[s] for s in _DONE if s in f), default=None)
        out[case_id] = Handling(case_id, hours(f["_created"], reviewed), hours(f["_created"], f.get(CaseState.SUBMITTED.value)),
                                hours(f["_opened"], done))
    return out


def _decided_since_reopened(conn: Connection, case_ids: list[str]) -> dict[str, datetime]:
    """Per case, its first move into queued since a reviewer last reopened it (`REOPEN`), or since it was drafted: when
    it was let through without a recorded review (auto-queued). A move into rejected without one is no review: a
    reviewer's rejection records it (`reviewed_at`), so it is a withdrawal (triage's, its photo replaced), which counted
    as the case's review although nobody saw it. A reopened case waiting for review has none, not its undone
    rejection's (the review columns, cleared then, say the rest)."""
    h = case_history.c
    query = (sa.select(h.case_id, h.from_state, h.to_state, h.at)
             .where(h.case_id.in_(case_ids), h.to_state.in_((CaseState.QUEUED.value, CaseState.CANDIDATE.value)))
             .order_by(h.id))
    first: dict[str, datetime] = {}
    for case_id, before, after, at in conn.execute(query):
        if (before, after) == (REOPEN[0].value, REOPEN[1].value):
            first.pop(case_id, None)
        elif after == CaseState.QUEUED.value and before != after:
            first.setdefault(case_id, at)
    return first
