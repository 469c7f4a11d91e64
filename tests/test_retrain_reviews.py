"""Reviewed cases flow from the real case store and evidence bundles into a training dataset."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import supervision as sv
import yaml
from typer.testing import CliRunner

from detect.evidence.builder import BundleContext, ModelInfo
from detect.frames import Frame
from detect.imageio import read_image
from detect.rules import PhotoRules
from pipelines.cases import CaseStore
from pipelines.cases.intake import Intake
from pipelines.dispatch.dispatcher import apply_status
from pipelines.retrain.check import check_dataset
from pipelines.retrain.dataset import Dataset
from pipelines.settings import load_settings
from streetwatch.cli import app

runner = CliRunner()


def _intake(tmp_path, monkeypatch) -> Intake:
    """A case store and evidence folders under `tmp_path`, named by a settings file the commands find through
    STREETWATCH_CONFIG, and the intake a garbage model's findings go through."""
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({
        "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")},
    }))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    return Intake.from_settings(load_settings(config), ModelInfo("garbage-v1", "ab" * 32))


def test_review_export_turns_decisions_into_positives_and_hard_negatives(tmp_path, monkeypatch, real_sample_dir, bus_event):
    intake = _intake(tmp_path, monkeypatch)
    store = intake.store

    # a street-garbage photo with the box a garbage model gives (its label), through the real photo rules
    src = real_sample_dir / "street-garbage"
    picture = sorted((src / "images").glob("*.jpg"))[0]
    image = read_image(picture)
    h, w = image.shape[:2]
    _, cx, cy, bw, bh = map(float, (src / "labels" / f"{picture.stem}.txt").read_text().split("\n")[0].split())
    xyxy = np.array([[(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]])
    dets = sv.Detections(xyxy=xyxy, confidence=np.array([0.9]), class_id=np.array([0]), data={"class_name": np.array(["garbage"])})
    frame = Frame(image=image, source_id="batch-3", ts=datetime(2025, 3, 14, 2, 0, tzinfo=UTC), frame_id="p1", path=str(picture))
    [garbage_event] = PhotoRules().process(frame, dets)
    confirmed = intake.record_event(garbage_event, BundleContext(source_kind="photo_batch", grid_cell="330102001001"))
    store.review(confirmed.id, approve=True, reviewer="li.wei", target="sim", reason_code="confirmed")

    bus, _ = bus_event
    rejected = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o0"), BundleContext(source_kind="photo_batch"))
    store.review(rejected.id, approve=False, reviewer="li.wei", reason_code="not_a_violation", note="a bus at its stop")
    permitted = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o9"), BundleContext(source_kind="photo_batch"))
    store.review(permitted.id, approve=False, reviewer="li.wei", reason_code="permitted")
    waiting = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o8"), BundleContext(source_kind="photo_batch"))

    out = tmp_path / "reviews"
    result = runner.invoke(app, ["data", "export-reviews", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 3 reviewed cases" in result.output
    lines = [json.loads(x) for x in (out / "review.jsonl").read_text().splitlines()]
    assert {x["case_id"] for x in lines} == {confirmed.id, rejected.id, permitted.id}  # not the unreviewed one
    assert waiting.id not in (out / "review.jsonl").read_text()
    line = next(x for x in lines if x["case_id"] == confirmed.id)
    assert line["decision"] == "approved" and line["boxes"][0]["class_name"] == "garbage"
    assert (line["width"], line["height"]) == (w, h) and (out / line["image"]).is_file()
    assert line["grid_cell"] == "330102001001" and "grid_cell" not in next(x for x in lines if x["case_id"] == rejected.id)

    result = runner.invoke(app, ["data", "from-cases", str(out / "review.jsonl"), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert f"(case {permitted.id}): rejected as 'permitted': the object is real, not a hard negative: skipped" in result.output
    # the bus stop may have garbage on it: a parking rejection is no hard negative for the garbage this set trains
    assert (f"(cases {rejected.id}): picture left out: no hard negative, as its rejection says nothing about garbage "
            "(rejected illegal_parking: a bus at its stop)") in result.output
    ds = Dataset(tmp_path / "ds")
    assert ds.classes == ["garbage"] and len(ds.files()) == 1 and check_dataset(ds).ok
    [entry] = ds.files()
    positive = ds.labels(entry).boxes
    assert positive[:, 0].tolist() == [0] and np.allclose(positive[0, 1:], [cx, cy, bw, bh], atol=2e-3)  # box drawn back where it was
    assert entry.source == f"cases {confirmed.id}" and entry.group == "grid:330102001001"  # the place, not the batch

    # an altered evidence picture never becomes training data
    stored = tmp_path / "evidence" / confirmed.id / store.get(confirmed.id).evidence_boxes["image"]
    assert stored.is_file()
    stored.write_bytes(stored.read_bytes()[:-100])
    result = runner.invoke(app, ["data", "export-reviews", "--out", str(tmp_path / "reviews2")])
    assert result.exit_code == 0 and f"case {confirmed.id}: " in result.output and "does not match its bundle manifest" in result.output


def test_a_case_its_platform_voided_is_left_out_of_the_review_export(tmp_path, monkeypatch, bus_event):
    """A case approved here and then voided by its platform (作废) was exported as a positive (its review still says
    approved), though the voiding may mean not a violation, a duplicate or not theirs. It is left out, reported with
    the platform and its why, and counted among the skipped when nothing else is left."""
    intake = _intake(tmp_path, monkeypatch)
    store = intake.store
    bus, _ = bus_event
    voided = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o0"), BundleContext(source_kind="photo_batch"))
    store.review(voided.id, approve=True, reviewer="li.wei", target="dcm", reason_code="confirmed")
    store.mark_delivered(store.outbox_entries(case_id=voided.id)[0].id, "T-300")
    assert apply_status(store, voided.id, "rejected", actor="dispatch:dcm", note="重复上报")
    skip = (f"case {voided.id}: approved here, then voided by dispatch:dcm (作废: 重复上报): whether it is a violation "
            "is unknown, neither a positive nor a negative: skipped")

    out = tmp_path / "reviews"
    result = runner.invoke(app, ["data", "export-reviews", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "1 reviewed but skipped:" in result.stderr and skip in result.stderr

    rejected = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o1"), BundleContext(source_kind="photo_batch"))
    store.review(rejected.id, approve=False, reviewer="li.wei", reason_code="not_a_violation")
    result = runner.invoke(app, ["data", "export-reviews", "--out", str(out)])
    assert result.exit_code == 0 and "exported 1 reviewed case to" in result.output and skip not in result.output
    assert "skipped 1 reviewed case as intended (not errors): 1 平台作废 voided by their platform after approval" in result.stdout
    assert [json.loads(x)["case_id"] for x in (out / "review.jsonl").read_text().splitlines()] == [rejected.id]


def test_retrain_takes_the_reviewed_cases_from_the_store_or_a_file_not_both(tmp_path):
    """`--from-store --cases FILE` read the file and never opened the store, without a word."""
    export = tmp_path / "review.jsonl"
    export.write_text("", encoding="utf-8")
    result = runner.invoke(app, ["retrain", "--name", "both", "--from-store", "--cases", str(export), "--work", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert f"--from-store and --cases {export} both name the reviewed cases: give one" in result.stderr
    assert not (tmp_path / "w").exists()


def test_retrain_from_the_store_into_an_earlier_runs_work_folder_is_refused_cleanly(tmp_path, monkeypatch):
    """The nightly job run again with the same --work: its review export is never overwritten, and the refusal is one
    line naming the file and the option to change (it was a FileExistsError traceback)."""
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({
        "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")},
    }))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    CaseStore(f"sqlite:///{tmp_path}/cases.db").close()  # the deployment's store (retrain --from-store refuses a missing one)
    earlier = tmp_path / "w" / "reviews" / "review.jsonl"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}\n", encoding="utf-8")
    result = runner.invoke(app, ["retrain", "--name", "again", "--from-store", "--config", str(config), "--work", str(tmp_path / "w")])
    assert result.exit_code == 2, result.output
    assert f"{earlier} already exists" in result.stderr and f"--work {tmp_path / 'w'} holds an earlier run" in result.stderr
    assert earlier.read_text(encoding="utf-8") == "{}\n"


def test_export_reviews_without_reviewed_cases_says_so_and_writes_nothing(tmp_path, monkeypatch, bus_event):
    """With no reviewed case (none reviewed yet, or none since --since) export-reviews wrote an empty review.jsonl and
    said 'exported 0 reviewed cases; next: streetwatch data from-cases', which then refused it. It refuses, saying what
    counts as reviewed and where the store's cases went, and leaves no folder behind."""
    intake = _intake(tmp_path, monkeypatch)
    bus, _ = bus_event
    reviewed = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o0"), BundleContext(source_kind="photo_batch"))
    intake.store.review(reviewed.id, approve=False, reviewer="li.wei", reason_code="not_a_violation")
    intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o1"), BundleContext(source_kind="photo_batch"))

    out = tmp_path / "reviews"
    result = runner.invoke(app, ["data", "export-reviews", "--out", str(out), "--since", "2999-01-01"])
    assert result.exit_code == 2, result.output
    assert ("error: no reviewed cases to export (a case counts as reviewed once confirmed or rejected on the review page "
            "or POST /cases/{id}/confirm or /reject): the store holds 2 cases, 1 not reviewed, 1 reviewed before --since "
            "2999-01-01T00:00:00+00:00, 0 reviewed but skipped") in result.stderr
    assert "next:" not in result.output and not out.exists()

    result = runner.invoke(app, ["data", "export-reviews", "--out", str(out)])  # without the window: the rejection
    assert result.exit_code == 0 and "exported 1 reviewed case to" in result.output


def test_a_case_rejected_for_privacy_leaves_no_copy_of_its_picture_in_the_export(tmp_path, monkeypatch, bus_event):
    """A reviewer rejecting a case as 涉及隐私 (privacy) kept its picture back, yet export-reviews copied it into the
    folder handed to the data team, where neither data from-cases nor the verifier's dataset uses it; it stays in the
    evidence store, the export saying why it was skipped, the other rejections exported as before."""
    intake = _intake(tmp_path, monkeypatch)
    bus, _ = bus_event
    private, other = (intake.record_event(replace(bus, violation_id=f"batch-7:image:illegal_parking:o{i}"),
                                          BundleContext(source_kind="photo_batch")) for i in (1, 2))
    intake.store.review(private.id, approve=False, reviewer="li.wei", reason_code="privacy", note="住户窗内")
    intake.store.review(other.id, approve=False, reviewer="li.wei", reason_code="not_a_violation")

    out = tmp_path / "reviews"
    result = runner.invoke(app, ["data", "export-reviews", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["case_id"] for x in (out / "review.jsonl").read_text().splitlines()] == [other.id]
    assert sorted(p.name for p in (out / "evidence").iterdir()) == [other.id]
    assert "skipped 1 reviewed case as intended (not errors): 1 涉及隐私 rejected for privacy" in result.stdout


def test_export_reviews_counts_the_cases_left_out_by_design_in_one_line_and_reports_faults_as_errors(
        tmp_path, monkeypatch, bus_event):
    """A case voided by its platform, one rejected for privacy and one whose evidence the retention removed were each
    an error line (`error: case …: … skipped`), read as failures to chase though the export leaves them out by design;
    they are counted in one line by reason, in Chinese and English, and only a fault (a picture missing from its
    bundle) is an error line naming its case."""
    from datetime import timedelta

    from pipelines.cases.retention import prune_rejected_evidence
    from pipelines.evidence_store import LocalEvidenceStore

    intake = _intake(tmp_path, monkeypatch)
    store = intake.store
    bus, _ = bus_event
    voided, private, removed, broken, good = (
        intake.record_event(replace(bus, violation_id=f"batch-7:image:illegal_parking:o{i}"), BundleContext(source_kind="photo_batch"))
        for i in range(5))
    store.review(voided.id, approve=True, reviewer="li.wei", target="dcm", reason_code="confirmed")
    store.mark_delivered(store.outbox_entries(case_id=voided.id)[0].id, "T-300")
    assert apply_status(store, voided.id, "rejected", actor="dispatch:dcm", note="重复上报")
    store.review(private.id, approve=False, reviewer="li.wei", reason_code="privacy")
    store.review(removed.id, approve=False, reviewer="li.wei", reason_code="not_a_violation",
                 now=datetime.now(UTC) - timedelta(days=40))
    assert prune_rejected_evidence(store, LocalEvidenceStore(tmp_path / "evidence"), 30).cases == [removed.id]
    for case in (broken, good):
        store.review(case.id, approve=False, reviewer="li.wei", reason_code="not_a_violation")
    (tmp_path / "evidence" / broken.id / store.get(broken.id).evidence_boxes["image"]).unlink()

    result = runner.invoke(app, ["data", "export-reviews", "--out", str(tmp_path / "reviews")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "skipped 3 reviewed cases as intended (not errors): 1 平台作废 voided by their platform after approval, 1 涉及隐私 "
        "rejected for privacy, 1 证据已按保留期删除 evidence removed after the retention period",
        f"exported 1 reviewed case to {tmp_path / 'reviews' / 'review.jsonl'}; next: streetwatch data from-cases "
        f"{tmp_path / 'reviews' / 'review.jsonl'} --out DIR"], result.stdout
    [error] = result.stderr.splitlines()
    assert error.startswith(f"error: case {broken.id}: evidence unreadable: "), result.stderr


def test_a_reviewed_case_stored_without_its_evidence_boxes_is_exported_with_those_of_its_bundle(tmp_path, monkeypatch,
                                                                                                  bus_event):
    """A reviewed case the release before stored without its evidence boxes (its bundle uploaded by the spool's retry,
    which never wrote them) was skipped by export-reviews as 'its evidence is not stored yet', its evidence stored and
    its review lost to the training data; it is exported with the boxes of its bundle, as the intake records them."""
    intake = _intake(tmp_path, monkeypatch)
    store = intake.store
    bus, _ = bus_event
    case = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o1"), BundleContext(source_kind="photo_batch"))
    store.review(case.id, approve=False, reviewer="li.wei", reason_code="not_a_violation", note="a bus at its stop")
    recorded = store.get(case.id).evidence_boxes
    store.update(case.id, evidence_boxes=None)  # as the release before left such a case

    out = tmp_path / "reviews"
    result = runner.invoke(app, ["data", "export-reviews", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "not stored yet" not in result.output and "exported 1 reviewed case to" in result.output
    [line] = [json.loads(x) for x in (out / "review.jsonl").read_text().splitlines()]
    assert line["case_id"] == case.id and (line["width"], line["height"]) == (recorded["width"], recorded["height"])
    assert line["boxes"] == [{"class_name": b["class_name"], "xyxy": b["xyxy"]} for b in recorded["boxes"]]
    assert (out / line["image"]).is_file() and line["boxes"][0]["class_name"] == "bus"


def test_a_retyped_case_teaches_the_verifier_its_new_type_and_not_the_one_proposed(tmp_path, monkeypatch, bus_event):
    """A stall case its reviewer retyped to spillover and confirmed (the queue page's type box, PATCH) reached the
    verifier's dataset as a spillover positive, with stall unlabelled: the stall head's false finding taught it nothing,
    though the store keeps the proposed type (`detected_type`) for that. The export carries it, and `from-cases
    --verifier` labels the proposed type 0 beside the new type's 1; a case whose type stands carries none."""
    from pipelines.verifier.data import load_dataset

    intake = _intake(tmp_path, monkeypatch)
    store = intake.store
    bus, _ = bus_event
    retyped = intake.record_event(replace(bus, violation_type="street_stall", violation_id="batch-7:image:street_stall:o0"),
                                  BundleContext(source_kind="photo_batch"))
    store.revise(retyped.id, actor="li.wei", violation_type="shopfront_spillover")
    store.review(retyped.id, approve=True, reviewer="li.wei", target="sim", reason_code="confirmed")
    kept = intake.record_event(replace(bus, violation_id="batch-7:image:illegal_parking:o0"), BundleContext(source_kind="photo_batch"))
    store.review(kept.id, approve=True, reviewer="li.wei", target="sim", reason_code="confirmed")

    out = tmp_path / "reviews"
    assert runner.invoke(app, ["data", "export-reviews", "--out", str(out)]).exit_code == 0
    lines = {x["case_id"]: x for x in map(json.loads, (out / "review.jsonl").read_text().splitlines())}
    assert lines[retyped.id]["violation_type"] == "shopfront_spillover" and lines[retyped.id]["detected_type"] == "street_stall"
    assert "detected_type" not in lines[kept.id]

    result = runner.invoke(app, ["data", "from-cases", str(out / "review.jsonl"), "--out", str(tmp_path / "v"), "--verifier"])
    assert result.exit_code == 0, result.output
    [photo] = load_dataset(tmp_path / "v").photos  # one bus photo: both cases' labels on its row
    assert photo.labels == {"street_stall": 0, "shopfront_spillover": 1, "parking": 1}
