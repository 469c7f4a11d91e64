"""Photo uploads for triage: POST photos or zips -> a job; job status, progress, per-photo results."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi import APIRouter, Depends, Request

from api.accounts import Principal, Role
from api.app import AppContext
from api.auth import UPLOAD
from api.jobs import JobNotFound
from api.problems import Problem, problems
from api.routers import get_ctx
from api.uploads import receive_files

router = APIRouter(prefix="/triage", tags=["triage"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                     "description": "Photos (JPEG, PNG, WebP, BMP, TIFF, HEIC) and/or zip archives of photos."}},
        }}},
    }
}


def _job_view(ctx: AppContext, job: dict[str, Any]) -> dict[str, Any]:
    return {**job, "progress": ctx.jobs.progress(job)}


def _own_job(ctx: AppContext, job_id: str, who: Principal) -> dict[str, Any]:
    """The job, if the caller may see it: inspectors see their own jobs, reviewers and admins all."""
    try:
        job = ctx.jobs.get(job_id)
    except JobNotFound:
        raise Problem(404, f"no triage job {job_id!r}", slug="job-not-found") from None
    if who.role is Role.INSPECTOR and job["owner"] != who.name:
        raise Problem(404, f"no triage job {job_id!r}", slug="job-not-found")
    return job


@router.post("/jobs", status_code=202, summary="Upload photos or zips; starts a triage job",
             openapi_extra=UPLOAD_BODY, responses=problems(400, 401, 403, 413, 415, 422))
async def create_job(request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> dict[str, Any]:
    """Photos and zip archives in the multipart field `files` (several allowed). Answers 202 with the job;
    poll `GET /api/v1/triage/jobs/{id}` for progress. Refused before anything is kept: over the size
    limit (413), not a photo or zip by content (415), malformed (400)."""
    job_id, dest = ctx.jobs.new_dir()
    try:
        files = await receive_files(request, dest, limit=ctx.service.max_upload_bytes, max_files=ctx.service.max_upload_files)
    except BaseException:
        shutil.rmtree(dest.parent, ignore_errors=True)
        raise
    return _job_view(ctx, ctx.jobs.create(job_id, who.name, files))


@router.get("/jobs", summary="Triage jobs (inspectors: their own), newest first", responses=problems(401, 403))
def list_jobs(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> list[dict[str, Any]]:
    jobs = ctx.jobs.list()
    if who.role is Role.INSPECTOR:
        jobs = [j for j in jobs if j["owner"] == who.name]
    return [_job_view(ctx, j) for j in jobs[:200]]


@router.get("/jobs/{job_id}", summary="One job: state, progress, cases drafted", responses=problems(401, 403, 404))
def get_job(job_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> dict[str, Any]:
    return _job_view(ctx, _own_job(ctx, job_id, who))


@router.get("/jobs/{job_id}/results", summary="Per-photo results (as recorded so far)", responses=problems(401, 403, 404))
def job_results(job_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> list[dict[str, Any]]:
    _own_job(ctx, job_id, who)
    return ctx.jobs.results(job_id)
