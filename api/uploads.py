"""Receiving uploaded photos and zips: size-capped streaming, content sniffing, server-chosen names.

- The request is refused with 413 before a byte is read when `Content-Length` is over the limit,
  and the body is counted while it streams (chunked uploads have no length), so a client can
  never put more than the limit on disk: the multipart parser's temporary files are closed
  (and, being anonymous temp files, freed) when the count is exceeded.
- A file part past 1 MiB spools to disk in the service's own `service.data_dir`/uploads (`multipart_parser`), not the
  system's temporary folder (Starlette's choice), often small and apart from the data disk on a city server, where a
  patrol video or a zip of photos could fill it.
- What a file *is* comes from its bytes, never its name or declared type: Pillow must identify it
  as one of the photo formats triage reads, or `zipfile` as a zip archive that holds photos (as triage
  lists it). Anything else refuses the whole request with 415 and the offending file names, before a job exists.
- A zip that triage would refuse whole, unread (more than `MAX_ZIP_ENTRIES` entries, a zip bomb by `MAX_ZIP_RATIO`,
  a broken one), refuses the whole request with 422 naming it and triage's reason, in Chinese and English, as it is
  found by the same listing (`expand_sources`): the job would only have recorded that it read nothing of it. The
  request is all or nothing, as for 415: the uploader sends the other files again without it.
- Files are stored as `NNNN.<ext>` (ext from the sniffed format) in the job's own folder: the
  client's file name is kept as a display label, and for the capture time it may carry (`TriageSettings.names`).
- A JSON body (a review, a scene, a shop) is at most `JSON_BODY_LIMIT`: FastAPI reads it before the route's
  dependencies check the token (`CappedBodyRoute`), so without a limit anyone could make the server hold any size.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from tempfile import SpooledTemporaryFile

from PIL import Image
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from detect.config_io import ZH_EN
from detect.imageio import FORMAT_SUFFIXES  # importing it registers the HEIC/HEIF opener with Pillow
from api.auth import caller_of, check_caller_first
from api.problems import Problem, loggable_target, problems, unreadable_json
from pipelines.triage.reasons import reason_zh
from pipelines.triage.sources import Refused, expand_sources

log = logging.getLogger(__name__)
# The multipart library logs a malformed body's fault (`Expected boundary character …`) at WARNING before it raises it,
# naming no request; `parse_form` logs it once with the request's method, path and caller, so the library's is dropped.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)

CHUNK = 1 << 20
JSON_BODY_LIMIT = 1 << 20
"""The largest JSON body a route takes (a review note, a scene's zones, a shop are a few KiB)."""


@dataclass(frozen=True)
class SavedFile:
    label: str  # the client's file name, for display only
    path: Path  # where it is stored (server-chosen name)
    kind: str  # "image" or "zip"
    size: int


def _mb(size: int) -> str:
    """A size as city staff read it in a refusal's Chinese half (the English half keeps the exact bytes)."""
    return f"{size / 2**20:.1f} MB"


def check_length(request: Request, limit: int) -> None:
    """413 before reading when the declared body is over `limit`; 400 when the header is not a number."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise Problem(400, f"Content-Length {declared!r} is not a number") from None
    if size > limit:
        raise Problem(413, f"上传 {_mb(size)}，超过上限 {_mb(limit)}{ZH_EN}upload of {size} bytes is over the limit of {limit} bytes",
                      slug="upload-too-large")


async def _capped(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise Problem(413, f"上传超过上限 {_mb(limit)}，已停止接收{ZH_EN}upload is over the limit of {limit} bytes "
                          f"(stopped reading at {seen})", slug="upload-too-large")
        yield chunk


class _SpooledIn(MultiPartParser):
    """Starlette's multipart parser, its file parts spooled in `folder`: Starlette's own spool (SpooledTemporaryFile)
    takes no folder and goes to the system's temporary folder, a process-wide setting (`tempfile.tempdir`)."""

    def __init__(self, *args, folder: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.folder = folder

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        upload = self._current_part.file
        if upload is not None:  # a file part begins: its spool, still empty and in memory, is made again in `folder`
            upload.file = self._files_to_close_on_error[-1] = SpooledTemporaryFile(max_size=self.spool_max_size, dir=self.folder)


def multipart_parser(request: Request, limit: int, spool: Path, *, max_files: int) -> MultiPartParser:
    """The parser of a multipart upload: the body counted as it streams (413 past `limit`), at most `max_files` files
    and 10 fields, each file spooled to disk past 1 MiB in `spool` (`ServiceConfig.upload_spool`, on the data disk),
    as an anonymous file, freed when closed."""
    spool.mkdir(parents=True, exist_ok=True)
    return _SpooledIn(request.headers, _capped(request, limit), max_files=max_files, max_fields=10, folder=spool)


async def parse_form(request: Request, parser: MultiPartParser, too_many: str | None = None) -> FormData:
    """The form `parser` (`multipart_parser`) reads from `request`'s body; a malformed body answers 400
    `malformed-upload` and is logged in one line naming the request (method, path as `loggable_target` writes it, caller)
    and the fault, and `too_many` (a well-formed body with more files than the route takes), when given, answers 413
    `too-many-files` with that detail."""
    try:
        return await parser.parse()
    except ClientDisconnect:
        # A phone's link dropped mid-upload, an everyday thing in the street: one INFO line, not an ERROR and its
        # traceback as an unhandled fault; nothing of the body is kept, and no one is left to read the answer.
        log.info("upload cut off by the caller: %s %s from %s", request.method, loggable_target(request.url.path),
                 caller_of(request))
        raise Problem(400, "上传中断，未受理任何文件 upload cut off before its end: nothing kept", slug="malformed-upload") from None
    except MultiPartException as exc:
        if too_many is not None and exc.message.startswith("Too many files"):
            raise Problem(413, too_many, slug="too-many-files") from None
        fault = f"{exc.message} ({exc.__cause__})" if exc.__cause__ is not None else exc.message
        log.warning("malformed multipart body: %s %s from %s: %s", request.method, loggable_target(request.url.path),
                    caller_of(request), fault)
        raise Problem(400, f"malformed multipart body: {exc.message}", slug="malformed-upload") from None


async def read_capped(request: Request, limit: int) -> bytes:
    """A small body (webhooks, JSON bodies), refused with 413 past `limit` whether or not it declared its length."""
    check_length(request, limit)
    return b"".join([chunk async for chunk in _capped(request, limit)])


class _ReadRequest(Request):
    """A request whose body was read already: FastAPI takes it from here (its documented way for a route class to
    hand a body of its own reading on, as `Request.body` caches it)."""

    def __init__(self, request: Request, body: bytes):
        super().__init__(request.scope, request.receive)
        self._body = body


class CappedBodyRoute(APIRoute):
    """A route whose JSON body is read with `read_capped` (413 past `JSON_BODY_LIMIT`, declared or counted) before
    FastAPI parses it. FastAPI reads a body before it solves the dependencies, the token check among them, so a
    request without a token was read whole, however large, and only then answered 401; and one whose body it cannot
    read is refused before the token is checked, so the route's role check answers first (an anonymous caller gets
    401, not 400 `malformed-json`, whatever it sent). Routes without a body field (uploads, the webhook) read their own,
    capped, once the token is checked; they are left as they are.

    A route with a body documents the answers to the body itself in /openapi.json, for generated clients: 400 not
    JSON (`malformed-json`), 413 over the limit, 415 not sent as JSON (`api.problems`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.body_field is not None:
            self.responses = {**problems(400, 413, 415), **self.responses}

    def get_route_handler(self):
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def capped(request: Request) -> Response:
            try:
                return await handler(_ReadRequest(request, await read_capped(request, JSON_BODY_LIMIT)))
            except Exception as exc:
                if unreadable_json(exc):
                    await check_caller_first(request, self.dependant)
                raise

        return capped


def sniff(path: Path, label: str) -> tuple[str, str] | None:
    """("image", suffix) or ("zip", ".zip") from the file's content; None for anything else.

    `label` (the client's file name) names the file in a refusal: the stored name means nothing to them.
    """
    try:
        with Image.open(path) as im:
            suffix = FORMAT_SUFFIXES.get(im.format or "")
            return ("image", suffix) if suffix else None
    except Image.DecompressionBombError:
        limit = f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP"
        raise Problem(413, f"{label}：图片像素过多（超过 {limit}），本次上传的文件均未受理{ZH_EN}"
                           f"{label}: image has too many pixels (over {limit})", slug="image-too-large") from None
    except Exception:  # noqa: BLE001 - not an image Pillow knows; maybe a zip
        pass
    return ("zip", ".zip") if zipfile.is_zipfile(path) else None


async def receive_files(request: Request, dest: Path, *, limit: int, max_files: int, spool: Path,
                        field: str = "files") -> list[SavedFile]:
    """Parse the multipart body into `dest` (created), spooling it in `spool` (`multipart_parser`); refuses with
    400/413/415 and leaves nothing behind."""
    check_length(request, limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise Problem(415, f"send the photos as multipart/form-data in field {field!r} (got {content_type or 'no content type'})",
                      slug="unsupported-media-type")
    parser = multipart_parser(request, limit, spool, max_files=max_files)
    form = await parse_form(request, parser, too_many=f"一次最多上传 {max_files} 个文件，请分几次上传或打包成一个 zip{ZH_EN}"
                                                      f"more than {max_files} files in one upload "
                                                      "(service.max_upload_files): send them in several uploads, or as one zip")
    uploads = [v for k, v in form.multi_items() if k == field and isinstance(v, UploadFile)]
    try:
        if not uploads:
            raise Problem(400, f"no files in form field {field!r}", slug="no-files")
        return await _store(uploads, dest)
    finally:
        await form.close()


def copy_upload(upload: UploadFile, path: Path) -> int:
    """Write one parsed part to `path` in chunks of `CHUNK`, never holding the file whole in memory (a patrol video
    can be the whole upload limit); its size in bytes. Blocking: call it in a thread."""
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, CHUNK)
        return out.tell()


def _save(upload: UploadFile, raw: Path, label: str) -> tuple[int, tuple[str, str] | None]:
    """Copy one parsed part to `raw`; its size and sniffed kind."""
    size = copy_upload(upload, raw)
    return size, (sniff(raw, label) if size else None)


def _refused_whole(listed: list, archive: Path) -> Refused | None:
    """The refusal of `archive` itself among what triage lists of it (none of it would be read), or None."""
    return next((r for r in listed if isinstance(r, Refused) and r.name == str(archive.absolute())), None)


async def _store(uploads: list[UploadFile], dest: Path) -> list[SavedFile]:
    dest.mkdir(parents=True, exist_ok=True)
    saved: list[SavedFile] = []
    refused: list[tuple[str, str]] = []  # (in Chinese, in English), as the upload page shows them
    unread: list[str] = []  # zips triage refuses whole: "label: reason" in Chinese, then English
    try:
        for i, upload in enumerate(uploads, 1):
            label = (upload.filename or f"file {i}")[:200]
            raw = dest / f"{i:04d}.upload"
            size, kind = await run_in_threadpool(_save, upload, raw, label)  # disk and Pillow off the event loop
            if kind is None:
                refused.append((label, label))
                raw.unlink()
                continue
            path = raw.rename(dest / f"{i:04d}{kind[1]}")
            listed = await run_in_threadpool(expand_sources, [path]) if kind[0] == "zip" else []
            if kind[0] == "zip" and not listed:
                # triage would list nothing in it (no photo, no member it refuses with a reason): the job
                # would end "done, 0 of 0 photos" and the upload would be lost without a word
                refused.append((f"{label}（压缩包中没有照片）", f"{label} (a zip archive with no photos in it)"))
                path.unlink()
                continue
            if (whole := _refused_whole(listed, path)) is not None:
                unread.append(f"{label}：{whole.zh or reason_zh(whole.reason) or '压缩包无法读取'} {label}: {whole.reason}")
                path.unlink()
                continue
            saved.append(SavedFile(label, path, kind[0], size))
        if refused:
            raise Problem(415, f"无法识别为照片或照片压缩包，本次上传的文件均未受理：{'、'.join(zh for zh, _ in refused)} "
                               "（只接受 JPEG、PNG、WebP、BMP、TIFF、HEIC 照片和照片 zip 压缩包）"
                               f"{ZH_EN}only photos (JPEG, PNG, WebP, BMP, TIFF, HEIC) and zip archives of photos are "
                               f"accepted; not recognised by content: {', '.join(en for _, en in refused)}",
                          slug="unsupported-media-type")
        if unread:
            raise Problem(422, f"压缩包被拒收，本次上传的文件均未受理 zip refused, nothing of this upload was kept: "
                               f"{'; '.join(unread)}", slug="zip-refused")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return saved
