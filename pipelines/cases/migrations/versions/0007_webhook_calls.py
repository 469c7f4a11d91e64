"""The dispatch webhook's timestamped calls taken (`webhook_calls`), in the store every `serve` process shares.

`SeenCalls` kept them in each process's memory: a call replayed to a site's other process was taken again, and a
restart forgot the calls of the last window. A row per call taken (target, its signature), until its timestamp leaves
the target's `webhook_max_age_s` window (`expires_at`, indexed for their removal); a second insert of one call fails on
the key, so two processes given it at once take it once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_calls",
        sa.Column("target", sa.String(64), primary_key=True),
        sa.Column("signature", sa.String(80), primary_key=True),
        sa.Column("seen_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_webhook_calls_expires_at", "webhook_calls", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_calls_expires_at", table_name="webhook_calls")
    op.drop_table("webhook_calls")
