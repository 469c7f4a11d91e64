"""`streetwatch cases backup`: a copy of the case store taken while it is in use, that opens with every case."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cases import CaseStore
from streetwatch.cli import app
from tests.test_case_store import _draft


def _backup(tmp_path: Path, url: str, *args: str):
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": url}}))
    return CliRunner().invoke(app, ["cases", "backup", *args, "--config", str(config)])


def test_a_sqlite_backup_taken_while_the_store_is_written_opens_with_every_case(tmp_path):
    """A copy of cases.db taken while the store was open held none of its recent cases (they wait in cases.db-wal
    until a checkpoint): 0 of 20. The backup, taken while the store is open with its cases committed but not
    checkpointed and another connection holds uncommitted changes written to the WAL, opens with every case as
    committed, and without the uncommitted changes."""
    database = tmp_path / "cases.db"
    store = CaseStore(f"sqlite:///{database}")
    ids = sorted(_draft(store, n).id for n in range(20))
    wal = tmp_path / "cases.db-wal"
    shutil.copyfile(database, tmp_path / "copied.db")  # what `cp cases.db` keeps: no case at all
    copied = CaseStore(f"sqlite:///{tmp_path}/copied.db")
    assert copied.list() == []
    copied.close()
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("PRAGMA cache_size = 1")  # uncommitted pages spill into the WAL
    writer.execute("BEGIN IMMEDIATE")
    committed_wal = wal.stat().st_size
    writer.execute("UPDATE cases SET description = ?", ("占道经营，" * 2000,))
    writer.execute("DELETE FROM cases WHERE id = ?", (ids[0],))
    assert wal.stat().st_size > committed_wal  # the uncommitted frames are in the WAL beside the committed ones

    out = tmp_path / "backups" / "cases-backup.db"
    out.parent.mkdir()
    run = _backup(tmp_path, f"sqlite:///{database}", str(out))
    writer.rollback()
    writer.close()
    assert run.exit_code == 0, run.output
    assert run.output.strip() == f"wrote {out}: 20 cases"
    assert sorted(p.name for p in out.parent.iterdir()) == ["cases-backup.db"]  # no temporary file left beside it
    restored = CaseStore(f"sqlite:///{out}")
    assert sorted(c.id for c in restored.list()) == ids
    assert {c.description for c in restored.list()} == {None}
    restored.close()
    store.close()


def test_a_backup_never_replaces_a_file_unasked_nor_the_store_itself(tmp_path):
    """OUT that exists is refused without --overwrite and kept as it was (an earlier backup); OUT naming the store's
    own file or its -wal file is refused even with it (the copy renamed over the open store would lose it)."""
    database = tmp_path / "cases.db"
    store = CaseStore(f"sqlite:///{database}")
    _draft(store, 1)
    url = f"sqlite:///{database}"
    earlier = tmp_path / "earlier.db"
    earlier.write_bytes(b"an earlier backup")
    refused = _backup(tmp_path, url, str(earlier))
    assert refused.exit_code == 2 and "pass --overwrite to replace it" in refused.output
    assert earlier.read_bytes() == b"an earlier backup"
    for own in (database, tmp_path / "cases.db-wal"):
        itself = _backup(tmp_path, url, str(own), "--overwrite")
        assert itself.exit_code == 2 and f"is the case store's own file ({database})" in itself.output, itself.output
    assert [c.violation_id for c in store.list()] == ["cam-01:z1:illegal_parking:t1"]
    replaced = _backup(tmp_path, url, str(earlier), "--overwrite")
    assert replaced.exit_code == 0 and replaced.output.strip() == f"wrote {earlier}: 1 case"
    store.close()


def test_a_backup_into_a_folder_that_is_not_there_is_refused_naming_it(tmp_path):
    """OUT in a folder that is not there (a backup disk not mounted: /mnt/backup/…) ended in sqlite3's traceback
    'unable to open database file'; it is refused in one line naming OUT and the folder, and no folder is made (on an
    unmounted disk's mount point it would put the backup on the store's own disk)."""
    database = tmp_path / "cases.db"
    store = CaseStore(f"sqlite:///{database}")
    _draft(store, 1)
    out = tmp_path / "mnt" / "backup" / "cases-2026-12-06.db"
    refused = _backup(tmp_path, f"sqlite:///{database}", str(out))
    assert refused.exit_code == 2, refused.output
    assert f"OUT {out}: folder {out.parent} does not exist (a backup disk not mounted?)" in refused.output
    assert not (tmp_path / "mnt").exists()
    store.close()


def test_a_postgresql_store_is_backed_up_with_pg_dump_and_restores(tmp_path, monkeypatch, postgres_url):
    """A PostgreSQL store is dumped by pg_dump -Fc, which pg_restore loads into a new database that opens with every
    case; without pg_dump on PATH the command says in one line what to run, the URL without a password."""
    from tests.conftest import new_database

    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore (PostgreSQL's client tools) are not installed")
    url = new_database(postgres_url)
    store = CaseStore(url)
    ids = sorted(_draft(store, n).id for n in range(3))
    out = tmp_path / "cases.dump"
    run = _backup(tmp_path, url, str(out))
    assert run.exit_code == 0, run.output
    restored_url = new_database(postgres_url)
    target = restored_url.replace("postgresql+psycopg://", "postgresql://", 1)
    subprocess.run(["pg_restore", "--no-owner", "-d", target, str(out)], check=True, capture_output=True, timeout=120)
    restored = CaseStore(restored_url)
    assert sorted(c.id for c in restored.list()) == ids
    restored.close()

    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    missing = _backup(tmp_path, url, str(tmp_path / "again.dump"))
    assert missing.exit_code == 2 and "pg_dump (PostgreSQL's client tools) is not on PATH" in missing.output
    assert f"pg_dump -Fc --file {tmp_path / 'again.dump'} 'postgresql://" in missing.output
    assert not (tmp_path / "again.dump").exists()
    store.close()
