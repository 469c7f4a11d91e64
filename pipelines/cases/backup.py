"""A copy of the case store to restore from: SQLite's online backup, PostgreSQL's `pg_dump -Fc`.

A SQLite store in WAL mode keeps its latest changes in `cases.db-wal` beside the file until a checkpoint moves them
in, so a file copy of `cases.db` taken while anything has the store open can miss every recent case (0 of 20 in a
test) and a copy of both files taken at different moments can be inconsistent. SQLite's backup API copies the
database as one read transaction sees it, committed WAL frames included, while `serve` and the other commands go on
writing. The copy is written beside OUT and renamed onto it once whole (`replaced_atomically`), so a failed backup
leaves no file that looks like one. PostgreSQL's own tool is `pg_dump`; streetwatch runs it when it is on PATH.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa

from detect.config_io import replaced_atomically
from pipelines.cases.store import CaseStore, sqlite_file


class BackupError(RuntimeError):
    """A backup that was not written (OUT names the store itself, the copy failed, no pg_dump): one line saying why."""


def backup_sqlite(store: CaseStore, out: Path) -> int:
    """Write a consistent copy of the SQLite store to `out` while other connections read and write it; the number of
    cases in the copy, read back from it. `store` is best opened without migrating (`migrate_schema=False`): a backup
    taken before an upgrade must hold the store as the release before left it."""
    database = sqlite_file(store.url)
    if database is None:
        raise BackupError(f"case store {store.url}: not a SQLite file (an in-memory store has nothing to back up)")
    _check_not_the_store(out, Path(database))
    # engine.connect(), not raw_connection(): only a Connection's failure to connect goes through the store's error
    # handler, so a lost, empty or foreign file is CaseStoreUnreachable (one line, exit 2), not sqlite3's traceback
    source = store.engine.connect()
    try:
        with replaced_atomically(out) as tmp:
            try:
                dest = sqlite3.connect(tmp)
            except sqlite3.Error as exc:  # a folder it cannot write in: sqlite3 names no file, so OUT is named here
                raise BackupError(f"{out}: cannot write the copy in {out.parent}: {exc}; nothing was written") from None
            try:
                source.connection.driver_connection.backup(dest)  # all pages in one step: one read transaction's view
                return dest.execute("SELECT count(*) FROM cases").fetchone()[0]
            except sqlite3.Error as exc:
                raise BackupError(f"{out}: the copy of {database} failed: {exc}; nothing was written to {out}") from None
            finally:
                dest.close()
    finally:
        source.close()


def _check_not_the_store(out: Path, database: Path) -> None:
    """Refuse an OUT that is the store's own file or its -wal/-shm file: replacing it with the copy, under the
    connections that have it open, would lose or corrupt the store."""
    store_files = [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")]
    if any(out.resolve() == f.resolve() for f in store_files):
        raise BackupError(f"{out}: is the case store's own file ({database}); name a file elsewhere, best on another disk")


def libpq_url(url: str) -> tuple[str, str | None]:
    """The PostgreSQL store's URL as libpq (pg_dump, psql) reads it, without SQLAlchemy's driver name nor the
    password, and the password apart (None when the URL has none: $PGPASSWORD or ~/.pgpass give it): the URL may be
    shown, and a password on a command line is seen by every user of the machine (`ps`)."""
    parsed = sa.engine.make_url(url)
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), parsed.password


def pg_dump(pg_dump_exe: str, url: str, out: Path) -> None:
    """Run `pg_dump -Fc` of the store at `url` into `out` (a custom-format archive for `pg_restore`), written whole
    or not at all; BackupError with pg_dump's own last words when it fails."""
    target, password = libpq_url(url)
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    with replaced_atomically(out) as tmp:
        run = subprocess.run([pg_dump_exe, "-Fc", "--file", str(tmp), target], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            said = next((line.strip() for line in reversed(run.stderr.splitlines()) if line.strip()), f"exit {run.returncode}")
            raise BackupError(f"pg_dump of the case store {target} failed: {said}; nothing was written to {out}")
