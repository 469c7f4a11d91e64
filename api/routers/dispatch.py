"""Status feedback from dispatch systems: the cn-dcm webhook (`pipelines.dispatch.handle_cn_dcm_webhook`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from api.accounts import Role
from api.app import AppContext
from api.auth import _bearer
from api.problems import Problem, problems
from api.routers import get_ctx
from api.uploads import read_capped
from pipelines.dispatch.webhook import SIGNATURE_HEADER, WebhookError, handle_cn_dcm_webhook

router = APIRouter(prefix="/dispatch", tags=["dispatch"])


def webhook_caller(target: str, request: Request, ctx: AppContext = Depends(get_ctx),
                   credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    """Authenticated by an `integration` (or admin) token, or, for a target with `webhook_secret_env`, by the
    body's HMAC signature alone (platforms that sign their calls cannot always send a bearer token); the
    handler checks that signature."""
    cfg = ctx.settings.dispatch.targets.get(target)
    if credentials is not None:
        who = ctx.accounts.authenticate(credentials.credentials)
        if who is None:
            raise Problem(401, "unknown or revoked API token", slug="unauthenticated", headers={"WWW-Authenticate": "Bearer"})
        if who.role not in (Role.INTEGRATION, Role.ADMIN):
            raise Problem(403, f"role {who.role} may not post dispatch status (allowed: admin, integration)", slug="forbidden")
        return who.name
    if cfg is not None and cfg.webhook_secret_env and request.headers.get(SIGNATURE_HEADER):
        return f"signed:{target}"
    raise Problem(401, "send an integration token (Authorization: Bearer) or a signed body (X-Signature)",
                  slug="unauthenticated", headers={"WWW-Authenticate": "Bearer"})


@router.post("/{target}/webhook", summary="cn-dcm status webhook: {taskNumber, externalId, status, note}",
             responses=problems(400, 401, 403, 404, 409, 422, 503))
async def webhook(target: str, request: Request, ctx: AppContext = Depends(get_ctx),
                  caller: str = Depends(webhook_caller)) -> dict[str, Any]:
    body = await read_capped(request, 64 * 1024)
    try:
        result = await run_in_threadpool(handle_cn_dcm_webhook, ctx.store, ctx.settings.dispatch, target, body,
                                          dict(request.headers))
    except WebhookError as exc:
        ctx.metrics.webhooks.labels(target if target in ctx.settings.dispatch.targets else "unknown", str(exc.status_code)).inc()
        raise
    ctx.metrics.webhooks.labels(target, "200").inc()
    return {"case_id": result.case.id, "state": str(result.case.state), "changed": result.changed}
