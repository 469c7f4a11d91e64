"""`streetwatch evidence fetch`: a case's evidence handed over as checked files, from a local store and from S3 (a
real moto_server), through the real Typer app on real bundles of the bus photo."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml
from typer.testing import CliRunner

from detect.evidence.builder import BundleContext, ModelInfo
from detect.evidence.keys import generate_key_pair
from detect.evidence.signing import key_id
from pipelines.cases.intake import Intake
from pipelines.evidence_store import S3EvidenceStore, S3Settings
from pipelines.settings import load_settings
from streetwatch.cli import app
from tests.dispatch_helpers import KEY, small_event
from tests.pg import free_port

MODEL = ModelInfo("yolo11n-int8dq", "ab" * 32)


def _fetch(*args: str, **env: str | None):
    return CliRunner().invoke(app, ["evidence", "fetch", *args], env={"COLUMNS": "250", **env})


def _case(intake: Intake, bus_event, n: int):
    """A camera case of the bus (its violation `n`), its bundle built and stored by `intake`."""
    event = replace(small_event(bus_event), violation_id=f"cam-07:z1:illegal_parking:t{n}", source_id="cam-07")
    return intake.record_event(event, BundleContext(source_kind="camera", address=f"文三路 {n} 号"))


def _settings(tmp_path: Path, **evidence_store) -> Path:
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"}, "evidence_store": {
        "local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool"), **evidence_store}}))
    return config


def test_fetch_from_a_local_store_checks_each_copy_and_refuses_what_it_cannot_hand_over(tmp_path, bus_event, monkeypatch):
    config = _settings(tmp_path)
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    settings = load_settings(config)
    intake = Intake.from_settings(settings, MODEL)
    good, tampered = _case(intake, bus_event, 1), _case(intake, bus_event, 2)
    crop = next((intake.evidence.path(tampered.evidence_ref) / "crops").iterdir())
    sealed = crop.read_bytes()
    crop.write_bytes(sealed[:-1])  # altered in the store after sealing
    # the evidence store down when a third case was sealed: its bundle waits in the spool (the same case store)
    down = S3EvidenceStore(S3Settings(endpoint=f"127.0.0.1:{free_port()}", secure=False, retries=0), "k", "s")
    spooled = _case(Intake(intake.store, down, intake.builder, settings.evidence_store.spool_dir), bus_event, 3)
    assert spooled.evidence_ref is None and (tmp_path / "spool" / spooled.id).is_dir()
    unknown, out = "SW20250314-0123456789ab", tmp_path / "court"

    ran = _fetch(good.id, tampered.id, spooled.id, unknown, "--out", str(out))
    assert ran.exit_code == 1, ran.output  # a copy failed verification: that comes first
    lines = ran.output.splitlines()
    assert lines[0] == (f"[1/4] OK  {out / good.id}  digest {good.evidence_digest}  signature valid (HMAC key "
                        f"{key_id(KEY)} valid)  case {good.id} (digest as recorded at sealing)")
    assert f"[2/4] FAIL {out / tampered.id}  signature: HMAC" in ran.output
    assert f"  tampered (hash differs): crops/{crop.name}" in ran.output
    assert (f"  manifest digest: {tampered.evidence_digest}\n  marked: {out / tampered.id}.VERIFICATION-FAILED.txt"
            in ran.output)
    assert (f"[3/4] NOT FETCHED {spooled.id}: case {spooled.id}: its evidence is still in the spool "
            f"({tmp_path / 'spool' / spooled.id}), waiting for the evidence store") in ran.output
    assert f"[4/4] NOT FETCHED {unknown}: case {unknown} is not in the case store sqlite:///{tmp_path}/cases.db" in ran.output
    assert lines[-1] == f"4 cases to {out}: verified 1, failed 1, not fetched 2"
    # the copies are the stored bundles, file for file; the failed one is written too, and its mark says why
    for case in (good, tampered):
        stored = intake.evidence.path(case.evidence_ref)
        assert {p.relative_to(stored): p.read_bytes() for p in stored.rglob("*") if p.is_file()} == \
            {p.relative_to(out / case.id): p.read_bytes() for p in (out / case.id).rglob("*") if p.is_file()}
    mark = (out / f"{tampered.id}.VERIFICATION-FAILED.txt").read_text(encoding="utf-8")
    assert f"tampered (hash differs): crops/{crop.name}" in mark and "manifest digest: " in mark
    assert sorted(p.name for p in out.iterdir()) == sorted([good.id, tampered.id, f"{tampered.id}.VERIFICATION-FAILED.txt"])

    # fetched again: the folders already there are not overwritten; --force replaces them (and the mark of the old copy)
    (out / good.id / "note.txt").write_text("a clerk's note")
    again = _fetch(good.id, "--out", str(out))
    assert again.exit_code == 3 and f"{out / good.id} already holds case {good.id}: left as it is (--force replaces it)" \
        in again.output and (out / good.id / "note.txt").is_file()
    crop.write_bytes(sealed)  # the store's crop put right
    forced = _fetch(good.id, tampered.id, "--out", str(out), "--force")
    assert forced.exit_code == 0 and forced.output.count(" OK  ") == 2, forced.output
    assert not (out / good.id / "note.txt").exists() and not (out / f"{tampered.id}.VERIFICATION-FAILED.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([good.id, tampered.id])  # nothing half-copied left behind


def test_fetch_from_s3_by_case_and_by_reference_checked_with_the_public_key_alone(tmp_path, bus_event, moto_s3, monkeypatch):
    """An auditor without the HMAC secret: each bundle comes from S3 through the configured store and is checked with
    the published public key; a reference names its case's folder, and an s3:// one on a local store is refused."""
    private, public, kid = generate_key_pair(tmp_path / "keys")
    config = _settings(tmp_path, backend="s3", s3={"endpoint": moto_s3, "secure": False, "bucket": "sw-handover"})
    text = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**text, "evidence": {"signing_key_file": str(private)}}))
    s3_env = {"STREETWATCH_S3_ACCESS_KEY": "testing", "STREETWATCH_S3_SECRET_KEY": "testing"}
    for name, value in {**s3_env, "STREETWATCH_EVIDENCE_KEY": KEY.decode()}.items():
        monkeypatch.setenv(name, value)
    intake = Intake.from_settings(load_settings(config), MODEL)
    first, second = _case(intake, bus_event, 1), _case(intake, bus_event, 2)
    assert second.evidence_ref == f"s3://sw-handover/cases/{second.id}"
    out = tmp_path / "appeal"

    ran = _fetch(first.id, second.evidence_ref, "--out", str(out), "--public-key", str(public), "--config", str(config),
                 STREETWATCH_EVIDENCE_KEY=None)
    assert ran.exit_code == 0, ran.output
    for n, case in enumerate((first, second), 1):
        assert (f"[{n}/2] OK  {out / case.id}  digest {case.evidence_digest}  signature valid (Ed25519 key {kid} valid)  "
                f"case {case.id} (digest as recorded at sealing)") in ran.output
        assert (out / case.id / "manifest.json").is_file() and (out / case.id / "signature.json").is_file()
    assert ran.output.splitlines()[-1] == f"2 cases to {out}: verified 2, failed 0, not fetched 0"

    local = _fetch(second.evidence_ref, "--out", str(tmp_path / "elsewhere"), "--config", str(_settings(tmp_path)))
    assert local.exit_code == 2 and f"{second.evidence_ref} is an S3 reference, but evidence_store.backend is local" in local.output
    assert not (tmp_path / "elsewhere").exists()


def test_fetch_of_a_case_drafted_without_its_bundle_says_so_and_an_out_that_is_a_file_is_refused(tmp_path, monkeypatch):
    """A case drafted before its bundle was built (the process stopped between the two: the pipeline builds it again)
    has nothing stored and nothing in the spool; --out naming a file stops before anything is read."""
    from pipelines.cases import CaseStore, NewCase

    config = _settings(tmp_path)
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    drafted = store.create_case(NewCase(violation_type="illegal_parking", source_kind="camera", source_id="cam-07"))
    ran = _fetch(drafted.id, "not-a-case", "--out", str(tmp_path / "court"))
    assert ran.exit_code == 3, ran.output
    assert f"[1/2] NOT FETCHED {drafted.id}: case {drafted.id} has no stored evidence (state candidate: no bundle built yet)" \
        in ran.output
    assert "[2/2] NOT FETCHED not-a-case: not-a-case: neither a case id (SW<date>-<12 hex digits>) nor a stored reference" \
        in ran.output and list((tmp_path / "court").iterdir()) == []
    refused = _fetch(drafted.id, "--out", str(config))
    assert refused.exit_code == 2 and f"--out {config}: not a folder" in refused.output
