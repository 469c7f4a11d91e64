"""Evidence bundles from a real detection on a real photo: contents, manifest, signature, tampering."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.events import EventKind
from detect.evidence import (
    BundleContext,
    EvidenceBuilder,
    EvidenceConfig,
    EvidenceKeyError,
    FrameRing,
    ModelInfo,
    load_hmac_key,
    verify_bundle,
)
from detect.evidence.privacy import privacy_regions
from detect.taxonomy import load_taxonomy

REPO = Path(__file__).resolve().parents[1]
KEY = b"test-key-0123456789abcdef"
T0 = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
MODEL = ModelInfo("yolo11n-int8dq", "ab" * 32)
CASE = "SW20250314-abc"


def _ctx(all_detections, **kw) -> BundleContext:
    base = dict(source_kind="photo_batch",
                source_id="batch-7", address="西湖区 文三路 1 号", grid_cell="330106001001",
                zone_polygon=[(0.0, 0.3), (1.0, 0.3), (1.0, 1.0), (0.0, 1.0)], photo_ids=["bus"],
                privacy_detections=all_detections)
    base.update(kw)
    return BundleContext(**base)


def test_bundle_from_real_photo(tmp_path, bus_event, bus_jpg):
    event, all_dets = bus_event
    builder = EvidenceBuilder(EvidenceConfig(privacy_blur=True), KEY, MODEL)
    bundle = builder.build(event, tmp_path / "b", CASE, _ctx(all_dets))
    m = json.loads((bundle.path / "manifest.json").read_text(encoding="utf-8"))

    # Codes and names come from the taxonomy; times in UTC and local (Asia/Shanghai = UTC+8).
    vt = load_taxonomy().get("illegal_parking")
    code = load_taxonomy().city_code("illegal_parking")
    assert m["violation"] == {
        "type": "illegal_parking", "name_zh": vt.name_zh, "name_en": vt.name_en, "major_class": vt.major_class,
        "minor_class": vt.minor_class, "city": "default", "major_code": code.major_code,
        "minor_code": code.minor_code, "open311_service_code": vt.open311_service_code}
    assert m["times"]["opened"] == {"utc": "2025-03-14T02:00:00+00:00", "local": "2025-03-14T10:00:00+08:00"}
    assert m["source"]["kind"] == "photo_batch" and m["source"]["id"] == "batch-7" and m["source"]["photo_ids"] == ["bus"]
    assert m["location"] == {"lat": 30.2741, "lon": 120.1551, "address": "西湖区 文三路 1 号", "grid_cell": "330106001001"}
    assert m["model"] == {"id": "yolo11n-int8dq", "sha256": "ab" * 32}
    assert m["thresholds"] == event.thresholds and m["thresholds"]["min_conf"] > 0
    assert [d["class_name"] for d in m["detections"]] == ["bus"]

    roles = {a["role"]: a for a in m["artifacts"]}
    # The photo is kept byte for byte (EXIF included).
    assert (bundle.path / roles["original_opened"]["path"]).read_bytes() == bus_jpg.read_bytes()
    # Every listed artifact exists with the listed SHA-256; the signature checks out.
    report = verify_bundle(bundle.path, KEY)
    assert report.ok, report.as_dict()
    # The crop is the bus (with the configured margin), taken from the clean frame.
    crop = cv2.imread(str(bundle.path / roles["crop"]["path"]))
    x1, y1, x2, y2 = roles["crop"]["xyxy"]
    assert crop.shape[:2] == (y2 - y1, x2 - x1)
    bx1, by1, bx2, by2 = event.detections.xyxy[0]
    assert x1 <= bx1 and y1 <= by1 and x2 >= bx2 - 1 and y2 >= by2 - 1
    # The annotated frame differs from the original (boxes, zone, caption drawn), same size.
    annotated = cv2.imread(str(bundle.path / roles["annotated_opened"]["path"]))
    assert annotated.shape == event.frame.image.shape
    assert np.abs(annotated.astype(int) - event.frame.image.astype(int)).mean() > 1
    # Shared copies are blurred where people's heads are; dispatch only gets shared copies.
    assert all(p.startswith("shared/") for p in m["dispatch_attachments"]) and m["dispatch_attachments"]


def test_privacy_blur_changes_only_heads_and_keeps_originals(tmp_path, bus_event):
    event, all_dets = bus_event
    original = event.frame.image.copy()
    bundle = EvidenceBuilder(EvidenceConfig(privacy_blur=True), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets))
    assert np.array_equal(event.frame.image, original)  # the caller's frame is untouched
    shared = cv2.imread(str(bundle.path / "shared" / "opened.jpg")).astype(int)
    annotated = cv2.imread(str(bundle.path / "annotated" / "opened.jpg")).astype(int)
    regions = privacy_regions(all_dets).astype(int)
    people = all_dets.data["class_name"] == "person"
    assert len(regions) == int(people.sum()) + 1  # 4 heads + the bus's plate band
    x1, y1, x2, y2 = regions[0]
    assert np.abs(shared[y1:y2, x1:x2] - annotated[y1:y2, x1:x2]).mean() > 3


def test_privacy_blur_on_a_camera_event_with_tracker_ids(tmp_path, bus_event):
    """Camera events carry tracker ids while the frame's other boxes do not (found by `streetwatch demo`)."""
    from dataclasses import replace

    event, all_dets = bus_event
    tracked = event.detections[:]
    tracked.tracker_id = np.arange(1, len(tracked) + 1)
    bundle = EvidenceBuilder(EvidenceConfig(privacy_blur=True), KEY, MODEL).build(
        replace(event, detections=tracked), tmp_path / "b", CASE, _ctx(all_dets, source_kind="camera", source_id="cam-01"))
    assert (bundle.path / "shared" / "opened.jpg").is_file() and verify_bundle(bundle.path, KEY).ok


def test_one_changed_byte_in_a_crop_is_detected(tmp_path, bus_event):
    event, all_dets = bus_event
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets))
    crop = next(p for p in (bundle.path / "crops").iterdir())
    data = bytearray(crop.read_bytes())
    data[len(data) // 2] ^= 0x01
    crop.write_bytes(bytes(data))
    report = verify_bundle(bundle.path, KEY)
    assert not report.ok and report.tampered == [f"crops/{crop.name}"]

    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    cli = subprocess.run([sys.executable, "-m", "streetwatch.cli", "evidence", "verify", str(bundle.path),
                          "--key-file", str(key_file)], capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 1
    assert f"tampered (hash differs): crops/{crop.name}" in cli.stdout


def test_missing_extra_manifest_edit_and_wrong_key(tmp_path, bus_event):
    event, all_dets = bus_event
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets)).path
    (bundle / "annotated" / "opened.jpg").unlink()
    (bundle / "crops" / "planted.jpg").write_bytes(b"x")
    report = verify_bundle(bundle, KEY)
    assert report.missing == ["annotated/opened.jpg"] and report.extra == ["crops/planted.jpg"]
    assert report.signature == "valid"  # the manifest itself is intact

    assert verify_bundle(bundle, b"another-key-0123456789").signature == "invalid"
    assert verify_bundle(bundle, None).signature == "unchecked" and not verify_bundle(bundle, None).ok

    manifest = bundle / "manifest.json"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("batch-7", "batch-8"), encoding="utf-8")
    report = verify_bundle(bundle, KEY)
    assert report.signature == "invalid" and "manifest.json was changed after signing (digest differs)" in report.problems


def test_update_adds_latest_frame_and_cleared_time(tmp_path, bus_event):
    event, all_dets = bus_event
    builder = EvidenceBuilder(EvidenceConfig(), KEY, MODEL)
    first = builder.build(event, tmp_path / "b", CASE, _ctx(all_dets))
    later = replace(event.frame, ts=T0 + timedelta(minutes=9), frame_id="later", path=None)
    cleared = replace(event, kind=EventKind.CLEARED, at=later.ts, cleared_at=later.ts, frame=later, dwell_s=540.0)
    bundle = builder.update(first.path, cleared)
    assert bundle.digest != first.digest
    assert bundle.manifest["times"]["cleared"]["local"] == "2025-03-14T10:09:00+08:00"
    assert bundle.manifest["dwell_s"] == 540.0
    assert {"original_latest", "annotated_latest"} <= {a["role"] for a in bundle.artifacts()}
    assert verify_bundle(bundle.path, KEY).ok
    # Re-check after the case was handled: a new frame and its outcome, signed again.
    checked = builder.add_verification(bundle.path, later, event.detections[:0], "verified_cleared")
    assert checked.manifest["verifications"][0]["outcome"] == "verified_cleared"
    assert (checked.path / "verification" / "verification_1.jpg").is_file()
    assert verify_bundle(checked.path, KEY).ok


def test_camera_bundle_with_first_sight_and_frame_strip(tmp_path, bus_event):
    event, all_dets = bus_event
    ring = FrameRing(seconds=30)
    frames = [replace(event.frame, ts=T0 + timedelta(seconds=s), frame_id=f"f{s}", path=None) for s in range(0, 40, 2)]
    for f in frames:
        ring.push(f)
    assert len(ring) == 16  # 30 s at one frame every 2 s, inclusive
    opened = frames[-5]
    cam_event = replace(event, frame=opened, first_frame=frames[0], opened_at=opened.ts, at=opened.ts, dwell_s=30.0)
    strip = ring.around(opened.ts, before_s=10, after_s=10)
    builder = EvidenceBuilder(EvidenceConfig(strip_max_frames=4, strip_width=320), KEY, MODEL)
    bundle = builder.build(cam_event, tmp_path / "cam", CASE, _ctx(all_dets, source_kind="camera", source_id="cam-01",
                                                                strip=strip, first_detections=event.detections))
    strip_items = bundle.artifacts("strip")
    # 10 s either side of the opening (t=30 s): f20..f38, thinned evenly to 4 keeping both ends.
    assert [a["frame_id"] for a in strip_items] == ["f20", "f26", "f32", "f38"]
    assert all(a["width"] == 320 for a in strip_items)
    assert bundle.manifest["source"]["frame_ids"] == {"original_first_seen": "f0", "original_opened": opened.frame_id}
    assert (bundle.path / "originals" / "first_seen_original.jpg").is_file()
    assert verify_bundle(bundle.path, KEY).ok
    assert not (tmp_path / "cam.partial").exists()


def test_hmac_key_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("STREETWATCH_EVIDENCE_KEY", raising=False)
    with pytest.raises(EvidenceKeyError, match="STREETWATCH_EVIDENCE_KEY is not set"):
        load_hmac_key(EvidenceConfig())
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "short")
    with pytest.raises(EvidenceKeyError, match="use at least 16"):
        load_hmac_key(EvidenceConfig())
    with pytest.raises(EvidenceKeyError, match="nope: cannot read evidence key"):
        load_hmac_key(EvidenceConfig(hmac_key_file=tmp_path / "nope"))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    assert load_hmac_key(EvidenceConfig()) == KEY
