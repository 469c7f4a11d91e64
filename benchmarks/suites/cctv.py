"""CCTV suite: cameras sustained at 1 frame/s with lag < 2 s, and the stage split.

Plug-in point for the CCTV monitoring pipeline (issue 6). Until `pipelines/` has the CCTV job this
suite is recorded as skipped. When it lands, replace the body of `run` with the pipeline's own
sustained-load measurement and return `VariantResult(suite="cctv", ...)` records (`unit="cameras"`,
lag percentiles and the stage split in `extra` / `stages_ms`); the table and `--compare` need
nothing else.
"""

from __future__ import annotations

from benchmarks.context import BenchContext
from benchmarks.record import VariantResult
from benchmarks.suites import SuiteUnavailable


def run(ctx: BenchContext) -> list[VariantResult]:
    raise SuiteUnavailable("pipeline not available yet (CCTV monitoring, issue 6)")
