# The API tokens' tables and code as streetwatch had them before they joined the case store's migrations, verbatim:
# api/accounts.py at commit 359c602 (its own metadata, made by create_all). The tests build databases with it as
# that release did and check that the current code upgrades them (tests/test_accounts.py). Never edit it.
"""API tokens with roles, and the audit log of review actions, in the case store's database.

A token is shown once, when `streetwatch users add` makes it; only its SHA-256 is stored. The
tokens are 256-bit random strings, so a fast hash is enough (a slow password hash such as
argon2 protects guessable secrets; a random token is not guessable), and lookup by hash is one
indexed query. Revoking keeps the row (who had access, and when) but the token stops working.

Tables live beside the case tables (same URL, SQLite or PostgreSQL) but in their own metadata:
the case store's migrations do not know about them and `create_all` adds them when missing.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.cases.schema import UTCDateTime
from pipelines.cases.store import make_engine

metadata = sa.MetaData()
TOKEN_PREFIX = "swt_"
NAME_MAX = 200  # the column's length


class Role(StrEnum):
    INSPECTOR = "inspector"  # uploads photos for triage, reads cases
    REVIEWER = "reviewer"  # reviews cases (confirm, reject, change type, edit), reads cameras
    ADMIN = "admin"  # everything, including scene changes
    INTEGRATION = "integration"  # machines: dispatch webhooks, metrics scraping


api_tokens = sa.Table(
    "api_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(16), nullable=False),  # first characters, to tell tokens apart in lists
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("case_id", sa.String(64), index=True),
    sa.Column("details", sa.JSON, nullable=False, default=dict),
)


class AccountError(ValueError):
    """A users command that cannot be done (duplicate name, unknown user)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's user name and role."""

    name: str
    role: Role
    token_id: int


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: Role
    hint: str
    created_at: datetime
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_name(name: str) -> str:
    """`name` as it is stored and looked up: without surrounding spaces, so `users revoke` finds what `users add`
    stored. Refused (AccountError, naming it) when empty, longer than the column, or holding a control or invisible
    character: a tab or line break splits the lines of `users list`, and an invisible one makes two names that look
    alike in the audit log and on the review pages."""
    name = name.strip()
    if not name:
        raise AccountError("user name must not be empty")
    if len(name) > NAME_MAX:
        raise AccountError(f"user name {name[:40]!r}… has {len(name)} characters; at most {NAME_MAX}")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise AccountError(f"user name {name!r} holds the control or invisible character U+{ord(bad):04X}; "
                           "use letters, digits, spaces and punctuation")
    return name


class Accounts:
    """Tokens and audit records. Thread-safe (one SQLAlchemy engine)."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None):
        if engine is None and url is None:
            raise ValueError("Accounts needs a database URL or an engine")
        self.engine = engine or make_engine(url)  # type: ignore[arg-type]
        self._writer = self.engine.execution_options(writer=True)
        with self._writer.begin() as conn:
            metadata.create_all(conn)

    # ---- tokens ---------------------------------------------------------------------------

    def add(self, name: str, role: Role | str) -> tuple[TokenInfo, str]:
        """A new token for `name`; returns its record and the token itself (shown once, never stored)."""
        role = Role(role)
        name = user_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._writer.begin() as conn:
            active = conn.execute(sa.select(api_tokens.c.id).where(api_tokens.c.name == name,
                                                                   api_tokens.c.revoked_at.is_(None))).first()
            if active is not None:
                raise AccountError(f"user {name!r} already has an active token (revoke it first to issue a new one)")
            new_id = conn.execute(api_tokens.insert().values(
                name=name, role=role.value, token_hash=hash_token(token), hint=token[:8], created_at=now)).inserted_primary_key[0]
        return TokenInfo(new_id, name, role, token[:8], now, None), token

    def list(self, include_revoked: bool = False) -> list[TokenInfo]:
        query = sa.select(api_tokens).order_by(api_tokens.c.id)
        if not include_revoked:
            query = query.where(api_tokens.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [TokenInfo(r.id, r.name, Role(r.role), r.hint, r.created_at, r.revoked_at) for r in conn.execute(query)]

    def revoke(self, name: str) -> int:
        """Revoke the active tokens of user `name`; returns how many."""
        name = user_name(name)
        with self._writer.begin() as conn:
            result = conn.execute(api_tokens.update().where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
                                  .values(revoked_at=datetime.now(UTC)))
        if result.rowcount == 0:
            raise AccountError(f"no active token for user {name!r}")
        return result.rowcount

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; None otherwise."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        query = sa.select(api_tokens).where(api_tokens.c.token_hash == hash_token(token), api_tokens.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else Principal(row.name, Role(row.role), row.id)

    # ---- audit ----------------------------------------------------------------------------

    def audit(self, who: Principal, action: str, case_id: str | None, details: dict[str, Any] | None = None) -> None:
        with self._writer.begin() as conn:
            conn.execute(audit_log.insert().values(at=datetime.now(UTC), actor=who.name, role=who.role.value,
                                                   action=action, case_id=case_id, details=details or {}))

    def audit_records(self, case_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if case_id is not None:
            query = query.where(audit_log.c.case_id == case_id)
        with self.engine.connect() as conn:
            return [{**r._mapping, "at": r.at.isoformat()} for r in conn.execute(query)]
