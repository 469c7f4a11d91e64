# The case store schema of the previous release, verbatim: pipelines/cases/schema.py at commit 1ce4a65, the
# last release with hand-written migrations (schema_version 1). The tests build databases with it as that
# release did and check that the current code upgrades them (tests/test_case_store.py). Never edit it.
"""Case store tables (SQLAlchemy Core) and their versioned migrations.

Why no Alembic: the schema is small and one table of applied versions does the job. A fresh
database gets the current tables in one go and is stamped with the latest version; an older
database runs each `MIGRATIONS` step above its version, in order, in one transaction each. To
change the schema: edit the tables below AND append a step that brings an old database to the
same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

metadata = sa.MetaData()


class UTCDateTime(sa.TypeDecorator):
    """Stored as naive UTC (same text order in SQLite, same type in PostgreSQL); read back aware."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: case store times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    # The rules' violation id: one case per violation, however many events it emits.
    sa.Column("violation_id", sa.String(200), unique=True),
    sa.Column("violation_type", sa.String(64), nullable=False),
    sa.Column("state", sa.String(32), nullable=False, index=True),
    sa.Column("source_kind", sa.String(16), nullable=False),  # camera | photo_batch
    sa.Column("source_id", sa.String(200), nullable=False, index=True),
    sa.Column("zone_id", sa.String(200)),
    sa.Column("lat", sa.Float),
    sa.Column("lon", sa.Float),
    sa.Column("address", sa.Text),
    sa.Column("grid_cell", sa.String(64)),
    sa.Column("description", sa.Text),
    sa.Column("first_seen_at", UTCDateTime),
    sa.Column("opened_at", UTCDateTime),
    sa.Column("cleared_at", UTCDateTime),
    sa.Column("evidence_ref", sa.Text),
    sa.Column("evidence_digest", sa.String(64)),
    sa.Column("dispatch_target", sa.String(64)),
    sa.Column("dispatch_ref", sa.String(200)),  # their task number / service_request_id
    sa.Column("review_decision", sa.String(16)),  # approved | rejected
    sa.Column("reviewer", sa.String(200)),
    sa.Column("reviewed_at", UTCDateTime),
    sa.Column("review_reason", sa.String(64)),  # reason code (e.g. wrong_type, not_a_violation): retraining reads it
    sa.Column("review_note", sa.Text),
    # The evidence boxes at opening, machine-readable for retraining: {"image": bundle path,
    # "width", "height", "boxes": [{"class_name", "xyxy", "confidence"}]}.
    sa.Column("evidence_boxes", sa.JSON),
    sa.Column("reason", sa.Text),  # why the case waits where it is (e.g. evidence upload failed)
    sa.Column("verification_ref", sa.Text),
    sa.Column("details", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_cases_dispatch", "dispatch_target", "dispatch_ref"),
)

case_history = sa.Table(
    "case_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("from_state", sa.String(32)),
    sa.Column("to_state", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("details", sa.JSON, nullable=False, default=dict),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("target", sa.String(64), nullable=False),
    # Sent with every attempt; the receiving side uses it to answer a retry with the first result.
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # pending | delivered | parked
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # Persisted back-off schedule and claim lease: a restarted dispatcher keeps both.
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("parked_reason", sa.Text),
    sa.Column("remote_ref", sa.String(200)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime),
)

# (version, step) pairs; each step brings a database at version-1 to `version`.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, lambda conn: None),  # the initial schema: created by `create_all` on a fresh database
]
LATEST = MIGRATIONS[-1][0]


def migrate(conn: Connection) -> int:
    """Bring the database to `LATEST`; returns the version it was at before."""
    now = datetime.now(UTC)
    inspector = sa.inspect(conn)
    if not inspector.has_table("schema_version"):
        if inspector.has_table("cases"):
            raise RuntimeError("database has a `cases` table but no `schema_version`: not a streetwatch case store")
        metadata.create_all(conn)
        conn.execute(schema_version.insert(), [{"version": v, "applied_at": now} for v, _ in MIGRATIONS])
        return 0
    current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
    if current > LATEST:
        raise RuntimeError(f"case store schema is version {current}, newer than this code ({LATEST}): upgrade streetwatch")
    for version, step in MIGRATIONS:
        if version > current:
            step(conn)
            conn.execute(schema_version.insert().values(version=version, applied_at=now))
    return current
