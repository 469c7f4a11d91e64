"""Shared test fixtures: offline Ultralytics settings, real photos, the shared COCO weights."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pipelines.retrain.dataset import Dataset

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / ".cache" / "ultralytics"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from detect.runtime_env import prepare_ultralytics_env  # noqa: E402

prepare_ultralytics_env()

SHARED = Path(os.environ.get("STREETWATCH_SHARED", REPO.parent / "shared"))

#: Debian's Chromium (scripts/install-system-deps.sh) and the flags that keep it headless and off
#: the network (no background fetches, updates or sync on this offline machine).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _ultralytics_assets() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        pytest.fail("ultralytics is not installed: run `make test` (it installs '.[all]')")
    return Path(spec.origin).parent / "assets"


@pytest.fixture(scope="session")
def bus_jpg() -> Path:
    """Real street photo shipped inside the ultralytics package: a bus and four people."""
    return _ultralytics_assets() / "bus.jpg"


@pytest.fixture(scope="session")
def zidane_jpg() -> Path:
    return _ultralytics_assets() / "zidane.jpg"


@pytest.fixture(scope="session")
def real_sample_dir() -> Path:
    """../shared/datasets/real-sample: small real labelled street photo sets (never committed)."""
    path = SHARED / "datasets" / "real-sample"
    if not path.is_dir():
        pytest.fail(f"real photo sample not found at {path}; set STREETWATCH_SHARED to the shared folder")
    return path


@pytest.fixture(scope="session")
def real_photos(real_sample_dir, bus_jpg, zidane_jpg) -> list[Path]:
    """A small fixed mix of real street photos: ultralytics' two plus 3 garbage and 3 facade shots."""
    picks = [bus_jpg, zidane_jpg]
    for name in ("street-garbage", "facades-ads"):
        picks += sorted((real_sample_dir / name / "images").glob("*.jpg"))[:3]
    return picks


@pytest.fixture(scope="session")
def onnx_detector():
    """The default CPU detector (ONNX Runtime, dynamic-shape export of yolo11n), built once."""
    from detect.engine import load_detector

    return load_detector("yolo11n", backend="onnx")


@pytest.fixture(scope="session")
def torch_detector():
    from detect.engine import load_detector

    return load_detector("yolo11n", backend="torch")


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1 (initdb + pg_ctl in a temp dir) for this test session.

    The folder is a plain /tmp one, not pytest's: as root the server runs as `postgres`, which
    cannot enter pytest's private (0700) temp root.
    """
    import shutil
    import tempfile

    from tests.pg import pg_bin, postgres_server

    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb/pg_ctl) are not installed: run scripts/install-system-deps.sh")
    root = Path(tempfile.mkdtemp(prefix="streetwatch-pg-"))
    try:
        with postgres_server(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_postgres_url(postgres_url):
    """A new, empty database on the session's PostgreSQL server."""
    return new_database(postgres_url)


@pytest.fixture
def coco_dataset(bus_jpg, zidane_jpg, tmp_path, monkeypatch) -> Dataset:
    """bus.jpg and zidane.jpg labelled by hand in COCO JSON (person, bus), imported as a version (the evaluation set of
    the gate's tests)."""
    import json
    import shutil

    from typer.testing import CliRunner

    from pipelines.retrain.dataset import Dataset
    from streetwatch.cli import app

    monkeypatch.setenv("STREETWATCH_MODELS", str(tmp_path / "models"))
    photos = tmp_path / "coco" / "images"
    photos.mkdir(parents=True)
    shutil.copy(bus_jpg, photos)
    shutil.copy(zidane_jpg, photos)
    coco = {
        "images": [{"id": 1, "file_name": "bus.jpg", "width": 810, "height": 1080},
                   {"id": 2, "file_name": "zidane.jpg", "width": 1280, "height": 720},
                   {"id": 3, "file_name": "lost.jpg", "width": 640, "height": 480}],
        "categories": [{"id": 1, "name": "person"}, {"id": 6, "name": "bus"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 6, "bbox": [0, 230, 800, 500]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [48, 398, 194, 506]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [670, 390, 140, 490]},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [745, 40, 405, 672]},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [120, 195, 1010, 523]},
            {"id": 6, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5]},
        ],
    }
    ann = tmp_path / "coco" / "instances.json"
    ann.write_text(json.dumps(coco))
    result = CliRunner().invoke(app, ["data", "import", str(ann), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "instances.json: annotation 6: unknown category_id 3 (wrong class count?)" in result.output
    assert "lost.jpg: listed in instances.json (image id 3) but not found" in result.output
    return Dataset(tmp_path / "ds")


def new_database(postgres_url: str) -> str:
    """Create a new, empty database on the server of `postgres_url`; returns its URL."""
    import uuid

    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"



def start_server(args: list[str], host: str, port: int, log: Path, timeout_s: float = 20.0, **popen):
    """Start a server subprocess (output to `log`, never an unread pipe) and wait until it listens.

    Fails the test with the server's output if it exits first or does not listen in time.
    """
    import socket
    import subprocess
    import time

    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **popen)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{args[0]} exited with {proc.returncode} before listening on {host}:{port}:\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    stop_process(proc)
    pytest.fail(f"{args[0]} did not listen on {host}:{port} within {timeout_s} s")


def stop_process(proc) -> None:
    """Terminate a server subprocess this test session started (kill if it does not stop)."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A real S3 server process (moto_server) on 127.0.0.1; yields its `host:port`."""
    import sys

    from tests.pg import free_port

    exe = Path(sys.executable).parent / "moto_server"
    if not exe.is_file():
        pytest.fail(f"{exe} not found: install the test extra (moto[server])")
    port = free_port()
    proc = start_server([str(exe), "-H", "127.0.0.1", "-p", str(port)], "127.0.0.1", port,
                        tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def bus_event(bus_jpg, onnx_detector):
    """The real `illegal_parking` event the photo rules open for the bus in bus.jpg (2025-03-14 02:00 UTC,
    GPS in Hangzhou), and all the detector's boxes on that photo."""
    from datetime import UTC, datetime

    from detect.frames import Frame, GeoPoint
    from detect.imageio import read_image
    from detect.rules import PhotoRules

    image = read_image(bus_jpg)
    frame = Frame(image=image, source_id="batch-7/bus", ts=datetime(2025, 3, 14, 2, 0, tzinfo=UTC), frame_id="bus",
                  path=str(bus_jpg), geo=GeoPoint(lat=30.2741, lon=120.1551))
    detections = onnx_detector.detect([image])[0]
    events = PhotoRules().process(frame, detections)
    assert [e.violation_type for e in events] == ["illegal_parking"]
    return events[0], detections
