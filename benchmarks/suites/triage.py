"""Photo triage suite: photos/s and the stage split read/decode/infer/rules/evidence.

Plug-in point for the photo-triage pipeline (issue 5). Until `pipelines/` has the triage job this
suite is recorded as skipped. When it lands, replace the body of `run` with a loop that drives the
triage job over `ctx.files` (decode included: it is part of triage), time it with
`benchmarks.measure.timed_calls`, and return `VariantResult(suite="triage", ...)` records with
`unit="photos/s"` and the per-stage split in `stages_ms`; the table and `--compare` need nothing else.
"""

from __future__ import annotations

from benchmarks.context import BenchContext
from benchmarks.record import VariantResult
from benchmarks.suites import SuiteUnavailable


def run(ctx: BenchContext) -> list[VariantResult]:
    raise SuiteUnavailable("pipeline not available yet (photo triage, issue 5)")
