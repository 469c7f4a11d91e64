"""Warn, re-check, then a case: replayed clips of the bus through the whole CCTV service with warnings on."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from detect.evidence import read_manifest, verify_bundle
from detect.taxonomy import load_taxonomy
from pipelines.cctv.service import Watcher
from pipelines.settings import WarnConfig
from pipelines.cityops.warnings import Warner, list_warnings, warning_image
from tests.cctv_helpers import KEY, cameras_file, make_intake, parked_clip, scene_for


class _Gateway(BaseHTTPRequestHandler):
    """An SMS/WeCom gateway stand-in on 127.0.0.1: the first call fails with 503, later ones are accepted."""

    received: list[dict] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        self.send_response(503 if len(self.received) == 1 else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def gateway():
    _Gateway.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms", _Gateway.received
    server.shutdown()
    server.server_close()


def _run(tmp_path, detector, intake, clip_name: str, url: str | None):
    config = WarnConfig(rules=[{"types": ["illegal_parking"], "zone_kinds": ["no_parking"], "recheck_after_s": 20}],
                        webhook_url=url, images_dir=tmp_path / "warnings")
    warner = Warner(config, intake, load_taxonomy())
    cams = [{"id": "cam-w", "url": clip_name, "scene": "cam-w.yaml", "verify_every_s": 2}]
    watcher = Watcher(cameras_file(tmp_path / "cameras.yaml", cams), detector, intake, replay=True, warner=warner)
    watcher.run(poll_s=0.1)
    return watcher


def test_still_present_at_the_recheck_becomes_a_case_with_the_warning_as_evidence(tmp_path, bus_jpg, real_sample_dir,
                                                                                    onnx_detector, gateway):
    url, received = gateway
    clip = parked_clip(tmp_path / "parked.mp4", bus_jpg, real_sample_dir, duration_s=45, arrive_s=2, leave_s=45)
    scene_for(tmp_path, "cam-w", real_sample_dir, dwell_s=5, clear_s=10)
    intake = make_intake(tmp_path / "data")

    watcher = _run(tmp_path, onnx_detector, intake, "parked.mp4", url)

    [warn] = [r for r in watcher.records if r["event"] == "warning"]
    assert warn["type"] == "illegal_parking" and warn["notified"] == "delivered"
    assert len(received) == 2 and received[1]["warning_id"] == warn["warning_id"]  # 503 first, retried
    assert "复查" in received[1]["text"] and received[1]["violation_type"] == "illegal_parking"
    [recheck] = [r for r in watcher.records if r["event"] == "warning_recheck"]
    assert recheck["outcome"] == "escalated"
    [case] = intake.store.list()
    assert case.id == recheck["case_id"]
    # First seen on arrival (2 s), warned when the 5 s dwell was reached, the case opens at the re-check 20 s later.
    warned_at = datetime.fromisoformat(warn["at"])
    assert timedelta(seconds=2) <= case.first_seen_at - clip.start <= timedelta(seconds=4)
    assert timedelta(seconds=7) <= warned_at - clip.start <= timedelta(seconds=10)
    assert timedelta(seconds=20) <= case.opened_at - warned_at <= timedelta(seconds=23)
    assert case.details["warning"]["warning_id"] == warn["warning_id"]
    bundle = intake.evidence.path(case.evidence_ref)
    assert verify_bundle(bundle, KEY).ok
    manifest = read_manifest(bundle)
    assert manifest["warnings"][0]["warning_id"] == warn["warning_id"] and manifest["warnings"][0]["outcome"] == "still_present"
    roles = {a["role"] for a in manifest["artifacts"]}
    assert {"original_first_seen", "original_opened"} <= roles  # the warning frame and the re-check frame
    [row] = list_warnings(intake.store.engine)
    assert row["state"] == "escalated" and row["case_id"] == case.id and row["notified"] == "delivered"
    assert warning_image(intake.store.engine, warn["warning_id"]).stat().st_size > 10_000


def test_gone_at_the_recheck_makes_no_case(tmp_path, bus_jpg, real_sample_dir, onnx_detector):
    parked_clip(tmp_path / "leaves.mp4", bus_jpg, real_sample_dir, duration_s=45, arrive_s=2, leave_s=16)
    scene_for(tmp_path, "cam-w", real_sample_dir, dwell_s=5, clear_s=10)
    intake = make_intake(tmp_path / "data")

    watcher = _run(tmp_path, onnx_detector, intake, "leaves.mp4", None)

    [warn] = [r for r in watcher.records if r["event"] == "warning"]
    assert warn["notified"] == "off"
    assert [r["outcome"] for r in watcher.records if r["event"] == "warning_recheck"] == ["complied"]
    assert intake.store.list() == []
    [row] = list_warnings(intake.store.engine)
    assert row["state"] == "complied" and row["case_id"] is None
