"""Triage jobs for uploads: the same `run_triage` as `streetwatch triage`, on a bounded worker pool.

A job is a folder `jobs/<id>/`: `input/` holds the uploaded files, the folder itself is the triage
output (`results.jsonl`, `report.html`, thumbnails) and `job.json` its state. Jobs run on a
thread pool of `job_concurrency` threads (the rest wait in order), so the event loop never runs
triage; one detector is loaded on first use and shared (ONNX Runtime sessions are thread-safe), and loaded again
at the first job after `models promote` (`TriageJobs.detector`).
Progress is read from `results.jsonl`, which triage flushes record by record: the inputs it holds a
record of, each once (`RecordCount`). A job that was queued or running when the server stopped is
resumed (`resume=True`) at the next start. A finished job is removed `service.jobs_keep_days` after it finished,
patrol jobs too; its id then answers 404 saying so (`api.job_retention`).
"""

from __future__ import annotations

import fcntl
import functools
import heapq
import json
import logging
import os
import re
import stat
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from markupsafe import escape
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from api.config import ServiceConfig, named_files
from api.metrics import ApiMetrics
from detect.config_io import ConfigError, stamp_of, write_text_atomic
from detect.evidence.config import EvidenceKeyError, load_hmac_key
from detect.evidence.keys import load_signing_key
from detect.registry import PROMOTED_FILE, default_model, model_dirs
from pipelines.cases.store import CaseStore, CaseStoreFull, CaseStoreUnreachable
from pipelines.evidence_store import EvidenceStore
from pipelines.settings import Settings
from pipelines.triage.journal import RESULTS, RecordError, parse_record
from pipelines.triage.pipeline import Pace, seconds_left
from pipelines.triage.record import PhotoRecord
from pipelines.triage.report import REPORT

if TYPE_CHECKING:  # api.uploads checks a caller with api.auth, which needs the context and so this module
    from api.uploads import SavedFile

log = logging.getLogger(__name__)
T = TypeVar("T")
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
UNFINISHED = ("queued", "running")
MTIME_SLACK_S = 2.0
"""How far a folder's modification time may lag its job's `created_at` (file times come from a coarse clock, and
some file systems keep them in whole seconds): `newest_jobs` reads folders this much older than it needs."""
SERVER_FIELDS = ("path", "member", "thumb", "file_size", "file_mtime_ns")
"""Record fields that name or describe files on the server (the stamp `--resume` reads): never in the API's results."""


CLAIM = ".claim"
"""In a job's folder: the file the server process that queued or runs the job holds locked until it ends (`JobClaims`)."""


class JobNotFound(KeyError):
    pass


@dataclass
class RecordCount:
    """The inputs recorded in one job's `results.jsonl`, counted as far as its complete lines were read.

    An input has more than one line while a resumed job runs: its earlier record (an error, or the result of a
    content replaced since) stays until the run finishes and its journal closes (`pipelines.triage.journal`; a job stopped part way leaves it), so lines over-count. Each poll reads only the lines added
    since the last; the journal's rewrite at its close (a new file: another inode) is read afresh. A finished
    job's count is not kept here (`RecordCounts`)."""

    file: tuple[int, int]  # (device, inode)
    offset: int = 0  # end of the last complete line read
    sources: set[str] = field(default_factory=set)
    pace: Pace = field(default_factory=Pace)
    """The inputs each read found recorded since the last, for the job's rate and ETA (those found at the first read
    were recorded before this process looked: a resumed job's earlier ones among them, never its rate)."""

    def read(self, fh: Any) -> int:
        """Read the complete lines after `offset` from the open binary file; the inputs recorded so far."""
        fh.seek(self.offset)
        for line in fh:
            if not line.endswith(b"\n"):
                break  # still being written: read next time
            self.offset += len(line)
            try:
                source = json.loads(line).get("source") if line.strip() else None
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                source = None  # not a record: `results` leaves it out too
            if isinstance(source, str):
                self.sources.add(source)
        return len(self.sources)


class RecordCounts:
    """The `RecordCount` of each running job's `results.jsonl` polled (photo upload and patrol jobs alike), by path:
    each poll reads only the lines added since the last. A finished job's is let go once counted (`count` with
    `finished`): its count is kept in its record (`recorded`, `end_job`), so nothing here grows with the jobs
    a server has run."""

    def __init__(self) -> None:
        self._counts: dict[Path, RecordCount] = {}
        self.lock = threading.RLock()
        """Held while a count is read and kept, and while a job's final record is written (`end_job`)."""

    def count(self, path: Path, finished: bool, ended: Callable[[], bool] = lambda: False) -> int:
        """How many inputs the `results.jsonl` at `path` holds a record of (0 before it exists); `finished`: its job
        is over, its count let go (read whole again if asked again). `ended`: whether the job's record is final now,
        asked once the count is kept, and its count then let go: a poll that read the job running just before it
        ended kept its count after `end_job` had let go of it, for as long as the server ran. It is asked outside
        the lock: it reads job.json, which on a slow share (NFS) held every other poll and job's end for the read;
        `end_job` writes the final record under the lock, so a count kept after it finds the record final."""
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            self.forget(path)
            return 0
        with fh, self.lock:
            stat = os.fstat(fh.fileno())
            count = self._counts.get(path)
            before: int | None = None  # a first read: what it finds was recorded before this process looked
            if count is None or count.file != (stat.st_dev, stat.st_ino) or stat.st_size < count.offset:
                count = self._counts[path] = RecordCount((stat.st_dev, stat.st_ino))
            else:
                before = len(count.sources)
            done = count.read(fh)
            count.pace.tick(0 if before is None else done - before)
            if finished:
                del self._counts[path]
                return done
        if ended():
            self.forget(path)
        return done

    def speed(self, path: Path) -> float | None:
        """Inputs recorded per second in the `results.jsonl` at `path`, as its polls found them (`RecordCount.pace`);
        None before two polls of its running job, or once it ended."""
        with self.lock:
            count = self._counts.get(path)
            return count.pace.speed if count is not None else None

    def forget(self, folder: Path) -> None:
        """Let go of the counts at or under `folder`: a job ended (a poll that found it still running may have counted
        its file) or removed (else each job ever polled stayed in memory)."""
        with self.lock:
            for path in [p for p in self._counts if p.is_relative_to(folder)]:
                del self._counts[path]


LOCK_MODE = 0o660
"""A job claim's or sweep lock's file mode, less the umask: group-writable, as the job folders and their files are."""


def umask() -> int | None:
    """This process's umask, read from /proc (Linux): `os.umask` reads it only by setting it, and a file another
    thread made in between would get the value set. None where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split(":", 1)[1], 8)
    except (OSError, ValueError):
        pass
    return None


def widen(fd: int, path: Path) -> None:
    """Give the open lock file `fd` the bits a new one gets (`LOCK_MODE` less the umask) that it lacks, if this
    process owns it: an older release made them 0600, so another `serve` process of the group could not open them
    however the umask was set later. A file of another user is left to them; a refusal is logged, never raised (the
    lock still serves this process)."""
    mask, held = umask(), os.fstat(fd)
    if mask is None or held.st_uid != os.geteuid() or not (missing := LOCK_MODE & ~mask & ~held.st_mode):
        return
    mode = stat.S_IMODE(held.st_mode) | missing
    try:
        os.fchmod(fd, mode)
    except OSError as exc:
        log.warning("%s: lock file is %o, another server process of the group cannot open it, and making it %o was "
                    "refused (%s): run chmod %o on it", path, stat.S_IMODE(held.st_mode), mode, exc.strerror, mode)


def probe_writable(folder: Path) -> None:
    """Write and remove a file in `folder` (`serve`'s start-up and `/readyz`): OSError when it cannot be written."""
    probe = folder / ".ready"
    probe.write_bytes(b"")
    probe.unlink()


def locked(path: Path) -> int | None:
    """The file `path` (made if need be) open and locked (`flock`, exclusive) for this caller, or None when another
    holds it; closing the descriptor lets go. Held by an open file, so a stopped process's locks go with it. A lock
    the file system refuses (an NFS share whose lock manager does not answer: ENOLCK) raises that OSError, the file
    closed: it stayed open, one descriptor lost per upload or sweep. Made group-writable, less the umask, as the job
    folders are made: made 0600, another `serve` process on the data folder running as another user of the group could
    not open it (Several server processes, docs/service.md); one an older release made 0600 is widened (`widen`)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, LOCK_MODE)
    try:
        widen(fd, path)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return fd


class JobClaims:
    """The jobs this process has queued or runs, each claimed by an exclusive `flock` on its folder's `CLAIM` file,
    held until the job ends. Several `serve` processes share one `service.data_dir` (docs/service.md): one that
    started while another ran a job took that job up as one a stopped server left, both running it into one journal
    and one record (its summary counting the photos twice). A claim held elsewhere is not taken; the kernel lets go
    of a stopped process's locks, so what it left is resumed at the next start as before. `flock` locks an open
    file, not a process: a second claim in one process is refused as well."""

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}  # job folder -> the open, locked CLAIM file
        self._lock = threading.Lock()

    def take(self, folder: Path) -> bool:
        """Claim the job in `folder`: False when another process (or claim) holds it."""
        fd = locked(folder / CLAIM)
        if fd is None:
            return False
        with self._lock:
            self._held[folder] = fd
        return True

    def count(self) -> int:
        """How many jobs this process holds (queued or running)."""
        with self._lock:
            return len(self._held)

    def release(self, folder: Path | None = None) -> None:
        """Let go of the claim on the job in `folder` (it ended), or of every claim (None: the server stops)."""
        with self._lock:
            fds = [self._held.pop(f) for f in ([folder] if folder is not None else list(self._held)) if f in self._held]
        for fd in fds:
            os.close(fd)


def end_job(records: RecordCounts, path: Path, folder: Path, job: dict[str, Any]) -> None:
    """Write `job` ended (`state` done or failed) into `folder` with `recorded`, the inputs its `results.jsonl` at `path`
    holds a record of, so that its progress is read from its record, never from the file again nor kept in `records`.
    Counted and written under the counts' lock: a poll that read the job running just before and counts after it finds
    the record final (`recorded`, `RecordCounts.count`'s `ended`), so no count outlives the job (photo uploads' and
    patrol jobs alike)."""
    with records.lock:
        write_job(folder, {**job, "recorded": records.count(path, finished=True), "finished_at": _now()})


def recorded(records: RecordCounts, path: Path, job: dict[str, Any], folder: Path) -> int:
    """The inputs `job`'s `results.jsonl` at `path` holds a record of: while it runs counted by `records`, once it ended
    its `recorded` (a job ended before that was kept is counted afresh, nothing kept). `folder`: the job's, whose
    record says whether it has ended since `job` was read (`RecordCounts.count`'s `ended`)."""
    finished = job["state"] not in UNFINISHED
    if finished and isinstance(job.get("recorded"), int):
        return job["recorded"]
    return records.count(path, finished, ended=lambda: (read_job(folder) or {}).get("state") not in UNFINISHED)


def judging_pace(records: RecordCounts, path: Path, total: int | None, done: int, judging: bool) -> dict[str, Any]:
    """`rate` and `eta_s` of a job's progress: while its inputs are judged (`judging`: a photo upload's photos, a patrol
    job's frames), those recorded per second in its `results.jsonl` at `path` as the polls found them
    (`RecordCounts.speed`) and the seconds left at that rate, as the CLI's bar reckons them (`seconds_left`); else None."""
    rate = records.speed(path) if judging else None
    return {"rate": rate, "eta_s": seconds_left(total, done, rate)}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def newest_jobs(root: Path, limit: int | None = None, owner: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The job folders under `root` and their records (job.json), newest first (by `created_at`), only `owner`'s when
    given, at most `limit`: the photo uploads' (`TriageJobs.list`) and the patrol videos' alike.

    A job's folder is never modified before the job was created (its job.json is written into it then, and each
    later write renames a new one in), so the folders are read newest modification first and the reading stops
    once a folder is older than the `limit`-th newest job found: the list page's newest 200 read about 200
    job.json files, not every one the server ever kept. Folders without a job.json (an upload still arriving)
    are not jobs yet; an unreadable record is logged and left out."""
    folders = []
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
                except OSError:
                    continue
    except FileNotFoundError:  # no job was ever made
        return []
    newest: list[tuple[str, int, Path, dict[str, Any]]] = []  # min-heap of (created_at, n, folder, job): the `limit` newest so far
    for n, (modified, name) in enumerate(sorted(folders, reverse=True)):
        if limit is not None and len(newest) >= limit and modified + MTIME_SLACK_S < _timestamp(newest[0][0]):
            break  # this folder and every older one hold jobs created before all those kept
        job = read_job(root / name)
        if job is None or (owner is not None and job.get("owner") != owner):
            continue
        heapq.heappush(newest, (job["created_at"], n, root / name, job))
        if limit is not None and len(newest) > limit:
            heapq.heappop(newest)
    return [(folder, job) for _, _, folder, job in sorted(newest, key=lambda item: item[0], reverse=True)]


def write_job(folder: Path, job: dict[str, Any]) -> None:
    """`folder/job.json`, replaced whole (`write_text_atomic`): a page polling it never reads half a record."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "job.json", json.dumps(job, ensure_ascii=False, indent=1, default=str))


def read_job(folder: Path) -> dict[str, Any] | None:
    """The job in `folder`; None (an unreadable record logged) when it has no readable job.json."""
    path = folder / "job.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        log.warning("%s: unreadable job record", path)
        return None


def as_uploaded(folder: Path, labels: dict[str, str], settings: Settings, *, inside: tuple[str, ...] = (),
                itself: str = "", html: bool = False) -> Callable[[str], str]:
    """What names a job's texts (its errors, a report) as the client knows them, since the API never shows a server
    path: each stored file (`labels`: its path in the job's `folder` -> the name it was sent as; a zip's members follow
    it: "photos.zip!day1/a.jpg"), a file in one of the `inside` folders (stored inputs, a run's frames) by its own name,
    any other path in the folder from there, the folder itself as `itself`, and the evidence store's and spool's
    folders, the evidence key files and the input files by their settings, the files those name as the 503s name them
    (`Settings.named_by_setting`, `api.config.named_files`: a case's reason names the folders when storage is down,
    its error a key file unreadable since start-up, a job's error the map zones' grades file it could not read).
    `html`: the text is HTML (a report), where paths stand escaped and so must the names put in."""
    named = escape if html else str
    root = str(named(str(folder)))
    forms = {str(named(str(folder / stored))): str(named(label)) for stored, label in labels.items()}
    forms |= {str(named(f"{folder / sub}/")): "" for sub in inside} | {f"{root}/": "", root: str(named(itself))}
    pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))
    files = functools.cache(lambda: named_files(settings.service))  # read only for a text to name: most jobs have none
    return lambda text: settings.named_by_setting(pattern.sub(lambda m: forms[m.group(0)], text), named, files())


def no_cases_error(reason: str) -> str:
    """The error of an upload job (photos or a patrol video) that cannot write its candidate cases
    (`CasesUnavailable`: a key the settings name that does not load now, no key with `service.triage.cases: true`, the
    evidence store...): failed before reading anything, as `streetwatch triage` and `patrol` refuse, rather than done
    with its violations in no review queue. The inspector cannot mend it; the admin reads the English half."""
    return (f"无法生成候选案件，任务未处理，请联系管理员 cases cannot be written: {reason}; fix it and upload again, "
            "or set service.triage.cases: false for reports without cases")


STORE_DOWN = ("案件库暂时无法连接，任务未完成，请稍后重新上传 the case store could not be reached while the job ran; "
              "upload again once it is back (the server log names the store and the reason)")
"""The error of an upload job (photos or a patrol video) that found the case store unreachable (a database restarted
or down): its URL and the driver's reason stay in the server log, as the API's 503 case-store-unreachable keeps them."""


STORE_WAITING = ("等待案件库恢复… the case store cannot be reached; the job goes on where it was once it is back "
                 "(it waits up to service.store_wait_s, then fails)")
"""What a running upload job (photos or a patrol video) shows (its `waiting`, its progress's phase `store`) while it
waits for the case store (`waiting_for_store`)."""
STORE_POLL_MAX_S = 15.0
"""The longest pause between a waiting job's tries of the case store: it goes on within that of the store's return."""
STORE_OUTAGES = 3
"""The outages of the case store one job waits out (`waiting_for_store`); at the next it fails (`STORE_DOWN`)."""


def waiting_for_store(wait_s: float, attempt: Callable[[], T], answers: Callable[[], None],
                      waiting: Callable[[str | None], None]) -> T:
    """`attempt()`, taken up again when it found the case store unreachable and the store `answers` again within `wait_s`
    seconds (`service.store_wait_s`; asked again and again by tenacity), `waiting(STORE_WAITING)` said meanwhile and
    `waiting(None)` once it answers. A database restarted under a running job failed it and the inspector uploaded
    everything again, though a run taken up goes on where it was (its journal keeps the photos judged, the store the
    cases recorded). The store still down after `wait_s`, or down again more than `STORE_OUTAGES` times: the last
    `CaseStoreUnreachable` is raised (`STORE_DOWN`)."""
    for _ in range(STORE_OUTAGES):
        try:
            return attempt()
        except CaseStoreUnreachable:
            log.warning("case store unreachable: the job waits up to %.0f s for it (service.store_wait_s)", wait_s)
        waiting(STORE_WAITING)
        Retrying(retry=retry_if_exception_type(CaseStoreUnreachable), stop=stop_after_delay(wait_s),
                 wait=wait_exponential(multiplier=0.5, max=STORE_POLL_MAX_S), reraise=True)(answers)
        waiting(None)
    return attempt()


STORE_FULL = ("案件库所在磁盘已满，任务未完成，请联系管理员腾出空间后重新上传 the case store's disk is full, so the job did "
              "not finish; upload again once an administrator has freed space (the server log names the store and the disk)")
"""The error of an upload job that found the case store's disk full: as `STORE_DOWN`, the store's URL (a SQLite file's
server path) stays in the server log, as the API's 503 case-store-full keeps it."""


def job_failure(what: str, exc: Exception) -> str:
    """The error a job (`what`: "triage job ID", "patrol job ID") that failed on `exc` shows its uploader, logged with
    its traceback: the case store unreachable is `STORE_DOWN`, its disk full `STORE_FULL` (the driver's words named
    the database's host, port, user and name, or a SQLite file's server path), anything else its type and message."""
    log.error("%s failed", what, exc_info=exc)
    if isinstance(exc, CaseStoreUnreachable):
        return STORE_DOWN
    return STORE_FULL if isinstance(exc, CaseStoreFull) else f"{type(exc).__name__}: {exc}"


def spool_shown(spool: dict[str, Any], relabel: Callable[[str], str]) -> dict[str, Any]:
    """A job's `spool` (`SpoolRetry.as_dict`) with why each bundle still waits `relabel`led: a failed upload's reason
    names the evidence folder on the server (a photo upload's `as_uploaded`, a patrol job's alike)."""
    return {**spool, "waiting_cases": [{**w, "reason": relabel(w["reason"])} for w in spool["waiting_cases"]]}


def promotion_stamp() -> tuple:
    """The change stamp (`stamp_of`) of `registry/promoted.yaml` in each model folder, absent ones too: what `streetwatch
    models promote` changes, checked at each job (a stat a folder) before the record is read again."""
    return tuple(stamp_of(d / "registry" / PROMOTED_FILE) for d in model_dirs())


class TriageJobs:
    def __init__(self, config: ServiceConfig, deployment: Settings, metrics: ApiMetrics,
                 detector_factory: Callable[[], Any] | None = None, store: CaseStore | None = None,
                 evidence: EvidenceStore | None = None):
        """`store`: the service's open store of `deployment.cases`, which the jobs, the patrol jobs and the spool retry
        write through (one connection pool per process, as docs/service.md budgets them); None: each opens its own.
        `evidence`: the service's open evidence store, which they put bundles in likewise (with S3 a client and its
        connection pool: one per job was one per upload); None: each opens its own."""
        self.root = config.jobs_dir.resolve()
        try:  # a settings fault, named by its setting: `serve` said only `/proc/1/nope: No such file or directory`
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"service.data_dir: {exc.filename or self.root}: cannot create: {exc.strerror or exc}") from None
        try:  # one that is there but cannot be written (a read-only mount, another user's): serve started, not ready,
            probe_writable(self.root)  # and answered each upload 500 with a traceback in the log
        except OSError as exc:
            raise ConfigError(f"service.data_dir: {self.root}: cannot write: {exc.strerror or exc}") from None
        self.config, self.deployment, self.metrics, self.store, self.evidence = config, deployment, metrics, store, evidence
        self._detector_factory = detector_factory
        self._detector = None
        self._detector_model: str | None = None  # the promoted model it is (`default_model`), when none is set
        self._promotion: tuple = ()  # `promotion_stamp` when it was loaded or last found the same
        self._detector_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(config.job_concurrency, thread_name_prefix="triage-job")
        self.records = RecordCounts()
        self.claims = JobClaims()

    # ---- lifecycle -------------------------------------------------------------------------

    def resume_unfinished(self) -> list[str]:
        """Queue again the jobs a stopped server left queued or running (they resume where they were), not those another
        server process on this data folder has queued or runs (`submit`)."""
        return [j["id"] for j in self.list() if j["state"] in UNFINISHED and self._submit(j["id"])]

    def submit(self, folder: Path, run: Callable[[], None]) -> bool:
        """Queue `run`, the run of the job in `folder` (a photo upload's or a patrol job's), claimed for this process
        until it ends (`JobClaims`); False, nothing queued, when another process holds the job or it is no longer
        queued or running (it ended after a caller read it so)."""
        if not self.claims.take(folder):
            return False
        job = read_job(folder)
        if job is None or job.get("state") not in UNFINISHED:
            self.claims.release(folder)
            return False

        def claimed() -> None:
            try:
                run()
            finally:
                self.claims.release(folder)

        try:
            self.pool.submit(claimed)
        except BaseException:  # the pool is shut down (an upload as the server stops): else held till the process exits
            self.claims.release(folder)
            raise
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs: the queued ones are cancelled (the next start resumes them), the running ones finish
        first with `wait`, which is said in the log: a stop (systemctl stop, SIGTERM) otherwise stood silent after
        uvicorn's 'Waiting for application shutdown.' for as long as the upload or patrol job took."""
        if wait and (held := self.claims.count()):
            log.info("stopping: the running upload or patrol job finishes first (%d job(s) of this process, running or "
                     "queued; the queued, and a running one cut off by a kill, resume at the next start)", held)
        self.pool.shutdown(wait=wait, cancel_futures=True)
        self.claims.release()  # the jobs cancelled while queued: the next start takes them up

    def cases_unavailable(self) -> str | None:
        """Why upload jobs write no candidate cases, or None when they do (or `service.triage.cases: false` turns
        them off). With the default `cases: null` triage falls back to its report alone when the evidence key is
        missing or unusable (what `Intake.from_settings` loads): the job ends `done` and its groups go nowhere, so
        an inspector was told of candidate cases the review queue never showed. `serve` says this at start-up, each
        such job's cases carry it as their error and a patrol job's summary as its `no_cases`."""
        if self.config.triage.cases is False:
            return None
        try:
            load_hmac_key(self.deployment.evidence)
            load_signing_key(self.deployment.evidence)
        except EvidenceKeyError as exc:
            unset = "" if exc.field else "; set it where `streetwatch serve` runs"  # a key file: the message names it
            return f"upload jobs write no candidate cases, only their report: {exc}{unset}"
        return None

    def retry_spool(self) -> list[str]:
        """Upload what the evidence spool holds (`Intake.retry_evidence`), as each job's run does first; the ids of the
        cases stored now. `serve` calls it every `service.spool_retry_s` too: else bundles left while storage was down
        waited for the next upload, and one signed with a key rotated away began its 7 days' wait only then. Nothing to
        retry with when no evidence key is set (jobs write no cases: `cases_unavailable`)."""
        from detect.evidence.builder import ModelInfo
        from pipelines.cases.intake import Intake

        try:  # the model signs no bundle here: a retry uploads those sealed, as `watch` checks the stores with one
            intake = Intake.from_settings(self.deployment, ModelInfo("spool-retry"), store=self.store, evidence=self.evidence)
        except EvidenceKeyError as exc:
            log.debug("evidence spool not retried: %s", exc)
            return []
        try:
            return [case.id for case in intake.retry_evidence()]
        finally:
            if self.store is None:  # opened for the retry
                intake.store.close()

    # ---- jobs ------------------------------------------------------------------------------

    def new_dir(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex[:16]
        return job_id, self.root / job_id / "input"

    def create(self, job_id: str, owner: str, files: list[SavedFile]) -> dict[str, Any]:
        job = {"id": job_id, "owner": owner, "state": "queued", "created_at": _now(), "started_at": None,
               "finished_at": None, "error": None, "total": None, "cases": [],
               "files": [{"label": f.label, "name": f.path.name, "kind": f.kind, "size": f.size} for f in files]}
        self._write(job)
        self.metrics.jobs.labels("created").inc()
        self.metrics.uploads.inc(sum(f.size for f in files))
        self._submit(job_id)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        path = self._dir(job_id) / "job.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise JobNotFound(job_id) from None

    def list(self, limit: int | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        """Jobs newest first (by `created_at`), only `owner`'s when given, at most `limit` (`newest_jobs`)."""
        return [job for _, job in newest_jobs(self.root, limit, owner)]

    def progress(self, job: dict[str, Any]) -> dict[str, Any]:
        """Photos recorded so far out of the total (and the phase: photos, then case evidence; `store` while the job
        waits for the case store, `waiting_for_store`), and while photos are judged their rate and the seconds left
        at it (`rate`, `eta_s`: of the photos this run records, as the CLI's bar: `Pace`, `seconds_left`)."""
        results = self._dir(job["id"]) / RESULTS
        done = recorded(self.records, results, job, self._dir(job["id"]))
        total = job.get("total")
        phase = job["state"]
        if job["state"] == "running" and job.get("waiting"):
            phase = "store"
        elif job["state"] == "running":
            phase = "cases" if total is not None and done >= total else "photos"
        return {"done": done, "total": total, "phase": phase, **judging_pace(self.records, results, total, done, phase == "photos")}

    def report(self, job_id: str) -> Path:
        """Where the job's `report.html` is once it is done (the triage run writes it last)."""
        return self._dir(job_id) / REPORT

    def as_uploaded(self, job: dict[str, Any], html: bool = False) -> Callable[[str], str]:
        """Text with the job's stored inputs named as uploaded ("duplicate of /srv/.../input/0001.jpg" -> "duplicate of
        bus.jpg"), its other paths from its folder, the folder by the job's id (`as_uploaded`)."""
        return as_uploaded(self._dir(job["id"]), {f"input/{f['name']}": f["label"] for f in job["files"]},
                           self.deployment, inside=("input",), itself=f"job {job['id']}", html=html)

    def shown(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job as the API shows it: its texts (its error, each group's error, why each bundle still waits in the
        spool) relabelled `as_uploaded`, since they may name the stored inputs or the evidence folders (storage down)."""
        relabel = self.as_uploaded(job)
        shown = {**job, "cases": [{**c, "error": c["error"] and relabel(c["error"])} for c in job.get("cases") or []]}
        if job.get("error"):
            shown["error"] = relabel(job["error"])
        if (job.get("summary") or {}).get("spool"):
            shown["summary"] = {**job["summary"], "spool": spool_shown(job["summary"]["spool"], relabel)}
        return shown

    def results(self, job_id: str) -> list[PhotoRecord]:
        """Per-photo records with server paths replaced by the uploaded file names (the fields each holds).

        One record per input, its latest, where the latest line stands: while a resumed job runs, a photo tried
        again has its earlier line too until the run finishes and its journal closes (as `RecordCount` counts it once)."""
        relabel = self.as_uploaded(self.get(job_id))
        latest: dict[str, PhotoRecord] = {}  # source -> its latest record, in the order of those lines
        for number, line in enumerate(self._lines(job_id), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            record = {k: v for k, v in record.items() if k not in SERVER_FIELDS}
            for key in ("source", "duplicate_of", "reason"):
                if isinstance(record.get(key), str):
                    record[key] = relabel(record[key])
            try:
                parsed = parse_record(record, f"job {job_id}: {RESULTS}:{number}")
            except RecordError:
                log.exception("job %s: unreadable record left out", job_id)
                continue
            latest.pop(parsed.source, None)
            latest[parsed.source] = parsed
        return list(latest.values())

    # ---- internals -------------------------------------------------------------------------

    def _dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise JobNotFound(job_id)
        return self.root / job_id

    def _lines(self, job_id: str):
        """The complete lines of the job's `results.jsonl` (a line still being written is skipped)."""
        path = self._dir(job_id) / RESULTS
        try:
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    if line.endswith("\n") and line.strip():
                        yield line
        except FileNotFoundError:
            return

    def _write(self, job: dict[str, Any]) -> None:
        write_job(self._dir(job["id"]), job)

    def _update(self, job_id: str, **values: Any) -> dict[str, Any]:
        with self._state_lock:
            job = {**self.get(job_id), **values}
            self._write(job)
            return job

    def _end(self, job_id: str, **values: Any) -> None:
        """End the job with `values` (its state, done or failed), its count of inputs recorded kept in its record."""
        with self._state_lock:
            end_job(self.records, self._dir(job_id) / RESULTS, self._dir(job_id), {**self.get(job_id), **values})

    def store_answers(self) -> None:
        """Raise `CaseStoreUnreachable` unless the case store answers a query (what a job waiting for it asks, a patrol
        job's too: `waiting_for_store`)."""
        store = self.store or self.deployment.cases.open()
        try:
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            if self.store is None:  # opened for the question
                store.close()

    def _submit(self, job_id: str) -> bool:
        """`submit` the photo upload job `job_id`: nothing kept per job but its claim, its record says how it goes."""
        return self.submit(self._dir(job_id), functools.partial(self._run, job_id))

    def detector(self):
        """The detector a job (an upload, a patrol video, a disposal photo) judges with: loaded at the first and kept,
        and loaded again when the model it took is no longer the promoted one (`streetwatch models promote` while the
        server runs: a process restarted after it and one not judged with different models). A running job keeps the
        detector it was given; the one replaced goes once none holds it. `service.triage.model` naming a model: that
        one, always."""
        with self._detector_lock:
            if self._detector_factory is not None:  # given (tests): as given
                if self._detector is None:
                    self._detector = self._detector_factory()
                return self._detector
            if self.config.triage.model is not None:
                if self._detector is None:
                    self._detector = self._load_detector()
                return self._detector
            promotion = promotion_stamp()
            if self._detector is None or promotion != self._promotion:
                model = default_model()
                if self._detector is None or model != self._detector_model:
                    detector = self._load_detector()
                    if self._detector is not None:
                        log.info("service.triage: the promoted model is now %s (was %s): the jobs from now on are judged "
                                 "by it", model, self._detector_model)
                    self._detector, self._detector_model = detector, model
                self._promotion = promotion
            return self._detector

    def _triage_settings(self, job_id: str, resume: bool, names: dict[str, str] | None = None):
        """`names`: each stored input's path -> the name it was sent as, which a WeChat photo's capture time is read
        from (`0001.jpg` carries none, and its file's time is that of the upload)."""
        from pipelines.triage import TriageSettings

        return TriageSettings(**self.config.triage.model_dump(), out=self._dir(job_id), resume=resume, names=names or {})

    def _load_detector(self):
        from pipelines.triage.run import triage_detector

        return triage_detector(self._triage_settings("0" * 16, False))

    def _failed(self, job_id: str, error: str) -> None:
        """End the job failed with `error`, its server paths named as the client knows them (`as_uploaded`)."""
        self._end(job_id, state="failed", waiting=None, error=self.as_uploaded(self.get(job_id))(error))
        self.metrics.jobs.labels("failed").inc()

    def _run(self, job_id: str) -> None:
        from pipelines.triage import run_triage
        from pipelines.triage.cases import CasesUnavailable, check_keys
        from pipelines.triage.sources import expand_sources

        folder = self._dir(job_id)
        inputs = [folder / "input"]
        job = self._update(job_id, state="running", started_at=_now(), total=len(expand_sources(inputs)))
        names = {str(inputs[0] / f["name"]): f["label"] for f in job["files"]}
        self.metrics.jobs_running.inc()
        no_cases = self.cases_unavailable()  # what run_triage's case writer will find: said on each group

        def attempt():  # each try (the first, one after the store came back) takes up what the job's folder holds
            settings = self._triage_settings(job_id, resume=(folder / RESULTS).exists(), names=names)
            keys = check_keys(self.deployment, settings)  # as the command: a key set that does not load (changed since start-up) stops the job
            return run_triage(inputs, settings, detector=self.detector(), deployment=self.deployment, show_progress=False,
                              keys=keys, store=self.store, evidence=self.evidence)

        try:
            result = waiting_for_store(self.config.store_wait_s, attempt, self.store_answers,
                                       lambda why: self._update(job_id, waiting=why))
        except CasesUnavailable as exc:
            self._failed(job_id, no_cases_error(exc.reason))
            return
        except Exception as exc:  # noqa: BLE001 - a failed job says why; the server goes on
            self._failed(job_id, job_failure(f"triage job {job_id}", exc))
            return
        finally:
            self.metrics.jobs_running.dec()
        cases = [{"case_id": r.case_id, "state": r.state, "error": r.error or (no_cases if r.case_id is None else None),
                  "type": g.type, "score": round(g.score, 4),
                  "photos": len(g.members)} for g, r in zip(result.groups, result.refs, strict=True)]
        t = result.tally
        self._end(job_id, state="done", cases=cases, waiting=None,
                     summary={"readable": t.ok, "with_violations": t.positives, "errors": t.errors,
                              "duplicates": t.duplicates, "groups": len(result.groups), "spool": result.spool.as_dict()})
        self.metrics.jobs.labels("done").inc()
