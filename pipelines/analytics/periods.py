"""Reporting periods (day, ISO week, month, quarter, year) in the city's local time.

One parser for every command and endpoint: `2026-11-03`, `2026-W45`, `2026-11`, `2026-Q4`,
`2026`. A period is a half-open range of local dates; `bounds(tz)` turns it into the UTC range
the case store is queried with, so a day means local midnight to midnight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PeriodKind = Literal["day", "week", "month", "quarter", "year"]
KINDS: tuple[PeriodKind, ...] = ("day", "week", "month", "quarter", "year")
NAMES_ZH = {"day": "日研判", "week": "周提示", "month": "月通报", "quarter": "季分析", "year": "年总结"}
FORMATS = "YYYY-MM-DD, YYYY-Www (ISO week), YYYY-MM, YYYY-Qn or YYYY"
#: Years a period may fall in. Python's dates end at years 1 and 9999, so a period at either end (`0001`,
#: `9999-12-31`) has local midnights that do not convert to UTC, nor a next or previous period; cases are
#: never that old or that far ahead.
YEARS = range(1900, 3000)


class PeriodError(ValueError):
    """A period that cannot be read; the message says which forms are accepted."""


@dataclass(frozen=True)
class Period:
    kind: PeriodKind
    start: date  # first local day
    end: date  # first local day after the period

    @property
    def label(self) -> str:
        s = self.start
        return {"day": s.isoformat(), "week": "{}-W{:02d}".format(*s.isocalendar()[:2]), "month": f"{s:%Y-%m}",
                "quarter": f"{s.year}-Q{(s.month - 1) // 3 + 1}", "year": str(s.year)}[self.kind]

    @property
    def months(self) -> int:
        """Whole calendar months the period spans (0 for a day or a week): monthly quotas scale by it."""
        return {"month": 1, "quarter": 3, "year": 12}.get(self.kind, 0)

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    @property
    def span(self) -> str:
        """First to last day, as people read a period (`2026-11-01 – 2026-11-30`; a day, its one day): the end the
        store is queried with is the day after, and a report that said `2026-11-01 – 2026-12-01（不含 exclusive）` read as
        a month and a day beside /ui/reports, which says the last day."""
        last = self.end - timedelta(days=1)
        return self.start.isoformat() if last == self.start else f"{self.start.isoformat()} – {last.isoformat()}"

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) as aware UTC datetimes (local midnights converted)."""
        return (datetime.combine(self.start, time(), tz).astimezone(UTC),
                datetime.combine(self.end, time(), tz).astimezone(UTC))

    def previous(self) -> Period:
        return period_of(self.kind, self.start - timedelta(days=1))

    def __str__(self) -> str:
        return self.label


def _add_months(d: date, n: int) -> date:
    m = d.month - 1 + n
    return date(d.year + m // 12, m % 12 + 1, 1)


def period_of(kind: str, day: date) -> Period:
    """The period of `kind` that contains `day`."""
    if kind == "day":
        return Period("day", day, day + timedelta(days=1))
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        return Period("week", start, start + timedelta(days=7))
    if kind == "month":
        start = day.replace(day=1)
        return Period("month", start, _add_months(start, 1))
    if kind == "quarter":
        start = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
        return Period("quarter", start, _add_months(start, 3))
    if kind == "year":
        return Period("year", date(day.year, 1, 1), date(day.year + 1, 1, 1))
    raise PeriodError(f"unknown period kind {kind!r} (one of: {', '.join(KINDS)})")


_PATTERNS = [
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})"), lambda y, m, d: period_of("day", date(y, m, d))),
    (re.compile(r"(\d{4})-W(\d{2})"), lambda y, w: period_of("week", date.fromisocalendar(y, w, 1))),
    (re.compile(r"(\d{4})-(\d{2})"), lambda y, m: period_of("month", date(y, m, 1))),
    (re.compile(r"(\d{4})-Q([1-4])"), lambda y, q: period_of("quarter", date(y, 3 * q - 2, 1))),
    (re.compile(r"(\d{4})"), lambda y: period_of("year", date(y, 1, 1))),
]


def check_year(year: int, what: str) -> None:
    """PeriodError naming `what` (the text a person gave) when `year` is outside YEARS."""
    if year not in YEARS:
        raise PeriodError(f"{what}: the year must be {YEARS.start}–{YEARS.stop - 1}")


def parse_period(text: str) -> Period:
    """`2026-11` -> November 2026, etc.; PeriodError naming the text and the accepted forms."""
    value = (text or "").strip().upper()
    for pattern, build in _PATTERNS:
        m = pattern.fullmatch(value)
        if m:
            check_year(int(m.group(1)), f"period {text!r}")
            try:
                return build(*map(int, m.groups()))
            except ValueError as exc:  # 2026-13, 2026-02-30, 2026-W54
                raise PeriodError(f"period {text!r}: {exc}") from None
    raise PeriodError(f"period {text!r} does not parse (use {FORMATS})")


def default_day(tz: ZoneInfo, now: datetime | None = None) -> date:
    """Yesterday in local time: a report run in the morning covers the period that just ended."""
    return ((now or datetime.now(UTC)).astimezone(tz) - timedelta(days=1)).date()


def last_days(days: int, tz: ZoneInfo, now: datetime | None = None) -> tuple[date, datetime]:
    """The first local day of the last `days` days, today included, and its local midnight as aware UTC: the window
    the map counts when no period is given (`analytics.map_days`)."""
    first = (now or datetime.now(UTC)).astimezone(tz).date() - timedelta(days=days - 1)
    return first, datetime.combine(first, time(), tz).astimezone(UTC)
