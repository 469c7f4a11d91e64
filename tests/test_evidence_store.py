"""Evidence storage (local folder, and S3 against a real moto_server process) and case intake."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from detect.events import EventKind
from detect.evidence.builder import BundleContext, EvidenceBuilder, ModelInfo
from detect.evidence.config import EvidenceConfig
from detect.evidence.signing import verify_bundle
from pipelines.cases import CaseState, CaseStore, InvalidTransition
from pipelines.cases.intake import Intake
from pipelines.evidence_store import LocalEvidenceStore, S3EvidenceStore, S3Settings, StorageError
from tests.conftest import start_server, stop_process
from tests.pg import free_port

KEY = b"test-key-0123456789abcdef"
MODEL = ModelInfo("yolo11n-int8dq", "ab" * 32)
CTX = BundleContext(source_kind="photo_batch", source_id="batch-7", address="文三路 1 号", grid_cell="330106001001",
                    photo_ids=["bus"])


def _s3(endpoint: str, **kw) -> S3EvidenceStore:
    settings = S3Settings(endpoint=endpoint, secure=False, bucket=kw.pop("bucket", "sw-evidence"), **kw)
    return S3EvidenceStore(settings, access_key="testing", secret_key="testing")


@pytest.fixture
def bundle(tmp_path, bus_event):
    event, dets = bus_event
    builder = EvidenceBuilder(EvidenceConfig(), KEY, MODEL)
    return builder.build(event, tmp_path / "built", "SW20250314-aaa", replace(CTX, privacy_detections=dets))


def test_local_round_trip_and_urls(tmp_path, bundle):
    store = LocalEvidenceStore(tmp_path / "evidence", public_base_url="https://sw.example/evidence/")
    ref = store.put_bundle("SW20250314-aaa", bundle.path)
    assert ref == (tmp_path / "evidence" / "SW20250314-aaa").as_uri()
    assert verify_bundle(store.path(ref), KEY).ok
    fetched = store.fetch_bundle(ref, tmp_path / "copy")
    assert verify_bundle(fetched, KEY).ok
    assert store.url(ref, "crops/00_bus.jpg") == "https://sw.example/evidence/SW20250314-aaa/crops/00_bus.jpg"
    # Replacing a bundle leaves exactly the new one (no temp or old folders).
    store.put_bundle("SW20250314-aaa", bundle.path)
    assert [p.name for p in (tmp_path / "evidence").iterdir()] == ["SW20250314-aaa"]
    with pytest.raises(StorageError, match="not an evidence bundle"):
        store.put_bundle("x", tmp_path)


def test_a_reference_of_the_other_backend_is_named_so(tmp_path):
    """A store given the other backend's reference says so (the settings' backend is what to change), not that the
    reference is malformed; one into another bucket is still 'not a reference into' this one."""
    local, s3 = LocalEvidenceStore(tmp_path / "evidence"), _s3("127.0.0.1:9")  # no server is asked
    file_ref = (tmp_path / "evidence" / "SW20250314-aaa").as_uri()
    with pytest.raises(StorageError, match=f"^{file_ref} is a local reference, but evidence_store.backend is s3$"):
        s3.fetch_bundle(file_ref, tmp_path / "copy")
    with pytest.raises(StorageError, match="^s3://sw-evidence/cases/x is an S3 reference, but evidence_store.backend is local$"):
        local.fetch_bundle("s3://sw-evidence/cases/x", tmp_path / "copy")
    with pytest.raises(StorageError, match="^s3://other/cases/x: not a reference into s3://sw-evidence$"):
        s3.read_bytes("s3://other/cases/x", "manifest.json")


def test_s3_round_trip_content_types_and_presigned_fetch(tmp_path, bundle, moto_s3):
    store = _s3(moto_s3)
    ref = store.put_bundle("SW20250314-aaa", bundle.path)  # creates the bucket
    assert ref == "s3://sw-evidence/cases/SW20250314-aaa"
    stat = store.client.stat_object("sw-evidence", "cases/SW20250314-aaa/manifest.json")
    assert stat.content_type == "application/json"
    assert store.client.stat_object("sw-evidence", "cases/SW20250314-aaa/crops/00_bus.jpg").content_type == "image/jpeg"

    fetched = store.fetch_bundle(ref, tmp_path / "fetched")
    assert verify_bundle(fetched, KEY).ok

    crop = next(a for a in bundle.artifacts() if a["role"] == "crop")
    url = store.url(ref, crop["path"], expires=timedelta(minutes=5))
    assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url
    answer = httpx.get(url)  # a dispatch system fetches the attachment with no credentials
    assert answer.status_code == 200 and hashlib.sha256(answer.content).hexdigest() == crop["sha256"]
    with pytest.raises(StorageError, match="at most 7 days"):
        store.url(ref, crop["path"], expires=timedelta(days=8))

    # A re-stored bundle without some artifact: its object is removed, the rest is replaced.
    (bundle.path / crop["path"]).unlink()
    store.put_bundle("SW20250314-aaa", bundle.path)
    keys = {o.object_name for o in store.client.list_objects("sw-evidence", prefix="cases/", recursive=True)}
    assert f"cases/SW20250314-aaa/{crop['path']}" not in keys and "cases/SW20250314-aaa/manifest.json" in keys


def test_the_api_names_an_unreachable_s3_server_by_its_setting_not_its_address(tmp_path, bundle):
    """An upload job's case reason (shown to inspectors) carried the client's own words for a store it could not reach,
    `HTTPConnection(host='127.0.0.1', port=…)`: the evidence server's address, where a local store's folders are named
    by their settings. The text `Settings.named_by_setting` gives the API names it `evidence_store.s3.endpoint`."""
    from pipelines.settings import Settings

    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(StorageError) as failed:
        _s3(endpoint, retries=0).put_bundle("SW20250314-aaa", bundle.path)
    assert "host='127.0.0.1'" in str(failed.value)  # the client's words, as the server log keeps them
    settings = Settings.model_validate({"evidence_store": {"backend": "s3", "s3": {"endpoint": endpoint, "secure": False}}})
    shown = settings.named_by_setting(str(failed.value))
    assert "127.0.0.1" not in shown and endpoint.split(":")[1] not in shown
    assert "HTTPConnection(evidence_store.s3.endpoint): Failed to establish a new connection" in shown
    assert "s3://sw-evidence/cases/SW20250314-aaa" in shown  # the bucket and key stay: they name no machine


def test_storage_down_case_waits_then_retry_delivers(tmp_path, bus_event):
    """S3 is down: the case waits in `candidate` with the reason; once S3 is up, the retry stores it."""
    event, dets = bus_event
    port = free_port()
    store = _s3(f"127.0.0.1:{port}", retries=2, backoff_s=0.01, connect_timeout_s=1)
    cases = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    intake = Intake(cases, store, EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "spool", auto_queue="cn-dcm")

    case = intake.record_event(event, replace(CTX, privacy_detections=dets))
    assert case.state is CaseState.CANDIDATE and case.evidence_ref is None
    assert case.reason.startswith("evidence upload failed, will retry: case ") and "Connection refused" in case.reason
    assert (tmp_path / "spool" / case.id / "manifest.json").is_file()  # kept for the retry
    assert [c.id for c in cases.waiting_for_evidence()] == [case.id]
    assert intake.retry_evidence() == []  # still down
    assert intake.record_event(event, CTX).id == case.id  # the same violation again: same case

    proc = start_server([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                        "127.0.0.1", port, tmp_path / "moto.log")
    try:
        [stored] = intake.retry_evidence()
        assert stored.id == case.id and stored.reason is None and stored.evidence_ref == f"s3://sw-evidence/cases/{case.id}"
        assert stored.state is CaseState.QUEUED  # auto-queue once the evidence is safe
        assert [e.target for e in cases.outbox_entries(case_id=case.id)] == ["cn-dcm"]
        assert not (tmp_path / "spool" / case.id).exists()
        assert verify_bundle(store.fetch_bundle(stored.evidence_ref, tmp_path / "check"), KEY).ok
    finally:
        stop_process(proc)


def test_intake_camera_lifecycle_and_reverification(tmp_path, bus_event):
    event, dets = bus_event
    cases = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    store = LocalEvidenceStore(tmp_path / "evidence")
    intake = Intake(cases, store, EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "spool")
    cam = BundleContext(source_kind="camera", source_id="cam-01", zone_polygon=[(0, 0.4), (1, 0.4), (1, 1), (0, 1)])
    opened = replace(event, violation_id="cam-01:z1:illegal_parking:t3", source_id="cam-01", zone_id="z1", dwell_s=360.0)

    case = intake.record_event(opened, cam)
    assert (case.state, case.source_kind, case.source_id, case.zone_id) == (CaseState.CANDIDATE, "camera", "cam-01", "z1")
    assert case.evidence_boxes["image"] == "originals/opened_original.jpg"
    assert [b["class_name"] for b in case.evidence_boxes["boxes"]] == ["bus"]
    assert (case.evidence_boxes["width"], case.evidence_boxes["height"]) == (810, 1080)
    assert (case.lat, case.lon) == (30.2741, 120.1551)

    # Seconds after the opening the ring buffer has the frames that follow it: they join the strip.
    after = [replace(event.frame, ts=event.at + timedelta(seconds=s), frame_id=f"a{s}", path=None) for s in (2, 4, 6)]
    with_strip = intake.add_strip(opened.violation_id, after)
    strip = [a for a in json.loads((store.path(with_strip.evidence_ref) / "manifest.json").read_text())["artifacts"]
             if a["role"] == "strip"]
    assert [a["frame_id"] for a in strip] == ["a2", "a4", "a6"] and with_strip.evidence_digest != case.evidence_digest

    later = replace(event.frame, ts=event.at + timedelta(minutes=8), frame_id="f-later", path=None)
    cleared = replace(opened, kind=EventKind.CLEARED, at=later.ts, cleared_at=later.ts, frame=later)
    updated = intake.record_event(cleared, cam)
    assert updated.cleared_at == later.ts and updated.evidence_digest != with_strip.evidence_digest
    bundle_path = store.path(updated.evidence_ref)
    assert (bundle_path / "annotated" / "latest.jpg").is_file() and verify_bundle(bundle_path, KEY).ok
    assert intake.record_event(replace(cleared, violation_id="unknown")) is None

    with pytest.raises(InvalidTransition, match="cannot move from candidate to still_present"):
        intake.record_verification(case.id, later, dets[:0], cleared=False, actor="cctv:cam-01")
    assert not (bundle_path / "verification").exists()  # refused before touching the bundle
    cases.review(case.id, approve=True, reviewer="li.wei", target="cn-dcm")
    [entry] = cases.claim_due()
    cases.mark_delivered(entry.id, "DCM-9")
    cases.mark_handled(case.id, actor="dispatch:cn-dcm")
    checked = intake.record_verification(case.id, later, dets[:0], cleared=False, actor="cctv:cam-01")
    assert checked.state is CaseState.STILL_PRESENT and checked.verification_ref == "verification/verification_1.jpg"
    assert (bundle_path / "verification" / "verification_1.jpg").is_file() and verify_bundle(bundle_path, KEY).ok


def test_verify_of_several_s3_bundles_reports_a_planted_key_as_that_bundles_failure(tmp_path, bundle, moto_s3, monkeypatch):
    """A key with a `..` segment (written by someone else; minio cannot even fetch it) fails its own bundle,
    named with the reason, and the other bundles are still verified; nothing is written outside the copy."""
    import boto3
    from typer.testing import CliRunner

    from streetwatch.cli import app

    store = _s3(moto_s3, bucket="sw-verify-many")
    cases = ("SW20250314-aaa", "SW20250314-bbb", "SW20250314-ccc", "SW20250314-ddd")
    refs = [store.put_bundle(case, bundle.path) for case in cases]
    planted = "cases/SW20250314-bbb/../../planted.txt"
    absolute = f"cases/SW20250314-ddd/{tmp_path}/escaped.txt"  # a doubled /: it would be fetched to that absolute path
    client = boto3.client("s3", endpoint_url=f"http://{moto_s3}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    for key in (planted, absolute):
        client.put_object(Bucket="sw-verify-many", Key=key, Body=b"x")
    config = tmp_path / "sw.yaml"
    config.write_text(json.dumps({"evidence_store": {"backend": "s3", "s3": {
        "endpoint": moto_s3, "secure": False, "bucket": "sw-verify-many", "retries": 0}}}))
    monkeypatch.chdir(tmp_path)
    env = {"STREETWATCH_EVIDENCE_KEY": KEY.decode(), "STREETWATCH_S3_ACCESS_KEY": "testing",
           "STREETWATCH_S3_SECRET_KEY": "testing", "COLUMNS": "250"}
    ran = CliRunner().invoke(app, ["evidence", "verify", *refs, "--config", str(config), "--no-store"], env=env)
    assert ran.exit_code == 1, ran.output
    lines = ran.output.splitlines()
    assert [line.split()[:2] for line in lines if not line.startswith(" ")] == [
        ["OK", refs[0]], ["FAIL", refs[1]], ["OK", refs[2]], ["FAIL", refs[3]]], ran.output
    assert f"problem: {refs[1]}: object {planted!r} has a '..' path segment: not a file of a bundle we store" in ran.output
    assert f"problem: {refs[3]}: object {absolute!r} has an empty path segment (a leading or doubled /)" in ran.output
    assert not list(tmp_path.rglob("planted.txt")) and not (tmp_path / "escaped.txt").exists()


def test_bundles_spooled_before_an_hmac_key_rotation_upload_once_the_earlier_key_is_kept(tmp_path, bus_event):
    """Storage was down, the operator rotated the HMAC key, and the bundles waiting in the spool, checked against the
    one new key, were refused and moved aside, their photo cases never built again. With the earlier key's file in
    `evidence.previous_hmac_key_files` they upload and `evidence verify` checks them; without it they wait, their
    case naming the key id and the setting."""
    from typer.testing import CliRunner

    from detect.evidence.signing import key_id
    from pipelines.settings import Settings
    from streetwatch.cli import app as cli

    event, dets = bus_event
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old.write_text("old-key-0123456789abcdef\n")
    new.write_text("new-key-0123456789abcdef\n")
    root = tmp_path / "evidence"
    root.write_text("a file where the store's folder should be")  # storage down

    def settings(**evidence) -> Settings:
        return Settings(cases={"url": f"sqlite:///{tmp_path}/cases.db"}, evidence=evidence,
                        evidence_store={"local_root": str(root), "spool_dir": str(tmp_path / "spool")})

    before = Intake.from_settings(settings(hmac_key_file=str(old)), MODEL)
    case = before.record_event(event, replace(CTX, privacy_detections=dets))
    assert case.evidence_ref is None and "cannot write evidence" in case.reason
    before.store.close()
    root.unlink()  # storage back, after the rotation

    rotated = Intake.from_settings(settings(hmac_key_file=str(new)), MODEL)
    assert rotated.retry_evidence() == []
    reason = rotated.store.get(case.id).reason
    assert f"key id {key_id(b'old-key-0123456789abcdef')}" in reason and "evidence.previous_hmac_key_files" in reason, reason
    assert rotated.spooled() == [case.id] and not (tmp_path / "spool" / ".rejected").exists()  # waits, not refused
    rotated.store.close()

    kept = settings(hmac_key_file=str(new), previous_hmac_key_files=[str(old)])
    after = Intake.from_settings(kept, MODEL)
    [stored] = after.retry_evidence()
    assert stored.id == case.id and stored.reason is None and stored.evidence_ref == (root / case.id).as_uri()
    after.store.close()

    config = tmp_path / "settings.yaml"
    config.write_text(json.dumps(kept.model_dump(mode="json", exclude_unset=True)), encoding="utf-8")
    checked = CliRunner().invoke(cli, ["evidence", "verify", str(root / case.id), "--config", str(config)])
    # named by its key id: the auditor sees which key of the rotation signed it
    assert checked.exit_code == 0 and f"HMAC key {key_id(b'old-key-0123456789abcdef')} valid" in checked.output, checked.output
    config.write_text(json.dumps(settings(hmac_key_file=str(new)).model_dump(mode="json", exclude_unset=True)), encoding="utf-8")
    refused = CliRunner().invoke(cli, ["evidence", "verify", str(root / case.id), "--config", str(config)])
    assert refused.exit_code == 1 and "signed with key id" in refused.output, refused.output


def test_a_spooled_bundle_under_a_key_not_held_leaves_the_spool(tmp_path, bus_event):
    """A spooled bundle whose signature named an HMAC key not held waited in the spool for good, a warning at every
    retry, even one with a made-up key id: never uploaded, never out of the spool listing. One whose files or
    manifest are not what was sealed is refused at once; one that is waits `UNKNOWN_KEY_WAIT` for its key, then
    goes to `.rejected/`, its case saying how to bring it back, which uploads it once the key is kept."""
    import os
    import shutil

    from detect.evidence.signing import key_id
    from pipelines.cases.intake import UNKNOWN_KEY_WAIT
    from pipelines.settings import Settings

    event, dets = bus_event
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old.write_text("old-key-0123456789abcdef\n")
    new.write_text("new-key-0123456789abcdef\n")
    root, spool = tmp_path / "evidence", tmp_path / "spool"
    root.write_text("a file where the store's folder should be")  # storage down

    def settings(**evidence) -> Settings:
        return Settings(cases={"url": f"sqlite:///{tmp_path}/cases.db"}, evidence=evidence,
                        evidence_store={"local_root": str(root), "spool_dir": str(spool)})

    before = Intake.from_settings(settings(hmac_key_file=str(old)), MODEL)
    kept_case = before.record_event(event, replace(CTX, privacy_detections=dets))
    forged_case = before.record_event(replace(event, violation_id="forged"), replace(CTX, privacy_detections=dets))
    before.store.close()
    root.unlink()  # storage back, after the rotation
    forged = spool / forged_case.id
    (forged / "manifest.json").write_text((forged / "manifest.json").read_text().replace("文三路", "文二路"))
    signature = json.loads((forged / "signature.json").read_text())
    (forged / "signature.json").write_text(json.dumps({**signature, "key_id": "0123456789abcdef"}))

    rotated = Intake.from_settings(settings(hmac_key_file=str(new)), MODEL)
    assert rotated.retry_evidence() == []
    assert rotated.spooled() == [kept_case.id]  # the forged one is refused at once
    reason = rotated.store.get(forged_case.id).reason
    assert reason.startswith("spooled evidence bundle refused (signed with HMAC key id 0123456789abcdef"), reason
    waiting = rotated.store.get(kept_case.id).reason
    assert f"key id {key_id(b'old-key-0123456789abcdef')}" in waiting and "7 days" in waiting, waiting
    assert rotated.retry_evidence() == [] and rotated.spooled() == [kept_case.id]  # within the wait: still waits

    marker = spool / f"{kept_case.id}.unknown-key"
    stale = spool / f"{forged_case.id}.unknown-key"  # a bundle that waited, since removed by hand
    stale.write_text("0123456789abcdef")
    assert rotated.retry_evidence() == [] and not stale.exists() and marker.exists()  # its wait goes with it
    begun = marker.stat().st_mtime - UNKNOWN_KEY_WAIT.total_seconds() - 60
    os.utime(marker, (begun, begun))  # the wait began a week and a minute ago
    assert rotated.retry_evidence() == [] and rotated.spooled() == [] and not marker.exists()
    reason = rotated.store.get(kept_case.id).reason
    [aside] = [p for p in (spool / ".rejected").iterdir() if p.name.startswith(kept_case.id)]
    assert f"signed with HMAC key id {key_id(b'old-key-0123456789abcdef')}" in reason, reason
    assert reason.endswith(f"add that key's file to evidence.previous_hmac_key_files and move {aside} back to "
                           f"{spool / kept_case.id}"), reason
    rotated.store.close()

    shutil.move(aside, spool / kept_case.id)  # as the reason says
    after = Intake.from_settings(settings(hmac_key_file=str(new), previous_hmac_key_files=[str(old)]), MODEL)
    [stored] = after.retry_evidence()
    assert stored.id == kept_case.id and stored.reason is None and verify_bundle(root / kept_case.id, b"old-key-0123456789abcdef").ok
    after.store.close()


def test_a_case_drafted_before_the_store_dropped_gets_its_digest_and_boxes_when_its_bundle_is_uploaded(tmp_path, bus_event,
                                                                                                        monkeypatch):
    """The case store gone (a database restarted, or the process killed) after a case was drafted and its bundle sealed
    but before the case recorded the bundle's digest and evidence boxes: the resumed run uploaded the spooled bundle but
    never wrote the boxes, so review and retraining had nothing to draw. The upload completes the case from the bundle,
    boxes as the drafting run writes them; one case, one bundle."""
    from pipelines.cases.store import CaseStoreUnreachable

    event, dets = bus_event
    ctx = replace(CTX, privacy_detections=dets)
    fine = Intake(CaseStore(f"sqlite:///{tmp_path}/fine.db"), LocalEvidenceStore(tmp_path / "fine"),
                  EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "fine-spool").record_event(event, ctx)
    cases, store = CaseStore(f"sqlite:///{tmp_path}/cases.db"), LocalEvidenceStore(tmp_path / "evidence")
    intake = Intake(cases, store, EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "spool")
    update, dropped = CaseStore.update, []

    def dropped_once(self, case_id, **values):  # the write recording the sealed bundle meets the store gone, once
        if "evidence_boxes" in values and not dropped:
            dropped.append(case_id)
            raise CaseStoreUnreachable("sqlite:///cases.db", "connection lost")
        return update(self, case_id, **values)

    monkeypatch.setattr(CaseStore, "update", dropped_once)
    with pytest.raises(CaseStoreUnreachable):
        intake.record_event(event, ctx)
    [case_id] = dropped
    assert cases.get(case_id).evidence_boxes is None and (tmp_path / "spool" / case_id).is_dir()
    [stored] = intake.retry_evidence()  # resumed as a job is: the spool first, then the same violation met again
    assert intake.record_event(event, ctx).id == stored.id == case_id
    case = cases.get(case_id)
    assert case.evidence_ref and case.evidence_digest == verify_bundle(store.path(case.evidence_ref), KEY).digest
    assert case.evidence_boxes == fine.evidence_boxes and case.evidence_boxes["boxes"]
    assert [c.id for c in cases.list()] == [case_id]
    assert len(list((tmp_path / "evidence").rglob("manifest.json"))) == 1
    assert intake.retry_evidence() == [] and cases.get(case_id).updated_at == case.updated_at  # nothing more to do
