"""Case store tables (SQLAlchemy Core) and their migrations (Alembic, `pipelines/cases/migrations/`).

The database also holds the service's API tokens and audit log (`api/accounts.py` uses them): their tables are
here too, so one migration chain brings every table of the database to this code's shape.

The tables below are the newest schema; each change to them comes with an Alembic revision in
`migrations/versions/` that brings an older database to the same shape (a test compares the two on
SQLite and PostgreSQL). `migrate()` runs whenever a `CaseStore` opens: a new database is built by
the revisions from the first one on, a database of the first release (hand-written migrations,
`schema_version` 1) is stamped at its revision and upgraded, and a database at a revision this code does not know
(a newer release's, or another build's: Alembic cannot tell which) is refused. To change the schema: edit the tables AND add a revision
(`alembic -c pipelines/cases/alembic.ini -x url=sqlite:///dev.db revision --autogenerate -m "..."`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "case_store_version"  # Alembic's version table, named for this store (other tables share the database)
FIRST_RELEASE = "0001"  # the revision a first-release database (`schema_version` 1) is at
_PG_LOCK = 0x5357_4341  # advisory lock id: one migrating process at a time on PostgreSQL ("SWCA")

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
    sa.Column("opened_at", UTCDateTime, index=True),  # the lists' order and period filters
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
    sa.Index("ix_cases_state_opened_at", "state", "opened_at"),  # one state's cases, newest first (the queue)
    sa.Index("ix_cases_created_at", "created_at", "id"),  # `cases list`'s order: as stored, not as opened (may be NULL)
    sa.Index("ix_cases_state_created_at", "state", "created_at", "id"),  # the same within a state (`--state`, intake retry)
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
    sa.Column("status", sa.String(16), nullable=False, index=True),  # vocabulary.OutboxStatus
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # Persisted back-off schedule and claim lease: a restarted dispatcher keeps both.
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("lease_owner", sa.String(64)),  # which dispatcher holds the lease (a token per process)
    # Set when a request is about to leave: the other side may hold the case from then on, so the
    # next attempt looks it up there before sending (exactly once even where Idempotency-Key is ignored).
    sa.Column("in_doubt_since", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("parked_reason", sa.Text),
    sa.Column("remote_ref", sa.String(200)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime),
)

# The timestamped dispatch webhook calls taken (pipelines/dispatch/webhook.py `SeenCalls`), each until its timestamp
# leaves its target's webhook_max_age_s window: here, not in a process's memory, so every `serve` process of a site
# refuses a call another took, and a restart forgets none (a replay to the other process was taken again).
webhook_calls = sa.Table(
    "webhook_calls",
    metadata,
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("signature", sa.String(80), primary_key=True),  # X-Signature as checked: sha256=<HMAC hex>
    sa.Column("seen_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),  # its timestamp + webhook_max_age_s
)

# ---- city workflows (pipelines/cityops, docs/city-operations.md): facts about cases, beside them ----

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


batches = sa.Table(
    "batches",
    metadata,
    # A photo batch's id (`triage:<folder name>`, `patrol:<video name>`, `-2`, `-3`... for the next of that name): the
    # source id of its cases, claimed by its run folder before any case exists, so two runs cannot choose one.
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("folder", sa.Text, nullable=False),  # the run folder that claimed it (for whoever wonders whose it is)
    sa.Column("claimed_at", UTCDateTime, nullable=False),
)


# ---- API tokens and the audit log of review actions (api/accounts.py reads and writes them) ----

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(16), nullable=False),  # first characters, to tell tokens apart in lists
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("expires_at", UTCDateTime),  # None: valid until revoked
)
LIVE_TOKEN = sa.text("revoked_at IS NULL")
# One live (unrevoked) token per name, held by the database: two `users add` of one name at once cannot both
# write one (a partial index: revoked tokens of the name stay, for the record). SQLite and PostgreSQL alike.
sa.Index("uq_api_tokens_live_name", api_tokens.c.name, unique=True, sqlite_where=LIVE_TOKEN, postgresql_where=LIVE_TOKEN)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("case_id", sa.String(64), index=True),
    sa.Column("details", sa.JSON, nullable=False, default=dict),
)


class SchemaRefused(RuntimeError):
    """A database this code will not migrate, and why (a newer schema, not a case store, data the new schema
    cannot hold); the CLI shows it as its one error line."""


def alembic_config(conn: Connection | None = None) -> Config:
    """Alembic's configuration for the case store, in code (no alembic.ini needed at run time)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def migrate(conn: Connection) -> str | None:
    """Bring the database to the newest revision, inside the caller's transaction; returns the revision
    it was at before (None: a new database). Raises SchemaRefused for a database this code cannot own, naming the
    database (its URL, password masked): the one line a command stops with must say which store, as its
    CaseStoreUnreachable does, where an office keeps several (a copy, last year's, a test one)."""
    try:
        return _migrate(conn)
    except SchemaRefused as exc:
        raise SchemaRefused(f"case store {conn.engine.url.render_as_string(hide_password=True)}: {exc}") from None


def _migrate(conn: Connection) -> str | None:
    """`migrate`, its refusals not yet naming the database."""
    if conn.dialect.name == "postgresql":  # SQLite: the caller's BEGIN IMMEDIATE already serialises this
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
    cfg = alembic_config(conn)
    tables = set(sa.inspect(conn).get_table_names())
    newest = head()
    if VERSION_TABLE in tables:
        before = current_revision(conn)
        if before is not None:
            try:
                ScriptDirectory.from_config(cfg).get_revision(before)
            except CommandError:
                raise SchemaRefused(f"schema at revision {before}, unknown to this release (its newest: {newest}): "
                                    "written by a newer release or by another build; run the streetwatch that last "
                                    "opened the store (nothing was changed)") from None
        if before == newest:
            return before
    elif "schema_version" in tables:  # the first release's hand-written versioning
        version = conn.execute(sa.text("SELECT max(version) FROM schema_version")).scalar()
        if version != 1:
            raise SchemaRefused(f"schema_version {version}: not a release this code can upgrade")
        command.stamp(cfg, FIRST_RELEASE)
        before = FIRST_RELEASE
    elif "cases" in tables:
        raise SchemaRefused("a `cases` table but no case store version: not a streetwatch case store")
    else:
        before = None
    command.upgrade(cfg, "head")
    return before
