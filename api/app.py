"""The FastAPI application: one context object (`api.context`: stores, jobs, cameras), routers per
resource, auth as a dependency (`api.auth`), problem+json errors, Prometheus metrics, closed CORS.

`create_app(settings, service)` builds it from the deployment settings (`--config`);
`streetwatch serve` runs it with uvicorn. Tests build it the same way with temporary folders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from api import problems
from api.config import ServiceConfig
from api.context import AppContext, build_context
from api.job_retention import SWEEP_EVERY_S, remove_expired
from api.routers import analytics, cameras, cases, cityops, dispatch, evidence, ops, pages, triage
from detect.config_io import ConfigError
from detect.evidence.config import EvidenceKeyError
from detect.evidence.keys import check_key_files
from detect.text import control_character
from pipelines.cases.retention import prune_rejected_evidence
from pipelines.cityops.warnings import remove_expired_images
from pipelines.settings import Settings

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(settings: Settings, service: ServiceConfig, *, detector_factory: Callable[[], Any] | None = None,
               resume_jobs: bool = True) -> FastAPI:
    """The app of `settings`' service. `resume_jobs`: at start-up, take up the job folders (unfinished jobs resumed,
    expired ones removed: `api.job_retention.remove_expired`); tests that lay out job folders by hand turn it off."""
    try:  # a key file the settings name but that does not load: refused here, an unset key only warned of below
        check_key_files(settings.evidence)
    except EvidenceKeyError as exc:
        raise ConfigError(str(exc)) from None
    ctx = build_context(settings, service, detector_factory)
    if (own_key := service.own_link_key()) is not None:
        log.warning(own_key)
    if (unsigned := settings.unsigned_attachments()) is not None:
        log.warning(unsigned)
    if (unread := settings.unread_url_expiry()) is not None:
        log.warning(unread)
    if (no_cases := ctx.jobs.cases_unavailable()) is not None:
        log.warning(no_cases)
    if (no_cameras := ctx.cameras.unusable()) is not None:
        log.warning(no_cameras)
    for unset in settings.dispatch.unset_webhook_secrets():
        log.warning(unset)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if resume_jobs:
            await _logged(partial(remove_expired, ctx.jobs), "jobs retention sweep")
            await _logged(lambda: _remove_warning_frames(ctx), "warning frames retention sweep")
            await _logged(lambda: _prune_rejected_evidence(ctx), "rejected evidence retention sweep")
        try:
            if resume_jobs:
                resumed = ctx.jobs.resume_unfinished()
                if resumed:
                    log.info("resuming %d unfinished triage job(s): %s", len(resumed), ", ".join(resumed))
                if patrols := cityops.resume_patrol_jobs(ctx):
                    log.info("resuming %d unfinished patrol job(s): %s", len(patrols), ", ".join(patrols))
        except Exception as exc:  # kept for `serve`: uvicorn only logs it and exits 3
            app.state.startup_error = exc
            raise
        periodic = [asyncio.create_task(_every(service.spool_retry_s, lambda: _retry_spool(ctx), "evidence spool retry")),
                    asyncio.create_task(_every(SWEEP_EVERY_S, partial(remove_expired, ctx.jobs), "jobs retention sweep")),
                    asyncio.create_task(_every(SWEEP_EVERY_S, lambda: _remove_warning_frames(ctx), "warning frames retention sweep")),
                    asyncio.create_task(_every(SWEEP_EVERY_S, lambda: _prune_rejected_evidence(ctx),
                                               "rejected evidence retention sweep"))]
        yield
        for task in periodic:
            task.cancel()
        ctx.close()

    # FastAPIOffline: FastAPI whose /docs (Swagger UI) and /redoc load their JavaScript from this app
    # (/docs/assets), not from a CDN: city networks often have no internet.
    app = FastAPIOffline(
        static_url="/docs/assets", title="streetwatch", version="0.1.0", lifespan=lifespan,
        description="Photo triage uploads, candidate cases and their review, cameras and scenes, dispatch feedback. "
                    "Authenticate with `Authorization: Bearer <token>` (tokens from `streetwatch users add`). "
                    "Errors are `application/problem+json`.",
    )
    app.state.ctx = ctx
    problems.install(app)
    if service.cors_origins:  # closed by default: the review pages are served from the same origin
        app.add_middleware(CORSMiddleware, allow_origins=service.cors_origins, allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def _count(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")  # labelled by handler name: low cardinality, never the raw path
        name = getattr(route, "name", None) or "unmatched"
        ctx.metrics.requests.labels(request.method, name, str(response.status_code)).inc()
        ctx.metrics.latency.labels(request.method, name).observe(time.perf_counter() - started)
        return response

    @app.middleware("http")
    async def _no_control_characters(request: Request, call_next):
        # A NUL in a path or query value (`/cases/x%00`, `?type=%00`) reached the case store's queries, which
        # PostgreSQL refuses with a 500; no id, filter or name of ours holds a control character, so none is looked up.
        where = _control_character_in(request)
        if where is not None:
            return problems.problem_response(422, f"{where}: 含控制字符 — the request's {where} has a control character "
                                             "(NUL, a line break …), which no id or filter holds", slug="control-character")
        return await call_next(request)

    @app.middleware("http")
    async def _no_store(request: Request, call_next):
        # Cases, photos, snapshots and exports are personal data: no browser keeps them on disk (a review PC is
        # shared), whatever a route answers with (a FileResponse's ETag and Last-Modified invite caching).
        response = await call_next(request)
        if request.url.path.startswith((API_PREFIX + "/", "/evidence/", "/metrics")):
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    for module in (ops, triage, cases, cameras, dispatch, analytics, cityops):
        app.include_router(module.router, prefix="" if module is ops else API_PREFIX)
    app.include_router(evidence.router)
    app.include_router(evidence.keys_router, prefix=API_PREFIX)
    app.include_router(pages.router)
    pages.mount_static(app)
    dispatch.document_webhook_headers(app, ctx)
    return app


def _remove_warning_frames(ctx: AppContext) -> None:
    """Remove the frames of warnings decided more than `cityops.warn.images_keep_days` ago (`remove_expired_images`),
    logging one line of what was freed, as the jobs' sweep does: else every camera frame a warning kept, the street
    and whoever passed, stayed for ever."""
    keep = ctx.settings.cityops.warn.images_keep_days
    frames, freed = remove_expired_images(ctx.store.engine, keep)
    if keep:
        log.info("warning frames retention (cityops.warn.images_keep_days: %d): %d frame(s) of decided warnings removed, "
                 "%d bytes (%.1f MB) freed", keep, frames, freed, freed / 1e6)


def _prune_rejected_evidence(ctx: AppContext) -> None:
    """Remove the evidence of cases rejected more than `cases.rejected_evidence_keep_days` ago (`prune_rejected_evidence`),
    logging one line of what was freed, as the other retention sweeps do."""
    keep = ctx.settings.cases.rejected_evidence_keep_days
    pruned = prune_rejected_evidence(ctx.store, ctx.evidence, keep)
    if keep or pruned.cases or pruned.failed:  # at 0, an earlier round's leftovers only
        log.info("rejected evidence retention (cases.rejected_evidence_keep_days: %d): evidence of %d rejected case(s) "
                 "removed, %d bytes (%.1f MB) freed%s", keep, len(pruned.cases), pruned.bytes, pruned.bytes / 1e6,
                 f"; {len(pruned.failed)} not removed (tried again next round)" if pruned.failed else "")


async def _every(seconds: float, work: Callable[[], Any], what: str) -> None:
    """Run `work` every `seconds` for as long as the app runs (`_logged`): the evidence spool's retry
    (`service.spool_retry_s`), the jobs', warning frames' and rejected cases' evidence retention sweeps (`api.job_retention.SWEEP_EVERY_S`)."""
    while True:
        await asyncio.sleep(seconds)
        await _logged(work, what)


async def _logged(work: Callable[[], Any], what: str) -> None:
    """Run `work` in a worker thread (storage calls block); a failure is logged as `what` failed, and the next round
    tries again."""
    try:
        await run_in_threadpool(work)
    except Exception:  # noqa: BLE001 - the case store or storage down: the next round tries again
        log.exception("%s failed", what)


def _retry_spool(ctx: AppContext) -> None:
    """Retry the evidence spool (`TriageJobs.retry_spool`): without the server's own rounds only a job's run retried it."""
    stored = ctx.jobs.retry_spool()
    if stored:
        log.info("evidence spool: %d bundle(s) stored: %s", len(stored), ", ".join(stored))


def _control_character_in(request: Request) -> str | None:
    """Where a control character stands in the request's decoded path or query (`path`, `query parameter NAME`), or None."""
    if control_character(request.url.path) is not None:
        return "path"
    for name, value in request.query_params.multi_items():
        if control_character(name) is not None or control_character(value) is not None:
            return f"query parameter {name!r}"
    return None
