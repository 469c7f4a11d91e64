"""The streaming part of a triage run: read -> detect -> judge and record, overlapped and bounded.

    reader threads (--workers)      main thread            writer thread
    bytes, SHA-256, reduced  ──►    batched detector  ──►  photo rules, thumbnail,
    decode, EXIF (in order,         (ONNX Runtime / torch   JSONL record, progress
    at most `window` ahead)         release the GIL)

Decoding (Pillow) and inference (ONNX Runtime) release the GIL, so threads overlap them without
copying pixels between processes. At most `window` photos are being read and two batches wait
for the writer, so memory does not grow with the number of photos; every result goes straight
to `results.jsonl`. Inference never waits to fill a batch: it runs on whatever is decoded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import supervision as sv
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from detect.engine import Detector
from pipelines.triage.analyse import Analyser
from pipelines.triage.grid import GridCells
from pipelines.triage.journal import Journal
from pipelines.triage.photos import Photo, Skipped, error_record, load_photo
from pipelines.triage.settings import TriageSettings
from pipelines.triage.sources import ArchiveCache, PhotoSource, Refused

log = logging.getLogger(__name__)


class TriageInterrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C); every photo finished so far is in results.jsonl."""


@dataclass
class RunStats:
    """Counts of this run (records of earlier runs are `skipped`)."""

    listed: int = 0
    skipped: int = 0
    ok: int = 0
    positives: int = 0
    errors: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0

    @property
    def recorded(self) -> int:
        return self.ok + self.errors + self.duplicates

    @property
    def rate(self) -> float:
        """Photos recorded per second of this run (decode + detect + rules + writing)."""
        return self.recorded / self.elapsed_s if self.elapsed_s else 0.0


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:5.1f} photos/s", style="progress.data.speed")


def progress_bar(console: Console | None = None, enabled: bool = True) -> Progress:
    """Bar with done/total, rate, elapsed and ETA, on stderr (stdout stays for the summary)."""
    return Progress(
        TextColumn("[bold]triage"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[notes]}"),
        console=console or Console(stderr=True), disable=not enabled, speed_estimate_period=60,
    )


class _Ordered:
    """Runs `fn` over `items` on a pool, at most `window` ahead, handing results back in order."""

    DONE = object()
    NOT_READY = object()

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

    def take(self, block: bool) -> Any:
        if not self.pending:
            return self.DONE
        if not block and not self.pending[0].done():
            return self.NOT_READY
        result = self.pending.popleft().result()
        self._fill()
        return result

    def cancel(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()


class _Writer(threading.Thread):
    """Judges and records photos in arrival order; one thread owns the journal."""

    def __init__(self, journal: Journal, analyser: Analyser, stats: RunStats, on_record: Callable[[dict], None]) -> None:
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
                self.journal.append(record)
                self._count(record)
                self.on_record(record)
            except OSError as exc:  # cannot write results: the run must stop
                self.failure = exc

    def _record(self, item: dict[str, Any] | tuple[Photo, sv.Detections]) -> dict[str, Any]:
        if isinstance(item, dict):
            return item
        photo, detections = item
        try:
            return self.analyser.record(photo, detections)
        except Exception as exc:  # noqa: BLE001 - one photo's failure must not stop the run
            log.exception("%s: judging failed", photo.source.name)
            return error_record(photo.source.name, f"internal error while judging: {exc}", photo.sha256, **photo.facts())

    def _count(self, record: dict[str, Any]) -> None:
        status = record["status"]
        if status == "ok":
            self.stats.ok += 1
            self.stats.positives += bool(record["findings"])
        elif status == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.errors += 1

    def put(self, item: Any) -> None:
        if self.failure is not None:
            raise self.failure
        self.inbox.put(item)


def process_photos(
    sources: list[PhotoSource | Refused],
    settings: TriageSettings,
    detector: Detector,
    analyser: Analyser,
    journal: Journal,
    grid: GridCells | None,
    *,
    show_progress: bool = True,
) -> RunStats:
    """Record every listed input in the journal (or skip it as already recorded)."""
    stats = RunStats(listed=len(sources))
    archives = ArchiveCache()
    seen_now: dict[str, str] = {}  # content hash -> first source of this run (duplicates)
    started = time.perf_counter()
    bar = progress_bar(enabled=show_progress)
    task = bar.add_task("triage", total=len(sources), notes="")

    def advance(record: dict[str, Any] | None = None) -> None:
        bar.update(task, advance=1, notes=f"{stats.positives} with violations, {stats.errors + stats.duplicates} errors/duplicates")

    def load(item: PhotoSource | Refused) -> Photo | Skipped | dict[str, Any]:
        if isinstance(item, Refused):
            return Skipped(item) if journal.seen(item.name, None) else error_record(item.name, item.reason)
        try:
            return load_photo(item, archives, settings, journal, grid)
        except Exception as exc:  # noqa: BLE001 - a reader bug on one file must not stop the run
            log.exception("%s: reading failed", item.name)
            return error_record(item.name, f"internal error while reading: {exc}")

    writer = _Writer(journal, analyser, stats, advance)
    writer.start()
    batch: list[Photo] = []

    def flush() -> None:
        if not batch:
            return
        for photo, dets in zip(batch, _detect(detector, batch), strict=True):
            writer.put(dets if isinstance(dets, dict) else (photo, dets))
        batch.clear()

    window = settings.workers * 2 + settings.batch
    with bar, ThreadPoolExecutor(settings.workers, thread_name_prefix="triage-reader") as pool:
        reader = _Ordered(pool, load, sources, window)
        try:
            while True:
                item = reader.take(block=not batch)
                if item is _Ordered.DONE:
                    break
                if item is _Ordered.NOT_READY:
                    flush()
                    continue
                if isinstance(item, Skipped):
                    stats.skipped += 1
                    advance()
                elif isinstance(item, dict):
                    writer.put(item)
                elif item.sha256 in seen_now:
                    first = seen_now[item.sha256]
                    writer.put(error_record(item.source.name, f"duplicate of {first}", item.sha256, status="duplicate",
                                            duplicate_of=first))
                else:
                    seen_now[item.sha256] = item.source.name
                    batch.append(item)
                    if len(batch) >= settings.batch:
                        flush()
            flush()
        except KeyboardInterrupt:
            reader.cancel()
            raise TriageInterrupted() from None
        finally:
            writer.inbox.put(None)
            writer.join()
            archives.close()
            stats.elapsed_s = time.perf_counter() - started
    if writer.failure is not None:
        raise writer.failure
    return stats


def _detect(detector: Detector, batch: list[Photo]) -> list[sv.Detections | dict[str, Any]]:
    """Detections per photo; if a batch fails, photos are retried alone so only the bad one errors."""
    try:
        return list(detector.detect([p.image for p in batch]))
    except Exception:  # noqa: BLE001
        if len(batch) == 1:
            log.exception("%s: detection failed", batch[0].source.name)
            return [error_record(batch[0].source.name, "detection failed (see log)", batch[0].sha256, **batch[0].facts())]
        return [r for p in batch for r in _detect(detector, [p])]
