"""Helpers for API tests: a service on temporary folders, tokens for every role, real candidate cases."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from api.accounts import Role
from api.app import create_app
from api.config import service_config
from detect.evidence.builder import BundleContext, EvidenceBuilder, ModelInfo, VerifierInfo
from detect.evidence.config import EvidenceConfig
from detect.frames import GeoPoint
from pipelines.cases.intake import Intake
from pipelines.settings import Settings
from tests.conftest import REPO

KEY = "test-key-0123456789abcdef"
MODEL = ModelInfo("yolo11n-int8dq", "ab" * 32, VerifierInfo("street-v7", "cd" * 32, "ef" * 32))  # digests as a manifest holds them
ROLES = [r.value for r in Role]


def settings_for(tmp: Path, *, dispatch: dict | None = None, cases_url: str | None = None, timezone: str | None = None,
                 **service) -> Settings:
    """Deployment settings with everything under `tmp` (SQLite unless `cases_url`, local evidence, service data);
    `timezone`: the city's (top-level), else the default.

    Upload jobs judge by detector classes alone (`verifier: none`): these tests are about the service's
    routes, jobs and cases; what the verifier makes of photos is tested in tests/test_verifier_*.py."""
    service["triage"] = {"verifier": "none", **service.get("triage", {})}
    return Settings(
        cases={"url": cases_url or f"sqlite:///{tmp}/cases.db"},
        evidence_store={"local_root": str(tmp / "evidence"), "spool_dir": str(tmp / "spool")},
        dispatch=dispatch or {},
        service={"data_dir": str(tmp / "service"), **service},
        **({"timezone": timezone} if timezone else {}),
    )


def write_cameras(tmp: Path, reference_jpg: Path) -> dict[str, Path]:
    """A cameras file with two cameras; cam-01's scene is the documented example with a reference image."""
    folder = tmp / "cameras"
    folder.mkdir()
    scene = yaml.safe_load((REPO / "docs/examples/scene-example.yaml").read_text(encoding="utf-8"))
    scene["camera_id"] = "cam-01"
    scene["reference_snapshot"] = "cam-01-reference.jpg"
    shutil.copyfile(reference_jpg, folder / "cam-01-reference.jpg")
    (folder / "cam-01.yaml").write_text(yaml.safe_dump(scene, allow_unicode=True), encoding="utf-8")
    (folder / "cam-02.yaml").write_text(yaml.safe_dump({"camera_id": "cam-02", "zones": []}), encoding="utf-8")
    cameras = {"cameras": [{"id": "cam-01", "url": "rtsp://127.0.0.1:9/cam-01", "scene": "cam-01.yaml"},
                           {"id": "cam-02", "url": "rtsp://127.0.0.1:9/cam-02", "scene": "cam-02.yaml"}]}
    (folder / "cameras.yaml").write_text(yaml.safe_dump(cameras), encoding="utf-8")
    return {"file": folder / "cameras.yaml", "scene": folder / "cam-01.yaml", "events": folder / "events.jsonl",
            "snapshots": folder / "snapshots"}


def make_app(settings: Settings, detector=None, **kw):
    """The app and one token per role (dict role -> token)."""
    app = create_app(settings, service_config(settings, "test"), detector_factory=(lambda: detector) if detector else None, **kw)
    tokens = {role: app.state.ctx.accounts.add(f"{role}-user", role)[1] for role in ROLES}
    return app, tokens


@contextmanager
def on_loopback(app) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free loopback port, as `serve` runs it, uvicorn's lines (its access log
    among them) reaching caplog: its base URL, the server stopped after."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server stopped before it started"
            threading.Event().wait(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def kept_per_job(holder) -> dict[str, int]:
    """The containers among `holder`'s attributes that hold anything, by name, and their sizes: after jobs ended,
    what a long-running server would still hold for each."""
    return {name: len(value) for name, value in vars(holder).items() if isinstance(value, dict | list | set) and value}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def draft_cases(app, bus_event, specs: list[dict]) -> list[str]:
    """Candidate cases through the real intake (evidence bundle built and stored); each spec overrides
    the event (`violation_type`, `at`, `zone_id`, `zone_kind`, `severity`, `texts`, `phones`), the bundle context (`source_kind`, `source_id`,
    `grid_cell`, `address`, `zone_polygon`) or what its bundle says saw and judged it (`model`, a ModelInfo; MODEL)."""
    ctx = app.state.ctx
    intake = Intake(ctx.store, ctx.evidence, EvidenceBuilder(EvidenceConfig(), KEY.encode(), MODEL),
                    ctx.settings.evidence_store.spool_dir)
    event, _ = bus_event
    ids = []
    for i, spec in enumerate(specs):
        ev = replace(event, violation_id=f"test:{i}:{spec.get('violation_type', event.violation_type)}",
                     violation_type=spec.get("violation_type", event.violation_type),
                     opened_at=spec.get("at", event.opened_at), at=spec.get("at", event.at),
                     zone_id=spec.get("zone_id", event.zone_id), zone_kind=spec.get("zone_kind", event.zone_kind),
                     severity=spec.get("severity", event.severity), texts=spec.get("texts", event.texts),
                     phones=spec.get("phones", event.phones))
        bundle = BundleContext(source_kind=spec.get("source_kind", "camera"), source_id=spec.get("source_id", "cam-01"),
                               grid_cell=spec.get("grid_cell", "330106001001"), address=spec.get("address", "文三路 1 号"),
                               geo=GeoPoint(30.2741, 120.1551),
                               zone_polygon=spec.get("zone_polygon", [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]))
        intake.builder.model = spec.get("model", MODEL)
        ids.append(intake.record_event(ev, bundle).id)
    return ids


DCM = {"targets": {"dcm": {"adapter": "cn-dcm", "url": "http://127.0.0.1:9/cn-dcm/cases"}}}


@pytest.fixture
def service(tmp_path, monkeypatch, bus_jpg):
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    cams = write_cameras(tmp_path, bus_jpg)
    settings = settings_for(tmp_path, dispatch=DCM, cameras_file=str(cams["file"]), camera_events=str(cams["events"]),
                            snapshot_dir=str(cams["snapshots"]), max_upload_bytes=2_000_000)
    app, tokens = make_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client, tokens, cams


def users_cli(settings: Settings, tmp: Path):
    """`streetwatch users ARGS --config FILE` through Typer's runner, FILE holding `settings` (written under `tmp`)."""
    from typer.testing import CliRunner

    from streetwatch.cli import app as cli

    config = tmp / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, ["users", *args, "--config", str(config)])
