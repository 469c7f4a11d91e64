"""API tokens in the case store's database: one live token per name held by the database, and databases made
before the tokens joined the case store's migrations upgraded, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from fastapi.testclient import TestClient

from api.accounts import AccountError, Accounts, hash_token
from tests.api_helpers import auth, make_app, settings_for, users_cli
from pipelines.cases import schema
from tests.conftest import REPO
from tests.legacy import accounts_v1
from tests.test_case_store import _schema_differences, empty_url  # noqa: F401  (fixture)

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _live_row(name: str, n: int) -> dict:
    return {"name": name, "role": "reviewer", "token_hash": hash_token(f"swt_{name}{n}"), "hint": f"swt_{n:04d}",
            "created_at": T0}


def _made_before(url: str, *, with_cases: bool) -> str:
    """A database as the code before this change left it: the case tables at revision 0003 (or none: `users add`
    was the first command run), and the tokens' tables made by the old Accounts' create_all. Returns 王芳's token."""
    if with_cases:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            command.upgrade(schema.alembic_config(conn), "0003")
        engine.dispose()
    old = accounts_v1.Accounts(url)
    _, token = old.add("王芳", "reviewer")
    old.add("李四", "inspector")
    old.revoke("李四")
    old.add("李四", "inspector")  # a revoked token and a live one of one name: allowed before and after
    old.engine.dispose()
    return token


def test_the_database_holds_one_live_token_per_name(empty_url):  # noqa: F811
    """Whatever writes the table, a second live token of a name is refused by the database itself."""
    accounts = Accounts(empty_url)
    accounts.add("王芳", "reviewer")
    with pytest.raises(sa.exc.IntegrityError), accounts.engine.begin() as conn:
        conn.execute(schema.api_tokens.insert().values(_live_row("王芳", 2)))
    accounts.revoke("王芳")
    accounts.add("王芳", "reviewer")  # revoked ones stay beside the live one
    assert [t.name for t in accounts.list(include_revoked=True)] == ["王芳", "王芳"]
    accounts.engine.dispose()


def test_two_users_add_of_one_name_at_once_leave_one_live_token(fresh_postgres_url):
    """Both `users add` look before either writes (held at a barrier, so the race happens every run): one
    token is written, the other add gets the usual 'already has an active token'. PostgreSQL: SQLite's
    writers already queue (BEGIN IMMEDIATE), so there the second one looks after the first has written."""
    accounts = Accounts(fresh_postgres_url)
    both_looked = threading.Barrier(2, timeout=30)

    @sa.event.listens_for(accounts.engine, "before_cursor_execute")
    def _wait_for_the_other(conn, cursor, statement, *_):
        if statement.startswith("INSERT INTO api_tokens") and threading.current_thread().name.startswith("add-"):
            both_looked.wait()

    outcomes: list[str] = []

    def add() -> None:
        try:
            accounts.add("王芳", "reviewer")
            outcomes.append("added")
        except AccountError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=add, name=f"add-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["added", "user '王芳' already has an active token (revoke it first to issue a new one)"]
    assert len(accounts.list()) == 1
    accounts.engine.dispose()


@pytest.mark.parametrize("with_cases", [True, False], ids=["case-store", "tokens-only"])
def test_a_database_made_before_gets_the_live_name_index_and_expiry(empty_url, with_cases):  # noqa: F811
    token = _made_before(empty_url, with_cases=with_cases)
    accounts = Accounts(empty_url)
    principal = accounts.authenticate(token)
    assert principal is not None and (principal.name, principal.role) == ("王芳", "reviewer")  # tokens kept, valid as before
    assert [(t.name, t.revoked_at is not None, t.expires_at) for t in accounts.list(include_revoked=True)] == [
        ("王芳", False, None), ("李四", True, None), ("李四", False, None)]
    info, _ = accounts.add("赵六", "inspector", timedelta(days=90))
    assert accounts.list()[-1].expires_at == info.expires_at == info.created_at + timedelta(days=90)
    indexes = {i["name"]: i for i in sa.inspect(accounts.engine).get_indexes("api_tokens")}
    assert indexes["uq_api_tokens_live_name"]["unique"]
    assert _schema_differences(empty_url) == []  # the same tables as a new database
    with pytest.raises(AccountError, match="already has an active token"):
        accounts.add("王芳", "admin")
    with pytest.raises(sa.exc.IntegrityError), accounts.engine.begin() as conn:
        conn.execute(schema.api_tokens.insert().values(_live_row("李四", 3)))
    accounts.engine.dispose()


def test_an_upgrade_over_names_with_two_live_tokens_is_refused_naming_them(empty_url, tmp_path):  # noqa: F811
    """Two live tokens of one name (the old race) cannot stay under the index: the upgrade names each such user
    and its tokens and says how to keep one; nothing is changed until then, and the upgrade goes on after."""
    _made_before(empty_url, with_cases=True)
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(accounts_v1.api_tokens.insert().values(_live_row("王芳", 2)))
    engine.dispose()
    with pytest.raises(schema.SchemaRefused) as refused:
        Accounts(empty_url)
    message = str(refused.value)
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": empty_url}}), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "users", "list", "--config", str(config)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip() == f"error: {message}"  # one line, no traceback
    assert "1 user name(s) with more than one active token" in message and "'王芳': id 1 (swt_" in message
    assert "id 4 (swt_0002… created 2026-12-01 02:00 UTC)" in message
    assert "UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE id IN (1)" in message
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        assert schema.current_revision(conn) == "0003"  # refused as a whole
        conn.execute(sa.text("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE id IN (1)"))  # as it says
    engine.dispose()
    accounts = Accounts(empty_url)
    assert [(t.id, t.name) for t in accounts.list()] == [(3, "李四"), (4, "王芳")]
    accounts.engine.dispose()


def test_a_token_given_an_expiry_is_refused_after_it_saying_when(tmp_path):
    """`users add --expires-in` (days or hours; anything else refused naming it); past its expiry a token is 401
    saying when, in Chinese and English and the city's time, and `users list` marks it expired. `users add` of the
    name was refused until someone revoked a token that no longer worked; it replaces it (revoked, kept for the
    record, said on stderr), while a working token is still not replaced. Tokens without an expiry work as before."""
    settings = settings_for(tmp_path)
    users = users_cli(settings, tmp_path)

    before = datetime.now(UTC)
    added = users("add", "王芳", "--role", "reviewer", "--expires-in", "90d")
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[0]
    [until] = {f"{at + timedelta(days=90):%Y-%m-%d}" for at in (before, datetime.now(UTC))} & {
        w for w in added.stderr.split() if w[:2] == "20"}  # the day 90 days on (whichever side of a midnight)
    assert f"valid until {until} " in added.stderr
    forever = users("add", "李四", "--role", "inspector").stdout.strip().splitlines()[0]
    for value in ("90", "90m", "1w", "0d", "-3d", "1.5d", "d", "100000d"):
        refused = users("add", "赵六", "--expires-in", value)
        assert refused.exit_code == 2 and f"--expires-in {value!r}: give whole days or hours" in refused.output, value
    listed = users("list").stdout.splitlines()
    assert listed[0].startswith("王芳\treviewer\t") and f"  expires {until} " in listed[0]
    assert listed[1].startswith("李四\tinspector\t") and "expire" not in listed[1]
    assert len(listed) == 2

    app, _ = make_app(settings)
    with TestClient(app) as client:
        assert client.get("/api/v1/cases", headers=auth(token)).status_code == 200
        with app.state.ctx.store.engine.begin() as conn:  # its 90 days are over
            conn.execute(schema.api_tokens.update().where(schema.api_tokens.c.name == "王芳")
                         .values(expires_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC)))
        expired = client.get("/api/v1/cases", headers=auth(token))
        assert expired.status_code == 401 and expired.headers["WWW-Authenticate"] == "Bearer"
        assert expired.json()["type"] == "urn:streetwatch:problem:token-expired"  # the login page shows its detail
        assert expired.json()["detail"] == ("API 令牌已于 2026-01-02 11:04+08:00 过期，请向管理员申请新令牌 "
                                            "API token expired at 2026-01-02 11:04+08:00; ask an administrator for a new one")
        assert client.get("/api/v1/cases", headers=auth(forever)).status_code == 200
    assert "  expired 2026-01-02 03:04" in users("list").stdout.splitlines()[0]
    again = users("add", "王芳", "--role", "reviewer")  # renewing it is one step: the expired token is replaced
    assert again.exit_code == 0, again.output
    renewed = again.stdout.strip().splitlines()[0]
    assert (f"replaced 王芳's token {token[:8]}… (reviewer), which expired at 2026-01-02 03:04 UTC: revoked "
            "(users list --all keeps it)") in again.stderr
    assert [line.split("\t")[:3] for line in users("list").stdout.splitlines() if line.startswith("王芳\t")] == [
        ["王芳", "reviewer", f"{renewed[:8]}…"]]
    [old] = [line for line in users("list", "--all").stdout.splitlines() if line.split("\t")[2] == f"{token[:8]}…"]
    assert "  expired 2026-01-02 03:04" in old and "  revoked " in old
    with TestClient(app) as client:
        assert client.get("/api/v1/cases", headers=auth(token)).json()["type"] == "urn:streetwatch:problem:unauthenticated"
        assert client.get("/api/v1/cases", headers=auth(renewed)).status_code == 200
    refused = users("add", "王芳", "--role", "reviewer")  # one that still works is not replaced
    assert refused.exit_code == 2 and "user '王芳' already has an active token (revoke it first" in refused.output


def test_revision_0004_downgrades_to_0003_and_upgrades_again_keeping_tokens_and_audit(empty_url):  # noqa: F811
    """0004 had no downgrade, so a store could not be taken back to the release before it. Down to 0003 the tables are
    as that release made them, its code reading their tokens and audit records; a token given an expiry, which that
    release would keep valid for ever, is revoked; upgraded again, the store has the current tables and every row."""
    from pipelines.cases import CaseStore
    from tests.test_case_store import _draft

    store = CaseStore(empty_url)
    case = _draft(store, 1)
    store.close()
    accounts = Accounts(empty_url)
    _, kept = accounts.add("王芳", "reviewer")
    _, expiring = accounts.add("赵六", "inspector", timedelta(days=90))
    with accounts.recorded(accounts.authenticate(kept), "approve", case.id, {"note": "占道经营"}):
        pass
    accounts.engine.dispose()

    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        command.downgrade(schema.alembic_config(conn), "0003")
        assert schema.current_revision(conn) == "0003"
        assert "expires_at" not in {c["name"] for c in sa.inspect(conn).get_columns("api_tokens")}
        assert "uq_api_tokens_live_name" not in {i["name"] for i in sa.inspect(conn).get_indexes("api_tokens")}
    engine.dispose()
    old = accounts_v1.Accounts(empty_url)  # the release before reads them
    assert old.authenticate(kept).name == "王芳" and old.authenticate(expiring) is None
    assert [(r["actor"], r["action"], r["details"]) for r in old.audit_records(case.id)] == [
        ("王芳", "approve", {"note": "占道经营"})]
    old.engine.dispose()

    store = CaseStore(empty_url)  # upgraded again by opening it
    assert store.get(case.id).violation_id == case.violation_id
    store.close()
    assert _schema_differences(empty_url) == []
    accounts = Accounts(empty_url)
    assert accounts.authenticate(kept).name == "王芳" and accounts.authenticate(expiring) is None
    assert [(t.name, t.revoked_at is not None) for t in accounts.list(include_revoked=True)] == [("王芳", False), ("赵六", True)]
    assert len(accounts.audit_records(case.id)) == 1
    accounts.engine.dispose()
