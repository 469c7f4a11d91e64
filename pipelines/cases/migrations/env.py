"""Alembic environment of the case store: runs on the connection `migrate()` hands over (in its
transaction, under its lock), or on `-x url=...` when the `alembic` command is used by hand."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pipelines.cases.schema import VERSION_TABLE, metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                      compare_type=True, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the `alembic` command line: -x url=sqlite:///path.db
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -c pipelines/cases/alembic.ini -x url=sqlite:///cases.db ...")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
