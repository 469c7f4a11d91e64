"""Warn, re-check, then a case: the first sighting of a shop's spill-over or a parked car is a warning.

Cities often give the shop (or the driver) a chance first: the first time a violation opens on a
camera, a *warning* is recorded, shown in the service and POSTed to a webhook (an SMS, WeCom or
DingTalk gateway passes it to the shop, named from the frontage register when it is known). The
camera looks again `recheck_after_s` later, with the same judgement as the re-check of handled
cases (`pipelines.cctv.runtime.present`): still there -> the case opens, with the warning frame as
its first sighting, the re-check frame as its opening frame and the warning itself in the signed
bundle (`manifest["warnings"]`); gone -> the warning is closed as complied and no case is made.
One missed detection is not compliance: the place must stay clear for the type's clear time, or
the rules must have cleared the violation, before the warning counts as complied.

Which types and zone kinds are warned first is configuration (`cityops.warn.rules`); everything
else opens cases as before. Pending warnings outlive the watcher: started again, it resumes the
warnings still waiting (re-check due at most `resume_within_s` before the camera's first frame;
older ones are marked `lapsed` then, and those of a camera no longer watched stay `warned`).
The rules start afresh, so a violation still there opens again under a new id; that opening takes
over the waiting warning of its camera, zone and type (no second warning, no second message, the
warning's own re-check time), and the re-check then decides as above. A place that stays clear for
the type's clear time after the re-check time closes the resumed warning as complied.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import sqlalchemy as sa
import supervision as sv
from sqlalchemy.engine import Engine
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from detect.events import EventKind, ViolationEvent
from detect.evidence.builder import BundleContext
from detect.frames import Frame
from detect.scenes import resolve_thresholds
from detect.taxonomy import Taxonomy
from pipelines.cases.intake import Intake
from pipelines.cctv.config import without_password
from pipelines.settings import WarnConfig
from pipelines.cityops.schema import warnings
from pipelines.shops import SHOP_TYPES, ShopRegister, responsible_shop

log = logging.getLogger(__name__)

SECTION = "warnings"
"""Manifest section of the bundle that holds the warning which preceded the case."""


class WarningState(StrEnum):
    WARNED = "warned"  # waiting for the re-check
    COMPLIED = "complied"  # gone at the re-check: no case
    ESCALATED = "escalated"  # still there: the case opened
    LAPSED = "lapsed"  # the watcher stopped before the re-check and did not resume it in time


class _Retry(Exception):
    """A webhook answer worth another attempt (5xx, 408, 429)."""


@dataclass
class _Pending:
    id: str
    camera_id: str
    zone_id: str | None
    violation_type: str
    first_seen: datetime
    warned_at: datetime
    recheck_at: datetime
    clear_s: float
    shop: dict[str, Any]
    notified: str
    event: ViolationEvent | None  # None: resumed after a restart, waiting for the rules to open the violation again
    ctx: BundleContext | None
    absent_since: datetime | None = None
    cleared_by_rules: bool = False
    resumed: bool = False


Present = Callable[[str | None, str], sv.Detections]
"""(zone id, violation type) -> evidence of that type in that zone on the re-check frame (empty: gone)."""


class Warner:
    """Owned by the CCTV case sink (its thread is the only caller)."""

    def __init__(self, config: WarnConfig, intake: Intake, taxonomy: Taxonomy, *, shops: ShopRegister | None = None,
                 client: httpx.Client | None = None, token: str | None = None):
        self.config, self.intake, self.taxonomy, self.shops = config, intake, taxonomy, shops
        self.engine: Engine = intake.store.engine
        self.client = client or httpx.Client(timeout=config.timeout_s)
        self.token = token
        self.images = Path(config.images_dir)
        self.pending: dict[str, _Pending] = {}  # violation id (resumed, not yet taken over: `resumed:<warning id>`) -> warning
        self.complied: set[str] = set()  # violation ids whose warning closed without a case (their later events end here)
        self._resume()

    def _resume(self) -> None:
        """Take up the warnings an earlier watcher left waiting (each camera's frames decide which are too old)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(warnings).where(warnings.c.state == WarningState.WARNED.value)).all()
        for row in rows:
            r = row._mapping
            saved = (r["details"] or {}).get("resume", {})
            vtype = self.taxonomy.types.get(r["violation_type"])
            clear_s = float(saved.get("clear_s", vtype.clear_s if vtype else 0.0))
            first_seen = datetime.fromisoformat(saved["first_seen"]) if saved.get("first_seen") else r["warned_at"]
            self.pending[f"resumed:{r['id']}"] = _Pending(
                r["id"], r["camera_id"], r["zone_id"], r["violation_type"], first_seen, r["warned_at"], r["recheck_at"], clear_s,
                {"shop": r["shop_id"]} if r["shop_id"] else {}, r["notified"] or "off", None, None, resumed=True)
        if rows:
            log.info("warnings: %d waiting for their re-check resumed", len(rows))

    # ---- from the rules -------------------------------------------------------------------

    def applies(self, event: ViolationEvent) -> bool:
        """An opening this configuration warns first (the case waits for the re-check)."""
        if event.kind is not EventKind.OPENED:
            return False
        return any(event.violation_type in r.types and (not r.zone_kinds or event.zone_kind in r.zone_kinds)
                   for r in self.config.rules)

    def handles(self, event: ViolationEvent) -> bool:
        """True when the event belongs to a warning (its opening, or a later event of a warned violation)."""
        if event.violation_id in self.pending:
            if event.kind is EventKind.CLEARED:
                self.pending[event.violation_id].cleared_by_rules = True
            return True
        if event.violation_id in self.complied:
            if event.kind is EventKind.CLEARED:
                self.complied.discard(event.violation_id)
            return True
        return self.applies(event)

    def warn(self, camera, event: ViolationEvent, ctx: BundleContext) -> list[dict[str, Any]]:
        """Record and send the warning for an opening (or let it take over a resumed one); returns the structured
        records: resumed warnings of the camera found too old on the way (`lapsed`), then the warning's own."""
        lapsed = self._lapse_stale(camera.id, event.at)
        return [*lapsed, self._warn(camera, event, ctx)]

    def _warn(self, camera, event: ViolationEvent, ctx: BundleContext) -> dict[str, Any]:
        waiting = next((k for k, p in self.pending.items() if p.event is None and p.camera_id == camera.id
                        and p.zone_id == event.zone_id and p.violation_type == event.violation_type), None)
        if waiting is not None:
            p = self.pending.pop(waiting)
            p.event, p.ctx, p.absent_since = event, ctx, None
            self.pending[event.violation_id] = p
            return {"event": "warning_resumed", "warning_id": p.id, "camera_id": camera.id, "violation_id": event.violation_id,
                    "type": event.violation_type, "zone_id": event.zone_id, "at": event.at.isoformat(), "recheck_at": p.recheck_at.isoformat()}
        with self.engine.connect() as conn:
            known = conn.execute(sa.select(warnings.c.id, warnings.c.state).where(warnings.c.violation_id == event.violation_id)).first()
        if known is not None:  # the same violation judged again (a recording replayed anew): warned once, as a case opens once
            log.info("camera %s: %s was warned already (%s, %s): not warned again", camera.id, event.violation_id, known.id, known.state)
            return {"event": "warning_known", "warning_id": known.id, "camera_id": camera.id, "violation_id": event.violation_id,
                    "type": event.violation_type, "zone_id": event.zone_id, "state": known.state, "at": event.at.isoformat()}
        rule = next(r for r in self.config.rules if event.violation_type in r.types
                    and (not r.zone_kinds or event.zone_kind in r.zone_kinds))
        warning_id = f"W{event.at:%Y%m%d}-{uuid.uuid4().hex[:10]}"
        shop = responsible_shop(self.shops, event, ctx, self.taxonomy) if self.shops is not None else {}
        shop_record = self.shops.get(shop["shop"]) if shop and self.shops is not None else None
        recheck_at = event.at + timedelta(seconds=rule.recheck_after_s)
        zone = next((z for z in camera.scene.zones if z.id == event.zone_id), None)
        vtype = self.taxonomy.get(event.violation_type)
        clear_s = resolve_thresholds(vtype, zone).clear_s
        image = self._image(warning_id, event)
        vt = vtype
        message = {
            "kind": "warning", "warning_id": warning_id, "camera_id": camera.id, "zone_id": event.zone_id,
            "violation_type": event.violation_type, "name_zh": vt.name_zh, "name_en": vt.name_en,
            "address": ctx.address, "grid_cell": ctx.grid_cell, "at": event.at.isoformat(), "recheck_at": recheck_at.isoformat(),
            "shop": shop_record.model_dump(exclude={"frontages"}) if shop_record else None,
            "text": _text(event.violation_type, vt.short_name_zh, shop_record.name if shop_record else None, ctx.address, rule.recheck_after_s),
        }
        notified, error = self._notify(message)
        with self.engine.begin() as conn:
            conn.execute(warnings.insert().values(
                id=warning_id, violation_id=event.violation_id, violation_type=event.violation_type, camera_id=camera.id,
                zone_id=event.zone_id, shop_id=shop.get("shop"), state=WarningState.WARNED.value, warned_at=event.at,
                recheck_at=recheck_at, image=str(image) if image else None, notified=notified, notify_error=error,
                details={"message": message, "resume": {"first_seen": event.first_seen.isoformat(), "clear_s": clear_s}}))
        self.pending[event.violation_id] = _Pending(warning_id, camera.id, event.zone_id, event.violation_type, event.first_seen,
                                                    event.at, recheck_at, clear_s, shop, notified, event, ctx)
        return {"event": "warning", "warning_id": warning_id, "camera_id": camera.id, "violation_id": event.violation_id,
                "type": event.violation_type, "zone_id": event.zone_id, "shop": shop.get("shop"), "notified": notified,
                "at": event.at.isoformat(), "recheck_at": recheck_at.isoformat()}

    # ---- the re-check ---------------------------------------------------------------------

    def check(self, camera_id: str, frame: Frame, detections: sv.Detections, present: Present) -> list[dict[str, Any]]:
        """Re-check this camera's due warnings on one frame; returns a record per warning decided."""
        records = self._lapse_stale(camera_id, frame.ts)
        for vid, p in list(self.pending.items()):
            if p.camera_id != camera_id or frame.ts < p.recheck_at:
                continue
            found = present(p.zone_id, p.violation_type)
            if len(found) and p.event is None:
                p.absent_since = None  # resumed and still there: the rules' opening takes it over, then it escalates
                continue
            if len(found):
                records.append(self._escalate(p, frame, found, detections))
                del self.pending[vid]
                continue
            p.absent_since = p.absent_since or frame.ts
            if p.cleared_by_rules or (frame.ts - p.absent_since).total_seconds() >= p.clear_s:
                records.append(self._close(p, frame))
                del self.pending[vid]
                if not p.cleared_by_rules:
                    self.complied.add(vid)
        return records

    def _lapse_stale(self, camera_id: str, now: datetime) -> list[dict[str, Any]]:
        """Resumed warnings of this camera whose re-check was due more than `resume_within_s` before `now` (its media time): lapsed."""
        records = []
        for key, p in list(self.pending.items()):
            if p.event is None and p.camera_id == camera_id and (now - p.recheck_at).total_seconds() > self.config.resume_within_s:
                self._decide(p, WarningState.LAPSED, now, None)
                del self.pending[key]
                records.append({"event": "warning_recheck", "warning_id": p.id, "camera_id": camera_id, "outcome": "lapsed",
                                "case_id": None, "at": now.isoformat()})
        return records

    def _escalate(self, p: _Pending, frame: Frame, found: sv.Detections, all_boxes: sv.Detections) -> dict[str, Any]:
        """Still there: the case opens at the re-check, with the warning as its first sighting (a resumed
        warning: the first sighting after the restart, first seen when the warning's violation was)."""
        e = p.event
        assert e is not None and p.ctx is not None
        first_seen = min(e.first_seen, p.first_seen)
        event = replace(e, kind=EventKind.OPENED, at=frame.ts, opened_at=frame.ts, frame=frame, detections=found,
                        first_frame=e.frame, first_seen=first_seen, dwell_s=(frame.ts - first_seen).total_seconds())
        ctx = replace(p.ctx, first_detections=e.detections, privacy_detections=all_boxes)
        case = self.intake.record_event(event, ctx)
        warning = {"warning_id": p.id, "warned_at": p.warned_at.isoformat(), "recheck_at": p.recheck_at.isoformat(),
                   "resumed_after_restart": p.resumed,
                   "rechecked_at": frame.ts.isoformat(), "outcome": "still_present", "notified": p.notified,
                   "shop": p.shop.get("shop"), "warning_frame": e.frame.frame_id if e.frame else None,
                   "recheck_frame": frame.frame_id, "objects_at_warning": len(e.detections), "objects_at_recheck": len(found)}
        if case is not None:
            self.intake.store.update(case.id, details={**case.details, "warning": warning})
            self.intake.add_record(case.id, SECTION, warning)
        self._decide(p, WarningState.ESCALATED, frame.ts, case.id if case else None)
        return {"event": "warning_recheck", "warning_id": p.id, "camera_id": p.camera_id, "outcome": "escalated",
                "case_id": case.id if case else None, "type": e.violation_type, "at": frame.ts.isoformat()}

    def _close(self, p: _Pending, frame: Frame) -> dict[str, Any]:
        self._decide(p, WarningState.COMPLIED, frame.ts, None)
        return {"event": "warning_recheck", "warning_id": p.id, "camera_id": p.camera_id, "outcome": "complied",
                "case_id": None, "at": frame.ts.isoformat()}

    def _decide(self, p: _Pending, state: WarningState, at: datetime, case_id: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(warnings.update().where(warnings.c.id == p.id).values(state=state.value, checked_at=at, case_id=case_id))

    # ---- pieces ---------------------------------------------------------------------------

    def _notify(self, message: dict[str, Any]) -> tuple[str, str | None]:
        """POST the warning to the gateway with retries (tenacity); ("delivered"|"failed"|"off", error)."""
        url = self.config.webhook_url
        if url is None:
            return "off", None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}

        def post() -> None:
            response = self.client.post(str(url), json=message, headers=headers)
            if response.status_code >= 500 or response.status_code in (408, 429):
                raise _Retry(f"HTTP {response.status_code} {response.reason_phrase}")
            response.raise_for_status()

        try:
            for attempt in Retrying(stop=stop_after_attempt(self.config.attempts), wait=wait_exponential(multiplier=0.2, max=5),
                                    retry=retry_if_exception_type((httpx.TransportError, _Retry)), reraise=True):
                with attempt:
                    post()
        except (httpx.HTTPError, _Retry) as exc:
            error = _failure(str(url), exc)
            log.warning("warning %s: %s", message["warning_id"], error)
            return "failed", error
        return "delivered", None

    def _image(self, warning_id: str, event: ViolationEvent) -> Path | None:
        """The warning frame with the evidence boxes drawn (what the service shows)."""
        if event.frame is None:
            return None
        self.images.mkdir(parents=True, exist_ok=True)
        image = event.frame.image.copy()
        if len(event.detections):
            boxes = sv.Detections(xyxy=event.detections.xyxy, class_id=np.zeros(len(event.detections), dtype=int))
            image = sv.BoxAnnotator(thickness=3).annotate(image, boxes)
        path = self.images / f"{warning_id}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return path


def _failure(url: str, exc: Exception) -> str:
    """Why the gateway at `url` took no warning, as `notify_error` (/ui/city, 发送失败) and the log say it: the URL, so
    staff know which gateway to look at, and the reason in words (connection refused, timed out, the HTTP status).
    httpx's own messages named no URL on a connection error, and the one of an HTTP status ran on to a second line.
    A key in the URL's query (a WeCom or DingTalk robot's) and a password in it are written *** (`without_password`)."""
    if isinstance(exc, httpx.HTTPStatusError):
        why = f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    elif isinstance(exc, httpx.TimeoutException):
        why = f"timed out ({type(exc).__name__})"
    elif isinstance(exc, httpx.ConnectError):
        why = f"cannot connect ({exc})"
    elif isinstance(exc, _Retry):
        why = str(exc)
    else:
        why = f"{type(exc).__name__}: {exc}"
    return without_password(f"webhook {url} failed: {why}")


def _text(violation_type: str, name: str, shop: str | None, address: str | None, after_s: float) -> str:
    """The SMS the gateway sends (Chinese: the shop or the vendor reads it). A shop's type (`SHOP_TYPES`) is out in
    front of its own door (您门前); a street stall, a parked car and the other types have no door of the reader's to
    speak of: they are told where they were seen (您在…), as 您门前 told a vendor with no shop of a shop front.
    `name` is the type's `short_name_zh` (占道经营, not 占道经营 / 无照经营游商)."""
    ask = f"请于{_within(after_s)}内自行整改，届时将复查，未整改将立案处理。"
    if violation_type in SHOP_TYPES:
        who = f"{shop}：" if shop else ""
        where = f"（{address}）" if address else ""
        return f"{who}您门前{where}发现{name}，{ask}"
    where = f"在{address}" if address else ""
    return f"您好，经查您{where}存在{name}行为，{ask}"


def _within(after_s: float) -> str:
    """The time to the re-check as the SMS says it: whole minutes (600 s: 10分钟), else minutes and seconds (90 s:
    1分30秒) or seconds (30 s: 30秒). Rounded to minutes, a re-check under half a minute away read 请于0分钟内 and 90 s
    read 2分钟, longer than the shop had."""
    minutes, seconds = divmod(max(1, round(after_s)), 60)
    if not seconds:
        return f"{minutes}分钟"
    return f"{minutes}分{seconds}秒" if minutes else f"{seconds}秒"


IMAGE_REMOVED = "image_removed"
"""The key of a warning's details noting its frame's removal by the retention: {removed_at, keep_days}."""


def remove_expired_images(engine: Engine, keep_days: int, now: datetime | None = None) -> tuple[int, int]:
    """Delete the frames of the warnings decided (complied, escalated, lapsed) more than `keep_days` ago, by their
    re-check (`checked_at`), and forget them (`image` NULL, so the list says it has none); returns (frames, bytes).
    A frame shows the street and whoever passed by, and a decided warning needs it no more: an escalated one's is in
    its case's signed evidence, which keeps it. A waiting warning keeps its frame; `keep_days` 0 keeps all for ever.
    Each removal is noted in the warning's details (`IMAGE_REMOVED`), so its image's 404 can say why (`no_image`)."""
    if not keep_days:
        return 0, 0
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=keep_days)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(warnings.c.id, warnings.c.image, warnings.c.checked_at, warnings.c.warned_at,
                                      warnings.c.details).where(
            warnings.c.state != WarningState.WARNED.value, warnings.c.image.is_not(None))).all()
    removed = freed = 0
    for r in (r for r in rows if (r.checked_at or r.warned_at) < cutoff):
        image = Path(r.image)
        try:
            freed += image.stat().st_size
            image.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # kept listed, tried again at the next sweep
            log.warning("warning %s: frame %s not removed: %s", r.id, image, exc)
            continue
        with engine.begin() as conn:
            removal = {"removed_at": now.isoformat(), "keep_days": keep_days}
            conn.execute(warnings.update().where(warnings.c.id == r.id).values(
                image=None, details={**(r.details or {}), IMAGE_REMOVED: removal}))
        removed += 1
    return removed, freed


def _selected(query: sa.Select, state: str | None, camera_id: str | None) -> sa.Select:
    """`query` narrowed to the warnings in `state` of `camera_id` (each when given)."""
    if state is not None:
        query = query.where(warnings.c.state == state)
    if camera_id is not None:
        query = query.where(warnings.c.camera_id == camera_id)
    return query


def count_warnings(engine: Engine, *, state: str | None = None, camera_id: str | None = None) -> int:
    """How many warnings `list_warnings` pages through with these filters (all pages)."""
    with engine.connect() as conn:
        return conn.execute(_selected(sa.select(sa.func.count()).select_from(warnings), state, camera_id)).scalar_one()


def list_warnings(engine: Engine, *, state: str | None = None, camera_id: str | None = None, limit: int = 200,
                  offset: int = 0) -> list[dict[str, Any]]:
    """Warnings newest first (for the service), `limit` of them from the `offset`-th (`count_warnings`: how many)."""
    query = _selected(sa.select(warnings), state, camera_id).order_by(warnings.c.warned_at.desc(), warnings.c.id)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query.limit(limit).offset(offset))]
    for r in rows:
        for k, v in r.items():
            if isinstance(v, datetime):
                r[k] = v.isoformat()
        r["has_image"] = bool(r.pop("image", None))
    return rows


def warning_image(engine: Engine, warning_id: str) -> Path | None:
    with engine.connect() as conn:
        image = conn.execute(sa.select(warnings.c.image).where(warnings.c.id == warning_id)).scalar()
    return Path(image) if image and Path(image).is_file() else None


def no_image(engine: Engine, warning_id: str) -> str:
    """Why warning `warning_id` has no frame to show, for its 404: removed by the retention (`remove_expired_images`),
    saying when and after which setting, as a removed job's 404 does, or none such."""
    with engine.connect() as conn:
        details = conn.execute(sa.select(warnings.c.details).where(warnings.c.id == warning_id)).scalar()
    removal = (details or {}).get(IMAGE_REMOVED)
    if not removal:
        return f"no image for warning {warning_id!r}"
    return (f"已过保留期，告知画面已删除（告知记录仍保留，已立案的画面在案件的签名证据中） the frame of warning {warning_id!r} "
            f"was removed on {removal['removed_at'][:10]}, {removal['keep_days']} days after its re-check "
            "(cityops.warn.images_keep_days); the warning is kept, an escalated one's frame in its case's signed evidence")
