"""Status webhooks from cn-dcm platforms, as a plain function the API service mounts.

The platform POSTs JSON `{taskNumber, externalId, status, note}` (field names through the
target's `field_map`) whenever a case moves on its side; `status` values map to case states
through the target's `status_map` (`handled` starts the camera re-check). A call naming both
`externalId` and `taskNumber` must name the task number the case was delivered as. With
`webhook_secret_env` set, the body must carry `X-Signature: sha256=<HMAC-SHA256 hex of the body>`.
That alone lets a captured call be replayed later (an old `handled` after the case was reopened);
a target with `webhook_timestamp_header` (opt-in: the platform must sign so) has the signature
cover `<timestamp>.<body>` and refuses a call whose timestamp is missing or further than
`webhook_max_age_s` from now. Inside that window a call is taken once: `SeenCalls` keeps the
signature of each one taken in the case store until its timestamp ages out, and a repeat is refused 409
(by whichever `serve` process of the site it reaches).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.cases.schema import webhook_calls
from pipelines.cases.store import Case, CaseNotFound, CaseStore
from pipelines.dispatch.adapters import task_number
from pipelines.dispatch.config import DispatchConfig, TargetConfig
from pipelines.dispatch.dispatcher import apply_status

SIGNATURE_HEADER = "X-Signature"
log = logging.getLogger(__name__)


class WebhookError(ValueError):
    """A webhook call refused; `status_code` is the HTTP answer to give."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


class UnreadableBody(WebhookError):
    """A call whose body cannot be read as JSON (not JSON, not UTF-8, nested too deep), `reason` saying why: the API
    answers it as it answers every unreadable JSON body (400 `malformed-json`), a readable call it refuses
    (not an object, an unknown status) staying a WebhookError."""

    def __init__(self, reason: BaseException | str):
        super().__init__(400, f"body is not usable JSON: {'nested too deep' if isinstance(reason, RecursionError) else reason}")
        self.reason = reason


def unauthenticated(zh: str, en: str) -> WebhookError:
    """A 401 of the webhook, worded as the API's other 401s (api/auth.py): Chinese for the platform's staff first,
    then the English integrators may match, as it was."""
    return WebhookError(401, f"{zh} {en}")


@dataclass(frozen=True)
class WebhookResult:
    case: Case
    changed: bool


class SeenCalls:
    """The timestamped calls taken, each until its timestamp leaves the `webhook_max_age_s` window (a replay past
    it is refused for its age), so the same signed call is taken once: a captured `handled` replayed a minute later
    would move a case the re-check found still there back to `verifying`.

    Kept in the case store (`webhook_calls`), which every `serve` process of a site shares: a process's own memory took
    a call replayed to the other process again, and forgot the last window's calls at a restart. A call is claimed by
    inserting its row, which fails on the key when it was taken already, so two processes given one call at once take
    it once (the second waits on the first's insert). The calls whose window closed are removed at each claim, by the
    index on their expiry."""

    def __init__(self, engine: Engine) -> None:
        self._writer = engine.execution_options(writer=True)  # SQLite: BEGIN IMMEDIATE, as the store's writes

    def __len__(self) -> int:
        with self._writer.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(webhook_calls)).scalar_one()

    def claim(self, key: tuple[str, str], until: float, now: float) -> bool:
        """Take the call `key` (target, signature), kept until `until` (unix seconds): True; False when it was taken
        already. Calls past their window (before `now`) are removed first."""
        target, signature = key
        at = datetime.fromtimestamp(now, UTC)
        try:
            with self._writer.begin() as conn:
                conn.execute(webhook_calls.delete().where(webhook_calls.c.expires_at < at))
                conn.execute(webhook_calls.insert().values(target=target, signature=signature, seen_at=at,
                                                           expires_at=datetime.fromtimestamp(until, UTC)))
        except sa.exc.IntegrityError:
            return False
        return True

    def release(self, key: tuple[str, str]) -> None:
        """The claimed call was not applied (refused, or failed): the platform may send it again."""
        target, signature = key
        with self._writer.begin() as conn:
            conn.execute(webhook_calls.delete().where(webhook_calls.c.target == target, webhook_calls.c.signature == signature))


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """`sha256=<HMAC hex>` of the body, or of `<timestamp>.<body>` for a target with `webhook_timestamp_header`."""
    signed = body if timestamp is None else timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def handle_cn_dcm_webhook(store: CaseStore, config: DispatchConfig, target: str, body: bytes,
                          headers: Mapping[str, str], *, seen: SeenCalls, now: float | None = None) -> WebhookResult:
    """Apply one status call from `target`; raises WebhookError (with the HTTP status) when refused.
    `seen`: the timestamped calls taken so far (in the case store); `now`: unix seconds the call's timestamp is
    judged against (default: the clock)."""
    cfg = config.targets.get(target)
    if cfg is None or cfg.adapter != "cn-dcm":
        raise WebhookError(404, f"no cn-dcm dispatch target named {target!r}")
    now = time.time() if now is None else now
    stamp = _check_signature(target, cfg, body, headers, now)
    if stamp is None:
        return _apply(store, cfg, target, body)
    key = (target, _header(headers, SIGNATURE_HEADER) or "")
    if not seen.claim(key, int(stamp) + cfg.webhook_max_age_s, now):
        raise WebhookError(409, f"this call was accepted already ({cfg.webhook_timestamp_header} {stamp}, the same body "
                                f"and signature): a repeat within webhook_max_age_s ({cfg.webhook_max_age_s:g} s) is "
                                "refused as a replay; a new status call carries a new timestamp")
    try:
        return _apply(store, cfg, target, body)
    except BaseException:
        seen.release(key)  # not applied: the same call may come again (a 409 asks the platform to retry)
        raise


def _apply(store: CaseStore, cfg: TargetConfig, target: str, body: bytes) -> WebhookResult:
    """The status a checked call carries, applied to the case it names (WebhookError when it cannot be)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: JSON nested deeper
        raise UnreadableBody(exc) from None  # than the parser goes (a 64 KiB body of '[' is enough)
    if not isinstance(data, dict):
        raise WebhookError(400, "body must be a JSON object")
    names = {ours: cfg.field_map.get(ours, ours) for ours in ("taskNumber", "externalId", "status", "note")}
    status_value = str(data.get(names["status"], ""))
    status = cfg.status_map.get(status_value)
    if status is None:
        raise WebhookError(422, f"unknown status {status_value!r} (known: {', '.join(sorted(cfg.status_map))})")
    case = _find(store, target, data.get(names["externalId"]), data.get(names["taskNumber"]))
    note = data.get(names["note"])
    changed = apply_status(store, case.id, status, actor=f"dispatch:{target}", note=str(note) if note else None)
    return WebhookResult(case=store.get(case.id), changed=changed)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def _check_signature(target: str, cfg: TargetConfig, body: bytes, headers: Mapping[str, str], now: float) -> str | None:
    """With `webhook_secret_env`: the call is signed with it, and with `webhook_timestamp_header` it is also fresh
    (the timestamp signed with the body, within `webhook_max_age_s` of `now`); else WebhookError 401 with the reason.
    Returns the call's timestamp (None for a target without `webhook_timestamp_header`).

    The secret's variable not set here is 503 in words that name nothing of the server: the caller may be anyone
    who sent an X-Signature header. The operator reads the variable in the log (and in serve's start-up warning)."""
    if not cfg.webhook_secret_env:
        return None
    secret = cfg.secret(cfg.webhook_secret_env)
    if not secret:
        log.error("dispatch.targets.%s.webhook_secret_env: $%s is not set, so a status call to its webhook was refused "
                  "(503); run `streetwatch serve` with it", target, cfg.webhook_secret_env)
        raise WebhookError(503, "webhook not configured on this server")
    stamp, name = None, cfg.webhook_timestamp_header
    if name:
        stamp = _header(headers, name)
        if not stamp:
            raise unauthenticated(f"缺少 {name}（Unix 秒数，与请求体一起签名为 '<时间戳>.<请求体>'）",
                                  f"missing {name} (unix seconds, signed with the body as '<timestamp>.<body>')")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise unauthenticated(f"{name} 不是 Unix 秒数", f"{name} {stamp[:40]!r} is not unix seconds")
    given = _header(headers, SIGNATURE_HEADER) or ""
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), sign(secret, body, stamp).encode()):  # any header text
        raise unauthenticated(f"{SIGNATURE_HEADER} 签名错误或缺失" + (f"（签名 '<{name}>.<请求体>'）" if name else ""),
                              f"bad or missing {SIGNATURE_HEADER}" + (f" (of '<{name}>.<body>')" if name else ""))
    if stamp is not None and (off := abs(now - int(stamp))) > cfg.webhook_max_age_s:
        raise unauthenticated(f"{name} 与当前时间相差 {off:.0f} 秒，超过 webhook_max_age_s（{cfg.webhook_max_age_s:g}）："
                              "重放或延迟的调用，或时钟不准",
                              f"{name} {stamp} is {off:.0f} s from now, more than webhook_max_age_s "
                              f"({cfg.webhook_max_age_s:g}): a replayed or delayed call, or a clock that is off")
    return stamp


def _find(store: CaseStore, target: str, external_id: object, number: object) -> Case:
    """The case a call is about: by our id, else by their task number.

    Named both ways, the two must agree: a status for task B applied to the case delivered as task A
    (their mix-up, or a call for a duplicate of the case) would move the wrong case. A case with no
    task number stored has nothing to compare the call with, whatever its state: still `queued` (their
    answer to our POST is on its way), or withdrawn here (`rejected`) while that POST was in flight. It
    is refused 409 and the platform's retry is compared once the dispatcher stores the number (the
    answer to the in-flight POST records it on a withdrawn case too). Their number is never adopted
    here: the dispatcher's delivery record (or its look-up) is where a case's task number comes from.
    """
    ref = task_number(number)  # as we store it: 123 and "123" are the same task
    if ref is None and number not in (None, ""):
        raise WebhookError(400, f"taskNumber {number!r} is not a task number")
    if external_id:
        try:
            case = store.get(str(external_id))
        except CaseNotFound:
            raise WebhookError(404, f"no case {external_id!r}") from None
        if case.dispatch_target != target:
            raise WebhookError(409, f"case {case.id} was not sent to {target}")
        if case.dispatch_ref is None:
            raise WebhookError(409, f"case {case.id} is not recorded as delivered yet (no task number stored, case "
                               f"{case.state}), so the call cannot be checked against it; retry later")
        if ref is not None and ref != case.dispatch_ref:
            raise WebhookError(409, f"case {case.id} was delivered to {target} as task {case.dispatch_ref!r}, "
                               f"the call names task {ref!r}: not applied")
        return case
    if ref is not None:
        case = store.find(dispatch_ref=ref, target=target)
        if case is None:
            raise WebhookError(404, f"no case with task number {ref!r} at {target}")
        return case
    raise WebhookError(400, "webhook names neither externalId nor taskNumber")
