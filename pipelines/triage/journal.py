"""`results.jsonl`: one record per photo (`record.PhotoRecord`), written as each photo finishes, and the resume key.

The journal is the run's memory: records are appended and flushed one by one, so a run killed
at photo 30,000 keeps 30,000 records, and `--resume` continues from them. A record killed half
way through its line is cut off on resume (its photo is simply done again). The report, the CSV
and the cases are all built by streaming this file afterwards, so nothing per photo is held in
memory during a run except the small resume indexes below.

An input judged earlier (or found a duplicate) whose file has the size and modification time its record
holds (`unchanged`) is kept without being read: only a file whose stamp changed is hashed again, and a
touched but identical one keeps its record. Records without a stamp (earlier releases) are hashed.

An input whose record is an error is not done: `--resume` tries it again (the detector or a disk
may have failed, or the file been replaced since; an unreadable file costs one read to retry). An
input judged earlier whose content is not the same now (another photo saved under its name: the
SHA-256 of its bytes differs from its record's) is judged again. Either way its new record
supersedes the earlier one, whose line is dropped when the journal of a finished run is closed (the
earlier record of a judged photo going to `replaced` and `WITHDRAW`, for its cases to be withdrawn), so every input is
reported, counted and made into cases once, as it is now. The inputs recorded as duplicates of such
a changed input's earlier content are judged themselves (`copies_of_changed`), so that content's
result is not lost with the record it was in, whether or not the resumed run lists them: one that
cannot be read where it was recorded gets an error saying it needs judging (`why_unread`). An input judged earlier that is no longer
there (moved, deleted: refused unread now), or whose bytes cannot be read now (permission denied:
nothing says its content changed), keeps its record and gets no error beside it (`judged_before`);
one whose bytes are other now and unreadable (truncated, emptied) has changed, and its error
replaces the record.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from detect.config_io import replaced_atomically
from pipelines.triage.record import PhotoRecord, RecordStatus
from pipelines.triage.sources import Stamp

RESULTS = "results.jsonl"
WITHDRAW = "withdraw.jsonl"
"""The judged records with findings that a finished run dropped from `results.jsonl` (superseded: `Journal.replaced`),
written before that rewrite and removed once a run writing cases has withdrawn the cases drafted from them
(`settle_withdrawals`): a run killed in between, or one without cases (`--no-cases`, no key), leaves them for the next."""


class RecordError(ValueError):
    """A line of `results.jsonl` that is not a photo record; the message names file, line and field.
    `not_json`: the line is not JSON at all (a line cut short by a kill, when it is the last)."""

    def __init__(self, message: str, *, not_json: bool = False) -> None:
        super().__init__(message)
        self.not_json = not_json


def parse_record(data: str | bytes | dict[str, Any], where: str) -> PhotoRecord:
    """A line (or its decoded mapping) as a `PhotoRecord`, or `RecordError` naming `where` (file:line), the
    field and why. A line is parsed and validated in one pass (pydantic's JSON parser: 1.5x faster)."""
    try:
        if isinstance(data, dict):
            return PhotoRecord.model_validate(data)
        return PhotoRecord.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise RecordError(f"{where}: not JSON: {errors[0]['msg']}", not_json=True) from None
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(line)'}: {e['msg']}" for e in errors)
        raise RecordError(f"{where}: not a photo record: {problems}") from None


class JournalExists(FileExistsError):
    """The output folder already holds a run; the message says how to continue it."""


class OutputUnwritable(RuntimeError):
    """A file of the output folder cannot be written (a full disk, a read-only mount, a quota): not a problem of the
    photo being recorded, so the run stops there, naming the file and the reason, instead of recording every later
    photo as an internal error; what was written before stays for `--resume`."""

    #: Errors of a write that say every later write to the folder fails alike (a full disk or quota, a read-only mount,
    #: no permission); another (a directory where the thumbnail goes) is the one photo's, recorded as its error.
    FOLDER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"cannot write {path}: {exc.strerror or exc}")


class InputGone(FileNotFoundError):
    """A folder or archive the resumed run read photos from is not there now; the message names it and what to do."""


class Journal:
    """Append-only JSONL of photo records with the resume indexes of earlier runs.

    `done_hashes` maps each content hash judged (`ok`) to the first source that had it; `done_pairs`
    holds the (source, hash) pairs judged or found duplicate: what a resumed run skips; `done_sources`
    their sources, whatever the content was. `failed` maps each input whose latest record is an error
    to its reason: what a resumed run tries again (module docstring). `done_sources` and `failed` stay
    as the earlier runs left them (this run's counts are told against them); `done_pairs` and
    `done_hashes` forget a content its input no longer has. Lines are only ever appended while a run
    goes; superseded records go at `close`.
    """

    def __init__(self, out_dir: Path, *, resume: bool) -> None:
        self.path = out_dir / RESULTS
        self.done_hashes: dict[str, str] = {}
        self.done_pairs: set[tuple[str, str | None]] = set()
        self.done_sources: set[str] = set()
        self.failed: dict[str, str] = {}
        self.previous = 0
        self._lines = 0  # complete lines in the file
        self._latest: dict[str, tuple[int, str | None]] = {}  # source -> (line, content hash) of its latest record
        self._stale: set[int] = set()  # lines of records superseded by a later record of the same source
        self._copies: dict[str, PhotoRecord] = {}  # source -> its latest record, when that calls it a duplicate
        self._orphans: dict[str, str] = {}  # source -> the changed input it was a duplicate of (`forget`)
        self._stamps: dict[str, Stamp] = {}  # source -> the stamp of its file its latest record holds (judged, duplicate)
        self.pending = out_dir / WITHDRAW
        if self.path.exists() and self.path.stat().st_size:
            if not resume:
                raise JournalExists(
                    f"{self.path} already exists: pass --resume to continue that run, or choose another --out"
                )
            self._load()
        # judged records with findings that later ones superseded, dropped at `close`: an earlier run's not withdrawn yet
        self.replaced: list[PhotoRecord] = list(read_records(self.pending)) if self.pending.exists() else []
        out_dir.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        """Index the records of earlier runs and cut off a torn last line."""
        good_end = 0
        with self.path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    break
                try:
                    record = parse_record(line, f"{self.path}:{number}")
                except RecordError as exc:
                    if exc.not_json:
                        break
                    raise
                good_end += len(line)
                self._lines = number
                self._index(record)
        if good_end < self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)

    def _index(self, record: PhotoRecord) -> None:
        """Add an earlier run's record (line `self._lines`) to the resume indexes."""
        self._supersede(record)
        self.previous += 1
        if record.status is RecordStatus.ERROR:
            self.failed[record.source] = record.reason or ""
            return
        self.failed.pop(record.source, None)
        self.done_pairs.add((record.source, record.sha256))
        self.done_sources.add(record.source)
        if record.ok and record.sha256:
            self.done_hashes.setdefault(record.sha256, record.source)

    def _supersede(self, record: PhotoRecord) -> None:
        """`record` (line `self._lines`) supersedes its input's earlier record: that line goes at `close`, and the
        content it held is no longer a reason to skip the input or to call another input its duplicate."""
        if (earlier := self._latest.get(record.source)) is not None:
            line, sha = earlier
            self._stale.add(line)
            self.done_pairs.discard((record.source, sha))
            if sha is not None and self.done_hashes.get(sha) == record.source:
                del self.done_hashes[sha]
        self._latest[record.source] = (self._lines, record.sha256)
        self._copies.pop(record.source, None)
        self._stamps.pop(record.source, None)
        if record.status is not RecordStatus.ERROR and record.file_size is not None and record.file_mtime_ns is not None:
            self._stamps[record.source] = Stamp(record.file_size, record.file_mtime_ns)
        if record.status is RecordStatus.DUPLICATE and record.duplicate_of:
            self._copies[record.source] = record

    def __getstate__(self) -> dict[str, Any]:
        """A copy sent to another process (a Ray worker reading photos) carries the resume indexes
        only: it answers `seen` and `done_hashes`; records are appended by the process that opened it."""
        return {**self.__dict__, "_fh": None}

    def seen(self, source: str, sha: str | None) -> bool:
        """This exact input (same name, same content) is already judged or a duplicate."""
        return (source, sha) in self.done_pairs

    def unchanged(self, source: str, stamp: Stamp) -> bool:
        """This input is done (`seen` with its latest record's content) and its file has the stamp that record holds:
        nothing says its content changed, so it is kept without reading it (a record without a stamp: never)."""
        latest = self._latest.get(source)
        return latest is not None and self._stamps.get(source) == stamp and self.seen(source, latest[1])

    def refused_before(self, source: str, reason: str) -> bool:
        """An input refused unread (`sources.Refused`) whose latest record is this same refusal: nothing to redo."""
        return self.failed.get(source) == reason

    def judged_before(self, source: str) -> bool:
        """This input's latest record is judged or a duplicate: when it is now refused unread (moved or deleted since)
        or its bytes cannot be read, that record stands, and an error beside it would list the input both ways in the
        report and the CSV."""
        return source in self.done_sources and source not in self.failed

    def retries(self, names: Iterable[str]) -> int:
        """How many of these inputs failed in an earlier run (and are tried again)."""
        return sum(name in self.failed for name in names)

    def recorded_under(self, folder: str) -> int:
        """How many inputs recorded earlier were found inside `folder` (a folder's files, an archive's members)."""
        inside = (folder.rstrip(os.sep) + os.sep, folder + "!")
        return sum(source.startswith(inside) for source in self._latest)

    def copies_of_changed(self) -> dict[str, PhotoRecord]:
        """The latest records of inputs they call a duplicate of an input whose latest record now holds another content
        (replaced since), by input: the judgement of their content went with that input's superseded record."""
        return {source: record for source, record in self._copies.items()
                if record.duplicate_of in self._latest and self._latest[record.duplicate_of][1] != record.sha256}

    def forget(self, names: Iterable[str]) -> None:
        """Judge these inputs in this run although their latest records say they are done (`copies_of_changed`)."""
        for name in names:
            self.done_pairs.discard((name, self._latest[name][1]))
            self.done_sources.discard(name)
            if name in self._copies:
                self._orphans[name] = self._copies[name].duplicate_of or ""

    def why_unread(self, source: str, reason: str) -> str:
        """The error of an input that cannot be read (`reason`); for a copy of a changed input taken up to be judged
        (`forget`), also what it was and why it needs judging, as it may be named nowhere in this run."""
        if (first := self._orphans.get(source)) is None:
            return reason
        return (f"{reason}; it was recorded as a duplicate of {first}, whose content has changed since, and needs "
                "judging itself: put it back and resume with it among the inputs")

    def append(self, record: PhotoRecord | dict[str, Any]) -> None:
        """Write one record (a mapping is validated as one first) and push it to the OS (a kill loses at most
        the line being written)."""
        if not isinstance(record, PhotoRecord):
            record = parse_record(record, f"{self.path}: new record")
        line = record_line(record)  # serialised first: never half a line
        try:
            self._fh.write(line)
            self._fh.flush()
        except OSError as exc:
            raise OutputUnwritable(self.path, exc) from None
        self._lines += 1
        self._supersede(record)

    def close(self, *, drop: bool = True) -> None:
        """Push the records to disk, then drop the records that later ones of the same input superseded; those judged
        with findings go to `replaced`, as cases may have been drafted from what they held (`run.finish` withdraws
        them). `drop` False (a run stopped part way): they stay, and the resume that finishes finds them again."""
        if not self._fh.closed:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            except OSError as exc:  # a torn last line stays: the resume cuts it off and redoes its photo
                with contextlib.suppress(OSError):
                    self._fh.close()
                raise OutputUnwritable(self.path, exc) from None
        if self._stale and drop:
            self._drop_lines(self._stale)
            self._stale = set()

    def _drop_lines(self, numbers: set[int]) -> None:
        """Rewrite the file without lines `numbers` (1-based), atomically: a kill leaves the old file whole,
        and the next `--resume` finds the superseded records again; a rewrite that fails (a full disk, a line that is
        no record) leaves no temporary file beside it (`replaced_atomically`). The judged records with findings among
        them are written to `WITHDRAW` before the new file replaces the old: once they are out of the journal, that
        file is all that says which cases to withdraw."""
        dropped: list[PhotoRecord] = []
        with replaced_atomically(self.path) as tmp, self.path.open("rb") as src, tmp.open("wb") as dst:
            for number, line in enumerate(src, 1):
                if number not in numbers:
                    dst.write(line)
                elif (record := parse_record(line, f"{self.path}:{number}")).ok and record.findings:
                    dropped.append(record)
            dst.flush()
            os.fsync(dst.fileno())
            if dropped:
                self._keep_for_withdrawal(dropped)

    def _keep_for_withdrawal(self, dropped: list[PhotoRecord]) -> None:
        """Add `dropped` to `replaced` and write them all to `WITHDRAW`, whole (`replaced_atomically`) and on disk
        (fsync), each record once (a rewrite killed before its rename drops the same lines again)."""
        kept = {(r.source, r.sha256) for r in self.replaced}
        self.replaced += [r for r in dropped if (r.source, r.sha256) not in kept]
        with replaced_atomically(self.pending) as tmp, tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(record_line(r) for r in self.replaced)
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> Iterator[PhotoRecord]:
        """Stream every record (earlier runs and this one) from disk."""
        yield from read_records(self.path)


def record_line(record: PhotoRecord) -> str:
    """`record` as its line of `results.jsonl` (or `WITHDRAW`)."""
    return json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"


def settle_withdrawals(out_dir: Path) -> None:
    """The cases drafted from the records `WITHDRAW` keeps were withdrawn (or left to their reviewers): forget them."""
    (out_dir / WITHDRAW).unlink(missing_ok=True)


def read_records(path: Path) -> Iterator[PhotoRecord]:
    """Every record of a finished `results.jsonl`, typed (a line that is not one: `RecordError`)."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield parse_record(line, f"{path}:{number}")
