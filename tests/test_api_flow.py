"""The whole path through real processes: `streetwatch serve` on loopback, upload -> triage job -> case ->
confirm -> `streetwatch dispatch run --once` -> the dispatch simulator -> its signed webhook back to the API."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.api_helpers import KEY, auth
from tests.conftest import REPO, start_server, stop_process
from tests.dispatch_helpers import Sim
from tests.pg import free_port


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streetwatch.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("SW_FLOW_HOOK", "hook-secret-flow")  # the simulator subprocess signs its webhooks with it
    env = {**os.environ, "STREETWATCH_EVIDENCE_KEY": KEY, "SW_FLOW_HOOK": "hook-secret-flow", "YOLO_OFFLINE": "1"}
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
    tokens = {}
    for name, role in (("li-inspector", "inspector"), ("wang-reviewer", "reviewer")):
        made = _cli("users", "add", name, "--role", role, "--config", str(config), env=env)
        assert made.returncode == 0, made.stderr
        tokens[role] = made.stdout.strip()
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
        confirmed = client.post(f"/api/v1/cases/{case_id}/confirm", headers=reviewer, json={"note": "公交车占道"})
        assert confirmed.status_code == 200 and confirmed.json()["state"] == "queued"

        run = _cli("dispatch", "run", "--once", "--config", str(config), env=env)
        assert run.returncode == 0, run.stderr
        [received] = sim.cases("cn-dcm")
        payload = received["received"]
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
