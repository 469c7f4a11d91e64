"""The reader stage: bytes -> content hash -> reduced-resolution pixels + capture time and place.

Runs in the reader threads, so it must be cheap and never raise for a bad photo: a 12 MP JPEG is
decoded at 1/2, 1/4 or 1/8 scale (whatever still covers the network input), which is most of
triage's speed; full resolution is decoded later only for the evidence of positive photos.
The content hash is the photo's id: it names thumbnails and evidence, and is the resume key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from detect.engine.profile import StageProfile
from detect.frames import Frame, GeoPoint
from detect.grades import Grade
from detect.imageio import ImageReadError, decode_image
from pipelines.times import possible_capture
from pipelines.triage.exif import PhotoFacts, name_time, read_facts
from pipelines.grid import GridCells
from pipelines.triage.journal import Journal
from pipelines.triage.reasons import reason_zh
from pipelines.triage.record import PhotoRecord, RecordStatus
from pipelines.triage.settings import TriageSettings
from pipelines.triage.sources import ArchiveCache, PhotoSource, Refused, SourceReadError, Stamp


@dataclass
class Photo:
    """A decoded photo on its way through detection and rules."""

    source: PhotoSource
    sha256: str
    image: np.ndarray  # BGR, reduced resolution
    full_size: tuple[int, int]  # (width, height) after EXIF orientation
    taken_at: datetime
    time_source: str  # exif | name | file | run
    geo: GeoPoint | None = None
    grid_cell: str | None = None
    grade: Grade | None = None  # the road grade of its grid cell (the rules' types and thresholds for it)
    warnings: list[str] = field(default_factory=list)
    data: bytes | None = None  # the file's bytes, kept only until OCR has had its chance
    stamp: Stamp | None = None  # its file's size and modification time before it was read (`--resume` skips it unread)

    @property
    def photo_id(self) -> str:
        """Short id used in file names and the report (first 16 hex digits of the SHA-256)."""
        return self.sha256[:16]

    @property
    def scale(self) -> float:
        """Full-resolution pixels per decoded pixel."""
        return self.full_size[0] / self.image.shape[1]

    def frame(self) -> Frame:
        """The reduced-resolution frame the rules judge (`path` only for files on disk, not archive members)."""
        path = None if self.source.member else str(self.source.path)
        return Frame(image=self.image, source_id=self.photo_id, ts=self.taken_at, frame_id=self.sha256, geo=self.geo,
                     path=path, meta={"source": self.source.name, "full_size": self.full_size})

    def stamp_fields(self) -> dict[str, int]:
        """The record fields of its `stamp` (none when it could not be taken)."""
        return self.stamp.fields() if self.stamp else {}

    def facts(self) -> dict[str, Any]:
        """The record fields every readable photo has (`PhotoRecord` keyword arguments)."""
        return {
            "width": self.full_size[0],
            "height": self.full_size[1],
            "taken_at": self.taken_at.isoformat(),
            "time_source": self.time_source,
            "lat": self.geo.lat if self.geo else None,
            "lon": self.geo.lon if self.geo else None,
            "grid_cell": self.grid_cell,
            "warnings": self.warnings,
        }


@dataclass
class Skipped:
    """Already recorded by an earlier run (`--resume`)."""

    source: PhotoSource | Refused
    gone: bool = False  # judged earlier, refused unread now (moved, deleted): its record is kept
    unreadable: bool = False  # judged earlier, its bytes cannot be read now (permission ...): nothing says it changed


def error_record(source: str, reason: str, sha256: str | None = None, status: str = RecordStatus.ERROR, **extra: Any) -> PhotoRecord:
    """The record of an input that was not judged (`status` error or duplicate); `extra`: other record fields
    (`duplicate_of`, the photo's facts when it was read)."""
    zh = extra.pop("reason_zh", None) or reason_zh(reason)  # a refusal may say it in Chinese itself (`Refused.zh`)
    return PhotoRecord(source=source, sha256=sha256, status=status, reason=reason, **({"reason_zh": zh} if zh else {}), **extra)


def capture_time(source: PhotoSource, facts: PhotoFacts, archives: ArchiveCache, tz: ZoneInfo,
                 sent_as: str | None = None) -> tuple[datetime, str]:
    """When the photo was taken and where that came from (`PhotoRecord.time_source`): its EXIF, else the time
    its file name carries (`exif.name_time`; the name it was sent as, `sent_as`, for an upload stored as `0001.jpg`,
    whose own name and modification time say only when it was uploaded), else the file's modification time (often the day it was copied),
    else the time of the run. An impossible time in the name or of the file (a zip member's 1980-01-01, a camera's
    1970, a time in the future: `pipelines.times.possible_capture`) is not used; it becomes a warning in `facts`."""
    if facts.taken_at is not None:
        return facts.taken_at, "exif"
    try:
        filename = PurePosixPath(sent_as.replace("\\", "/")).name if sent_as and not source.member else source.filename
        if (named := name_time(filename, tz)) is not None:
            return named, "name"
    except ValueError as exc:
        facts.warnings.append(f"file name time impossible: {exc}")
    if (modified := source.modified_at(archives, tz)) is not None:
        try:
            return possible_capture(modified, source.filename), "file"
        except ValueError as exc:
            facts.warnings.append(f"file time impossible: {exc}; the run's time is used")
    return datetime.now(UTC), "run"


def load_photo(
    source: PhotoSource,
    archives: ArchiveCache,
    settings: TriageSettings,
    journal: Journal,
    grid: GridCells | None,
    stages: StageProfile,
) -> Photo | Skipped | PhotoRecord:
    """Read, hash and decode one photo; an error or duplicate comes back as its finished record.

    An input done earlier whose file has the stamp its record holds is skipped unread (`Journal.unchanged`).
    Times the `read` (bytes + hash) and `decode` (pixels + EXIF facts) stages into `stages`.
    """
    name = source.name
    stamp = source.stamp()  # before the bytes: a write while they are read changes it
    if stamp is not None and journal.unchanged(name, stamp):
        return Skipped(source)
    stamped = stamp.fields() if stamp else {}
    try:
        with stages.timed("read"):
            data = source.read_bytes(archives)
            sha = hashlib.sha256(data).hexdigest()
    except SourceReadError as exc:  # a photo judged earlier keeps its result: only other bytes would say it changed
        if journal.judged_before(name):
            return Skipped(source, unreadable=True)
        return error_record(name, journal.why_unread(name, str(exc)))
    if journal.seen(name, sha):
        return Skipped(source)
    first = journal.done_hashes.get(sha)
    if first is not None:
        return error_record(name, f"duplicate of {first}", sha, status="duplicate", duplicate_of=first, **source.locator(), **stamped)
    try:
        with stages.timed("decode"):
            decoded = decode_image(data, name, max_side=settings.imgsz)
            facts = read_facts(decoded.exif, settings.tz)
    except ImageReadError as exc:
        return error_record(name, exc.reason, sha)
    taken_at, time_source = capture_time(source, facts, archives, settings.tz, settings.names.get(str(source.path)))
    cell = grid.cell_at(facts.geo) if grid is not None and facts.geo is not None else None
    return Photo(
        source=source,
        sha256=sha,
        image=decoded.image,
        full_size=decoded.full_size,
        taken_at=taken_at,
        time_source=time_source,
        geo=facts.geo,
        grid_cell=cell[0] if cell else None,
        grade=cell[1] if cell else None,
        warnings=facts.warnings,
        data=data,
        stamp=stamp,
    )
