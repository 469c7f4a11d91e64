"""The embedded defaults `streetwatch demo` runs on: one folder, loopback servers, no setup by hand.

Everything is the production code started in-process: the dispatch simulator of `streetwatch
dispatch-sim` (`SimServer`) and the application of `streetwatch serve` (`create_app` under
uvicorn), each in a thread on 127.0.0.1, configured by a settings file written for the run
(SQLite case store, local evidence folder, one cn-dcm target pointing at the simulator, whose
status webhooks are signed with a secret both share, so the service accepts them; the attachment
URLs sent to it are signed with a URL key of this process, so the service serves them).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

TARGET = "demo-dcm"
REVIEWER = "demo-reviewer"
KEY_ENV = "STREETWATCH_EVIDENCE_KEY"
WEBHOOK_ENV = "STREETWATCH_DEMO_WEBHOOK_SECRET"
"""The secret the simulator signs its status webhooks with, and the service checks them with."""
RUN_STATE = ("cases.db", "cases.db-wal", "cases.db-shm", "evidence", "spool", "service", "triage", "camera-events.jsonl")
"""What each run starts afresh (media, inbox and the key are kept)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reset_run_state(out: Path) -> None:
    for name in RUN_STATE:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def evidence_key_file(out: Path) -> Path | None:
    """None when $STREETWATCH_EVIDENCE_KEY is set (it signs); else a random key kept in `out`."""
    if os.environ.get(KEY_ENV):
        return None
    path = out / "evidence.key"
    if not path.is_file():
        path.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return path


def webhook_secret() -> str:
    """The shared secret of the simulator's signed status webhooks: $STREETWATCH_DEMO_WEBHOOK_SECRET, set to a
    random one for this process when unset (the service runs in this process and reads it from there)."""
    return os.environ.setdefault(WEBHOOK_ENV, secrets.token_hex(16))


def url_key() -> str:
    """The key of evidence links and attachment URLs ($STREETWATCH_API_URL_KEY, `service.url_key_env`): set to a random
    one for this process when unset (the service and the demo's dispatcher both run here and sign with it)."""
    from pipelines.settings import URL_KEY_ENV

    return os.environ.setdefault(URL_KEY_ENV, secrets.token_hex(32))


def write_settings(out: Path, api_url: str, sim_url: str, cameras_file: Path) -> Path:
    """The deployment settings of this run (docs/cases-and-dispatch.md, docs/service.md)."""
    key_file = evidence_key_file(out)
    evidence = {"timezone": "Asia/Shanghai", "privacy_blur": True}
    if key_file is not None:
        evidence["hmac_key_file"] = str(key_file)
    settings = {
        "cases": {"url": f"sqlite:///{out / 'cases.db'}"},
        "evidence": evidence,
        "evidence_store": {"backend": "local", "local_root": str(out / "evidence"), "spool_dir": str(out / "spool"),
                           "public_base_url": f"{api_url}/attachments"},
        "dispatch": {"targets": {TARGET: {"adapter": "cn-dcm", "url": f"{sim_url}/cn-dcm/cases", "timeout_s": 10,
                                          "callback_url": f"{api_url}/api/v1/dispatch/{TARGET}/webhook",
                                          "webhook_secret_env": WEBHOOK_ENV}}},
        "service": {"data_dir": str(out / "service"), "cameras_file": str(cameras_file),
                    "camera_events": str(out / "camera-events.jsonl"),
                    "snapshot_dir": str(out / "snapshots"), "triage": {"workers": 1, "ocr": "auto"}},
    }
    path = out / "settings.yaml"
    header = "# Written by `streetwatch demo` for this run; use it with any command: --config " + str(path) + "\n"
    path.write_text(header + yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Simulator:
    """`streetwatch dispatch-sim` in a thread."""

    server: object
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self) -> list[dict]:
        with self.server.state.lock:
            return [dict(c) for c in self.server.state.cases.values()]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_simulator(webhook_secret: str) -> Simulator:
    """The simulator, signing its status webhooks with `webhook_secret` (the service accepts them by it)."""
    from pipelines.dispatch.simulator import Faults, SimServer, SimState

    server = SimServer("127.0.0.1", 0, SimState(faults=Faults(fail_rate=0.0), webhook_secret=webhook_secret))
    thread = threading.Thread(target=server.serve_forever, name="dispatch-sim", daemon=True)
    thread.start()
    return Simulator(server, thread)


@dataclass
class Service:
    """`streetwatch serve` (uvicorn + the API app) in a thread."""

    server: object
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_service(settings_path: Path, port: int, detector) -> Service:
    """The API on 127.0.0.1:`port`, sharing the demo's detector; waits until it answers /healthz."""
    import httpx
    import uvicorn

    from api.app import create_app
    from api.config import load_service

    settings, service = load_service(settings_path)
    app = create_app(settings, service, detector_factory=lambda: detector)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the service could not start on {url} (see the log above)")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return Service(server, thread, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service did not answer on {url} within 30 s")


def reviewer_token(settings_path: Path) -> str:
    """A fresh reviewer token for the demo reviewer (an older one is revoked): shown once."""
    from api.accounts import AccountError, Accounts, Role
    from pipelines.settings import load_settings

    accounts = Accounts(load_settings(settings_path).cases.url)
    try:
        accounts.revoke(REVIEWER)
    except AccountError:
        pass
    _, token = accounts.add(REVIEWER, Role.REVIEWER)
    return token
