"""Triage into the case store: signed evidence bundles of grouped photos, queued with --dispatch and
delivered to the dispatch simulator (a real HTTP server process on loopback); a rerun adds nothing."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from detect.config_io import load_model
from detect.evidence.signing import read_manifest, verify_bundle
from pipelines.cases import CaseState, CaseStore
from pipelines.settings import Settings
from pipelines.triage import TriageSettings, run_triage
from pipelines.triage.cases import CasesUnavailable, batch_id
from tests.conftest import start_server, stop_process
from tests.pg import free_port
from tests.triage_helpers import phone_photo

REPO = Path(__file__).resolve().parents[1]
KEY = "triage-test-evidence-key-0123456789"
HERE = (30.2741, 120.1551)
HERE_8M = (30.27417, 120.1551)


@pytest.fixture
def sim(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = start_server([sys.executable, "-m", "streetwatch.cli", "dispatch-sim", "--port", str(port)], "127.0.0.1", port,
                        tmp_path / "sim.log", cwd=REPO, env=env)
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


@pytest.fixture
def deployment(tmp_path, sim, monkeypatch) -> tuple[Settings, Path]:
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    path = tmp_path / "streetwatch.json"
    path.write_text(json.dumps({
        "cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")},
        "dispatch": {"targets": {"city": {"adapter": "cn-dcm", "url": f"{sim}/cn-dcm/cases"}}},
    }))
    return load_model(Settings, path), path


@pytest.fixture
def photos(tmp_path, bus_jpg, zidane_jpg):
    day = tmp_path / "photos"
    phone_photo(bus_jpg, day / "0900.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    phone_photo(bus_jpg, day / "0903.jpg", taken=datetime(2024, 6, 3, 9, 3), gps=HERE_8M, crop=0.04, gain=1.1)
    phone_photo(zidane_jpg, day / "1000.jpg", taken=datetime(2024, 6, 3, 10, 0), gps=HERE)
    member = phone_photo(bus_jpg, tmp_path / "member.jpg", taken=datetime(2024, 6, 3, 15, 0), gps=(30.3, 120.3))
    with zipfile.ZipFile(day / "phone.zip", "w") as zf:
        zf.write(member, "DCIM/1500.jpg")
    return day


def test_groups_become_signed_cases_queued_and_delivered_once(tmp_path, photos, deployment, sim, onnx_detector):
    settings_obj, settings_file = deployment
    out = tmp_path / "out"
    # Grouping, cases and delivery on detector classes alone (every bus photo is a zone-less parking case there);
    # what the verifier makes of these photos is tested in test_verifier_judgement.py.
    settings = TriageSettings(out=out, dispatch_target="city", verifier="none")
    result = run_triage([photos], settings, detector=onnx_detector, deployment=settings_obj, show_progress=False)

    assert [len(g.members) for g in result.groups] == [2, 1]  # the re-take joins the first photo; the zipped one is apart
    store = CaseStore(settings_obj.cases.url)
    cases = store.list()
    assert sorted(c.id for c in cases) == sorted(r.case_id for r in result.refs)
    assert all(c.state is CaseState.QUEUED and c.dispatch_target == "city" and c.source_kind == "photo_batch" for c in cases)
    assert {e.case_id for e in store.outbox_entries(status="pending")} == {c.id for c in cases}

    pair = store.get(result.refs[0].case_id)
    lead, first = result.groups[0].lead, min(result.groups[0].members, key=lambda m: m.taken_at)
    assert pair.violation_type == "illegal_parking" and (pair.lat, pair.lon) == (lead.lat, lead.lon)  # where the best photo was
    bundle = Path(settings_obj.evidence_store.local_root) / pair.id
    report = verify_bundle(bundle, KEY.encode())
    assert report.ok, report.problems
    manifest = read_manifest(bundle)
    assert manifest["source"]["kind"] == "photo_batch"
    assert sorted(manifest["source"]["photo_ids"]) == sorted(m.sha256 for m in result.groups[0].members)
    roles = {a["role"]: a for a in manifest["artifacts"]}
    assert (bundle / roles["original_opened"]["path"]).read_bytes() == Path(lead.source).read_bytes()  # as received
    assert (bundle / roles["original_first_seen"]["path"]).read_bytes() == Path(first.source).read_bytes()
    assert roles["annotated_opened"]["width"] == lead.record.width > 640  # full resolution, not the decode for the model
    crops = [a for a in manifest["artifacts"] if a["role"] == "crop"]
    assert [c["class_name"] for c in crops] == ["bus"] and crops[0]["width"] > 600
    assert manifest["times"]["first_seen"]["local"].startswith("2024-06-03T09:00:00")
    assert manifest["violation"]["minor_class"] == "机动车乱停放"
    # the detector judged alone: the bundle and every result line say so (test_verifier_review.py: a verifier's heads)
    assert manifest["verifier"] == {"id": "none", "card_sha256": None, "heads_sha256": None}
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4 and all(r["verifier_model"] == manifest["verifier"] for r in lines)

    zipped = store.get(result.refs[1].case_id)  # a zip member's original is kept byte for byte too
    zbundle = Path(settings_obj.evidence_store.local_root) / zipped.id
    zroles = {a["role"]: a for a in read_manifest(zbundle)["artifacts"]}
    with zipfile.ZipFile(photos / "phone.zip") as zf:
        assert (zbundle / zroles["original_opened"]["path"]).read_bytes() == zf.read("DCIM/1500.jpg")

    page = (out / "report.html").read_text(encoding="utf-8")
    assert pair.id in page and "queued" in page

    env = {**os.environ, "PYTHONPATH": str(REPO), "STREETWATCH_EVIDENCE_KEY": KEY}
    done = subprocess.run([sys.executable, "-m", "streetwatch.cli", "dispatch", "run", "--once", "--config", str(settings_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    received = json.load(urllib.request.urlopen(f"{sim}/sim/received"))["cases"]
    assert len(received) == 2
    assert all(store.get(c.id).state is CaseState.SUBMITTED for c in cases)

    again = run_triage([photos], settings.model_copy(update={"resume": True}), detector=onnx_detector,
                       deployment=settings_obj, show_progress=False)
    assert [r.case_id for r in again.refs] == [r.case_id for r in result.refs]  # found, not drafted again
    assert [r.found for r in result.refs + again.refs] == [False, False, True, True]  # what the summary counts
    assert len(store.list()) == 2 and len(store.outbox_entries()) == 2


def test_cases_need_the_evidence_key_and_a_known_target(tmp_path, photos, deployment, monkeypatch, onnx_detector):
    settings_obj, _ = deployment
    with pytest.raises(CasesUnavailable, match="unknown dispatch target 'nowhere'.*city"):
        run_triage([photos], TriageSettings(out=tmp_path / "a", dispatch_target="nowhere"), detector=onnx_detector,
                   deployment=settings_obj, show_progress=False)
    monkeypatch.delenv("STREETWATCH_EVIDENCE_KEY")
    with pytest.raises(CasesUnavailable, match="STREETWATCH_EVIDENCE_KEY.*--no-cases"):
        run_triage([photos], TriageSettings(out=tmp_path / "b", cases=True), detector=onnx_detector,
                   deployment=settings_obj, show_progress=False)
    assert not (tmp_path / "b" / "results.jsonl").stat().st_size  # refused before any photo was read
    # optional cases without a key: the report is still written, the store stays empty
    result = run_triage([photos], TriageSettings(out=tmp_path / "c", verifier="none"), detector=onnx_detector, deployment=settings_obj,
                        show_progress=False)
    assert result.groups and all(r.case_id is None for r in result.refs)
    assert CaseStore(settings_obj.cases.url).list() == []


@pytest.mark.slow  # 9 s: a killed triage run and its resume
def test_a_run_killed_while_sealing_bundles_is_finished_by_resume(tmp_path, bus_jpg, deployment, sim):
    """`kill -9` while a bundle is being written (`spool/<case>.partial`), then `--resume`: every case
    gets its evidence, is queued once, and every bundle verifies (issue 14, item 1)."""
    import signal
    import time

    settings_obj, settings_file = deployment
    day = tmp_path / "spots"
    for i in range(6):  # six places far apart: six cases, so the case phase lasts long enough to be caught
        phone_photo(bus_jpg, day / f"{i}.jpg", taken=datetime(2024, 6, 3, 9 + i, 0), gps=(30.2 + i * 0.01, 120.1))
    out = tmp_path / "out"
    spool = Path(settings_obj.evidence_store.spool_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO), "STREETWATCH_EVIDENCE_KEY": KEY, "YOLO_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "streetwatch.cli", "triage", str(day), "--out", str(out), "--config", str(settings_file),
           "--dispatch", "--workers", "1", "--ocr", "off", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run1.log", "wb"))
    caught = False
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if spool.is_dir() and any(p.name.endswith(".partial") for p in spool.iterdir()):
            proc.send_signal(signal.SIGKILL)
            caught = True
            break
        time.sleep(0.002)
    proc.wait()
    assert caught, "the run ended before a bundle was caught half-written: " + (tmp_path / "run1.log").read_text()[-2000:]
    store = CaseStore(settings_obj.cases.url)
    orphans = [c for c in store.list() if c.evidence_ref is None and not (spool / c.id).is_dir()]
    assert orphans and all(c.state is CaseState.CANDIDATE for c in orphans)  # what the kill left behind

    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "alembic" not in done.stderr  # opening the case store is not news to staff (-v shows it)
    cases = store.list()
    assert len(cases) == 6 and not [p for p in spool.iterdir() if p.is_dir()]
    assert all(c.state is CaseState.QUEUED and c.evidence_ref and c.reason is None for c in cases)
    assert sorted(e.case_id for e in store.outbox_entries()) == sorted(c.id for c in cases)  # one entry each
    for case in cases:
        report = verify_bundle(Path(settings_obj.evidence_store.local_root) / case.id, KEY.encode())
        assert report.ok, (case.id, report.as_dict())
        assert report.digest == case.evidence_digest
    store.close()


def test_a_case_led_by_a_photo_without_gps_keeps_the_place_of_its_re_take(tmp_path, bus_jpg, onnx_detector, monkeypatch):
    """The first shot had no GPS fix and leads (same picture, taken first); its re-take a minute later has one.
    They are one case by their perceptual hashes, and the case, its CSV row and its report keep the re-take's
    position and grid cell instead of going out without a place."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    day = tmp_path / "photos"
    phone_photo(bus_jpg, day / "0900_no_fix.jpg", taken=datetime(2024, 6, 3, 9, 0))
    phone_photo(bus_jpg, day / "0901_gps.jpg", taken=datetime(2024, 6, 3, 9, 1), gps=HERE)
    grid = tmp_path / "grid.geojson"
    grid.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"id": "330102001001"},
        "geometry": {"type": "Polygon", "coordinates": [[[120.15, 30.27], [120.16, 30.27], [120.16, 30.28], [120.15, 30.28], [120.15, 30.27]]]}}]}))
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                  "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    deployment = load_model(Settings, config)
    settings = TriageSettings(out=tmp_path / "out", grid=grid, cases=True, verifier="none")
    result = run_triage([day], settings, detector=onnx_detector, deployment=deployment, show_progress=False)

    [group] = result.groups
    assert [Path(m.source).name for m in group.members] == ["0900_no_fix.jpg", "0901_gps.jpg"] and not group.lead.has_gps
    case = CaseStore(deployment.cases.url).get(result.refs[0].case_id)
    assert (case.lat, case.lon, case.grid_cell) == (pytest.approx(HERE[0], abs=1e-6), pytest.approx(HERE[1], abs=1e-6), "330102001001")
    manifest = read_manifest(Path(deployment.evidence_store.local_root) / case.id)
    assert manifest["location"]["grid_cell"] == "330102001001" and manifest["location"]["lat"] == case.lat
    with (settings.out / "cases.csv").open(encoding="utf-8-sig") as fh:
        [row] = list(csv.DictReader(fh))
    assert (row["lat"], row["grid_cell"]) == (str(case.lat), "330102001001")
    report = (settings.out / "report.html").read_text(encoding="utf-8")
    assert f'<dd class="place">{case.lat:.6f}, {case.lon:.6f}</dd>' in report and '<dd class="grid">330102001001</dd>' in report


def test_the_evidence_says_where_each_photos_time_came_from(tmp_path, bus_jpg, onnx_detector, monkeypatch):
    """A photo whose EXIF was stripped is timed by its file (often the day it was copied): its bundle signed that time
    as `opened` exactly like a phone's capture time, and an auditor asked when the inspector saw the scene could not
    tell the two apart. `times.sources` says where each time came from."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    day = tmp_path / "photos"
    phone_photo(bus_jpg, day / "taken.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    shutil.copy(bus_jpg, day / "copied.jpg")  # no EXIF time, no time in its name: its modification time
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                  "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    deployment = load_model(Settings, config)
    result = run_triage([day], TriageSettings(out=tmp_path / "out", cases=True, verifier="none"), detector=onnx_detector,
                        deployment=deployment, show_progress=False)

    sources = {}
    for group, ref in zip(result.groups, result.refs, strict=True):
        bundle = Path(deployment.evidence_store.local_root) / ref.case_id
        assert verify_bundle(bundle, KEY.encode()).ok
        sources[Path(group.lead.source).name] = read_manifest(bundle)["times"]["sources"]
    assert sources == {"taken.jpg": {"first_seen": "exif", "opened": "exif"},
                       "copied.jpg": {"first_seen": "file", "opened": "file"}}


@pytest.mark.slow  # 9 s: triage runs and their resume
def test_resume_withdraws_the_candidate_cases_of_photos_replaced_since(tmp_path, bus_jpg, zidane_jpg):
    """Candidate cases drafted from a photo replaced since stayed in the case store, waiting for a reviewer, while the
    report and the CSV dropped them. A resumed run withdraws each one nobody reviewed (rejected, the photo named in
    its history), leaves one a reviewer has queued already, and says both in its summary."""
    day = tmp_path / "spots"
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):  # three places far apart: three cases
        phone_photo(bus_jpg, day / name, taken=datetime(2024, 6, 3, 9 + i, 0), gps=(30.2 + i * 0.01, 120.1))
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                  "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "STREETWATCH_EVIDENCE_KEY": KEY, "YOLO_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "streetwatch.cli", "triage", str(day), "--out", str(tmp_path / "out"), "--config", str(config),
           "--verifier", "none", "--ocr", "off", "--no-progress"]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    with (tmp_path / "out" / "cases.csv").open(encoding="utf-8-sig") as fh:
        case_of = {Path(row["lead_photo"]).name: row["case_id"] for row in csv.DictReader(fh)}
    assert sorted(case_of) == ["a.jpg", "b.jpg", "c.jpg"]
    store.review(case_of["b.jpg"], approve=True, reviewer="reviewer-1", target="city")

    shutil.copy(zidane_jpg, day / "a.jpg")  # the phone numbered new photos as the old ones
    phone_photo(zidane_jpg, day / "b.jpg", taken=datetime(2024, 6, 3, 12, 0))
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (f"case store: 1 candidate case withdrawn, drafted from photos replaced since: {case_of['a.jpg']} "
            f"({day / 'a.jpg'})") in done.stdout
    assert (f"  case {case_of['b.jpg']} (queued) was drafted from {day / 'b.jpg'}, replaced since: left as it is, "
            "reviewed or dispatched already; check whether it still stands") in done.stdout
    withdrawn = store.get(case_of["a.jpg"])
    assert withdrawn.state is CaseState.REJECTED and withdrawn.review_decision is None  # not a reviewer's judgement
    last = store.history(withdrawn.id)[-1]
    assert (last.from_state, last.to_state, last.actor) == (CaseState.CANDIDATE, CaseState.REJECTED, "triage:out")
    assert last.reason.startswith(f"撤回 withdrawn: its photo {day / 'a.jpg'} was replaced by another since it was drafted")
    assert store.get(case_of["b.jpg"]).state is CaseState.QUEUED and store.get(case_of["c.jpg"]).state is CaseState.CANDIDATE
    with (tmp_path / "out" / "cases.csv").open(encoding="utf-8-sig") as fh:
        assert [row["case_id"] for row in csv.DictReader(fh)] == [case_of["c.jpg"]]
    store.close()


def test_a_resume_stopped_part_way_leaves_the_replaced_photo_for_the_next_to_withdraw_its_case(
        tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch):
    """A resumed run stopped (Ctrl-C) after judging a replaced photo again dropped the photo's earlier record when its
    journal closed, so the resume that finished never learnt what the photo had held and left its candidate case
    waiting. The earlier record stays until a run finishes, and that run withdraws the case."""
    from pipelines.triage.pipeline import TriageInterrupted
    from pipelines.triage.run import LocalPhotos

    class StoppedAfterThePass(LocalPhotos):
        def process(self, *args, **kwargs):
            super().process(*args, **kwargs)
            raise TriageInterrupted()

    resumed, deployment, _, day, ref = _one_case_then_replaced(tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch)
    with pytest.raises(TriageInterrupted):
        run_triage([day], resumed, detector=onnx_detector, deployment=deployment, show_progress=False, photos=StoppedAfterThePass())
    assert len((tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 2  # both, for the next
    done = run_triage([day], resumed, detector=onnx_detector, deployment=deployment, show_progress=False)
    assert [(case.id, photo) for case, photo in done.withdrawals.withdrawn] == [(ref.case_id, str(day / "a.jpg"))]
    assert len((tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 1
    store = CaseStore(deployment.cases.url)
    assert store.get(ref.case_id).state is CaseState.REJECTED and not done.groups
    store.close()


KILLED_AT_WITHDRAWAL = """
import os, signal, sys
from pathlib import Path
from detect.config_io import load_model
from pipelines.settings import Settings
from pipelines.triage import TriageSettings, run_triage
from pipelines.triage.cases import TriageCases
TriageCases.withdraw = lambda *a, **kw: os.kill(os.getpid(), signal.SIGKILL)  # killed as the withdrawal begins
day, out, config = map(Path, sys.argv[1:])
run_triage([day], TriageSettings(out=out, cases=True, verifier="none", ocr="off", resume=True),
           deployment=load_model(Settings, config), show_progress=False)
"""


def _one_case_then_replaced(tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch):
    """A run with cases over one bus photo (one candidate case), then the photo replaced by another: the settings of a
    resume, its deployment and settings file, the photo folder and the case."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    day = tmp_path / "photos"
    phone_photo(bus_jpg, day / "a.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                  "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    deployment = load_model(Settings, config)
    settings = TriageSettings(out=tmp_path / "out", cases=True, verifier="none", ocr="off")
    [ref] = run_triage([day], settings, detector=onnx_detector, deployment=deployment, show_progress=False).refs
    shutil.copy(zidane_jpg, day / "a.jpg")
    return settings.model_copy(update={"resume": True}), deployment, config, day, ref


def test_a_resume_killed_after_its_journal_dropped_a_replaced_photo_leaves_the_withdrawal_to_the_next(
        tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch):
    """A resume killed after its journal's rewrite had dropped a replaced photo's earlier record, before it withdrew the
    case drafted from that record, left nothing saying the case was to be withdrawn: the next run found one record per
    photo and the candidate case waited for a reviewer forever. The dropped records are kept (withdraw.jsonl) until
    a run has withdrawn their cases."""
    resumed, deployment, config, day, ref = _one_case_then_replaced(tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch)
    out = resumed.out
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_WITHDRAWAL, str(day), str(out), str(config)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert len((out / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 1  # rewritten: the old record gone
    store = CaseStore(deployment.cases.url)
    assert store.get(ref.case_id).state is CaseState.CANDIDATE
    done = run_triage([day], resumed, detector=onnx_detector, deployment=deployment, show_progress=False)
    assert [(case.id, photo) for case, photo in done.withdrawals.withdrawn] == [(ref.case_id, str(day / "a.jpg"))]
    assert store.get(ref.case_id).state is CaseState.REJECTED and not (out / "withdraw.jsonl").exists()
    again = run_triage([day], resumed, detector=onnx_detector, deployment=deployment, show_progress=False)
    assert again.withdrawals.withdrawn == [] and again.withdrawals.left == []
    store.close()


def test_a_resume_without_cases_leaves_the_withdrawal_to_the_next_run_that_writes_cases(
        tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch):
    """A --no-cases resume that found a photo replaced dropped its earlier record, and with it the only word that the
    case drafted from it should go; a later run with cases never withdrew it. A run without cases leaves the case store
    alone, and the first run after it that writes cases withdraws the case."""
    resumed, deployment, _, day, ref = _one_case_then_replaced(tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch)
    report_only = run_triage([day], resumed.model_copy(update={"cases": False}), detector=onnx_detector,
                             deployment=deployment, show_progress=False)
    store = CaseStore(deployment.cases.url)
    assert report_only.withdrawals.withdrawn == [] and store.get(ref.case_id).state is CaseState.CANDIDATE
    done = run_triage([day], resumed, detector=onnx_detector, deployment=deployment, show_progress=False)
    assert [(case.id, photo) for case, photo in done.withdrawals.withdrawn] == [(ref.case_id, str(day / "a.jpg"))]
    assert store.get(ref.case_id).state is CaseState.REJECTED
    store.close()


def test_two_run_folders_of_the_same_name_are_two_batches(tmp_path, bus_jpg, zidane_jpg, onnx_detector, monkeypatch):
    """Batches were named by the out folder's name alone: a second `out` (or the default `triage-out` run from another
    folder) was the same batch as the first, listed with it, and its resume withdrew the first's case when a photo it
    shared was replaced in the second. The second folder is `triage:out-2`, kept in its batch.json for its resumes."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                  "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    deployment = load_model(Settings, config)
    runs = {}
    for place in ("north", "south"):  # the same photo sent to two offices, each running triage into its own out/
        phone_photo(bus_jpg, tmp_path / place / "photos" / "a.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
        runs[place] = TriageSettings(out=tmp_path / place / "out", cases=True, verifier="none", ocr="off")
        run_triage([tmp_path / place / "photos"], runs[place], detector=onnx_detector, deployment=deployment,
                   show_progress=False)
    store = CaseStore(deployment.cases.url)
    [case] = store.list()
    assert case.source_id == "triage:out"

    shutil.copy(zidane_jpg, tmp_path / "south" / "photos" / "a.jpg")  # replaced in the second folder only
    done = run_triage([tmp_path / "south" / "photos"], runs["south"].model_copy(update={"resume": True}),
                      detector=onnx_detector, deployment=deployment, show_progress=False)
    assert done.withdrawals.withdrawn == [] and store.get(case.id).state is CaseState.CANDIDATE  # the north's case stands
    assert [json.loads((tmp_path / p / "out" / "batch.json").read_text())["batch_id"] for p in runs] == [
        "triage:out", "triage:out-2"]
    north = tmp_path / "north" / "out"
    (north / "batch.json").unlink()  # a folder an earlier release ran in: its cases keep their batch
    assert batch_id(north, store) == "triage:out"
    (north / "batch.json").write_text("{", encoding="utf-8")
    with pytest.raises(CasesUnavailable, match=f"{north / 'batch.json'}: not a batch record"):
        batch_id(north, store)
    store.close()


def test_withdrawing_leaves_a_case_a_reviewer_queued_after_it_was_looked_up(tmp_path):
    """The withdrawal looks a case up, then moves it: a reviewer who queues it in between must win (the case was
    rejected anyway, candidate or not). It is listed as left, in the state the reviewer gave it."""
    from datetime import UTC, timedelta

    from pipelines.cases import NewCase
    from pipelines.triage.cases import TriageCases, photo_violation_id
    from pipelines.triage.record import PhotoFinding, PhotoRecord

    sha = "ab" * 32
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    t0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
    case = store.create_case(NewCase(violation_type="street_stall", source_kind="photo", source_id="triage:out",
                                     violation_id=photo_violation_id(sha, "street_stall"), first_seen_at=t0,
                                     opened_at=t0 + timedelta(minutes=1)), now=t0)
    store.update(case.id, evidence_ref=f"file:///evidence/{case.id}", evidence_digest="d" * 64)
    looked_up = store.find

    def find_then_review(**kw):
        found = looked_up(**kw)
        store.review(case.id, approve=True, reviewer="reviewer-1", target="city")  # the reviewer, a moment later
        return found

    store.find = find_then_review
    photo = PhotoRecord(source="/photos/a.jpg", sha256=sha, status="ok",
                        findings=[PhotoFinding(type="street_stall", name_zh="占道经营", name_en="street stall", score=0.9)])
    done = TriageCases(None, store, "triage:out", tmp_path / "staging").withdraw([photo], current=set())
    assert done.withdrawn == [] and [(c.id, c.state, p) for c, p in done.left] == [(case.id, CaseState.QUEUED, "/photos/a.jpg")]
    assert store.get(case.id).state is CaseState.QUEUED
    store.close()


def test_the_summary_says_which_spooled_bundles_a_run_uploaded_and_which_still_wait(tmp_path, bus_jpg, onnx_detector, monkeypatch):
    """Bundles an earlier run left in the spool (the evidence store could not be written) are uploaded by the next run's
    retry; the summary, printed and in the result, says how many it stored, and each one still waiting with why."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    day = tmp_path / "spots"
    for i, name in enumerate(("a.jpg", "b.jpg")):  # two places far apart: two cases
        phone_photo(bus_jpg, day / name, taken=datetime(2024, 6, 3, 9 + i, 0), gps=(30.2 + i * 0.01, 120.1))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the evidence folder should be: every upload fails")
    config = tmp_path / "streetwatch.json"

    def deployment(root: Path) -> Settings:
        config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                      "evidence_store": {"local_root": str(root), "spool_dir": str(tmp_path / "spool")}}))
        return load_model(Settings, config)

    def triage(out: str, root: Path):
        return run_triage([day], TriageSettings(out=tmp_path / out, cases=True, verifier="none", ocr="off"),
                          detector=onnx_detector, deployment=deployment(root), show_progress=False)

    first = triage("out1", blocked)
    spooled = sorted(r.case_id for r in first.refs)
    assert len(spooled) == 2 and all(r.evidence is None for r in first.refs)
    assert first.spool.uploaded == [] and [c for c, _ in first.spool.waiting] == spooled  # its own bundles wait too
    again = triage("out2", blocked)  # still down: nothing uploaded, both named with their reason
    assert again.spool.uploaded == [] and [c for c, _ in again.spool.waiting] == spooled
    assert all(reason.startswith("evidence upload failed, will retry: case ") and str(blocked) in reason
               for _, reason in again.spool.waiting)

    deployment(tmp_path / "evidence")
    env = {**os.environ, "PYTHONPATH": str(REPO), "STREETWATCH_EVIDENCE_KEY": KEY, "YOLO_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "streetwatch.cli", "triage", str(day), "--out", str(tmp_path / "out3"), "--config", str(config),
           "--verifier", "none", "--ocr", "off", "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "evidence spool: 2 bundles an earlier run could not upload stored now" in done.stdout, done.stdout
    assert "still waiting" not in done.stdout
    assert all((tmp_path / "evidence" / case_id / "manifest.json").is_file() for case_id in spooled)


def test_a_run_without_violations_still_uploads_the_spool_and_says_so(tmp_path, bus_jpg, zidane_jpg, onnx_detector,
                                                                       moto_s3, monkeypatch):
    """The spool was retried only while drafting cases, so bundles left there while S3 was down waited for a run with
    violations, and the runs in between said nothing of them; any run that writes cases retries it and reports."""
    for name, value in (("STREETWATCH_EVIDENCE_KEY", KEY), ("STREETWATCH_S3_ACCESS_KEY", "testing"),
                        ("STREETWATCH_S3_SECRET_KEY", "testing")):
        monkeypatch.setenv(name, value)
    busy, quiet = tmp_path / "busy", tmp_path / "quiet"
    phone_photo(bus_jpg, busy / "a.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    phone_photo(zidane_jpg, quiet / "b.jpg", taken=datetime(2024, 6, 3, 10, 0), gps=HERE)  # people only: no violation
    config = tmp_path / "streetwatch.json"

    def triage(photos: Path, out: str, endpoint: str):
        config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"}, "evidence_store": {
            "backend": "s3", "spool_dir": str(tmp_path / "spool"),
            "s3": {"endpoint": endpoint, "secure": False, "bucket": "sw-triage-quiet-run", "retries": 0}}}))
        return run_triage([photos], TriageSettings(out=tmp_path / out, cases=True, verifier="none", ocr="off"),
                          detector=onnx_detector, deployment=load_model(Settings, config), show_progress=False)

    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    first = triage(busy, "out1", down)
    spooled = [r.case_id for r in first.refs]
    assert len(spooled) == 1 and first.refs[0].evidence is None
    still_down = triage(quiet, "out2", down)
    assert still_down.groups == [] and still_down.spool.uploaded == []
    assert [case_id for case_id, _ in still_down.spool.waiting] == spooled
    assert still_down.spool.waiting[0][1].startswith("evidence upload failed, will retry: case ")

    up = triage(quiet, "out3", moto_s3)
    assert up.groups == [] and up.spool.uploaded == spooled and up.spool.waiting == []
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    assert store.get(spooled[0]).evidence_ref == f"s3://sw-triage-quiet-run/cases/{spooled[0]}"
    store.close()
    assert not (tmp_path / "spool" / spooled[0]).exists()


def test_two_new_run_folders_of_one_name_started_together_claim_two_batches(tmp_path):
    """`batch_id` looked for cases holding the name, then wrote it to the folder: two new folders of one name started at
    the same moment, neither having written a case yet, both chose `triage:out`. The id is claimed in the case store
    in one transaction, so the second gets `triage:out-2` (and several at once, one each); a resume keeps its own."""
    from concurrent.futures import ThreadPoolExecutor

    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    first, second = (tmp_path / place / "out" for place in ("north", "south"))
    assert [batch_id(first, store), batch_id(second, store), batch_id(first, store)] == [
        "triage:out", "triage:out-2", "triage:out"]
    folders = [tmp_path / f"office-{i}" / "out" for i in range(6)]
    with ThreadPoolExecutor(len(folders)) as pool:
        chosen = list(pool.map(lambda out: batch_id(out, store), folders))
    store.close()
    assert sorted(chosen) == sorted(f"triage:out-{n}" for n in range(3, 9))



def test_triage_stopped_while_writing_its_report_says_a_resume_writes_it(tmp_path, photos, monkeypatch):
    """Ctrl-C or SIGTERM once every photo was recorded, while the cases and the report were written (`ReportInterrupted`),
    gave the generic 'interrupted (已中断)' line, which says nothing of --resume; it says every photo is recorded and a
    resume writes them without judging one again, and the resume does: no record added, the cases found, not doubled."""
    from typer.testing import CliRunner

    from pipelines.triage import run as triage_run
    from streetwatch.cli import app

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                  "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    out = tmp_path / "out"

    def triage(*args: str):
        return CliRunner().invoke(app, ["triage", str(photos), "--out", str(out), "--config", str(config), "--cases",
                                        "--no-progress", "--ocr", "off", "--verifier", "none", *args])

    def stop(*_args, **_kw):
        raise KeyboardInterrupt  # as Ctrl-C there

    with monkeypatch.context() as m:
        m.setattr(triage_run, "write_report", stop)
        stopped = triage()
    assert stopped.exit_code == 130 and stopped.stderr.splitlines()[-1] == (
        f"error: interrupted: every photo is recorded in {out / 'results.jsonl'}; stopped while writing the cases and the report, "
        "which a resume writes without judging a photo again (only those that failed are tried again); run the same command "
        "with --resume to continue"), stopped.stderr
    records = (out / "results.jsonl").read_text(encoding="utf-8")
    drafted = sorted(c.id for c in CaseStore(f"sqlite:///{tmp_path / 'cases.db'}").list())
    assert len(records.splitlines()) == 4 and drafted and not (out / "report.html").exists()
    resumed = triage("--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert (out / "results.jsonl").read_text(encoding="utf-8") == records and (out / "report.html").is_file()
    assert sorted(c.id for c in CaseStore(f"sqlite:///{tmp_path / 'cases.db'}").list()) == drafted


def test_a_run_whose_stderr_is_not_a_terminal_logs_the_progress_of_its_evidence_bundles(tmp_path, bus_jpg, zidane_jpg,
                                                                                          onnx_detector, monkeypatch, caplog):
    """Sealing the bundles costs about as much per case as a photo's triage, and its bar is rich's, drawn only on a
    terminal: a run into a log file said nothing while it sealed hundreds. It logs a line every PLAIN_PROGRESS_S (here
    every case) and one at the end, as the photos' do."""
    import logging

    from pipelines.triage import pipeline

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    monkeypatch.setattr(pipeline, "PLAIN_PROGRESS_S", 0.0, raising=False)
    day = tmp_path / "photos"
    phone_photo(bus_jpg, day / "0900.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    phone_photo(bus_jpg, day / "1500.jpg", taken=datetime(2024, 6, 3, 15, 0), gps=(30.3, 120.3))
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps({"cases": {"url": f"sqlite:///{tmp_path / 'cases.db'}"},
                                  "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}))
    settings = TriageSettings(out=tmp_path / "out", cases=True, verifier="none", ocr="off", workers=1)
    with caplog.at_level(logging.INFO, logger="pipelines.triage.pipeline"):
        result = run_triage([day], settings, detector=onnx_detector, deployment=load_model(Settings, config))  # stderr: no terminal
    assert len(result.refs) == 2 and all(r.evidence for r in result.refs)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cases: ")]
    assert [line.split(" (")[0] for line in lines] == ["cases: 1/2 cases", "cases: 2/2 cases"], lines
    assert lines[-1].startswith("cases: 2/2 cases (100%), ") and lines[-1].endswith("ETA 0:00:00; evidence bundles")
