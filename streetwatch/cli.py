"""`streetwatch` console script: builds the Typer app from the command modules."""

from __future__ import annotations

import importlib

import typer

from detect.runtime_env import prepare_ultralytics_env

# The single list of command modules (streetwatch/commands/<name>.py, each with `register(app)`).
COMMAND_MODULES = [
    "detect",
    "models",
    "rules",
    "config",
    "bench",
    "evidence",
    "cases",
    "analytics",
    "dispatch",
    "triage",
    "watch",
    "serve",
    "data",
    "train",
    "verifier",
    "demo",
    "cityops",
]

app = typer.Typer(
    name="streetwatch",
    help="Find street stalls, shop-front spillover, illegal parking and flyposting in camera "
    "streams and photos, and send evidence-backed candidate cases to dispatch systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"streetwatch.commands.{_name}").register(app)


def main() -> None:
    prepare_ultralytics_env()
    try:
        app()
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: a real fault, keep its traceback
            raise
        # An --out under a file, a read-only or full disk, a folder without permission: every command
        # writes somewhere the user named, and the path with the system's reason says what to change.
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        reason = "exists and is not a folder" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        typer.secho(f"error: {paths}: {reason}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
