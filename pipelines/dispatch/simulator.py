"""A dispatch-system simulator speaking both protocols, with faults on demand (tests, demo, benchmarks).

    POST /cn-dcm/cases                 cn-dcm JSON case (validated against our JSON schema) -> {"taskNumber"}
    GET  /cn-dcm/cases?externalId=ID   the cases they hold with that external id: [{"taskNumber", "externalId", "status"}]
    POST /open311/requests.json        GeoReport v2 form -> [{"service_request_id"}] (or [{"token"}])
    GET  /open311/requests.json        GeoReport v2 search: service_request_id, service_code, start_date, end_date, status
    GET  /open311/requests/{id}.json   status: open | closed
    GET  /open311/tokens/{token}.json  token -> service_request_id
    GET  /open311/services.json        the taxonomy's service codes
    POST /cn-dcm/cases/{ref}/verification  a re-check result for a task (kept under the case's `verifications`)
    POST /sim/cases/{ref}/{status}     move a case on "their" side: accepted | rejected | handled | closed;
                                       cn-dcm cases are reported to the webhook (callbackUrl or --webhook-url),
                                       signed with --webhook-secret-env (with --webhook-timestamp-header, the
                                       header carries the unix time and the signature covers "<time>.<body>")
    GET  /sim/received                 everything received, for inspection
    POST /sim/faults                   change fail_rate / latency_ms / modes / stall_s / honour_idempotency /
                                       envelope_errors while running

Like a careful real platform it honours `Idempotency-Key` (a repeated key gets the first answer
and creates nothing) unless told not to (`--ignore-idempotency-key`: every POST creates a case,
as many real platforms do). Faults hit case-creating POSTs and look-ups (GET by external id or
request search) with probability `fail_rate`; the mode is drawn from `modes`: `error` (500,
nothing stored), `error-after` (stored, then 500), `close` (stored, then the connection is closed
without an answer), `garbage` (stored, then an HTML body with 200), `stall` (the answer comes
after `stall_s`, later than any sane client timeout; stored). A look-up stores nothing, so there
`error-after` is a plain 500. With `envelope_errors` (`--envelope-errors`) every cn-dcm error is
answered as many 数字城管 platforms answer them: HTTP 200 with the status as the envelope's code,
`{"code": 400, "msg": "...", "data": null}`. Like common GeoReport v2 servers it keeps the first
4,000 characters of an Open311 `description` (`OPEN311_DESCRIPTION_MAX`) and drops the rest without a
word. With a city's dialect (`field_map`, `extra_fields`: `dispatch-sim --config FILE --target NAME` reads them from
a cn-dcm target) it speaks the names that target's platform does, as the settings rename them: the case it is posted,
its answer's task number, the look-up's parameter and answer, the re-check reports and the webhook calls; and it
refuses a case without the target's constant fields, so a copied field map is tested before the platform sees it.
Everything is in memory: restarting the simulator forgets it.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

FAULT_MODES = ("error", "error-after", "close", "garbage", "stall")
STATUSES = ("accepted", "rejected", "handled", "closed")
OPEN311_DESCRIPTION_MAX = 4000  # what common GeoReport v2 servers keep of a description (the rest dropped silently)


@dataclass
class Faults:
    fail_rate: float = 0.0
    latency_ms: float = 0.0
    modes: tuple[str, ...] = FAULT_MODES
    stall_s: float = 30.0
    honour_idempotency: bool = True
    envelope_errors: bool = False  # cn-dcm errors as HTTP 200 {"code": <status>, "msg"} instead of the HTTP status

    def update(self, data: dict[str, Any]) -> None:
        if "fail_rate" in data:
            self.fail_rate = _rate(float(data["fail_rate"]))
        if "latency_ms" in data:
            self.latency_ms = max(0.0, float(data["latency_ms"]))
        if "modes" in data:
            self.modes = parse_modes(data["modes"])
        if "stall_s" in data:
            self.stall_s = max(0.0, float(data["stall_s"]))
        if "honour_idempotency" in data:
            self.honour_idempotency = bool(data["honour_idempotency"])
        if "envelope_errors" in data:
            self.envelope_errors = bool(data["envelope_errors"])


def _rate(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"fail rate must be within 0..1, got {value}")
    return value


def parse_modes(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in (value.split(",") if isinstance(value, str) else value) if m.strip())
    unknown = [m for m in modes if m not in FAULT_MODES]
    if unknown or not modes:
        raise ValueError(f"fault modes must be some of {', '.join(FAULT_MODES)}; got {', '.join(unknown) or 'none'}")
    return modes


@dataclass
class SimState:
    """What the simulator holds; one lock around all of it."""

    faults: Faults
    api_key: str | None = None
    open311_token: bool = False
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_timestamp_header: str | None = None  # send the unix time in it and sign "<time>.<body>"
    seed: int | None = None
    field_map: dict[str, str] = field(default_factory=dict)  # a cn-dcm target's dialect: our field name -> theirs
    extra_fields: dict[str, Any] = field(default_factory=dict)  # constant fields that target adds, required here
    lock: threading.Lock = field(default_factory=threading.Lock)
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref -> record
    by_key: dict[str, tuple[int, str]] = field(default_factory=dict)  # idempotency key -> (status, body)
    tokens: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {"posts": 0, "replayed": 0, "faults": 0, "refused": 0,
                                                               "lookups": 0, "found": 0})
    rng: random.Random = field(default_factory=random.Random)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    def next_ref(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{datetime.now(UTC):%Y%m%d}{self._seq:06d}"

    def snapshot(self) -> dict[str, Any]:
        return {"cases": list(self.cases.values()), "counters": dict(self.counters),
                "faults": {"fail_rate": self.faults.fail_rate, "latency_ms": self.faults.latency_ms,
                           "modes": list(self.faults.modes), "stall_s": self.faults.stall_s,
                           "honour_idempotency": self.faults.honour_idempotency,
                           "envelope_errors": self.faults.envelope_errors}}

    def theirs(self, ours: str) -> str:
        """A cn-dcm field's name in the city's dialect (`field_map`), ours when it renames none."""
        return self.field_map.get(ours, ours)

    def from_wire(self, received: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A cn-dcm body in the city's dialect back in our names, without its constant fields, and what is wrong with
        those: a constant field missing or with another value, as their platform would refuse it."""
        ours = {v: k for k, v in self.field_map.items()}
        problems = [f"{name}: expected {value!r}, got {received.get(name, 'nothing')!r}"
                    for name, value in self.extra_fields.items() if received.get(name) != value]
        return {ours.get(k, k): v for k, v in received.items() if k not in self.extra_fields}, problems

    def draw_fault(self) -> str | None:
        """The fault for this request, if the dice say so (caller holds the lock)."""
        fault = self.rng.choice(self.faults.modes) if self.rng.random() < self.faults.fail_rate else None
        if fault:
            self.counters["faults"] += 1
        return fault


def _services() -> list[dict[str, Any]]:
    from detect.taxonomy import load_taxonomy

    return [{"service_code": t.open311_service_code, "service_name": t.name_en, "description": t.name_zh,
             "metadata": False, "type": "realtime", "keywords": t.id, "group": t.major_class}
            for t in load_taxonomy().types.values()]


class _Handler(BaseHTTPRequestHandler):
    server: SimServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    # ---- plumbing -------------------------------------------------------------------------

    def _reply(self, status: int, body: Any, content_type: str = "application/json; charset=utf-8") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, body: Any, protocol: str) -> None:
        """An error answer: `status` with `body`, or for cn-dcm with `envelope_errors`, HTTP 200 with the
        status as the envelope's code and the body's message as its msg."""
        if protocol == "cn-dcm" and self.server.state.faults.envelope_errors:
            message = body.get("message") or body.get("error") if isinstance(body, dict) else str(body)
            return self._reply(200, {"code": status, "msg": message, "data": None})
        self._reply(status, body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._latency()
        url = urlparse(self.path)
        path = url.path
        state = self.server.state
        if path in ("/cn-dcm/cases", "/open311/requests.json"):
            return self._look_up(path, {k: v[0] for k, v in parse_qs(url.query).items()})
        if path == "/sim/received":
            with state.lock:
                return self._reply(200, state.snapshot())
        if path == "/open311/services.json":
            return self._reply(200, self.server.services)
        if path.startswith("/open311/requests/") and path.endswith(".json"):
            ref = path.removeprefix("/open311/requests/").removesuffix(".json")
            with state.lock:
                case = state.cases.get(ref)
            if case is None or case["protocol"] != "open311":
                return self._reply(404, [{"code": 404, "description": f"no service request {ref}"}])
            return self._reply(200, [self._open311_request(ref, case)])
        if path.startswith("/open311/tokens/") and path.endswith(".json"):
            token = path.removeprefix("/open311/tokens/").removesuffix(".json")
            with state.lock:
                ref = state.tokens.get(token)
            if ref is None:
                return self._reply(404, [{"code": 404, "description": f"no token {token}"}])
            return self._reply(200, [{"service_request_id": ref, "token": token}])
        self._reply(404, {"error": f"no route GET {path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._latency()
        path = urlparse(self.path).path
        body = self._body()
        if path == "/cn-dcm/cases":
            return self._create("cn-dcm", body)
        if path == "/open311/requests.json":
            return self._create("open311", body)
        if path == "/sim/faults":
            try:
                with self.server.state.lock:
                    self.server.state.faults.update(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                return self._reply(400, {"error": str(exc)})
            return self._reply(200, self.server.state.snapshot()["faults"])
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["cn-dcm", "cases"] and parts[3] == "verification":
            return self._verification(parts[2], body)
        if len(parts) == 4 and parts[:2] == ["sim", "cases"] and parts[3] in STATUSES:
            return self._set_status(parts[2], parts[3], body)
        self._reply(404, {"error": f"no route POST {path}"})

    def _latency(self) -> None:
        if self.server.state.faults.latency_ms:
            time.sleep(self.server.state.faults.latency_ms / 1000)

    # ---- case creation --------------------------------------------------------------------

    def _look_up(self, path: str, query: dict[str, str]) -> None:
        """What a real platform offers for finding a case again: cn-dcm by external id, Open311 the
        GeoReport v2 request search. Subject to faults like any request."""
        state = self.server.state
        with state.lock:
            state.counters["lookups"] += 1
            fault = state.draw_fault()
            if path == "/cn-dcm/cases":
                wanted = query.get(state.theirs("externalId"))
                if not wanted:
                    return self._error(400, {"code": 400, "message": f"{state.theirs('externalId')} is required"}, "cn-dcm")
                answer: Any = [{state.theirs("taskNumber"): c["ref"], state.theirs("externalId"): c["external_id"],
                                state.theirs("status"): c["status"]}
                               for c in state.cases.values() if c["protocol"] == "cn-dcm" and c["external_id"] == wanted]
            else:
                answer = [self._open311_request(ref, c) for ref, c in state.cases.items()
                          if c["protocol"] == "open311" and _matches(c, ref, query)]
            state.counters["found"] += bool(answer)
        if fault in ("error", "error-after"):
            return self._error(500, {"error": "injected failure"}, "cn-dcm" if path == "/cn-dcm/cases" else "open311")
        if fault == "close":
            self.close_connection = True
            return
        if fault == "garbage":
            return self._reply(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if fault == "stall":
            time.sleep(state.faults.stall_s)
        self._reply(200, answer)

    @staticmethod
    def _open311_request(ref: str, case: dict[str, Any]) -> dict[str, Any]:
        return {"service_request_id": ref, "status": "closed" if case["status"] in ("handled", "closed") else "open",
                "status_notes": case.get("note"), "service_code": case["received"]["service_code"],
                "description": case["received"].get("description"), "requested_datetime": case["received_at"],
                "address": case["received"].get("address_string"), "lat": case["received"].get("lat"),
                "long": case["received"].get("long")}

    def _create(self, protocol: str, body: bytes) -> None:
        state = self.server.state
        key = self.headers.get("Idempotency-Key")
        with state.lock:
            state.counters["posts"] += 1
            if key and state.faults.honour_idempotency and key in state.by_key:  # a retry: the first answer, nothing new
                state.counters["replayed"] += 1
                status, answer = state.by_key[key]
                return self._reply(status, answer.encode())
            fault = state.draw_fault()
        if fault == "error":
            return self._error(500, {"error": "injected failure (nothing stored)"}, protocol)
        received, problem = (self._cn_dcm(body) if protocol == "cn-dcm" else self._open311(body))
        if problem is not None:
            with state.lock:
                state.counters["refused"] += 1
            return self._error(400, problem, protocol)
        with state.lock:
            ref = state.next_ref("DCM" if protocol == "cn-dcm" else "311-")
            state.cases[ref] = {"ref": ref, "protocol": protocol, "idempotency_key": key, "status": "received",
                                "received_at": datetime.now(UTC).isoformat(), "received": received,
                                "external_id": received.get("externalId") or received.get("attribute[streetwatch_case_id]")}
            if protocol == "cn-dcm":
                answer: Any = {"code": 0, "message": "ok", state.theirs("taskNumber"): ref}
            elif state.open311_token:
                token = hashlib.sha256(ref.encode()).hexdigest()[:12]
                state.tokens[token] = ref
                answer = [{"token": token}]
            else:
                answer = [{"service_request_id": ref, "service_notice": "received by dispatch-sim"}]
            text = json.dumps(answer, ensure_ascii=False)
            if key:
                state.by_key[key] = (200, text)
        if fault == "error-after":
            return self._error(500, {"error": "injected failure (stored)"}, protocol)
        if fault == "close":
            self.close_connection = True
            return
        if fault == "garbage":
            return self._reply(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if fault == "stall":
            time.sleep(state.faults.stall_s)
        self._reply(200, text.encode())

    def _cn_dcm(self, body: bytes) -> tuple[dict[str, Any], Any]:
        try:
            wire = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {}, {"code": 400, "message": f"body is not JSON: {exc}"}
        if not isinstance(wire, dict):
            return {}, {"code": 400, "message": f"body is a JSON {type(wire).__name__}, not an object"}
        payload, problems = self.server.state.from_wire(wire)
        errors = sorted(self.server.validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
        where = lambda e: "/".join(map(str, e.absolute_path)) or "(top)"  # noqa: E731
        problems += [f"{where(e)}: {e.message}" for e in errors[:10]]
        if problems:
            return {}, {"code": 400, "message": "; ".join(problems)}
        return payload, None

    def _open311(self, body: bytes) -> tuple[dict[str, Any], Any]:
        """GeoReport v2 POST Service Request rules: api_key, service_code, and a location are required."""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        problems = []
        expected = self.server.state.api_key
        if not form.get("api_key") or (expected and form["api_key"] != expected):
            problems.append("api_key missing or invalid")
        codes = {s["service_code"] for s in self.server.services}
        if form.get("service_code") not in codes:
            problems.append(f"service_code {form.get('service_code')!r} unknown")
        has_point = bool(form.get("lat") and form.get("long"))
        if not (has_point or form.get("address_string") or form.get("address_id")):
            problems.append("a location is required: lat and long, address_string or address_id")
        if has_point:
            try:
                if not (-90 <= float(form["lat"]) <= 90 and -180 <= float(form["long"]) <= 180):
                    problems.append("lat/long out of range")
            except ValueError:
                problems.append("lat/long are not numbers")
        if form.get("media_url") and not form["media_url"].startswith(("http://", "https://")):
            problems.append("media_url must be an http(s) URL")
        if problems:
            return {}, [{"code": 400, "description": "; ".join(problems)}]
        if "description" in form:
            form["description"] = form["description"][:OPEN311_DESCRIPTION_MAX]
        return form, None

    def _verification(self, ref: str, body: bytes) -> None:
        """A re-check result for one of our tasks (cn-dcm): kept with the case; a repeated key changes nothing."""
        state = self.server.state
        try:
            report, problems = state.from_wire(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            return self._error(400, {"code": 400, "message": f"body is not a JSON object: {exc}"}, "cn-dcm")
        problems += [f"{k} missing" for k in ("taskNumber", "checkType", "result", "checkTime") if not isinstance(report, dict) or not report.get(k)]
        if not problems and report["result"] not in ("cleared", "still_present"):
            problems.append(f"result {report['result']!r} is not cleared or still_present")
        if not problems and report["taskNumber"] != ref:
            problems.append(f"taskNumber {report['taskNumber']!r} differs from the URL's {ref!r}")
        if problems:
            return self._error(400, {"code": 400, "message": "; ".join(problems)}, "cn-dcm")
        key = self.headers.get("Idempotency-Key")
        with state.lock:
            case = state.cases.get(ref)
            if case is None or case["protocol"] != "cn-dcm":
                return self._error(404, {"code": 404, "message": f"no task {ref}"}, "cn-dcm")
            done = case.setdefault("verifications", [])
            if not (key and any(v.get("idempotency_key") == key for v in done)):
                done.append({**report, "idempotency_key": key, "received_at": datetime.now(UTC).isoformat()})
        self._reply(200, {"code": 0, "message": "ok"})

    # ---- "their side" moves a case --------------------------------------------------------

    def _set_status(self, ref: str, status: str, body: bytes) -> None:
        state = self.server.state
        try:
            note = (json.loads(body) if body else {}).get("note")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return self._reply(400, {"error": "body must be a JSON object such as {\"note\": \"...\"}"})
        with state.lock:
            case = state.cases.get(ref)
            if case is None:
                return self._reply(404, {"error": f"no case {ref}"})
            case["status"], case["note"] = status, note
            callback = case["received"].get("callbackUrl") or state.webhook_url
            external = case["external_id"]
        answer: dict[str, Any] = {"ref": ref, "status": status}
        if case["protocol"] == "cn-dcm" and callback:
            answer["webhook"] = self._webhook(callback, {state.theirs("taskNumber"): ref, state.theirs("externalId"): external,
                                                          state.theirs("status"): status, state.theirs("note"): note})
        self._reply(200, answer)

    def _webhook(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        from pipelines.dispatch.webhook import SIGNATURE_HEADER, sign

        state = self.server.state
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if state.webhook_secret:
            stamp = str(int(time.time())) if state.webhook_timestamp_header else None
            if stamp is not None:
                headers[state.webhook_timestamp_header] = stamp
            headers[SIGNATURE_HEADER] = sign(state.webhook_secret, body, stamp)
        try:
            answer = httpx.post(url, content=body, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            return {"url": url, "error": str(exc)}
        return {"url": url, "status_code": answer.status_code}


def _matches(case: dict[str, Any], ref: str, query: dict[str, str]) -> bool:
    """GeoReport v2 GET requests.json filters (dates are ISO 8601; a request is listed from when it was received)."""
    if "service_request_id" in query and ref not in query["service_request_id"].split(","):
        return False
    if "service_code" in query and case["received"].get("service_code") != query["service_code"]:
        return False
    status = "closed" if case["status"] in ("handled", "closed") else "open"
    if "status" in query and status not in query["status"].split(","):
        return False
    received = datetime.fromisoformat(case["received_at"])
    try:
        if "start_date" in query and received < datetime.fromisoformat(query["start_date"]):
            return False
        if "end_date" in query and received > datetime.fromisoformat(query["end_date"]):
            return False
    except ValueError:
        return False
    return True


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, state: SimState, verbose: bool = False):
        import jsonschema

        from pipelines.dispatch.adapters import SCHEMA_PATH

        self.state, self.verbose = state, verbose
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        self.validator = jsonschema.Draft202012Validator(schema)
        self.services = _services()
        super().__init__((host, port), _Handler)
