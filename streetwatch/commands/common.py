"""Options and helpers shared by several commands (one definition of each flag)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from detect.imageio import IMAGE_SUFFIXES, Unreadable, scan_folder


BackendOpt = Annotated[str, typer.Option("--backend", help="Inference backend: onnx (ONNX Runtime, no torch) or torch (Ultralytics/PyTorch).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda[:N] (or tensorrt for onnx).")]
ModelOpt = Annotated[str, typer.Option("--model", help="Model id from `streetwatch models list`, or a .pt/.onnx file.")]
ConfOpt = Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="Minimum detection confidence.")]
ImgszOpt = Annotated[int, typer.Option("--imgsz", min=32, help="Network input size in pixels (multiple of 32).")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line and exit non-zero (no traceback for user errors)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def list_inputs(paths: list[Path], suffixes: frozenset[str] | set[str] = IMAGE_SUFFIXES) -> tuple[list[Path], list[Unreadable]]:
    """Files as given plus, for folders, every file with a known suffix below them (sorted), and the
    folder entries that look like images but cannot be read, with the reason (GIF/SVG, broken links,
    special files; `detect.imageio.scan_folder`).

    Files named explicitly are kept whatever they are, so a mislabelled or special file is reported
    with its real problem when it is read instead of being skipped silently.
    """
    files: list[Path] = []
    refused: list[Unreadable] = []
    for p in paths:
        if p.is_dir():
            for item in scan_folder(p, suffixes):
                (refused if isinstance(item, Unreadable) else files).append(item)
        else:
            files.append(p)
    return files, refused


def expand_inputs(paths: list[Path], suffixes: frozenset[str] | set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The readable candidates of `list_inputs` (benchmarks: the refusals do not matter there)."""
    return list_inputs(paths, suffixes)[0]


SettingsOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="STREETWATCH_CONFIG",
                 help="Settings file (case store URL, evidence, storage, dispatch targets; see docs/cases-and-dispatch.md)."),
]


def settings_or_fail(path: Path | None):
    """The deployment settings, or one clear error line naming file, field and reason."""
    from detect.config_io import ConfigError
    from pipelines.settings import load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        fail(str(exc))
