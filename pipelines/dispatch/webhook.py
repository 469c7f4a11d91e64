"""Status webhooks from cn-dcm platforms, as a plain function the API service mounts.

The platform POSTs JSON `{taskNumber, externalId, status, note}` (field names through the
target's `field_map`) whenever a case moves on its side; `status` values map to case states
through the target's `status_map` (`handled` starts the camera re-check). A call naming both
`externalId` and `taskNumber` must name the task number the case was delivered as. With
`webhook_secret_env` set, the body must carry `X-Signature: sha256=<HMAC-SHA256 hex of the body>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.cases.states import CaseState
from pipelines.cases.store import Case, CaseNotFound, CaseStore
from pipelines.dispatch.adapters import task_number
from pipelines.dispatch.config import DispatchConfig
from pipelines.dispatch.dispatcher import apply_status

SIGNATURE_HEADER = "X-Signature"


class WebhookError(ValueError):
    """A webhook call refused; `status_code` is the HTTP answer to give."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class WebhookResult:
    case: Case
    changed: bool


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def handle_cn_dcm_webhook(store: CaseStore, config: DispatchConfig, target: str, body: bytes,
                          headers: Mapping[str, str]) -> WebhookResult:
    """Apply one status call from `target`; raises WebhookError (with the HTTP status) when refused."""
    cfg = config.targets.get(target)
    if cfg is None or cfg.adapter != "cn-dcm":
        raise WebhookError(404, f"no cn-dcm dispatch target named {target!r}")
    secret = cfg.secret(cfg.webhook_secret_env)
    if cfg.webhook_secret_env:
        if not secret:
            raise WebhookError(503, f"webhook secret variable {cfg.webhook_secret_env} is not set")
        given = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), "")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), sign(secret, body).encode()):  # any header text
            raise WebhookError(401, f"bad or missing {SIGNATURE_HEADER}")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookError(400, f"body is not JSON: {exc}") from None
    except RecursionError:  # JSON nested deeper than the parser goes (a 64 KiB body of '[' is enough)
        raise WebhookError(400, "body is not usable JSON: nested too deep") from None
    if not isinstance(data, dict):
        raise WebhookError(400, "body must be a JSON object")
    names = {ours: cfg.field_map.get(ours, ours) for ours in ("taskNumber", "externalId", "status", "note")}
    status_value = str(data.get(names["status"], ""))
    status = cfg.status_map.get(status_value)
    if status is None:
        raise WebhookError(422, f"unknown status {status_value!r} (known: {', '.join(sorted(cfg.status_map))})")
    case = _find(store, target, data.get(names["externalId"]), data.get(names["taskNumber"]))
    if case.state is CaseState.QUEUED:
        # Their answer to our POST may still be on its way to the dispatcher: ask them to call again.
        raise WebhookError(409, f"case {case.id} is not recorded as delivered yet; retry later")
    note = data.get(names["note"])
    changed = apply_status(store, case.id, status, actor=f"dispatch:{target}", note=str(note) if note else None)
    return WebhookResult(case=store.get(case.id), changed=changed)


def _find(store: CaseStore, target: str, external_id: object, number: object) -> Case:
    """The case a call is about: by our id, else by their task number.

    Named both ways, the two must agree: a status for task B applied to the case delivered as task A
    (their mix-up, or a call for a duplicate of the case) would move the wrong case. A case with no
    task number stored has nothing to compare and is found by our id; while it is still `queued`
    (their answer to our POST is on its way) the caller answers 409, and the platform's retry is
    compared once the number is stored. Their number is never adopted here: the dispatcher's
    delivery record (or its look-up) is where a case's task number comes from.
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
        if ref is not None and case.dispatch_ref is not None and ref != case.dispatch_ref:
            raise WebhookError(409, f"case {case.id} was delivered to {target} as task {case.dispatch_ref!r}, "
                               f"the call names task {ref!r}: not applied")
        return case
    if ref is not None:
        case = store.find(dispatch_ref=ref, target=target)
        if case is None:
            raise WebhookError(404, f"no case with task number {ref!r} at {target}")
        return case
    raise WebhookError(400, "webhook names neither externalId nor taskNumber")
