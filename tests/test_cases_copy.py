"""`streetwatch cases copy`: a SQLite pilot's store moved whole into PostgreSQL (or another SQLite file), opened there
by the normal code with every row of every table."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from typer.testing import CliRunner

from api.accounts import Accounts
from pipelines.cases import CaseStore, NewCase, schema
from pipelines.dispatch.webhook import SeenCalls
from streetwatch.cli import app
from tests.test_case_store import T0, _draft, _with_evidence


def _copy(*args: str):
    return CliRunner().invoke(app, ["cases", "copy", *args])


def _store_with_every_table(url: str) -> str:
    """A store with rows in every table of the schema (a table added later fails the check at the end until it is
    filled here too); returns a live API token."""
    store = CaseStore(url)
    made = [_with_evidence(store, n) for n in range(3)]
    store.review(made[0].id, approve=True, reviewer="李伟", target="cn-dcm", reason_code="confirmed", note="占道经营",
                 now=T0 + timedelta(minutes=10))
    store.review(made[1].id, approve=False, reviewer="李伟", reason_code="not_a_violation", now=T0 + timedelta(minutes=11))
    store.claim_batch("triage:wechat", "/runs/wechat", now=T0)
    SeenCalls(store.engine).claim(("cn-dcm", "sha256=" + "ab" * 32), until=T0.timestamp() + 300, now=T0.timestamp())
    with store.engine.begin() as conn:  # the city workflows' tables, as their registers write them
        conn.execute(schema.shops.insert().values(id="91330106MA27XY0001", name="张记五金", contact="张先生 13900001111",
                                                  frontages=[{"camera": "cam-01", "polygon": [[0.1, 0.1], [0.2, 0.2]]}],
                                                  updated_at=T0))
        conn.execute(schema.warnings.insert().values(id="W1", violation_id="cam-01:z1:shopfront_spillover:t9",
                                                     violation_type="shopfront_spillover", camera_id="cam-01",
                                                     shop_id="91330106MA27XY0001", state="warned", warned_at=T0,
                                                     recheck_at=T0 + timedelta(minutes=30), details={"dwell_s": 300}))
        conn.execute(schema.callout_numbers.insert().values(number="13912345678", first_seen=T0, last_seen=T0, count=1,
                                                            places=[{"address": "学院路 1 号"}], cases=[made[2].id],
                                                            photos=[], status="new", updated_at=T0))
        conn.execute(schema.verification_reports.insert().values(case_id=made[0].id, target="cn-dcm",
                                                                 verification_ref="verification/1", kind="auto_recheck",
                                                                 outcome="verified_cleared", status="pending",
                                                                 attempts=0, created_at=T0))
    store.close()
    accounts = Accounts(url)
    _, token = accounts.add("王芳", "reviewer")
    accounts.add("赵六", "inspector", timedelta(days=90))
    with accounts.recorded(accounts.authenticate(token), "approve", made[0].id, {"note": "占道经营"}):
        pass
    accounts.engine.dispose()
    assert {t: n for t, n in _rows(url).items() if not n} == {}  # every table holds rows
    return token


def _rows(url: str) -> dict[str, list[dict]]:
    """Every row of every table of the schema, read through its column types, in primary-key order."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {t.name: [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                 for t in schema.metadata.sorted_tables}
    engine.dispose()
    return found


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_sqlite_store_is_copied_whole_and_opens_with_every_row(tmp_path, request, kind):
    """No tool moved a SQLite pilot's store to PostgreSQL: the docs said to keep the old store aside. `cases copy`
    copies every table in one transaction; the copy opens with every case, history, delivery, register row, token and
    audit record equal, and the next rows get new ids (PostgreSQL's sequences set past the copied ones)."""
    source = tmp_path / "cases.db"
    token = _store_with_every_table(f"sqlite:///{source}")
    target = request.getfixturevalue("fresh_postgres_url") if kind == "postgresql" else f"sqlite:///{tmp_path}/new.db"
    before = _rows(f"sqlite:///{source}")

    run = _copy(str(source), target)  # the source by its path, as a pilot knows it
    assert run.exit_code == 0, run.output
    rows = sum(len(r) for r in before.values())
    assert run.stdout.strip() == (f"copied sqlite:///{source} to {target}: {len(before)} tables, {rows} rows (3 cases)")
    assert "  cases: 3/3 rows" in run.stderr.splitlines()
    assert _rows(target) == before

    old, new = CaseStore(f"sqlite:///{source}"), CaseStore(target)
    assert [asdict(c) for c in new.list()] == [asdict(c) for c in old.list()]
    assert [asdict(e) for e in new.outbox_entries()] == [asdict(e) for e in old.outbox_entries()]
    next_case = new.create_case(NewCase(violation_type="street_stall", source_kind="camera", source_id="cam-02"), now=T0)
    [drafted] = [r for r in _rows(target)["case_history"] if r["case_id"] == next_case.id]
    assert drafted["id"] == max(r["id"] for r in before["case_history"]) + 1  # not 1, a copied row's
    old.close()
    new.close()
    accounts = Accounts(target)
    assert accounts.authenticate(token).name == "王芳"
    info, _ = accounts.add("李四", "inspector")
    assert info.id == len(before["api_tokens"]) + 1
    assert [r["actor"] for r in accounts.audit_records()] == ["王芳"]
    accounts.engine.dispose()


def test_a_source_not_at_this_release_or_a_target_holding_a_store_is_refused_and_nothing_written(tmp_path):
    """A source at an older revision is refused saying to open it once with this release (which migrates it), and
    no target file is made; a target already holding cases is refused and left as it was."""
    older = f"sqlite:///{tmp_path}/older.db"
    engine = sa.create_engine(older)
    with engine.begin() as conn:
        command.upgrade(schema.alembic_config(conn), "0005")
    engine.dispose()
    target = tmp_path / "new.db"
    run = _copy(older, str(target))
    assert run.exit_code == 2
    assert run.stderr.strip() == (f"error: source {older}: at revision 0005, not this release's {schema.head()}: open "
                                  "it once with this release (e.g. streetwatch cases list with its settings), which "
                                  "migrates it, then copy it; nothing was written")
    assert not target.exists()

    _store_with_every_table(f"sqlite:///{tmp_path}/cases.db")
    busy = CaseStore(f"sqlite:///{target}")
    _draft(busy, 7)
    busy.close()
    before = _rows(f"sqlite:///{target}")
    run = _copy(str(tmp_path / "cases.db"), f"sqlite:///{target}")
    assert run.exit_code == 2
    assert run.stderr.strip() == (f"error: target sqlite:///{target}: already holds a store (1 in cases, 1 in "
                                  "case_history); copy into an empty database; nothing was written")
    assert _rows(f"sqlite:///{target}") == before
    assert not Path(f"{tmp_path}/missing.db").exists()


def test_a_sqlite_target_in_a_folder_that_does_not_exist_is_refused_and_nothing_made(tmp_path):
    """The engine made a new SQLite target's folders: the copy landed on the system disk where a disk was not mounted,
    and a failed one removed the file and left the folders. A folder that does not exist is refused, naming it, as
    `cases backup` refuses its OUT's."""
    _store_with_every_table(f"sqlite:///{tmp_path}/cases.db")
    target = tmp_path / "mnt" / "pg-move" / "new.db"
    run = _copy(str(tmp_path / "cases.db"), str(target))
    assert run.exit_code == 2
    assert run.stderr.strip() == (f"error: target sqlite:///{target}: folder {target.parent} does not exist (a disk not "
                                  "mounted?); make it first; nothing was written")
    assert not (tmp_path / "mnt").exists()


def _sql_nulls(url: str) -> dict[str, int]:
    """Rows whose nullable JSON column is SQL NULL (`IS NULL`), per column, in the store at `url`."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {f"{t.name}.{c.name}": conn.execute(sa.select(sa.func.count()).select_from(t).where(c.is_(None)))
                 .scalar_one() for t in schema.metadata.sorted_tables for c in t.columns
                 if isinstance(c.type, sa.JSON) and c.nullable}
    engine.dispose()
    return found


def test_a_sql_null_in_a_nullable_json_column_stays_sql_null_and_a_json_null_json_null(tmp_path, fresh_postgres_url):
    """Read through the JSON type a SQL NULL and a JSON null are both None, and the copy wrote None back as JSON null:
    the same case in Python, but `IS NULL` (and any query on the column) found it in the source and not in the copy.
    Each is copied as the source holds it: the store's own drafts' JSON null as JSON null, a SQL NULL as SQL NULL."""
    source = f"sqlite:///{tmp_path}/cases.db"
    _store_with_every_table(source)
    store = CaseStore(source)
    json_null, sql_null = _draft(store, 7), _draft(store, 8)  # drafted without evidence: JSON null, as the store writes
    with store.engine.begin() as conn:  # as a row an older writer left
        conn.execute(schema.cases.update().where(schema.cases.c.id == sql_null.id).values(evidence_boxes=sa.null()))
    store.close()
    assert _sql_nulls(source) == {"cases.evidence_boxes": 1}

    run = _copy(source, fresh_postgres_url)
    assert run.exit_code == 0, run.output
    assert _sql_nulls(fresh_postgres_url) == _sql_nulls(source)
    copied = CaseStore(fresh_postgres_url)
    assert copied.get(json_null.id).evidence_boxes is None and copied.get(sql_null.id).evidence_boxes is None
    assert [c.evidence_boxes["width"] for c in copied.list() if c.evidence_boxes is not None] == [810, 810, 810]
    copied.close()
