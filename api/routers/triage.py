"""Photo uploads for triage: POST photos or zips -> a job; job status, progress, per-photo results."""

from __future__ import annotations

import shutil
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from api.accounts import Principal, Role
from api.auth import UPLOAD
from api.context import AppContext, get_ctx
from api.job_retention import not_found
from api.jobs import JobNotFound
from api.problems import Problem, problems
from api.routers.pages import job_report
from api.uploads import receive_files
from pipelines.triage.record import PhotoRecord

router = APIRouter(prefix="/triage", tags=["triage"])
JOBS_LISTED = 200
"""Jobs `GET /triage/jobs` answers, the newest."""

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


class JobFile(BaseModel):
    label: str = Field(description="The file name the client sent (display only).")
    name: str = Field(description="The name it is stored under (server-chosen).")
    kind: Literal["image", "zip"] = Field(description="A photo or a zip of photos.")
    size: int = Field(description="Bytes.")


class JobCase(BaseModel):
    case_id: str | None = Field(description="The candidate case drafted for this group (None when no case was written).")
    state: str | None = Field(description="The case's state when the job finished.")
    error: str | None = Field(description="Why the case has no stored evidence (yet), or why no case was written "
                                          "(the evidence key is not set where the service runs).")
    type: str = Field(description="Violation type id.")
    score: float = Field(description="The group's score.")
    photos: int = Field(description="Photos in the group.")


class SpooledCase(BaseModel):
    case_id: str = Field(description="A case whose sealed bundle still waits in the spool.")
    reason: str = Field(description="Why (the case's reason: the last upload's failure).")


class JobSpool(BaseModel):
    uploaded: int = Field(description="Bundles earlier jobs or runs left in the spool (storage was down) that this job stored.")
    waiting: int = Field(description="Bundles still waiting in the spool for the evidence store, this job's own included.")
    waiting_cases: list[SpooledCase] = Field(description="Each one still waiting, with why.")


class JobSummary(BaseModel):
    readable: int = Field(description="Photos that could be read.")
    with_violations: int = Field(description="Photos with at least one finding.")
    errors: int = Field(description="Files that could not be read.")
    duplicates: int = Field(description="Exact duplicates of another photo.")
    groups: int = Field(description="Groups of photos of the same violation; each is a candidate case where the service "
                                    "writes cases (`cases` gives each group's case id, None where none was written).")
    spool: JobSpool | None = Field(None, description="The job's retry of the evidence spool, violations found or not "
                                                     "(None for a job finished before the service reported it).")


class JobProgress(BaseModel):
    done: int = Field(description="Photos recorded so far, each once (a photo a resumed job tries again too).")
    total: int | None = Field(description="Photos in the job (None until the job starts).")
    phase: str = Field(description="queued, photos, cases, store (waiting for the case store to come back: "
                                   "`service.store_wait_s`), done or failed.")
    rate: float | None = Field(None, description="While photos are judged: photos recorded per second over about the "
                                                 "last minute, as this server's polls found them (None until two polls).")
    eta_s: int | None = Field(None, description="While photos are judged: seconds until the last is, at `rate`.")


class Job(BaseModel):
    """A triage job, as `GET /api/v1/triage/jobs/{id}` shows it."""

    id: str
    owner: str = Field(description="Who uploaded it.")
    state: Literal["queued", "running", "done", "failed"]
    created_at: str = Field(description="ISO 8601.")
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = Field(None, description="Why the job failed.")
    waiting: str | None = Field(None, description="What a running job waits for, Chinese first (等待案件库恢复…: the "
                                                  "case store unreachable; it goes on once it is back); None otherwise.")
    total: int | None = Field(None, description="Photos in the job.")
    files: list[JobFile] = Field(description="The uploaded files.")
    cases: list[JobCase] = Field(default_factory=list, description="Cases drafted (when done), best first.")
    summary: JobSummary | None = Field(None, description="Counts (when done).")
    progress: JobProgress


def _job_view(ctx: AppContext, job: dict[str, Any]) -> dict[str, Any]:
    return {**ctx.jobs.shown(job), "progress": ctx.jobs.progress(job)}


def _own_job(ctx: AppContext, job_id: str, who: Principal) -> dict[str, Any]:
    """The job, if the caller may see it: inspectors see their own jobs, reviewers and admins all; one removed by the
    retention (`service.jobs_keep_days`) is 404 saying so."""
    try:
        job = ctx.jobs.get(job_id)
    except JobNotFound:
        raise Problem(404, not_found(ctx.jobs.root, job_id, "triage job", who.name if who.role is Role.INSPECTOR else None),
                      slug="job-not-found") from None
    if who.role is Role.INSPECTOR and job["owner"] != who.name:
        raise Problem(404, f"no triage job {job_id!r}", slug="job-not-found")
    return job


@router.post("/jobs", status_code=202, summary="Upload photos or zips; starts a triage job",
             openapi_extra=UPLOAD_BODY, response_model=Job, responses=problems(400, 401, 403, 413, 415, 422))
async def create_job(request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> dict[str, Any]:
    """Photos and zip archives in the multipart field `files` (several allowed). Answers 202 with the job;
    poll `GET /api/v1/triage/jobs/{id}` for progress. Refused before anything is kept: over the size
    limit (413), not a photo or zip by content (415), a zip triage would refuse whole (422: too many entries, a zip
    bomb), malformed (400)."""
    job_id, dest = ctx.jobs.new_dir()
    try:
        files = await receive_files(request, dest, limit=ctx.service.max_upload_bytes, max_files=ctx.service.max_upload_files,
                                    spool=ctx.service.upload_spool)
    except BaseException:
        shutil.rmtree(dest.parent, ignore_errors=True)
        raise
    return _job_view(ctx, ctx.jobs.create(job_id, who.name, files))


@router.get("/jobs", summary="Triage jobs (inspectors: their own), the newest 200, newest first", response_model=list[Job],
            responses=problems(401, 403))
def list_jobs(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> list[dict[str, Any]]:
    jobs = ctx.jobs.list(limit=JOBS_LISTED, owner=who.name if who.role is Role.INSPECTOR else None)
    return [_job_view(ctx, j) for j in jobs]


@router.get("/jobs/{job_id}", summary="One job: state, progress, cases drafted", response_model=Job,
            responses=problems(401, 403, 404))
def get_job(job_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> dict[str, Any]:
    return _job_view(ctx, _own_job(ctx, job_id, who))


@router.get("/jobs/{job_id}/results", summary="Per-photo results (as recorded so far)", response_model=list[PhotoRecord],
            response_model_exclude_unset=True, responses=problems(401, 403, 404))
def job_results(job_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> list[PhotoRecord]:
    """Each photo's record as in the job's `results.jsonl` (the typed `PhotoRecord`), with the fields it holds:
    upload names instead of server paths (no `path`, `member`, `thumb`)."""
    _own_job(ctx, job_id, who)
    return ctx.jobs.results(job_id)


@router.get("/jobs/{job_id}/report", summary="A done job's report (HTML: ranked cases, every photo's findings)",
            response_class=HTMLResponse, responses=problems(401, 403, 404))
def job_report_page(job_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(UPLOAD)) -> HTMLResponse:
    """The report `streetwatch triage` writes (`report.html`, self-contained), which the job writes too; 404 until it is done."""
    job = _own_job(ctx, job_id, who)
    return job_report(ctx.jobs.report(job_id), job, "triage job", ctx.jobs.as_uploaded(job, html=True))
