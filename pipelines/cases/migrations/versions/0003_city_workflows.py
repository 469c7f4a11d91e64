"""City workflows (issue 18): the frontage register (`shops`), warnings given before cases, the
call-out list of flyposting numbers and the verification reports sent back to the platforms.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shops",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("licence_no", sa.String(64), unique=True),
        sa.Column("contact", sa.String(200)),
        sa.Column("frontages", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "warnings",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("violation_id", sa.String(200), nullable=False, unique=True),
        sa.Column("violation_type", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(200), nullable=False, index=True),
        sa.Column("zone_id", sa.String(200)),
        sa.Column("shop_id", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("warned_at", sa.DateTime, nullable=False),
        sa.Column("recheck_at", sa.DateTime, nullable=False),
        sa.Column("checked_at", sa.DateTime),
        sa.Column("case_id", sa.String(64)),
        sa.Column("image", sa.Text),
        sa.Column("notified", sa.String(16)),
        sa.Column("notify_error", sa.Text),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_table(
        "callout_numbers",
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("first_seen", sa.DateTime),
        sa.Column("last_seen", sa.DateTime),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("places", sa.JSON, nullable=False),
        sa.Column("cases", sa.JSON, nullable=False),
        sa.Column("photos", sa.JSON, nullable=False),
        sa.Column("squad", sa.String(200)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("cut_off_at", sa.DateTime),
        sa.Column("amount", sa.Float),
        sa.Column("note", sa.Text),
        sa.Column("status_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "verification_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(64), nullable=False, index=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("verification_ref", sa.Text, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime),
        sa.UniqueConstraint("case_id", "target", "verification_ref"),
    )


def downgrade() -> None:
    for table in ("verification_reports", "callout_numbers", "warnings", "shops"):
        op.drop_table(table)
