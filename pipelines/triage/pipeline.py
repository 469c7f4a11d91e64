"""The streaming part of a triage run: read + detect -> judge and record, overlapped and bounded.

    worker threads (--workers)                       main thread      writer thread
    bytes, SHA-256, reduced decode, EXIF, detect ──► in input order ──► photo rules, thumbnail,
    (at most `window` photos in flight)              duplicates         JSONL record, progress

Each worker reads, decodes and runs the detector on its own photo. The image decoders (OpenCV,
Pillow) and ONNX Runtime release the GIL, so on a CPU the workers are parallel inference streams sharing one
session with one intra-op thread each (`detector_threads`): on the 2-core reference machine that
is ~20% faster than one stream with two threads, which spends its time synchronising and
spin-waiting while decoding competes for the same cores. Backends that are not safe to call from
several threads (torch) are serialised by a lock; decoding still overlaps. At most `window`
photos are in flight and the writer's inbox is bounded, so memory does not grow with the number
of photos; every result goes straight to `results.jsonl`.

A photo's steps are `PhotoSteps` and the main loop is `record_outcomes`, which does not care where
the steps ran: `pipelines.cluster.triage` runs the same steps on a Ray cluster and feeds the same loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import supervision as sv
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from detect.engine import Detector
from detect.engine.profile import StageProfile
from detect.judgement import Judgement
from detect.verifier import Verdicts
from pipelines.triage.analyse import Analyser
from pipelines.grid import GridCells
from pipelines.logs import loggable_name
from pipelines.triage.journal import Journal, OutputUnwritable
from pipelines.triage.photos import Photo, Skipped, error_record, load_photo
from pipelines.triage.record import PhotoRecord, RecordStatus
from pipelines.triage.settings import TriageSettings
from pipelines.triage.sources import ArchiveCache, PhotoSource, Refused
from pipelines.triage.text import PhotoText
from pipelines.wording import counted

log = logging.getLogger(__name__)

#: Stages timed per photo: read (bytes + SHA-256), decode (reduced pixels + EXIF), infer (detector),
#: verify (verifier heads, evidence regions), ocr (text, photos that need it), rules (findings),
#: evidence (thumbnail + perceptual hash of positives).
STAGES = ("read", "decode", "infer", "verify", "ocr", "rules", "evidence")


class TriageInterrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C); every photo finished so far is in results.jsonl."""


class ReportInterrupted(KeyboardInterrupt):
    """Stopped (Ctrl-C) once every photo was recorded, while the cases, cases.csv and the report were written
    (`run.finish`): a resume judges no photo again and writes them (its own cases found, not doubled)."""


@dataclass
class RunStats:
    """Counts of this run (records of earlier runs are `skipped`, of which `gone` were judged and are no longer
    there and `unreadable` were judged and cannot be read now; inputs that failed in them are tried again:
    `retried`, of which `recovered` were judged this time; inputs judged in them whose content is not the same
    now are judged again: `changed`, of which `changed_unreadable` are unreadable now)."""

    listed: int = 0
    skipped: int = 0
    gone: int = 0
    unreadable: int = 0
    retried: int = 0
    recovered: int = 0
    changed: int = 0
    changed_unreadable: int = 0
    ok: int = 0
    positives: int = 0
    errors: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0
    #: Wall seconds per stage, summed over the worker and writer threads (they overlap).
    stages: StageProfile = field(default_factory=lambda: StageProfile(seconds=dict.fromkeys(STAGES, 0.0)))

    @property
    def recorded(self) -> int:
        return self.ok + self.errors + self.duplicates

    def add(self, other: RunStats, *, skipped: int, duplicates: int, gone: int = 0) -> None:
        """The counts of a second pass over some of the same inputs (`run.judge_copies`), `skipped` of which this
        one skipped (`gone` of those as no longer there) and `duplicates` recorded as duplicates: those now count as
        the second pass recorded them."""
        self.skipped -= skipped
        self.gone -= gone
        self.duplicates -= duplicates
        for name in ("ok", "positives", "errors", "duplicates", "changed", "changed_unreadable", "elapsed_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for stage, seconds in other.stages.seconds.items():
            self.stages.add(stage, seconds)

    @property
    def rate(self) -> float:
        """Photos recorded per second of this run (decode + detect + rules + writing)."""
        return self.recorded / self.elapsed_s if self.elapsed_s else 0.0

    def stage_ms(self) -> dict[str, float]:
        """Milliseconds per recorded photo in each stage: where the time goes. Workers run in
        parallel, so the stages add up to more than the wall time per photo (1 / rate)."""
        n = max(self.recorded, 1)
        return {stage: round(s * 1000 / n, 3) for stage, s in self.stages.seconds.items()}


class Pace:
    """The rate of the inputs a run records itself, over the last `window_s` seconds. A resumed run's inputs recorded
    earlier are skipped by the thousand a second, and rich's own speed counted them: 1,013 skipped of 2,105 made a
    resume say 64.8 photos/s and ETA 0:00:16 for its first minute, where 1,092 photos at 2.8/s took 6 minutes. The
    bar's rate and ETA (`_RateColumn`, `_RemainingColumn`) read this instead when the task has one (`pace` field);
    a service job's progress (`api.jobs.RecordCounts`) ticks it with the inputs each poll finds recorded since the last.
    It keeps (time, inputs so far) samples, the last one before the window too, so a poll after a long pause
    still spans the pause rather than the next second alone."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self.samples: deque[tuple[float, int]] = deque()
        self.done = 0

    def tick(self, n: int = 1) -> None:
        """`n` inputs recorded by this run (0: none since the last look, which still marks the time)."""
        now = self.clock()
        self.done += n
        self.samples.append((now, self.done))
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window_s:
            self.samples.popleft()

    @property
    def speed(self) -> float | None:
        """Inputs recorded per second over the window; None until two samples span some time."""
        if len(self.samples) < 2 or self.samples[-1][0] == self.samples[0][0]:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0)


def seconds_left(total: int | None, done: int, speed: float | None) -> int | None:
    """Seconds for the inputs still to go at `speed` (a `Pace`'s: this run's, never a resume's skips); None while the
    total or the rate is not known, or nothing is left. The bar's ETA and a service job's `eta_s` alike."""
    if total is None or not speed or done >= total:
        return None
    return math.ceil((total - done) / speed)


def _speed(task: Task) -> float | None:
    pace = task.fields.get("pace")
    return pace.speed if isinstance(pace, Pace) else task.speed


class _NotesColumn(ProgressColumn):
    """The running counts, in the room the figures leave, on one line (a column rich may narrow: the others it may not)."""

    def render(self, task: Task) -> Text:
        return Text(task.fields["notes"], no_wrap=True, overflow="ellipsis")


class _RateColumn(ProgressColumn):
    def __init__(self, label: str, table_column: Column | None = None) -> None:
        super().__init__(table_column)
        self.unit = "photos/s" if label == "triage" else f"{label}/s"

    def render(self, task: Task) -> Text:
        return Text(f"{_speed(task) or 0:5.1f} {self.unit}", style="progress.data.speed")


def _time_left(task: Task) -> str | None:
    """H:MM:SS for the inputs still to go at `_speed` (for a resumed run: at the rate it records them, not its
    skips'); None while the rate is not known or the task is done."""
    left = None if task.finished else seconds_left(None if task.total is None else int(task.total), int(task.completed), _speed(task))
    if left is None:
        return None
    hours, rest = divmod(left, 3600)
    return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"


class _RemainingColumn(TimeRemainingColumn):
    """`_time_left`, rich's own rendering otherwise."""

    def render(self, task: Task) -> Text:
        left = _time_left(task)
        return super().render(task) if left is None else Text(left, style="progress.remaining")


#: Seconds between the progress lines logged when stderr is not a terminal (`PlainProgress`).
PLAIN_PROGRESS_S = 30.0


class PlainProgress:
    """Progress as log lines, every `every_s` seconds and once at the end, for a run whose stderr is not a terminal
    (nohup or cron into a log file, a systemd unit, `2>&1 | tee`): rich draws its bar only on a terminal, so such a
    run of 2,000 photos said nothing for its 13 minutes, then one line cut to 80 columns. `label`: the bar's (triage,
    cases), `items` what it counts (inputs; cases, whose evidence bundles take as long again), `unit` its rate's."""

    def __init__(self, bar: Progress, task: TaskID, label: str = "triage", items: str = "inputs", unit: str = "photos",
                 every_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.bar, self.task, self.clock = bar, task, clock
        self.label, self.items, self.unit = label, items, unit
        self.every_s = PLAIN_PROGRESS_S if every_s is None else every_s
        self.last = clock()

    def __call__(self) -> None:
        """After each input: a line when `every_s` have passed since the last, or when the last input is done."""
        task = next(t for t in self.bar.tasks if t.id == self.task)
        now = self.clock()
        if now - self.last < self.every_s and not task.finished:
            return
        self.last = now
        done, total = int(task.completed), int(task.total or 0)
        log.info("%s: %d/%d %s (%d%%), %.1f %s/s, ETA %s; %s", self.label, done, total, self.items, 100 * done // max(total, 1),
                 _speed(task) or 0.0, self.unit, _time_left(task) or ("0:00:00" if task.finished else "-:--:--"), task.fields["notes"])

    @classmethod
    def when_no_terminal(cls, bar: Progress, task: TaskID, enabled: bool, **kw: Any) -> Callable[[], None]:
        """What to call after each item: a `PlainProgress` when the bar is enabled but cannot be drawn, else nothing."""
        return cls(bar, task, **kw) if enabled and not bar.console.is_terminal else lambda: None


def progress_bar(console: Console | None = None, enabled: bool = True, label: str = "triage") -> Progress:
    """Bar with done/total, rate, elapsed and ETA, on stderr (stdout stays for the summary). Drawn on a terminal
    only: elsewhere rich still printed its last frame at the end, one line cut to 80 columns ("3.7 0:00… phot…")
    after `PlainProgress`'s lines had said it all; its tasks are kept either way, for `PlainProgress` to read."""
    console = console or Console(stderr=True)
    # Only the notes give way (cut with an ellipsis; the summary says them whole): rich cut every column alike, so on 80
    # columns a resumed run's count, rate and ETA were cut to nothing.
    whole = Column(no_wrap=True)
    return Progress(
        TextColumn(f"[bold]{label}", table_column=whole), BarColumn(bar_width=12, table_column=whole),
        MofNCompleteColumn(table_column=whole), _RateColumn(label, table_column=whole), TimeElapsedColumn(table_column=whole),
        TextColumn("ETA", table_column=whole), _RemainingColumn(table_column=whole),
        _NotesColumn(table_column=Column()),
        console=console, disable=not (enabled and console.is_terminal), speed_estimate_period=60,
    )


class _Ordered:
    """Runs `fn` over `items` on a pool, at most `window` ahead, handing results back in order."""

    DONE = object()

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], window: int) -> None:
        self.pool, self.fn, self.items, self.window = pool, fn, iter(items), window
        self.pending: deque[Future] = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self.pending) < self.window:
            item = next(self.items, self.DONE)
            if item is self.DONE:
                return
            self.pending.append(self.pool.submit(self.fn, item))

    def __iter__(self) -> Iterator[Any]:
        while (item := self.take()) is not self.DONE:
            yield item

    def take(self) -> Any:
        if not self.pending:
            return self.DONE
        result = self.pending.popleft().result()
        self._fill()
        return result

    def cancel(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()


class _Writer(threading.Thread):
    """Judges and records photos in arrival order; one thread owns the journal."""

    def __init__(self, journal: Journal, analyser: Analyser, stats: RunStats, on_record: Callable[[PhotoRecord], None]) -> None:
        super().__init__(name="triage-writer", daemon=True)
        self.journal, self.analyser, self.stats, self.on_record = journal, analyser, stats, on_record
        self.inbox: queue.Queue = queue.Queue(maxsize=16)
        self.failure: BaseException | None = None

    def run(self) -> None:
        while (item := self.inbox.get()) is not None:
            if self.failure is not None:
                continue  # keep draining so the main thread never blocks on a dead writer
            try:
                record = self._record(item)
                try:
                    self.journal.append(record)
                except (TypeError, ValueError) as exc:  # a value JSON cannot hold: keep the photo as an error
                    log.exception("%s: record not serialisable", loggable_name(record.source))
                    record = error_record(record.source, f"internal error while recording: {exc}", record.sha256)
                    self.journal.append(record)
                self._count(record)
                self.on_record(record)
            except Exception as exc:  # noqa: BLE001 - cannot write results (disk full ...): the run must stop
                self.failure = exc

    def _record(self, item: PhotoRecord | tuple[Photo, sv.Detections, Verdicts | None]) -> PhotoRecord:
        if isinstance(item, PhotoRecord):
            return item
        photo, detections, verdicts = item
        try:
            return self.analyser.record(photo, detections, self.stats.stages, verdicts)
        except OutputUnwritable:  # the folder's fault, not the photo's: every later photo would fail alike
            raise
        except Exception as exc:  # noqa: BLE001 - one photo's failure must not stop the run
            log.exception("%s: judging failed", loggable_name(photo.source.name))
            return error_record(photo.source.name, f"internal error while judging: {exc}", photo.sha256, **photo.facts())

    def _count(self, record: PhotoRecord) -> None:
        status = record.status
        if record.source in self.journal.failed:
            self.stats.retried += 1
            self.stats.recovered += status is RecordStatus.OK
        elif record.source in self.journal.done_sources:  # not skipped: its content is not what was judged
            self.stats.changed += 1
            self.stats.changed_unreadable += status is RecordStatus.ERROR
        if status is RecordStatus.OK:
            self.stats.ok += 1
            self.stats.positives += bool(record.findings)
        elif status is RecordStatus.DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.errors += 1

    def put(self, item: Any) -> None:
        if self.failure is not None:
            raise self.failure
        self.inbox.put(item)


def see_photos(images: list, detector: Detector, judgement: Judgement, stages: StageProfile,
               infer_lock=contextlib.nullcontext()) -> list[tuple[sv.Detections, Verdicts | None]]:
    """Detector (with its neck map when the verifier reads it) and the verifier's verdicts of photos,
    in one detector call (a batch on a GPU; images are batched by input shape, so a photo's boxes
    do not depend on which others share the call)."""
    with infer_lock, stages.timed("infer"):
        if judgement.needs_features:
            results = detector.detect_with_features(images)
        else:
            results = [(d, None) for d in detector.detect(images)]
    with stages.timed("verify"):
        return [judgement.objects(image, detections, fmap) for image, (detections, fmap) in zip(images, results, strict=True)]


def see_photo(image, detector: Detector, judgement: Judgement, stages: StageProfile,
              infer_lock=contextlib.nullcontext()) -> tuple[sv.Detections, Verdicts | None]:
    """`see_photos` of one photo."""
    return see_photos([image], detector, judgement, stages, infer_lock)[0]


def read_photo_text(image, data: bytes | None, detections: sv.Detections, verdicts: Verdicts | None, text: PhotoText,
                    source: str, stages: StageProfile) -> sv.Detections:
    """Text lines of the regions worth reading (see `PhotoText`), added to the detections."""
    regions = text.regions(detections, verdicts)
    if data is None or regions is None:
        return detections
    with stages.timed("ocr"):
        return text.add(data, image, detections, source, regions)


def judge_image(image, data: bytes | None, name: str, detector: Detector, judgement: Judgement, text: PhotoText,
                stages: StageProfile | None = None) -> tuple[sv.Detections, Verdicts | None]:
    """One photo outside a triage run (a handler's disposal photo): the steps a triage photo takes
    before the rules (detector, verifier, text of the regions worth reading, verified regions), so
    both are judged alike. Returns the detections the rules read and the verifier's verdicts."""
    stages = stages or StageProfile(seconds=dict.fromkeys(STAGES, 0.0))
    detections, verdicts = see_photo(image, detector, judgement, stages)
    return judge_seen(image, data, name, detections, verdicts, judgement, text, stages), verdicts


def judge_seen(image, data: bytes | None, name: str, detections: sv.Detections, verdicts: Verdicts | None, judgement: Judgement,
               text: PhotoText, stages: StageProfile, *, warnings: list[str] | None = None) -> sv.Detections:
    """After the detector and the verifier (`see_photo`): text of the regions worth reading, then the
    verified regions; the detections the rules read. With `warnings` (a triage photo's), a failed OCR
    becomes a warning there and the detections stand without the text; without, it raises."""
    try:
        detections = read_photo_text(image, data, detections, verdicts, text, name, stages)
    except Exception as exc:  # noqa: BLE001 - a triage photo's detections stand without the text
        if warnings is None:
            raise
        log.exception("%s: OCR failed", loggable_name(name))
        warnings.append(f"OCR failed: {exc}")
    with stages.timed("verify"):
        h, w = image.shape[:2]
        return judgement.photo(verdicts, detections, w, h)


def detector_threads(workers: int, device: str) -> int | None:
    """Intra-op threads per inference stream on CPU: the cores shared out among the workers."""
    if not device.startswith("cpu"):
        return None
    return max(1, (os.cpu_count() or 1) // workers)


#: A photo after the detector and the verifier: what the writer judges and records.
Looked = tuple[Photo, sv.Detections, Verdicts | None]
#: What a photo's steps hand to the main loop: a looked-at photo, a skip (`--resume`), or a finished record.
Outcome = Looked | Skipped | PhotoRecord


@dataclass
class PhotoSteps:
    """A photo's steps before the rules: `read` (bytes, SHA-256, reduced decode, EXIF), `look`
    (detector and verifier), `finish` (text lines, verified regions); each turns a failure into the
    photo's error record, so a bad photo never stops the run.

    The worker threads here run all three per photo (`__call__`). `pipelines.cluster.triage` runs
    copies of this object on a Ray cluster: `read` in CPU tasks, `look` and `finish` in actors.
    """

    settings: TriageSettings
    journal: Journal  # read only: `unchanged`, `seen`, `refused_before`, `judged_before` and `done_hashes`, the resume indexes
    grid: GridCells | None
    judgement: Judgement
    detector: Detector | None = None  # None: this copy only reads
    stages: StageProfile = field(default_factory=lambda: StageProfile(seconds=dict.fromkeys(STAGES, 0.0)))
    infer_lock: Any = field(default_factory=contextlib.nullcontext)  # backends not safe from several threads (torch)
    archives: ArchiveCache = field(default_factory=ArchiveCache)

    def __post_init__(self) -> None:
        s = self.settings
        self.text = PhotoText(s.ocr, s.ocr_max_side, s.phone_region, gate=self.judgement.ocr_gate, taxonomy=self.judgement.taxonomy)

    def __call__(self, item: PhotoSource | Refused) -> Outcome:
        photo = self.read(item)
        if not isinstance(photo, Photo):
            return photo
        [looked] = self.look([photo])
        return looked if isinstance(looked, PhotoRecord) else self.finish(looked)

    def read(self, item: PhotoSource | Refused) -> Photo | Skipped | PhotoRecord:
        if isinstance(item, Refused):
            if self.journal.judged_before(item.name):
                return Skipped(item, gone=True)
            return Skipped(item) if self.journal.refused_before(item.name, item.reason) else error_record(item.name, item.reason, reason_zh=item.zh)
        try:
            return load_photo(item, self.archives, self.settings, self.journal, self.grid, self.stages)
        except Exception as exc:  # noqa: BLE001 - a reader bug on one file must not stop the run
            log.exception("%s: reading failed", loggable_name(item.name))
            return error_record(item.name, f"internal error while reading: {exc}")

    def look(self, photos: list[Photo]) -> list[Looked | PhotoRecord]:
        """Detector and verifier on `photos` in one call; when the call fails, photo by photo, so only
        the photo that fails gets an error record."""
        try:
            seen = see_photos([p.image for p in photos], self.detector, self.judgement, self.stages, self.infer_lock)
        except Exception as exc:  # noqa: BLE001
            if len(photos) > 1:
                return [looked for photo in photos for looked in self.look([photo])]
            [photo] = photos
            log.exception("%s: detection failed", loggable_name(photo.source.name))
            return [error_record(photo.source.name, f"detection failed: {exc}", photo.sha256, **photo.facts())]
        return [(photo, detections, verdicts) for photo, (detections, verdicts) in zip(photos, seen, strict=True)]

    def finish(self, looked: Looked) -> Looked:
        photo, detections, verdicts = looked
        detections = judge_seen(photo.image, photo.data, photo.source.name, detections, verdicts, self.judgement, self.text,
                                self.stages, warnings=photo.warnings)
        photo.data = None
        return photo, detections, verdicts


def process_photos(
    sources: list[PhotoSource | Refused],
    settings: TriageSettings,
    detector: Detector,
    analyser: Analyser,
    journal: Journal,
    grid: GridCells | None,
    *,
    judgement: Judgement | None = None,
    show_progress: bool = True,
) -> RunStats:
    """Record every listed input in the journal (or skip it as already recorded)."""
    stats = RunStats(listed=len(sources))
    judgement = judgement or Judgement(None, analyser.taxonomy)
    infer_lock = contextlib.nullcontext() if detector.backend == "onnx" else threading.Lock()
    steps = PhotoSteps(settings, journal, grid, judgement, detector, stats.stages, infer_lock)
    try:
        with ThreadPoolExecutor(settings.workers, thread_name_prefix="triage-worker") as pool:
            results = _Ordered(pool, steps, sources, window=settings.workers * 3)
            return record_outcomes(results, stats, analyser, journal, show_progress=show_progress, cancel=results.cancel)
    finally:
        steps.archives.close()


def record_outcomes(outcomes: Iterable[Outcome], stats: RunStats, analyser: Analyser, journal: Journal, *,
                    show_progress: bool = True, cancel: Callable[[], None] = lambda: None) -> RunStats:
    """The main thread's part of a run, whoever computes the outcomes (threads here, or a Ray
    cluster): in input order, count skips, mark this run's duplicates, and hand the rest to the
    writer, which judges and records them. Ctrl-C calls `cancel` and raises `TriageInterrupted`."""
    seen_now: dict[str, str] = {}  # content hash -> first source of this run (duplicates)
    started = time.perf_counter()
    bar = progress_bar(enabled=show_progress)
    pace = Pace()  # this run's records only: the skips of a resume are not its rate
    task = bar.add_task("triage", total=stats.listed, notes="", pace=pace)

    plain = PlainProgress.when_no_terminal(bar, task, show_progress)

    def advance() -> None:
        bar.update(task, advance=1, notes=f"{stats.positives} with violations, {counted(stats.errors + stats.duplicates, 'error/duplicate', 'errors/duplicates')}"
                   + (f", {stats.skipped} recorded earlier" if stats.skipped else ""))
        plain()

    def recorded(_record: PhotoRecord) -> None:
        pace.tick()
        advance()

    writer = _Writer(journal, analyser, stats, recorded)
    writer.start()
    with bar:
        try:
            for item in outcomes:
                if isinstance(item, Skipped):
                    stats.skipped += 1
                    stats.gone += item.gone
                    stats.unreadable += item.unreadable
                    advance()
                elif isinstance(item, PhotoRecord):
                    writer.put(item)
                elif (first := seen_now.get(item[0].sha256)) is not None:
                    writer.put(error_record(item[0].source.name, f"duplicate of {first}", item[0].sha256,
                                            status="duplicate", duplicate_of=first, **item[0].source.locator(),
                                            **item[0].stamp_fields()))
                else:
                    seen_now[item[0].sha256] = item[0].source.name
                    writer.put(item)
        except KeyboardInterrupt:
            cancel()
            raise TriageInterrupted() from None
        finally:
            writer.inbox.put(None)
            writer.join()
            stats.elapsed_s = time.perf_counter() - started
    if writer.failure is not None:
        raise writer.failure
    return stats
