"""Authentication and role checks as FastAPI dependencies (`Depends(require(Role.REVIEWER))`).

Tokens come as `Authorization: Bearer <token>`. A route lists the roles that may call it; `admin`
may call everything. No token or an unknown/revoked one is 401 (with `WWW-Authenticate`), a valid
token of another role is 403. The test suite walks every route of the app and checks it this way,
so a route added without a role check fails the tests.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.accounts import Principal, Role
from api.problems import Problem

_bearer = HTTPBearer(auto_error=False, description="API token from `streetwatch users add NAME --role ROLE`.")


def current_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal | None:
    """The caller, or None when no valid token was sent (routes decide whether that is allowed)."""
    if credentials is None:
        return None
    return request.app.state.ctx.accounts.authenticate(credentials.credentials)


def require(*roles: Role):
    """Dependency: the caller must hold one of `roles` (or be admin)."""
    allowed = frozenset(roles) | {Role.ADMIN}

    def check(principal: Principal | None = Depends(current_principal)) -> Principal:
        if principal is None:
            raise Problem(401, "a valid API token is required (Authorization: Bearer <token>)", slug="unauthenticated",
                          headers={"WWW-Authenticate": "Bearer"})
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Problem(403, f"role {principal.role} may not do this (allowed: {names})", slug="forbidden")
        return principal

    check.roles = allowed  # type: ignore[attr-defined]  # for introspection in docs/tests
    return check


# The role sets the routers use (one definition each).
READ_CASES = require(Role.INSPECTOR, Role.REVIEWER)
REVIEW = require(Role.REVIEWER)
UPLOAD = require(Role.INSPECTOR, Role.REVIEWER)
READ_CAMERAS = require(Role.INSPECTOR, Role.REVIEWER)
ADMIN = require()
INTEGRATION = require(Role.INTEGRATION)
