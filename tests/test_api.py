"""The API through HTTP: role checks on every route, problem responses, case search, evidence links, review."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta

from fastapi.routing import iter_route_contexts

from tests.api_helpers import ROLES, auth, draft_cases, service  # noqa: F401  (fixture)

# Every route of the app and who may call it. A route missing here fails `test_every_route_checks_its_role`.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/ui/{page}"), ("GET", "/openapi.json"),
          ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"), ("GET", "/favicon.ico"),
          ("MOUNT", "/static"), ("MOUNT", "/docs/assets"),
          ("GET", "/api/v1/evidence/keys")}  # public keys that verify evidence: public by nature
PUBLIC_NOT_FOUND = {("GET", "/api/v1/evidence/keys/{key_id}.pem")}  # public too; 404 for a key not published
SIGNED = {("GET", "/evidence/{case_id}/{path:path}"),  # the URL's signature is the permission
          ("GET", "/attachments/{case_id}/{path:path}")}  # dispatched cases' shared copies, for the platform
READERS = {"inspector", "reviewer", "admin"}
REVIEWERS = {"reviewer", "admin"}
ROUTE_ROLES = {
    ("GET", "/metrics"): {"integration", "admin"},
    ("POST", "/api/v1/triage/jobs"): READERS,
    ("GET", "/api/v1/triage/jobs"): READERS,
    ("GET", "/api/v1/triage/jobs/{job_id}"): READERS,
    ("GET", "/api/v1/triage/jobs/{job_id}/results"): READERS,
    ("GET", "/api/v1/triage/jobs/{job_id}/report"): READERS,
    ("GET", "/api/v1/meta"): READERS,
    ("GET", "/api/v1/cases"): READERS,
    ("GET", "/api/v1/cases/{case_id}"): READERS,
    ("POST", "/api/v1/cases/{case_id}/confirm"): REVIEWERS,
    ("POST", "/api/v1/cases/{case_id}/reject"): REVIEWERS,
    ("POST", "/api/v1/cases/{case_id}/reopen"): REVIEWERS,
    ("PATCH", "/api/v1/cases/{case_id}"): REVIEWERS,
    ("POST", "/api/v1/cases/{case_id}/notes"): REVIEWERS,
    ("GET", "/api/v1/cases/{case_id}/audit"): REVIEWERS,
    ("GET", "/api/v1/cameras"): READERS,
    ("GET", "/api/v1/cameras/scene-schema"): READERS,
    ("GET", "/api/v1/cameras/{camera_id}/scene"): READERS,
    ("GET", "/api/v1/cameras/{camera_id}/scene-file"): READERS,
    ("PUT", "/api/v1/cameras/{camera_id}/scene"): {"admin"},
    ("GET", "/api/v1/cameras/{camera_id}/snapshot"): READERS,
    ("POST", "/api/v1/dispatch/{target}/webhook"): {"integration", "admin"},
    ("GET", "/api/v1/scores"): READERS,
    ("GET", "/api/v1/exports/cases"): READERS,
    ("GET", "/api/v1/map"): READERS,
    ("GET", "/api/v1/map/cases"): READERS,
    ("GET", "/api/v1/reports"): READERS,
    ("GET", "/api/v1/reports/{name}/{file}"): READERS,
    ("GET", "/api/v1/shops"): READERS,
    ("PUT", "/api/v1/shops/{shop_id}"): REVIEWERS,
    ("DELETE", "/api/v1/shops/{shop_id}"): {"admin"},
    ("POST", "/api/v1/shops/import"): REVIEWERS,
    ("GET", "/api/v1/warnings"): READERS,
    ("GET", "/api/v1/warnings/{warning_id}/image"): READERS,
    ("GET", "/api/v1/callout"): READERS,
    ("GET", "/api/v1/callout/{number}"): READERS,
    ("PUT", "/api/v1/callout/{number}"): REVIEWERS,
    ("GET", "/api/v1/callout/export"): READERS,
    ("POST", "/api/v1/callout/import"): REVIEWERS,
    ("GET", "/api/v1/callout/cutoffs"): READERS,
    ("POST", "/api/v1/cases/{case_id}/disposal-photo"): {"reviewer", "integration", "admin"},
    ("POST", "/api/v1/patrol/jobs"): READERS,
    ("GET", "/api/v1/patrol/jobs"): READERS,
    ("GET", "/api/v1/patrol/jobs/{job_id}"): READERS,
    ("GET", "/api/v1/patrol/jobs/{job_id}/report"): READERS,
}
def _routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route, routers included; mounts (static files) as ("MOUNT", path)."""
    out = set()
    for route in iter_route_contexts(app.routes):
        methods = route.methods
        out |= {(m, route.path) for m in methods - {"HEAD"}} if methods else {("MOUNT", route.path)}
    return out


def test_every_route_checks_its_role(service, bus_event):
    app, client, tokens, _ = service
    case_id = draft_cases(app, bus_event, [{}])[0]
    routes = _routes(app)
    assert routes == PUBLIC | PUBLIC_NOT_FOUND | SIGNED | set(ROUTE_ROLES), "a route was added or removed: give it a role in ROUTE_ROLES"
    values = {"case_id": case_id, "job_id": "0" * 16, "camera_id": "cam-01", "target": "dcm", "name": "month-2026-11",
              "file": "report.pdf", "shop_id": "shop-1",
              "number": "13800138000", "warning_id": "W20250314-0"}
    for (method, path), allowed in sorted(ROUTE_ROLES.items()):
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") and "jobs" not in path else {}
        anonymous = client.request(method, url, **body)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["content-type"] == "application/problem+json"
        assert anonymous.headers["WWW-Authenticate"] == "Bearer" and anonymous.json()["title"] == "Unauthorized"
        if not path.endswith("/webhook"):  # which asks for a token or a signature (test_api_review)
            # in staff's words first, as the expired token's and the 403s' (the English as it was, for clients)
            assert anonymous.json()["detail"] == ("需要有效的 API 令牌（Authorization: Bearer <令牌>） "
                                                  "a valid API token is required (Authorization: Bearer <token>)"), path
        bad = client.request(method, url, headers=auth("swt_not-a-real-token"), **body)
        assert bad.status_code == 401 and bad.headers["WWW-Authenticate"] == "Bearer", (method, path)
        assert bad.json()["type"] == "urn:streetwatch:problem:unauthenticated", path
        assert bad.json()["detail"] == "API 令牌无效（未知或已吊销） unknown or revoked API token", path
        for role in ROLES:
            answer = client.request(method, url, headers=auth(tokens[role]), **body)
            if role in allowed:
                assert answer.status_code not in (401, 403), (method, path, role, answer.text)
            else:
                assert answer.status_code == 403, (method, path, role, answer.text)
                names = ", ".join(sorted(allowed))  # in staff's words first: the pages show the detail as it comes
                assert answer.json()["title"] == "Forbidden" and answer.json()["detail"] == \
                    f"角色 {role} 无权执行此操作（允许的角色：{names}） role {role} may not do this (allowed: {names})"
    for method, path in PUBLIC - {("GET", "/ui/{page}"), ("MOUNT", "/static"), ("MOUNT", "/docs/assets")}:
        assert client.request(method, path).status_code == (204 if path == "/favicon.ico" else 200), path  # no icon
    assert client.get("/api/v1/evidence/keys/0123456789abcdef.pem").status_code == 404  # none configured here
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):  # no CDN
        assert f'src="/docs/assets/{script}"' in client.get(page).text
        assert client.get(f"/docs/assets/{script}").status_code == 200
    assert client.get("/ui/queue").status_code == 200 and client.get("/ui/nope").status_code == 404



def test_pages_cannot_be_framed_and_run_only_their_own_scripts(service):
    """A review page framed by another site would act with the token in this origin's localStorage (a lured
    click or key press confirms a case): every page forbids framing and inline scripts, and has none itself."""
    from api.routers.pages import PAGES, STATIC

    _, client, _, _ = service
    for page, name in PAGES.items():
        answer = client.get(f"/ui/{page}")
        assert answer.status_code == 200
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy and "unsafe-inline" not in policy
        html = (STATIC / name).read_text(encoding="utf-8")
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], page  # the policy would block it
        assert not re.search(r"\son[a-z]+\s*=", html), page

def test_errors_are_problem_documents(service, bus_event):
    app, client, tokens, _ = service
    reviewer = auth(tokens["reviewer"])
    case_id = draft_cases(app, bus_event, [{}])[0]
    cases = [
        (client.get("/api/v1/cases/SW20250101-000000000000", headers=reviewer), 404),
        (client.get("/api/v1/cases?state=bogus", headers=reviewer), 422),
        (client.get("/api/v1/cases?limit=0", headers=reviewer), 422),
        (client.get("/api/v1/cases", params={"since": "9999-12-31T23:59:59-10:00"}, headers=reviewer), 422),  # no UTC time
        (client.get("/api/v1/cases", params={"q": "\x00"}, headers=reviewer), 422),  # SQLite reads a NUL as the end of the pattern: every case
        (client.get("/api/v1/cases", params={"until": "0001-01-01T00:00:00+08:00"}, headers=reviewer), 422),
        (client.post(f"/api/v1/cases/{case_id}/reject", headers=reviewer, json={"reason": "because"}), 422),
        (client.post(f"/api/v1/cases/{case_id}/confirm", headers={**reviewer, "Content-Type": "application/json"},
                     content=b"{not json"), 400),  # malformed, as the docs say (FastAPI alone: 422)
        (client.post(f"/api/v1/cases/{case_id}/confirm", headers=reviewer, content=b'{"dispatch": false}'), 415),  # no JSON type
        (client.put("/api/v1/callout/13812345678", headers={**reviewer, "Content-Type": "application/x-www-form-urlencoded"},
                    content=b'{"status": "called"}'), 415),  # curl -d without -H; FastAPI alone: 422 "body.status: Field required"
        (client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"type": "ufo_landing"}), 422),
        (client.get("/api/v1/triage/jobs/../../etc", headers=reviewer), 404),
        (client.get("/api/v1/cameras/cam-99/scene", headers=reviewer), 404),
        # A NUL reached the store's queries, a 500 on PostgreSQL: refused before any route runs
        (client.get("/api/v1/cases", params={"type": "\x00"}, headers=reviewer), 422),
        (client.get("/api/v1/warnings", params={"camera_id": "cam\x00"}, headers=reviewer), 422),
        (client.get(f"/api/v1/cases/{case_id}%00/audit", headers=reviewer), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("urn:streetwatch:")
    client.post(f"/api/v1/cases/{case_id}/reject", headers=reviewer, json={"reason": "duplicate"})
    again = client.post(f"/api/v1/cases/{case_id}/confirm", headers=reviewer, json={})
    assert again.status_code == 409 and "cannot move from rejected to queued" in again.json()["detail"]


def test_case_search_filters_pages_and_sorts(service, bus_event):
    app, client, tokens, _ = service
    t0 = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    specs = [
        {"violation_type": "illegal_parking", "source_id": "cam-01", "grid_cell": "A1", "at": t0},
        {"violation_type": "illegal_parking", "source_id": "cam-02", "grid_cell": "A2", "at": t0 + timedelta(hours=1)},
        {"violation_type": "street_stall", "source_id": "cam-01", "grid_cell": "A1", "at": t0 + timedelta(hours=2),
         "address": "学院路 99 号"},
        {"violation_type": "flyposting", "source_id": "cam-02", "grid_cell": "B7", "at": t0 + timedelta(hours=3)},
    ]
    ids = draft_cases(app, bus_event, specs)
    h = auth(tokens["inspector"])

    def search(**params):
        answer = client.get("/api/v1/cases", headers=h, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert search()["total"] == 4
    assert [c["id"] for c in search(sort="opened_at", order="asc")["items"]] == ids
    assert [c["id"] for c in search(sort="opened_at", order="desc")["items"]] == ids[::-1]
    assert {c["id"] for c in search(type="illegal_parking")["items"]} == set(ids[:2])
    assert {c["id"] for c in search(camera="cam-02")["items"]} == {ids[1], ids[3]}
    assert {c["id"] for c in search(grid_cell="A1")["items"]} == {ids[0], ids[2]}
    window = search(since=(t0 + timedelta(minutes=30)).isoformat(), until=(t0 + timedelta(hours=2, minutes=30)).isoformat())
    assert {c["id"] for c in window["items"]} == {ids[1], ids[2]}
    assert [c["id"] for c in search(q="学院路")["items"]] == [ids[2]]
    assert [c["id"] for c in search(q=ids[3][-6:].upper())["items"]] == [ids[3]]  # case-insensitive, in the id
    page = search(sort="opened_at", order="asc", limit=3, offset=3)
    assert page["total"] == 4 and [c["id"] for c in page["items"]] == [ids[3]]
    assert search(state="candidate", reviewed="false")["total"] == 4
    client.post(f"/api/v1/cases/{ids[0]}/reject", headers=auth(tokens["reviewer"]), json={"reason": "legal"})
    assert search(reviewed="false")["total"] == 3 and search(state="rejected")["items"][0]["id"] == ids[0]


def test_a_search_in_a_type_s_name_finds_the_cases_of_that_type(service, bus_event):
    """Cases hold their type's id, so typing 占道经营 or "street stall" in the queue's search box found nothing; `q`
    matches the taxonomy's Chinese and English names too (case-insensitive, any part), besides the text it searched."""
    app, client, tokens, _ = service
    ids = draft_cases(app, bus_event, [{"violation_type": "illegal_parking"}, {"violation_type": "street_stall"},
                                       {"violation_type": "flyposting", "address": "占道经营市场东门"}])
    h = auth(tokens["inspector"])

    def found(q: str, **params) -> set[str]:
        answer = client.get("/api/v1/cases", headers=h, params={"q": q, **params})
        assert answer.status_code == 200, answer.text
        return {c["id"] for c in answer.json()["items"]}

    assert found("占道经营") == {ids[1], ids[2]}  # the stall by its type's name, the poster by its address
    assert found("street stall") == found("STALL") == {ids[1]}
    assert found("乱停") == {ids[0]}
    assert found("占道经营", type="flyposting") == {ids[2]}  # still AND with the other filters
    assert found("违停") == set()  # a name no type has


def _is_model(schema: dict) -> bool:
    """A named model, or a list of one."""
    return "$ref" in schema or (schema.get("type") == "array" and "$ref" in schema.get("items", {}))


def test_every_route_documents_what_it_returns(service):
    """/openapi.json gives each operation's success answer a body schema (a model, or the media type it serves)."""
    _, client, _, _ = service
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    undocumented = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            bodies = [(kind, body.get("schema", {})) for r in ok.values() for kind, body in r.get("content", {}).items()]
            if not bodies or any(kind == "application/json" and not _is_model(schema) for kind, schema in bodies):
                undocumented.append(f"{method.upper()} {path}")
    assert undocumented == ["GET /api/v1/cameras/scene-schema"]  # a JSON Schema document: any object
    case = schemas["CaseView"]["properties"]
    assert {"id", "state", "violation_type", "opened_at", "has_evidence"} <= case.keys() and "evidence_ref" not in case
    assert schemas["CaseDetail"]["properties"]["history"]["items"] == {"$ref": "#/components/schemas/HistoryItem"}
    assert "from" in schemas["HistoryItem"]["properties"]
    get_scene = spec["paths"]["/api/v1/cameras/{camera_id}/scene"]["get"]["responses"]["200"]["content"]["application/json"]
    assert get_scene["schema"]["$ref"].startswith("#/components/schemas/Scene")


def test_errors_are_documented_as_problem_documents_only(service):
    """Every error is sent as application/problem+json; /openapi.json listed the route's own media type beside it
    (`application/json`, a report's `text/html`), which a generated client may ask for or parse an error as."""
    _, client, tokens, _ = service
    spec = client.get("/openapi.json").json()
    other = sorted(f"{method.upper()} {path} {code}: {', '.join(r['content'])}"
                   for path, operations in spec["paths"].items() for method, op in operations.items()
                   for code, r in op["responses"].items()
                   if "ProblemDoc" in str(r) and list(r.get("content", {})) != ["application/problem+json"])
    assert other == []
    assert spec["components"]["schemas"]["ProblemDoc"]["required"] == ["type", "title", "status", "detail"]
    report = spec["paths"]["/api/v1/triage/jobs/{job_id}/report"]["get"]["responses"]
    assert list(report["200"]["content"]) == ["text/html"] and list(report["404"]["content"]) == ["application/problem+json"]
    answer = client.get("/api/v1/triage/jobs/0000000000000000/report", headers=auth(tokens["inspector"]))
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"


def test_openapi_holds_no_schema_that_no_answer_or_body_refers_to(service):
    """FastAPI's HTTPValidationError and ValidationError stayed in /openapi.json's schemas after every 422 was
    documented as a problem document: a generated client got types for a body no route sends. Every schema left is
    reached from an operation."""
    _, client, _, _ = service
    spec = client.get("/openapi.json").json()
    schemas, reached, todo = spec["components"]["schemas"], set(), [spec["paths"]]
    while todo:
        for name in re.findall(r"#/components/schemas/([\w.-]+)", json.dumps(todo.pop())):
            if name not in reached:
                reached.add(name)
                todo.append(schemas[name])
    assert sorted(schemas.keys() - reached) == []
    assert "ProblemDoc" in reached and not {"HTTPValidationError", "ValidationError"} & schemas.keys()


def test_the_routes_reading_their_own_body_declare_it(service):
    """The disposal photo and the dispatch webhook read their body themselves, so /openapi.json declared none and a
    client generated from it could not send the photo or the platform's status (a call made from it:
    test_cityops_api): the photo as a multipart `file` or JSON `{url}`, the status call as the platform's JSON."""
    _, client, _, _ = service
    spec = client.get("/openapi.json").json()["paths"]
    photo = spec["/api/v1/cases/{case_id}/disposal-photo"]["post"]["requestBody"]
    assert photo["required"] and photo["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    assert photo["content"]["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert photo["content"]["application/json"]["schema"]["required"] == ["url"]
    hook = spec["/api/v1/dispatch/{target}/webhook"]["post"]["requestBody"]
    assert hook["required"] and list(hook["content"]) == ["application/json"]
    assert hook["content"]["application/json"]["schema"]["required"] == ["status"]
    assert {"taskNumber", "externalId", "status", "note"} == hook["content"]["application/json"]["schema"]["properties"].keys()


def test_the_webhook_declares_its_signature_and_timestamp_headers(service, monkeypatch):
    """The dispatch webhook reads X-Signature and a target's timestamp header itself, so /openapi.json declared
    neither and a client generated from it could not sign its calls: X-Signature is declared, and each timestamp
    header under the name a target gives it (`webhook_timestamp_header`), optional as the targets differ."""
    app, client, _, _ = service

    def headers() -> dict[str, dict]:
        operation = client.get("/openapi.json").json()["paths"]["/api/v1/dispatch/{target}/webhook"]["post"]
        assert [p["name"] for p in operation["parameters"] if p["in"] == "path"] == ["target"]
        return {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}

    unsigned = headers()
    assert list(unsigned) == ["X-Signature"] and not unsigned["X-Signature"]["required"]
    assert "`webhook_secret_env`" in unsigned["X-Signature"]["description"]
    assert unsigned["X-Signature"]["schema"]["pattern"] == "^sha256=[0-9a-f]{64}$"
    targets = app.state.ctx.settings.dispatch.targets
    monkeypatch.setitem(targets, "dcm", targets["dcm"].model_copy(
        update={"webhook_secret_env": "SW_TEST_HOOK", "webhook_timestamp_header": "X-Dcm-Time"}))
    stamped = headers()
    assert list(stamped) == ["X-Signature", "X-Dcm-Time"] and not stamped["X-Dcm-Time"]["required"]
    assert "naming X-Dcm-Time as its `webhook_timestamp_header`" in stamped["X-Dcm-Time"]["description"]
    assert stamped["X-Dcm-Time"]["schema"] == {"type": "string", "pattern": "^[0-9]{1,12}$"}


def test_a_value_refused_by_a_route_names_its_field(service, bus_event):
    """An unknown type or dispatch target was 422 `unprocessable-entity` with neither the field in the detail nor
    `errors`, where FastAPI's own refusals (a bad severity) are `validation-error` with `errors[].loc`: a client
    could not tell which field to fix. Every refusal of one field now reads the same."""
    app, client, tokens, _ = service
    reviewer = auth(tokens["reviewer"])
    case_id = draft_cases(app, bus_event, [{}])[0]
    answers = {("body", "type"): client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"type": "ufo"}),
               ("body", "severity"): client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"severity": "x"}),
               ("body",): client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={}),
               ("body", "target"): client.post(f"/api/v1/cases/{case_id}/confirm", headers=reviewer,
                                               json={"dispatch": True, "target": "nope"}),
               ("query", "until"): client.get("/api/v1/cases", params={"until": "0001-01-01T00:00:00+08:00"}, headers=reviewer)}
    for loc, answer in answers.items():
        body = answer.json()
        assert answer.status_code == 422 and body["type"] == "urn:streetwatch:problem:validation-error", (loc, body)
        assert [e["loc"] for e in body["errors"]] == [list(loc)], body
        assert body["detail"] == f"{'.'.join(loc)}: {body['errors'][0]['msg']}"
    assert answers[("body", "type")].json()["errors"][0]["msg"].startswith("unknown violation type 'ufo' (known: ")
    assert answers[("body", "target")].json()["detail"] == "body.target: unknown dispatch target 'nope' (configured: dcm)"
    assert client.get(f"/api/v1/cases/{case_id}", headers=reviewer).json()["case"]["violation_type"] == bus_event[0].violation_type


def test_a_scene_and_a_shop_body_are_typed_and_a_refusal_names_its_field(service):
    """PUT of a scene and of a shop took any mapping: /openapi.json said `object`, so `{}` passed the schema, and was
    then refused 422 `invalid-config` with no `errors`. Both bodies are their models: typed in the document, a refusal
    naming its field in `errors[].loc` as FastAPI's validation does, and what was taken is still taken."""
    _, client, tokens, cams = service
    admin = auth(tokens["admin"])
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/cameras/{camera_id}/scene", "/api/v1/shops/{shop_id}"):
        body = spec["paths"][path]["put"]["requestBody"]["content"]["application/json"]["schema"]
        assert body.get("$ref", "").startswith("#/components/schemas/"), (path, body)
        assert spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["required"], path
    answers = {("body", "camera_id"): client.put("/api/v1/cameras/cam-01/scene", headers=admin, json={}),
               ("body", "name"): client.put("/api/v1/shops/s1", headers=admin, json={}),
               ("path", "shop_id"): client.put("/api/v1/shops/s%201", headers=admin, json={"name": "王记"})}
    for loc, answer in answers.items():
        body = answer.json()
        assert answer.status_code == 422 and body["type"] == "urn:streetwatch:problem:validation-error", (loc, body)
        assert [e["loc"] for e in body["errors"]] == [list(loc)], body
    scene = client.get("/api/v1/cameras/cam-01/scene", headers=admin).json()
    assert client.put("/api/v1/cameras/cam-01/scene", headers=admin, json=scene).json() == scene
    saved = client.put("/api/v1/shops/s1", headers=admin, json={"id": "elsewhere", "name": "王记", "frontages": [
        {"camera": "cam-01", "polygon": [[0.2, 0.5], [0.8, 0.5], [0.8, 1.0]]}]})
    assert saved.status_code == 200 and saved.json()["id"] == "s1", saved.text


def test_a_case_search_takes_its_times_as_iso_8601_not_as_numbers(service, bus_event):
    """`since=1700000000` or `until=0.5` were read as Unix seconds (pydantic's lax datetime), though the schema and
    docs/service.md say ISO 8601: a timestamp in milliseconds or a count sent by mistake searched from some moment,
    silently. A number is refused naming the field; an ISO 8601 time is taken as before."""
    app, client, tokens, _ = service
    reviewer = auth(tokens["reviewer"])
    draft_cases(app, bus_event, [{}])
    for name, value in (("since", "1700000000"), ("until", "0.5"), ("since", " -1e9")):
        answer = client.get("/api/v1/cases", params={name: value}, headers=reviewer)
        assert answer.status_code == 422 and [e["loc"] for e in answer.json()["errors"]] == [["query", name]], answer.text
        assert answer.json()["detail"] == f"query.{name}: {value.strip()} is a number, not a date-time: give ISO 8601, " \
                                          "e.g. 2026-11-20T09:00:00+08:00"
    taken = client.get("/api/v1/cases", params={"since": "2000-01-01T00:00:00+08:00", "until": "2999-01-01T00:00:00"},
                       headers=reviewer)
    assert taken.status_code == 200 and taken.json()["total"] == 1, taken.text


def test_a_disposal_photo_body_that_is_not_json_is_a_malformed_request(service, bus_event):
    """The disposal-photo route reads its JSON body itself: bytes that are not UTF-8 were a 500 (UnicodeDecodeError)
    and text that is not JSON a 422 asking for the photo; both are 400 `malformed-json` with the reason, as for every
    JSON body, and a JSON body without a `url` still says what to send."""
    app, client, tokens, _ = service
    case_id = draft_cases(app, bus_event, [{}])[0]
    url, headers = f"/api/v1/cases/{case_id}/disposal-photo", {**auth(tokens["integration"]), "Content-Type": "application/json"}
    for body, why in ((b'{"url": "\xff"}', "can't decode byte 0xff"), (b"{url: x}", "Expecting property name")):
        answer = client.post(url, headers=headers, content=body)
        assert answer.status_code == 400 and answer.headers["content-type"] == "application/problem+json", answer.text
        assert answer.json()["type"] == "urn:streetwatch:problem:malformed-json" and why in answer.json()["detail"]
    for body in (b"[]", b'{"photo": "x"}', b'{"url": 1}'):
        answer = client.post(url, headers=headers, content=body)
        assert answer.status_code == 422 and answer.json()["type"] == "urn:streetwatch:problem:no-photo", answer.text


def test_a_json_body_fastapi_cannot_read_is_a_malformed_request_with_the_reason(service, bus_event):
    """A body FastAPI parses that was not UTF-8, or JSON nested deeper than the parser goes, was 400 'There was an error
    parsing the body' (the generic `bad-request`), which said neither what was wrong nor that it was the JSON; it is
    400 `malformed-json` with the reason, worded as for bad JSON and as the routes reading their own bodies say it."""
    app, client, tokens, _ = service
    case_id = draft_cases(app, bus_event, [{}])[0]
    reviewer = {**auth(tokens["reviewer"]), "Content-Type": "application/json"}
    photo = f"/api/v1/cases/{case_id}/disposal-photo"
    for url, body, why in ((f"/api/v1/cases/{case_id}", b'{"description": "\xff"}', "can't decode byte 0xff"),
                           (f"/api/v1/cases/{case_id}/reject", b"[" * 100_000, "nested too deep"),
                           (f"/api/v1/cases/{case_id}", b'{"description": ', "Expecting value (character 16)"),
                           (photo, b"[" * 100_000, "nested too deep")):
        answer = client.patch(url, headers=reviewer, content=body) if url.endswith(case_id) else \
            client.post(url, headers=reviewer, content=body)
        assert answer.status_code == 400 and answer.headers["content-type"] == "application/problem+json", answer.text
        assert answer.json()["type"] == "urn:streetwatch:problem:malformed-json", answer.text
        assert answer.json()["detail"].startswith("malformed JSON body: ") and why in answer.json()["detail"], answer.text


def test_a_caller_without_a_token_is_answered_401_before_a_body_that_cannot_be_read(service):
    """FastAPI reads a JSON body before it solves the route's dependencies, so an anonymous request with bad JSON was
    answered 400 `malformed-json` where one with a readable body got 401: the token is checked first whatever the
    body (401 without a valid one, 403 for another role), and only a caller the route takes hears of its JSON."""
    _, client, tokens, _ = service
    callers = {"none": {}, "unknown": auth("no-such-token"), "inspector": auth(tokens["inspector"]),
               "reviewer": auth(tokens["reviewer"])}
    for method, url in (("PATCH", "/api/v1/cases/0123456789abcdef"), ("PUT", "/api/v1/shops/s1")):
        for body in (b'{"description": ', b'{"name": "\xff"}', b"[" * 100_000):
            answers = {who: client.request(method, url, content=body, headers={**headers, "Content-Type": "application/json"})
                       for who, headers in callers.items()}
            got = {who: (a.status_code, a.json()["type"].rsplit(":", 1)[1]) for who, a in answers.items()}
            assert got == {"none": (401, "unauthenticated"), "unknown": (401, "unauthenticated"),
                           "inspector": (403, "forbidden"), "reviewer": (400, "malformed-json")}, (url, body[:20], got)
            assert answers["none"].headers["www-authenticate"] == "Bearer"


def test_a_method_the_path_does_not_take_is_answered_with_every_method_it_does(service):
    """A 405 listed the methods of the first route whose path matched: `DELETE /cases/{id}` said `Allow: GET`, its
    PATCH left out, and `POST /callout/export` said `Allow: PUT`, the methods of `/callout/{number}` listed before it,
    though GET is what the export takes. Allow lists every method of every route the path matches."""
    _, client, tokens, _ = service
    admin = auth(tokens["admin"])
    for method, path, allow in (("DELETE", "/api/v1/cases/0123", "GET, PATCH"), ("POST", "/api/v1/callout/export", "GET, PUT"),
                                ("POST", "/api/v1/callout/cutoffs", "GET, PUT"), ("POST", "/api/v1/shops/s1", "DELETE, PUT"),
                                ("PUT", "/api/v1/cases", "GET")):
        answer = client.request(method, path, headers=admin)
        assert answer.status_code == 405 and answer.headers["allow"] == allow, (method, path, answer.headers.get("allow"))
        assert answer.headers["content-type"] == "application/problem+json"


def test_json_body_routes_document_the_answers_to_their_body(service, bus_event):
    """A body that is not JSON (400), too large (413) or not sent as JSON (415) is refused by every route taking a
    JSON body; /openapi.json listed none of the three, so a generated client had no type for them."""
    app, client, tokens, _ = service
    spec = client.get("/openapi.json").json()
    json_routes = {f"{method.upper()} {path}": set(op["responses"]) for path, operations in spec["paths"].items()
                   for method, op in operations.items() if "application/json" in op.get("requestBody", {}).get("content", {})}
    assert {"PATCH /api/v1/cases/{case_id}", "POST /api/v1/cases/{case_id}/confirm", "PUT /api/v1/callout/{number}",
            "PUT /api/v1/shops/{shop_id}", "PUT /api/v1/cameras/{camera_id}/scene"} <= json_routes.keys()
    # the webhook reads the bytes the platform signed whatever their Content-Type: no 415
    wanted = {route: {"400", "413"} if route.endswith("/webhook") else {"400", "413", "415"} for route in json_routes}
    assert {route: wanted[route] - codes for route, codes in json_routes.items() if wanted[route] - codes} == {}
    case_id = draft_cases(app, bus_event, [{}])[0]
    url, reviewer = f"/api/v1/cases/{case_id}/reject", auth(tokens["reviewer"])
    sent = [client.post(url, headers={**reviewer, "Content-Type": "application/json"}, content=b"\x00"),
            client.post(url, headers=reviewer, content=b'{"reason": "duplicate"}'),
            client.post(url, headers={**reviewer, "Content-Type": "application/json"}, content=b" " * (2 << 20))]
    assert [a.status_code for a in sent] == [400, 415, 413]
    assert all(a.headers["content-type"] == "application/problem+json" for a in sent)


def test_a_case_store_gone_while_serving_answers_503(tmp_path, monkeypatch):
    """PostgreSQL stopped while the service runs: every route that needs the store (authentication first) answers
    503 with Retry-After, in Chinese and English, without the store's URL (anyone may get it); the same requests
    work again once the server is back, with no restart of the service."""
    import shutil
    import tempfile
    from pathlib import Path

    import pytest
    from fastapi.testclient import TestClient

    from tests.api_helpers import make_app, settings_for
    from tests.pg import pg_bin, pg_ctl, postgres_server

    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb/pg_ctl) are not installed: run scripts/install-system-deps.sh")
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    root = Path(tempfile.mkdtemp(prefix="streetwatch-pg-"))  # not pytest's: the server's user must enter it
    try:
        with postgres_server(root) as url:
            app, tokens = make_app(settings_for(tmp_path, cases_url=url))
            with TestClient(app, raise_server_exceptions=False) as client:
                reviewer = auth(tokens["reviewer"])
                assert client.get("/api/v1/cases", headers=reviewer).status_code == 200
                pg_ctl(root, "-m", "fast", "stop")
                for response in (client.get("/api/v1/cases", headers=reviewer),
                                 client.post("/api/v1/cases/SW20250101-000000000000/confirm", headers=reviewer, json={})):
                    assert response.status_code == 503, response.text
                    assert response.headers["content-type"] == "application/problem+json"
                    assert int(response.headers["Retry-After"]) > 0
                    body = response.json()
                    assert body["type"] == "urn:streetwatch:problem:case-store-unreachable"
                    assert "案件库暂时无法连接" in body["detail"] and "the case store cannot be reached" in body["detail"]
                    assert url.split("@")[1].split("/")[0] not in body["detail"]  # host and port stay in the log
                assert client.get("/healthz").status_code == 200
                pg_ctl(root, "restart")
                assert client.get("/api/v1/cases", headers=reviewer).status_code == 200
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_sqlite_case_store_file_deleted_while_serving_answers_503_not_an_empty_store(tmp_path, monkeypatch):
    """The SQLite file alone deleted while the service runs (its folder kept): the next connection made an empty
    database there and requests failed 500 'no such table'. Each answers 503 case-store-unreachable, no empty file is
    made, and the same requests work again once the file is restored, with no restart of the service."""
    from fastapi.testclient import TestClient

    from tests.api_helpers import make_app, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path))
    database, aside = tmp_path / "cases.db", tmp_path / "aside.db"
    with TestClient(app, raise_server_exceptions=False) as client:
        reviewer = auth(tokens["reviewer"])
        assert client.get("/api/v1/cases", headers=reviewer).status_code == 200
        database.rename(aside)
        for _ in range(3):  # the open connection's check, then new connections
            response = client.get("/api/v1/cases", headers=reviewer)
            assert response.status_code == 503, response.text
            assert response.json()["type"] == "urn:streetwatch:problem:case-store-unreachable"
        assert not database.exists()
        aside.rename(database)
        assert client.get("/api/v1/cases", headers=reviewer).status_code == 200


def test_metrics_answer_through_a_case_store_outage_for_a_token_the_store_accepted_before(tmp_path, monkeypatch):
    """Prometheus scrapes /metrics with a token, which lives in the case store: during an outage the scrape itself
    was answered 503, so the outage's own 503 counts could not be seen. A token the store accepted before in this
    process is now judged as it was then; one it never vouched for still gets 503 (it may be valid), an unknown one
    401 once the store is back, and a token revoked while the store was up stays refused."""
    from fastapi.testclient import TestClient

    from tests.api_helpers import make_app, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path))
    accounts = app.state.ctx.accounts
    _, revoked = accounts.add("old-scraper", "integration")
    database, aside = tmp_path / "cases.db", tmp_path / "aside.db"
    with TestClient(app, raise_server_exceptions=False) as client:
        scraper, admin = auth(tokens["integration"]), auth(tokens["admin"])
        assert client.get("/metrics", headers=scraper).status_code == 200
        assert client.get("/metrics", headers=auth(revoked)).status_code == 200
        accounts.revoke("old-scraper")
        assert client.get("/metrics", headers=auth(revoked)).status_code == 401
        database.rename(aside)
        assert client.get("/api/v1/cases", headers=scraper).status_code == 503  # other routes: as before
        response = client.get("/metrics", headers=scraper)
        assert response.status_code == 200, response.text
        assert re.search(r'^streetwatch_api_requests_total\{handler="\w+",method="GET",status="503"\} 1\.0$', response.text, re.M)
        for unvouched in (admin, auth(revoked), auth("swt_" + "x" * 43)):
            assert client.get("/metrics", headers=unvouched).status_code == 503
        aside.rename(database)
        assert client.get("/metrics", headers=admin).status_code == 200
        assert client.get("/metrics", headers=auth("swt_" + "x" * 43)).status_code == 401


def test_a_store_outage_logs_its_first_requests_then_a_line_per_interval(tmp_path, monkeypatch, caplog):
    """Soak: while the case store was down every request logged an ERROR line (340 in 25 s). The first few of the
    outage are logged each, then one line per interval saying how many were not; every request still answers 503."""
    from fastapi.testclient import TestClient

    from tests.api_helpers import make_app, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path))
    now = [1000.0]
    app.state.ctx.errors_log.clock = lambda: now[0]  # the interval passed by hand: no test waits for it
    database = tmp_path / "cases.db"
    with TestClient(app, raise_server_exceptions=False) as client:
        reviewer = auth(tokens["reviewer"])
        assert client.get("/api/v1/cases", headers=reviewer).status_code == 200
        database.rename(tmp_path / "aside.db")
        with caplog.at_level(logging.ERROR, logger="api.problems"):
            codes = []
            for _ in range(10):  # a request each 10 s: the interval (60 s) passes at the 9th
                codes.append(client.get("/api/v1/cases", headers=reviewer).status_code)
                now[0] += 10
            now[0] += 60  # a quiet minute: the next failure begins a new run, logged in full
            codes.append(client.get("/api/v1/cases", headers=reviewer).status_code)
    assert codes == [503] * 11
    logged = [r.getMessage() for r in caplog.records if r.name == "api.problems"]
    assert len(logged) == 5 and all(line.startswith("GET /api/v1/cases: cannot open the case store") for line in logged), logged
    assert logged[3].endswith("(and 5 more like it not logged in the last 60 s)") and "more like it" not in logged[4]


def test_a_route_s_bug_is_one_traceback_in_the_server_log_and_a_counted_500(tmp_path, monkeypatch, caplog):
    """Soak: each 500 printed two tracebacks, our handler's and uvicorn's (Starlette raises the error on to the server
    after its handler answers), and the request metrics never counted it. Through uvicorn on loopback, as `serve`
    runs: one traceback, naming the request; the answer the 500 problem document; the 500 counted."""
    import httpx

    from tests.api_helpers import make_app, on_loopback, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, _ = make_app(settings_for(tmp_path))

    def broken() -> None:
        raise ZeroDivisionError("a bug")

    app.add_api_route("/api/v1/broken", broken)
    with caplog.at_level(logging.INFO), on_loopback(app) as url:
        answer = httpx.get(f"{url}/api/v1/broken", timeout=30)
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "internal error (ZeroDivisionError); see the server log"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in tracebacks] == ["unhandled error on GET /api/v1/broken"], caplog.text
    counted = {"method": "GET", "handler": "broken", "status": "500"}
    assert app.state.ctx.metrics.registry.get_sample_value("streetwatch_api_requests_total", counted) == 1


def test_a_request_finding_every_store_connection_in_use_past_pool_timeout_answers_503(tmp_path, monkeypatch):
    """A request that waited `cases.pool_timeout` for a connection of the store's pool, all in use, failed 500
    (internal error (TimeoutError)), as if the service were broken. It answers 503 with Retry-After, saying in Chinese
    and English that the store is busy and which settings size the pool; a connection returned, the same request works."""
    from fastapi.testclient import TestClient

    from pipelines.settings import CaseStoreConfig
    from tests.api_helpers import make_app, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    settings = settings_for(tmp_path)
    settings = settings.model_copy(update={"cases": CaseStoreConfig(url=settings.cases.url, pool_size=1, max_overflow=0,
                                                                    pool_timeout=0.5)})
    app, tokens = make_app(settings)
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/v1/cases", headers=reviewer).status_code == 200
        with app.state.ctx.store.engine.connect():  # the pool's one connection, held: the request waits, then fails
            response = client.get("/api/v1/cases", headers=reviewer)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["Retry-After"]) > 0
        body = response.json()
        assert body["type"] == "urn:streetwatch:problem:case-store-busy"
        assert body["detail"].startswith("案件库连接已全部占用，等待超过 cases.pool_timeout（0.5 秒）")
        assert "cases.pool_size" in body["detail"].split(" — ")[0] and "cases.pool_size" in body["detail"].split(" — ")[1]
        assert client.get("/api/v1/cases", headers=reviewer).status_code == 200


def test_a_write_the_store_s_disk_has_no_room_for_answers_503_and_keeps_what_the_store_held(tmp_path, monkeypatch, caplog):
    """A write to a full disk (SQLite's 'database or disk is full'; a page cap here, as a tiny tmpfs did) raised
    CaseStoreFull, which no handler answered: 500 internal error, as if the service were broken. It answers 503
    case-store-full with Retry-After, Chinese first, the store named by its setting and not by the server's path, which
    the log keeps; the shops stored before are all there, and reads still work."""
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from tests.api_helpers import make_app, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path))
    reviewer, engine = auth(tokens["reviewer"]), app.state.ctx.store.engine
    shop = {"name": "文三路便利店", "address": "文三路 1 号，" * 60}  # 1.3 kB each

    @sa.event.listens_for(engine, "connect")
    def _no_room_left(dbapi_conn, _record) -> None:  # the file may grow by 8 pages only, as on a disk nearly full
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 8}")

    engine.dispose()
    with TestClient(app, raise_server_exceptions=False) as client:
        kept, response = [], None
        for n in range(200):
            response = client.put(f"/api/v1/shops/s{n}", headers=reviewer, json=shop)
            if response.status_code != 200:
                break
            kept.append(f"s{n}")
        assert response is not None and response.status_code == 503 and kept, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["Retry-After"]) > 0
        body = response.json()
        assert body["type"] == "urn:streetwatch:problem:case-store-full"
        assert body["detail"].startswith("案件库（cases.url）所在磁盘已满，本次修改未保存") and "disk of the case store" in body["detail"]
        assert str(tmp_path) not in body["detail"] and f"free space on the disk holding {tmp_path}/cases.db" in caplog.text
        listed = client.get("/api/v1/shops", params={"limit": 500}, headers=reviewer)
        assert listed.status_code == 200 and listed.json()["total"] == len(kept), listed.text
        assert sorted(s["id"] for s in listed.json()["items"]) == sorted(kept)


def test_no_body_is_read_unbounded_before_the_token_is_checked(service):
    """FastAPI reads a route's JSON body before its dependencies, the token check among them: a PATCH of 300 MB to
    /api/v1/cases/x without a token was read whole into the server's memory, then answered 401. Every route with a
    JSON body refuses one over `JSON_BODY_LIMIT` with 413, declared or counted while it streams, before the token."""
    from fastapi.routing import APIRoute

    from api.uploads import JSON_BODY_LIMIT

    app, client, tokens, _ = service
    values = {"case_id": "SW20250314-000000000000", "camera_id": "cam-01", "shop_id": "shop-1", "number": "13800138000"}
    routes = [(m, r.path) for r in iter_route_contexts(app.routes)
              if isinstance(r.original_route, APIRoute) and r.original_route.body_field is not None for m in r.methods]
    assert {("PATCH", "/api/v1/cases/{case_id}"), ("PUT", "/api/v1/cameras/{camera_id}/scene"),
            ("PUT", "/api/v1/shops/{shop_id}")} <= set(routes)
    too_much = b'{"note": "' + b"x" * JSON_BODY_LIMIT + b'"}'
    for method, path in routes:
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        for body in (too_much, iter([too_much[:1000], too_much[1000:]])):  # declared length, then streamed without one
            answer = client.request(method, url, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 413, (method, path, answer.status_code, answer.text[:200])
            assert answer.headers["content-type"] == "application/problem+json", (method, path)
            assert f"limit of {JSON_BODY_LIMIT} bytes" in answer.json()["detail"], (method, path)
    # a body within the limit is read as before
    answer = client.request("PATCH", "/api/v1/cases/SW20250314-000000000000", json={"description": "x" * 100},
                            headers=auth(tokens["reviewer"]))
    assert answer.status_code == 404, answer.text


def test_liveness_answers_while_every_worker_thread_is_busy_on_postgresql(tmp_path, monkeypatch, fresh_postgres_url):
    """/healthz ran on the worker threads that serve the case routes, so under a burst of case lists and exports (120
    at once took every one of them for seconds) it waited its turn and a liveness probe read a busy service as dead,
    restarting it mid-review. It answers from the event loop: here while the only worker thread is held by a case
    list."""
    import threading

    import anyio.to_thread
    from fastapi.testclient import TestClient

    from tests.api_helpers import make_app, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path, cases_url=fresh_postgres_url))
    store = app.state.ctx.store
    search, held, answered, order = store.search, threading.Event(), threading.Event(), []

    def held_search(query):
        held.set()
        answered.wait(60)  # only a bound: the order below is what the test reads
        order.append("case list")
        return search(query)

    monkeypatch.setattr(store, "search", held_search)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.portal.call(lambda: setattr(anyio.to_thread.current_default_thread_limiter(), "total_tokens", 1))
        busy = threading.Thread(target=lambda: client.get("/api/v1/cases", headers=auth(tokens["reviewer"])))
        busy.start()
        held.wait()
        alive = client.get("/healthz")
        order.append("healthz")
        answered.set()
        busy.join()
    assert alive.json() == {"status": "ok"} and order == ["healthz", "case list"]
