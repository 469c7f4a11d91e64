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


def _run(root: Path, *args: str | Path | int, password: str | None = None) -> None:
    """Run a PostgreSQL tool for the server under `root`, as its user (`password`: the server asks for one)."""
    sudo = _as_server_user(root)
    env = {**os.environ, "LC_ALL": "C.UTF-8", **({"PGPASSWORD": password} if password else {})}
    done = subprocess.run([*sudo, *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def pg_ctl(root: Path, *args: str | Path) -> None:
    """`pg_ctl` on the server `postgres_server(root)` runs: `stop` takes it down while a test runs, `restart`
    brings it back on the same port (its options kept in postmaster.opts). The server's output goes to pg.log,
    never to the pipe this waits on."""
    _run(root, pg_bin() / "pg_ctl", "-D", root / "pgdata", "-l", root / "pg.log", "-w", *args)


@contextmanager
def postgres_server(root: Path, password: str | None = None) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; stops the server and its files afterwards. With `password` the
    server asks every client for it (scram-sha-256, as a city's does); the URL carries none."""
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found")
    data, port = root / "pgdata", free_port()
    user = "postgres" if _as_server_user(root) else getpass.getuser()
    auth = ["--auth=trust"]
    if password:
        (root / "pwfile").write_text(password)
        (root / "pwfile").chmod(0o644)  # read by initdb, which runs as `postgres` under root
        auth = ["--auth=scram-sha-256", f"--pwfile={root / 'pwfile'}"]
    _run(root, bindir / "initdb", "-D", data, "-U", user, *auth, "-E", "UTF8")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    pg_ctl(root, "-o", opts, "start")
    try:
        _run(root, bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", user, "cases", password=password)
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/cases"
    finally:
        if (data / "postmaster.pid").exists():  # a test may have stopped it (pg_ctl) and failed before restarting
            pg_ctl(root, "-m", "immediate", "stop")
