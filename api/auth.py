"""Authentication and role checks as FastAPI dependencies (`Depends(require(Role.REVIEWER))`).

Tokens come as `Authorization: Bearer <token>`. A route lists the roles that may call it; `admin`
may call everything. No token or an unknown/revoked one is 401 (with `WWW-Authenticate`), so is an expired
one (problem `token-expired`, saying when it expired), a valid token of another role is 403; each detail in Chinese
then English. Every route authenticates through `current_principal` (the dispatch
webhook too, which may accept a signed body instead of a token). The test suite walks every route
of the app and checks it this way, so a route added without a role check fails the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.accounts import Principal, Role, TokenExpired
from api.context import AppContext, get_ctx
from api.problems import Problem
from pipelines.cases import CaseStoreUnreachable

_bearer = HTTPBearer(auto_error=False, description="API token from `streetwatch users add NAME --role ROLE`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
#: The problem kind of an expired token's 401 (the others are `unauthenticated`): the login page shows its detail,
#: which says when, instead of calling the token revoked.
EXPIRED = "token-expired"
#: The `unauthenticated` 401s' details, in staff's words first like the others (the pages and the API's clients show
#: them as they come), then the English that clients may match, as it was.
UNKNOWN_TOKEN = "API 令牌无效（未知或已吊销） unknown or revoked API token"
NO_TOKEN = "需要有效的 API 令牌（Authorization: Bearer <令牌>） a valid API token is required (Authorization: Bearer <token>)"


def current_principal(request: Request, ctx: AppContext = Depends(get_ctx),
                      credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal | None:
    """The caller; None when no token was sent (routes decide whether that is allowed). A token that
    is sent but unknown, revoked or expired is refused here, whatever the route (an expired one saying when, in the
    city's time, so whoever reads it knows to ask for a new one). Kept as `request.state.principal` for a log line of
    the request's (`caller_of`). A case store that cannot be reached is CaseStoreUnreachable (503): tokens live there."""
    return _principal(request, ctx, credentials, last_known=False)


def principal_while_store_down(request: Request, ctx: AppContext = Depends(get_ctx),
                               credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal | None:
    """`current_principal`, but while the case store cannot be reached, a token is judged by what the store last said
    of it in this process (`Accounts.authenticate_as_last_known`): for `/metrics`, which must answer through an
    outage, when its 503 counts are what the administrator is looking at."""
    return _principal(request, ctx, credentials, last_known=True)


def _principal(request: Request, ctx: AppContext, credentials: HTTPAuthorizationCredentials | None, *,
               last_known: bool) -> Principal | None:
    if credentials is None:
        return None
    try:
        try:
            principal = ctx.accounts.authenticate(credentials.credentials)
        except CaseStoreUnreachable:
            # a token the store has not vouched for in this process may be valid: 503 for it, not 401
            if not last_known or (principal := ctx.accounts.authenticate_as_last_known(credentials.credentials)) is None:
                raise
    except TokenExpired as exc:
        when = exc.expires_at.astimezone(ZoneInfo(ctx.settings.timezone)).isoformat(sep=" ", timespec="minutes")
        raise Problem(401, f"API 令牌已于 {when} 过期，请向管理员申请新令牌 API token expired at {when}; "
                           "ask an administrator for a new one", slug=EXPIRED, headers=_CHALLENGE) from None
    if principal is None:
        raise Problem(401, UNKNOWN_TOKEN, slug="unauthenticated", headers=_CHALLENGE)
    request.state.principal = principal
    return principal


def caller_of(request: Request) -> str:
    """Who sent `request`, as a log line names them: the user its token authenticated (`current_principal`), else
    `anonymous`."""
    principal = getattr(request.state, "principal", None)
    return principal.name if principal is not None else "anonymous"


def allowed_roles(roles: Iterable[Role]) -> frozenset[Role]:
    """The roles given plus admin, who may do everything."""
    return frozenset(roles) | {Role.ADMIN}


def authorize(principal: Principal, allowed: frozenset[Role]) -> Principal:
    """The principal if its role is one of `allowed`, else 403, in Chinese and English: the pages show the
    detail to staff as it comes (status, type and title stay as clients parse them)."""
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise Problem(403, f"角色 {principal.role} 无权执行此操作（允许的角色：{names}） "
                           f"role {principal.role} may not do this (allowed: {names})", slug="forbidden")
    return principal


def require(*roles: Role, while_store_down: bool = False):
    """Dependency: the caller must hold one of `roles` (or be admin). `while_store_down`: the token is judged as the
    case store last judged it when the store cannot be reached (`principal_while_store_down`), for `/metrics`."""
    allowed = allowed_roles(roles)
    authenticate = principal_while_store_down if while_store_down else current_principal

    def check(principal: Principal | None = Depends(authenticate)) -> Principal:
        if principal is None:
            raise Problem(401, NO_TOKEN, slug="unauthenticated", headers=_CHALLENGE)
        return authorize(principal, allowed)

    check.roles = allowed  # type: ignore[attr-defined]  # for introspection in docs/tests
    return check


async def check_caller_first(request: Request, dependant: Dependant) -> None:
    """Run the route's role checks (`require`: 401 without a valid token, 403 for another role) now, for a route whose
    body FastAPI could not read: it reads a body before it solves the dependencies, so an anonymous caller sending bad
    JSON was answered 400 where a readable body got 401 (`api.uploads.CappedBodyRoute`)."""
    checks = [d.call for d in dependant.dependencies if hasattr(d.call, "roles")]
    if checks:
        principal = await run_in_threadpool(current_principal, request, get_ctx(request), await _bearer(request))
        for check in checks:
            check(principal)


# The role sets the routers use (one definition each).
READ_CASES = require(Role.INSPECTOR, Role.REVIEWER)
REVIEW = require(Role.REVIEWER)
UPLOAD = require(Role.INSPECTOR, Role.REVIEWER)
READ_CAMERAS = require(Role.INSPECTOR, Role.REVIEWER)
ADMIN = require()
INTEGRATION = require(Role.INTEGRATION)
SCRAPE_METRICS = require(Role.INTEGRATION, while_store_down=True)
