"""A case store copied whole into another database: a district's SQLite pilot (`cases.db`) moved to PostgreSQL.

A generic copier (pgloader) makes its own column types and no `case_store_version`, a database this code cannot
trust. Here the target is built by the same migrations that open every store (`schema.migrate`), and every table of
the schema (`schema.metadata`, in foreign-key order: a new table joins the copy without a change here) is copied
row for row through the tables' own types (a nullable JSON column's SQL NULL kept SQL NULL, its JSON null JSON
null), in batches, in one transaction on the target: a copy that fails or is refused leaves the target as it was. The
source is read in one read transaction, so a store still in use is copied as one moment saw it. PostgreSQL's
serial/identity sequences are set past the copied ids (else the next insert reuses id 1), and each table's rows are
counted on both sides before the target commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine

from pipelines.cases import schema
from pipelines.cases.store import CaseStore, make_engine, sqlite_file

BATCH_ROWS = 1000
"""Rows read and inserted at a time: a store of years of cases is never held in memory whole."""

Progress = Callable[[str, int, int], None]
"""Called after each batch with the table, its rows copied so far and its rows in all."""


class CopyRefused(RuntimeError):
    """A copy not made (a source not at this release's revision, a target already holding a store, a count that
    differs): one line saying which store and why; nothing was written to the target."""


@dataclass(frozen=True)
class CopySummary:
    tables: int
    rows: int
    counts: dict[str, int]  # rows per table, as counted in both stores


def store_url(text: str) -> str:
    """A store named as the `cases.url` setting names it (a SQLAlchemy URL), or a SQLite file's path
    (`cases.db`: `sqlite:////abs/cases.db`)."""
    if "://" in text:
        sa.engine.make_url(text)  # ArgumentError says what does not parse
        return text
    return f"sqlite:///{Path(text).expanduser().absolute()}"


def shown(url: str) -> str:
    """The URL as messages show it: its password masked."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def copy_store(source: str, target: str, *, batch: int = BATCH_ROWS, progress: Progress | None = None) -> CopySummary:
    """Copy every table of the store at `source` (at this release's head revision) into the database at `target`,
    migrated to head first and holding no rows, a new SQLite file in a folder that exists; CopyRefused (nothing
    written) otherwise."""
    if not CaseStore.exists(source):
        raise CopyRefused(f"no case store at {shown(source)}")
    made_file = (database := sqlite_file(target)) is not None and not Path(database).exists()
    if made_file and not (folder := Path(database).absolute().parent).is_dir():
        raise CopyRefused(f"target {shown(target)}: folder {folder} does not exist (a disk not mounted?); make it "
                          "first; nothing was written")  # made here, a failed copy removed the file and left the folders
    src, dst = make_engine(source), make_engine(target)
    try:
        with _snapshot(src) as read:
            _check_at_head(read, source)
            with dst.execution_options(writer=True).begin() as write:
                schema.migrate(write)
                _check_empty(write, target)
                counts = {t.name: _copy_table(read, write, t, batch, progress) for t in schema.metadata.sorted_tables}
                if write.dialect.name == "postgresql":
                    _reset_sequences(write)
                _check_counts(read, write, counts, target)
    except BaseException:
        if made_file:  # a new SQLite file the failed copy made: no empty store left where the operator named one
            dst.dispose()
            for path in (database, f"{database}-wal", f"{database}-shm"):
                Path(path).unlink(missing_ok=True)
        raise
    finally:
        src.dispose()
        dst.dispose()
    return CopySummary(len(counts), sum(counts.values()), counts)


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one moment of the store however long the copy takes (SQLite WAL: its first read
    fixes the snapshot; PostgreSQL: REPEATABLE READ); rolled back at the end, the source being only read."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin() as tx:
            yield conn
            tx.rollback()


def _check_at_head(conn: Connection, url: str) -> None:
    """Refuse a source whose tables are not this release's: an older store must be migrated first (opening it once
    with this release does), one at a revision this release does not know copied by the release that knows it."""
    newest = schema.head()
    if "cases" not in sa.inspect(conn).get_table_names():
        raise CopyRefused(f"source {shown(url)}: no `cases` table, not a case store; nothing was written")
    at = schema.current_revision(conn)
    if at == newest:
        return
    try:
        known = at is not None and ScriptDirectory.from_config(schema.alembic_config()).get_revision(at) is not None
    except CommandError:
        known = False
    if at is None or known:
        raise CopyRefused(f"source {shown(url)}: at revision {at or '(none: the first release)'}, not this release's "
                          f"{newest}: open it once with this release (e.g. streetwatch cases list with its settings), "
                          "which migrates it, then copy it; nothing was written")
    raise CopyRefused(f"source {shown(url)}: at revision {at}, unknown to this release (its newest: {newest}): copy it "
                      "with the streetwatch that last opened it; nothing was written")


def _check_empty(conn: Connection, url: str) -> None:
    """Refuse a target that holds rows in any of the store's tables: cases, or the tokens and registers beside them,
    whose ids the copy would collide with or mix into another deployment's."""
    held = {t.name: n for t in schema.metadata.sorted_tables
            if (n := conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())}
    if held:
        listed = ", ".join(f"{n} in {name}" for name, n in held.items())
        raise CopyRefused(f"target {shown(url)}: already holds a store ({listed}); copy into an empty database; "
                          "nothing was written")


def _copy_table(read: Connection, write: Connection, table: sa.Table, batch: int, progress: Progress | None) -> int:
    """Copy `table` in primary-key order, `batch` rows at a time, through the table's own column types (times,
    JSON); the number of rows copied."""
    total = read.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    done = 0
    nulls = {c.name: c.is_(None).label(f"{c.name} is sql null") for c in _nullable_json(table)}
    query = sa.select(table, *nulls.values()).order_by(*table.primary_key.columns)
    rows = read.execution_options(yield_per=batch).execute(query)
    for part in rows.partitions():
        write.execute(table.insert(), [_as_stored(row._mapping, table, nulls) for row in part])
        done += len(part)
        if progress is not None:
            progress(table.name, done, total)
    if progress is not None and total == 0:
        progress(table.name, 0, 0)
    return done


def _nullable_json(table: sa.Table) -> list[sa.Column]:
    """The table's nullable JSON columns (`cases.evidence_boxes`). Read through the type, a SQL NULL and a JSON null
    are both None, and None written back is JSON null (the store's own writes put that), so a copy would turn a SQL
    NULL into JSON null: the same in Python, but not to `IS NULL` nor to any query on the column."""
    return [c for c in table.columns if isinstance(c.type, sa.JSON) and c.nullable]


def _as_stored(row: sa.RowMapping, table: sa.Table, nulls: dict[str, sa.Label]) -> dict[str, object]:
    """A source row's values for the insert, a nullable JSON column's SQL NULL (`nulls`: its `IS NULL` read beside
    it) written as SQL NULL, its JSON null as JSON null: each as the source has it."""
    values = {c.name: row[c.name] for c in table.columns}
    values.update({name: sa.null() for name, is_null in nulls.items() if row[is_null.name]})
    return values


def _reset_sequences(conn: Connection) -> None:
    """Set each table's id sequence (serial or identity) past its largest copied id: rows inserted with their ids
    leave it at 1, and the first new row would then collide with a copied one."""
    for table in schema.metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                             f"coalesce(max({column.name}), 0) + 1, false) FROM {table.name}"),
                     {"table": table.name, "column": column.name})


def _check_counts(read: Connection, write: Connection, copied: dict[str, int], url: str) -> None:
    """Count each table's rows in both stores before the target commits; a difference is refused (rolled back)."""
    for table in schema.metadata.sorted_tables:
        there = write.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        here = read.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        if not here == there == copied[table.name]:
            raise CopyRefused(f"target {shown(url)}: {table.name} holds {there} rows after the copy, the source "
                              f"{here}; nothing was written")

