"""Status feedback from dispatch systems: the cn-dcm webhook (`pipelines.dispatch.handle_cn_dcm_webhook`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.accounts import Principal, Role
from api.auth import allowed_roles, authorize, current_principal
from api.context import AppContext, get_ctx
from api.problems import Problem, problems
from api.uploads import read_capped
from pipelines.cases.states import CaseState
from pipelines.dispatch.webhook import SIGNATURE_HEADER, WebhookError, handle_cn_dcm_webhook

router = APIRouter(prefix="/dispatch", tags=["dispatch"])
WEBHOOK_ROLES = allowed_roles([Role.INTEGRATION])


#: The status call's body (`handle_cn_dcm_webhook` reads it itself, to check its signature over the bytes sent),
#: declared so a generated client can send it: the field names are the target's `field_map`'s when it renames them.
WEBHOOK_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["status"], "additionalProperties": True, "properties": {
        "taskNumber": {"type": ["string", "integer"], "description": "The platform's task number the case was delivered as."},
        "externalId": {"type": "string", "description": "Our case id (sent as `externalId` with the case)."},
        "status": {"type": "string", "description": "The platform's status, one of the target's `status_map` keys."},
        "note": {"type": "string", "description": "The platform's note, kept in the case's history."}},
    "example": {"taskNumber": "T-100", "externalId": "0123456789abcdef", "status": "handled", "note": "已处理"}}}}}}


class WebhookResult(BaseModel):
    case_id: str = Field(description="The case the status was for.")
    state: CaseState = Field(description="The case's state after the status was applied.")
    changed: bool = Field(description="False when the case was already in that state (a repeated call).")


def webhook_caller(target: str, request: Request, ctx: AppContext = Depends(get_ctx),
                   who: Principal | None = Depends(current_principal)) -> str:
    """Authenticated by an `integration` (or admin) token, or, for a target with `webhook_secret_env`, by the
    body's HMAC signature alone (platforms that sign their calls cannot always send a bearer token); the
    handler checks that signature."""
    if who is not None:
        return authorize(who, WEBHOOK_ROLES).name
    cfg = ctx.settings.dispatch.targets.get(target)
    if cfg is not None and cfg.webhook_secret_env and request.headers.get(SIGNATURE_HEADER):
        return f"signed:{target}"
    raise Problem(401, "需要集成方令牌（Authorization: Bearer）或已签名的请求体（X-Signature） "
                       "send an integration token (Authorization: Bearer) or a signed body (X-Signature)",
                  slug="unauthenticated", headers={"WWW-Authenticate": "Bearer"})


@router.post("/{target}/webhook", summary="cn-dcm status webhook: {taskNumber, externalId, status, note}",
             openapi_extra=WEBHOOK_BODY, response_model=WebhookResult, responses=problems(400, 401, 403, 404, 409, 413, 422, 503))
async def webhook(target: str, request: Request, ctx: AppContext = Depends(get_ctx),
                  caller: str = Depends(webhook_caller)) -> WebhookResult:
    body = await read_capped(request, 64 * 1024)
    try:
        result = await run_in_threadpool(handle_cn_dcm_webhook, ctx.store, ctx.settings.dispatch, target, body,
                                          dict(request.headers), seen=ctx.webhook_calls)
    except WebhookError as exc:
        ctx.metrics.webhooks.labels(target if target in ctx.settings.dispatch.targets else "unknown", str(exc.status_code)).inc()
        raise
    ctx.metrics.webhooks.labels(target, "200").inc()
    return WebhookResult(case_id=result.case.id, state=result.case.state, changed=result.changed)
