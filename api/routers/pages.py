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

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=RedirectResponse)
def index() -> RedirectResponse:
    return RedirectResponse("/ui/queue")


@router.get("/ui/{page}", response_class=FileResponse)
def page(page: str) -> FileResponse:
    name = PAGES.get(page)
    if name is None:
        raise Problem(404, f"no page {page!r} (pages: {', '.join(PAGES)})")
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
