"""Cases: search, detail with evidence (signed URLs), and review actions recorded with reviewer and time."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import Connection

from api.accounts import Principal
from api.cameras import Cameras
from api.auth import READ_CASES, REVIEW
from api.context import AppContext, get_ctx
from api.problems import Problem, invalid, problems, unusable
from api.routers.analytics import sheet_for
from api.uploads import CappedBodyRoute
from detect.candidates import WHOLE_IMAGE
from detect.cityzones import load_city_zones
from detect.config_io import ConfigError, Same, loaded_file
from detect.evidence import MANIFEST
from detect.scenes import ZoneRules
from detect.taxonomy import Severity, Taxonomy
from detect.text import Lines
from pipelines.cases.intake import case_boxes
from pipelines.cases.states import STATE_NAMES_ZH, CaseState, review_actions
from pipelines.cases.store import (MAX_ADDRESS, MAX_NOTE, MAX_TAGS, TAG, Audit, Case, CaseQuery, NotReopenable,
                                   evidence_removed)
from pipelines.cases.vocabulary import (HISTORY_REASONS_ZH, REASONS, REVIEW_NAMES_ZH, SOURCE_NAMES_ZH, DispatchTargetError,
                                        RejectReason, pick_target)
from pipelines.dispatch.adapters import target_voids
from pipelines.evidence_store import StorageError
from pipelines.grid import GridCells, load_grid
from pipelines.times import as_utc

router = APIRouter(tags=["cases"], route_class=CappedBodyRoute)
log = logging.getLogger(__name__)

HIDDEN = {"evidence_ref", "verification_ref"}  # storage locations never leave the server


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _not_a_number(value: Any) -> Any:
    """pydantic reads a number (`1700000000`, `0.5`, in a query's text or a JSON body's number) as Unix seconds, where
    the schema and docs/service.md say ISO 8601: a timestamp in milliseconds or a count sent by mistake searched from
    some moment, or passed a review's check against a case's `updated_at`, silently. It is refused."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        raise PydanticCustomError("datetime_number", "{value} is a number, not a date-time: give ISO 8601, e.g. "
                                  "2026-11-20T09:00:00+08:00", {"value": str(value).strip()})
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]
"""A date-time a request gives (a query's, a body's), ISO 8601 only (a number refused, not read as Unix seconds)."""


class Unchanged(BaseModel):
    """What a review action acts on: the case as the client loaded it."""

    expected_updated_at: IsoDateTime | None = Field(
        None, description="The case's `updated_at` as the client loaded it (ISO 8601, as the case gives it; a number is "
        "refused): when the case changed since (another reviewer, a dispatch status), nothing is done and the answer is "
        "409 `case-changed`, so a page left open does not overwrite what it did not show. Left out: no check.")


class ConfirmBody(Unchanged):
    dispatch: bool = Field(True, description="Queue the case for dispatch (needs a dispatch target).")
    target: str | None = Field(None, description="Dispatch target; default: the only configured one.", max_length=64)
    note: Lines | None = Field(None, description="Reviewer's note (line breaks allowed, no other control character).", max_length=2000)


class RejectBody(Unchanged):
    reason: RejectReason = Field(description="Reason code (GET /meta lists them; `permitted` is accepted for `legal`).")
    note: Lines | None = Field(None, description="Reviewer's note (line breaks allowed, no other control character).", max_length=2000)


class ReopenBody(Unchanged):
    note: Lines = Field(description="Why the rejection is undone (required; the history and the audit log keep it).",
                        min_length=1, max_length=2000)


class NoteBody(BaseModel):
    text: Lines = Field(description="The note (备注), e.g. why a case a platform holds is false: line breaks allowed, no other "
                        f"control character, 1-{MAX_NOTE} characters, not blank.", min_length=1, max_length=MAX_NOTE)


class EditBody(Unchanged):
    type: str | None = Field(None, description="Corrected violation type id (from /api/v1/meta).", max_length=64)
    description: Lines | None = Field(None, description="New description (line breaks allowed, no other control character).", max_length=4000)
    tags: list[Annotated[str, StringConstraints(pattern=TAG.pattern)]] | None = Field(
        None, description="The case's tags, replacing the old ones (what scoring sheets count, e.g. food_on_site; "
        "/api/v1/meta lists the sheet's). Allowed in any state.", max_length=MAX_TAGS)
    severity: Severity | None = Field(
        None, description="The case's severity: general (一般), major (较重) or serious (严重); what reports count by. Allowed in any state.")
    address: str | None = Field(None, description=f"The case's address (地址), trimmed, one line of 1-{MAX_ADDRESS} characters: where a platform sends "
                                "a handler (a photo without GPS has none). Before dispatch, as the description.")
    lat: float | None = Field(None, description="Latitude (WGS-84), with `lon`: both or neither. New coordinates move the case to "
                              "the grid cell of `service.triage.grid` they lie in, when that is set; `lat` and `lon` both "
                              "null remove coordinates set by mistake (and that cell).")
    lon: float | None = Field(None, description="Longitude (WGS-84), with `lat`.")

    def clears_coordinates(self) -> bool:
        """`"lat": null, "lon": null` given (not left out): remove the case's coordinates."""
        return {"lat", "lon"} <= self.model_fields_set and self.lat is None and self.lon is None


# ---- response bodies --------------------------------------------------------------------------


class TypeInfo(BaseModel):
    id: str
    name_zh: str
    name_en: str


class ReasonInfo(BaseModel):
    code: RejectReason
    zh: str
    en: str
    hard_negative: bool = Field(description="Retraining learns the rejected detections as hard negatives (the object is not what was seen).")


class SeverityInfo(BaseModel):
    id: Severity
    zh: str


class TagInfo(BaseModel):
    tag: str
    items: list[str] = Field(description="Names of the scoring-sheet items that count cases with this tag.")
    types: list[str] = Field(description="Violation types those items count.")


class HistoryReasonInfo(BaseModel):
    pattern: str = Field(description="A regular expression (JavaScript's and Python's alike) matching the English reason "
                                     "from its start.")
    zh: str


class Meta(BaseModel):
    """What the review forms offer."""

    types: list[TypeInfo] = Field(description="Violation types (taxonomy).")
    reject_reasons: list[ReasonInfo] = Field(description="Reject reason codes in key order (keys 1-9 of the queue page).")
    states: list[CaseState] = Field(description="Case states.")
    state_names: dict[str, str] = Field(description="Each case state's Chinese name (待审核, 已立案 ...), as the pages show it.")
    review_names: dict[str, str] = Field(description="Each review decision's Chinese name (`approved` 已确认, `rejected` "
                                         "已驳回), as the pages and the case export show it.")
    history_reasons: list[HistoryReasonInfo] = Field(description="The Chinese of the reasons the service writes in a case's "
                                                     "history (`case drafted` 生成案件 ...), shown before them; the first "
                                                     "pattern that matches wins, a reason none matches is shown as it is.")
    source_names: dict[str, str] = Field(description="Each source kind's Chinese name (`camera` 摄像头, `photo_batch` 照片).")
    class_names: dict[str, str] = Field(description="Detector classes' Chinese names (taxonomy `classes:` name_zh; a "
                                        "`verified:<type>` class its type's), shown before the class in the evidence's box labels.")
    dispatch_targets: list[str] = Field(description="Configured dispatch targets.")
    tags: list[TagInfo] = Field(description="Tags the deployment's scoring sheet counts (what a reviewer may set on a case).")
    severities: list[SeverityInfo] = Field(description="Case severities, least serious first.")
    timezone: str = Field(description="The city's IANA time zone (`analytics.timezone`): the pages show every time in it, "
                          "whatever the zone of the PC they run on, and the service reads a time typed on them without an offset "
                          "(the patrol upload's `start`) in it.")


class CaseView(BaseModel):
    """A case as clients see it (storage locations left out); times are ISO 8601 strings."""

    model_config = ConfigDict(extra="allow")

    id: str
    violation_id: str | None = Field(description="The rules' violation id (camera:zone:type:object:time or photo id).")
    violation_type: str
    state: CaseState
    source_kind: str = Field(description="camera or photo.")
    source_id: str = Field(description="Camera id or photo batch id.")
    zone_id: str | None
    lat: float | None
    lon: float | None
    address: str | None
    grid_cell: str | None
    description: str | None
    first_seen_at: str | None
    opened_at: str | None
    cleared_at: str | None
    evidence_digest: str | None = Field(description="SHA-256 of the signed evidence manifest.")
    dispatch_target: str | None
    dispatch_ref: str | None = Field(description="The dispatch platform's task number.")
    review_decision: str | None
    reviewer: str | None
    reviewed_at: str | None
    review_reason: str | None
    review_note: str | None
    evidence_boxes: dict[str, Any] | None = Field(description="The evidence image and its boxes (for drawing).")
    reason: str | None
    details: dict[str, Any]
    created_at: str
    updated_at: str
    has_evidence: bool = Field(description="Evidence is stored (the detail has its files); false once the rejected cases' "
                                           "evidence retention removed it (details.evidence_removed_at).")


class CasePage(BaseModel):
    items: list[CaseView]
    total: int = Field(description="Cases matching the filters (all pages).")
    limit: int
    offset: int


class EvidenceImage(BaseModel):
    path: str = Field(description="Path inside the bundle.")
    role: str = Field(description="What the image shows (frame, crop, strip, shared copy ...).")
    url: str = Field(description="Signed, expiring URL of the file.")
    content_type: str | None


class Evidence(BaseModel):
    """The evidence bundle's images (signed URLs), boxes, zone and manifest facts."""

    model_config = ConfigDict(extra="allow")

    images: list[EvidenceImage]
    boxes: dict[str, Any] | None = Field(description="Evidence boxes and the image they are drawn on (`url`).")
    zone: Any = Field(description="The zone polygon and its meaning, when the case has one: `id`, `kind` and `polygon` as the "
                      "evidence holds them, `name` (北门人行道) from the zone's scene or the city's zones as they are now, null "
                      "where it has none.")
    error: str | None = Field(None, description="Set when the bundle could not be read.")
    digest: str | None = None
    model: Any = Field(None, description="The model that saw it (id, digest).")
    verifier: Any = Field(None, description="The verifier heads that judged with that model: `id` (`none`: the model's classes "
                          "alone), `card_sha256`, `heads_sha256`; null for a bundle sealed before bundles named it.")
    times: Any = None
    texts: Any = None
    phones: Any = None
    url_expires_s: int | None = Field(None, description="Seconds the URLs stay valid.")


class Delivery(BaseModel):
    target: str
    status: str = Field(description="pending, delivered or parked.")
    attempts: int
    remote_ref: str | None
    parked_reason: str | None
    delivered_at: str | None


class HistoryItem(BaseModel):
    from_: str | None = Field(alias="from", description="State before (None for the first record).")
    to: str
    at: str
    actor: str
    reason: str | None


class Reopen(BaseModel):
    allowed: bool = Field(description="A reviewer may reopen the case now (POST /cases/{id}/reopen).")
    why_not: str | None = Field(description="Why not, Chinese first (a platform voided it, triage withdrew it, too late).")


class CaseDetail(BaseModel):
    case: CaseView
    evidence: Evidence | None = Field(description="None while the case has no stored evidence.")
    deliveries: list[Delivery] = Field(description="Dispatch deliveries (outbox entries).")
    history: list[HistoryItem] = Field(description="State changes, oldest first.")
    reopen: Reopen | None = Field(description="For a rejected case: whether its rejection can be undone (None otherwise).")
    actions: list[str] = Field(description="What a reviewer may do in the case's state (the queue page's buttons): confirm, "
                                           "reject, edit (type, description, place), tag (tags, severity), note; reopen: `reopen`.")


class AuditRecord(BaseModel):
    id: int
    at: str
    actor: str
    role: str
    action: str = Field(description="confirm, reject, reopen, edit or put_scene; remove_evidence: the rejected cases' evidence "
                                    "retention (actor retention, role system).")
    case_id: str | None
    details: dict[str, Any]


def case_json(case: Case, ctx: AppContext) -> dict[str, Any]:
    data = {k: v for k, v in asdict(case).items() if k not in HIDDEN}
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    if case.reason:  # a failed upload's reason names the evidence folder (or a key file), never shown as a server path
        data["reason"] = ctx.settings.named_by_setting(case.reason)
    data["state"] = str(case.state)
    data["has_evidence"] = case.evidence_ref is not None and case.evidence_removed_at is None
    return data


@router.get("/meta", summary="Violation types, reject reasons, states, dispatch targets and the city's time zone (for the pages)",
            response_model=Meta, responses=problems(401, 403))
def meta(ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> dict[str, Any]:
    return {
        "types": [{"id": t.id, "name_zh": t.name_zh, "name_en": t.name_en} for t in ctx.taxonomy.types.values()],
        "reject_reasons": [{"code": c.value, "zh": r.zh, "en": r.en, "hard_negative": r.hard_negative} for c, r in REASONS.items()],
        "states": [s.value for s in CaseState],
        "state_names": {s.value: STATE_NAMES_ZH[s] for s in CaseState},
        "review_names": REVIEW_NAMES_ZH,
        "history_reasons": [{"pattern": pattern, "zh": zh} for pattern, zh in HISTORY_REASONS_ZH],
        "source_names": SOURCE_NAMES_ZH,
        "class_names": ctx.taxonomy.class_names_zh,
        "dispatch_targets": sorted(ctx.settings.dispatch.targets),
        "tags": _sheet_tags(ctx),
        "severities": [{"id": s.value, "zh": s.name_zh} for s in Severity],
        "timezone": ctx.page_tz.key,
    }


def _sheet_tags(ctx: AppContext) -> list[dict[str, Any]]:
    """The tags of the scoring sheet; none when the sheet cannot be loaded (the review forms still work, /scores says why)."""
    try:
        sheet = sheet_for(ctx)
    except Problem:
        return []
    return [{"tag": tag, "items": [i.name for i in items], "types": sorted({t for i in items for t in i.types})}
            for tag, items in sorted(sheet.tags().items())]


@router.get("/cases", summary="Search cases (filters, paging, sorting)", response_model=CasePage,
            responses=problems(401, 403, 422))
def list_cases(
    ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES),
    type: str | None = Query(None, max_length=64, description="Violation type id."),
    state: CaseState | None = Query(None),
    camera: str | None = Query(None, max_length=200, description="Source id: camera id or photo batch id."),
    grid_cell: str | None = Query(None, max_length=64),
    since: IsoDateTime | None = Query(None, description="Opened at or after (ISO 8601; no offset = UTC)."),
    until: IsoDateTime | None = Query(None, description="Opened before (ISO 8601)."),
    q: str | None = Query(None, max_length=200, pattern=r"^[^\x00]*$", description="Text in the id, address, description or violation id, or in the name of the case's type "
                   "(Chinese or English: 占道经营, street stall)."),
    reviewed: bool | None = Query(None, description="Only reviewed (true) or unreviewed (false) cases."),
    severity: Severity | None = Query(None, description="Only cases of this severity (general 一般, major 较重, serious 严重)."),
    sort: Literal[CaseQuery.SORTABLE] = Query("opened_at"),  # type: ignore[valid-type]
    order: Literal["asc", "desc"] = Query("desc"),
    limit: int | None = Query(None, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> dict[str, Any]:
    query = CaseQuery(violation_type=type, state=state, source_id=camera, grid_cell=grid_cell, since=_utc("since", since),
                      until=_utc("until", until), text=q, text_types=tuple(ctx.taxonomy.types_named(q or "")), reviewed=reviewed,
                      severity=severity, sort=sort, descending=order == "desc", limit=limit or ctx.service.default_page_size,
                      offset=offset)
    items, total = ctx.store.search(query)
    return {"items": [case_json(c, ctx) for c in items], "total": total, "limit": query.limit, "offset": offset}


def _utc(name: str, at: datetime | None) -> datetime | None:
    """The query parameter `name` in UTC (no offset = UTC); 422 for one with no UTC equivalent
    (`9999-12-31T23:59:59-10:00`), which the case store would fail on with a 500."""
    if at is None:
        return None
    try:
        return as_utc(at, UTC)
    except ValueError:
        raise invalid(["query", name], f"{at.isoformat()} is out of range") from None


def _named_zone(ctx: AppContext, case: Case, zone: dict[str, Any] | None) -> dict[str, Any] | None:
    """The evidence's zone (id, kind, polygon, as signed) with the zone's `name` (北门人行道) from its scene or the city's
    zones as they are now, which the manifest does not hold, so the queue page labels it as city staff know it; the name
    null where the zone has none, is no longer there or its file cannot be read (the evidence is shown all the same)."""
    if not zone:
        return zone
    name = loaded_file(_zone_name, *_zone_of(ctx, case)) if case.zone_id not in (None, WHOLE_IMAGE) else None
    return {**zone, "name": name}


def _zone_name(cameras: Cameras, map_zones: Path | None, taxonomy: Taxonomy, timezone: str | None,
               camera_id: str | None, zone_id: str) -> str | None:
    """The name of the zone `_zone_rules` finds, for the case page (`_named_zone`, through `loaded_file`: looked up
    once per change of the files read); None where it has none or is gone, or where its file cannot be read, which is
    logged then, once per change of the file, not at each view of each case."""
    try:
        zone = _zone_rules(cameras, map_zones, taxonomy, timezone, camera_id, zone_id)
    except ConfigError as exc:
        log.error("case page: the name of zone %s is not shown: %s", zone_id, exc)
        return None
    return zone.name if zone is not None else None


def _evidence(ctx: AppContext, case: Case) -> dict[str, Any] | None:
    """The bundle's files with URLs the browser can load, the evidence boxes and the zone."""
    if case.evidence_ref is None:
        return None
    if case.evidence_removed_at is not None:  # said so, never a broken image
        return {"error": evidence_removed(case), "removed_at": case.evidence_removed_at, "images": [],
                "boxes": case.evidence_boxes, "zone": None, "digest": case.evidence_digest}
    try:
        manifest = json.loads(ctx.evidence.read_bytes(case.evidence_ref, MANIFEST))
    except (StorageError, json.JSONDecodeError) as exc:
        return {"error": f"evidence unreadable: {exc}", "images": [], "boxes": case.evidence_boxes, "zone": None}
    presigned = ctx.settings.evidence_store.backend == "s3"
    lifetime = timedelta(seconds=ctx.service.url_expiry_s)  # the local links' too: a copied link opens faces and plates

    def url(path: str) -> str:
        return ctx.evidence.url(case.evidence_ref, path, lifetime) if presigned else ctx.signer.url(case.id, path)

    images = [{"path": a["path"], "role": a["role"], "url": url(a["path"]), "content_type": a.get("content_type")}
              for a in manifest.get("artifacts", []) if str(a.get("content_type", "")).startswith("image/")]
    boxes = dict(case_boxes(case, manifest) or {})  # a case the release before stored without them: its manifest's
    if boxes.get("image"):
        boxes["url"] = url(boxes["image"])
    return {"images": images, "boxes": boxes, "zone": _named_zone(ctx, case, manifest.get("zone")), "digest": case.evidence_digest,
            "model": manifest.get("model"), "verifier": manifest.get("verifier"), "times": manifest.get("times"),
            **_read_text(manifest), "url_expires_s": ctx.service.url_expiry_s}


def _read_text(manifest: dict[str, Any]) -> dict[str, Any]:
    """The OCR lines and phone numbers the bundle records (under its `text`): read from the top level, where the manifest
    has never held them, they were always null and the case page's 号码 Phones row stayed empty on every small ad."""
    text = manifest.get("text") or {}
    return {"texts": text.get("texts"), "phones": text.get("phones")}


@router.get("/cases/{case_id}", summary="One case: facts, evidence with signed URLs, review, deliveries, history",
            response_model=CaseDetail, responses=problems(401, 403, 404))
def get_case(case_id: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> dict[str, Any]:
    case = ctx.store.get(case_id)
    deliveries = [{"target": e.target, "status": e.status, "attempts": e.attempts, "remote_ref": e.remote_ref,
                   "parked_reason": e.parked_reason, "delivered_at": e.delivered_at.isoformat() if e.delivered_at else None}
                  for e in ctx.store.outbox_entries(case_id=case.id)]
    history = [{"from": h.from_state and str(h.from_state), "to": str(h.to_state), "at": h.at.isoformat(), "actor": h.actor,
                "reason": h.reason and ctx.settings.named_by_setting(h.reason)}
               for h in ctx.store.history(case.id)]
    reopen = None
    if case.state is CaseState.REJECTED:
        why_not = ctx.store.reopen_refusal(case.id, within=_reopen_window(ctx))
        reopen = {"allowed": why_not is None, "why_not": why_not and ctx.settings.named_by_setting(why_not)}  # quotes a reason
    return {"case": case_json(case, ctx), "evidence": _evidence(ctx, case), "deliveries": deliveries, "history": history,
            "reopen": reopen, "actions": review_actions(case.state)}


def _audit(ctx: AppContext, who: Principal, action: str, details: dict[str, Any]) -> Audit[Case]:
    """The store's `audit` callback recording `who`'s `action` in the action's own transaction: recorded after it, a
    failed audit write left the action done with no record, and the reviewer answered an error. The record names the
    evidence the case held then (`evidence_digest`): a camera's bundle is signed again after each update, and an auditor
    asked what a reviewer confirmed could not tell which bundle it was."""
    return lambda conn, case: ctx.accounts.audit(who, action, case.id, {**details, "evidence_digest": case.evidence_digest},
                                                 conn=conn)


def _reopen_window(ctx: AppContext) -> timedelta:
    return timedelta(days=ctx.service.reopen_within_days)


def _target(ctx: AppContext, wanted: str | None) -> str:
    try:
        return pick_target(ctx.settings.dispatch.targets, wanted)
    except DispatchTargetError as exc:
        if exc.kind == "none":
            raise Problem(409, f"{exc}: confirm with dispatch=false", slug="no-dispatch-target") from None
        raise invalid(["body", "target"], str(exc)) from None


@router.post("/cases/{case_id}/confirm", summary="Confirm a candidate case (and queue it for dispatch)",
             response_model=CaseView, responses=problems(401, 403, 404, 409, 422))
def confirm(case_id: str, body: ConfirmBody, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> dict[str, Any]:
    case = ctx.store.get(case_id)
    record = _audit(ctx, who, "confirm", body.model_dump(exclude={"expected_updated_at"}))
    if body.dispatch:
        target = _target(ctx, body.target)
        case = ctx.store.review(case.id, approve=True, reviewer=who.name, target=target, note=body.note,
                                unchanged_since=body.expected_updated_at, audit=record)
    else:
        case = ctx.store.approve(case.id, reviewer=who.name, note=body.note, unchanged_since=body.expected_updated_at,
                                 audit=record)
    ctx.metrics.reviews.labels("confirm").inc()
    return case_json(case, ctx)


@router.post("/cases/{case_id}/reject", summary="Reject a case with a reason code", response_model=CaseView,
             responses=problems(401, 403, 404, 409, 422))
def reject(case_id: str, body: RejectBody, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> dict[str, Any]:
    """A case a dispatch platform holds (submitted 已上报, accepted 已立案) is refused 409 `case-on-platform`, naming the
    platform and its task number: it is voided on the platform (or closed there, where it cannot void: Open311), whose
    status update moves it here."""
    case = ctx.store.review(case_id, approve=False, reviewer=who.name, reason_code=body.reason.value, note=body.note,
                            unchanged_since=body.expected_updated_at,
                            voids=lambda target: target_voids(ctx.settings.dispatch.targets, target),
                            audit=_audit(ctx, who, "reject", body.model_dump(mode="json", exclude={"expected_updated_at"})))
    ctx.metrics.reviews.labels("reject").inc()
    return case_json(case, ctx)


@router.post("/cases/{case_id}/reopen", summary="Undo a rejection made in review: the case is a candidate again",
             response_model=CaseView, responses=problems(401, 403, 404, 409, 422))
def reopen(case_id: str, body: ReopenBody, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> dict[str, Any]:
    if not body.note.strip():
        raise invalid(["body", "note"], "请填写重新打开的原因 — give why the rejection is undone")

    def record(conn: Connection, case: Case) -> None:
        # whose rejection this undid, as the reopening recorded it in its transaction (a copy read before it may hold an
        # earlier rejection, undone and made again by others in between)
        undone = next(h.details["reopened"] for h in reversed(ctx.store.history(case.id, conn=conn)) if "reopened" in h.details)
        ctx.accounts.audit(who, "reopen", case.id, {"note": body.note, "rejected_by": undone["rejected_by"],
                                                    "review_reason": undone["review_reason"],
                                                    "review_note": undone["review_note"]}, conn=conn)

    try:
        case = ctx.store.reopen(case_id, actor=who.name, note=body.note, within=_reopen_window(ctx),
                                unchanged_since=body.expected_updated_at, audit=record)
    except NotReopenable as exc:  # quotes the rejection's reason, which may name an evidence folder
        raise NotReopenable(ctx.settings.named_by_setting(str(exc))) from exc
    ctx.metrics.reviews.labels("reopen").inc()
    return case_json(case, ctx)


@router.post("/cases/{case_id}/notes", summary="Add a reviewer's note (备注) to a case in any state",
             response_model=CaseView, status_code=201, responses=problems(401, 403, 404, 422))
def add_note(case_id: str, body: NoteBody, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> dict[str, Any]:
    """A submitted (已上报) or accepted (已立案) case cannot be rejected here (the platform voids it) nor edited: the
    note is where a reviewer who finds it false records so. Appended to `details.notes` (by, at, text) and audited
    (`note`); the state, the signed evidence and `updated_at` stay as they were."""
    if not body.text.strip():
        raise invalid(["body", "text"], "请填写备注内容 — the note is blank")
    case = ctx.store.add_note(case_id, actor=who.name, text=body.text,
                              audit=_audit(ctx, who, "note", {"text": body.text}))
    ctx.metrics.reviews.labels("note").inc()
    return case_json(case, ctx)


T = TypeVar("T")


def _upload_file(ctx: AppContext, setting: str, path: Path | None, load: Callable[..., T], *args: Hashable) -> T | None:
    """The file `setting` names, that upload jobs judge photos by, as `load(path, taxonomy, *args)` reads it with the
    app's taxonomy; loaded again when it or a file it names (its grades file) changes (`loaded_file`). None: not set.
    One that cannot be read is 503 naming it by its setting (the log gives its path)."""
    if path is None:
        return None
    try:
        return loaded_file(load, path, Same(ctx.taxonomy), *args)
    except ConfigError as exc:
        raise unusable(ctx, f"{setting} unusable", exc) from None


def upload_grid(ctx: AppContext) -> GridCells | None:
    """The grid upload jobs file photos by (`service.triage.grid`), so coordinates a reviewer sets put the case in
    the cell its GPS would have. None: no grid set."""
    return _upload_file(ctx, "service.triage.grid", ctx.service.triage.grid, load_grid)


def case_zone(ctx: AppContext, case: Case) -> ZoneRules | None:
    """The zone a case was opened in, as what opened it loads it, so that a new type gets the severity the zone's rules
    give it: a camera's scene zone as the watcher loads it, a photo's map zone as upload jobs do
    (`service.triage.scene_zones`); None for a case judged as a whole, or a camera or zone no longer there."""
    if case.zone_id in (None, WHOLE_IMAGE):
        return None
    try:
        return loaded_file(_zone_rules, *_zone_of(ctx, case))
    except ConfigError as exc:
        what = f"scene of camera {case.source_id}" if case.source_kind == "camera" else "service.triage.scene_zones"
        raise unusable(ctx, f"{what} unusable", exc) from None


def _zone_of(ctx: AppContext, case: Case) -> tuple[Hashable, ...]:
    """What `_zone_rules` finds the zone of `case` by, as `loaded_file` keys it (the loader given them unwrapped)."""
    triage = ctx.service.triage
    return (Same(ctx.cameras), triage.scene_zones, Same(ctx.taxonomy), triage.timezone,
            case.source_id if case.source_kind == "camera" else None, case.zone_id)


def _zone_rules(cameras: Cameras, map_zones: Path | None, taxonomy: Taxonomy, timezone: str | None,
                camera_id: str | None, zone_id: str) -> ZoneRules | None:
    """Zone `zone_id` of camera `camera_id`'s scene as the watcher loads it, else (a photo's) of the map zones at
    `map_zones` as upload jobs load them (`loaded_file`); None when it is no longer there or no file is set.
    ConfigError when the file cannot be read."""
    if camera_id is not None:
        return cameras.zone(camera_id, zone_id)
    if map_zones is None:
        return None
    zones = loaded_file(load_city_zones, map_zones, Same(taxonomy), timezone)
    return next((z for z in zones.zones if z.id == zone_id), None)


AUDIT_NAMES = {"violation_type": "type"}  # a revised field the audit log names otherwise (the others by their own name)


def edit_changes(case: Case, actor: str, at: datetime) -> dict[str, dict[str, Any]]:
    """What the edit of `actor` at `at` changed, as the store's transaction recorded it in the case's revisions (field,
    from, to): read before that transaction, the case missed an edit another reviewer wrote in between, and the audit
    log said the text it overwrote was never there."""
    return {AUDIT_NAMES.get(r["field"], r["field"]): {"from": r["from"], "to": r["to"]}
            for r in (case.details or {}).get("revisions", []) if r["by"] == actor and r["at"] == at.isoformat()}


@router.patch("/cases/{case_id}", summary="Change the type, description or place (before dispatch), set tags or severity",
              response_model=CaseView, responses=problems(401, 403, 404, 409, 422, 503))
def edit(case_id: str, body: EditBody, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(REVIEW)) -> dict[str, Any]:
    clear = body.clears_coordinates()
    if all(value is None for name, value in body if name != "expected_updated_at") and not clear:
        raise invalid(["body"], "nothing to change: give `type`, `description`, `address`, `lat`/`lon`, `tags` and/or `severity`")
    if body.type is not None and body.type not in ctx.taxonomy.types:
        raise invalid(["body", "type"], f"unknown violation type {body.type!r} (known: {', '.join(sorted(ctx.taxonomy.types))})")
    current = ctx.store.get(case_id)  # an unknown case is 404 before an unusable grid's or scene's 503
    grid = upload_grid(ctx) if body.lat is not None or clear or body.type is not None else None  # a cell's grade
    zone = case_zone(ctx, current) if body.type is not None else None  # a scene or map zone's rules
    now = datetime.now(UTC)
    changed: dict[str, dict[str, Any]] = {}  # what the transaction recorded, for the metric once it committed

    def record(conn: Connection, case: Case) -> None:
        if changes := edit_changes(case, who.name, now):
            ctx.accounts.audit(who, "edit", case.id, changes, conn=conn)
            changed.update(changes)

    case = ctx.store.revise(case_id, actor=who.name, violation_type=body.type, description=body.description, tags=body.tags,
                            severity=body.severity, address=body.address, lat=body.lat, lon=body.lon, grid=grid,
                            clear_coordinates=clear, taxonomy=ctx.taxonomy, zone=zone, now=now,
                            unchanged_since=body.expected_updated_at, audit=record)
    if changed:
        ctx.metrics.reviews.labels("edit").inc()
    return case_json(case, ctx)


class AuditPage(BaseModel):
    """A page of a case's audit records, newest first, and how many there are: a case edited and reopened for years
    had its oldest records cut off at 200 with nothing saying so."""

    items: list[AuditRecord]
    total: int = Field(description="The case's audit records in all (every page).")
    limit: int
    offset: int


@router.get("/cases/{case_id}/audit", summary="Audit log of review actions on a case, a page at a time (newest first)",
            response_model=AuditPage, responses=problems(401, 403, 404, 422))
def audit(case_id: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(REVIEW),
          limit: int = Query(200, ge=1, le=500, description="At most this many (a page)."),
          offset: int = Query(0, ge=0, le=10_000_000, description="Skip this many of the newest first.")) -> AuditPage:
    ctx.store.get(case_id)
    return AuditPage(items=ctx.accounts.audit_records(case_id, limit, offset), total=ctx.accounts.audit_count(case_id),
                     limit=limit, offset=offset)
