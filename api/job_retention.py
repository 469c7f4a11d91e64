"""Retention of upload and patrol jobs (`service.jobs_keep_days`): a finished job's folder is removed that many days
after it finished, at `serve`'s start-up and every `SWEEP_EVERY_S`, each removal recorded in its jobs folder's `REMOVED`
so that its id answers 404 saying why it is gone (`not_found`), never that it never was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from api.jobs import JOB_ID, UNFINISHED, TriageJobs, _timestamp, locked, read_job
from detect.config_io import write_text_atomic

log = logging.getLogger("api.jobs")  # its lines keep the jobs' logger, as before the retention had a module of its own

REMOVED = "removed.jsonl"
"""In a jobs folder (photo uploads', patrol jobs'): one JSON line per job the retention removed (id, owner, finished_at,
removed_at, keep_days), so that a GET of its id says why it is gone rather than that it never was (`removed_job`); lines
older than `REMOVED_KEPT_DAYS` are dropped at the next sweep, so the file does not grow for ever either."""
REMOVED_KEPT_DAYS = 365
TRASH = ".removing-"
"""A job folder being removed is renamed to `TRASH + id` first: a reader finds the whole job or none (never a record
whose files are half gone), and a removal cut short (a stop, a file it could not delete) is finished at the next sweep."""
SWEEP_EVERY_S = 3600.0
"""Seconds between the server's sweeps of expired jobs (`remove_expired`; the first at start-up)."""
SWEEPING = ".sweeping"
"""Beside a jobs folder (`jobs.sweeping`, `patrol.sweeping` in `service.data_dir`): the file a retention sweep holds
locked while it runs (`sweep_expired`), so that of several server processes on one data folder one sweeps at a time.
Not in the folder, which holds the jobs and nothing an upload refused left behind."""


@dataclass
class Swept:
    """What one retention sweep removed: the jobs' ids and the bytes their folders held."""

    jobs: list[str] = field(default_factory=list)
    bytes: int = 0


def _finished_at(folder: Path, job: dict[str, Any]) -> float | None:
    """When the finished `job` (its record in `folder`) finished: its `finished_at`, else its record's last change (the
    finish wrote it); None when neither can be read."""
    try:
        return _timestamp(job["finished_at"]) if job.get("finished_at") else (folder / "job.json").stat().st_mtime
    except (OSError, ValueError, TypeError):
        return None


def _bytes_under(folder: Path) -> int:
    """The bytes of the files under `folder` (what removing it frees); a file gone meanwhile counts nothing."""
    total = 0
    for top, _, names in os.walk(folder):  # a link is counted, not followed
        for name in names:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                continue
    return total


def _remove_folder(folder: Path, swept: Swept) -> bool:
    """Delete `folder`, adding its bytes to `swept`; False (logged, finished at the next sweep) when a file cannot be."""
    size = _bytes_under(folder)
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        log.warning("%s: job folder not removed: %s", folder, exc)
        return False
    swept.bytes += size
    return True


def _keep_recent_removals(root: Path, now: datetime) -> None:
    """Drop the lines of `REMOVED` older than `REMOVED_KEPT_DAYS`, and any that is no removal (cut short by a stop)."""
    path = root / REMOVED
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)  # damaged bytes: that line only
    except FileNotFoundError:
        return
    oldest = (now - timedelta(days=REMOVED_KEPT_DAYS)).isoformat()
    kept = [line for line in lines if (removal := _removal(line)) is not None and removal["removed_at"] >= oldest]
    if len(kept) < len(lines):
        write_text_atomic(path, "".join(kept))


def _removal(line: str) -> dict[str, Any] | None:
    """One line of `REMOVED`; None when it is none (a line cut short by a stop)."""
    try:
        removal = json.loads(line)
    except json.JSONDecodeError:
        return None
    return removal if isinstance(removal, dict) and isinstance(removal.get("removed_at"), str) else None


def sweep_expired(root: Path, keep_days: int, now: datetime | None = None) -> Swept:
    """Remove the jobs under `root` (photo uploads' or patrol jobs') that finished, done or failed, more than `keep_days`
    days before `now`, each folder whole (its uploaded files, its report), each recorded in `REMOVED` first. A queued
    or running job is never removed, whatever its age, nor a folder without a job record (an upload still arriving).
    Nothing removed when `keep_days` is 0 (kept for ever), nor while another server process sweeps `root` (`SWEEPING`):
    two sweeps at once, each serve's hourly round, renamed and deleted the same folders under each other, logging
    `job folder not removed` for folders that were, each job's removal written twice and its bytes counted by neither."""
    swept, now = Swept(), now or datetime.now(UTC)
    if keep_days <= 0 or not root.is_dir():
        return swept
    fd = locked(root.with_name(root.name + SWEEPING))
    if fd is None:
        log.info("service.data_dir/%s: another server process is sweeping expired jobs; this one leaves them to it", root.name)
        return swept
    try:
        return _sweep(root, keep_days, now, swept)
    finally:
        os.close(fd)


def _sweep(root: Path, keep_days: int, now: datetime, swept: Swept) -> Swept:
    """`sweep_expired` under its lock."""
    cutoff = (now - timedelta(days=keep_days)).timestamp()
    _keep_recent_removals(root, now)
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(TRASH) and folder.is_dir():  # a removal cut short
            _remove_folder(folder, swept)
            continue
        job = read_job(folder) if JOB_ID.match(folder.name) else None
        if job is None or job.get("state") in UNFINISHED:
            continue
        finished = _finished_at(folder, job)
        if finished is None or finished > cutoff:
            continue
        removal = {"id": folder.name, "owner": job.get("owner"), "finished_at": job.get("finished_at"),
                   "removed_at": now.isoformat(), "keep_days": keep_days}
        with (root / REMOVED).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(removal, ensure_ascii=False) + "\n")
        trash = root / f"{TRASH}{folder.name}"
        try:
            folder.rename(trash)
        except OSError as exc:
            log.warning("%s: job folder not removed: %s", folder, exc)
            continue
        if _remove_folder(trash, swept):
            swept.jobs.append(folder.name)
    return swept


def removed_job(root: Path, job_id: str) -> dict[str, Any] | None:
    """The retention's record of job `job_id` under `root` (`REMOVED`), None when it removed no such job."""
    try:
        with (root / REMOVED).open(encoding="utf-8", errors="replace") as fh:
            found = [r for line in fh if job_id in line and (r := _removal(line)) is not None and r.get("id") == job_id]
    except FileNotFoundError:
        return None
    return found[-1] if found else None


def not_found(root: Path, job_id: str, what: str, owner: str | None = None) -> str:
    """Why `what` (triage job, patrol job) `job_id` is not there, for its 404: removed by the retention, saying when and
    after which setting, or none such. `owner`: the caller sees only that owner's jobs (an inspector): another's
    removal is no job of theirs."""
    removal = removed_job(root, job_id)
    if removal is None or owner is not None and removal.get("owner") != owner:
        return f"no {what} {job_id!r}"
    return (f"已过保留期，任务及其上传文件和报告已删除（案件及其证据仍保留） {what} {job_id!r} was removed on "
            f"{removal['removed_at'][:10]}, {removal['keep_days']} days after it finished (service.jobs_keep_days); "
            "its cases and their evidence are kept")


def remove_expired(jobs: TriageJobs, now: datetime | None = None) -> Swept:
    """Remove the photo upload and patrol jobs finished more than `service.jobs_keep_days` ago (`sweep_expired`),
    logging one line of what was freed: `serve` calls it (`api.app`'s sweep) at start-up and every
    `SWEEP_EVERY_S`. Else every job's folder (photos and videos as uploaded, 0.3 MB a photo job, far more for a patrol
    video) stayed for ever and a full disk took the case store with it."""
    keep = jobs.config.jobs_keep_days
    swept = Swept()
    for root in (jobs.root, jobs.config.patrol_dir.resolve()):
        done = sweep_expired(root, keep, now)
        swept.jobs += done.jobs
        swept.bytes += done.bytes
        for job_id in done.jobs:
            jobs.records.forget(root / job_id)
    if keep:
        log.info("jobs retention (service.jobs_keep_days: %d): %d finished job(s) removed, %d bytes (%.1f MB) freed",
                 keep, len(swept.jobs), swept.bytes, swept.bytes / 1e6)
    return swept
