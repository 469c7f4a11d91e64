"""Times as the case store keeps them: in UTC; and which capture times are possible at all.

Times come in from query strings (no offset: UTC), from the spreadsheets city staff fill in (no offset:
the city's zone) and from camera settings (no offset: the camera's zone). Each caller says which zone a
time without an offset is in, and all are turned into UTC here. A time at the ends of Python's dates
(0001-01-01 in UTC+8, 9999-12-31 in UTC-10) has no UTC equivalent: it is a ValueError here, which the
caller words for its own input, rather than an OverflowError from inside the store (a 500).

A photo's or a recording's time read from a file name or a file's modification time may be a clock never
set (1970, a camera's 2000-01-01 00:00, the zip format's 1980-01-01) or in the future: `possible_capture`
is the one rule triage and CCTV replay refuse such a time by.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

#: Capture times whose local wall clock is before this are a clock never set (or a name that only looks like a
#: time); this very time is a camera's clock never set too (it is what many reset to).
EARLIEST_CAPTURE = datetime(2000, 1, 1)


def as_utc(at: datetime, naive_zone: tzinfo) -> datetime:
    """`at` in UTC, a naive `at` read in `naive_zone`; ValueError when it has no UTC equivalent."""
    try:
        return (at if at.tzinfo else at.replace(tzinfo=naive_zone)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{at.isoformat()} has no UTC equivalent (out of range)") from None


def written_time(text: str) -> datetime:
    """A time read back from a record file (the watcher's events file: `at`) in UTC, as every one is written now. Older
    files also hold a replay's times in the camera's zone (`+08:00`): the same instant, read as such; a time without an
    offset is UTC. ValueError when `text` is no ISO 8601 time."""
    return as_utc(datetime.fromisoformat(text), UTC)


def possible_capture(taken: datetime, name: str) -> datetime:
    """`taken` (aware) when it can be when photo or recording `name` was taken; else ValueError naming the name and
    why: before 2000 (a clock never set: 1970; 1980-01-01, the zip format's zero), 2000-01-01 00:00 (a camera's clock
    never set) or in the future. The cut-off is the wall clock in `taken`'s own zone, as a clock shows it: compared in
    UTC, a camera's 2000-01-01 00:00 was refused in Asia/Shanghai and taken west of UTC (and 1999 with it)."""
    wall = taken.replace(tzinfo=None)
    if wall < EARLIEST_CAPTURE:
        raise ValueError(f"{name!r}: {taken.isoformat()} is before 2000")
    if wall == EARLIEST_CAPTURE:
        raise ValueError(f"{name!r}: {taken.isoformat()} is 2000-01-01 00:00, a camera's clock never set")
    if taken > datetime.now(UTC):
        raise ValueError(f"{name!r}: {taken.isoformat()} is in the future")
    return taken
