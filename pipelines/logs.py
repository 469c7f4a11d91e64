"""How streetwatch's log lines look and which of them pass: one set-up for a command's own process and for the Ray
actors a `--ray` command starts, whose stderr Ray forwards to the driver's, so staff read the same lines in the
command's log whichever process wrote them. An actor's process has no handler of its own: without this only its
warnings came through (Python's last-resort handler, bare), never its INFO lines."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Our lines at `level` on stderr (once: a process already set up keeps its handler); Alembic's INFO (one line per
    plugin it loads, every time the case store is opened) only at DEBUG, so staff see what the run did, not how it
    started."""
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT)
    if level > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)
