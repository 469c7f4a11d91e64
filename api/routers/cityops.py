"""City workflows in the service: frontage register, warnings, call-out list, disposal-photo checks, patrol uploads.

All the work is in `pipelines.cityops`; these routes check roles, take files (multipart field
`file`, or `video` + `track` for a patrol) and answer JSON. See docs/city-operations.md.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field, RootModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.accounts import Principal, Role
from api.auth import ADMIN, READ_CASES, REVIEW, UPLOAD, require
from api.context import AppContext, get_ctx
from api.exports import Export
from api.job_retention import not_found
from api.jobs import (UNFINISHED, as_uploaded, end_job, job_failure, judging_pace, newest_jobs, no_cases_error, read_job, recorded,
                      spool_shown, waiting_for_store, write_job)
from api.problems import Problem, invalid, malformed_json, problems, unusable
from api.routers.analytics import CSV, XLSX, _attachment
from api.routers.pages import job_report
from api.routers.triage import JobSpool
from api.uploads import (JSON_BODY_LIMIT, CappedBodyRoute, check_length, copy_upload, multipart_parser, parse_form,
                         read_capped)
from detect.config_io import ConfigError, loaded_file, pydantic_en
from detect.text import Lines, OneLine
from pipelines.cases.store import Audit, T
from pipelines.cityops.callout import NOTE_MAX, CallOutList, Entry, Status
from pipelines.cityops.hooks import squads_of
from pipelines.cityops.verification import DisposalCheckError, check_disposal_photo, fetch_photo, list_reports
from pipelines.cityops.warnings import WarningState, count_warnings, list_warnings, no_image, warning_image
from pipelines.settings import Settings
from pipelines.shops import Shop, ShopRegister
from pipelines.sheet_encodings import SHEET_ENCODING_CHOICES
from pipelines.tables import sheet_encoding

log = logging.getLogger(__name__)
router = APIRouter(tags=["city workflows"], route_class=CappedBodyRoute)
CHECK_PHOTO = require(Role.REVIEWER, Role.INTEGRATION)
FILE_LIMIT = 50 * 2**20
FILE_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}
#: A disposal photo's body (`disposal_photo` reads it itself): the photo in form field `file`, or a link to it on the
#: platform as JSON; declared so a generated client can send either.
PHOTO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": {
        "type": "string", "format": "binary", "description": "The after-photo (JPEG, PNG, WebP, BMP, TIFF or HEIC), "
                                                             f"at most {FILE_LIMIT >> 20} MiB; its kind read from its bytes."}}}},
    "application/json": {"schema": {"type": "object", "required": ["url"], "properties": {"url": {
        "type": "string", "format": "uri", "description": "http(s) link to the photo on a host the server fetches photos "
                                                          "from (`service.photo_url_hosts`, by default the dispatch targets' hosts)."}}}}}}}
#: A sheet import's body (`_sheet`): the file, and the encoding of a CSV when it is not to be found.
SHEET_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "encoding": {"type": "string", "enum": ["", *(value for value, _ in SHEET_ENCODING_CHOICES.values())],
                     "description": "The CSV's encoding (empty or left out: found; a sheet GBK and Windows-1252 both read "
                                    "is read as one of them with a warning, and this reads it as the other)."}}}}}}}


# ---- response bodies --------------------------------------------------------------------------
# Times are ISO 8601 strings. The shapes are those of `pipelines.cityops` (as_dict / list_*).


class ShopImport(BaseModel):
    imported: int = Field(description="Shops written.")
    shops: list[str] = Field(description="Their ids.")
    errors: list[str] = Field(description="Rows refused: `row N: field: reason`.")
    warnings: list[str] = Field(default_factory=list, description="Rows imported with something to check (a phone number "
                                                                   "that may have lost its leading 0), or the file (a CSV that "
                                                                   "GB18030 and Windows-1252 both read: which it was read as).")


class Deleted(BaseModel):
    deleted: str = Field(description="Id of what was removed.")


class WarningView(BaseModel):
    """A warning given before a case (warn, re-check, then a case)."""

    id: str
    violation_id: str = Field(description="The rules' violation id the warning is about.")
    violation_type: str
    camera_id: str
    zone_id: str | None
    shop_id: str | None = Field(description="The shop warned (frontage register), when known.")
    state: WarningState
    warned_at: str
    recheck_at: str = Field(description="When the camera looks again.")
    checked_at: str | None
    case_id: str | None = Field(description="The case opened when the violation was still there.")
    notified: str | None = Field(description="delivered, failed or off (no webhook).")
    notify_error: str | None
    details: dict[str, Any]
    has_image: bool = Field(description="The warning frame can be fetched (`.../image`).")


class WarningPage(BaseModel):
    """A page of the warnings, newest first: a district gives thousands a year, and a list of the newest 200 alone
    did not say there were more."""

    items: list[WarningView]
    total: int = Field(description="Warnings matching the filters (all pages).")
    limit: int
    offset: int


class Place(BaseModel):
    address: str | None
    grid_cell: str | None
    squad: str | None


class _CallOutNumber(BaseModel):
    """One phone number of the call-out list (追呼/停机): what the list and the number's own answer both carry."""

    number: str
    status: Status
    status_zh: str = Field(description="The status in Chinese (待追呼, 已停机 ...).")
    count: int = Field(description="Flyposting cases carrying the number.")
    first_seen: str | None
    last_seen: str | None
    squad: str | None = Field(description="Squad of the grid cell where it was first seen.")
    cut_off_at: str | None
    amount: float | None = Field(description="Fine in yuan.")
    note: str | None
    status_at: str | None


#: Case ids a number carries in the list's answer: a number on a district's walls is on a hundred cases and more,
#: and the list shows their count.
RECENT_CASES = 5


class CallOutListed(_CallOutNumber):
    """A number as `GET /callout` lists it: its count and its newest cases; all of them, with the places and photos,
    at `GET /callout/{number}`."""

    recent_cases: list[str] = Field(description=f"The newest {RECENT_CASES} of its case ids, newest first.")

    @classmethod
    def of(cls, entry: Entry) -> CallOutListed:
        """`entry` as listed (its cases are kept oldest first, as `CallOutList.sync` meets them)."""
        return cls(**entry.as_dict(), recent_cases=entry.cases[::-1][:RECENT_CASES])


class CallOutEntry(_CallOutNumber):
    """One phone number of the call-out list with every case, place and photo (`GET`, `PUT /callout/{number}`)."""

    places: list[Place]
    cases: list[str] = Field(description="Case ids, oldest first.")
    photos: list[str] = Field(description="`<case id>/<bundle path>` of each case's opening photo.")


class CallOutImport(BaseModel):
    applied: int = Field(description="Numbers updated.")
    numbers: list[str] = Field(description="Which.")
    unknown: list[str] = Field(description="Numbers the list does not hold (not applied).")
    errors: list[str] = Field(description="Rows refused: `row N: field: reason`.")
    warnings: list[str] = Field(default_factory=list, description="Something to check about the file: a CSV that "
                                                                   "GB18030 and Windows-1252 both read (which it was read as).")


class CutOffs(RootModel[dict[str, dict[str, int]]]):
    """`YYYY-MM` -> squad -> numbers cut off that (local) month; squad `(未标注 none)` when unknown."""


class VerificationReportView(BaseModel):
    """A re-check outcome reported (or to be reported) to the dispatch platform."""

    id: int
    case_id: str
    target: str = Field(description="Dispatch target.")
    kind: Literal["auto_recheck", "disposal_photo"]
    outcome: Literal["verified_cleared", "still_present"]
    status: Literal["pending", "delivered", "unsupported", "parked"]
    attempts: int
    last_error: str | None
    created_at: str
    delivered_at: str | None


class DisposalCheck(BaseModel):
    case_id: str
    state: str = Field(description="The case's state after the check (verified_cleared or still_present).")
    cleared: bool
    boxes: list[dict[str, Any]] = Field(description="Evidence boxes of the violation still seen (class_name, xyxy, confidence).")
    reports: list[VerificationReportView] = Field(description="The case's reports to the platform so far.")


class PatrolSummary(BaseModel):
    """What a finished patrol job found (server paths left out)."""

    frames: int = Field(description="Frames sampled along the track.")
    skipped_without_position: int = Field(description="Frames the track does not place.")
    uncovered_s: float = Field(description="Seconds of video the track does not cover.")
    video_span: list[str] | None = Field(description="The video's first and last frame, local time in `timezone`.")
    track_span: list[str] | None = Field(description="The track's first and last fix, local time in `timezone`.")
    timezone: str | None = Field(None, description="The zone the spans and the report are in: the pages' (`GET /meta`'s `timezone`), "
                                                   "the one the form field `start` is read in (None for a job done by an earlier release).")
    messages: list[str] = Field(description="What was wrong with the track or the video.")
    groups: int = Field(description="Violations found (groups of frames).")
    cases: list[str] = Field(description="Cases drafted.")
    already_open: list[dict[str, Any]] = Field(description="Groups that matched an open case nearby (not doubled).")
    spool: JobSpool | None = Field(None, description="The run's retry of the evidence spool, as a photo upload's "
                                                     "(None for a job finished before the service reported it).")
    no_cases: str | None = Field(None, description="Why its violations got no case, as a photo upload's groups say it: the "
                                                   "service writes none (no evidence key set, `service.triage.cases` unset); "
                                                   "None when cases were written or turned off, or nothing was found.")


class PatrolProgress(BaseModel):
    """How far a patrol job is: sampling the video, then judging the frames sampled, then drafting cases."""

    phase: Literal["queued", "sampling", "frames", "cases", "store", "done", "failed"] = Field(
        description="queued; sampling (frames taken from the video); frames (judged one by one); cases (all judged, "
        "cases drafted); store (waiting for the case store to come back: `service.store_wait_s`); done or failed.")
    done: int = Field(description="While sampling, the frames sampled so far; after, the frames judged (each once).")
    total: int | None = Field(description="Frames sampled (None until sampling is over).")
    rate: float | None = Field(None, description="While frames are judged: frames recorded per second over about the "
                                                 "last minute, as this server's polls found them (None until two polls).")
    eta_s: int | None = Field(None, description="While frames are judged: seconds until the last is, at `rate`.")


class PatrolJob(BaseModel):
    """A patrol upload, as `GET /api/v1/patrol/jobs/{id}` shows it."""

    id: str
    owner: str = Field(description="Who uploaded it.")
    state: Literal["queued", "running", "done", "failed"]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    video: str = Field(description="The stored video's name.")
    video_label: str = Field(description="The file name the client sent.")
    track: str | None = Field(description="The stored track's name (`track.gpx`, `track.nmea`, `track.srt` ...): every upload "
                              "sends one (400 without), so None only in a job stored before a track was required.")
    track_label: str | None = Field(description="The track's file name the client sent (None as for `track`).")
    start: str | None = Field(None, description="The video's start as sent (form field `start`), ISO 8601 with the offset of the "
                              "zone it was read in; None: the video's creation_time tag or the SRT's own times.")
    error: str | None = Field(None, description="Why the job failed.")
    waiting: str | None = Field(None, description="What a running job waits for, Chinese first (等待案件库恢复…: the "
                                                  "case store unreachable; it goes on once it is back); None otherwise.")
    summary: PatrolSummary | None = Field(None, description="When done.")
    progress: PatrolProgress


@asynccontextmanager
async def _form(request: Request, limit: int, fields: tuple[str, ...],
                texts: tuple[str, ...] = ()) -> AsyncIterator[tuple[dict[str, tuple[UploadFile, str]], dict[str, str]]]:
    """Named file fields of a multipart body: {field: (part, client file name)}, and its named text fields: {field:
    value}, a text field sent as a file refused naming it. The body is counted while it streams (413 past `limit`,
    the parser's temporary files dropped) and each file spooled by the parser (to disk past 1 MiB, in `service.data_dir`/uploads), so none is ever
    held whole in memory: read a small one, copy a large one (`copy_upload`) while the form is open."""
    check_length(request, limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Problem(415, f"send multipart/form-data with field(s) {', '.join(fields)}", slug="unsupported-media-type")
    form = await parse_form(request, multipart_parser(request, limit, request.app.state.ctx.service.upload_spool,
                                                      max_files=len(fields)))
    try:
        files, values = {}, {}
        for name in fields:
            part = form.get(name)
            if isinstance(part, UploadFile):
                files[name] = (part, (part.filename or name)[:200])
        for name in texts:
            part = form.get(name)
            if isinstance(part, UploadFile):
                raise invalid(["body", name], "a text field, not a file")
            if part is not None:
                values[name] = part
        yield files, values
    finally:
        await form.close()


async def _file(request: Request, texts: tuple[str, ...] = ()) -> tuple[bytes, str, dict[str, str]]:
    """The small file of form field `file` (a register, a call-out list, a photo: at most `FILE_LIMIT`), its name and
    the form's `texts` fields that were sent."""
    async with _form(request, FILE_LIMIT, ("file",), texts) as (files, values):
        if "file" not in files:
            raise Problem(400, "no file in form field 'file'", slug="no-files")
        part, name = files["file"]
        return await part.read(), name, values


async def _sheet(request: Request) -> tuple[bytes, str, str | None]:
    """A register or results sheet (`_file`) and the encoding of a CSV that its optional form field `encoding` names
    (`sheet_encoding`, as the CLI's `--encoding`; empty, the page's 自动, is none: found), refused (422) naming it
    before anything is imported."""
    data, name, texts = await _file(request, ("encoding",))
    given = texts.get("encoding", "").strip()
    return data, name, sheet_encoding(given) if given else None


def _audit(ctx: AppContext, who: Principal, action: str, details: Callable[[T], dict[str, Any]]) -> Audit[T]:
    """The `audit` callback of a register write (a shop, the call-out list) recording `who`'s `action`, its details
    from what the write did, in the write's own transaction: recorded after it, a failed audit write left the change
    standing with no record and the person, answered an error, doing it again."""
    return lambda conn, done: ctx.accounts.audit(who, action, None, details(done), conn=conn)


# ---- frontage register -------------------------------------------------------------------

class ShopBody(Shop):
    """A shop as `PUT /shops/{shop_id}` takes it: typed, so /openapi.json shows the fields and a refusal names its field
    in `errors[].loc` (a free-form mapping let `{}` through the schema, then refused with no field named). The id is the
    path's; one in the body (the register page sends the shop as listed) is not used."""

    id: OneLine | None = Field(None, title="Shop id", description="Not used: the path's `shop_id` is the shop's id.")  # type: ignore[assignment]


def _shops(ctx: AppContext) -> ShopRegister:
    return ShopRegister(ctx.store.engine)


class ShopPage(BaseModel):
    """A page of the frontage register, by name: a district's is thousands of shops, which the register page listed
    at once in one table."""

    items: list[Shop]
    total: int = Field(description="Shops matching `q` (all pages).")
    limit: int
    offset: int


@router.get("/shops", summary="The frontage register (门前三包): shops and their frontages, a page at a time, by name",
            response_model=ShopPage, response_model_exclude_none=True, responses=problems(401, 403, 422))
def list_shops(q: str | None = Query(None, max_length=200, pattern=r"^[^\x00]*$", description="Only shops whose id, name, "
                                     "address, licence number or contact holds this (case aside)."),
               limit: int = Query(200, ge=1, le=500, description="At most this many (a page)."),
               offset: int = Query(0, ge=0, le=10_000_000, description="Skip this many, by name."),
               ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> ShopPage:
    items, total = _shops(ctx).page(q=q, limit=limit, offset=offset)
    return ShopPage(items=items, total=total, limit=limit, offset=offset)


@router.put("/shops/{shop_id}", summary="Add or replace one shop (validated like an import row)", response_model=Shop,
            response_model_exclude_none=True, responses=problems(401, 403, 409, 422))
def put_shop(shop_id: str, body: ShopBody = Body(description="A shop: name, address, licence_no, contact, frontages."),
             ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> Shop:
    try:
        shop = Shop.model_validate({**body.model_dump(exclude_unset=True), "id": shop_id})
    except ValidationError as exc:  # the body is a valid shop already: only the path's id can be refused here
        raise invalid(["path", "shop_id"], "; ".join(pydantic_en(e) for e in exc.errors())) from None
    return _shops(ctx).put(shop, audit=_audit(ctx, who, "put_shop", lambda s: {"shop_id": s.id, "frontages": len(s.frontages)}))


@router.delete("/shops/{shop_id}", summary="Remove a shop from the register", responses=problems(401, 403, 404))
def delete_shop(shop_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(ADMIN)) -> Deleted:
    if not _shops(ctx).delete(shop_id, audit=_audit(ctx, who, "delete_shop", lambda gone: {"shop_id": gone})):
        raise Problem(404, f"no shop {shop_id!r} in the register", slug="shop-not-found")
    return Deleted(deleted=shop_id)


@router.post("/shops/import", summary="Import a CSV/Excel register; bad rows are reported, the rest imported",
             openapi_extra=SHEET_BODY, responses=problems(400, 401, 403, 413, 415, 422))
async def import_shops(request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> ShopImport:
    data, name, encoding = await _sheet(request)
    record = _audit(ctx, who, "import_shops", lambda r: {"file": name, "imported": len(r.imported), "errors": len(r.errors)})
    report = await run_in_threadpool(partial(_shops(ctx).import_file, data, name, encoding, audit=record))
    return ShopImport(**report.as_dict())


# ---- warnings ----------------------------------------------------------------------------

@router.get("/warnings", summary="Warnings given before cases (warn, re-check, then a case), a page at a time, newest first",
            response_model=WarningPage, responses=problems(401, 403, 422))
def get_warnings(state: WarningState | None = Query(None, description="Only warnings in this state."),
                 camera_id: str | None = Query(None, max_length=200),
                 limit: int = Query(200, ge=1, le=500, description="At most this many (a page)."),
                 offset: int = Query(0, ge=0, le=10_000_000, description="Skip this many of the newest first."),
                 ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> WarningPage:
    found = dict(state=state, camera_id=camera_id)
    items = [WarningView(**w) for w in list_warnings(ctx.store.engine, **found, limit=limit, offset=offset)]
    return WarningPage(items=items, total=count_warnings(ctx.store.engine, **found), limit=limit, offset=offset)


@router.get("/warnings/{warning_id}/image", summary="The warning frame with its evidence boxes", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}, **problems(401, 403, 404)})
def get_warning_image(warning_id: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> FileResponse:
    path = warning_image(ctx.store.engine, warning_id)
    if path is None:
        raise Problem(404, no_image(ctx.store.engine, warning_id), slug="warning-not-found")
    return FileResponse(path, media_type="image/jpeg")


# ---- call-out list -----------------------------------------------------------------------

def _calls(ctx: AppContext) -> CallOutList:
    """The list with the squads of `cityops.grid`, read once per change of the file (`loaded_file`): the same squads
    object while it stands, so `CallOutList.sync_if_changed` knows the list synced with them."""
    cfg = ctx.settings.cityops
    try:
        squads = loaded_file(squads_of, cfg.grid)
    except ConfigError as exc:
        raise unusable(ctx, "cityops.grid unusable", exc) from None
    return CallOutList(ctx.store.engine, squads, ZoneInfo(cfg.timezone))


class CallOutPage(BaseModel):
    """A page of the call-out list, last seen first: a district's is hundreds of numbers, which /ui/city listed at
    once, a status menu each."""

    items: list[CallOutListed]
    total: int = Field(description="Numbers matching the filters (all pages).")
    limit: int
    offset: int


@router.get("/callout", summary="The call-out list (追呼/停机), brought up to date with the flyposting cases, a page at a time",
            response_model=CallOutPage, responses=problems(401, 403, 422))
def get_callout(status: Status | None = Query(None, description="Only the numbers in this status."),
                q: str | None = Query(None, max_length=200, pattern=r"^[^\x00]*$", description="Only the numbers holding this."),
                limit: int = Query(200, ge=1, le=500, description="At most this many (a page)."),
                offset: int = Query(0, ge=0, le=10_000_000, description="Skip this many, last seen first."),
                ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> CallOutPage:
    calls = _calls(ctx)
    calls.sync_if_changed()
    items, total = calls.page(status, q=q, limit=limit, offset=offset)
    return CallOutPage(items=[CallOutListed.of(e) for e in items], total=total, limit=limit, offset=offset)


@router.put("/callout/{number}", summary="Record what the city did with a number", responses=problems(401, 403, 404, 422))
def put_callout(number: str, status: Status = Body(embed=True), amount: float | None = Body(None, embed=True, ge=0, allow_inf_nan=False),
                note: Lines | None = Body(None, embed=True, max_length=NOTE_MAX), ctx: AppContext = Depends(get_ctx),
                who: Principal = Depends(REVIEW)) -> CallOutEntry:
    try:
        entry = _calls(ctx).set_status(number, status, amount=amount, note=note, audit=_audit(
            ctx, who, "callout_status", lambda e: {"number": e.number, "status": e.status.value}))
    except KeyError:
        raise _not_listed(number) from None
    return CallOutEntry(**entry.as_dict())


@router.get("/callout/export", summary="The list as CSV or Excel for the call-out system", response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {}}},
                       **problems(401, 403, 422, 503)})
async def export_callout(format: str = Query("csv", pattern="^(csv|xlsx)$"), ctx: AppContext = Depends(get_ctx),  # noqa: A002
                         _: Principal = Depends(READ_CASES)) -> Response:
    """Written in a folder of its own and answered from memory, the folder removed: each export stayed in
    `service.data_dir`/exports, people's phone numbers kept on the server for ever, one more file per request. Run on
    the exports' own threads, as the case export (`api.exports`)."""

    def build() -> Export:
        calls = _calls(ctx)
        calls.sync_if_changed()
        with tempfile.TemporaryDirectory(prefix="callout-") as folder:
            data = calls.export(Path(folder) / f"callout.{format}").read_bytes()
        return Export(data, XLSX if format == "xlsx" else CSV, _attachment(f"callout.{format}"))

    return await ctx.exports.answer(build)


@router.post("/callout/import", summary="Import the call-out system's results; unknown numbers are reported, the rest applied",
             openapi_extra=SHEET_BODY, responses=problems(400, 401, 403, 413, 415, 422))
async def import_callout(request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> CallOutImport:
    data, name, encoding = await _sheet(request)
    calls = _calls(ctx)
    await run_in_threadpool(calls.sync_if_changed)
    record = _audit(ctx, who, "import_callout", lambda r: {"file": name, "applied": len(r.applied), "unknown": len(r.unknown)})
    report = await run_in_threadpool(partial(calls.import_results, data, name, encoding, audit=record))
    return CallOutImport(**report.as_dict())


@router.get("/callout/cutoffs", summary="Numbers cut off per month and squad (the assessment quota)", responses=problems(401, 403, 422))
def callout_cutoffs(year: int = Query(default_factory=lambda: datetime.now(UTC).year, ge=2000, le=2100),
                    ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> CutOffs:
    return CutOffs(_calls(ctx).monthly_cut_offs(year))


@router.get("/callout/{number}", summary="One number of the call-out list with all its cases, places and photos",
            responses=problems(401, 403, 404))
def get_callout_number(number: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> CallOutEntry:
    """After /callout/export and /callout/cutoffs, which it would otherwise take for numbers."""
    calls = _calls(ctx)
    calls.sync_if_changed()
    entry = calls.get(number)
    if entry is None:
        raise _not_listed(number)
    return CallOutEntry(**entry.as_dict())


def _not_listed(number: str) -> Problem:
    """The 404 of a number the call-out list does not hold."""
    return Problem(404, f"number {number!r} is not on the call-out list", slug="number-not-found")


# ---- disposal photos ---------------------------------------------------------------------

@router.post("/cases/{case_id}/disposal-photo",
             summary="Check the handler's after-photo (multipart `file`, or JSON {\"url\"} to fetch it from the platform)",
             openapi_extra=PHOTO_BODY, responses=problems(400, 401, 403, 404, 409, 413, 415, 422))
async def disposal_photo(case_id: str, request: Request, ctx: AppContext = Depends(get_ctx),
                         who: Principal = Depends(CHECK_PHOTO)) -> DisposalCheck:
    """Judged like a triage photo; the outcome (verified_cleared / still_present) and the photo go into the case's
    evidence and are reported to the platform by the dispatcher."""
    ctx.store.get(case_id)  # 404 before reading a body
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            sent = json.loads(await read_capped(request, JSON_BODY_LIMIT))
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8 (a UnicodeDecodeError), nested too deep
            raise malformed_json(exc) from None
        url = sent.get("url") if isinstance(sent, dict) else None
        if not isinstance(url, str):
            raise Problem(422, "send the photo as multipart field 'file', or JSON {\"url\": \"http(s)://...\"}", slug="no-photo")
        try:
            data, name = await run_in_threadpool(partial(fetch_photo, url, allowed_hosts=ctx.settings.photo_url_hosts()))
        except DisposalCheckError as exc:
            raise Problem(422, str(exc), slug="photo-unavailable") from None
    else:
        data, name, _ = await _file(request)
    result = await run_in_threadpool(_check, ctx, case_id, data, name, who.name)
    return DisposalCheck(case_id=case_id, state=str(result.case.state), cleared=result.cleared, boxes=result.boxes,
                         reports=[VerificationReportView(**r) for r in list_reports(ctx.store.engine, case_id)])


def _judgement(ctx: AppContext, detector):
    """The verifier the service's triage jobs use (`service.triage.verifier`), fitted to `detector`."""
    from detect.judgement import load_judgement
    from detect.verifier import VerifierError

    try:
        judgement = load_judgement(ctx.service.triage.verifier, ctx.taxonomy)
        judgement.check(detector)
    except VerifierError as exc:  # its card, weights or model folder named by what names them, the log keeping the paths
        raise unusable(ctx, "照片无法判定，请联系管理员 cannot judge photos", f"service.triage.verifier: {exc}",
                       slug="verifier-unavailable") from None
    return judgement


def _check(ctx: AppContext, case_id: str, data: bytes, name: str, actor: str):
    from detect.evidence.builder import ModelInfo
    from detect.evidence.config import EvidenceKeyError
    from pipelines.cases.intake import Intake
    from pipelines.evidence_store import StorageError

    detector = ctx.jobs.detector()
    try:
        intake = Intake.from_settings(ctx.settings, ModelInfo.of(detector), taxonomy=ctx.taxonomy, store=ctx.store)
    except (EvidenceKeyError, StorageError) as exc:
        raise Problem(503, f"cannot add to the evidence: {ctx.settings.named_by_setting(str(exc))}",
                      slug="evidence-unavailable") from None
    try:
        return check_disposal_photo(intake, detector, case_id, data, name, actor=actor, taxonomy=ctx.taxonomy,
                                    judgement=_judgement(ctx, detector))
    except DisposalCheckError as exc:
        raise Problem(409 if exc.conflict else 422, str(exc), slug="disposal-check") from None


# ---- patrol uploads ----------------------------------------------------------------------

def _patrol_dir(ctx: AppContext, job_id: str) -> Path:
    if not (len(job_id) == 16 and all(c in "0123456789abcdef" for c in job_id)):
        raise Problem(404, f"no patrol job {job_id!r}", slug="job-not-found")
    return (ctx.service.patrol_dir / job_id).resolve()


def _as_uploaded(folder: Path, job: dict[str, Any], settings: Settings, html: bool = False) -> Callable[[str], str]:
    """What names a patrol job's texts as the client knows them (`api.jobs.as_uploaded`): the patrol code names the
    stored files by their server paths (`/srv/.../patrol/<id>/track.gpx: not a readable GPX file`) and its frames
    (`/srv/.../patrol/<id>/out/frames/frame-00000-t00000.00.jpg`), which the API never shows; they are named as sent
    and by their names."""
    from pipelines.cityops.patrol import FRAMES

    labels = {stored: label for stored, label in ((job["video"], job["video_label"]), (job.get("track"), job.get("track_label")))
              if stored}
    return as_uploaded(folder, labels, settings, inside=(f"out/{FRAMES}",), html=html)


def _source_name(job: dict[str, Any]) -> str:
    """The name a job's cases are sourced under (`patrol:<name>`): the video's name as sent, without its suffix and
    any character that does not print (a client can send a NUL), else the stored file's (`video`)."""
    label = "".join(c for c in Path(job["video_label"]).stem if c.isprintable()).strip()
    return label or Path(job["video"]).stem


def _asking_start(ctx: AppContext) -> str:
    """How a client gives the video's start: `run_patrol` asks for `--start`, an option the API does not have."""
    return (f"send the time of its first frame as form field 'start', 'YYYY-MM-DD HH:MM:SS' in local time ({ctx.page_tz.key}); "
            "on /ui/city: 开始时间 Start")


def _start_field(ctx: AppContext, text: str | None) -> str | None:
    """Form field `start` as the job keeps it (ISO 8601 with its offset), None when empty; 422 naming the field when it
    is not a time (read as `--start` is) or cannot be when the video was filmed. A time without an offset is local in the
    pages' zone (`AppContext.page_tz`), the one /ui/city shows times in: it was read in `service.triage.timezone`, so
    where the two differed a start typed on the page was hours off."""
    from pydantic import TypeAdapter, ValidationError

    from pipelines.cityops.patrol import PatrolError, given_start

    if text is None or not text.strip():
        return None
    try:
        start = TypeAdapter(datetime).validate_python(text.strip())
    except ValidationError:
        raise invalid(["body", "start"], f"{text.strip()[:60]!r} is not a time: {_asking_start(ctx)}") from None
    try:
        return given_start(start, ctx.page_tz, name="start").isoformat()
    except PatrolError as exc:  # `'start': … is in the future`: the field is named by errors[].loc
        raise invalid(["body", "start"], str(exc).removeprefix("'start': ")) from None


RESTARTED = "服务重启时中断，请重新上传 interrupted by a restart: upload again"
"""The error of a job a stopped server left mid-way whose run cannot be taken up (`CannotResume`)."""


def _run_patrol(ctx: AppContext, folder: Path, job: dict[str, Any]) -> None:
    from pipelines.cityops.patrol import CannotResume, NoStartTime, PatrolError, run_patrol
    from pipelines.triage import TriageSettings
    from pipelines.triage.cases import CasesUnavailable, check_keys
    from pipelines.triage.journal import RESULTS

    out = folder / "out"
    shown = _as_uploaded(folder, job, ctx.settings)
    job = {**job, "state": "running", "started_at": datetime.now(UTC).isoformat()}  # the record it ends with keeps it
    write_job(folder, job)

    def end(**values: Any) -> None:  # as a photo upload's job ends: its count of frames judged kept in its record
        end_job(ctx.jobs.records, out / RESULTS, folder, {**job, "waiting": None, **values})

    def waiting(why: str | None) -> None:  # the case store gone (`waiting_for_store`): said in the job's record
        nonlocal job
        job = {**job, "waiting": why}
        write_job(folder, job)

    def attempt():  # each try (the first, one after the store came back) takes up what `out` holds
        # in the pages' zone, as its start field is read (`_start_field`): one zone for the start, summary and report
        settings = TriageSettings(**{**ctx.service.triage.model_dump(), "timezone": ctx.page_tz.key}, out=out)
        keys = check_keys(ctx.settings, settings)  # as the command: a key set that does not load (changed since start-up) stops the job
        # sampled every cityops.patrol_every_m/_s (run_patrol's default); a resumed run keeps the ones it sampled with
        return run_patrol(folder / job["video"], folder / job["track"] if job.get("track") else None, settings,
                          detector=ctx.jobs.detector(),
                          start=datetime.fromisoformat(job["start"]) if job.get("start") else None,
                          deployment=ctx.settings, taxonomy=ctx.taxonomy, show_progress=False, name=_source_name(job),
                          resume=out.exists(), keys=keys, store=ctx.store, evidence=ctx.evidence)  # resume: a run a stopped server left (or the store's outage), taken up where it was

    no_cases = ctx.jobs.cases_unavailable()  # what run_patrol's case writer will find, as a photo upload's job says it
    try:  # the case store gone while it runs: it waits for it as a photo upload's job does
        result = waiting_for_store(ctx.service.store_wait_s, attempt, ctx.jobs.store_answers, waiting)
    except CannotResume:
        end(state="failed", error=RESTARTED)
        return
    except CasesUnavailable as exc:
        end(state="failed", error=shown(no_cases_error(exc.reason)))
        return
    except NoStartTime as exc:
        end(state="failed", error=shown(exc.asking(_asking_start(ctx))))
        return
    except (PatrolError, ConfigError, ValueError) as exc:
        end(state="failed", error=shown(str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - a failed job says why; the server goes on
        end(state="failed", error=shown(job_failure(f"patrol job {job['id']}", exc)))
        return
    summary = {k: v for k, v in result.summary.items() if k not in ("video", "track", "report")}
    summary["messages"] = [shown(m) for m in summary["messages"]]  # they name the stored files too
    summary["spool"] = spool_shown(summary["spool"], shown)  # why a bundle waits names the evidence folder it could not write
    summary["no_cases"] = shown(no_cases) if no_cases and summary["groups"] else None  # else only "0 new cases", no why
    end(state="done", summary=summary)


def _patrol_jobs(ctx: AppContext, limit: int | None = None, owner: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The patrol jobs' folders and records, newest first, only `owner`'s when given, at most `limit`, read as the photo
    uploads' are (`newest_jobs`: the newest folders only); an unreadable record is logged and left out."""
    return newest_jobs(ctx.service.patrol_dir.resolve(), limit, owner)  # the folders as `_patrol_dir` names them


def _patrol_progress(ctx: AppContext, folder: Path, job: dict[str, Any]) -> PatrolProgress:
    """Frames sampled so far until sampling is over (`sampled.json` written), then frames judged out of those sampled,
    counted in the run's `results.jsonl` as a photo upload's photos are (`api.jobs.recorded`), and while frames are
    judged their rate and the seconds left at it as a photo upload's (`judging_pace`); phase `store` while the job waits
    for the case store (`waiting_for_store`)."""
    from pipelines.cityops.patrol import FRAMES, SAMPLED, Sampled
    from pipelines.triage.journal import RESULTS

    out, state = folder / "out", job["state"]
    waits = state == "running" and job.get("waiting")  # the case store gone: phase `store` (`waiting_for_store`)
    sampled = Sampled.load(out / SAMPLED)
    if sampled is None:
        if state != "running":
            return PatrolProgress(phase=state, done=0, total=None)
        return PatrolProgress(phase="store" if waits else "sampling", done=sum(1 for _ in (out / FRAMES).glob("*.jpg")), total=None)
    total = len(sampled.frames)
    done = recorded(ctx.jobs.records, out / RESULTS, job, folder)
    phase = ("store" if waits else "cases" if done >= total else "frames") if state == "running" else state
    return PatrolProgress(phase=phase, done=done, total=total,
                          **judging_pace(ctx.jobs.records, out / RESULTS, total, done, phase == "frames"))


def _patrol_view(ctx: AppContext, folder: Path, job: dict[str, Any]) -> PatrolJob:
    return PatrolJob(**job, progress=_patrol_progress(ctx, folder, job))


def resume_patrol_jobs(ctx: AppContext) -> list[str]:
    """Queue again, in upload order, the patrol jobs a stopped server left queued or running, as
    `TriageJobs.resume_unfinished` does for photo uploads (a queued job was cancelled with the pool, a running one
    stopped mid-way, and either stayed so for ever); a running one is taken up where it was (`run_patrol(resume=True)`).
    Not one another server process on this data folder has queued or runs (`TriageJobs.submit`)."""
    unfinished = [(f, j) for f, j in reversed(_patrol_jobs(ctx)) if j.get("state") in UNFINISHED]
    return [job["id"] for folder, job in unfinished if ctx.jobs.submit(folder, partial(_run_patrol, ctx, folder, job))]


@router.post("/patrol/jobs", status_code=202, summary="Upload a patrol video (field `video`) and its GPS track (field `track`)",
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["video", "track"], "properties": {
                     "video": {"type": "string", "format": "binary"},
                     "track": {"type": "string", "format": "binary", "description": "GPX, NMEA (.nmea/.log) or the dashcam's SRT."},
                     "start": {"type": "string", "example": "2026-11-20 09:00:00",
                               "description": "Wall-clock time of the video's first frame, as `streetwatch patrol --start`: "
                                              "local time in the city's zone (`GET /api/v1/meta`'s `timezone`, the one the pages show) "
                                              "unless an offset is given. Needed with a GPX or NMEA track when the video has no usable creation_time tag (a dashcam's TS)."}}}}}}},
             responses=problems(400, 401, 403, 413, 415, 422))
async def create_patrol_job(request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> PatrolJob:
    """Triaged like an upload of photos taken along the route (docs/city-operations.md); poll the job for its summary.
    A video the job would refuse at its start (not a video, frames over the photos' pixel limit) is refused 422 here."""
    from pipelines.cityops.tracks import SUFFIXES

    async with _form(request, ctx.service.max_upload_bytes, ("video", "track"), ("start",)) as (files, texts):
        if "video" not in files:
            raise Problem(400, "no video in form field 'video'", slug="no-files")
        if "track" not in files:  # the command finds a track beside the video; an upload has nothing beside it
            raise Problem(400, "no GPS track in form field 'track' (GPX, NMEA .nmea/.log or the dashcam's SRT)", slug="no-files")
        (video_part, video_label), (track_part, track_label) = files["video"], files["track"]
        if Path(track_label).suffix.lower() not in SUFFIXES:
            raise Problem(415, f"{track_label}: a GPS track is .gpx, .nmea/.log or a dashcam .srt", slug="unsupported-media-type")
        start = _start_field(ctx, texts.get("start"))
        job_id = uuid.uuid4().hex[:16]
        folder = _patrol_dir(ctx, job_id)
        suffix = Path(video_label).suffix.lower()  # a label's suffix: letters and digits only reach the disk (no NUL)
        job: dict[str, Any] = {"id": job_id, "owner": who.name, "state": "queued", "created_at": datetime.now(UTC).isoformat(),
                               "video": "video" + (suffix if re.fullmatch(r"\.[a-z0-9]{1,7}", suffix) else ".mp4"),
                               "video_label": video_label, "track": "track" + Path(track_label).suffix.lower(),
                               "track_label": track_label, "start": start}
        folder.mkdir(parents=True)
        try:  # the video in chunks, never whole in memory; a job only once both files are whole on disk
            await run_in_threadpool(copy_upload, video_part, folder / job["video"])
            await run_in_threadpool(copy_upload, track_part, folder / job["track"])
            await run_in_threadpool(_check_video, folder, job, ctx.settings)
            write_job(folder, job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    ctx.jobs.submit(folder, partial(_run_patrol, ctx, folder, job))
    return _patrol_view(ctx, folder, job)


def _check_video(folder: Path, job: dict[str, Any], settings: Settings) -> None:
    """422 naming the video as uploaded and why, Chinese first, when the job would refuse it at its start (not a video,
    no video stream, frames over `MAX_FRAME_PIXELS`): answered 202, its job failed a moment later, and the client
    polled for what the upload could have said at once."""
    from pipelines.cityops.patrol import VideoRefused, open_video

    try:
        open_video(folder / job["video"]).close()
    except VideoRefused as exc:
        raise Problem(422, f"{job['video_label']}：{exc.zh} {_as_uploaded(folder, job, settings)(str(exc))}", slug="video-refused") from None


def _patrol_job(ctx: AppContext, job_id: str, who: Principal) -> tuple[Path, dict[str, Any]]:
    """The job's folder and record, if the caller may see it: inspectors see their own jobs, reviewers and admins all;
    one removed by the retention (`service.jobs_keep_days`) is 404 saying so."""
    folder = _patrol_dir(ctx, job_id)
    job = read_job(folder)  # as the list reads it: an unreadable record (logged) is no job, not a 500
    owner = who.name if who.role is Role.INSPECTOR else None
    if job is None:
        raise Problem(404, not_found(folder.parent, job_id, "patrol job", owner), slug="job-not-found")
    if owner is not None and job["owner"] != owner:
        raise Problem(404, f"no patrol job {job_id!r}", slug="job-not-found")
    return folder, job


@router.get("/patrol/jobs", summary="Patrol jobs (inspectors: their own), newest first", responses=problems(401, 403, 422))
def list_patrol_jobs(limit: int = Query(50, ge=1, le=200, description="At most this many, the newest."),
                     ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> list[PatrolJob]:
    """What /ui/city lists, so that a page reloaded while a job runs still finds it."""
    jobs = _patrol_jobs(ctx, limit, who.name if who.role is Role.INSPECTOR else None)
    return [_patrol_view(ctx, folder, job) for folder, job in jobs]


@router.get("/patrol/jobs/{job_id}", summary="A patrol job: state, progress, and when done its summary", responses=problems(401, 403, 404))
def get_patrol_job(job_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> PatrolJob:
    return _patrol_view(ctx, *_patrol_job(ctx, job_id, who))


@router.get("/patrol/jobs/{job_id}/report", summary="A done patrol job's report (HTML: its frames, findings and cases)",
            response_class=HTMLResponse, responses=problems(401, 403, 404))
def patrol_report(job_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> HTMLResponse:
    """The triage report the job's run wrote (`report.html`, self-contained), its frames named without the server's
    folders; 404 until the job is done."""
    from pipelines.triage.report import REPORT

    folder, job = _patrol_job(ctx, job_id, who)
    return job_report(folder / "out" / REPORT, job, "patrol job",
                      _as_uploaded(folder, job, ctx.settings, html=True))
