"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from api.auth import SCRAPE_METRICS
from api.context import AppContext, get_ctx
from api.jobs import probe_writable
from api.problems import problems

router = APIRouter(tags=["ops"])


class Liveness(BaseModel):
    status: str = Field(description="Always `ok` when the process answers.")


class Readiness(BaseModel):
    status: str = Field(description="`ready` or `not ready`.")
    checks: dict[str, str] = Field(description="Each dependency (case_store, jobs_dir) -> `ok` or `error: ...`.")


@router.get("/healthz", summary="Liveness: the process answers", response_model=Liveness)
async def healthz() -> Liveness:
    """On the event loop, not a worker thread: busy with a burst of case lists and exports, those would keep a liveness
    probe waiting and the service would be restarted as dead."""
    return Liveness(status="ok")


@router.get("/readyz", summary="Readiness: case store reachable, job folder writable", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "Not ready; `checks` says which part failed"}})
def readyz(ctx: AppContext = Depends(get_ctx)) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with ctx.store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["case_store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        checks["case_store"] = f"error: {type(exc).__name__}"
    try:
        probe_writable(ctx.jobs.root)
        checks["jobs_dir"] = "ok"
    except OSError as exc:
        checks["jobs_dir"] = f"error: {exc.strerror}"
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (integration or admin token)", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}, **problems(401, 403)})
def metrics(ctx: AppContext = Depends(get_ctx), _=Depends(SCRAPE_METRICS)) -> Response:
    """Answered while the case store is down too, for a token it accepted before (`SCRAPE_METRICS`): the outage's 503s
    are counted here."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
