"""Ctrl-C and SIGTERM for the console script, on the standard library alone.

`streetwatch.cli` installs these before it imports anything else (Typer, the command modules, OpenCV and numpy: about
0.4 s), so that a signal in a command's first moments is handled as later ones are.
"""

from __future__ import annotations

import signal

#: The signal that stopped the command (`stop_like_ctrl_c`): SIGINT until another is received.
_STOPPED_BY = {"signal": signal.SIGINT}
#: The signals received (`stop_like_ctrl_c`), for `signal_received`.
_RECEIVED: set[signal.Signals] = set()


def stop_like_ctrl_c() -> None:
    """Make SIGTERM (systemd stopping a unit, `timeout`, `kill`) stop a command as Ctrl-C does: a KeyboardInterrupt
    where the command is, so what it does on Ctrl-C (triage's journal and its --resume line, a dataset version's
    hidden folder removed, an atomic write's temporary file removed) runs on SIGTERM too, instead of Python dying
    at once. Which signal it was is kept for `interrupted_code`. Commands that handle the signals themselves (watch,
    dispatch run, serve) replace these handlers."""
    def stopped(signum: int, _frame) -> None:
        _STOPPED_BY["signal"] = signal.Signals(signum)
        _RECEIVED.add(_STOPPED_BY["signal"])
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopped)


def signal_received() -> bool:
    """Whether Ctrl-C or SIGTERM came (`stop_like_ctrl_c`): a native module whose import it cut short turns the
    KeyboardInterrupt into an ImportError (scipy's `initialization failed`, then `already registered` at the next
    import), which is the interruption, not a fault."""
    return bool(_RECEIVED)


def interrupted_code() -> int:
    """The exit code of a command stopped by a signal, as a shell reports one: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + _STOPPED_BY["signal"]
