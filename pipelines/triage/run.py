"""A whole triage run: list inputs, stream photos through the pipeline, then group and report.

Grouping, cases and the report come after the stream because near-duplicates can be anywhere in
the input; they are rebuilt from `results.jsonl` each time, so a resumed run reports on all
photos of the run, not only on those of its last part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detect.cityzones import load_city_zones
from detect.engine import Detector, load_detector
from detect.rules import PhotoRules
from detect.taxonomy import Taxonomy, load_taxonomy
from pipelines.triage.analyse import Analyser
from pipelines.triage.grid import load_grid
from pipelines.triage.grouping import Group, group_members
from pipelines.triage.journal import Journal
from pipelines.triage.pipeline import RunStats, detector_threads, process_photos
from pipelines.triage.report import CASES_CSV, REPORT, CaseRef, Tally, collect_members, write_csv, write_report
from pipelines.triage.settings import TriageSettings
from pipelines.triage.sources import expand_sources

log = logging.getLogger(__name__)


@dataclass
class TriageResult:
    """What a run produced: this run's counts, all-runs tally, the ranked cases and output files."""

    stats: RunStats
    tally: Tally
    groups: list[Group]
    refs: list[CaseRef]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def readable(self) -> int:
        """Photos readable across all runs in this folder (0 means the exit code is an error)."""
        return self.tally.ok


def run_triage(
    inputs: list[Path],
    settings: TriageSettings,
    *,
    detector: Detector | None = None,
    taxonomy: Taxonomy | None = None,
    case_writer: Any = None,
    show_progress: bool = True,
) -> TriageResult:
    """Triage `inputs` into `settings.out` (see docs/triage.md).

    Config errors (zones, grid, model) raise before any photo is read. `case_writer`, when
    given, turns ranked groups into case-store cases (see `pipelines.triage.cases`).
    """
    taxonomy = taxonomy or load_taxonomy()
    city_zones = load_city_zones(settings.scene_zones, taxonomy) if settings.scene_zones else None
    grid = load_grid(settings.grid) if settings.grid else None
    journal = Journal(settings.out, resume=settings.resume)
    try:
        detector = detector or triage_detector(settings)
        analyser = Analyser(PhotoRules(taxonomy=taxonomy, city_zones=city_zones), taxonomy, settings.out,
                            settings.thumb_side, detector.model_id)
        stats = process_photos(expand_sources(inputs), settings, detector, analyser, journal, grid,
                               show_progress=show_progress)
    finally:
        journal.close()
    return finish(settings, stats, detector, case_writer)


def triage_detector(settings: TriageSettings) -> Detector:
    """The detector as triage runs it: one intra-op thread per worker on CPU (see pipeline.py)."""
    threads = detector_threads(settings.workers, settings.device) if settings.backend == "onnx" else None
    return load_detector(settings.model, backend=settings.backend, device=settings.device, conf=settings.conf,
                         imgsz=settings.imgsz, threads=threads, max_batch=1)


def finish(settings: TriageSettings, stats: RunStats, detector: Detector, case_writer: Any = None) -> TriageResult:
    """Group all recorded positives, write cases (optional), cases.csv and report.html."""
    out = settings.out
    results = out / "results.jsonl"
    members, tally = collect_members(results)
    groups = group_members(members, settings.group_window_s, settings.group_radius_m, settings.group_phash_bits)
    refs = case_writer.write(groups) if case_writer is not None else [CaseRef() for _ in groups]
    write_csv(out / CASES_CSV, groups, refs, settings.tz)
    run = {**detector.describe(), "finished": datetime.now(UTC).astimezone(settings.tz).strftime("%Y-%m-%d %H:%M:%S")}
    write_report(out / REPORT, results, groups, refs, tally, run, settings.tz, settings.report_max_cases)
    return TriageResult(stats, tally, groups, refs, out,
                        {"report": out / REPORT, "results": results, "cases": out / CASES_CSV})
