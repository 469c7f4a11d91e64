"""Property-based requests generated from the app's own OpenAPI (schemathesis): no answer is a 500, every
error is a problem document, and every answer matches the status, content type and body schema that
/openapi.json documents for it. A bounded number of examples per operation keeps the default suite short."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance
from hypothesis import HealthCheck, given, settings

from tests.api_helpers import KEY, auth, draft_cases, make_app, settings_for, write_cameras

EXAMPLES = 12


@pytest.fixture(scope="module")
def api(tmp_path_factory, bus_event, bus_jpg):
    mp = pytest.MonkeyPatch()
    mp.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    tmp = tmp_path_factory.mktemp("schemathesis")
    cams = write_cameras(tmp, bus_jpg)
    app, tokens = make_app(settings_for(tmp, dispatch={"targets": {"dcm": {"adapter": "cn-dcm", "url": "http://127.0.0.1:9/x"}}},
                                        cameras_file=str(cams["file"]), max_upload_bytes=200_000,
                                        triage={"workers": 1, "ocr": "off"}))
    draft_cases(app, bus_event, [{}, {}])
    yield app, tokens
    app.state.ctx.close()
    mp.undo()


@pytest.mark.slow  # 18 s: fuzzes every route
def test_no_server_errors(api):
    """Each operation gets EXAMPLES generated requests (deterministic), sent with an admin token."""
    app, tokens = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=auth(tokens["admin"]))
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
            if response.status_code >= 400:
                kind = {k.lower(): v for k, v in response.headers.items()}["content-type"]
                assert (kind[0] if isinstance(kind, list) else kind) == "application/problem+json", f"{where}: {response.text[:300]}"
                body = response.json()
                assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == response.status_code
            case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                     response_schema_conformance])

        check()
