"""The case store as the first release made it (hand-written migrations, `schema_version` 1).

A database that release created is stamped at this revision (never run), and a fresh database
starts here.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("violation_id", sa.String(200), unique=True),
        sa.Column("violation_type", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(200), nullable=False),
        sa.Column("zone_id", sa.String(200)),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
        sa.Column("address", sa.Text),
        sa.Column("grid_cell", sa.String(64)),
        sa.Column("description", sa.Text),
        sa.Column("first_seen_at", sa.DateTime),
        sa.Column("opened_at", sa.DateTime),
        sa.Column("cleared_at", sa.DateTime),
        sa.Column("evidence_ref", sa.Text),
        sa.Column("evidence_digest", sa.String(64)),
        sa.Column("dispatch_target", sa.String(64)),
        sa.Column("dispatch_ref", sa.String(200)),
        sa.Column("review_decision", sa.String(16)),
        sa.Column("reviewer", sa.String(200)),
        sa.Column("reviewed_at", sa.DateTime),
        sa.Column("review_reason", sa.String(64)),
        sa.Column("review_note", sa.Text),
        sa.Column("evidence_boxes", sa.JSON),
        sa.Column("reason", sa.Text),
        sa.Column("verification_ref", sa.Text),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_cases_state", "cases", ["state"])
    op.create_index("ix_cases_source_id", "cases", ["source_id"])
    op.create_index("ix_cases_dispatch", "cases", ["dispatch_target", "dispatch_ref"])
    op.create_table(
        "case_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_case_history_case_id", "case_history", ["case_id"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("parked_reason", sa.Text),
        sa.Column("remote_ref", sa.String(200)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime),
    )
    op.create_index("ix_outbox_case_id", "outbox", ["case_id"])
    op.create_index("ix_outbox_status", "outbox", ["status"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("case_history")
    op.drop_table("cases")
