"""The review web pages: static HTML + vanilla JS from api/static (no build step, nothing from a CDN).

The pages hold no data: they call the API with the token the user pasted on the login page (kept
in the browser's localStorage), and show evidence through the signed URLs the API hands out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.problems import Problem

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGES = {"login": "login.html", "queue": "queue.html", "upload": "upload.html", "cameras": "cameras.html",
         "map": "map.html", "scores": "scores.html", "reports": "reports.html", "city": "city.html"}

#: The pages' own scripts only (no inline script, no plugin), and no framing by another site: a page framed
#: elsewhere runs with the token in this origin's localStorage, so a click or key press lured there would
#: confirm or reject a case. Images and styles are left open (S3 evidence links, `analytics.tile_url`).
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                "Content-Security-Policy": "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                           "frame-ancestors 'none'"}

#: A job's report.html (patrol, photo upload), served from the API under the pages' policy (it has no script of its
#: own) and kept by no browser: it shows the photos and places of cases, personal data on a shared review PC.
REPORT_HEADERS = {**PAGE_HEADERS, "Cache-Control": "no-store"}

router = APIRouter(include_in_schema=False)


def job_report(path: Path, job: dict[str, Any], what: str, as_uploaded: Callable[[str], str]) -> HTMLResponse:
    """`path`, the report of `job` (a patrol or triage job's record), or 404 naming `what` and why there is none: a job
    writes its report when it is done, and a failed one never does. The run names each photo by its path on the server
    (`/srv/.../input/0001.jpg`), which the API never shows: `as_uploaded` names them in the HTML as the client knows them."""
    state = job["state"]
    if state != "done" or not path.is_file():
        why = {"failed": "it failed", "done": f"{path.name} is missing from its folder"}.get(
            state, f"it is {state}: the report is written when it is done")
        raise Problem(404, f"{what} {job['id']!r} has no report: {why}", slug="no-report")
    return HTMLResponse(as_uploaded(path.read_text(encoding="utf-8")), headers=REPORT_HEADERS)


@router.get("/", response_class=RedirectResponse)
def index() -> RedirectResponse:
    return RedirectResponse("/ui/queue")


@router.get("/favicon.ico")
def favicon() -> Response:
    """No icon (204): every page a browser opened asked for one, and its 404 was an error in the browser's console,
    the first line a reader or a test looking for the page's own errors had to tell apart from them."""
    return Response(status_code=204)


@router.get("/ui/{page}", response_class=FileResponse)
def page(page: str) -> FileResponse:
    name = PAGES.get(page)
    if name is None:
        raise Problem(404, f"no page {page!r} (pages: {', '.join(PAGES)})")
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
