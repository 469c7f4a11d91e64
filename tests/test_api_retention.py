"""Retention of upload and patrol jobs (`service.jobs_keep_days`): a finished job's folder is removed that many days
after it finished, at start-up and periodically; a running or queued one never; its id then answers 404 saying why.
Jobs are aged by their recorded finish time, never by waiting."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.config import service_config
from api.job_retention import REMOVED, remove_expired
from api.jobs import read_job, write_job
from tests.api_helpers import KEY, auth, make_app, settings_for

OLD = (datetime.now(UTC) - timedelta(days=31)).isoformat()  # past the default 30 days
RECENT = (datetime.now(UTC) - timedelta(days=29)).isoformat()


def _written_long_ago(folder: Path) -> Path:
    """`folder`'s job record last written `OLD`: a job queued or running that long is still no finished job."""
    os.utime(folder / "job.json", (_timestamp(OLD), _timestamp(OLD)))
    return folder


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _photo_job(root: Path, job_id: str, state: str, finished_at: str | None, owner: str = "inspector-user") -> Path:
    """A photo upload job's folder as a run leaves it: its record (written `OLD`) and an uploaded photo of 1,000 bytes."""
    folder = root / job_id
    (folder / "input").mkdir(parents=True)
    (folder / "input" / "0001.jpg").write_bytes(b"\xff" * 1000)
    write_job(folder, {"id": job_id, "owner": owner, "state": state, "created_at": OLD, "started_at": None,
                       "finished_at": finished_at, "error": None, "total": 1, "cases": [], "files": []})
    return _written_long_ago(folder)


def _patrol_job(root: Path, job_id: str, state: str, finished_at: str | None) -> Path:
    """A patrol job's folder: its record (written `OLD`) and a video of 2,000 bytes."""
    folder = root / job_id
    folder.mkdir(parents=True)
    (folder / "video.mp4").write_bytes(b"\0" * 2000)
    write_job(folder, {"id": job_id, "owner": "inspector-user", "state": state, "created_at": OLD, "video": "video.mp4",
                       "video_label": "巡查.mp4", "track": "track.srt", "track_label": "drive.srt", "start": None,
                       "finished_at": finished_at})
    return _written_long_ago(folder)


def test_finished_jobs_past_the_retention_are_removed_and_running_ones_kept(tmp_path, caplog):
    """Every job's folder (photos, videos as uploaded) was kept for ever. One finished more than
    `service.jobs_keep_days` ago, done or failed, photo upload or patrol, is removed whole; one queued or running is
    kept however old, as is one finished within the days; its id answers 404 saying it was removed and by which
    setting (an inspector only of their own jobs), and the lists no longer show it."""
    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    ctx = app.state.ctx
    jobs, patrols = ctx.jobs.root, ctx.service.patrol_dir
    removed = [_photo_job(jobs, "a" * 16, "done", OLD), _photo_job(jobs, "b" * 16, "failed", OLD),
               _patrol_job(patrols, "c" * 16, "done", OLD)]
    kept = [_photo_job(jobs, "d" * 16, "running", None), _photo_job(jobs, "e" * 16, "queued", None),
            _photo_job(jobs, "f" * 16, "done", RECENT), _patrol_job(patrols, "1" * 16, "running", None)]
    (jobs / "2").mkdir()  # an upload still arriving: no record, no job
    ancient = {"id": "0" * 16, "owner": "inspector-user", "finished_at": None, "keep_days": 30,
               "removed_at": (datetime.now(UTC) - timedelta(days=400)).isoformat()}  # past the year its removal is kept
    (jobs / REMOVED).write_text(json.dumps(ancient) + "\n" + '{"id": "0', encoding="utf-8")  # and a line cut short
    held = sum(f.stat().st_size for folder in removed for f in folder.rglob("*") if f.is_file())
    assert held > 4000  # the uploads and the records
    with caplog.at_level(logging.INFO, logger="api.jobs"):
        swept = remove_expired(ctx.jobs)
    assert sorted(swept.jobs) == ["a" * 16, "b" * 16, "c" * 16] and swept.bytes == held
    assert f"jobs retention (service.jobs_keep_days: 30): 3 finished job(s) removed, {held} bytes (0.0 MB) freed" in caplog.text
    assert not any(f.exists() for f in removed) and all(read_job(f) for f in kept)
    assert sorted(p.name for p in jobs.iterdir()) == ["2", "d" * 16, "e" * 16, "f" * 16, REMOVED]
    assert [json.loads(line)["id"] for line in (jobs / REMOVED).read_text(encoding="utf-8").splitlines()] == ["a" * 16, "b" * 16]

    reviewer, inspector = auth(tokens["reviewer"]), auth(tokens["inspector"])
    with TestClient(app) as client:
        assert [j["id"] for j in client.get("/api/v1/triage/jobs", headers=reviewer).json()] == ["f" * 16, "e" * 16, "d" * 16]
        assert [j["id"] for j in client.get("/api/v1/patrol/jobs", headers=reviewer).json()] == ["1" * 16]
        for path, what, job_id in (("triage/jobs", "triage job", "a" * 16), ("triage/jobs", "triage job", "b" * 16),
                                   ("patrol/jobs", "patrol job", "c" * 16)):
            for suffix in ("", "/report"):
                gone = client.get(f"/api/v1/{path}/{job_id}{suffix}", headers=inspector)
                assert gone.status_code == 404 and gone.json()["type"].endswith("job-not-found"), gone.text
                detail = gone.json()["detail"]
                assert detail.startswith("已过保留期") and f"{what} '{job_id}' was removed on " in detail, detail
                assert "30 days after it finished (service.jobs_keep_days)" in detail, detail
        for never in ("9" * 16, "0" * 16):  # no job ever, or removed too long ago to be remembered: no word of retention
            assert client.get(f"/api/v1/triage/jobs/{never}", headers=reviewer).json()["detail"] == f"no triage job '{never}'"
        other = ctx.accounts.add("inspector-2", "inspector")[1]  # not theirs: no job of theirs, removed or not
        assert client.get(f"/api/v1/triage/jobs/{'a' * 16}", headers=auth(other)).json()["detail"] == f"no triage job '{'a' * 16}'"


def test_a_job_is_removed_at_start_up_and_its_cases_evidence_stays(tmp_path, monkeypatch, onnx_detector, bus_jpg):
    """A real upload's case keeps its evidence in the evidence store, not in the job's folder: the job aged past the
    retention is removed when the server starts again, and its case and signed evidence are all still served."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    settings = settings_for(tmp_path, triage={"workers": 1, "ocr": "off"})
    app, tokens = make_app(settings, detector=onnx_detector)
    reviewer = auth(tokens["reviewer"])
    with TestClient(app) as client:
        job = client.post("/api/v1/triage/jobs", headers=reviewer, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))]).json()
        deadline = time.monotonic() + 120
        while (job := client.get(f"/api/v1/triage/jobs/{job['id']}", headers=reviewer).json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    [case] = job["cases"]
    assert job["state"] == "done" and case["case_id"], job
    folder = app.state.ctx.jobs.root / job["id"]
    record = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    write_job(folder, {**record, "finished_at": OLD})

    again = create_app(settings, service_config(settings), detector_factory=lambda: onnx_detector)
    with TestClient(again) as client:
        assert not folder.exists()
        assert client.get(f"/api/v1/triage/jobs/{job['id']}", headers=reviewer).json()["detail"].startswith("已过保留期")
        detail = client.get(f"/api/v1/cases/{case['case_id']}", headers=reviewer)
        assert detail.status_code == 200, detail.text
        images = detail.json()["evidence"]["images"]
        assert {i["role"] for i in images} >= {"original_opened", "annotated_opened"}
        for image in images:  # the photo as uploaded included: copied into the bundle, not read from the job's folder
            assert client.get(image["url"]).status_code == 200, image


def test_the_server_sweeps_expired_jobs_periodically_and_0_keeps_them(tmp_path, monkeypatch):
    """Besides at start-up the server sweeps while it runs (as it retries the evidence spool): a job that passes the
    retention is removed without a restart; with `service.jobs_keep_days: 0` nothing is ever removed."""
    monkeypatch.setattr("api.app.SWEEP_EVERY_S", 0.05)
    app, _ = make_app(settings_for(tmp_path))
    with TestClient(app):
        folder = _photo_job(app.state.ctx.jobs.root, "a" * 16, "done", OLD)  # aged after the start-up sweep
        deadline = time.monotonic() + 60
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()

    forever = tmp_path / "forever"
    app, _ = make_app(settings_for(forever, jobs_keep_days=0))
    folder = _photo_job(app.state.ctx.jobs.root, "b" * 16, "done", "2000-01-01T00:00:00+00:00")
    with TestClient(app):
        assert remove_expired(app.state.ctx.jobs).jobs == []
    assert read_job(folder) is not None
