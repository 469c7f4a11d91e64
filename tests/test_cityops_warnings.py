"""Warn, re-check, then a case: replayed clips of the bus through the whole CCTV service with warnings on."""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from detect.evidence.signing import read_manifest, verify_bundle
from detect.taxonomy import load_taxonomy
from pipelines.cctv.service import Watcher
from pipelines.settings import WarnConfig
from pipelines.cityops.warnings import Warner, _text, list_warnings, warning_image
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


def test_the_sms_speaks_of_a_shop_door_only_to_a_shop():
    """A street stall's SMS said 您门前 (in front of your door): a vendor has no shop. A shop's spill-over keeps it,
    with the shop's name; a stall is told where it was seen. Both fit one SMS (70 Chinese characters)."""
    tax = load_taxonomy()
    address = "西湖区文三路128号"
    shop = _text("shopfront_spillover", tax.get("shopfront_spillover").short_name_zh, "王记面馆", address, 600)
    stall = _text("street_stall", tax.get("street_stall").short_name_zh, None, address, 600)
    assert shop == "王记面馆：您门前（西湖区文三路128号）发现店外经营，请于10分钟内自行整改，届时将复查，未整改将立案处理。"
    assert stall == "您好，经查您在西湖区文三路128号存在占道经营行为，请于10分钟内自行整改，届时将复查，未整改将立案处理。"
    assert "您门前" not in _text("street_stall", "占道经营", None, None, 90) == "您好，经查您存在占道经营行为，请于1分30秒内自行整改，届时将复查，未整改将立案处理。"
    assert max(len(shop), len(stall)) <= 70


def _run(tmp_path, detector, intake, clip_name: str, url: str | None, recheck_after_s: float = 20, **config):
    config = WarnConfig(rules=[{"types": ["illegal_parking"], "zone_kinds": ["no_parking"], "recheck_after_s": recheck_after_s}],
                        webhook_url=url, images_dir=tmp_path / "warnings", **config)
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
    assert "请于20秒内自行整改" in received[1]["text"]  # the re-check 20 s on: the SMS said 请于0分钟内 (within 0 minutes)
    assert "您门前" not in received[1]["text"] and "存在机动车乱停放" in received[1]["text"]  # a driver has no shop door
    [recheck] = [r for r in watcher.records if r["event"] == "warning_recheck"]
    assert recheck["outcome"] == "escalated" and recheck["type"] == "illegal_parking"
    [case] = intake.store.list()
    assert case.id == recheck["case_id"]
    # the case the re-check opened is counted (exit summary, streetwatch_cctv_cases_opened_total): it said 0 cases opened
    assert watcher.summary()["cases_opened"] == 1
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


def test_a_violation_judged_again_is_not_warned_again(tmp_path, bus_jpg, real_sample_dir, onnx_detector, gateway):
    """The same recording replayed again into the same store (with --no-state its violations are judged from the
    start, under the same ids): the second opening sent the shop a second SMS, then failed to record the warning
    (UNIQUE violation_id, a traceback in the case sink's log), so nothing was recorded of it. It is the warning
    already given: no second message, no second warning, its case kept."""
    url, received = gateway
    parked_clip(tmp_path / "parked.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=12)
    scene_for(tmp_path, "cam-w", real_sample_dir, dwell_s=2, clear_s=10)
    intake = make_intake(tmp_path / "data")
    first = _run(tmp_path, onnx_detector, intake, "parked.mp4", url, recheck_after_s=4)
    [warn] = [r for r in first.records if r["event"] == "warning"]
    sent = len(received)

    again = _run(tmp_path, onnx_detector, intake, "parked.mp4", url, recheck_after_s=4)

    assert len(received) == sent  # no second SMS
    [known] = [r for r in again.records if r["event"].startswith("warning")]
    assert known["event"] == "warning_known" and known["warning_id"] == warn["warning_id"] and known["state"] == "escalated"
    assert [row["id"] for row in list_warnings(intake.store.engine)] == [warn["warning_id"]]
    assert len(intake.store.list()) == 1 and again.summary()["cases_opened"] == 0


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


@pytest.mark.slow  # 9 s: two watch processes
def test_a_warning_left_waiting_by_a_stopped_watcher_is_resumed_by_the_next_one(tmp_path, bus_jpg, real_sample_dir, onnx_detector, gateway):
    """The watcher stops 8 s after warning the bus (re-check due 60 s after the warning). Started again two minutes
    later with the bus still there, the rules open the violation anew: that opening takes over the waiting warning
    (no second warning, no second message) and the re-check, long due, opens the case with the first warning in its
    evidence. Stopped and started again with the bus gone, a waiting warning closes as complied once the place stayed
    clear for the clear time; one due longer ago than `resume_within_s` is marked lapsed."""
    url, received = gateway
    start = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    parked_clip(tmp_path / "before.mp4", bus_jpg, real_sample_dir, duration_s=15, arrive_s=2, leave_s=15, start=start)
    parked_clip(tmp_path / "after.mp4", bus_jpg, real_sample_dir, duration_s=30, arrive_s=0, leave_s=30, start=start + timedelta(minutes=2))
    scene_for(tmp_path, "cam-w", real_sample_dir, dwell_s=5, clear_s=10)
    intake = make_intake(tmp_path / "data")

    first = _run(tmp_path, onnx_detector, intake, "before.mp4", url, recheck_after_s=60)
    [warn] = [r for r in first.records if r["event"] == "warning"]
    assert not [r for r in first.records if r["event"] == "warning_recheck"] and intake.store.list() == []
    assert [row["state"] for row in list_warnings(intake.store.engine)] == ["warned"]
    messages = len(received)

    second = _run(tmp_path, onnx_detector, intake, "after.mp4", url, recheck_after_s=60)
    assert not [r for r in second.records if r["event"] == "warning"] and len(received) == messages  # no second warning
    [resumed] = [r for r in second.records if r["event"] == "warning_resumed"]
    [recheck] = [r for r in second.records if r["event"] == "warning_recheck"]
    assert resumed["warning_id"] == recheck["warning_id"] == warn["warning_id"] and recheck["outcome"] == "escalated"
    [case] = intake.store.list()
    assert case.id == recheck["case_id"] and case.details["warning"]["resumed_after_restart"] is True
    assert case.first_seen_at < start + timedelta(seconds=5)  # first seen before the first watcher stopped
    assert verify_bundle(intake.evidence.path(case.evidence_ref), KEY).ok
    [row] = list_warnings(intake.store.engine)
    assert (row["state"], row["case_id"]) == ("escalated", case.id)

    # gone after the restart: complied after the clear time; one due too long ago: lapsed
    later = start + timedelta(hours=1)
    parked_clip(tmp_path / "before2.mp4", bus_jpg, real_sample_dir, duration_s=15, arrive_s=2, leave_s=15, start=later)
    parked_clip(tmp_path / "gone.mp4", bus_jpg, real_sample_dir, duration_s=30, arrive_s=40, leave_s=41, start=later + timedelta(minutes=2))
    _run(tmp_path, onnx_detector, intake, "before2.mp4", None, recheck_after_s=60)
    third = _run(tmp_path, onnx_detector, intake, "gone.mp4", None, recheck_after_s=60)
    assert [r["outcome"] for r in third.records if r["event"] == "warning_recheck"] == ["complied"]
    assert sorted(r["state"] for r in list_warnings(intake.store.engine)) == ["complied", "escalated"]
    assert len(intake.store.list()) == 1

    parked_clip(tmp_path / "before3.mp4", bus_jpg, real_sample_dir, duration_s=15, arrive_s=2, leave_s=15, start=later + timedelta(hours=1))
    _run(tmp_path, onnx_detector, intake, "before3.mp4", None, recheck_after_s=60)
    parked_clip(tmp_path / "days-later.mp4", bus_jpg, real_sample_dir, duration_s=10, arrive_s=20, leave_s=21, start=later + timedelta(days=3))
    fourth = _run(tmp_path, onnx_detector, intake, "days-later.mp4", None, recheck_after_s=60, resume_within_s=3600)
    assert [r["outcome"] for r in fourth.records if r["event"] == "warning_recheck"] == ["lapsed"]
    assert sorted(r["state"] for r in list_warnings(intake.store.engine)) == ["complied", "escalated", "lapsed"]


def _answering(status: int) -> type[BaseHTTPRequestHandler]:
    """A gateway stand-in for 127.0.0.1 that answers every call `status` (a WeCom robot's 403, a gateway's 500)."""

    class Answering(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Answering


def test_a_failed_webhook_names_its_url_without_the_robots_key(tmp_path, caplog):
    """A WeCom or DingTalk robot's webhook URL carries its key (`?key=`, `?access_token=`): a failed call logged the URL
    and stored httpx's reason, which repeats it, as the warning's notify_error shown on /ui/city; both show it ***."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _answering(403))  # its key in the URL as WeCom's is
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/webhook/send?key=robot-key-693a&debug=1"
        config = WarnConfig(rules=[{"types": ["illegal_parking"]}], webhook_url=url, attempts=1, images_dir=tmp_path / "w")
        warner = Warner(config, make_intake(tmp_path), load_taxonomy())
        with caplog.at_level("WARNING", logger="pipelines.cityops.warnings"):
            notified, error = warner._notify({"warning_id": "W20261206-1"})
    finally:
        server.shutdown()
        server.server_close()
    assert notified == "failed" and "403 Forbidden" in error and "send?key=***&debug=1" in error, error
    assert "webhook/send?key=***&debug=1 failed" in caplog.text, caplog.text
    assert "robot-key-693a" not in error + caplog.text


def test_a_gateway_out_of_reach_or_failing_is_named_with_the_reason(tmp_path):
    """notify_error (/ui/city, 发送失败) said 'ConnectError: [Errno 111] Connection refused': not which gateway. It names
    the URL (its key ***) and why: refused on a loopback port nothing listens on, the status from a gateway answering 500."""
    with socket.socket() as s:  # a port just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _answering(500))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors = {}
    try:
        for name, port in (("closed", closed), ("failing", server.server_address[1])):
            url = f"http://127.0.0.1:{port}/sms/send?access_token=gw-token-5521"
            config = WarnConfig(rules=[{"types": ["street_stall"]}], webhook_url=url, attempts=1, images_dir=tmp_path / "w")
            errors[name] = Warner(config, make_intake(tmp_path / name), load_taxonomy())._notify({"warning_id": "W20261207-1"})
    finally:
        server.shutdown()
        server.server_close()
    notified, error = errors["closed"]
    assert notified == "failed" and error.startswith(f"webhook http://127.0.0.1:{closed}/sms/send?access_token=*** failed: cannot connect ("), error
    assert "refused" in error.lower(), error
    notified, error = errors["failing"]
    assert notified == "failed" and error == (f"webhook http://127.0.0.1:{server.server_address[1]}/sms/send?access_token=*** failed: "
                                              "HTTP 500 Internal Server Error"), error
    assert "gw-token-5521" not in errors["closed"][1] + errors["failing"][1]
