"""Turning the command line's INPUT... into a list of photos to read, and refusals with reasons.

Inspectors hand over whatever their phones and laptops produced: single files, folders of a
day's work, zip archives. Archives are read in place (members are never extracted to disk), so
an entry named `../../etc/x.jpg` could do no harm here, but it is still refused by name: such an
archive is malformed or hostile and the user should know. Nested archives and password-protected
entries are refused with the reason instead of being guessed at. Listing is cheap (paths and
archive directories only), so the run knows its total for the progress bar and ETA.

Only regular files are read, and no more than the size limit (a link to /dev/zero, a FIFO): such
inputs, images in formats that are not read (GIF, SVG), dangling links and link loops in folders
are recorded with their reason, like any bad photo, instead of hanging the run or vanishing.

Zip entry names are text in an encoding the archive rarely states: only names flagged as UTF-8
say so. Windows' built-in "Send to > Compressed folder" writes the unflagged names in the
system's ANSI code page, GBK on a Chinese Windows, which the zip standard's default (IBM code
page 437) turns into box-drawing characters (`城管/照片1.jpg` read as `│╟╣▄/╒╒╞¼1.jpg`).
`open_archive` reads such names as UTF-8 when they are (macOS, Linux and older 7-Zip write it
without the flag), else as GB18030 (a superset of GBK), and only then as code page 437.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from detect.imageio import (
    IMAGE_SUFFIXES, MAX_FILE_BYTES, FileReadError, Unreadable, missing_reason, not_regular, read_file, scan_folder,
    unread_format,
)

if TYPE_CHECKING:
    from pipelines.triage.record import PhotoRecord

ARCHIVE_SUFFIXES = {".zip"}
#: Encodings tried, in order, for the entry names of an archive not flagged as UTF-8 (module docstring).
NAME_ENCODINGS = ("utf-8", "gb18030")
_UTF8_NAME = 0x800  # general purpose flag bit 11: the entry's name is UTF-8
#: Largest file read into memory (the same limit as every image file read).
MAX_PHOTO_BYTES = MAX_FILE_BYTES
MAX_ZIP_RATIO = 100
"""How many times its own size a zip's entries may add up to. Photos hardly compress (JPEG, HEIC, PNG about 1:1, a
BMP a few times); deflate packs 200 MB of zeros into 200 KB, so a 2 MB upload of such entries kept a job reading and
hashing 2 GB. The sizes the entries declare are what reading them gives at most (zipfile stops there)."""
MAX_ZIP_ENTRIES = 100_000
"""Most entries a zip may hold (a phone's day is hundreds of photos, a district's month tens of thousands). Opening a
zip, Python reads its whole central directory into memory, about 1.3 kB an entry: 300,000 empty entries in a 29 MB
upload took 390 MB and 6 s before anything was checked. `open_archive` counts them first (`count_entries`)."""
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CD_ENTRY = struct.Struct("<4s6H3L5H2L")  # a central directory entry's fixed part (46 bytes)


class TooManyEntries(ValueError):
    """A zip holding more than `MAX_ZIP_ENTRIES` entries: refused before its directory is read into memory. `zh` says
    it for the city staff who upload it (the service answers the upload with it)."""

    def __init__(self, count: str, count_zh: str):
        super().__init__(f"too many entries: {count} in one zip, more than {MAX_ZIP_ENTRIES:,} are not read "
                         "(a zip of empty entries fills memory): split the photos into smaller zips")
        self.zh = f"条目过多：一个压缩包有 {count_zh} 个条目，超过 {MAX_ZIP_ENTRIES:,} 个不予读取，请把照片分成几个较小的压缩包"


class SourceReadError(OSError):
    """A listed photo whose bytes cannot be read (gone, permission, bad archive member)."""


@dataclass(frozen=True)
class Stamp:
    """Size and modification time (ns) of the file a photo is read from (the archive, for a member), taken before
    its bytes are read: while both are as its record says, `--resume` keeps the record without reading the file
    (rereading 50,000 photos on a network share to hash them would cost the whole run again). A file written after
    the stamp was taken has another one, so the stamp never vouches for bytes that were not hashed."""

    size: int
    mtime_ns: int

    def fields(self) -> dict[str, int]:
        """The `PhotoRecord` fields that hold it."""
        return {"file_size": self.size, "file_mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class PhotoSource:
    """One photo to read: a file, or a member of a zip archive (`archive!member`)."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """What the user sees in the report and the JSONL."""
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    def locator(self) -> dict[str, str]:
        """How to find the photo again (evidence re-reads positives at full resolution)."""
        return {"path": str(self.path), **({"member": self.member} if self.member else {})}

    @classmethod
    def from_locator(cls, record: PhotoRecord) -> PhotoSource:
        """The photo a record was made from: its `path` (and `member`). A record without them (a duplicate's before
        duplicates held them) by its absolute name, `archive.zip!member` where such an archive is, else the file;
        `SourceReadError` for one named otherwise (an early release's relative name)."""
        if record.path is not None:
            return cls(Path(record.path), record.member)
        name = record.source
        if not Path(name).is_absolute():
            raise SourceReadError("its record has no file path (written by an early release): triage the photo again")
        for at in (i for i, c in enumerate(name) if c == "!"):
            archive = Path(name[:at])
            if _is_archive(archive) and archive.is_file():
                return cls(archive, name[at + 1:])
        return cls(Path(name))

    @property
    def filename(self) -> str:
        """The photo's own file name, without folders (a zip member's, not the archive's)."""
        return PurePosixPath(self.member.replace("\\", "/")).name if self.member else self.path.name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.member).suffix.lower() if self.member else self.path.suffix.lower()

    def read_bytes(self, archives: ArchiveCache) -> bytes:
        """The photo's bytes, or `SourceReadError` naming the reason."""
        try:
            if self.member is None:
                return read_file(self.path, MAX_PHOTO_BYTES)  # regular files only, bytes read capped
            return archives.read(self.path, self.member)
        except FileReadError as exc:
            raise SourceReadError(exc.reason) from None
        except FileNotFoundError:
            raise SourceReadError("file not found") from None
        except PermissionError:
            raise SourceReadError("permission denied") from None
        except IsADirectoryError:
            raise SourceReadError("is a directory") from None
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError) as exc:
            if isinstance(exc, SourceReadError):
                raise
            raise SourceReadError(f"cannot read archive member: {exc}") from None

    def stamp(self) -> Stamp | None:
        """The `Stamp` of the file it is read from now (through a symbolic link, its target's); None when that
        cannot be told (gone, no permission to look): the photo is then read as it always was."""
        try:
            info = self.path.stat()
        except OSError:
            return None
        return Stamp(info.st_size, info.st_mtime_ns)

    def modified_at(self, archives: ArchiveCache, tz: tzinfo) -> datetime | None:
        """File modification time (archive members: their stored local time), for photos without EXIF time: to the
        second, as a capture time is (its microseconds, in cases.csv and the evidence, were precision it has not)."""
        try:
            if self.member is None:
                return datetime.fromtimestamp(int(self.path.stat().st_mtime), UTC)
            return datetime(*archives.info(self.path, self.member).date_time, tzinfo=tz)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None


@dataclass(frozen=True)
class Refused:
    """An input that is not read at all, with the reason (reported like a bad photo). `zh`, where given, is the
    reason in Chinese for the city staff who uploaded it (the service refuses an upload of a zip refused whole), where
    it says more than `reasons.reason_zh` of the reason (a count)."""

    name: str
    reason: str
    zh: str | None = None


class ArchiveCache:
    """Open zip archives shared by the reader threads (zipfile serialises member reads itself)."""

    def __init__(self) -> None:
        self._open: dict[Path, zipfile.ZipFile] = {}
        self._lock = threading.Lock()

    def _zip(self, archive: Path) -> zipfile.ZipFile:
        with self._lock:
            zf = self._open.get(archive)
            if zf is None:
                zf = self._open[archive] = open_archive(archive)
            return zf

    def read(self, archive: Path, member: str) -> bytes:
        return self._zip(archive).read(member)

    def info(self, archive: Path, member: str) -> zipfile.ZipInfo:
        return self._zip(archive).getinfo(member)

    def close(self) -> None:
        with self._lock:
            for zf in self._open.values():
                zf.close()
            self._open.clear()


def expand_sources(inputs: list[Path]) -> list[PhotoSource | Refused]:
    """Files as given, folders recursively (photos and zips), zip archives member by member.

    Names are absolute paths. The same file named twice (directly and through its folder) is
    listed once; distinct files with the same content are kept and reported later as duplicates.
    """
    out: list[PhotoSource | Refused] = []
    seen: set[Path] = set()
    for given in inputs:
        given = given.absolute()  # names stay the same when a run is resumed from another directory
        if (missing := missing_reason(given)) is not None:
            if Path(os.path.realpath(given)) not in seen:
                seen.add(Path(os.path.realpath(given)))
                out.append(Refused(str(given), missing))
            continue
        files = scan_folder(given, IMAGE_SUFFIXES | ARCHIVE_SUFFIXES) if given.is_dir() else [given]
        for f in files:
            key = Path(os.path.realpath(f.path if isinstance(f, Unreadable) else f))  # realpath: no error on loops
            if key in seen:
                continue
            seen.add(key)
            if isinstance(f, Unreadable):
                out.append(Refused(str(f.path), f.reason))
            else:
                out += _archive_members(f) if _is_archive(f) else [PhotoSource(f)]
    return out


def _is_archive(path: Path) -> bool:
    return path.suffix.lower() in ARCHIVE_SUFFIXES


def _archive_members(archive: Path) -> list[PhotoSource | Refused]:
    """Photo members of one zip; unsafe, encrypted, nested or oversized members are refused. A name the archive holds
    twice (appended to) is one photo, its last entry (what reading it by name gives, as `unzip` leaves it): an input
    is recorded once, and a second record of the same name would replace the first (`journal`)."""
    try:
        mode = archive.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO named .zip would block the listing forever
            return [Refused(str(archive), not_regular(mode))]
        with open_archive(archive) as zf:
            infos = zf.infolist()
    except TooManyEntries as exc:
        return [Refused(str(archive), str(exc), exc.zh)]
    except zipfile.BadZipFile as exc:
        return [Refused(str(archive), f"not a valid zip archive ({exc})")]  # its Chinese: pipelines.triage.reasons
    except OSError as exc:
        return [Refused(str(archive), f"cannot read archive: {exc.strerror or exc}")]
    if (bomb := _bomb(archive, infos)) is not None:
        return [bomb]
    out: list[PhotoSource | Refused] = []
    for info in {i.filename: i for i in infos}.values():  # a name written twice: its last entry, the one read by name
        if info.is_dir() or _is_metadata(info.filename):
            continue
        name = f"{archive}!{info.filename}"
        suffix = PurePosixPath(info.filename).suffix.lower()
        reason = _member_problem(info) or unread_format(info.filename)
        if reason:
            out.append(Refused(name, reason))
        elif suffix in ARCHIVE_SUFFIXES:
            out.append(Refused(name, "nested zip archive: extract it and pass it as its own input"))
        elif suffix in IMAGE_SUFFIXES:
            out.append(PhotoSource(archive, info.filename))
    return out


def open_archive(archive: str | Path) -> zipfile.ZipFile:
    """A zip archive open for reading, its unflagged entry names decoded as its writer most likely
    wrote them (module docstring): the names triage lists, records and reads members back by. One of more than
    `MAX_ZIP_ENTRIES` entries raises `TooManyEntries` before zipfile reads its directory."""
    count_entries(archive)
    zf = zipfile.ZipFile(archive)
    raw = [i.orig_filename.encode("cp437") for i in zf.infolist() if not i.flag_bits & _UTF8_NAME]
    if all(name.isascii() for name in raw):
        return zf
    for encoding in NAME_ENCODINGS:
        try:
            for name in raw:
                name.decode(encoding)
        except UnicodeDecodeError:
            continue
        zf.close()
        return zipfile.ZipFile(archive, metadata_encoding=encoding)
    return zf


def count_entries(archive: str | Path) -> int:
    """How many entries the zip's central directory holds, read without holding it: refused (`TooManyEntries`) past
    `MAX_ZIP_ENTRIES` as soon as the end record declares more, or the directory is found to hold more (zipfile reads
    the directory to its declared size whatever count the end record gives, so a lying count is not trusted).
    An archive that is not a zip, or a broken one, is left to zipfile to refuse (0)."""
    with open(archive, "rb") as fp:
        found = _directory(fp)
        if found is None:
            return 0
        declared, start, size = found
        if declared > MAX_ZIP_ENTRIES:
            raise TooManyEntries(f"{declared:,}", f"{declared:,}")
        if start < 0:
            return 0
        fp.seek(start)
        count = 0
        while size >= _CD_ENTRY.size and (head := fp.read(_CD_ENTRY.size))[:4] == b"PK\x01\x02":
            count += 1
            if count > MAX_ZIP_ENTRIES:
                raise TooManyEntries(f"more than {MAX_ZIP_ENTRIES:,} (it declares {declared:,})",
                                     f"{MAX_ZIP_ENTRIES:,} 以上（其目录声明 {declared:,} 个）")
            fields = _CD_ENTRY.unpack(head)
            skip = fields[10] + fields[11] + fields[12]  # name, extra field and comment lengths
            fp.seek(skip, os.SEEK_CUR)
            size -= _CD_ENTRY.size + skip
        return count


def _directory(fp) -> tuple[int, int, int] | None:
    """(entries declared, offset, size) of the central directory from the end record (its ZIP64 one where the
    numbers overflow it), found the way zipfile finds it (data before the zip shifts every offset); None if none."""
    end = fp.seek(0, os.SEEK_END)
    fp.seek(max(0, end - _EOCD.size - 0xFFFF))  # the record, then a comment of at most 64 kB
    tail = fp.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        return None
    record = end - len(tail) + at
    _, _, _, _, entries, size, _, _ = _EOCD.unpack_from(tail, at)
    locator = tail[at - _EOCD64_LOCATOR.size:at] if at >= _EOCD64_LOCATOR.size else b""
    if locator[:4] == b"PK\x06\x07" and record >= _EOCD64_LOCATOR.size + _EOCD64.size:
        fp.seek(record - _EOCD64_LOCATOR.size - _EOCD64.size)
        zip64 = fp.read(_EOCD64.size)
        if zip64[:4] == b"PK\x06\x06":
            entries, size = _EOCD64.unpack(zip64)[7:9]
            return entries, record - _EOCD64_LOCATOR.size - _EOCD64.size - size, size
    return entries, record - size, size


def _bomb(archive: Path, infos: list[zipfile.ZipInfo]) -> Refused | None:
    """The refusal of `archive`, whose entries are `infos`, whole as a zip bomb (`MAX_ZIP_RATIO`), or None. The whole
    archive: entries that each look harmless add up (and a lie about one's compressed size is not read)."""
    size = archive.stat().st_size
    total = sum(i.file_size for i in infos)
    if total <= MAX_ZIP_RATIO * max(size, 1):
        return None
    mb, of = f"{total / 2**20:,.0f}", f"{size / 2**20:,.1f}"
    return Refused(str(archive), f"zip bomb: its entries expand to {mb} MB from {of} MB, more than {MAX_ZIP_RATIO} "
                                 "times (photos hardly compress): refused unread",
                   f"疑似压缩炸弹：{of} MB 的压缩包解压后共 {mb} MB，超过其 {MAX_ZIP_RATIO} 倍（照片几乎无法压缩），未读取")


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    if info.filename.startswith(("/", "\\")) or ".." in parts:
        return "unsafe path in archive (absolute or '..' path traversal): refused"
    if drive := PureWindowsPath(info.filename).drive:  # C:/DCIM/x.jpg, C:x.jpg: neither absolute here nor '..', but a drive to Windows
        return f"unsafe path in archive (it begins with the drive name {drive!r}, as Windows reads it): refused"
    if info.flag_bits & 0x1:
        return "password-protected (encrypted) archive entry: cannot be read"
    if info.file_size > MAX_PHOTO_BYTES:
        return f"archive entry too large ({info.file_size / 2**20:.0f} MB > {MAX_PHOTO_BYTES / 2**20:.0f} MB)"
    return None


def _is_metadata(filename: str) -> bool:
    """macOS resource forks (`__MACOSX/`, `._name`) that Finder adds to every zip it makes."""
    path = PurePosixPath(filename)
    return path.parts[:1] == ("__MACOSX",) or path.name.startswith("._")
