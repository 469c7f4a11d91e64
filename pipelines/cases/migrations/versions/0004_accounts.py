"""API tokens and the audit log join the case store's chain: one live token per user name, held by the database,
and tokens that expire.

Until now `api/accounts.py` made its two tables with `create_all`, which never changes a table that exists, so
a database made then is brought here to the same shape: a new database gets both tables; an existing
`api_tokens` gets `expires_at` (empty: its tokens stay valid until revoked, as they were) and the partial unique
index on the names of live (unrevoked) tokens, unless two `users add` of one name raced and left it two live
tokens, which this refuses naming them (the database could not hold both).

Downgraded (to go back to the release before), the two tables stay as that release's `create_all` made them, their
tokens and audit records kept: the index and `expires_at` go. That release never reads an expiry, so a token given
one would stay valid for ever there: each is revoked first, at its expiry if that has passed, else now.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from pipelines.cases.schema import SchemaRefused

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "api_tokens" in tables:
        _refuse_names_with_two_live_tokens()
        with op.batch_alter_table("api_tokens") as batch:
            batch.add_column(sa.Column("expires_at", sa.DateTime))
    else:
        op.create_table(
            "api_tokens",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("role", sa.String(32), nullable=False),
            sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("hint", sa.String(16), nullable=False),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("revoked_at", sa.DateTime),
            sa.Column("expires_at", sa.DateTime),
        )
        op.create_index("ix_api_tokens_name", "api_tokens", ["name"])
    live = sa.text("revoked_at IS NULL")
    op.create_index("uq_api_tokens_live_name", "api_tokens", ["name"], unique=True, sqlite_where=live, postgresql_where=live)
    if "audit_log" not in tables:
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("at", sa.DateTime, nullable=False),
            sa.Column("actor", sa.String(200), nullable=False),
            sa.Column("role", sa.String(32), nullable=False),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("case_id", sa.String(64)),
            sa.Column("details", sa.JSON, nullable=False),
        )
        op.create_index("ix_audit_log_at", "audit_log", ["at"])
        op.create_index("ix_audit_log_case_id", "audit_log", ["case_id"])


def _refuse_names_with_two_live_tokens() -> None:
    """SchemaRefused naming each user with more than one live token, its tokens, and how to keep one."""
    rows = op.get_bind().execute(sa.text(
        "SELECT id, name, hint, created_at FROM api_tokens WHERE revoked_at IS NULL AND name IN "
        "(SELECT name FROM api_tokens WHERE revoked_at IS NULL GROUP BY name HAVING count(*) > 1) ORDER BY name, id")).all()
    if not rows:
        return
    by_name: dict[str, list] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    listed = "; ".join(f"{name!r}: " + ", ".join(f"id {r.id} ({r.hint}… created {str(r.created_at)[:16]} UTC)" for r in tokens)
                       for name, tokens in by_name.items())
    older = ", ".join(str(r.id) for tokens in by_name.values() for r in tokens[:-1])
    raise SchemaRefused(
        f"api_tokens: {len(by_name)} user name(s) with more than one active token, which this version no longer allows "
        f"(one per name): {listed}. Keep the one each user holds and revoke the others in the database, e.g. keeping "
        f"the last one issued: UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE id IN ({older}); then run the "
        "command again")


def downgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as the columns hold it
    conn.execute(sa.text("UPDATE api_tokens SET revoked_at = expires_at "
                         "WHERE revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= :now"), {"now": now})
    conn.execute(sa.text("UPDATE api_tokens SET revoked_at = :now WHERE revoked_at IS NULL AND expires_at IS NOT NULL"),
                 {"now": now})
    op.drop_index("uq_api_tokens_live_name", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
