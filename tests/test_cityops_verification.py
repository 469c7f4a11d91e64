"""Verification back to the platform: the camera's re-check and the handler's after-photo reach the simulator."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from detect.evidence.builder import BundleContext
from detect.evidence.signing import read_manifest, verify_bundle
from detect.frames import GeoPoint
from pipelines.cases import CaseState
from pipelines.cctv.service import Watcher
from benchmarks.media import street_view, write_clip
from pipelines.cityops.verification import DisposalCheckError, VerificationReporter, check_disposal_photo, list_reports
from pipelines.dispatch.dispatcher import Dispatcher
from pipelines.dispatch.config import DispatchConfig
from tests.cctv_helpers import KEY, SIZE, cameras_file, make_intake, parked_clip, scene_for, street
from tests.dispatch_helpers import Sim


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path)
    yield s
    s.stop()


def _config(sim: Sim) -> DispatchConfig:
    return DispatchConfig(targets={"city": {"adapter": "cn-dcm", "url": f"{sim.base}/cn-dcm/cases"},
                                   "311": {"adapter": "open311", "url": f"{sim.base}/open311",
                                           "token_env": "SIM_311_KEY"}})


def _deliver(intake, config, case_id: str, target: str = "city") -> str:
    intake.store.review(case_id, approve=True, reviewer="li.wei", target=target)
    dispatcher = Dispatcher(intake.store, intake.evidence, config)
    try:
        assert dispatcher.run_once().delivered == 1
    finally:
        dispatcher.close()
    return intake.store.get(case_id).dispatch_ref


@pytest.mark.slow  # 12 s: a clip judged and a platform served; the default suite's ~15-minute budget
def test_camera_recheck_result_reaches_the_platform(tmp_path, bus_jpg, real_sample_dir, onnx_detector, sim):
    # where the camera looks: a platform sends a handler there, and a case without a place is parked, not sent
    scene_for(tmp_path, "cam-v", real_sample_dir, dwell_s=10, clear_s=10,
              location={"lat": 30.2741, "lon": 120.1551, "address": "文三路 1 号"})
    intake = make_intake(tmp_path / "data")
    cam = {"id": "cam-v", "scene": "cam-v.yaml", "verify_every_s": 5}
    parked_clip(tmp_path / "parked.mp4", bus_jpg, real_sample_dir, duration_s=30, arrive_s=2, leave_s=30)
    Watcher(cameras_file(tmp_path / "cameras.yaml", [{**cam, "url": "parked.mp4"}]), onnx_detector, intake, replay=True).run(poll_s=0.1)
    [case] = intake.store.list()
    config = _config(sim)
    ref = _deliver(intake, config, case.id)
    intake.store.mark_handled(case.id, actor="dispatch:city")  # their 处理完成, as the webhook applies it

    write_clip(tmp_path / "empty.mp4", street_view(street(real_sample_dir), SIZE), [], 20, fps=2)
    Watcher(cameras_file(tmp_path / "cameras.yaml", [{**cam, "url": "empty.mp4", "start_time": "2025-03-14T12:00:00"}]),
            onnx_detector, intake, replay=True).run(poll_s=0.1)
    assert intake.store.get(case.id).state is CaseState.VERIFIED_CLEARED

    reporter = VerificationReporter(intake.store, intake.evidence, config)
    stats = reporter.run_once()
    assert (stats.queued, stats.delivered) == (1, 1)
    [theirs] = [c for c in sim.cases("cn-dcm") if c["ref"] == ref]
    [report] = theirs["verifications"]
    assert (report["taskNumber"], report["externalId"], report["checkType"], report["result"]) == (ref, case.id, "auto_recheck", "cleared")
    assert report["resultName"] == "已整改" and report["checkTime"].startswith("2025-03-14T04:00")
    names = sorted(a["fileName"] for a in report["attachments"])
    assert names == ["verification_1.jpg"] and all(len(a["sha256"]) == 64 for a in report["attachments"])  # annotated; never the original
    assert reporter.run_once().delivered == 0  # once per re-check
    assert len([c for c in sim.cases("cn-dcm") if c["ref"] == ref][0]["verifications"]) == 1
    reporter.close()


@pytest.mark.parametrize("privacy_blur", [False, True])
def test_disposal_photo_is_judged_like_triage_and_reported(tmp_path, bus_event, bus_jpg, zidane_jpg, onnx_detector, sim, privacy_blur):
    intake = make_intake(tmp_path / "data", privacy_blur=privacy_blur)
    event, _ = bus_event
    ctx = BundleContext(source_kind="photo_batch", source_id="triage:day1", geo=GeoPoint(30.2741, 120.1551), address="文三路 1 号")
    case = intake.record_event(replace(event, violation_id="photo:bus:illegal_parking"), ctx)
    config = _config(sim)
    ref = _deliver(intake, config, case.id)

    # A file that is no photo is no claim of handling: refused, and the case stays where the platform has it (it was
    # moved to verifying, with a history entry "disposal photo received", before the file was read).
    at_platform, history = intake.store.get(case.id), intake.store.history(case.id)
    with pytest.raises(DisposalCheckError, match=r"notes\.txt: "):
        check_disposal_photo(intake, onnx_detector, case.id, b"not a photo", "notes.txt", actor="city")
    after = intake.store.get(case.id)
    assert after.state is at_platform.state is CaseState.SUBMITTED and after.updated_at == at_platform.updated_at
    assert intake.store.history(case.id) == history

    # The handler's photo still shows the bus: still present; a second photo without it: cleared.
    first = check_disposal_photo(intake, onnx_detector, case.id, bus_jpg.read_bytes(), "after-1.jpg", actor="city")
    assert first.case.state is CaseState.STILL_PRESENT and not first.cleared and [b["class_name"] for b in first.boxes] == ["bus"]
    second = check_disposal_photo(intake, onnx_detector, case.id, zidane_jpg.read_bytes(), "after-2.jpg", actor="city")
    assert second.case.state is CaseState.VERIFIED_CLEARED and second.cleared

    bundle = intake.evidence.path(second.case.evidence_ref)
    assert verify_bundle(bundle, KEY).ok
    checks = read_manifest(bundle)["verifications"]
    assert [v["outcome"] for v in checks] == ["still_present", "verified_cleared"]
    assert (bundle / "verification" / "verification_2_original.jpg").read_bytes() == zidane_jpg.read_bytes()

    reporter = VerificationReporter(intake.store, intake.evidence, config)
    assert reporter.run_once().delivered == 2
    [theirs] = [c for c in sim.cases("cn-dcm") if c["ref"] == ref]
    assert [(v["checkType"], v["result"]) for v in theirs["verifications"]] == [
        ("disposal_photo", "still_present"), ("disposal_photo", "cleared")]
    # What leaves the building is what the case's own dispatch may send: the blurred copy with privacy on, else the
    # annotated frame; never the original (the handler's photo with its EXIF), which /attachments would not serve either.
    shared = "shared/verification_{}.jpg" if privacy_blur else "verification/verification_{}.jpg"
    assert [[a["url"].split(second.case.evidence_ref + "/", 1)[1] for a in v["attachments"]] for v in theirs["verifications"]] == [
        [shared.format(1)], [shared.format(2)]]
    reporter.close()


def test_a_stall_disposal_photo_is_judged_by_the_promoted_verifier(tmp_path, bus_event, onnx_detector, sim):
    """Stalls have no detector class: the handler's photo of a case of that type is judged by the verifier
    triage uses. Real photos: a Taipei market alley of stalls (still present), a road without any (cleared)."""
    from detect.judgement import load_judgement
    from detect.taxonomy import load_taxonomy
    from tests.conftest import SHARED

    judgement = load_judgement(None, load_taxonomy())
    judgement.check(onnx_detector)
    assert judgement.active
    intake = make_intake(tmp_path / "data")
    event, _ = bus_event
    ctx = BundleContext(source_kind="photo_batch", source_id="triage:day2", geo=GeoPoint(25.0330, 121.5654))
    case = intake.record_event(replace(event, violation_id="photo:alley:street_stall", violation_type="street_stall"), ctx)
    _deliver(intake, _config(sim), case.id)
    market = (SHARED / "datasets/street-scenes/images/cn2/mpig__CrowdedMarketAlley.jpg").read_bytes()
    road = (SHARED / "datasets/street-scenes/images/cn2/mpig__Road.jpg").read_bytes()

    first = check_disposal_photo(intake, onnx_detector, case.id, market, "after-1.jpg", actor="city", judgement=judgement)
    assert first.case.state is CaseState.STILL_PRESENT and not first.cleared
    assert "verified:street_stall" in [b["class_name"] for b in first.boxes]  # no COCO class says "stall": the verifier did
    second = check_disposal_photo(intake, onnx_detector, case.id, road, "after-2.jpg", actor="city", judgement=judgement)
    assert second.case.state is CaseState.VERIFIED_CLEARED and second.cleared


def test_open311_cannot_carry_a_recheck_and_says_so(tmp_path, bus_event, zidane_jpg, onnx_detector, sim, monkeypatch):
    monkeypatch.setenv("SIM_311_KEY", "any-key")
    intake = make_intake(tmp_path / "data")
    event, _ = bus_event
    ctx = BundleContext(source_kind="photo_batch", source_id="triage:day1", geo=GeoPoint(30.2741, 120.1551))
    case = intake.record_event(replace(event, violation_id="photo:bus311:illegal_parking"), ctx)
    config = _config(sim)
    _deliver(intake, config, case.id, target="311")
    check_disposal_photo(intake, onnx_detector, case.id, zidane_jpg.read_bytes(), "after.jpg", actor="311")
    reporter = VerificationReporter(intake.store, intake.evidence, config)
    assert reporter.run_once().unsupported == 1
    [row] = list_reports(intake.store.engine, case.id)
    assert row["status"] == "unsupported" and "GeoReport v2 has no endpoint" in row["last_error"]
    reporter.close()


def test_a_platforms_photo_url_on_its_default_port_is_fetched_and_its_other_ports_are_not():
    """The default photo hosts are the targets' hosts with their ports (`dcm.example.gov.cn:443` for
    `https://dcm.example.gov.cn/...`), but a URL on the default port names none (`https://dcm.example.gov.cn/after.jpg`),
    so the platform's own photo URLs were refused as "not a host photos are fetched from". Here the target is
    http://127.0.0.1/ (port 80, where nothing of the test listens): the URL is now tried, another port still refused."""
    from pipelines.cityops.verification import fetch_photo
    from pipelines.settings import Settings

    settings = Settings.model_validate({"dispatch": {"targets": {"dcm": {"adapter": "cn-dcm", "url": "http://127.0.0.1/cases"}}}})
    assert settings.photo_url_hosts() == ["127.0.0.1:80"]
    with pytest.raises(DisposalCheckError) as tried:
        fetch_photo("http://127.0.0.1/after.jpg", allowed_hosts=settings.photo_url_hosts())
    assert re.match(r"http://127\.0\.0\.1/after\.jpg: (cannot fetch|HTTP \d+)", str(tried.value)), tried.value
    with pytest.raises(DisposalCheckError, match=r"127\.0\.0\.1:6379 is not a host photos are fetched from"):
        fetch_photo("http://127.0.0.1:6379/after.jpg", allowed_hosts=settings.photo_url_hosts())


def test_disposal_photo_fetched_from_the_platform(tmp_path, bus_event, zidane_jpg, onnx_detector):
    """The platform publishes the handler's photo at a URL (a loopback file server here); a missing one is named."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from pipelines.cityops.verification import fetch_photo

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "after.jpg").write_bytes(zidane_jpg.read_bytes())

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/elsewhere":  # a redirect to another host name of this machine
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/after.jpg")
                self.end_headers()
                return
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path / "www")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(DisposalCheckError, match=r"missing\.jpg: HTTP 404"):
            fetch_photo(f"{base}/missing.jpg")
        with pytest.raises(DisposalCheckError, match=r"only http\(s\) URLs"):
            fetch_photo("file:///etc/passwd")
        data, name = fetch_photo(f"{base}/after.jpg")
        # the service fetches only from the platforms' hosts, redirects included (a token must not read its network)
        port = server.server_address[1]
        assert fetch_photo(f"{base}/after.jpg", allowed_hosts=[f"127.0.0.1:{port}"])[0] == data
        with pytest.raises(DisposalCheckError, match=rf"127.0.0.1:{port} is not a host photos are fetched from .*: dcm.example"):
            fetch_photo(f"{base}/after.jpg", allowed_hosts=["dcm.example"])
        assert fetch_photo(f"{base}/elsewhere")[0] == data  # redirects are followed...
        with pytest.raises(DisposalCheckError, match=rf"localhost:{port} is not a host"):  # ...onto the allowed hosts only
            fetch_photo(f"{base}/elsewhere", allowed_hosts=[f"127.0.0.1:{port}", "localhost:1"])
        with pytest.raises(DisposalCheckError, match="larger than 0 MB"):
            fetch_photo(f"{base}/after.jpg", limit=1000)
    finally:
        server.shutdown()
        server.server_close()
    intake = make_intake(tmp_path / "data")
    event, _ = bus_event
    case = intake.record_event(replace(event, violation_id="photo:bus-url:illegal_parking"),
                               BundleContext(source_kind="photo_batch", source_id="b", geo=GeoPoint(30.2741, 120.1551)))
    intake.store.review(case.id, approve=True, reviewer="li", target="city")
    [entry] = intake.store.claim_due()
    intake.store.mark_delivered(entry.id, "DCM-9")
    result = check_disposal_photo(intake, onnx_detector, case.id, data, name, actor="city")
    assert name == "after.jpg" and result.cleared and result.case.state is CaseState.VERIFIED_CLEARED
