"""One router per resource: ops, triage jobs, cases, evidence files, cameras, dispatch feedback, pages."""

from fastapi import Request

from api.app import AppContext


def get_ctx(request: Request) -> AppContext:
    """Dependency: the app's context (stores, jobs, cameras, metrics)."""
    return request.app.state.ctx
