"""Ctrl-C and SIGTERM for the console script, on the standard library alone.

`streetwatch.cli` installs these before it imports anything else (Typer and the command modules: about 0.3 s; a
command's own imports, OpenCV or SQLAlchemy, come later), so that a signal in a command's first moments is handled as
later ones are.
"""

from __future__ import annotations

import _thread
import signal
import sys

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
    if not getattr(sys.unraisablehook, "interrupts_again", False):
        sys.unraisablehook = _interrupting_again(sys.unraisablehook)


def _interrupting_again(previous):
    """A `sys.unraisablehook` that delivers the signal again when `stopped`'s KeyboardInterrupt was raised where Python
    cannot raise it: inside a weakref callback or a `__del__` (importlib's module locks have such callbacks, run at
    every import) Python prints it as 'Exception ignored' and goes on, so a command stopped there carried on as if no
    signal had come (serve stopped in its start-up imports started and served until killed). The signal is delivered
    again from another thread (`_thread.interrupt_main`: called here, the handler would run at once, inside the same
    callback), so its handler runs at the main thread's next point, out of the callback, where the interrupt stops the
    command (should it land in such a callback again, it comes here again); any other exception goes to `previous`."""
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _RECEIVED:
            _thread.start_new_thread(_thread.interrupt_main, (_STOPPED_BY["signal"],))
        else:
            previous(unraisable)

    hook.interrupts_again = True
    return hook


def signal_received() -> bool:
    """Whether Ctrl-C or SIGTERM came (`stop_like_ctrl_c`): a native module whose import it cut short turns the
    KeyboardInterrupt into an ImportError (scipy's `initialization failed`, then `already registered` at the next
    import), which is the interruption, not a fault."""
    return bool(_RECEIVED)


def interrupted_code() -> int:
    """The exit code of a command stopped by a signal, as a shell reports one: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + _STOPPED_BY["signal"]
