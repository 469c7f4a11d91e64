"""Status feedback from dispatch systems: the cn-dcm webhook (`pipelines.dispatch.webhook.handle_cn_dcm_webhook`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.accounts import Principal, Role
from api.auth import allowed_roles, authorize, current_principal
from api.context import AppContext, get_ctx
from api.problems import Problem, problems
from api.uploads import read_capped
from pipelines.cases.states import CaseState
from pipelines.dispatch.config import DispatchConfig
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


def webhook_headers(config: DispatchConfig) -> list[dict[str, Any]]:
    """The status call's headers for /openapi.json, which the handler reads itself: X-Signature, and each timestamp
    header a target names (`webhook_timestamp_header`, a name each target chooses, so read from the settings). Both
    are optional in the document: which target needs them is its configuration, said in their descriptions."""
    signature = {"name": SIGNATURE_HEADER, "in": "header", "required": False,
                 "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
                 "description": "`sha256=<HMAC-SHA256 hex>` with the target's secret, of the body, or of `<timestamp>.<body>` "
                                "for a target with a timestamp header. Required by a target that signs its calls "
                                "(`webhook_secret_env`), token or not; without a token it is what lets the call in. "
                                "Not read by the others."}
    stamps = {t.webhook_timestamp_header.lower(): t.webhook_timestamp_header
              for t in config.targets.values() if t.webhook_timestamp_header}
    return [signature] + [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
         "description": "The call's unix time in seconds, signed with the body (X-Signature of `<timestamp>.<body>`). "
                        f"Required by a target naming {name} as its `webhook_timestamp_header`, which refuses a call "
                        "without it or more than `webhook_max_age_s` from now (401) and the same call again (409). "
                        "Not read by the others."}
        for _, name in sorted(stamps.items())]


def document_webhook_headers(app: FastAPI, ctx: AppContext) -> None:
    """/openapi.json declares the status call's headers (`webhook_headers`) as the settings name them when it is asked
    for: the document FastAPI builds once has none, as the handler reads the headers itself."""
    base = app.openapi
    path = next(route.path_format for route in iter_route_contexts(app.routes)  # the included routers' routes too
                if getattr(route.original_route, "endpoint", None) is webhook)

    def openapi() -> dict[str, Any]:
        schema = base()  # built once and kept by FastAPI: the headers are set again, not added
        operation = schema["paths"][path]["post"]
        kept = [p for p in operation.get("parameters", []) if p.get("in") != "header"]
        operation["parameters"] = kept + webhook_headers(ctx.settings.dispatch)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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
