"""Times as the case store keeps them: in UTC.

Times come in from query strings (no offset: UTC), from the spreadsheets city staff fill in (no offset:
the city's zone) and from camera settings (no offset: the camera's zone). Each caller says which zone a
time without an offset is in, and all are turned into UTC here. A time at the ends of Python's dates
(0001-01-01 in UTC+8, 9999-12-31 in UTC-10) has no UTC equivalent: it is a ValueError here, which the
caller words for its own input, rather than an OverflowError from inside the store (a 500).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def as_utc(at: datetime, naive_zone: tzinfo) -> datetime:
    """`at` in UTC, a naive `at` read in `naive_zone`; ValueError when it has no UTC equivalent."""
    try:
        return (at if at.tzinfo else at.replace(tzinfo=naive_zone)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{at.isoformat()} has no UTC equivalent (out of range)") from None
