"""`streetwatch` console script: builds the Typer app from the command modules.

It imports the standard library and the signal handling alone: `main` installs the handlers of Ctrl-C and SIGTERM
first and then imports Typer and the command modules (pydantic and rich under Typer: about 0.3 s), so that a signal in
a command's first moments says the one line and exits 130 (143) as a later one does, where it was a KeyboardInterrupt traceback
(or death without a word for SIGTERM). `from streetwatch.cli import app` (CliRunner) builds the app on first use.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, NoReturn

from streetwatch.interrupt import interrupted_code, signal_received, stop_like_ctrl_c

if TYPE_CHECKING:
    import typer

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


@functools.cache
def build_app() -> typer.Typer:
    """The Typer app with every command module's commands, built once (by `main`, or by the first `cli.app`)."""
    import typer

    app = typer.Typer(
        name="streetwatch",
        help="Find street stalls, shop-front spillover, illegal parking and flyposting in camera "
        "streams and photos, and send evidence-backed candidate cases to dispatch systems.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name in COMMAND_MODULES:
        importlib.import_module(f"streetwatch.commands.{name}").register(app)
    _paragraphs_as_lines(app)
    return app


def _paragraphs_as_lines(app: typer.Typer) -> None:
    """Each paragraph of every command's help as one line, for the terminal to wrap. Typer joins the first
    paragraph's lines but keeps the line breaks of the others, so a docstring wrapped at 110 columns broke mid-sentence
    in an 80-column terminal (`verifier eval --help`: "with an INT8 / export: compare its")."""
    import inspect

    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            paragraphs = inspect.cleandoc(command.callback.__doc__).split("\n\n")
            command.help = "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)
    for group in app.registered_groups:
        _paragraphs_as_lines(group.typer_instance)


def __getattr__(name: str):
    """`app` (PEP 562): built when first asked for, not at import, which `main` keeps free of the heavy imports."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Said when a command without a Ctrl-C handler of its own is stopped (what it writes whole is never left half written).
INTERRUPTED = ("interrupted (已中断) before the end: what it printed above was done; a file it writes whole (an export, "
               "the call-out list, a score sheet, a report, a dataset version) is left as it was before the run")


def main() -> None:
    stop_like_ctrl_c()  # before any import that takes time: a signal from here on is answered below
    try:
        from detect.runtime_env import prepare_ultralytics_env

        prepare_ultralytics_env()
        build_app()()
    except KeyboardInterrupt:  # during the imports, or while Typer built the commands, before its own Ctrl-C handling
        _exit_interrupted()
    except SystemExit as exc:
        if not _unhandled_interrupt(exc):
            raise
        _exit_interrupted()
    except Exception as exc:
        if signal_received():  # the interrupt turned into another error (a native import cut short)
            _exit_interrupted()
        message = _user_error(exc)
        if message is None:  # a real fault: keep its traceback
            raise
        from streetwatch.commands.common import print_error

        print_error(message)
        raise SystemExit(2) from None


def _exit_interrupted() -> NoReturn:
    """The one line and exit 130 (143 for SIGTERM) of a command stopped by a signal it did not handle.

    CPython (3.11) notes a KeyboardInterrupt that leaves code run by exec or eval of a string as unhandled, though a
    caller catches it, and under `python -m streetwatch.cli` kills the process with SIGINT once finalized: the line
    said, then death by SIGINT (143 lost), whenever the signal came while an import ran such code (dataclasses,
    typing's string annotations, numpy), as in serve's start-up. Each eval of a string clears that note first, so one
    here makes the exit the one said."""
    from streetwatch.commands.common import print_error

    print_error(INTERRUPTED)
    eval("None")
    raise SystemExit(interrupted_code()) from None


def _unhandled_interrupt(exc: SystemExit) -> bool:
    """Whether the command was stopped by Ctrl-C or SIGTERM that it did not handle itself: Typer turns such a
    KeyboardInterrupt into exit 130 without a word (`raise Exit(130) from` it), while a command that handles it
    (triage) says what was kept and exits through `fail`, its Exit caused by nothing."""
    return isinstance(getattr(exc.__context__, "__cause__", None), KeyboardInterrupt)


def _user_error(exc: Exception) -> str | None:
    """The one line for a fault in what the user named, the same for every command; None for anything else.

    An --out under a file, a read-only or full disk, a folder without permission: every command writes
    somewhere the user named, and the path with the system's reason says what to change. A case store
    that cannot be opened (cases.url: a server down, a SQLite path that cannot be opened) fails every
    command that opens it, and its URL (password masked) with the driver's reason says what to check; so does one
    whose schema this version will not migrate (at a revision it does not know, or data the new schema cannot hold), and one
    whose disk is full (where to free space). No model folder this user may write (a card, an export, a download, a
    promotion to write) names the folders tried and $STREETWATCH_MODELS. A module of an extra not installed (uvicorn
    for `serve`, ultralytics for `models export`) names the extra to install."""
    from streetwatch.commands.common import missing_extra

    if isinstance(exc, ModuleNotFoundError) and exc.name and (line := missing_extra(exc.name)):
        return line
    from detect.registry import NoWritableModelFolder

    if isinstance(exc, NoWritableModelFolder):  # no file name: the folders tried are in its message
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        reason = "exists and is not a folder" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        return f"{paths}: {reason}"
    from pipelines.cases.schema import SchemaRefused  # here, not at the top: they load SQLAlchemy
    from pipelines.cases.store import CaseStoreFull, CaseStoreUnreachable

    if isinstance(exc, (CaseStoreUnreachable, CaseStoreFull, SchemaRefused)):
        return str(exc)
    return None


if __name__ == "__main__":
    main()
