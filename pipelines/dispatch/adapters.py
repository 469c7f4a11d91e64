"""Dispatch adapters: one case -> one HTTP request in the target's protocol, and its answer -> their reference.

Both adapters classify every failure the same way (`send`): timeouts, connection errors, 5xx,
429, redirects (never followed) and unreadable answers are `Transient` (retry, with their `Retry-After` if they sent one),
401/403 too (`Refused`: our credential, not the case); other 4xx are `Permanent` (park for a human, with their words). A cn-dcm platform that answers
HTTP 200 to everything and says what happened in its envelope's code is read the same way
(`cn_dcm_answer`). Adapters never retry themselves: the dispatcher owns the schedule.

A retry after an attempt that may have reached them is safe twice over: it carries the same
`Idempotency-Key`, and before it is sent the dispatcher asks them whether they already hold the
case (`look_up`: cn-dcm by our external id, Open311 by searching their requests for our case id)
and adopts the reference they created, so a platform that ignores the key gets no duplicate.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import httpx

from detect.taxonomy import Taxonomy
from pipelines.cases.store import Case
from pipelines.dispatch.config import PhonesSent, TargetConfig
from pipelines.logs import mask_phones
from pipelines.tables import CUT_MARK, cut_marked

SCHEMA_PATH = Path(__file__).with_name("schemas") / "cn-dcm-case.schema.json"
VIDEO_SOURCE, PHOTO_SOURCE = "智能发现/视频AI", "智能发现/图片AI"
"""事件来源: a camera's video, or photos (inspectors', the public's) judged by triage, which are not video."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
CN_DCM_DESCRIPTION_MAX = 2000  # the schema's maxLength of `description` (问题描述)


class DeliveryError(Exception):
    """A failed attempt; `retry` says whether another attempt can succeed."""

    retry = True
    retry_after_s: float | None = None  # how long they asked us to wait (Retry-After), if they did


class Transient(DeliveryError):
    """Worth retrying: they were unreachable, slow, overloaded, or answered something unreadable."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Refused(Transient):
    """401/403: they refuse our credential (a token expired or revoked, an address not on their allow-list), not this
    case: every case would meet the same, so none is parked for it (a long queue was parked case by case, to be
    requeued by hand); the cases wait, the target's circuit opens, and they go once the credential is fixed."""


class Permanent(DeliveryError):
    """They refused the request itself (4xx): retrying the same bytes will not help."""

    retry = False


class Duplicate(Permanent):
    """409: they say they hold this case already (a repeat of our external id, or of our Idempotency-Key), so an earlier
    attempt, or another sender of ours, reached them: the dispatcher looks the case up and adopts their number."""


class Unsupported(Permanent):
    """The target's protocol has no way to carry this message."""


VERIFICATION_KINDS_ZH = {"auto_recheck": "视频自动核查", "disposal_photo": "处置照片核查"}


@dataclass(frozen=True)
class VerificationReport:
    """A re-check's outcome for the platform: `kind` auto_recheck | disposal_photo, `outcome` a case state."""

    case: Case
    kind: str
    outcome: str
    checked_at: str
    manifest_sha256: str
    attachments: list[dict[str, Any]]  # {"path", "url", "content_type", "sha256"}
    idempotency_key: str


@dataclass(frozen=True)
class Delivery:
    """Everything an adapter needs to send one case (the manifest is the signed bundle's)."""

    case: Case
    manifest: dict[str, Any]
    manifest_sha256: str
    attachments: list[dict[str, Any]]  # {"path", "url", "content_type", "sha256"}
    idempotency_key: str
    queued_at: datetime | None = None  # when the outbox entry was written: nothing was sent before it
    public_signature: dict[str, Any] | None = None  # signature.json's Ed25519 signature of the digest, if any


def send(client: httpx.Client, method: str, url: str, *, missing_ok: bool = False, **kw: Any) -> httpx.Response:
    """One request with failures classified (see module doc); `missing_ok`: a 404 is an answer, not a failure.

    The client's read timeout (the target's `timeout_s`) bounds the whole answer, not each read: httpx
    waits that long per read, so a platform sending its body a byte at a time could hold a request past
    the lease that makes it the only one in flight (`lease_s` > 2 x `timeout_s`)."""
    try:
        response = _request(client, method, url, **kw)
    except httpx.TimeoutException as exc:
        raise Transient(f"timeout: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")) from exc
    except httpx.TransportError as exc:  # refused, reset, closed mid-answer, DNS ...
        raise Transient(f"connection: {type(exc).__name__}: {exc}") from exc
    except httpx.DecodingError as exc:  # the body contradicts its Content-Encoding (gzip that is not gzip ...)
        raise Transient(f"unreadable answer: {exc}") from exc
    if response.status_code >= 500 or response.status_code in (408, 429):
        wait = retry_after_s(response)
        asked = f" (Retry-After: {wait:.0f} s)" if wait is not None else ""
        raise Transient(f"HTTP {response.status_code}{asked}: {response.text[:200]}", retry_after_s=wait)
    if 300 <= response.status_code < 400:  # not followed: a POST would go elsewhere, or turn into a GET
        where = response.headers.get("Location") or "no Location"
        raise Transient(f"HTTP {response.status_code} redirect to {where}, not followed; if the platform moved, set the "
                        "target's url to the new address")
    if response.status_code == 404 and missing_ok:
        return response
    if response.status_code == 409:
        raise Duplicate(f"HTTP 409: {response.text[:500]}")
    if response.status_code in (401, 403):
        raise Refused(f"HTTP {response.status_code}: {response.text[:200]} (the platform refuses our credential: check "
                      "the target's token_env and that this server may call it; the cases wait until it accepts)")
    if response.status_code >= 400:
        raise Permanent(f"HTTP {response.status_code}: {response.text[:500]}")
    return response


def _request(client: httpx.Client, method: str, url: str, **kw: Any) -> httpx.Response:
    """`client.request`, its body read before `timeout.read` seconds have passed since it was sent."""
    limit = client.timeout.read
    deadline = time.monotonic() + limit if limit else None
    with client.stream(method, url, **kw) as streamed:
        raw = bytearray()
        for chunk in streamed.iter_raw():
            raw += chunk
            if deadline is not None and time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"answer not complete after {limit:g} s", request=streamed.request)
    response = httpx.Response(streamed.status_code, headers=streamed.headers, content=bytes(raw), request=streamed.request)
    response.read()  # decodes the body by its Content-Encoding, as client.request does (DecodingError if it lies)
    return response


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds their `Retry-After` header asks us to wait (delay-seconds or an HTTP-date), None if absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def task_number(value: Any) -> str | None:
    """A platform's task number as we store it: text, or a whole number (JSON has no other kind of id); None for
    an object, a list, a boolean or NaN, which stored as text (`"{'id': 1}"`, `"nan"`) would be nobody's case."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return None


def answer_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Transient(f"HTTP {response.status_code} with unreadable body: {response.text[:200]!r}") from None


def cn_dcm_answer(response: httpx.Response, success_codes: Collection[str], *, missing_ok: bool = False,
                  body_required: bool = True) -> Any:
    """The JSON of a 2xx cn-dcm answer once its envelope's own verdict is applied.

    Many 数字城管 platforms answer HTTP 200 to everything and say what happened in `{"code", "msg",
    "data"}` or `{"success", "msg"}`; read only for a task number, `{"code": 400, "msg": "缺少字段
    eventType"}` was retried until the attempt limit. A `success` flag decides when there is one, else
    the code: one of the target's `success_codes` (number or text), or no code at all, returns the body;
    a failure numbered like a server-side HTTP status (5xx, 408, 429) is `Transient`; any other is
    `Permanent`, with their code and message. `missing_ok`: code 404 returns None (a look-up's "we have
    no such case", as `send` lets an HTTP 404 through). `body_required=False`: an answer that is not
    JSON is an acknowledgement (None); only a JSON envelope can say otherwise.
    """
    try:
        body = answer_json(response)
    except Transient:
        if body_required:
            raise
        return None
    if not isinstance(body, dict):
        return body
    raw, success = body.get("code"), body.get("success")
    code = task_number(raw)  # 0, "0", 200.0 ... as text; None when absent or neither number nor text
    failed = not success if isinstance(success, bool) else raw is not None and code not in success_codes
    if not failed:
        return body
    if missing_ok and code == "404":
        return None
    message = str(body.get("msg") or body.get("message") or "no message")[:500]
    said = f"HTTP {response.status_code} with platform code {raw}: {message}" if raw is not None else \
        f"HTTP {response.status_code} with success false: {message}"
    if code is not None and code.isdigit() and (500 <= int(code) <= 599 or int(code) in (408, 429)):
        raise Transient(said)
    raise Permanent(said + " (if that code means success on this platform, add it to the target's success_codes)"
                    if raw is not None else said)


def _answered_task_number(body: Any, key: str) -> Any:
    """The task number field of an answer, bare or under the envelope's `data` (as `look_up` reads it)."""
    if isinstance(body, dict) and key not in body and isinstance(body.get("data"), dict):
        body = body["data"]
    return body.get(key) if isinstance(body, dict) else None


def reviewer_note(case: Case) -> str | None:
    """What a reviewer wrote in the case's description (the queue page, PATCH /cases/{id}), for the platform's staff:
    the words about this case that only a person saw (which shop, which corner), None when there are none."""
    return (case.description or "").strip() or None


NO_PLACE = "缺少地点（无地址、无坐标），平台无法派遣处置"


def require_place(case: Case, platform: str) -> None:
    """Park (Permanent, no request sent) a case with neither coordinates nor an address: a platform sends a handler
    to a place, and a case without one (a photo without GPS, a camera scene without `location`) would reach staff who
    can act on nothing. A reviewer adds the place on the queue page (PATCH /cases/{id}); a requeue then delivers it."""
    if (case.lat is None or case.lon is None) and not (case.address or "").strip():
        raise Permanent(f"{NO_PLACE}，请在复核页面补充地址后重新派发 — case {case.id}: {platform} needs a place to send a "
                        "handler to (coordinates or an address) and the case has neither (a photo without GPS, or a "
                        "camera scene without `location`): add an address on the review page (/ui/queue, 地点), then "
                        "`streetwatch dispatch requeue` its entry")


def _place(case: Case) -> str:
    """Where the description says the case is: its address, else its coordinates (`require_place` parks a case
    with neither before any payload is sent)."""
    if (case.address or "").strip():
        return case.address
    return f"见坐标 {case.lat:.6f}, {case.lon:.6f}"


def phones_out(phones: Sequence[str], how: PhonesSent) -> list[str]:
    """The numbers read from a posting as a target's `phones` setting sends them (`TargetConfig.phones_sent`): whole,
    masked as the logs write them (`mask_phones`, 139****5678), or none. One rule for every field of every adapter
    that carries them, so no field repeats what another withholds; the evidence bundle keeps them whole."""
    if how == "none":
        return []
    return [mask_phones(p) for p in phones] if how == "masked" else list(phones)


def _local(utc_iso: str, tz: str) -> str:
    return datetime.fromisoformat(utc_iso).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


CN_DCM_VERIFIER = {"id": "verifierId", "card_sha256": "verifierCardSha256", "heads_sha256": "verifierHeadsSha256"}
OPEN311_VERIFIER = {key: f"attribute[verifier_{key}]" for key in ("id", "card_sha256", "heads_sha256")}
"""Each platform's names for the manifest's `verifier` keys (`_verifier_fields`)."""


def _verifier_fields(manifest: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The manifest's `verifier` in a platform's words (`names`: CN_DCM_VERIFIER, OPEN311_VERIFIER), beside the model: a
    platform told which model saw a case is told which heads judged it. Nothing from a bundle sealed before bundles
    named it; id `none` (the detector's classes alone) with null digests, which a form that has no null leaves out."""
    v = manifest.get("verifier")
    return {field: v[key] for key, field in names.items()} if v else {}


class CnDcmAdapter:
    """数字城管 JSON (schema: pipelines/dispatch/schemas/cn-dcm-case.schema.json), field names per city."""

    voids: ClassVar[bool] = True
    """Its 作废 (a webhook status, `status_map`) moves a case to rejected: staff drop a case there by voiding it."""

    def __init__(self, name: str, target: TargetConfig, taxonomy: Taxonomy):
        self.name, self.target, self.taxonomy = name, target, taxonomy

    def payload(self, d: Delivery) -> dict[str, Any]:
        """The case in streetwatch's field names (what the JSON schema describes)."""
        case, m = d.case, d.manifest
        vt = self.taxonomy.get(case.violation_type)
        code = self.taxonomy.city_code(case.violation_type, self.target.city)
        tz = m["times"]["timezone"]
        opened = m["times"]["opened"]["utc"]
        read = m["text"]["phones"]
        phones = phones_out(read, self.target.phones_sent)
        minutes = round(m["dwell_s"] / 60)
        parts = [f"{vt.minor_class}（{vt.name_zh}）", f"地点：{_place(case)}"]
        if minutes:
            parts.append(f"持续约 {minutes} 分钟")
        if m["object_count"] > 1:
            parts.append(f"目标 {m['object_count']} 个")
        if phones:
            parts.append("电话：" + "、".join(phones))
        elif read:
            parts.append(f"含电话号码 {len(read)} 个（未发送）")
        if note := reviewer_note(case):
            parts.append(f"说明：{note}")
        description = cut_marked("；".join(parts), CN_DCM_DESCRIPTION_MAX)  # the platform would refuse a long note whole
        payload: dict[str, Any] = {
            "externalId": case.id,
            "eventSource": VIDEO_SOURCE if case.source_kind == "camera" else PHOTO_SOURCE,
            "eventType": "event",
            "eventTypeName": "事件",
            "majorClassName": vt.major_class,
            "majorClassCode": code.major_code,
            "minorClassName": vt.minor_class,
            "minorClassCode": code.minor_code,
            "description": description,
            "address": case.address,
            "gridCode": case.grid_cell,
            "longitude": case.lon,
            "latitude": case.lat,
            "coordinateSystem": "WGS84",
            "discoveryTime": _local(opened, tz),
            "reportTime": _local(datetime.now().astimezone().isoformat(), tz),
            "source": {"kind": case.source_kind, "id": case.source_id, "zoneId": case.zone_id},
            "phones": phones,
            "evidence": {"digest": d.manifest_sha256, "modelId": m["model"]["id"], "modelSha256": m["model"]["sha256"],
                         **_verifier_fields(m, CN_DCM_VERIFIER), "dwellSeconds": m["dwell_s"]},
            "attachments": [{"url": a["url"], "fileName": PurePosixPath(a["path"]).name, "mimeType": a["content_type"],
                             "usage": "上报", "sha256": a["sha256"]} for a in d.attachments],
        }
        if d.public_signature:  # lets the platform check the evidence with our published public key
            payload["evidence"]["publicKeySignature"] = {"algorithm": d.public_signature["algorithm"],
                                                         "keyId": d.public_signature["key_id"],
                                                         "signature": d.public_signature["signature"]}
        if self.target.callback_url:
            payload["callbackUrl"] = str(self.target.callback_url)
        return payload

    def wire(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload as this city's platform names its fields, plus its constant fields."""
        renamed = {self.target.field_map.get(k, k): v for k, v in payload.items()}
        return {**renamed, **self.target.extra_fields}

    def request(self, d: Delivery) -> dict[str, Any]:
        """The body `deliver` POSTs: the payload in this city's field names (`dispatch preview` prints it)."""
        return self.wire(self.payload(d))

    def deliver(self, client: httpx.Client, d: Delivery) -> str:
        require_place(d.case, "数字城管 (cn-dcm)")
        headers = {IDEMPOTENCY_HEADER: d.idempotency_key, **self._auth()}
        response = send(client, "POST", str(self.target.url), json=self.request(d), headers=headers)
        key = self.target.field_map.get("taskNumber", "taskNumber")
        ref = _answered_task_number(answer_json(response), key)
        if task_number(ref) is None:  # no task number: what their envelope says went wrong (a task number means they hold it)
            cn_dcm_answer(response, self.target.success_codes)
        if not ref:
            raise Transient(f"HTTP {response.status_code} without {key}: {response.text[:200]!r}")
        if (number := task_number(ref)) is None:
            raise Transient(f"HTTP {response.status_code}: {key} {ref!r} is not a task number: {response.text[:200]!r}")
        return number

    def look_up(self, client: httpx.Client, d: Delivery) -> str | None:
        """Their task number for our case if they already hold it (an earlier attempt reached them), else None.

        GET `lookup_url` (default: the case URL `?externalId=<case id>`); the answer is an object or a
        list of objects (bare, or under `data`) carrying the task number, and 404 (HTTP, or the
        envelope's code) or an empty list means they do not have it. Nothing is sent before they
        answer: a failed look-up is retried like a failed send, a refused one (other 4xx, or another
        error code in the envelope) parks the entry for a human.
        """
        external = self.target.field_map.get("externalId", "externalId")
        if self.target.lookup_url:
            url = self.target.lookup_url.replace("{external_id}", quote(d.case.id, safe=""))
        else:
            base = str(self.target.url)
            url = f"{base}{'&' if '?' in base else '?'}{urlencode({external: d.case.id})}"
        try:
            response = send(client, "GET", url, headers=self._auth(), missing_ok=True)
            if response.status_code == 404:
                return None
            found = self._found(answer_json(response), external, d.case.id)
            if found is None and cn_dcm_answer(response, self.target.success_codes, missing_ok=True) is None:
                return None  # their envelope's 404: they do not have it
        except Permanent as exc:
            raise Permanent(f"look-up by external id refused ({exc}); set `lookup_url`, or `lookup: false` "
                            "if this platform has none") from exc
        return found

    def _found(self, body: Any, external: str, case_id: str) -> str | None:
        """The task number of our case in a look-up's answer (an object or a list, bare or under `data`), or None."""
        if isinstance(body, dict) and isinstance(body.get("data"), (list, dict)):
            body = body["data"]
        items = body if isinstance(body, list) else [body]
        key = self.target.field_map.get("taskNumber", "taskNumber")
        found = [i for i in items if isinstance(i, dict) and task_number(i.get(key)) and str(i.get(external, case_id)) == case_id]
        return task_number(found[0][key]) if found else None

    def _auth(self) -> dict[str, str]:
        token = self.target.secret(self.target.token_env)
        if not token:
            return {}
        return {self.target.auth_header: f"{self.target.auth_scheme} {token}" if self.target.auth_scheme else token}

    def status(self, client: httpx.Client, ref: str) -> str | None:
        """cn-dcm platforms push status by webhook; nothing to poll."""
        return None

    def report_verification(self, client: httpx.Client, report: VerificationReport) -> None:
        """A re-check's outcome back to the platform, as an update of their task (核查结果): the automatic
        camera re-check or the check of the handler's disposal photo, with the frame it was judged on."""
        headers = {IDEMPOTENCY_HEADER: report.idempotency_key, **self._auth()}
        ref = report.case.dispatch_ref or ""
        url = str(self.target.url).rstrip("/") + "/" + self.target.verification_path.format(ref=quote(ref, safe=""))
        payload = {
            "taskNumber": ref,
            "externalId": report.case.id,
            "checkType": report.kind,
            "checkTypeName": VERIFICATION_KINDS_ZH.get(report.kind, report.kind),
            "result": "cleared" if report.outcome == "verified_cleared" else "still_present",
            "resultName": "已整改" if report.outcome == "verified_cleared" else "未整改",
            "checkTime": report.checked_at,
            "evidence": {"digest": report.manifest_sha256},
            "attachments": [{"url": a["url"], "fileName": PurePosixPath(a["path"]).name, "mimeType": a["content_type"],
                             "usage": "核查", "sha256": a["sha256"]} for a in report.attachments],
        }
        cn_dcm_answer(send(client, "POST", url, json=self.wire(payload), headers=headers), self.target.success_codes,
                      body_required=False)


class Open311Adapter:
    """Open311 GeoReport v2: form POST {base}/requests.json, GET {base}/requests/{id}.json for status."""

    voids: ClassVar[bool] = False
    """GeoReport v2 has no voided status: a request they close reads as handled (`status`), whatever the reason."""

    def __init__(self, name: str, target: TargetConfig, taxonomy: Taxonomy):
        self.name, self.target, self.taxonomy = name, target, taxonomy
        self.base = str(target.url).rstrip("/")

    def form(self, d: Delivery) -> dict[str, str]:
        case, m = d.case, d.manifest
        vt = self.taxonomy.get(case.violation_type)
        minutes = round(m["dwell_s"] / 60)
        text = f"{vt.name_en} ({vt.name_zh})"
        if minutes:
            text += f", present for about {minutes} min"
        if m["object_count"] > 1:
            text += f", {m['object_count']} objects"
        read = m["text"]["phones"]
        if phones := phones_out(read, self.target.phones_sent):
            text += ", phone numbers: " + ", ".join(phones)
        elif read:
            text += f", {len(read)} phone number{'s' if len(read) > 1 else ''} withheld (含电话号码 {len(read)} 个)"
        if note := reviewer_note(case):
            text += f". Reviewer's note: {note}"
        tail = f". Seen by camera/photo {case.source_id}; evidence digest {d.manifest_sha256[:16]}; {case_marker(case.id)}."
        form = {
            "api_key": self.target.secret(self.target.token_env) or "",
            "service_code": vt.open311_service_code,
            "description": fit_before_marker(text, tail, case_marker(case.id), self.target.description_max),
            "attribute[streetwatch_case_id]": case.id,
            "attribute[evidence_sha256]": d.manifest_sha256,
            "attribute[discovered_at]": m["times"]["opened"]["utc"],
            **{k: v for k, v in _verifier_fields(m, OPEN311_VERIFIER).items() if v is not None},
        }
        if case.lat is not None and case.lon is not None:
            form["lat"], form["long"] = f"{case.lat:.7f}", f"{case.lon:.7f}"
        if case.address:
            form["address_string"] = case.address
        urls = [a["url"] for a in d.attachments if a["url"].startswith(("http://", "https://"))]
        if urls:  # GeoReport v2 takes one media URL, and only one they can fetch is any use
            form["media_url"] = urls[0]
        if self.target.jurisdiction_id:
            form["jurisdiction_id"] = self.target.jurisdiction_id
        return form

    def request(self, d: Delivery) -> dict[str, str]:
        """The form `deliver` POSTs (`dispatch preview` prints it, the api_key masked)."""
        return self.form(d)

    def deliver(self, client: httpx.Client, d: Delivery) -> str:
        require_place(d.case, "Open311")
        form = self.request(d)
        response = send(client, "POST", f"{self.base}/requests.json", data=form,
                        headers={IDEMPOTENCY_HEADER: d.idempotency_key})
        body = answer_json(response)
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
        if first.get("service_request_id"):
            return str(first["service_request_id"])
        if first.get("token"):
            return f"token:{first['token']}"
        raise Transient(f"HTTP {response.status_code} without service_request_id or token: {response.text[:200]!r}")

    def look_up(self, client: httpx.Client, d: Delivery) -> str | None:
        """Their service_request_id for our case if an earlier attempt created it, else None.

        GeoReport v2 has no look-up by our id, so this searches GET requests.json (the type's
        service_code, from when the case was queued until now) for the description that carries
        our case id (`case_marker`). Limits, documented in docs/cases-and-dispatch.md: a server
        that does not list requests, caps the list below the matches, or answers with a token and
        creates the request later may not show an existing request, and a duplicate stays possible.
        """
        since = (d.queued_at or d.case.created_at) - timedelta(minutes=5)
        params = {"service_code": self.taxonomy.get(d.case.violation_type).open311_service_code,
                  "start_date": since.astimezone(UTC).isoformat(timespec="seconds"),
                  "end_date": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(timespec="seconds")}
        if self.target.jurisdiction_id:
            params["jurisdiction_id"] = self.target.jurisdiction_id
        body = answer_json(send(client, "GET", f"{self.base}/requests.json", params=params))
        if not isinstance(body, list):
            raise Transient(f"requests.json answered {type(body).__name__}, not a list: cannot tell whether they hold the case")
        found = [r for r in body if isinstance(r, dict) and marked_case(str(r.get("description") or "")) == d.case.id
                 and r.get("service_request_id")]
        return str(found[0]["service_request_id"]) if found else None

    def resolve_token(self, client: httpx.Client, ref: str) -> str | None:
        """GET /tokens/{token}.json: the service_request_id once they created the request."""
        body = answer_json(send(client, "GET", f"{self.base}/tokens/{ref.removeprefix('token:')}.json"))
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
        return str(first["service_request_id"]) if first.get("service_request_id") else None

    def status(self, client: httpx.Client, ref: str) -> str | None:
        """`accepted` while open, `handled` once closed (None: unknown status value)."""
        body = answer_json(send(client, "GET", f"{self.base}/requests/{ref}.json"))
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
        return {"open": "accepted", "closed": "handled"}.get(str(first.get("status", "")).lower())

    def report_verification(self, client: httpx.Client, report: VerificationReport) -> None:
        """GeoReport v2 has no call to comment on or update a request, so re-check results cannot be sent."""
        raise Unsupported("Open311 GeoReport v2 has no endpoint to add a comment or a status to a service request; "
                          "the re-check stays in the case's evidence bundle here")


def case_marker(case_id: str) -> str:
    """How our case id appears in an Open311 description, which their request listing echoes back."""
    return f"streetwatch case {case_id}"


def fit_before_marker(text: str, tail: str, marker: str, limit: int) -> str:
    """`text + tail` in at most `limit` characters, the free text cut ending in `CUT_MARK` and the tail kept whole: a
    server that cuts a long description (GeoReport v2 servers commonly keep 4,000 characters) would cut the marker the
    look-up finds the request by, written last, and a case in doubt would be sent again. A tail too long to keep
    (a source id of hundreds of characters) gives way to the marker alone."""
    if len(text) + len(tail) <= limit:
        return text + tail
    if len(tail) + len(CUT_MARK) > limit:
        tail = f". {marker}."
    return cut_marked(text, max(limit - len(tail), len(CUT_MARK))) + tail


_MARKER = re.compile(re.escape(case_marker("")) + r"([A-Za-z0-9_-]+)")


def marked_case(description: str) -> str | None:
    """The case id of the last `case_marker` in an Open311 description: the one `Open311Adapter.form` writes after
    everything else. A reviewer's note before it may name another case the same way (`见 streetwatch case SW…`,
    pasted from that case's request), and a look-up taking any marker took this request for that case's."""
    found = _MARKER.findall(description)
    return found[-1] if found else None


ADAPTERS = {"cn-dcm": CnDcmAdapter, "open311": Open311Adapter}


def target_voids(targets: Mapping[str, TargetConfig], name: str | None) -> bool:
    """Whether the dispatch target `name` can void a case (作废) by its adapter; True for one no longer configured."""
    target = targets.get(name or "")
    return target is None or ADAPTERS[target.adapter].voids


def make_adapter(name: str, target: TargetConfig, taxonomy: Taxonomy) -> CnDcmAdapter | Open311Adapter:
    return ADAPTERS[target.adapter](name, target, taxonomy)
