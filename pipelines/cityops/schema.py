"""Tables of the city workflows (frontage register, warnings, call-out list, verification reports).

They live in the case store's database (same URL, same engine, so one backup holds a city's
cases and the facts about them) but in their own SQLAlchemy metadata: the workflows can be
installed on an existing case store without touching its versioned schema
(`pipelines.cases.schema`). Every table here is new; `ensure_tables` creates what is missing
(`checkfirst`), which is all version 1 needs. A later change to one of these tables adds its
step here, the way `pipelines.cases.schema.MIGRATIONS` does.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.cases.schema import UTCDateTime

metadata = sa.MetaData()

shops = sa.Table(
    "shops",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # the licence number when it has one, else a slug
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("address", sa.Text),
    sa.Column("licence_no", sa.String(64), unique=True),
    sa.Column("contact", sa.String(200)),  # person and/or phone number the warning goes to
    # [{"camera": id, "polygon": [[x, y], ...]}] (normalised image coordinates) and/or
    # [{"gps": [[lon, lat], ...]}]: where the shop's 门前三包 responsibility lies.
    sa.Column("frontages", sa.JSON, nullable=False, default=list),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

warnings = sa.Table(
    "warnings",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("violation_id", sa.String(200), nullable=False, unique=True),
    sa.Column("violation_type", sa.String(64), nullable=False),
    sa.Column("camera_id", sa.String(200), nullable=False, index=True),
    sa.Column("zone_id", sa.String(200)),
    sa.Column("shop_id", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False, index=True),  # warned | complied | escalated | lapsed
    sa.Column("warned_at", UTCDateTime, nullable=False),
    sa.Column("recheck_at", UTCDateTime, nullable=False),
    sa.Column("checked_at", UTCDateTime),
    sa.Column("case_id", sa.String(64)),
    sa.Column("image", sa.Text),  # the warning frame (annotated JPEG) under the warnings folder
    sa.Column("notified", sa.String(16)),  # delivered | failed | off
    sa.Column("notify_error", sa.Text),
    sa.Column("details", sa.JSON, nullable=False, default=dict),
)

callout_numbers = sa.Table(
    "callout_numbers",
    metadata,
    sa.Column("number", sa.String(32), primary_key=True),  # normalised as detect.phones writes it
    sa.Column("first_seen", UTCDateTime),
    sa.Column("last_seen", UTCDateTime),
    sa.Column("count", sa.Integer, nullable=False, default=0),  # flyposting cases carrying the number
    sa.Column("places", sa.JSON, nullable=False, default=list),  # [{"address", "grid_cell", "squad"}]
    sa.Column("cases", sa.JSON, nullable=False, default=list),  # case ids
    sa.Column("photos", sa.JSON, nullable=False, default=list),  # "<case id>/<bundle path>" of the opening photo
    sa.Column("squad", sa.String(200)),  # squad of the cell where it was first seen
    sa.Column("status", sa.String(32), nullable=False),  # callout.Status
    sa.Column("cut_off_at", UTCDateTime),
    sa.Column("amount", sa.Float),  # fine in yuan
    sa.Column("note", sa.Text),
    sa.Column("status_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

verification_reports = sa.Table(
    "verification_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("verification_ref", sa.Text, nullable=False),  # the re-check's artifact: one report each
    sa.Column("kind", sa.String(32), nullable=False),  # auto_recheck | disposal_photo
    sa.Column("outcome", sa.String(32), nullable=False),  # verified_cleared | still_present
    sa.Column("status", sa.String(16), nullable=False, index=True),  # pending | delivered | unsupported | parked
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime),
    sa.UniqueConstraint("case_id", "target", "verification_ref"),
)


def ensure_tables(engine: Engine) -> None:
    """Create the workflow tables that are missing (existing ones and their rows are left alone)."""
    metadata.create_all(engine, checkfirst=True)
