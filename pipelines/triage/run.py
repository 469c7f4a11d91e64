"""A whole triage run: list inputs, stream photos through the pipeline, then group and report.

Grouping, cases and the report come after the stream because near-duplicates can be anywhere in
the input; they are rebuilt from `results.jsonl` each time, so a resumed run reports on all
photos of the run, not only on those of its last part.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from detect.cityzones import load_city_zones
from detect.engine import Detector, load_detector
from detect.evidence.builder import VerifierInfo
from detect.evidence.keys import SigningKeys
from detect.imageio import missing_reason
from detect.judgement import Judgement, load_judgement
from detect.rules import PhotoRules
from detect.taxonomy import Taxonomy
from pipelines.cases.store import CaseStore
from pipelines.evidence_store import EvidenceStore
from pipelines.settings import Settings, load_settings
from pipelines.triage.analyse import Analyser
from pipelines.triage.cases import CasesUnavailable, SpoolRetry, TriageCases, Withdrawals, open_triage_cases, violation_id
from pipelines.grid import GridCells, load_grid
from pipelines.triage.grouping import Group, group_members
from pipelines.triage.journal import RESULTS, WITHDRAW, InputGone, Journal, settle_withdrawals
from pipelines.triage.pipeline import (PlainProgress, ReportInterrupted, RunStats, TriageInterrupted, detector_threads,
                                      process_photos, progress_bar)
from pipelines.triage.record import PhotoRecord
from pipelines.triage.report import CASES_CSV, REPORT, CaseRef, Tally, collect_members, write_csv, write_report
from pipelines.triage.settings import TriageSettings
from pipelines.triage.sources import PhotoSource, Refused, SourceReadError, expand_sources

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
    withdrawals: Withdrawals = field(default_factory=Withdrawals)  # cases drafted from photos replaced since
    spool: SpoolRetry = field(default_factory=SpoolRetry)  # bundles earlier runs left in the spool: uploaded, still waiting
    judgement: Judgement | None = None  # what judged this run's photos: the verifier the command says it judged with

    @property
    def readable(self) -> int:
        """Photos readable across all runs in this folder (0 means the exit code is an error)."""
        return self.tally.ok


class PhotoRunner(Protocol):
    """Where a run's per-photo steps run: worker threads in this process (`LocalPhotos`, the
    default) or a Ray cluster (`pipelines.cluster.triage.RayPhotos`). Both feed the same writer."""

    def load_detector(self, settings: TriageSettings, features: bool) -> Detector:
        """The detector whose model the run records (cases, report); raises on a bad model before any photo is read."""

    def process(self, sources: list[PhotoSource | Refused], settings: TriageSettings, detector: Detector, analyser: Analyser,
                journal: Journal, grid: GridCells | None, judgement: Judgement, show_progress: bool) -> RunStats:
        """Record every listed input in the journal (see `pipelines.triage.pipeline.process_photos`)."""


class LocalPhotos:
    """Worker threads in this process (`settings.workers`)."""

    def load_detector(self, settings: TriageSettings, features: bool) -> Detector:
        return triage_detector(settings, features=features)

    def process(self, sources: list[PhotoSource | Refused], settings: TriageSettings, detector: Detector, analyser: Analyser,
                journal: Journal, grid: GridCells | None, judgement: Judgement, show_progress: bool) -> RunStats:
        return process_photos(sources, settings, detector, analyser, journal, grid, judgement=judgement, show_progress=show_progress)


def run_triage(
    inputs: list[Path],
    settings: TriageSettings,
    *,
    detector: Detector | None = None,
    taxonomy: Taxonomy | None = None,
    deployment: Settings | None = None,
    show_progress: bool = True,
    case_writer: TriageCases | None = None,
    photos: PhotoRunner | None = None,
    keys: SigningKeys | None = None,
    store: CaseStore | None = None,
    evidence: EvidenceStore | None = None,
) -> TriageResult:
    """Triage `inputs` into `settings.out` (see docs/triage.md).

    `deployment` holds the case store, evidence and dispatch settings and the rules' knobs
    (`pipelines.settings`; the defaults when None). Configuration errors (zones, grid, model, evidence key when cases are
    required, dispatch target) raise before any photo is read. `case_writer` replaces the one the
    settings would open (patrol video writes its cases through its own). `photos`: where the
    per-photo steps run (default: worker threads here; `pipelines.cluster.triage.RayPhotos`: a Ray cluster). `keys`:
    the evidence keys `check_keys` loaded, which the case writer signs with (None: it loads them). `store`: the open
    case store of `deployment.cases` the case writer writes through (`serve`'s own; None: it opens one); `evidence`: the
    open evidence store it puts bundles in (`serve`'s own; None: it opens one).
    """
    deployment = deployment or load_settings()
    taxonomy = taxonomy or deployment.load_taxonomy()
    city_zones = load_city_zones(settings.scene_zones, taxonomy, settings.timezone) if settings.scene_zones else None
    grid = load_grid(settings.grid, taxonomy) if settings.grid else None
    judgement = load_judgement(settings.verifier, taxonomy)
    photos = photos or LocalPhotos()
    journal = Journal(settings.out, resume=settings.resume)
    finished = False
    try:
        refuse_gone_inputs(inputs, journal)
        detector = detector or photos.load_detector(settings, judgement.needs_features)
        judgement.check(detector)
        case_writer = case_writer or _case_writer(settings, deployment, detector, taxonomy, keys, store, evidence)
        verifier = VerifierInfo.of(judgement)
        if case_writer is not None:
            case_writer.judged_by(verifier)
        analyser = Analyser(PhotoRules(taxonomy=taxonomy, city_zones=city_zones, settings=deployment.rules), taxonomy, settings.out,
                            settings.thumb_side, detector.model_id, verifier)
        sources = expand_sources(inputs)
        _say_resumed(journal, sources, settings.out)
        stats = photos.process(sources, settings, detector, analyser, journal, grid, judgement, show_progress)
        try:  # every input recorded: a stop from here on is one the resume takes up without judging a photo again
            gone = gone_from_inputs(inputs, sources, journal)
            stats.skipped, stats.gone = stats.skipped + gone, stats.gone + gone
            judge_copies(journal, sources, stats,
                         lambda again: photos.process(again, settings, detector, analyser, journal, grid, judgement, show_progress))
        except TriageInterrupted:
            raise
        except KeyboardInterrupt:  # every input recorded, their copies being looked up: the resume goes on from there
            raise TriageInterrupted() from None
        finished = True
    finally:
        journal.close(drop=finished)  # stopped part way: superseded records stay for the resume that finishes
    try:
        return finish(settings, stats, detector, case_writer, show_progress=show_progress, replaced=journal.replaced,
                      class_names=taxonomy.class_names_zh, judgement=judgement)
    except KeyboardInterrupt:
        raise ReportInterrupted() from None


def refuse_gone_inputs(inputs: list[Path], journal: Journal) -> None:
    """`InputGone` for an input folder or archive that is not there now while the earlier runs read photos from it:
    an unmounted stick or a path resumed from another folder, not photos filed away one by one (those keep their
    results: `Journal.judged_before`). Going on would add its "not found" to the results of a run it does not
    concern; refused before any photo is read or record written, the earlier results stand as they were."""
    for given in inputs:
        given = given.absolute()  # as `expand_sources` names it
        if (why := missing_reason(given)) is not None and (n := journal.recorded_under(str(given))):
            raise InputGone(f"{given}: {why}, and the run in {journal.path.parent} read {n} photo{'' if n == 1 else 's'} "
                            "from it; nothing was changed: put it back (mount the drive, fix the path) and resume, "
                            "or resume without it to keep the results it gave")


def gone_from_inputs(inputs: list[Path], sources: list[PhotoSource | Refused], journal: Journal) -> int:
    """How many photos judged earlier inside a folder or archive given again are no longer listed in it (deleted or
    moved since): their results are kept, as a file named and not found keeps its own (`Journal.judged_before`), and
    they are counted as it is, so the summary says so; not listed, they were counted nowhere. Copies of a photo
    changed since are not: `judge_copies` reads them where their records say."""
    inside = tuple(form for given in inputs for form in (str(given.absolute()).rstrip(os.sep) + os.sep,
                                                          f"{given.absolute()}!"))
    listed = {s.name for s in sources} | set(journal.copies_of_changed())
    return sum(source.startswith(inside) and source not in listed and journal.judged_before(source)
               for source in journal.done_sources)


def judge_copies(journal: Journal, sources: list[PhotoSource | Refused], stats: RunStats,
                 process: Callable[[list[PhotoSource | Refused]], RunStats]) -> None:
    """Judge the inputs recorded as duplicates of a photo replaced since (`Journal.copies_of_changed`): an earlier
    run's (skipped), or this run's, met before the photo that held their content was found changed. Without this,
    their content's result would go with the superseded record, and they would stay copies of another photo. Those
    this run does not list (an earlier run's input not named now) are read where their records say they are: one
    that cannot be read there gets an error saying it needs judging (`Journal.why_unread`)."""
    copies = journal.copies_of_changed()
    if not copies:
        return
    listed = [s for s in sources if isinstance(s, PhotoSource) and s.name in copies]
    gone = sum(isinstance(s, Refused) and s.name in copies for s in sources)  # skipped as judged and no longer there
    earlier = sum(s.name in journal.done_sources for s in listed)
    journal.forget(copies)
    named = {s.name for s in listed}
    again = [*listed, *(_recorded_at(journal, name, record) for name, record in copies.items() if name not in named)]
    log.info("%d inputs recorded as duplicates of photos changed since are judged themselves (%d of them read where "
             "their records say, not listed now)", len(again), len(again) - len(listed))
    stats.add(process(again), skipped=earlier + gone, gone=gone, duplicates=len(listed) - earlier)


def _recorded_at(journal: Journal, name: str, record: PhotoRecord) -> PhotoSource | Refused:
    """The input of `record` where the record says it is (`PhotoSource.from_locator`), or refused with why not."""
    try:
        return PhotoSource.from_locator(record)
    except SourceReadError as exc:
        return Refused(name, journal.why_unread(name, str(exc)))


def _say_resumed(journal: Journal, sources: list[PhotoSource | Refused], out: Path) -> None:
    """Log what a resumed run takes over: the earlier records, and how many inputs that failed there it tries
    again (a refusal for the same reason is not a retry: the listing has just said so again)."""
    if not journal.previous:
        return
    again = (s.name for s in sources if isinstance(s, PhotoSource) or not journal.refused_before(s.name, s.reason))
    log.info("resuming %s: %d records of earlier runs; %d inputs that failed there are tried again", out, journal.previous,
             journal.retries(again))


def _case_writer(settings: TriageSettings, deployment: Settings, detector: Detector, taxonomy: Taxonomy,
                 keys: SigningKeys | None, store: CaseStore | None = None,
                 evidence: EvidenceStore | None = None) -> TriageCases | None:
    """The case writer the settings ask for; None when cases are off (or optional and impossible)."""
    wanted = settings.cases if settings.dispatch_target is None else True
    if wanted is False:
        return None
    try:
        return open_triage_cases(deployment, detector, taxonomy, settings.out, settings.dispatch_target, keys=keys, store=store,
                                 evidence=evidence)
    except CasesUnavailable as exc:
        if wanted:
            raise
        log.warning("no candidate cases written, report only: %s", exc)
        return None


def triage_detector(settings: TriageSettings, features: bool | None = None) -> Detector:
    """The detector as triage runs it: one intra-op thread per worker on CPU (see pipeline.py),
    with the neck map the verifier reads unless the verifier is off."""
    features = (str(settings.verifier).lower() != "none") if features is None else features
    threads = detector_threads(settings.workers, settings.device) if settings.backend == "onnx" else None
    return load_detector(settings.model, backend=settings.backend, device=settings.device, conf=settings.conf,
                         imgsz=settings.imgsz, threads=threads, max_batch=1, features=features)


def finish(settings: TriageSettings, stats: RunStats, detector: Detector, case_writer: TriageCases | None = None,
           *, show_progress: bool = True, replaced: list[PhotoRecord] | None = None,
           class_names: Mapping[str, str] | None = None, judgement: Judgement | None = None) -> TriageResult:
    """Group all recorded positives, write cases (optional), cases.csv and report.html. `replaced`: judged records
    this run or an earlier one superseded (`Journal.replaced`), whose candidate cases are withdrawn first
    (`TriageCases.withdraw`); without cases they are kept (`journal.WITHDRAW`) for the next run that writes them.
    `class_names`: the taxonomy's Chinese class names, for the report's captions (`Taxonomy.class_names_zh`).
    `judgement`: what judged the photos (after `Judgement.check`): the report's header names its verifier."""
    out = settings.out
    results = out / RESULTS
    members, tally = collect_members(results)
    withdrawals = Withdrawals()
    if case_writer is not None and replaced:
        withdrawals = case_writer.withdraw(replaced, {violation_id(m) for m in members})
        settle_withdrawals(out)
    elif replaced:
        log.warning("%d photo%s replaced since judged: candidate cases drafted from what they held are withdrawn by the "
                    "next run in %s that writes cases (%s keeps them)", len(replaced), "" if len(replaced) == 1 else "s",
                    out, WITHDRAW)
    groups = group_members(members, settings.group_window_s, settings.group_radius_m, settings.group_phash_bits,
                           settings.group_span_m)
    refs = [CaseRef() for _ in groups]
    uploaded = case_writer.retry_spool() if case_writer is not None else []  # groups or not
    if case_writer is not None and groups:
        with progress_bar(enabled=show_progress, label="cases") as bar:
            task = bar.add_task("cases", total=len(groups), notes="evidence bundles")
            plain = PlainProgress.when_no_terminal(bar, task, show_progress, label="cases", items="cases", unit="cases")
            refs = case_writer.write(groups, on_case=lambda: (bar.advance(task), plain()))
    spool = case_writer.spooled(uploaded) if case_writer is not None else SpoolRetry()  # this run's bundles too
    write_csv(out / CASES_CSV, groups, refs, settings.tz)
    run = {**detector.describe(), "finished": datetime.now(UTC).astimezone(settings.tz).strftime("%Y-%m-%d %H:%M:%S"),
           "verifier": judgement and (judgement.verifier.heads.card.id if judgement.verifier else "none")}
    write_report(out / REPORT, results, groups, refs, tally, run, settings.tz, settings.report_max_cases, class_names)
    return TriageResult(stats, tally, groups, refs, out,
                        {"report": out / REPORT, "results": results, "cases": out / CASES_CSV}, withdrawals,
                        spool, judgement)
