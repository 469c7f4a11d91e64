"""The whole path through real processes: `streetwatch serve` on loopback, upload -> triage job -> case ->
confirm -> `streetwatch dispatch run --once` -> the dispatch simulator -> its signed webhook back to the API;
and the signed attachment URLs the dispatcher sends, as the service checks them."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from urllib.parse import unquote

import httpx
import pytest
import yaml

from api.accounts import Accounts
from pipelines.cases import CaseStore
from pipelines.evidence_store import LocalEvidenceStore
from pipelines.settings import URL_KEY_ENV
from pipelines.url_signing import ATTACHMENT, UrlSigner
from tests.api_helpers import KEY, auth
from tests.conftest import REPO, start_server, stop_process
from tests.dispatch_helpers import Sim, queue_cases, small_event
from tests.pg import free_port

URL_KEY = "url-key-0123456789abcdef-flow"


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streetwatch.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def world(tmp_path, monkeypatch, request):
    """serve, the simulator and a settings file; the URL key (`request.param`, default URL_KEY; None: unset)
    is in the environment of both `serve` and `dispatch run`, as docs/service.md says to deploy them."""
    monkeypatch.setenv("SW_FLOW_HOOK", "hook-secret-flow")  # the simulator subprocess signs its webhooks with it
    url_key = getattr(request, "param", URL_KEY)
    env = {**{k: v for k, v in os.environ.items() if k != URL_KEY_ENV}, **({URL_KEY_ENV: url_key} if url_key else {}),
           "STREETWATCH_EVIDENCE_KEY": KEY, "SW_FLOW_HOOK": "hook-secret-flow", "YOLO_OFFLINE": "1"}
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    sim = Sim(tmp_path, "--fail-rate", "0", "--webhook-secret-env", "SW_FLOW_HOOK")
    settings = {
        "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool"),
                           "public_base_url": f"{api}/attachments"},
        "dispatch": {"targets": {"dcm": {"adapter": "cn-dcm", "url": f"{sim.base}/cn-dcm/cases", "timeout_s": 5,
                                         "callback_url": f"{api}/api/v1/dispatch/dcm/webhook",
                                         "webhook_secret_env": "SW_FLOW_HOOK"}}},
        "service": {"data_dir": str(tmp_path / "service"), "triage": {"workers": 1, "ocr": "off"}},
    }
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    # The tokens are made in this process: a `users add` subprocess costs seconds of start-up per token, and the
    # command itself is tested in test_api_cameras and test_accounts.
    accounts = Accounts(settings["cases"]["url"])
    tokens = {role: accounts.add(name, role)[1] for name, role in (("li-inspector", "inspector"),
                                                                   ("wang-reviewer", "reviewer"))}
    accounts.engine.dispose()
    server = start_server([sys.executable, "-m", "streetwatch.cli", "serve", "--port", str(api_port), "--config", str(config)],
                          "127.0.0.1", api_port, tmp_path / "serve.log", timeout_s=60, cwd=REPO, env=env)
    try:
        yield api, sim, config, env, tokens
    finally:
        stop_process(server)
        sim.stop()


def test_upload_triage_confirm_dispatch_and_feedback(world, bus_jpg):
    api, sim, config, env, tokens = world
    with httpx.Client(base_url=api, timeout=30) as client:
        inspector, reviewer = auth(tokens["inspector"]), auth(tokens["reviewer"])
        created = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 180
        while (job := client.get(f"/api/v1/triage/jobs/{job_id}", headers=inspector).json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            assert client.get("/healthz").status_code == 200  # the event loop answers while triage runs
            time.sleep(0.3)
        assert job["state"] == "done", job
        [drafted] = job["cases"]
        case_id = drafted["case_id"]

        queue = client.get("/api/v1/cases", headers=reviewer, params={"state": "candidate", "reviewed": "false"}).json()
        assert [c["id"] for c in queue["items"]] == [case_id]
        # bus.jpg has no GPS: the case has no place, which a platform needs to send a handler; the reviewer adds it
        placed = client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"address": "杭州市西湖区文三路 1 号"})
        assert placed.status_code == 200 and placed.json()["address"] == "杭州市西湖区文三路 1 号", placed.text
        confirmed = client.post(f"/api/v1/cases/{case_id}/confirm", headers=reviewer, json={"note": "公交车占道"})
        assert confirmed.status_code == 200 and confirmed.json()["state"] == "queued"

        run = _cli("dispatch", "run", "--once", "--config", str(config), env=env)
        assert run.returncode == 0, run.stderr
        [received] = sim.cases("cn-dcm")
        payload = received["received"]
        assert payload["address"] == "杭州市西湖区文三路 1 号"
        assert payload["externalId"] == case_id and payload["callbackUrl"].endswith("/api/v1/dispatch/dcm/webhook")
        attachment = httpx.get(payload["attachments"][0]["url"], timeout=10)  # the platform fetches our evidence
        assert attachment.status_code == 200 and attachment.headers["content-type"] == "image/jpeg"

        detail = client.get(f"/api/v1/cases/{case_id}", headers=reviewer).json()
        assert detail["case"]["state"] == "submitted" and detail["deliveries"][0]["status"] == "delivered"
        ref = detail["case"]["dispatch_ref"]

        answer = sim.set_status(ref, "accepted")  # their side opens the case and calls our webhook, signed
        assert answer["webhook"]["status_code"] == 200, answer
        assert client.get(f"/api/v1/cases/{case_id}", headers=reviewer).json()["case"]["state"] == "accepted"
        sim.set_status(ref, "handled", note="车辆已驶离")
        final = client.get(f"/api/v1/cases/{case_id}", headers=reviewer).json()
        assert final["case"]["state"] == "closed"  # a photo case has no camera to re-check
        assert [h["to"] for h in final["history"]] == ["candidate", "queued", "submitted", "accepted", "closed"]
        assert final["history"][1]["actor"] == "wang-reviewer" and final["history"][-1]["reason"] == "车辆已驶离"


def _dispatch_one(world, bus_event) -> tuple[str, list[dict], subprocess.CompletedProcess]:
    """One case queued for `dcm` through the real intake into the service's store, sent by `dispatch run --once`:
    its id, the attachments of the payload the platform received, and the run."""
    api, sim, config, env, _ = world
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    store = CaseStore(settings["cases"]["url"])
    try:
        [case_id] = queue_cases(store, LocalEvidenceStore(settings["evidence_store"]["local_root"]),
                                settings["evidence_store"]["spool_dir"], small_event(bus_event), 1, "dcm")
    finally:
        store.close()
    run = _cli("dispatch", "run", "--once", "--config", str(config), env=env)
    assert run.returncode == 0, run.stderr
    [received] = [c["received"] for c in sim.cases("cn-dcm") if c["received"]["externalId"] == case_id]
    return case_id, received["attachments"], run


@pytest.mark.slow  # 12 s: its own service, dispatcher and platform; the default suite's ~15-minute budget
def test_attachment_urls_are_signed_and_a_case_id_alone_opens_nothing(world, bus_event):
    api, *_ = world
    case_id, attachments, run = _dispatch_one(world, bus_event)
    assert URL_KEY_ENV not in run.stderr  # the key is set: no warning
    assert len(attachments) >= 2
    first, second = attachments[0], attachments[1]
    got = httpx.get(first["url"], timeout=10)  # what the platform does with the URL in the payload
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == first["sha256"]

    base, query = first["url"].split("?")
    assert base.startswith(f"{api}/attachments/{case_id}/")
    path = unquote(base.removeprefix(f"{api}/attachments/{case_id}/"))
    params = dict(p.split("=") for p in query.split("&"))
    past = UrlSigner(URL_KEY.encode(), 60).query(case_id, path, scope=ATTACHMENT, now=time.time() - 3600)
    evidence_link = UrlSigner(URL_KEY.encode(), 60).query(case_id, path)  # the case detail's kind of link
    refused = {
        "unsigned": httpx.get(base, timeout=10),
        "tampered": httpx.get(f"{base}?exp={params['exp']}&sig={params['sig'][:-1]}{'0' if params['sig'][-1] != '0' else '1'}", timeout=10),
        "stretched": httpx.get(f"{base}?exp={int(params['exp']) + 60}&sig={params['sig']}", timeout=10),
        "other file": httpx.get(second["url"].split("?")[0] + "?" + query, timeout=10),
        "expired": httpx.get(f"{base}?{past}", timeout=10),
        "evidence link": httpx.get(f"{base}?{evidence_link}", timeout=10),
    }
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 403)
    reasons = {name: r.json()["detail"] for name, r in refused.items()}
    assert reasons["unsigned"] == "附件链接被拒绝：链接未签名（缺少 exp 和 sig） attachment link refused: link not signed (no exp and sig)"
    assert reasons["expired"] == "附件链接被拒绝：链接已过期 attachment link refused: link expired"
    assert reasons["tampered"] == reasons["stretched"] == reasons["other file"] == reasons["evidence link"] == \
        "附件链接被拒绝：签名无效 attachment link refused: bad signature"
    assert httpx.get(second["url"], timeout=10).status_code == 200


@pytest.mark.slow  # 12 s: its own service, dispatcher and platform; the default suite's ~15-minute budget
def test_the_access_log_keeps_no_signature_of_a_link(world, bus_event, tmp_path):
    """serve's access log kept every signed link it served, an attachment link opening its file for 7 days to whoever
    reads the log; their sig is written ***, the expiry and other routes' queries kept."""
    api, _, _, _, tokens = world
    case_id, attachments, _ = _dispatch_one(world, bus_event)
    link = attachments[0]["url"]
    base, query = link.split("?")
    path = unquote(base.removeprefix(f"{api}/attachments/{case_id}/"))
    evidence = UrlSigner(URL_KEY.encode(), 60).url(case_id, path)
    assert httpx.get(link, timeout=10).status_code == 200
    httpx.get(f"{api}{evidence}", timeout=10)
    assert httpx.get(f"{api}/api/v1/cases?limit=5&sig=not-a-link", headers=auth(tokens["reviewer"]), timeout=10).status_code == 200
    log = (tmp_path / "serve.log").read_text(encoding="utf-8")
    signatures = [dict(p.split("=") for p in q.split("&"))["sig"] for q in (query, evidence.split("?")[1])]
    assert not [s for s in signatures if s in log], log
    exp = query.split("&")[0]
    assert f'"GET {base.removeprefix(api)}?{exp}&sig=*** HTTP/1.1" 200' in log, log
    assert f'"GET {evidence.split("&")[0]}&sig=*** HTTP/1.1"' in log, log
    assert '"GET /api/v1/cases?limit=5&sig=not-a-link HTTP/1.1" 200' in log, log
    # uvicorn's lines carry their time as ours do (a service's log in a file had none on its access lines)
    served = [line for line in log.splitlines() if "HTTP/1.1" in line or "Uvicorn running on" in line]
    assert served and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} INFO", line) for line in served), served[:3]


@pytest.mark.slow  # 11 s: its own service, dispatcher and platform; the default suite's ~15-minute budget
@pytest.mark.parametrize("world", [None], indirect=True)
def test_without_a_url_key_attachments_stay_unsigned_and_both_processes_say_so(world, bus_event, tmp_path):
    """An install that never set the key keeps working (the platform fetches as before), but not silently."""
    api, *_ = world
    case_id, attachments, run = _dispatch_one(world, bus_event)
    assert "?" not in attachments[0]["url"]
    assert httpx.get(attachments[0]["url"], timeout=10).status_code == 200
    for log in (run.stderr, (tmp_path / "serve.log").read_text(encoding="utf-8")):
        assert f"evidence_store.public_base_url is set but ${URL_KEY_ENV} (service.url_key_env) is not" in log
