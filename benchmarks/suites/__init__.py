"""Running suites: each suite is one module with `run(ctx: BenchContext) -> list[VariantResult]`.

To add or finish a suite, write its module and list it in `benchmarks.context.SUITES` (where the
run's configuration checks suite names); nothing else in the harness changes.
A suite that cannot run on this machine or in this install raises `SuiteUnavailable(reason)` (or
fails to import), and the run records it as skipped with that reason instead of stopping. Suite
modules are imported only when they run, so one suite's missing dependency never breaks another.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from benchmarks.context import SUITES
from benchmarks.record import SuiteResult

if TYPE_CHECKING:
    from benchmarks.context import BenchContext

__all__ = ["SUITES", "SuiteUnavailable", "run_suite"]
log = logging.getLogger(__name__)


class SuiteUnavailable(Exception):
    """The suite cannot run here; the message is recorded as the reason it was skipped."""


def run_suite(name: str, ctx: BenchContext) -> SuiteResult:
    """Run one registered suite; skipped or failed suites come back as a result with the reason."""
    try:
        module = importlib.import_module(SUITES[name])
    except ImportError as exc:
        return SuiteResult(status="skipped", reason=f"cannot import {SUITES[name]}: {exc}")
    try:
        results = module.run(ctx)
    except SuiteUnavailable as exc:
        return SuiteResult(status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken suite must not lose the others' results
        log.exception("suite %s failed", name)
        return SuiteResult(status="error", reason=f"{type(exc).__name__}: {exc}")
    return SuiteResult(status="ok", results=results)
