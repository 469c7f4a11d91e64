"""API tokens with roles, and the audit log of review actions, in the case store's database.

A token is shown once, when `streetwatch users add` makes it; only its SHA-256 is stored. The
tokens are 256-bit random strings, so a fast hash is enough (a slow password hash such as
argon2 protects guessable secrets; a random token is not guessable), and lookup by hash is one
indexed query. Revoking keeps the row (who had access, and when) but the token stops working. A token
may be given an expiry (`users add --expires-in 90d`); past it the token is refused saying so, and it
stays the name's active token (so `users list` shows it, marked expired) until revoked or replaced: `users add`
of that name revokes it and issues the new one in one step, as an admin renewing a lapsed token expects.

The tables are the case store's (`pipelines.cases.schema`: same URL, SQLite or PostgreSQL), made and
upgraded by its migrations like the case tables (so an action's audit record is written in the action's own
transaction: the `audit` callback of a case store or register write, `recorded` for a scene file), so a table made
by an older version gets what this one needs. The database holds one live token per name (a partial unique index), so two `users add` of one
name at once cannot both write one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.cases.schema import api_tokens, audit_log, migrate
from pipelines.cases.store import make_engine

TOKEN_PREFIX = "swt_"
NAME_MAX = api_tokens.c.name.type.length
LIVE = api_tokens.c.revoked_at.is_(None)  # a token not revoked


class Role(StrEnum):
    INSPECTOR = "inspector"  # uploads photos for triage, reads cases
    REVIEWER = "reviewer"  # reviews cases (confirm, reject, change type, edit), reads cameras
    ADMIN = "admin"  # everything, including scene changes
    INTEGRATION = "integration"  # machines: dispatch webhooks, metrics scraping


class AccountError(ValueError):
    """A users command that cannot be done (duplicate name, unknown user)."""


class TokenExpired(Exception):
    """A token that was valid until `expires_at`: refused like an unknown one, but saying why and since when."""

    def __init__(self, name: str, expires_at: datetime):
        super().__init__(f"API token of {name!r} expired at {expires_at.isoformat()}")
        self.name, self.expires_at = name, expires_at


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
    expires_at: datetime | None = None
    replaces: TokenInfo | None = None  # from `add`: the name's expired token it revoked to take its place

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))


_EXPIRES_IN = re.compile(r"([1-9][0-9]{0,4})([dh])")


def parse_expires_in(text: str) -> timedelta:
    """`--expires-in`: whole days (`90d`) or hours (`12h`), 1 to 99999; AccountError naming `text` otherwise."""
    found = _EXPIRES_IN.fullmatch(text.strip())
    if found is None:
        raise AccountError(f"--expires-in {text!r}: give whole days or hours, from 1 to 99999, e.g. 90d or 12h")
    n = int(found[1])
    return timedelta(days=n) if found[2] == "d" else timedelta(hours=n)


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


def _info(r: sa.Row) -> TokenInfo:
    return TokenInfo(r.id, r.name, Role(r.role), r.hint, r.created_at, r.revoked_at, r.expires_at)


def _live(conn: sa.Connection, name: str) -> TokenInfo | None:
    """The token of `name` not revoked (the database holds at most one), expired or not."""
    r = conn.execute(sa.select(api_tokens).where(api_tokens.c.name == name, LIVE)).first()
    return None if r is None else _info(r)


def _taken(conn: sa.Connection, name: str, now: datetime) -> AccountError | None:
    """Why `name` cannot be given a token now: it has one that still works; None when it has none, or only an expired
    one (which `add` replaces)."""
    live = _live(conn, name)
    if live is None or live.expired(now):
        return None
    return AccountError(f"user {name!r} already has an active token (revoke it first to issue a new one)")


class Accounts:
    """Tokens and audit records. Thread-safe (one SQLAlchemy engine)."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None):
        if engine is None and url is None:
            raise ValueError("Accounts needs a database URL or an engine")
        self.engine = engine or make_engine(url)  # type: ignore[arg-type]
        self._writer = self.engine.execution_options(writer=True)
        with self._writer.begin() as conn:  # the case store's migrations make and upgrade the tables
            migrate(conn)
        #: What the database last said of each token that authenticated (by hash): its principal and expiry.
        #: Only `authenticate_as_last_known` reads it, for the routes that must answer while the database is down.
        self._last_known: dict[str, tuple[Principal, datetime | None]] = {}

    # ---- tokens ---------------------------------------------------------------------------

    def add(self, name: str, role: Role | str, valid_for: timedelta | None = None) -> tuple[TokenInfo, str]:
        """A new token for `name`, valid for `valid_for` (None: until revoked); returns its record and the token
        itself (shown once, never stored). A token of `name` that still works refuses it (AccountError); one that has
        expired is revoked in the same transaction (kept for the record, `replaces` in the answer): renewing a lapsed
        token is one step, where the admin had to revoke a token that no longer worked first."""
        role = Role(role)
        name = user_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires_at = None if valid_for is None else now + valid_for
        try:
            with self._writer.begin() as conn:
                if (taken := _taken(conn, name, now)) is not None:
                    raise taken
                if (replaces := _live(conn, name)) is not None:  # expired: revoked, so the new one is the name's
                    conn.execute(api_tokens.update().where(api_tokens.c.id == replaces.id, LIVE).values(revoked_at=now))
                    replaces = replace(replaces, revoked_at=now)
                new_id = conn.execute(api_tokens.insert().values(
                    name=name, role=role.value, token_hash=hash_token(token), hint=token[:8], created_at=now,
                    expires_at=expires_at)).inserted_primary_key[0]
        except sa.exc.IntegrityError:
            # Another `users add` of the name wrote its token after this one looked (the live-name index refused
            # the second); any other integrity error is not ours to explain.
            with self.engine.connect() as conn:
                taken = _taken(conn, name, now)
            if taken is None:
                raise
            raise taken from None
        return TokenInfo(new_id, name, role, token[:8], now, None, expires_at, replaces), token

    def list(self, include_revoked: bool = False) -> list[TokenInfo]:
        query = sa.select(api_tokens).order_by(api_tokens.c.id)
        if not include_revoked:
            query = query.where(LIVE)
        with self.engine.connect() as conn:
            return [_info(r) for r in conn.execute(query)]

    def revoke(self, name: str) -> int:
        """Revoke the active tokens of user `name`; returns how many."""
        name = user_name(name)
        with self._writer.begin() as conn:
            result = conn.execute(api_tokens.update().where(api_tokens.c.name == name, LIVE)
                                  .values(revoked_at=datetime.now(UTC)))
        if result.rowcount == 0:
            raise AccountError(f"no active token for user {name!r}")
        return result.rowcount

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; None for an unknown or revoked one; TokenExpired for one
        past its expiry."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(token)
        query = sa.select(api_tokens).where(api_tokens.c.token_hash == digest, LIVE)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            self._last_known.pop(digest, None)
            return None
        principal = Principal(row.name, Role(row.role), row.id)
        self._last_known[digest] = (principal, row.expires_at)
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise TokenExpired(row.name, row.expires_at)
        return principal

    def authenticate_as_last_known(self, token: str) -> Principal | None:
        """`authenticate` from what the database last said of `token` in this process, for when it cannot be asked
        (CaseStoreUnreachable): the principal of a token that authenticated before and was neither unknown nor revoked
        at its last check, None otherwise (the caller answers that the store is down); TokenExpired once its expiry has passed. Why: Prometheus scrapes `/metrics`
        with a token, and a database outage, the moment its 503 counts matter most, answered the scrape itself 503.
        A revocation cannot be written while the database is down either, and the next answer it gives stands."""
        known = self._last_known.get(hash_token(token)) if token.startswith(TOKEN_PREFIX) else None
        if known is None:
            return None
        principal, expires_at = known
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise TokenExpired(principal.name, expires_at)
        return principal

    # ---- audit ----------------------------------------------------------------------------

    def audit(self, who: Principal, action: str, case_id: str | None, details: dict[str, Any] | None = None, *,
              conn: sa.Connection) -> None:
        """Record `who`'s `action` in the transaction of `conn`, the action's own (a store or register write's `audit`
        callback, `pipelines.cases.store.audited`; `recorded` for an action outside the database), so that an action is
        never done without its record: written in a transaction of its own after the action, a record that could not
        be written left the action standing unrecorded."""
        conn.execute(audit_log.insert().values(at=datetime.now(UTC), actor=who.name, role=who.role.value, action=action,
                                               case_id=case_id, details=details or {}))

    @contextmanager
    def recorded(self, who: Principal, action: str, case_id: str | None,
                 details: dict[str, Any] | None = None) -> Iterator[sa.Connection]:
        """A transaction that has written `who`'s `action` record, committed when the block ends without an error: the
        action outside the database (a scene file) is done in the block, so a record that cannot be written stops it
        before it is done; a commit that fails after it is for the block's caller to undo (`Cameras.put_scene`)."""
        with self._writer.begin() as conn:
            self.audit(who, action, case_id, details, conn=conn)
            yield conn

    def audit_records(self, case_id: str | None = None, limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
        """The audit records (of `case_id`'s case, if given), newest first: `limit` of them after the first `offset`."""
        query = sa.select(audit_log).where(*self._of_case(case_id)).order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [{**r._mapping, "at": r.at.isoformat()} for r in conn.execute(query)]

    def audit_count(self, case_id: str | None = None) -> int:
        """How many audit records there are (of `case_id`'s case, if given): the pages of `audit_records` in all."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(audit_log).where(*self._of_case(case_id))).scalar_one()

    @staticmethod
    def _of_case(case_id: str | None) -> list[sa.ColumnElement[bool]]:
        return [] if case_id is None else [audit_log.c.case_id == case_id]
