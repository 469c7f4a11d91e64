"""How streetwatch's log lines look and which of them pass: one set-up for a command's own process and for the Ray
actors a `--ray` command starts, whose stderr Ray forwards to the driver's, so staff read the same lines in the
command's log whichever process wrote them. An actor's process has no handler of its own: without this only its
warnings came through (Python's last-resort handler, bare), never its INFO lines."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable

import phonenumbers
from phonenumbers import Leniency

from detect.phones import DEFAULT_REGION

FORMAT = "%(levelname)s %(name)s: %(message)s"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
"""A line's time, local with its offset (2026-12-07T17:30:00+0800): a log redirected to a file (cron, nohup, a
container's) had no times, so nobody could tell when a store went down or a job ended."""


def timed(line_format: str) -> str:
    """`line_format` with the time in front, except under systemd's journal (`JOURNAL_STREAM` set), which times
    every line itself: the same instant twice per line there."""
    return line_format if os.environ.get("JOURNAL_STREAM") else "%(asctime)s " + line_format
#: A run of 7 or more digits standing alone (a phone number, national or E.164, also after a URL-encoded `+` or an
#: area code and a hyphen: 021-61234567), not one inside a word: a case id (SW20261206-...), a platform's task number
#: (DCM-20261206001) stay as they are.
_DIGIT_RUN = re.compile(r"(?:(?<=%2B)|(?<=\d-)|(?<![A-Za-z0-9_-]))\d{7,}(?![A-Za-z0-9_])")


def mask_phones(text: str, region: str = DEFAULT_REGION) -> str:
    """`text` with each phone number written with the four digits before its last four as `*` (`138****5678`,
    `+86138****5678`, `138 **** 8000`, `+86 138-****-8000`), as Chinese offices print a number: a log is read by
    whoever runs the server, and keeps for years the numbers the call-out list (追呼/停机) holds for a while. A number
    is a run of 7 or more digits standing alone (national or E.164; `_DIGIT_RUN`) or what `phonenumbers` finds a valid
    number of `region` (the default phone region, CN) or with its country code, separators and all (400-820-8820,
    138 0013 8000: the run missed them, so they went out whole). Digits inside an id (SW20261206-…, DCM-20261206001),
    times and coordinates are kept: the line must still say which case."""
    spans = sorted([m.span() for m in _DIGIT_RUN.finditer(text)] +
                   [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=Leniency.VALID)])
    merged: list[list[int]] = []
    for start, end in spans:  # a run inside a number found whole (021-61234567's 61234567) is masked with it once
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = text[:start] + _masked(text[start:end]) + text[end:]
    return text


#: What ends or rewrites a line in a log: C0 and C1 controls, DEL, and Unicode's line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def loggable_name(name: str) -> str:
    """A name someone else chose (a photo's file name, a zip member's) as a log line can hold it: each control
    character written as its escape (`\\n`, `\\x1b`, `\\u2028`). Written as it came, a name holding a line break
    (`a.jpg\\nERROR …: all photos judged`) made a line of its own that reads as ours, and a terminal's escape
    rewrote what staff see; the rest of the name (Chinese, spaces) is kept as written."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), name)


def _masked(number: str) -> str:
    """`number` with the four digits before its last four as `*`, its other characters (+, separators) as written."""
    digits = [i for i, c in enumerate(number) if c.isdigit()]
    hidden = set(digits[-8:-4] if len(digits) >= 8 else digits[:-4])
    return "".join("*" if i in hidden else c for i, c in enumerate(number))


class MaskedTracebacks(logging.Formatter):
    """Our lines' format, each traceback's text through `mask_phones`: an error's message may carry what someone typed
    (PostgreSQL's `Key (number)=(13912345678) already exists`, a refusal quoting the value it refused), and a
    traceback goes to the log in full (`log.exception`: a route's bug, a failed job, a failed import). The line's own
    message is ours, written with what it may say already masked (`loggable_target`, `loggable_name`)."""

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return mask_phones(super().formatException(ei))


#: Libraries whose DEBUG lines say how they work, not what the run did, and come in floods: filelock four lines per lock
#: taken (a camera's `watch -v` logged them on every frame), PIL a line per plugin, matplotlib its font search, httpcore
#: every connection step. `-v` (DEBUG) shows ours and their INFO and above.
QUIET_AT_DEBUG = ("filelock", "PIL", "matplotlib", "httpcore")


def setup_logging(level: int = logging.INFO) -> None:
    """Our lines at `level` on stderr (once: a process already set up keeps its handler), tracebacks masked
    (`MaskedTracebacks`); Alembic's INFO (one line per plugin it loads, every time the case store is opened) only at
    DEBUG, so staff see what the run did, not how it started; `QUIET_AT_DEBUG`'s libraries never below INFO."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskedTracebacks(timed(FORMAT), TIME_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    if level > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in QUIET_AT_DEBUG:
        logging.getLogger(name).setLevel(max(level, logging.INFO))


class BoundedLog:
    """Which occurrences of a recurring failure get a log line: the first `first` of a run each, then one summary
    line per `every_s`. One rule for a camera's failed attempts while offline and its streams lost while flapping
    (pipelines.cctv.reader), and for the service's errors that every request may meet (`RecurringLog`), so none floods
    the log; the caller counts the run (and its metrics every occurrence, logged or not)."""

    EACH, SUMMARY = "each", "summary"

    def __init__(self, first: int, every_s: float) -> None:
        self.first, self.every_s = first, every_s
        self._logged_at = -math.inf  # monotonic time of the last line

    def due(self, n: int, now: float) -> str | None:
        """The line for the `n`th occurrence of a run at monotonic `now`: EACH, SUMMARY, or None for no line."""
        if n <= self.first:
            line = self.EACH
        elif now - self._logged_at >= self.every_s:
            line = self.SUMMARY
        else:
            return None
        self._logged_at = now
        return line


class RecurringLog:
    """A failure each request may meet while it lasts (the case store down, a setting not set that a page asks for on
    every click) logged by `BoundedLog`'s rule per `key`: a line each for the first `first` of a run, then one per
    `every_s` saying how many were not logged since the line before. A run ends after `every_s` without one, so the
    next failure after a quiet spell is logged in full again. The answers are the caller's, unchanged."""

    KEYS = 100  # runs kept before those ended are dropped

    def __init__(self, logger: logging.Logger, first: int = 3, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.first, self.every_s, self.clock = logger, first, every_s, clock
        self._runs: dict[str, tuple[BoundedLog, int, float, int]] = {}  # key: rule, run length, last seen, not logged
        self._lock = threading.Lock()  # requests are answered on several threads

    def error(self, key: str, msg: str, *args: object) -> None:
        """Log `msg % args` at ERROR if this occurrence of `key`'s failure is due a line."""
        with self._lock:
            now = self.clock()
            bounded, n, seen, unlogged = self._runs.get(key, (None, 0, -math.inf, 0))
            if bounded is None or now - seen >= self.every_s:
                bounded, n, unlogged = BoundedLog(self.first, self.every_s), 0, 0
            n += 1
            line = bounded.due(n, now)
            self._runs[key] = (bounded, n, now, 0 if line else unlogged + 1)
            if len(self._runs) > self.KEYS:  # keys made of messages: the ended runs are forgotten
                self._runs = {k: run for k, run in self._runs.items() if now - run[2] < self.every_s}
        if line is BoundedLog.SUMMARY:
            msg, args = msg + " (and %d more like it not logged in the last %d s)", (*args, unlogged, int(self.every_s))
        if line is not None:
            self.logger.error(msg, *args)
