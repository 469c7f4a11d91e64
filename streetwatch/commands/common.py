"""Options and helpers shared by several commands (one definition of each flag)."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import logging
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from packaging.requirements import Requirement

from pipelines.wording import counted  # no import of its own
from streetwatch.interrupt import interrupted_code

if TYPE_CHECKING:
    from pipelines.triage.cases import SpoolRetry

BackendOpt = Annotated[str, typer.Option("--backend", help="Inference backend: onnx (ONNX Runtime, no torch) or torch (Ultralytics/PyTorch).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda[:N] (or tensorrt for onnx).")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Model id from `streetwatch models list`, or a .pt/.onnx file. Default: the promoted model "
                    "(`streetwatch models promote`), else yolo11n.")]
ConfOpt = Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="Minimum detection confidence.")]
ImgszOpt = Annotated[int, typer.Option("--imgsz", min=32, help="Network input size in pixels (multiple of 32).")]
VerifierOpt = Annotated[str | None, typer.Option(
    "--verifier", help="Verifier id or card (docs/verifier.md) that judges stalls, spillover, postings and zone-less parking; "
    "none = detector classes alone. Default: the promoted verifier.")]

#: triage's and patrol's: both run triage's bars (`pipelines.triage.pipeline.progress_bar`), drawn only on a terminal.
ProgressOpt = Annotated[bool, typer.Option(
    "--progress/--no-progress",
    help="Progress on stderr of the photos (patrol: frames) judged and then of the cases' evidence: a bar with rate and "
    "ETA on a terminal, else a log line every 30 s (a log file, systemd). --no-progress shows neither.")]

RayOpt = Annotated[str | None, typer.Option(
    "--ray", metavar="ADDRESS|local",
    help="Run on a Ray cluster: `local` starts one on this machine (127.0.0.1 only, stopped at the end), host:port joins "
    "one started with `ray start` or KubeRay (docs/scale-out.md). Needs the `ray` extra. Several nodes need PostgreSQL "
    "for cases and S3 for evidence.")]


def judgement_or_fail(verifier: str | None, taxonomy=None):
    """The judgement (verifier + taxonomy) the command runs with, or one clear error line."""
    from detect.judgement import load_judgement
    from detect.taxonomy import load_taxonomy
    from detect.verifier import VerifierError

    try:
        return load_judgement(verifier, taxonomy or load_taxonomy())
    except VerifierError as exc:
        fail(str(exc))


def judged_with(judgement) -> str:
    """Which verifier a run judges with (the promoted one unless named), its card and where its thresholds come from:
    without it, a run's figures could be anyone's, and after `verifier promote` (or going back) nothing said whether
    detect, triage or watch judged with the new heads. After `Judgement.check`, a promoted verifier that stepped aside
    for another detector is `none`, as the run judges."""
    from pipelines.verifier.operating_points import threshold_source

    if judgement.verifier is None:
        return "verifier none (detector classes alone)"
    heads = judgement.verifier.heads
    which = "" if judgement.chosen else ", the promoted one"
    return f"verifier {heads.card.id} ({heads.path}{which}; {threshold_source(heads.card)})"


def fail_interrupted(out: Path, what: str = "photos", *, done: str | None = None) -> NoReturn:
    """Triage's line when Ctrl-C or SIGTERM stopped it (`TriageInterrupted`): what was recorded and how to go on, one
    wording for every command that runs triage (triage, patrol), where Typer would exit 130 without a word. `done`
    says what was done instead where the frames finished so far are not the point (patrol stopped while sampling its
    video, before judging it, or while writing its cases and report)."""
    done = done or f"the {what} finished so far are in {out / 'results.jsonl'}"
    fail(f"interrupted: {done}; run the same command with --resume to continue", code=interrupted_code())


def fail_report_interrupted(out: Path, what: str = "photo") -> NoReturn:
    """The line of a run stopped once every input was recorded, while its cases and report were written
    (`ReportInterrupted`): the generic 'interrupted' line said nothing of --resume, and the photos-finished-so-far
    line would have a resume look like more judging. One wording for triage and patrol (`what`: photo, frame)."""
    fail_interrupted(out, done=f"every {what} is recorded in {out / 'results.jsonl'}; stopped while writing the cases and "
                               f"the report, which a resume writes without judging a {what} again (only those that failed "
                               "are tried again)")


def fail_unwritable(out: Path, exc: Exception, what: str = "photos") -> NoReturn:
    """The line of a run stopped because its output folder cannot be written (`OutputUnwritable`: a full disk, a
    read-only mount): which file and why, that nothing finished is lost, and how to go on, instead of a traceback.
    Exit 2, as an --out that cannot be created at the start."""
    fail(f"{exc}; the {what} finished so far are in {out / 'results.jsonl'}: free space (or make {out} writable), "
         "then run the same command with --resume")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line and exit non-zero (no traceback for user errors)."""
    print_error(message)
    raise typer.Exit(code)


def print_error(message: str) -> None:
    """The one form of an error line on stderr, for `fail` and for the console script's last resort."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


def print_warning(message: str) -> None:
    """The one form of a warning line on stderr: what a run did but someone should check (a register row imported
    to check, a skipped row), which read `error: warning: …` when printed as an error."""
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


def writable_or_fail(path: Path | None, option: str, *, overwrite: bool = True, example: str = "out.json") -> None:
    """Refuse an output file that is a folder, or under a file, before running: found only after the run,
    it lost the whole record (minutes to hours of benchmark or verifier evaluation, GPU time included). An existing
    file is refused too unless `overwrite`: it may be an earlier record (`benchmarks/results/`, the one `bench
    --compare` reads). A folder that is not there yet is made when the file is written."""
    if path is None:
        return
    if path.is_dir():
        fail(f"{option} {path}: is a folder; name the file to write (e.g. {path / example})")
    if path.exists() and not overwrite:
        fail(f"{option} {path}: exists (an earlier record?); name another file, or pass --overwrite to replace it")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        fail(f"{option} {path}: {parent} exists and is not a folder")


def port_free_or_fail(host: str, port: int) -> None:
    """Stop with one line unless `host:port` can be bound now. uvicorn binds only after the app's start-up has run,
    so `serve` on a port in use resumed the unfinished upload and patrol jobs another server was running, then
    printed uvicorn's log lines and exited 3; the probe socket is closed unused (it never listened)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(cannot_listen(host, port, exc))


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """The one wording of a port a server command cannot listen on (`serve`, `dispatch-sim`)."""
    return f"cannot listen on {host}:{port}: {exc.strerror or exc} (--host, --port)"


def setup_logging(verbose: bool = False) -> None:
    """Our INFO lines on stderr, DEBUG with `verbose` (`pipelines.logs.setup_logging`: the actors of a --ray command
    log the same way at the same level)."""
    from pipelines.logs import setup_logging as setup

    setup(logging.DEBUG if verbose else logging.INFO)


SettingsOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="STREETWATCH_CONFIG",
                 help="Settings file (case store URL, evidence, storage, dispatch targets; see docs/cases-and-dispatch.md)."),
]


def require_case_store(url: str) -> None:
    """Stop unless the case store at `url` is there, for a command that only reads or changes existing cases.
    A SQLite file that is not there is one error line: opening it would create an empty store (in the folder
    the command happens to run in) and report nothing, which reads as "no cases" rather than "wrong --config"."""
    from pipelines.cases import CaseStore

    if not CaseStore.exists(url):
        fail(f"no case store at {url} (cases.url; give the deployment's settings with --config or $STREETWATCH_CONFIG)")


def existing_store_or_fail(url: str):
    """The case store at `url`, opened once `require_case_store` found it there."""
    from pipelines.cases import CaseStore

    require_case_store(url)
    return CaseStore(url)


def settings_or_fail(path: Path | None):
    """The deployment settings, or one clear error line naming file, field and reason."""
    from detect.config_io import ConfigError
    from pipelines.settings import load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        fail(str(exc))


def say_spool(spool: SpoolRetry) -> None:
    """The bundles earlier runs left in the spool (storage was down): how many this run uploaded, and each one still
    waiting (this run's own too) with its reason, so nobody takes a quiet run for evidence safely stored. Triage and
    patrol runs alike (both retry the spool in triage's `finish`)."""
    if spool.uploaded:
        n = len(spool.uploaded)
        typer.echo(f"evidence spool: {counted(n, 'bundle')} an earlier run could not upload stored now")
    if spool.waiting:
        n = len(spool.waiting)
        typer.echo(f"evidence spool: {counted(n, 'bundle')} still waiting for the evidence store:")
        for case_id, reason in spool.waiting:
            typer.echo(f"  {case_id}: {reason}")


def missing_extra(module: str) -> str | None:
    """The one line for `module` not installed when an extra of pyproject.toml installs it, None for one of no extra:
    which extra to install, the same words for every command (`cli` answers a ModuleNotFoundError with it)."""
    extra = _extra_providing(module)
    if extra is None:
        return None
    return f"this command needs the {extra} extra ({module} is not installed): pip install 'streetwatch[{extra}]'"


def require_modules(*modules: str) -> None:
    """Stop with `missing_extra`'s line for the first of `modules` not installed: a command that imports one only
    minutes in (demo: uvicorn once the detector, media and simulator are up) checks them before doing anything."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            fail(missing_extra(module) or f"this command needs {module}, which is not installed")


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
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
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
