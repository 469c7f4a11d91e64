"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.app import AppContext
from api.auth import INTEGRATION
from api.problems import problems
from api.routers import get_ctx

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: case store reachable, job folder writable",
            responses={503: {"description": "Not ready; `checks` says which part failed"}})
def readyz(ctx: AppContext = Depends(get_ctx)) -> Any:
    checks: dict[str, str] = {}
    try:
        with ctx.store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["case_store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        checks["case_store"] = f"error: {type(exc).__name__}"
    probe = ctx.jobs.root / ".ready"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        checks["jobs_dir"] = "ok"
    except OSError as exc:
        checks["jobs_dir"] = f"error: {exc.strerror}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (integration or admin token)", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, **problems(401, 403)})
def metrics(ctx: AppContext = Depends(get_ctx), _=Depends(INTEGRATION)) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
