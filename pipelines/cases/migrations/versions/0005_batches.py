"""Photo batches' ids are claimed in the store (`batches`), so two run folders of one name started together cannot
both choose the same one (triage and patrol checked the cases, then wrote the id to the folder).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("claimed_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("batches")
