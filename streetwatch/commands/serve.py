"""`streetwatch serve` (the API service and review pages) and `streetwatch users` (API tokens)."""

from __future__ import annotations

import gc
import logging
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import SettingsOpt, fail, port_free_or_fail, setup_logging

users_app = typer.Typer(help="API tokens and their roles (inspector, reviewer, admin, integration).", no_args_is_help=True)
ROLES = "inspector, reviewer, admin or integration"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(users_app, name="users")


def _load(config):
    from detect.config_io import ConfigError
    from api.config import load_service

    try:
        return load_service(config)
    except ConfigError as exc:
        fail(str(exc))


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    config: SettingsOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the API service and the review pages (/ui/queue, /ui/upload, /ui/cameras, /ui/map, /ui/scores, /ui/reports, /ui/city; API docs at /docs).

    Uploads become triage jobs on a bounded worker pool; cases are read and reviewed in the case store of --config; tokens come from `streetwatch users add`.
    Ctrl-C / SIGTERM stop after the running triage jobs finish; jobs still queued (or cut off by a kill) resume at the next start.
    """
    setup_logging(verbose)
    import uvicorn

    settings, service = _load(config)
    port_free_or_fail(host, port)  # before the app starts up and resumes jobs
    app = _app_or_fail(settings, service, config)
    logging.getLogger("uvicorn.access").addFilter(AccessLogFilter())  # kept by uvicorn's logging set-up (dictConfig)
    logging.getLogger("uvicorn.error").addFilter(StartupTracebackFilter(app))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="debug" if verbose else "info", proxy_headers=False,
                                           log_config=_uvicorn_logging()))
    # The start-up's ~200k objects (modules, models, the app) live until exit: frozen, the garbage collector skips them
    # in every later collection, and Python's full collections at exit took 1-2 s after uvicorn had finished (logs
    # are flushed, the store closed and jobs finished as before: freezing frees nothing and skips no shutdown step).
    gc.freeze()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C and SIGTERM again once it has stopped (as uvicorn.run, exit 0)
        pass
    except SystemExit:  # uvicorn's exit 3: the app's start-up failed, or binding the port did after it
        if (error := getattr(app.state, "startup_error", None)) is not None:
            raise error from None  # the console script's line for a fault in what the user named (exit 2), else its traceback
        fail(f"the service did not start on {host}:{port} (the reason is logged above)")


def _uvicorn_logging() -> dict:
    """uvicorn's own logging set-up with our lines' time in front (`pipelines.logs.timed`): its start, stop and access
    lines were the only untimed ones of a service's log."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    from pipelines.logs import TIME_FORMAT, timed

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"], formatter["datefmt"] = timed(formatter["fmt"]), TIME_FORMAT
    return config


class StartupTracebackFilter(logging.Filter):
    """Drops the traceback uvicorn logs when the app's start-up fails (resuming the jobs in a `service.data_dir` that
    cannot be read): `serve` raises that error again once uvicorn stops, so the console script says it as every
    command does (`PATH: reason`, exit 2) rather than uvicorn's traceback and exit 3."""

    def __init__(self, app) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        failed = getattr(self.app.state, "startup_error", None) is not None
        return not (failed and isinstance(record.msg, str) and record.msg.startswith("Traceback"))


def _app_or_fail(settings, service, config):
    """The app, or one line naming the settings file when what it names cannot be used at start-up: an S3 store
    whose key variables are not set, a city with no code table (a traceback before, that named neither), an evidence
    key file that does not load (jobs wrote no cases before, under a warning), a `service.data_dir` that cannot be
    created or written (its path and reason alone before; a read-only one started and answered uploads 500)."""
    import os

    from api.app import create_app
    from detect.config_io import ConfigError
    from pipelines.evidence_store import StorageError
    from pipelines.settings import CONFIG_ENV

    try:
        return create_app(settings, service)
    except (ConfigError, StorageError) as exc:
        fail(f"{config or os.environ.get(CONFIG_ENV) or 'the default settings'}: {exc}")


class AccessLogFilter(logging.Filter):
    """Writes each request target in uvicorn's access log as `loggable_target` does: the signature of /evidence and
    /attachments links `***` (a signed attachment link read from the log opens its file for days), a phone number
    looked up or set on the call-out list `138****5678`."""

    def filter(self, record: logging.LogRecord) -> bool:
        from api.problems import loggable_target

        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):  # uvicorn's: client, method, target, version, status
            record.args = (*args[:2], loggable_target(args[2]), *args[3:])
        return True


def _accounts(config):
    from api.accounts import Accounts

    settings, _ = _load(config)
    return Accounts(settings.cases.url)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User (or system) name, shown as the reviewer of their actions "
                                                  "(at most 200 characters, no tab or line break; spaces around it are dropped).")],
    role: Annotated[str, typer.Option("--role", help=f"Role: {ROLES}.")] = "reviewer",
    expires_in: Annotated[str | None, typer.Option(
        "--expires-in", help="The token stops working after this long: whole days or hours, e.g. 90d or 12h "
                             "(default: until revoked).")] = None,
    config: SettingsOpt = None,
) -> None:
    """Create a token for NAME; it is printed once and only its hash is stored. A token of NAME that has expired is
    revoked and replaced by it (said on stderr); one that still works must be revoked first."""
    from api.accounts import AccountError, Role, parse_expires_in

    try:
        role_value = Role(role)
    except ValueError:
        fail(f"unknown role {role!r}: use {ROLES}")
    try:
        valid_for = None if expires_in is None else parse_expires_in(expires_in)
        info, token = _accounts(config).add(name, role_value, valid_for)
    except AccountError as exc:
        fail(str(exc))
    typer.echo(token)
    until = f", valid until {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""
    if (old := info.replaces) is not None:
        typer.secho(f"replaced {old.name}'s token {old.hint}… ({old.role}), which expired at {old.expires_at:%Y-%m-%d %H:%M} "
                    f"UTC: revoked (users list --all keeps it)", err=True)
    typer.secho(f"token for {info.name} ({info.role}) created{until}; it is shown only now", err=True)


@users_app.command("list")
def users_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    config: SettingsOpt = None,
) -> None:
    """Users with active tokens (name, role, token hint, created, expiry: `expires …`, or `expired …` for one past
    it, which stays listed until revoked or replaced by `users add`; --all adds revoked ones). Times in UTC."""
    for t in _accounts(config).list(include_revoked=all_):
        expiry = f"  {'expired' if t.expired() else 'expires'} {t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else ""
        revoked = f"  revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else ""
        typer.echo(f"{t.name}\t{t.role}\t{t.hint}…\t{t.created_at:%Y-%m-%d %H:%M}{expiry}{revoked}")


@users_app.command("revoke")
def users_revoke(
    name: Annotated[str, typer.Argument(help="User whose active token stops working now.")],
    config: SettingsOpt = None,
) -> None:
    """Revoke NAME's token (the record stays, for the audit trail)."""
    from api.accounts import AccountError, user_name

    try:
        name = user_name(name)  # as `users add` stored it
        n = _accounts(config).revoke(name)
    except AccountError as exc:
        fail(str(exc))
    typer.echo(f"revoked {counted(n, 'token')} of {name}")
