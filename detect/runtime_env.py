"""Make Ultralytics safe to import on machines without internet.

Ultralytics fetches `Arial.ttf` from GitHub the first time it plots (training curves, annotated
predictions) unless the font is already in its config directory. We put matplotlib's DejaVuSans
there under both names it asks for, and give it a writable config directory, before the first
`import ultralytics`. `YOLO_OFFLINE=1` (set by the user or the test suite) additionally stops its
online checks; we never force it, so machines that are online still get Ultralytics' downloads.

Ultralytics logs (banners, export and training progress) to stdout; `import_yolo` sends them to
stderr, where our own logs go, so that a command's stdout holds only its output
(`streetwatch detect --json` prints JSON lines and nothing else, with either backend).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_prepared = False


def default_config_dir() -> Path:
    """Where Ultralytics keeps settings and fonts when the user did not choose."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streetwatch" / "ultralytics"


def prepare_ultralytics_env() -> Path:
    """Set `YOLO_CONFIG_DIR` if unset and place a local TTF font there. Idempotent.

    Returns the `Ultralytics` settings directory inside `YOLO_CONFIG_DIR`.
    """
    global _prepared
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir())))
    settings_dir = config_dir / "Ultralytics"
    if _prepared:
        return settings_dir
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    settings_dir.mkdir(parents=True, exist_ok=True)
    missing = [n for n in _FONT_NAMES if not (settings_dir / n).exists()]
    if missing:
        source = _local_ttf()
        if source is not None:
            for name in missing:
                shutil.copyfile(source, settings_dir / name)
    _prepared = True
    return settings_dir


class _CurrentStderr:
    """A stream writing to whatever `sys.stderr` is at the time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_ULTRALYTICS_HANDLER = "ultralytics.utils.set_logging"
"""The name Ultralytics gives its own console handler (other handlers, a test runner's, are left alone)."""


def ultralytics_logs_to_stderr() -> None:
    """Point Ultralytics' console handler (stdout by default) at stderr. Idempotent."""
    for handler in logging.getLogger("ultralytics").handlers:
        if handler.get_name() == _ULTRALYTICS_HANDLER and isinstance(handler, logging.StreamHandler):
            handler.setStream(_CurrentStderr())


def import_yolo():
    """Ultralytics' `YOLO` class, imported offline-safe (`prepare_ultralytics_env`) with its logs on stderr."""
    prepare_ultralytics_env()
    from ultralytics import YOLO

    ultralytics_logs_to_stderr()
    return YOLO


def _local_ttf() -> Path | None:
    """A TTF font that ships with matplotlib (a dependency of ultralytics and supervision)."""
    try:
        import matplotlib
    except ImportError:
        return None
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return font if font.exists() else None
