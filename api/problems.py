"""Every error as an RFC 9457 problem document (`application/problem+json`: type, title, status, detail).

Routers raise `Problem` (or let a domain exception through: the case store's, the config loader's,
the webhook handler's); the handlers below turn all of them, FastAPI's own validation errors and
any bug into the same JSON shape with the right status, so clients parse one error format.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, unquote_plus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detect.config_io import ZH_EN, ConfigError, pydantic_en, pydantic_zh
from pipelines.cases.states import InvalidTransition
from pipelines.cases.store import (CaseChanged, CaseNotFound, CaseOnPlatform, CaseStoreError, CaseStoreFull, CaseStoreUnreachable,
                                   NotCandidate, NotReopenable, PlaceError)
from pipelines.dispatch.webhook import UnreadableBody, WebhookError
from pipelines.shops import LicenceHeld
from pipelines.logs import mask_phones
from pipelines.url_signing import mask_signature

if TYPE_CHECKING:
    from api.context import AppContext

log = logging.getLogger(__name__)
_CALLOUT_PATH = "/api/v1/callout/"  # PUT /callout/{number}: a phone number in the path
_SEARCH = re.compile(r"(?<=[?&])q=[^&#]*")  # what a search looked for (a number, a shop's contact)


def loggable_target(target: str) -> str:
    """A request target (path, query) as the service's logs keep it, uvicorn's access log and our error lines alike: a
    signed link's `sig` *** (`mask_signature`), and a phone number in a call-out path or a search's `q` (the call-out
    list's, the frontage register's) written `138****5678` (`mask_phones`): staff look numbers up all day, and the log
    would keep every number they looked at, in full, for as long as the log is kept."""
    target = mask_signature(target)
    if target.startswith(_CALLOUT_PATH):
        path, sep, query = target.partition("?")
        target = _mask_encoded(path, plus_is_space=False) + sep + query
    return _SEARCH.sub(lambda m: "q=" + _mask_encoded(m[0][2:], plus_is_space=True), target)


def _mask_encoded(text: str, *, plus_is_space: bool) -> str:
    """`text` (a path, or a query's value where `+` is a space) with the phone numbers of the text it encodes masked
    (`mask_phones`): 138%200013%208000, 138+0013+8000 and 138%2D0013%2D8000 are 138 0013 8000 and 138-0013-8000 to a
    browser and to the service, but their escapes hid the number from the masking. Encoded again (`*` as is) where a
    number was masked, else as it came."""
    decoded = unquote_plus(text) if plus_is_space else unquote(text)
    masked = mask_phones(decoded)
    return text if masked == decoded else quote(masked, safe="/*" if not plus_is_space else "*")
MEDIA_TYPE = "application/problem+json"
#: Seconds a client waits before trying again when the case store cannot be reached (a restart, a failover).
STORE_RETRY_AFTER_S = 30
#: Seconds a client waits before trying again when every connection of the store's pool was in use (a burst of requests).
POOL_RETRY_AFTER_S = 5


class ProblemDoc(BaseModel):
    """The error body of every non-2xx answer."""

    type: str = Field(description="URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem (the HTTP reason).")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, in words.")
    errors: list[dict[str, Any]] | None = Field(None, description="Field-level problems (validation errors).")
    case: dict[str, Any] | None = Field(None, description="case-changed: the case as it is now (id, state, last_by, "
                                                          "updated_at), for a client that reloads it by itself; "
                                                          "case-on-platform: the platform holding it (id, state, "
                                                          "dispatch_target, dispatch_ref).")


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None, headers: dict[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers, self.errors = status, detail, headers, errors
        self.slug = slug or HTTPStatus(status).phrase.lower().replace(" ", "-")


def problem_type(slug: str) -> str:
    """The `type` URI of the problems of kind `slug` (the pages compare the kind alone: api/static/common.js)."""
    return f"urn:streetwatch:problem:{slug}"


def problem_response(status: int, detail: str, slug: str | None = None, headers: dict[str, str] | None = None,
                     errors: list[dict[str, Any]] | None = None, case: dict[str, Any] | None = None) -> JSONResponse:
    slug = slug or HTTPStatus(status).phrase.lower().replace(" ", "-")
    body: dict[str, Any] = {"type": problem_type(slug), "title": HTTPStatus(status).phrase,
                            "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    if case:
        body["case"] = case
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


#: For route decorators: `responses=problems(404, 409)` documents the error bodies in OpenAPI, as
#: `application/problem+json` only. With a `model` FastAPI would add the route's own media type beside it
#: (`application/json`, a report's `text/html`), which no error is sent as; `install` adds ProblemDoc's schema.
def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": HTTPStatus(s).phrase,
                "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDoc"}}}} for s in statuses}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's field errors as `errors[]`, each `msg` Chinese first where pydantic's check has its Chinese
    (`pydantic_zh`: a note or a search over its length), as the routes' own refusals word theirs (`invalid`): city staff
    read the Chinese half, the page shows it (api/static/common.js)."""
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": _zh_first(e), "type": str(e.get("type", ""))}
            for e in exc.errors()]


def _zh_first(error: dict[str, Any]) -> str:
    en = pydantic_en(error)
    return f"{zh}{ZH_EN}{en}" if (zh := pydantic_zh(error)) else en


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"


def invalid(loc: list[str], msg: str) -> Problem:
    """422 for one field that a route's own check refuses (an unknown violation type or dispatch target, a missing
    reason): the problem FastAPI's validation gives (`validation-error`, the detail `body.type: …`, `errors[].loc`
    naming the field), so a client finds the field one way whichever check refused it."""
    errors = [{"loc": loc, "msg": msg, "type": "value_error"}]
    return Problem(422, _validation_detail(errors), slug="validation-error", errors=errors)


def unusable(ctx: AppContext, what: str, exc: Exception | str, slug: str = "invalid-config") -> Problem:
    """503 for a configuration file a route reads that cannot be read (`what: why`, the why a loader's error or its
    text): the answer names the file by its setting (`AppContext.config_error`), never by the server's path, which the
    log keeps for whoever fixes it."""
    ctx.errors_log.error(f"{what}: {exc}", "%s: %s", what, exc)  # a page asks again at each click: not a line each
    return Problem(503, f"{what}: {ctx.config_error(exc)}", slug=slug)


#: FastAPI's detail for a body it parses as JSON and could not read other than as bad JSON (bytes that are not UTF-8,
#: JSON nested deeper than the parser goes); the HTTPException's cause says why.
FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"


def unreadable_json(exc: BaseException) -> bool:
    """Whether FastAPI refused a JSON body it could not read (bad JSON, not UTF-8, nested too deep), answered
    `malformed-json` below: it raises so before it solves the route's dependencies, the token check among them."""
    if isinstance(exc, RequestValidationError):
        return any(e.get("type") == "json_invalid" for e in exc.errors())
    return isinstance(exc, StarletteHTTPException) and exc.status_code == 400 and exc.detail == FASTAPI_UNREADABLE_BODY


def malformed_json(reason: BaseException | str) -> Problem:
    """400 `malformed-json` with why a JSON body cannot be read: one answer whether FastAPI read the body (bad JSON,
    not UTF-8) or the route did (a disposal photo's `{"url"}`)."""
    if isinstance(reason, RecursionError):
        reason = "nested too deep"
    return Problem(400, f"malformed JSON body: {reason}", slug="malformed-json")


#: Exceptions of the layers below, answered with their message: (status, problem kind).
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    CaseNotFound: (404, "case-not-found"),
    InvalidTransition: (409, "invalid-transition"),
    CaseStoreError: (409, "case-conflict"),
    NotCandidate: (409, "invalid-transition"),
    NotReopenable: (409, "not-reopenable"),  # why (a platform voided it, triage withdrew it, too late)
    CaseChanged: (409, "case-changed"),  # the client acted on the case as it was: it reloads it
    CaseOnPlatform: (409, "case-on-platform"),  # a reviewer's reject of a case a platform holds: void (or close) it there
    LicenceHeld: (409, "licence-held"),  # a shop given the licence number another shop of the register holds
}


def install(app: FastAPI) -> None:
    """Register the handlers that make every error a problem document, and say so in /openapi.json."""
    _document_unprocessable(app)

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, exc.slug, exc.headers, exc.errors)

    @app.exception_handler(PlaceError)
    async def _place(request: Request, exc: PlaceError) -> JSONResponse:
        # a CaseStoreError, but the request's input is wrong, not the case's state: a field of the body, named as
        # FastAPI names one (errors[].loc), its reason Chinese first as the store words it
        return await _problem(request, invalid(["body", exc.field], exc.reason))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_UNREADABLE_BODY and exc.__cause__ is not None:
            return await _problem(request, malformed_json(exc.__cause__))  # FastAPI's words said nothing of why
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return problem_response(exc.status_code, detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI reports a body that is not JSON, or not sent as JSON, as invalid values (422) with a message
        # that does not say so ("Input should be a valid dictionary"); they are a malformed request (400) and
        # the wrong media type (415), like the upload and webhook routes answer them.
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                where = e.get("loc", ())[-1]
                return await _problem(request, malformed_json(f"{e.get('ctx', {}).get('error', e.get('msg'))} (character {where})"))
        if isinstance(exc.body, bytes) and exc.body:  # FastAPI keeps the raw bytes of a body it did not read as JSON
            got = request.headers.get("content-type") or "no content type"
            return problem_response(415, f"send the body as JSON with Content-Type: application/json (got {got})",
                                    "unsupported-media-type")
        errors = _validation_errors(exc)
        return problem_response(422, _validation_detail(errors), "validation-error", errors=errors)

    def domain(status: int, slug: str):
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return problem_response(status, str(exc), slug, case=getattr(exc, "case", None))
        return handler

    for exc_type, (status, slug) in DOMAIN_ERRORS.items():
        app.add_exception_handler(exc_type, domain(status, slug))

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        # a file read by a route (a camera's scene) named by its setting, not the server's path
        return problem_response(422, request.app.state.ctx.config_error(exc), "invalid-config")

    @app.exception_handler(CaseStoreUnreachable)
    async def _store_down(request: Request, exc: CaseStoreUnreachable) -> JSONResponse:
        # Any route (authentication included: tokens live in the same database) may be the first to find the
        # store gone; the whole service is unavailable, not the request wrong. The log names the store (password
        # masked) and the driver's reason; the answer does not, as anyone, without a token too, may receive it.
        # Every request meets it during an outage: the first few are logged, then a line per interval (RecurringLog).
        request.app.state.ctx.errors_log.error("case-store-unreachable", "%s %s: %s", request.method, loggable_target(request.url.path), exc)
        return problem_response(503, f"案件库暂时无法连接，请稍后重试 the case store cannot be reached; try again in "
                                     f"{STORE_RETRY_AFTER_S} s (the server log names the store and the reason)",
                                "case-store-unreachable", {"Retry-After": str(STORE_RETRY_AFTER_S)})

    @app.exception_handler(CaseStoreFull)
    async def _store_full(request: Request, exc: CaseStoreFull) -> JSONResponse:
        # A write the store's disk had no room for: rolled back, what the store held kept. Any route that writes may
        # meet it (a 500 said the service was broken); reads still work, and writes again once space is freed. The log
        # names the store and the disk to free, the answer names the store by its setting only.
        log.error("%s %s: %s", request.method, loggable_target(request.url.path), exc)
        return problem_response(503,
                                f"案件库（cases.url）所在磁盘已满，本次修改未保存（原有数据未受影响），请通知管理员释放磁盘空间后，"
                                f"{STORE_RETRY_AFTER_S} 秒后重试 — the disk of the case store (cases.url) is full: this change "
                                f"was not saved (what the store held is kept); have an administrator free space on it, then "
                                f"try again in {STORE_RETRY_AFTER_S} s (the server log names the store and the disk)",
                                "case-store-full", {"Retry-After": str(STORE_RETRY_AFTER_S)})

    @app.exception_handler(PoolTimeout)
    async def _store_busy(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every connection of the pool was in use for `cases.pool_timeout` (a burst, or slow queries holding them):
        # the store is there but busy, so the request may be tried again soon; a 500 said the service was broken.
        cases = request.app.state.ctx.settings.cases
        request.app.state.ctx.errors_log.error("case-store-busy", "%s %s: no free case store connection after cases.pool_timeout (%s s; cases.pool_size %s, "
                  "cases.max_overflow %s): %s", request.method, loggable_target(request.url.path), cases.pool_timeout, cases.pool_size,
                  cases.max_overflow, exc)
        return problem_response(503, f"案件库连接已全部占用，等待超过 cases.pool_timeout（{cases.pool_timeout:g} 秒），"
                                     f"请 {POOL_RETRY_AFTER_S} 秒后重试；若常见，请管理员调大 cases.pool_size / "
                                     f"cases.max_overflow — every case store connection was in use for longer than "
                                     f"cases.pool_timeout ({cases.pool_timeout:g} s); try again in {POOL_RETRY_AFTER_S} s, "
                                     f"and if it is frequent have cases.pool_size / cases.max_overflow raised "
                                     f"(now {cases.pool_size} + {cases.max_overflow})",
                                "case-store-busy", {"Retry-After": str(POOL_RETRY_AFTER_S)})

    @app.exception_handler(WebhookError)
    async def _webhook(request: Request, exc: WebhookError) -> JSONResponse:
        if isinstance(exc, UnreadableBody):  # unreadable as on every route; a readable call refused is the webhook's
            return await _problem(request, malformed_json(exc.reason))
        return problem_response(exc.status_code, str(exc), "webhook-refused")

    app.add_middleware(_Unhandled)  # the first added: the innermost, so the other middlewares see its 500

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        # a bug in a middleware outside _Unhandled: Starlette raises it on to the server, which logs its traceback
        return internal_error(exc)


def internal_error(exc: Exception) -> JSONResponse:
    """The 500 of a bug: its kind, never its internals (the log has them)."""
    return problem_response(500, f"internal error ({type(exc).__name__}); see the server log")


class _Unhandled:
    """A route's unexpected error answered 500 and logged once, naming the request. Handled by an exception handler
    for `Exception`, Starlette answers it and then raises it on to the server (uvicorn), which logged its traceback a
    second time, and the middlewares between (the request metrics, the no-store headers) never saw the 500. A response
    already begun cannot become a 500: the error is logged and the server closes the connection it left unfinished."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope["method"], loggable_target(scope["path"]))
            if not started:
                await internal_error(exc)(scope, receive, send)


def _allowed(request: Request) -> str:
    """The `Allow` of a 405: every method of every route whose path is the request's. Starlette answers with the first
    such route's methods, so `DELETE /cases/{id}` said `Allow: GET` (its PATCH left out) and `POST /callout/export`
    `Allow: PUT`, the methods of `/callout/{number}`, listed first, instead of the export's GET."""
    methods = {m for route in iter_route_contexts(request.app.routes)  # the included routers' routes too
               if route.methods and route.matches(request.scope)[0] is not Match.NONE for m in route.methods}
    return ", ".join(sorted(methods))


#: The schemas FastAPI adds for its own 422 body (`{"detail": [...]}`), which no answer of ours is.
FASTAPI_422_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _document_unprocessable(app: FastAPI) -> None:
    """/openapi.json gives every operation a 422 problem document: any route answers one for a control character in
    its path or query (api/app.py), and FastAPI's own 422 entry says `application/json` with its validation-error
    body, where we answer `application/problem+json` (`_invalid`). It also holds ProblemDoc's schema, which
    `problems()` refers to without naming the model, and not FastAPI's HTTPValidationError and ValidationError, which
    only its replaced 422 entries referred to: a generated client would have types for a body no route sends."""
    base = app.openapi
    unprocessable = problems(422)[422]
    doc = {"description": unprocessable["description"], "content": unprocessable["content"]}

    def openapi() -> dict[str, Any]:
        schema = base()  # built once and kept by FastAPI; setting the entries again is idempotent
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["ProblemDoc"] = ProblemDoc.model_json_schema()
        for unused in FASTAPI_422_SCHEMAS:
            schemas.pop(unused, None)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict) and "responses" in operation:
                    operation["responses"]["422"] = doc
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
