"""Reading images from files and bytes, with a clear error per file.

Every path that turns user files into pixels goes through here, so the checks are the same for
`streetwatch detect`, photo triage and uploads: special files (devices, FIFOs), files over the
size limit, empty files, non-images, truncated data and decompression bombs are refused with the
file name and the reason, and one bad file never stops a batch. Folder scans (`scan_folder`)
report what they cannot use (GIF/SVG, broken links, special files) instead of skipping it. Phones' EXIF orientation is applied. `max_side` asks the JPEG decoder for a reduced
resolution (DCT scaling), which is how triage reads 12 MP photos cheaply.

Pillow reads every header (format, size, EXIF) and every non-JPEG format. A complete JPEG's pixels
come from OpenCV's libjpeg-turbo straight into BGR: on a 12 MP photo decoded at 1/4 that is
15.6 ms against 22.2 ms through Pillow (its RGB copy and channel swap included), measured on
this project's 2-core CPU. A JPEG that does not end in its end-of-image marker (truncated, or
with data appended by the phone) goes through Pillow, which says what is wrong with it.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import av

try:  # HEIC/HEIF from phones; optional so that lean installs still read JPEG/PNG/WebP.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the install
    pass

#: File suffixes of the image formats read here (folder scans pick these up). `.jfif` is how WeChat for Windows and
#: browsers save a JPEG, `.jpe` an older one: both are JPEG, and a folder of them was skipped without a word.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"})
#: Pillow format -> the suffix a file of it is stored under. A received photo is named by what its bytes are, never by
#: the name it was sent with: the evidence store serves a file with the type its name says, so a photo sent as
#: `after.html` (a JPEG whose comment holds a script) was served as a page of the service's own origin.
FORMAT_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
                   "HEIF": ".heic", "AVIF": ".heic"}

#: Image formats met in photo folders that are not read: reported per file, never skipped silently.
UNREAD_IMAGE_SUFFIXES = {".gif": "GIF", ".svg": "SVG", ".svgz": "SVG", ".ico": "ICO", ".psd": "Photoshop",
                         ".dng": "camera RAW", ".cr2": "camera RAW", ".cr3": "camera RAW", ".nef": "camera RAW",
                         ".arw": "camera RAW", ".raf": "camera RAW", ".orf": "camera RAW", ".rw2": "camera RAW"}

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".3gp", ".avi", ".mkv", ".webm", ".flv", ".wmv"})
"""Videos found among photos (a phone's folder, a WeChat export): not judged as photos, but named with the way they
are judged (`unread_format`), not left out without a word."""
VIDEO_NOT_READ = "a video is not judged as photos: run `streetwatch patrol VIDEO` (or upload it as a patrol video)"

#: Default pixel limit: 12 MP phone photos are fine, a 40,000 x 40,000 PNG bomb is not.
DEFAULT_MAX_PIXELS = 100_000_000

#: Largest file read into memory; a phone photo is 2-15 MB, a RAW or panorama maybe 80 MB.
MAX_FILE_BYTES = 200 * 1024 * 1024


class FileReadError(OSError):
    """A file that cannot be read as a user's photo; `reason` says why in the user's words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def not_regular(mode: int) -> str:
    """Why a path that is not a plain file cannot be read as one."""
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a directory" if stat.S_ISDIR(mode) else "not a file")
    return f"not a regular file ({kind})"


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def read_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, or `FileReadError` with the reason.

    Only regular files are read (a path to /dev/zero, a FIFO or a socket would read forever or
    block): the file is opened without blocking and checked on the open descriptor, so it cannot
    be swapped in between. The size is checked before reading and the bytes actually read are
    capped too (files in /proc, or one that grows, report a size they do not have).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileReadError("dangling symbolic link (its target does not exist)" if Path(path).is_symlink()
                            else "file not found") from None
    except PermissionError:
        raise FileReadError("permission denied") from None
    except IsADirectoryError:
        raise FileReadError("is a directory, not an image file") from None
    except OSError as exc:
        raise FileReadError("symbolic link loop" if exc.errno == errno.ELOOP else f"cannot open: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileReadError("is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise FileReadError(not_regular(info.st_mode))
        raise FileReadError(f"larger than {_mb(max_bytes)} ({_mb(info.st_size)})")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        chunks, total = [], 0
        try:
            while chunk := fh.read(min(1 << 20, max_bytes + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise FileReadError(f"larger than {_mb(max_bytes)} (more bytes than its size said; reading stopped)")
        except OSError as exc:
            if isinstance(exc, FileReadError):
                raise
            raise FileReadError(f"read error: {exc.strerror or exc}") from None
    return b"".join(chunks)


@dataclass(frozen=True)
class Unreadable:
    """An entry of a folder that looks like a photo but cannot be one, with the reason (reported like a bad file)."""

    path: Path
    reason: str


def scan_folder(folder: Path, suffixes: frozenset[str] | set[str] = IMAGE_SUFFIXES) -> list[Path | Unreadable]:
    """Files below `folder` (recursive, sorted) with one of `suffixes`, and every entry that would have been
    one but cannot be read, with the reason: images in formats not read (GIF, SVG, RAW...), special files
    (FIFOs, devices), dangling links, link loops, symbolic links to folders (not followed: no loops),
    and sub-folders that cannot be listed, videos (judged otherwise: `VIDEO_NOT_READ`). Other files (documents) are not
    listed."""
    out: list[Path | Unreadable] = []
    errors: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=errors.append):
        base = Path(root)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                out.append(Unreadable(base / name, "symbolic link to a folder: not followed (pass that folder itself)"))
        for name in files:
            item = _classify(base / name, suffixes)
            if item is not None:
                out.append(item)
    out += [Unreadable(Path(e.filename or folder), f"folder cannot be listed: {e.strerror}") for e in errors]
    return sorted(out, key=lambda item: item if isinstance(item, Path) else item.path)


def list_inputs(paths: list[Path], suffixes: frozenset[str] | set[str] = IMAGE_SUFFIXES) -> tuple[list[Path], list[Unreadable]]:
    """Files as given plus, for folders, every file with a known suffix below them (sorted), and the
    folder entries that look like images but cannot be read, with the reason (GIF/SVG, broken links,
    special files; `scan_folder`).

    Files named explicitly are kept whatever they are, so a mislabelled or special file is reported
    with its real problem when it is read instead of being skipped silently.
    """
    files: list[Path] = []
    refused: list[Unreadable] = []
    for p in paths:
        if p.is_dir():
            for item in scan_folder(p, suffixes):
                (refused if isinstance(item, Unreadable) else files).append(item)
        else:
            files.append(p)
    return files, refused


def expand_inputs(paths: list[Path], suffixes: frozenset[str] | set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The readable candidates of `list_inputs` (benchmarks: the refusals do not matter there)."""
    return list_inputs(paths, suffixes)[0]


def missing_reason(path: Path) -> str | None:
    """Why `path` leads to nothing (dangling link, link loop, gone), or None when it does lead somewhere."""
    try:
        path.stat()
    except FileNotFoundError:
        return "dangling symbolic link (its target does not exist)" if path.is_symlink() else "not found"
    except OSError as exc:
        return "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
    return None


def unread_format(name: str) -> str | None:
    """Why a file of this name is not read, when its suffix is an image format that is not (GIF, SVG, RAW...): the
    one reason a folder's file and a zip's entry both get, rather than vanishing from the run."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VIDEO_NOT_READ
    fmt = UNREAD_IMAGE_SUFFIXES.get(suffix)
    return None if fmt is None else f"{fmt} files are not read: convert to JPEG or PNG (read: JPEG, PNG, WebP, BMP, TIFF, HEIC)"


def _classify(path: Path, suffixes: frozenset[str] | set[str]) -> Path | Unreadable | None:
    suffix = path.suffix.lower()
    why = missing_reason(path)
    if why == "not found":  # removed while we listed
        return None
    if why is not None:
        return Unreadable(path, why)
    info = path.stat()
    if suffix not in suffixes and (unread := unread_format(path.name)) is not None:
        return Unreadable(path, unread)
    if suffix not in suffixes:
        return None
    if not stat.S_ISREG(info.st_mode):
        return Unreadable(path, not_regular(info.st_mode))
    return path


class ImageReadError(ValueError):
    """An input that cannot be used as an image; `str()` names the input and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class DecodedImage:
    """Pixels plus what was learnt while decoding (needed for evidence crops and EXIF)."""

    image: np.ndarray  # BGR uint8
    full_size: tuple[int, int]  # (width, height) of the stored image after EXIF orientation
    exif: Image.Exif | None
    format: str | None

    @property
    def scale(self) -> float:
        """Decoded width / full width (1.0 unless a reduced decode was asked for)."""
        return self.image.shape[1] / self.full_size[0]


def decode_image(
    data: bytes | Path | str,
    source: str | None = None,
    *,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode a file path or bytes to BGR pixels, or raise `ImageReadError`.

    `max_side` lets JPEG decode at 1/2, 1/4 or 1/8 resolution while staying >= max_side on the
    long edge; other formats decode in full. The pixel limit is checked from the header before
    any pixels are decoded.
    """
    name = source or (str(data) if isinstance(data, (str, Path)) else "<bytes>")
    if isinstance(data, (str, Path)):
        try:
            payload = read_file(data)
        except FileReadError as exc:
            raise ImageReadError(name, exc.reason) from None
    else:
        payload = bytes(data)
    if not payload:
        raise ImageReadError(name, "empty file (0 bytes)")

    with warnings.catch_warnings():
        # Pillow warns from ~89 MP on; our own limit (`max_pixels`, documented 100 MP) is checked below
        # from the header, before any pixel is decoded. Pillow still refuses outright from ~179 MP.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = _pil_open(io.BytesIO(payload))
        except UnidentifiedImageError:
            raise ImageReadError(name, "not an image (unrecognised format)") from None
        except Image.DecompressionBombError:
            raise ImageReadError(name, f"image too large: over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP "
                                       f"> limit {max_pixels / 1e6:.0f} MP") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
            raise ImageReadError(name, f"cannot open image: {exc}") from None

        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageReadError(name, f"invalid image size {width}x{height}")
        if width * height > max_pixels:
            raise ImageReadError(
                name, f"image too large: {width}x{height} = {width * height / 1e6:.0f} MP > limit {max_pixels / 1e6:.0f} MP"
            )
        try:
            exif = img.getexif()
        except Exception:  # noqa: BLE001 - broken EXIF must not lose the picture
            exif = None
        orientation = _orientation(exif)
        full_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if img.format == "JPEG" and (fast := _opencv_jpeg(payload, width, height, max_side)) is not None:
            return DecodedImage(image=_orient(fast, orientation), full_size=full_size, exif=exif, format="JPEG")
        if max_side and img.format == "JPEG" and max(width, height) > max_side:
            scale = max_side / max(width, height)
            img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(name, f"corrupt or truncated image data: {exc}") from None
        fmt = img.format
        if orientation not in (None, 1):
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - keep the un-rotated picture over losing it
                pass
    # One copy out of Pillow, one SIMD channel swap: a third of the non-decode cost of a 12 MP photo.
    rgb = np.asarray(img if img.mode == "RGB" else _eight_bit(img).convert("RGB"))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return DecodedImage(image=bgr, full_size=full_size, exif=exif, format=fmt)


def _eight_bit(img: Image.Image) -> Image.Image:
    """Gray images of more than 8 bits per pixel as 8-bit gray, keeping their contrast.

    Pillow's own conversion to RGB clips such values at 255, so a 16-bit PNG or TIFF (a scanner's, a
    camera app's export) would turn almost white and show the detector nothing. 16-bit modes keep
    their top byte; 32-bit integer and float pixels, whose range no header states, are stretched
    from their own minimum to their maximum."""
    if img.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
    if img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    return img


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Full-resolution BGR pixels of one file, or `ImageReadError`."""
    return decode_image(path, max_pixels=max_pixels).image


def _pil_open(fp: io.BytesIO) -> Image.Image:
    """`PIL.Image.open` without Ultralytics' global patch.

    Importing ultralytics replaces `Image.open` with a wrapper that, on any unidentified file,
    tries to pip-install `pi-heif`; a text file posing as a JPEG must be reported as such instead
    (and we register HEIF support ourselves above).
    """
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", None) or Image.open
    return opener(fp)


#: OpenCV's DCT-scaled JPEG decodes, largest reduction first.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2), (1, cv2.IMREAD_COLOR))


def _opencv_jpeg(payload: bytes, width: int, height: int, max_side: int | None) -> np.ndarray | None:
    """BGR pixels of a complete JPEG at the largest reduction that keeps the long side >= `max_side`
    (like Pillow's draft mode), EXIF orientation not yet applied; None where Pillow should decode."""
    if not payload.rstrip(b"\0").endswith(b"\xff\xd9"):  # truncated, or a motion photo's video appended
        return None
    long_side = max(width, height)
    factor, flag = next((f, flag) for f, flag in _REDUCED if f == 1 or (max_side and long_side / f >= max_side))
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.ndim != 3 or image.shape[1] != -(-width // factor) or image.shape[0] != -(-height // factor):
        return None  # anything unexpected: let Pillow decode it (and name the problem)
    return image


def shrink_to(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` with its long side at most `max_side` (INTER_AREA, never enlarged): `decode_image`'s
    `max_side` is a floor (a JPEG decodes at a power-of-two reduction above it), this is the ceiling."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    k = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """A video picture as players show it. `rotation`: the stream's display rotation in degrees
    counter-clockwise (PyAV's `VideoFrame.rotation`, from the display matrix a phone writes for a video
    filmed upright instead of turning its pixels), so a portrait video is judged standing, as a photo's
    EXIF orientation is (`_orient`)."""
    turn = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}.get(round(rotation / 90) % 4)
    return image if turn is None else cv2.rotate(image, turn)


def media_origin(container: av.container.InputContainer) -> float:
    """Seconds of a video file's own timestamps at which its playback starts: what a player shows as 0:00, the
    time a configured start, the creation_time tag and an SRT's blocks count from. An MPEG-TS (dashcams, DVRs)
    starts at 1.4 s or wherever its recorder's clock stood, a cut MP4 may start late too, and a recording that
    began between key frames shows its first picture only at its first key frame: timing frames from their own
    timestamps, or from the first picture decoded, shifts every frame by that much against the wall clock."""
    import av  # here, not at the top: only video readers need PyAV

    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _orient(image: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation (2..8) the way `ImageOps.exif_transpose` does."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(image), -1)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def _orientation(exif: Image.Exif | None) -> int | None:
    if not exif:
        return None
    value = exif.get(0x0112)
    return int(value) if isinstance(value, int) else None
