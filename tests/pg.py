"""A throw-away PostgreSQL server for tests: `initdb` + `pg_ctl start` in a temp dir on 127.0.0.1."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL bin folder with initdb, or None."""
    for d in PG_BIN_DIRS:
        if (d / "initdb").is_file():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(root: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` system user."""
    if os.geteuid() != 0:
        return []
    import pwd

    user = pwd.getpwnam("postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; stops the server and its files afterwards."""
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found")
    data, port = root / "pgdata", free_port()
    sudo = _as_server_user(root)
    user = "postgres" if sudo else getpass.getuser()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}

    def run(*args) -> None:
        done = subprocess.run([*sudo, *map(str, args)], capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    run(bindir / "initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    run(bindir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "pg.log", "-w", "start")
    try:
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", user, "cases")
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/cases"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
