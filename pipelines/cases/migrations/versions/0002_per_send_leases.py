"""Per-send leases and look-ups before re-sending (issue 14): who holds an outbox entry's lease, and
since when an attempt may have reached the other side. Also retires the first release's
`schema_version` table (Alembic's version table replaces it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64)))
        batch.add_column(sa.Column("in_doubt_since", sa.DateTime))
    op.execute("DROP TABLE IF EXISTS schema_version")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("in_doubt_since")
        batch.drop_column("lease_owner")
