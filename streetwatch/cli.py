"""`streetwatch` console script: builds the Typer app from the command modules."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import typer
from packaging.requirements import Requirement

from detect.runtime_env import prepare_ultralytics_env
from streetwatch.commands.common import interrupted_code, print_error, stop_like_ctrl_c

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


#: Said when a command without a Ctrl-C handler of its own is stopped (what it writes whole is never left half written).
INTERRUPTED = ("interrupted (已中断) before the end: what it printed above was done; a file it writes whole (an export, "
               "the call-out list, a score sheet, a report, a dataset version) is left as it was before the run")


def main() -> None:
    prepare_ultralytics_env()
    stop_like_ctrl_c()
    try:
        app()
    except SystemExit as exc:
        if not _unhandled_interrupt(exc):
            raise
        print_error(INTERRUPTED)
        raise SystemExit(interrupted_code()) from None
    except Exception as exc:
        message = _user_error(exc)
        if message is None:  # a real fault: keep its traceback
            raise
        print_error(message)
        raise SystemExit(2) from None


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
    whose schema this version will not migrate (newer than this code, or data the new schema cannot hold). A module
    of an extra not installed (uvicorn for `serve`, ultralytics for `models export`) names the extra to install."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and (extra := _extra_providing(exc.name)):
        return (f"this command needs the {extra} extra ({exc.name} is not installed): "
                f"pip install 'streetwatch[{extra}]'")
    if isinstance(exc, OSError) and exc.filename is not None:
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        reason = "exists and is not a folder" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        return f"{paths}: {reason}"
    from pipelines.cases.schema import SchemaRefused  # here, not at the top: they load SQLAlchemy
    from pipelines.cases.store import CaseStoreUnreachable

    if isinstance(exc, (CaseStoreUnreachable, SchemaRefused)):
        return str(exc)
    return None


#: Modules named unlike the distribution that installs them; the others are their distribution's name, `_` for `-`.
_DISTRIBUTION_OF = {"sklearn": "scikit-learn", "multipart": "python-multipart", "python_multipart": "python-multipart"}


def _extra_providing(module: str) -> str | None:
    """The extra of pyproject.toml that installs `module` (torch, api, postgres, ray), None for one of no extra.

    A deployer who installed less than everything (`pip install streetwatch`, no api) and ran `serve` met a
    ModuleNotFoundError traceback for uvicorn; the extra's name is what to install."""
    top = module.split(".")[0]
    wanted = _normal(_DISTRIBUTION_OF.get(top, top))
    for extra, requirements in _extras().items():
        if extra != "all" and any(_normal(Requirement(r).name) == wanted for r in requirements):
            return extra
    return None


def _extras() -> dict[str, list[str]]:
    """Each extra's requirements: a source checkout's pyproject.toml (what it declares now, where an editable
    install's metadata may be older), else the installed distribution's metadata."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"].get("optional-dependencies", {})
    try:
        requires = md.requires("streetwatch") or []
    except md.PackageNotFoundError:
        return {}
    extras: dict[str, list[str]] = {}
    for line in requires:
        if found := re.search(r"""extra\s*==\s*["']([^"']+)["']""", line):
            extras.setdefault(found.group(1), []).append(line.split(";")[0])
    return extras


def _normal(name: str) -> str:
    """PEP 503 name: `fastapi_offline` and `fastapi-offline` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    main()
