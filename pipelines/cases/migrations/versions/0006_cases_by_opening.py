"""The case list's order and period filters use an index: `cases.opened_at`, alone and after `state`.

The queue, `GET /api/v1/cases` and the exports list cases newest first by `opened_at`, within a period (`since`,
`until`) and often one state; with no index on it, each page read every case (or every case of the state) and sorted
them, a full scan that grows with the years of cases a city keeps (0.5 s a page at 100,000 cases on SQLite).
`cases list` (oldest first as stored: `created_at`, then `id`; `opened_at` is not that order, a photo's being when it was
taken, and may be empty) read and sorted every case likewise; `ix_cases_created_at` holds its order, and
`ix_cases_state_created_at` the same order within one state (`cases list --state`, the intake's retry of candidates
waiting for their evidence), which `ix_cases_state_opened_at` does not.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cases_opened_at", "cases", ["opened_at"])
    op.create_index("ix_cases_state_opened_at", "cases", ["state", "opened_at"])
    op.create_index("ix_cases_created_at", "cases", ["created_at", "id"])
    op.create_index("ix_cases_state_created_at", "cases", ["state", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_cases_state_created_at", table_name="cases")
    op.drop_index("ix_cases_created_at", table_name="cases")
    op.drop_index("ix_cases_state_opened_at", table_name="cases")
    op.drop_index("ix_cases_opened_at", table_name="cases")
