"""The review web pages: static HTML + vanilla JS from api/static (no build step, nothing from a CDN).

The pages hold no data: they call the API with the token the user pasted on the login page (kept
in the browser's localStorage), and show evidence through the signed URLs the API hands out.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
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

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=RedirectResponse)
def index() -> RedirectResponse:
    return RedirectResponse("/ui/queue")


@router.get("/ui/{page}", response_class=FileResponse)
def page(page: str) -> FileResponse:
    name = PAGES.get(page)
    if name is None:
        raise Problem(404, f"no page {page!r} (pages: {', '.join(PAGES)})")
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
