"""Retention of rejected cases' evidence (`cases.rejected_evidence_keep_days`): the bundles of false alarms (faces,
plates, passers-by of people who did nothing wrong) are removed from the evidence store, local or S3, that many days
after the rejection; the case and its digest stay, marked, and its pages, the export of reviews and a reopening say so."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from detect.evidence.builder import BundleContext, EvidenceBuilder, ModelInfo
from detect.evidence.config import EvidenceConfig
from pipelines.cases import CaseState, CaseStore
from pipelines.cases.intake import Intake
from pipelines.cases.retention import prune_rejected_evidence
from pipelines.cases.schema import audit_log
from pipelines.cases.store import NotReopenable, evidence_removed
from pipelines.evidence_store import LocalEvidenceStore, S3EvidenceStore, S3Settings, StorageError
from pipelines.retrain.reviews import export_reviews
from pipelines.settings import load_settings
from streetwatch.cli import app
from streetwatch.commands.cases import RETENTION_OFF
from tests.api_helpers import auth, draft_cases, make_app, settings_for

KEY = b"test-key-0123456789abcdef"
MODEL = ModelInfo("yolo11n-int8dq", "ab" * 32)
REJECTED_AT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def cases_url(request, tmp_path) -> str:
    """The case store's URL: SQLite and the suite's PostgreSQL, where the JSON-path queries of the marked cases
    (`evidence_marked_removed`) compile differently (JSON_EXTRACT there, ->> here)."""
    return f"sqlite:///{tmp_path}/cases.db" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")


def _cases(intake: Intake, bus_event) -> tuple[str, str, str]:
    """Three cases of the bus photo with stored evidence: one rejected in review at REJECTED_AT, one confirmed, one
    still a candidate."""
    event, _ = bus_event
    ids = [intake.record_event(replace(event, violation_id=f"batch-7:image:illegal_parking:o{i}"),
                               BundleContext(source_kind="photo_batch", source_id="batch-7")).id for i in range(3)]
    rejected, confirmed, candidate = ids
    intake.store.review(rejected, approve=False, reviewer="li.wei", reason_code="not_a_violation", now=REJECTED_AT)
    intake.store.review(confirmed, approve=True, reviewer="li.wei", target="sim", now=REJECTED_AT)
    return rejected, confirmed, candidate


def _audits(store: CaseStore) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(audit_log).where(audit_log.c.action == "remove_evidence"))]


def test_a_rejected_cases_local_evidence_goes_after_the_retention_the_case_and_digest_stay(tmp_path, cases_url, bus_event):
    store = CaseStore(cases_url)
    evidence = LocalEvidenceStore(tmp_path / "evidence")
    intake = Intake(store, evidence, EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "spool")
    rejected, confirmed, candidate = _cases(intake, bus_event)
    before = store.get(rejected)
    folder = evidence.path(before.evidence_ref)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    assert prune_rejected_evidence(store, evidence, 0, now=REJECTED_AT + timedelta(days=400)).cases == []  # 0: for ever
    assert prune_rejected_evidence(store, evidence, 30, now=REJECTED_AT + timedelta(days=29)).cases == []
    dry = prune_rejected_evidence(store, evidence, 30, now=REJECTED_AT + timedelta(days=31), dry_run=True)
    assert (dry.cases, dry.bytes) == ([rejected], size) and folder.is_dir() and _audits(store) == []

    now = REJECTED_AT + timedelta(days=31)
    done = prune_rejected_evidence(store, evidence, 30, now=now)
    assert (done.cases, done.bytes, done.failed) == ([rejected], size, [])
    assert not folder.exists() and not list((tmp_path / "evidence").glob(f".{rejected}*"))
    after = store.get(rejected)
    assert after.state is CaseState.REJECTED and after.evidence_removed_at == now.isoformat()
    assert (after.evidence_digest, after.evidence_ref) == (before.evidence_digest, before.evidence_ref)  # for the record
    [record] = _audits(store)
    assert (record["case_id"], record["actor"], record["role"]) == (rejected, "retention", "system")
    assert record["details"] == {"rejected_at": REJECTED_AT.isoformat(), "keep_days": 30,
                                 "evidence_digest": before.evidence_digest, "bytes": size}
    for kept in (confirmed, candidate):  # only rejected cases' evidence goes
        assert evidence.path(store.get(kept).evidence_ref).is_dir() and store.get(kept).evidence_removed_at is None
    assert prune_rejected_evidence(store, evidence, 30, now=now + timedelta(days=1)).cases == []  # once only

    with pytest.raises(NotReopenable, match="证据已按保留期删除"):  # a candidate without pictures: nothing to judge
        store.reopen(rejected, actor="wang.fang", note="误点", within=timedelta(days=365), now=now)
    _, n, findings = export_reviews(store, evidence, tmp_path / "export")
    assert n == 1 and [str(f) for f in findings if rejected in str(f)] == [
        f"warning: case {rejected}: 证据已按保留期删除（{now:%Y-%m-%d}，驳回案件证据保留期 cases.rejected_evidence_keep_days） evidence "
        f"removed after the retention period on {now:%Y-%m-%d} (cases.rejected_evidence_keep_days); the case and its "
        "evidence digest are kept: skipped (export the reviews before the retention removes them)"]


def test_a_rejected_cases_s3_evidence_goes_every_object_of_it(tmp_path, bus_event, moto_s3):
    settings = S3Settings(endpoint=moto_s3, secure=False, bucket="sw-retention")
    evidence = S3EvidenceStore(settings, access_key="testing", secret_key="testing")
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    intake = Intake(store, evidence, EvidenceBuilder(EvidenceConfig(privacy_blur=True), KEY, MODEL), tmp_path / "spool")
    rejected, confirmed, _ = _cases(intake, bus_event)

    def objects(case_id: str) -> dict[str, int]:
        return {o.object_name: o.size for o in evidence.client.list_objects("sw-retention", prefix=f"cases/{case_id}/",
                                                                            recursive=True)}

    stored = objects(rejected)
    assert any("/shared/" in name for name in stored)  # the blurred copies dispatch attaches go with it
    done = prune_rejected_evidence(store, evidence, 30, now=REJECTED_AT + timedelta(days=31))
    assert (done.cases, done.bytes) == ([rejected], sum(stored.values()))
    assert objects(rejected) == {} and objects(confirmed)
    assert store.get(rejected).evidence_removed_at is not None


def _rejected_a_month_ago(tmp_path, bus_event, monkeypatch) -> tuple[Intake, object]:
    """A site whose settings ($STREETWATCH_CONFIG) keep rejected cases' evidence 30 days, and a case rejected 31 days
    ago: what the command-line tests of the retention start from."""
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({
        "cases": {"url": f"sqlite:///{tmp_path}/cases.db", "rejected_evidence_keep_days": 30},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    intake = Intake.from_settings(load_settings(config), MODEL)
    event, _ = bus_event
    case = intake.record_event(event, BundleContext(source_kind="photo_batch", source_id="batch-7"))
    intake.store.review(case.id, approve=False, reviewer="li.wei", reason_code="not_a_violation",
                        now=datetime.now(UTC) - timedelta(days=31))
    return intake, case


def test_prune_evidence_command_says_what_it_removes(tmp_path, bus_event, monkeypatch):
    intake, case = _rejected_a_month_ago(tmp_path, bus_event, monkeypatch)
    folder = intake.evidence.path(intake.store.get(case.id).evidence_ref)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    runner = CliRunner()
    dry = runner.invoke(app, ["cases", "prune-evidence", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output == (f"{case.id}\nwould remove the evidence of 1 case rejected more than 30 days ago "
                          f"(cases.rejected_evidence_keep_days): {size} bytes ({size / 1e6:.1f} MB)\n")
    assert folder.is_dir()
    done = runner.invoke(app, ["cases", "prune-evidence"])
    assert done.exit_code == 0 and done.output.startswith(f"{case.id}\nremoved the evidence of 1 case") and not folder.exists()
    again = runner.invoke(app, ["cases", "prune-evidence"])
    assert again.output.startswith("removed the evidence of 0 cases")


def test_verify_and_show_of_a_case_whose_evidence_the_retention_removed_say_so(tmp_path, bus_event, monkeypatch):
    """`evidence verify` of a bundle the retention removed said only that it does not exist, as of evidence lost; it
    says the retention removed it and when (exit 1 still, its folder or its stored reference alike), and `cases show`
    names the removal in a line of its own, not only inside the details JSON."""
    intake, case = _rejected_a_month_ago(tmp_path, bus_event, monkeypatch)
    folder = intake.evidence.path(case.evidence_ref)
    runner = CliRunner()
    assert runner.invoke(app, ["evidence", "verify", str(folder)]).exit_code == 0
    assert runner.invoke(app, ["cases", "prune-evidence"]).exit_code == 0 and not folder.exists()
    removed = intake.store.get(case.id)
    said = evidence_removed(removed)
    assert said.startswith(f"证据已按保留期删除（{removed.evidence_removed_at[:10]}，")

    for bundle in (str(folder), case.evidence_ref):
        checked = runner.invoke(app, ["evidence", "verify", bundle])
        assert checked.exit_code == 1, checked.output
        assert checked.output.splitlines()[-1] == f"  problem: {said}", checked.output
    as_json = json.loads(runner.invoke(app, ["evidence", "verify", str(folder), "--json"]).output)
    assert as_json["problems"] == [f"{folder}: does not exist", said]

    shown = runner.invoke(app, ["cases", "show", case.id])
    assert shown.exit_code == 0 and f"evidence_removed {said}" in shown.output.splitlines(), shown.output
    # handed over, it is not fetched, and the line says the retention removed it
    fetched = runner.invoke(app, ["evidence", "fetch", case.id, "--out", str(tmp_path / "court")])
    assert fetched.exit_code == 3 and f"[1/1] NOT FETCHED {case.id}: case {case.id}: {said}" in fetched.output, fetched.output
    assert list((tmp_path / "court").iterdir()) == []


def test_prune_evidence_with_the_retention_off_and_no_case_store_says_so_and_opens_nothing(tmp_path, monkeypatch):
    """With cases.rejected_evidence_keep_days 0 (the default: the retention off) and no case store yet, prune-evidence
    (a cron line set up before the first case) failed 'no case store at …' (exit 2); nothing can have been marked
    removed, so it says the retention is off and how to turn it on, exit 0, creating no store, --dry-run alike."""
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({
        "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    for args in ([], ["--dry-run"]):
        run = CliRunner().invoke(app, ["cases", "prune-evidence", *args])
        assert (run.exit_code, run.output) == (0, f"{RETENTION_OFF}\n"), (args, run.output)
    assert "cases.rejected_evidence_keep_days: N" in RETENTION_OFF
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sw.yaml"]


def test_serve_finishes_a_deletion_left_over_at_0_and_logs_it(tmp_path, monkeypatch, bus_event, caplog):
    """A case marked removed by an earlier round whose bundle was not deleted (the deletion failed after the mark),
    then cases.rejected_evidence_keep_days set back to 0: serve's round (at start-up and hourly) deletes what is left
    and logs it in its one line, as at N; at 0 with nothing left it logs nothing."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    settings = settings_for(tmp_path)
    assert settings.cases.rejected_evidence_keep_days == 0
    app_, _ = make_app(settings)
    ctx = app_.state.ctx
    [case_id] = draft_cases(app_, bus_event, [{}])
    now = datetime.now(UTC)
    ctx.store.review(case_id, approve=False, reviewer="reviewer-user", reason_code="duplicate", now=now - timedelta(days=2))
    assert ctx.store.mark_evidence_removed(case_id, cutoff=now - timedelta(days=1), record={"keep_days": 1}, now=now)
    folder = ctx.evidence.path(ctx.store.get(case_id).evidence_ref)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size
    with caplog.at_level(logging.INFO, logger="api.app"), TestClient(app_):
        pass
    assert not folder.exists() and ctx.store.get(case_id).details["evidence_removed_done_at"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected evidence retention")]
    assert lines == [f"rejected evidence retention (cases.rejected_evidence_keep_days: 0): evidence of 1 rejected case(s) "
                     f"removed, {size} bytes ({size / 1e6:.1f} MB) freed"], caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="api.app"), TestClient(app_):
        pass
    assert "rejected evidence retention" not in caplog.text


def test_serve_removes_it_at_start_up_and_the_case_page_says_so_and_refuses_a_reopening(tmp_path, monkeypatch, bus_event,
                                                                                        caplog):
    """serve's retention round (at start-up, then hourly beside the jobs' and warning frames'): the case page says
    证据已按保留期删除 where its images were, an image link handed out before answers 404 saying so, and a reopening,
    within service.reopen_within_days though it is, is 409: a candidate without its pictures can be neither judged nor
    sent."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    settings = settings_for(tmp_path)
    settings = settings.model_copy(update={"cases": settings.cases.model_copy(update={"rejected_evidence_keep_days": 1})})
    app_, tokens = make_app(settings)
    ctx = app_.state.ctx
    old, recent = draft_cases(app_, bus_event, [{}, {}])
    for case_id, days in ((old, 2), (recent, 0)):
        ctx.store.review(case_id, approve=False, reviewer="reviewer-user", reason_code="duplicate",
                         now=datetime.now(UTC) - timedelta(days=days, minutes=1))
    image = ctx.signer.url(old, "originals/opened_original.jpg")
    reviewer = auth(tokens["reviewer"])
    with caplog.at_level(logging.INFO, logger="api.app"), TestClient(app_) as client:
        detail = client.get(f"/api/v1/cases/{old}", headers=reviewer).json()
        kept = client.get(f"/api/v1/cases/{recent}", headers=reviewer).json()
        gone = client.get(image)
        refused = client.post(f"/api/v1/cases/{old}/reopen", headers=reviewer, json={"note": "误点驳回"})
    assert detail["case"]["has_evidence"] is False and detail["case"]["evidence_digest"]
    assert detail["evidence"]["images"] == [] and detail["evidence"]["error"].startswith("证据已按保留期删除")
    assert kept["case"]["has_evidence"] is True and kept["evidence"]["images"]
    assert gone.status_code == 404 and "证据已按保留期删除" in gone.json()["detail"]
    assert refused.status_code == 409 and "证据已按保留期删除" in refused.json()["detail"]
    assert ctx.store.get(old).state is CaseState.REJECTED
    assert ("rejected evidence retention (cases.rejected_evidence_keep_days: 1): evidence of 1 rejected case(s) removed"
            in caplog.text), caplog.text


def test_the_bundle_is_deleted_after_the_case_is_marked_with_no_write_transaction_open(tmp_path, bus_event, monkeypatch):
    """The case's row is held only to mark it and write the audit record: while the evidence store deletes the bundle
    (a folder, or an S3 bundle's objects one by one) another writer (a reviewer, a job) updates another case, where it
    waited on SQLite for the whole deletion, at every rejected case of the hourly round."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    evidence = LocalEvidenceStore(tmp_path / "evidence")
    intake = Intake(store, evidence, EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "spool")
    rejected, confirmed, _ = _cases(intake, bus_event)
    remove_bundle, seen = evidence.remove_bundle, {}

    def remove_while_another_writes(ref: str) -> int:
        probe = sqlite3.connect(tmp_path / "cases.db", timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # "database is locked" at once while a write transaction is open
            probe.execute("ROLLBACK")
            seen["write lock"] = "free"
        except sqlite3.OperationalError as exc:
            seen["write lock"] = str(exc)
        finally:
            probe.close()
        if seen["write lock"] == "free":
            seen["note"] = store.add_note(confirmed, actor="wang.fang", text="店主已整改", now=REJECTED_AT).details["notes"]
        seen["marked"], seen["audits"] = store.get(rejected).evidence_removed_at, len(_audits(store))
        return remove_bundle(ref)

    monkeypatch.setattr(evidence, "remove_bundle", remove_while_another_writes)
    now = REJECTED_AT + timedelta(days=31)
    done = prune_rejected_evidence(store, evidence, 30, now=now)
    assert (done.cases, done.failed) == ([rejected], [])
    assert seen == {"write lock": "free", "note": [{"by": "wang.fang", "at": REJECTED_AT.isoformat(), "text": "店主已整改"}],
                    "marked": now.isoformat(), "audits": 1}  # marked and audited, committed, before the deletion


def test_a_deletion_that_fails_after_the_mark_is_completed_by_the_next_round(tmp_path, cases_url, bus_event, monkeypatch):
    """The case is marked (its page says removed) before its bundle is deleted; a deletion that fails is reported and the
    next round, finding the bundle of a marked case still there, removes it, audited once."""
    store = CaseStore(cases_url)
    evidence = LocalEvidenceStore(tmp_path / "evidence")
    intake = Intake(store, evidence, EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "spool")
    rejected, _, _ = _cases(intake, bus_event)
    folder = evidence.path(store.get(rejected).evidence_ref)
    size = evidence.bundle_bytes(store.get(rejected).evidence_ref)
    remove_bundle = evidence.remove_bundle

    def fails_once(ref: str) -> int:
        monkeypatch.setattr(evidence, "remove_bundle", remove_bundle)
        raise StorageError(f"{ref}: cannot remove evidence: [Errno 16] Device or resource busy")

    monkeypatch.setattr(evidence, "remove_bundle", fails_once)
    now = REJECTED_AT + timedelta(days=31)
    first = prune_rejected_evidence(store, evidence, 30, now=now)
    assert first.cases == [] and len(first.failed) == 1 and first.failed[0].startswith(f"{rejected}: ")
    assert folder.is_dir() and store.get(rejected).evidence_removed_at == now.isoformat() and len(_audits(store)) == 1

    assert prune_rejected_evidence(store, evidence, 30, now=now, dry_run=True).cases == [rejected]  # still to go
    second = prune_rejected_evidence(store, evidence, 30, now=now + timedelta(hours=1))
    assert (second.cases, second.bytes, second.failed) == ([rejected], size, []) and not folder.exists()
    assert len(_audits(store)) == 1 and _audits(store)[0]["details"]["bytes"] == size
    assert prune_rejected_evidence(store, evidence, 30, now=now + timedelta(hours=2)).cases == []


def test_a_finished_deletion_is_not_checked_again_and_a_leftover_is_finished_with_keep_days_back_at_0(
        tmp_path, cases_url, bus_event, monkeypatch):
    """Every round checked every case ever marked removed (one S3 listing a case, growing without bound): a deletion
    is noted finished and later rounds check only the marked cases whose deletion is not; and a deletion that failed
    after the mark (its page already says removed) is finished even once keep_days went back to 0, by serve's round
    and by the command."""
    store = CaseStore(cases_url)
    evidence = LocalEvidenceStore(tmp_path / "evidence")
    intake = Intake(store, evidence, EvidenceBuilder(EvidenceConfig(), KEY, MODEL), tmp_path / "spool")
    first, _, _ = _cases(intake, bus_event)
    second = intake.record_event(replace(bus_event[0], violation_id="batch-7:image:illegal_parking:o9"),
                                 BundleContext(source_kind="photo_batch", source_id="batch-7")).id
    store.review(second, approve=False, reviewer="li.wei", reason_code="not_a_violation", now=REJECTED_AT)
    checked: list[str] = []
    bundle_bytes = LocalEvidenceStore.bundle_bytes

    def counted(self: LocalEvidenceStore, ref: str) -> int:
        checked.append(ref)
        return bundle_bytes(self, ref)

    monkeypatch.setattr(LocalEvidenceStore, "bundle_bytes", counted)
    remove_bundle = LocalEvidenceStore.remove_bundle

    def fails_for_second(self: LocalEvidenceStore, ref: str) -> int:
        if ref == store.get(second).evidence_ref:
            raise StorageError(f"{ref}: cannot remove evidence: [Errno 16] Device or resource busy")
        return remove_bundle(self, ref)

    monkeypatch.setattr(LocalEvidenceStore, "remove_bundle", fails_for_second)
    now = REJECTED_AT + timedelta(days=31)
    done = prune_rejected_evidence(store, evidence, 30, now=now)
    assert done.cases == [first] and len(done.failed) == 1 and done.failed[0].startswith(f"{second}: ")
    assert store.get(first).details["evidence_removed_done_at"] == now.isoformat()
    assert "evidence_removed_done_at" not in store.get(second).details

    checked.clear()
    monkeypatch.setattr(LocalEvidenceStore, "remove_bundle", remove_bundle)
    assert prune_rejected_evidence(store, evidence, 0, now=now + timedelta(hours=1), dry_run=True).cases == [second]
    assert checked == [store.get(second).evidence_ref]  # the finished one is not checked again

    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({
        "cases": {"url": cases_url, "rejected_evidence_keep_days": 0},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    left = CliRunner().invoke(app, ["cases", "prune-evidence"])
    assert left.exit_code == 0, left.output
    assert left.output.startswith(f"{second}\nremoved the evidence of 1 case marked removed by an earlier round "
                                  "(cases.rejected_evidence_keep_days is now 0): "), left.output
    assert not evidence.path(store.get(second).evidence_ref).exists()
    assert store.get(second).details["evidence_removed_done_at"]

    checked.clear()
    assert prune_rejected_evidence(store, evidence, 30, now=now + timedelta(hours=2)).cases == []
    assert checked == []  # both finished: no store call at all
    again = CliRunner().invoke(app, ["cases", "prune-evidence"])
    assert again.output == f"{RETENTION_OFF}\n"
