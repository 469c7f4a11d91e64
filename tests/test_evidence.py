"""Evidence bundles from a real detection on a real photo: contents, manifest, signature, tampering."""

from __future__ import annotations

import functools
import hashlib
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
from detect.evidence.builder import BundleContext, EvidenceBuilder, ModelInfo
from detect.evidence.config import EvidenceConfig, EvidenceKeyError, load_hmac_key
from detect.evidence.keys import load_public_keys
from detect.evidence.ring import FrameRing
from detect.evidence.signing import verify_bundle
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


def test_a_bundle_whose_signature_was_removed_is_named_unsigned_for_the_key_given(tmp_path, bus_event):
    """signature.json deleted: the report said `HMAC missing` and nothing else, no file named, and an auditor who gave
    only a public key was told of an HMAC nobody asked for while the Ed25519 signature stayed `unchecked`."""
    from detect.evidence.keys import load_signing_key
    from detect.evidence.keys import generate_key_pair

    event, all_dets = bus_event
    private, public, _ = generate_key_pair(tmp_path / "keys")
    config = EvidenceConfig(signing_key_file=private)
    bundle = EvidenceBuilder(config, KEY, MODEL, signer=load_signing_key(config)).build(
        event, tmp_path / "b", CASE, _ctx(all_dets)).path
    (bundle / "signature.json").unlink()
    unsigned = "signature.json is missing: the bundle is not signed, so nothing shows its files unaltered"

    with_secret = verify_bundle(bundle, KEY)
    assert not with_secret.ok and with_secret.signature == "missing" and with_secret.problems == [unsigned]
    with_public_key = verify_bundle(bundle, None, public_keys=load_public_keys(public))
    assert not with_public_key.ok and with_public_key.problems == [unsigned]
    assert (with_public_key.signature, with_public_key.public_signature) == ("unchecked", "missing")

    cli = subprocess.run([sys.executable, "-m", "streetwatch.cli", "evidence", "verify", str(bundle), "--public-key",
                          str(public), "--no-store"], capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 1
    assert cli.stdout.splitlines() == [f"FAIL {bundle}  signature: Ed25519 missing", f"  problem: {unsigned}"]


@pytest.mark.parametrize(("file", "edit", "reported"), [
    ("manifest.json", lambda m: m.update(artifacts=["annotated/opened.jpg"]), 'artifact entry "annotated/opened.jpg" is not an object'),
    ("manifest.json", lambda m: m.update(artifacts=None), "`artifacts` is a JSON NoneType, not a list"),
    ("manifest.json", lambda m: m.update(artifacts={"annotated/opened.jpg": "ab"}), "`artifacts` is a JSON dict, not a list"),
    ("signature.json", lambda s: [s], "signature.json is unreadable: a JSON list, not an object"),
])
def test_a_manifest_or_signature_edited_out_of_shape_is_reported_not_a_traceback(tmp_path, bus_event, file, edit, reported):
    """An auditor's `evidence verify` on a bundle whose JSON files were rewritten into another shape gets FAIL and
    the reasons (exit 1), not a Python traceback."""
    event, all_dets = bus_event
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets)).path
    data = json.loads((bundle / file).read_text(encoding="utf-8"))
    data = edit(data) or data
    (bundle / file).write_text(json.dumps(data), encoding="utf-8")
    report = verify_bundle(bundle, KEY)
    assert not report.ok and report.signature == "invalid" and any(reported in p for p in report.problems)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    cli = subprocess.run([sys.executable, "-m", "streetwatch.cli", "evidence", "verify", str(bundle), "--key-file",
                          str(key_file), "--no-store"], capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 1 and cli.stdout.startswith("FAIL") and reported in cli.stdout, cli.stderr[-2000:]
    assert "Traceback" not in cli.stderr


def test_symbolic_links_inside_a_bundle_fail_it(tmp_path, bus_event):
    """A linked folder of unlisted files was not reported (the walk for `extra` files does not enter links) and a
    listed file replaced by a link to a copy outside the bundle passed: both verified OK."""
    event, all_dets = bus_event
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets)).path
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "planted.jpg").write_bytes(b"x")
    (bundle / "crops" / "more").symlink_to(outside, target_is_directory=True)
    frame = bundle / "annotated" / "opened.jpg"
    (outside / "opened.jpg").write_bytes(frame.read_bytes())
    frame.unlink()
    frame.symlink_to(outside / "opened.jpg")
    report = verify_bundle(bundle, KEY)
    assert report.signature == "valid" and not report.ok
    assert report.problems == [f"annotated/opened.jpg is a symbolic link (to {outside / 'opened.jpg'}); a bundle holds its files itself",
                               f"crops/more is a symbolic link (to {outside}); a bundle holds its files itself"]


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
    with pytest.raises(EvidenceKeyError, match="^evidence.hmac_key_file: .*nope: cannot read evidence key"):
        load_hmac_key(EvidenceConfig(hmac_key_file=tmp_path / "nope"))
    from typer.testing import CliRunner

    from streetwatch.cli import app as cli
    given = CliRunner().invoke(cli, ["evidence", "verify", str(tmp_path), "--key-file", str(tmp_path / "nope"), "--no-store"])
    assert given.exit_code == 2 and f"--key-file: {tmp_path / 'nope'}: cannot read evidence key" in given.output, given.output
    assert "hmac_key_file" not in given.output  # the command line's file, not the settings'
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    assert load_hmac_key(EvidenceConfig()) == KEY


@pytest.mark.slow  # 9 s: seals and checks bundles across a rotation
def test_public_key_signature_verifies_without_the_secret_across_a_key_rotation(tmp_path, bus_event):
    """Issue 14, item 5: Ed25519 over the digest, the public keys published by the service, `evidence verify
    --public-key` with no secret at all, and a rotation that keeps the earlier bundles verifiable."""
    import base64
    import os

    from fastapi.testclient import TestClient

    from detect.evidence.keys import load_signing_key
    from tests.api_helpers import make_app, settings_for

    event, all_dets = bus_event
    env = {k: v for k, v in os.environ.items() if k not in ("STREETWATCH_EVIDENCE_KEY", "STREETWATCH_CONFIG")}
    env["PYTHONPATH"] = str(REPO)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streetwatch.cli", "evidence", *args], capture_output=True,
                              text=True, cwd=REPO, env=env, timeout=120)

    made = [cli("keygen", "--out", str(tmp_path / f"keys{i}")) for i in (1, 2)]
    assert all(m.returncode == 0 for m in made), made
    first, second = (next((tmp_path / f"keys{i}").glob("*.pub.pem")) for i in (1, 2))
    private = [next(p for p in (tmp_path / f"keys{i}").glob("*.pem") if not p.name.endswith(".pub.pem")) for i in (1, 2)]
    assert oct(private[0].stat().st_mode & 0o777) == "0o600"

    before = EvidenceConfig(signing_key_file=private[0])
    old = EvidenceBuilder(before, KEY, MODEL, signer=load_signing_key(before)).build(event, tmp_path / "old", CASE, _ctx(all_dets))
    # Rotation: a new signing key; the old public key stays published.
    after = EvidenceConfig(signing_key_file=private[1], published_keys=[first])
    new = EvidenceBuilder(after, KEY, MODEL, signer=load_signing_key(after)).build(event, tmp_path / "new", CASE, _ctx(all_dets))

    settings = settings_for(tmp_path / "svc").model_copy(update={"evidence": after})
    app, _ = make_app(settings)
    with TestClient(app) as client:
        listed = client.get("/api/v1/evidence/keys")  # public: no token
        assert listed.status_code == 200
        keys = {k["key_id"]: k for k in listed.json()["keys"]}
        assert [k["current"] for k in keys.values()].count(True) == 1 and len(keys) == 2
        downloads = {}
        for kid in keys:
            pem = client.get(f"/api/v1/evidence/keys/{kid}.pem")
            assert pem.status_code == 200 and pem.text == keys[kid]["public_key_pem"]
            downloads[kid] = tmp_path / f"published-{kid}.pem"
            downloads[kid].write_text(pem.text)
        assert client.get("/api/v1/evidence/keys/0123456789abcdef.pem").status_code == 404
        first.rename(first.with_suffix(".gone"))  # unreadable after start: the keys cannot be listed in full
        gone = client.get("/api/v1/evidence/keys")
        detail = gone.json()["detail"]
        assert gone.status_code == 503 and "evidence.published_keys: cannot read public key" in detail, detail
        assert str(tmp_path) not in detail  # a public route: the file named by its setting, not its server path
        first.with_suffix(".gone").rename(first)
    old_id = json.loads((old.path / "signature.json").read_text())["public_key_signature"]["key_id"]
    new_id = json.loads((new.path / "signature.json").read_text())["public_key_signature"]["key_id"]
    assert keys[new_id]["current"] and not keys[old_id]["current"]

    # No secret anywhere in this environment: the published public keys are enough.
    copy = cli("verify", str(old.path), "--public-key", str(downloads[old_id]))  # a folder not named by its case
    assert copy.returncode == 0 and f"manifest names case {CASE} (not checked: give --case)" in copy.stdout
    ok = cli("verify", str(new.path), "--public-key", str(downloads[new_id]))
    assert ok.returncode == 0 and f"Ed25519 key {new_id} valid" in ok.stdout
    both = tmp_path / "both.pem"
    both.write_text("".join(p.read_text() for p in downloads.values()))
    assert cli("verify", str(old.path), str(new.path), "--public-key", str(both)).returncode == 0
    wrong = cli("verify", str(old.path), "--public-key", str(downloads[new_id]), "--json")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["public_signature"] == "unknown key"
    refused = cli("verify", str(old.path))  # neither a secret nor a public key: refused, not "ok"
    assert refused.returncode == 2 and "without the secret, check the public-key signature: --public-key FILE" in refused.stderr

    # Someone without the private key rewrites the manifest and its digest: the public signature fails.
    manifest = new.path / "manifest.json"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("batch-7", "batch-8"), encoding="utf-8")
    edited = verify_bundle(new.path, None, public_keys=load_public_keys(both))
    # the check made is the one said invalid: no "HMAC invalid" to an auditor who had no secret to check it with
    assert (edited.public_signature, edited.signature) == ("invalid", "unchecked") and not edited.ok
    signature = json.loads((new.path / "signature.json").read_text())
    signature["digest"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    (new.path / "signature.json").write_text(json.dumps(signature))
    forged = verify_bundle(new.path, None, public_keys=load_public_keys(both))
    assert forged.public_signature == "invalid" and not forged.ok
    signature["public_key_signature"]["signature"] = base64.b64encode(b"x" * 64).decode()
    (new.path / "signature.json").write_text(json.dumps(signature))
    assert verify_bundle(new.path, None, public_keys=load_public_keys(both)).public_signature == "invalid"


def test_a_digest_given_as_a_platform_shows_it_ties_the_bundle_and_a_mistyped_one_is_named(tmp_path, bus_event, monkeypatch):
    """A digest copied from a platform's record or a printout in upper case, or cut in groups, was compared byte for
    byte: the very bundle the platform received failed as 'an older or another bundle'. It is read as hex digits."""
    from typer.testing import CliRunner

    from streetwatch.cli import app as cli

    event, all_dets = bus_event
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    monkeypatch.delenv("STREETWATCH_CONFIG", raising=False)
    upper = " ".join(bundle.digest.upper()[i:i + 8] for i in range(0, 64, 8))
    ran = CliRunner().invoke(cli, ["evidence", "verify", str(bundle.path), "--no-store", "--digest", upper])
    assert ran.exit_code == 0 and ran.output.startswith("OK"), ran.output
    other = CliRunner().invoke(cli, ["evidence", "verify", str(bundle.path), "--no-store", "--digest", "f" * 64])
    assert other.exit_code == 1 and "is not the one recorded" in other.output, other.output
    typo = CliRunner().invoke(cli, ["evidence", "verify", str(bundle.path), "--no-store", "--digest", bundle.digest[:63]])
    assert typo.exit_code == 2 and "is not a SHA-256 digest (64 hexadecimal digits)" in typo.output, typo.output


def test_a_bundle_signed_with_a_key_not_given_names_the_key_to_fetch(tmp_path, bus_event):
    """A bundle signed after a rotation, checked with the public key kept from before, was answered 'after a rotation,
    give the earlier key too': the key missing was the later one. The problem names the key and where it is published."""
    from detect.evidence.keys import generate_key_pair, load_signing_key

    event, all_dets = bus_event
    (old_private, old_public, _), (new_private, _, new_id) = (generate_key_pair(tmp_path / name) for name in ("old", "new"))
    after = EvidenceConfig(signing_key_file=new_private, published_keys=[old_public])
    bundle = EvidenceBuilder(after, KEY, MODEL, signer=load_signing_key(after)).build(event, tmp_path / "b", CASE, _ctx(all_dets))
    report = verify_bundle(bundle.path, None, public_keys=load_public_keys(old_public))
    assert report.public_signature == "unknown key" and report.public_key_id == new_id and not report.ok
    assert f"give that key too (the service's GET /api/v1/evidence/keys/{new_id}.pem)" in report.problems[0], report.problems


def test_crop_names_are_windows_safe_and_old_colon_names_still_verify(tmp_path, bus_event):
    """A verifier's class (`verified:street_stall`) made `crops/00_verified:street_stall.jpg`, which a Windows PC or share
    cannot hold; new bundles name it without the colon, and a bundle sealed with the old name verifies as before."""
    from detect.evidence.signing import read_manifest, write_signed_manifest

    event, all_dets = bus_event
    verdict = event.detections[:]
    verdict.data["class_name"] = np.array(["verified:street_stall"] * len(verdict))
    event = replace(event, violation_type="street_stall", detections=verdict)
    bundle = EvidenceBuilder(EvidenceConfig(privacy_blur=True), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets))
    names = [p.relative_to(bundle.path).as_posix() for p in bundle.path.rglob("*") if p.is_file()]
    assert "crops/00_verified-street_stall.jpg" in names and "shared/crop_00_verified-street_stall.jpg" in names
    assert not [n for n in names if set(n) & set('<>:"\\|?*')]
    assert verify_bundle(bundle.path, KEY).ok

    # A bundle sealed by the code before: the colon names, listed in its manifest, signed.
    manifest = read_manifest(bundle.path)
    for artifact in manifest["artifacts"]:
        if "verified-" in artifact["path"]:
            old = artifact["path"].replace("verified-", "verified:")
            (bundle.path / artifact["path"]).rename(bundle.path / old)
            artifact["path"] = old
    write_signed_manifest(bundle.path, manifest, KEY)
    assert (bundle.path / "crops" / "00_verified:street_stall.jpg").is_file()
    report = verify_bundle(bundle.path, KEY)
    assert report.ok, report.as_dict()


@functools.cache
def _reader():
    from detect.ocr import TextReader

    return TextReader(min_score=0.3, det_limit_side_len=960, det_limit_type="max")  # a strip read as it is, not enlarged


def _read_back(image: np.ndarray, box: tuple[int, int, int, int]) -> str:
    """The text OCR reads in a box of an annotated frame."""
    from detect.fields import TEXT

    x1, y1, x2, y2 = box
    return " ".join(_reader().read(np.ascontiguousarray(image[y1:y2, x1:x2])).data[TEXT])


def test_the_annotated_frame_names_the_type_and_its_box_in_chinese_and_the_time_by_its_offset(tmp_path, bus_event):
    """City staff and the platform read the annotated frames: they carried the detector's ids (`bus 0.94`) and the time
    zone as `CST`, which reads as US Central time too. With the Chinese font of install-system-deps.sh the caption names
    the type in Chinese beside its id, each box its class's Chinese name, and the time its offset. Read back by OCR."""
    from detect.evidence import drawing

    assert drawing.chinese_font() is not None, "no Chinese font: run scripts/install-system-deps.sh (fonts-noto-cjk)"
    event, all_dets = bus_event
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets))
    annotated = cv2.imread(str(bundle.path / "annotated" / "opened.jpg"))
    caption = _read_back(annotated, (0, 0, annotated.shape[1], 60))
    assert "机动车乱停放" in caption and "illegal_parking" in caption and "UTC+08:00" in caption and "CST" not in caption, caption
    x1, y1 = (int(v) for v in event.detections.xyxy[0][:2])
    assert "客车" in _read_back(annotated, (max(0, x1 - 10), max(0, y1 - 40), x1 + 200, y1 + 10))
    assert verify_bundle(bundle.path, KEY).ok


def test_without_a_chinese_font_the_annotated_frame_keeps_the_ids(tmp_path, bus_event, monkeypatch):
    """No Chinese font on the machine: OpenCV's font has no Chinese glyphs, so the ids are drawn, never boxes of tofu."""
    _without_chinese_font(monkeypatch)
    event, all_dets = bus_event
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", CASE, _ctx(all_dets))
    annotated = cv2.imread(str(bundle.path / "annotated" / "opened.jpg"))
    caption = _read_back(annotated, (0, 0, annotated.shape[1], 60))
    assert "illegal_parking" in caption and "UTC+08:00" in caption.replace(" ", "") and "机动车" not in caption, caption


@pytest.mark.parametrize("font", ["chinese", "none"])
def test_the_caption_of_a_portrait_phone_photo_stays_inside_the_frame(tmp_path, bus_event, monkeypatch, font):
    """The caption (case id, type, photo id, time) was drawn at 1/1200 of the short side whatever its length: on a
    portrait photo (bus.jpg, 810 x 1080; a phone's 3024 x 4032) it ran past both edges, the case id cut off. So with
    the Chinese font (PIL) as without one (OpenCV)."""
    if font == "none":
        _without_chinese_font(monkeypatch)
    event, all_dets = bus_event
    event = replace(event, source_id="c99b189ab2efcfe4")  # a triage photo's id, as photo cases name it
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(event, tmp_path / "b", "SW20261207-47f88fe4d0ee",
                                                                  _ctx(all_dets))
    annotated = cv2.imread(str(bundle.path / "annotated" / "opened.jpg")).astype(int)
    original = event.frame.image.astype(int)
    banner = slice(0, 30)  # the caption's rows; no box reaches them on this photo
    for edge in (slice(0, 4), slice(-4, None)):  # the photo shows at both ends of the caption's rows
        assert np.abs(annotated[banner, edge] - original[banner, edge]).mean() < 12
    assert np.abs(annotated[banner] - original[banner]).mean() > 20  # and the caption is there


@pytest.mark.parametrize("font", ["chinese", "none"])
def test_the_annotated_frames_labels_leave_the_boxes_they_name_in_sight(tmp_path, bus_event, monkeypatch, font):
    """The annotated frame (a dispatch attachment) drew each box's class above it: the three lines of a small ad got
    three labels, each over the line above it, so its words (专业开锁, 办证) were hidden by its own labels. One label a
    class, above all its boxes, leaves each box's inside as the photo shows it (lettered in Chinese or not)."""
    import supervision as sv

    if font == "none":
        _without_chinese_font(monkeypatch)
    event, all_dets = bus_event
    lines = np.array([[300, 500 + 60 * i, 620, 550 + 60 * i] for i in range(3)], dtype=float)  # a slip's three lines
    ad = replace(event, violation_type="flyposting",
                 detections=sv.Detections(xyxy=lines, confidence=np.array([1.0, 0.98, 0.9]), class_id=np.zeros(3, dtype=int),
                                          data={"class_name": np.array(["small_ad_text"] * 3)}))
    bundle = EvidenceBuilder(EvidenceConfig(), KEY, MODEL).build(ad, tmp_path / "b", CASE, _ctx(all_dets, zone_polygon=None))
    annotated = cv2.imread(str(bundle.path / "annotated" / "opened.jpg")).astype(int)
    original = event.frame.image.astype(int)
    for x1, y1, x2, y2 in lines.astype(int):
        inside = (slice(y1 + 5, y2 - 4), slice(x1 + 5, x2 - 4))  # within the box's border
        assert np.abs(annotated[inside] - original[inside]).mean() < 10  # JPEG's error, no label over it
    assert np.abs(annotated[430:500, 300:620] - original[430:500, 300:620]).mean() > 20  # its label, above them


def _without_chinese_font(monkeypatch) -> None:
    """As on a machine without fonts-noto-cjk: the evidence is lettered with OpenCV's font."""
    from detect.evidence import drawing

    monkeypatch.setattr(drawing, "chinese_font", lambda: None)
