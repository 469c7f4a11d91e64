"""Uploads for triage: a real triage job over uploaded photos and a zip; refusals before anything is kept."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipelines.settings import Settings
from tests.api_helpers import KEY, auth, draft_cases, kept_per_job, make_app, settings_for

LIMIT = 1_000_000
MAX_FILES = 20


@pytest.fixture
def uploads(tmp_path, monkeypatch, onnx_detector):
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    settings = settings_for(tmp_path, max_upload_bytes=LIMIT, max_upload_files=MAX_FILES, triage={"workers": 1, "ocr": "off"})
    app, tokens = make_app(settings, detector=onnx_detector)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client, tokens


def wait_job(client, job_id: str, headers, deadline_s: float = 120) -> dict:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        job = client.get(f"/api/v1/triage/jobs/{job_id}", headers=headers).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not finish: {job}")


def test_upload_photos_and_a_zip_runs_the_triage_pipeline(uploads, bus_jpg, zidane_jpg):
    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(zidane_jpg, "day1/zidane.jpg")
        zf.write(bus_jpg, "day1/bus-again.jpg")  # same content as the single upload: a duplicate
        zf.writestr("day1/broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    files = [("files", ("街道 bus.jpg", bus_jpg.read_bytes(), "image/jpeg")),
             ("files", ("phone-export.zip", archive.getvalue(), "application/zip"))]
    created = client.post("/api/v1/triage/jobs", headers=inspector, files=files)
    assert created.status_code == 202, created.text
    job = created.json()
    assert [(f["label"], f["kind"]) for f in job["files"]] == [("街道 bus.jpg", "image"), ("phone-export.zip", "zip")]
    assert job["owner"] == "inspector-user"

    job = wait_job(client, job["id"], inspector)
    assert job["state"] == "done", job
    assert job["progress"] == {"done": 4, "total": 4, "phase": "done", "rate": None, "eta_s": None}
    for _ in range(3):  # polled again (the upload page's list, an inspector's reload): a finished job said 0 of 4 done
        assert client.get(f"/api/v1/triage/jobs/{job['id']}", headers=inspector).json()["progress"]["done"] == 4
    assert job["summary"]["readable"] == 2 and job["summary"]["errors"] == 1 and job["summary"]["duplicates"] == 1
    results = {r["source"]: r for r in client.get(f"/api/v1/triage/jobs/{job['id']}/results", headers=inspector).json()}
    assert set(results) == {"街道 bus.jpg", "phone-export.zip!day1/zidane.jpg", "phone-export.zip!day1/bus-again.jpg",
                            "phone-export.zip!day1/broken.jpg"}
    assert [f["type"] for f in results["街道 bus.jpg"]["findings"]] == ["illegal_parking"]
    assert results["phone-export.zip!day1/broken.jpg"]["status"] == "error"
    assert results["phone-export.zip!day1/bus-again.jpg"]["duplicate_of"] == "街道 bus.jpg"
    assert "/service/jobs" not in str(results)  # server paths are not shown

    [case] = job["cases"]
    assert case["type"] == "illegal_parking" and case["state"] == "candidate"
    stored = app.state.ctx.store.get(case["case_id"])
    assert stored.source_kind == "photo_batch" and stored.source_id == f"triage:{job['id']}" and stored.evidence_ref
    listed = client.get("/api/v1/cases", headers=inspector, params={"camera": f"triage:{job['id']}"}).json()
    assert [c["id"] for c in listed["items"]] == [case["case_id"]]

    assert client.get(f"/api/v1/triage/jobs/{job['id']}", headers=auth(tokens["reviewer"])).status_code == 200
    other = app.state.ctx.accounts.add("inspector-2", "inspector")[1]
    assert client.get(f"/api/v1/triage/jobs/{job['id']}", headers=auth(other)).status_code == 404  # not theirs
    assert client.get("/api/v1/triage/jobs", headers=auth(other)).json() == []


def test_finished_jobs_leave_nothing_kept_per_job_and_their_progress_stands(uploads, bus_jpg, zidane_jpg):
    """Soak: the jobs kept a future per job submitted, which nothing read, and each job's count of photos recorded,
    polled, for as long as the server ran. After several jobs, done and failed, polled while they ran and after,
    nothing is kept per job; each finished job's progress stands, from its record (`recorded`)."""
    app, client, tokens = uploads
    jobs, inspector = app.state.ctx.jobs, auth(tokens["inspector"])
    photos = [("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg")), ("files", ("zidane.jpg", zidane_jpg.read_bytes(), "image/jpeg"))]
    finished = []
    for _ in range(3):
        created = client.post("/api/v1/triage/jobs", headers=inspector, files=photos)
        assert created.status_code == 202, created.text
        finished.append(wait_job(client, created.json()["id"], inspector))
    jobs._failed(finished[-1]["id"], "a failure")  # a job ended failed is let go alike
    for job in finished:
        for _ in range(2):  # polled again after it ended (the upload page's list, a reload)
            progress = client.get(f"/api/v1/triage/jobs/{job['id']}", headers=inspector).json()["progress"]
            assert progress["done"] == progress["total"] == 2, progress
    assert len(client.get("/api/v1/triage/jobs", headers=inspector).json()) == 3
    assert kept_per_job(jobs) == kept_per_job(jobs.records) == {}
    assert [jobs.get(job["id"])["recorded"] for job in finished] == [2, 2, 2]


def test_a_poll_that_read_a_job_running_as_it_ended_keeps_no_count(uploads, bus_jpg, monkeypatch):
    """A poll reads the job's record (running), then counts its photos: a job that ended between the two had its
    count let go by its end, and the poll's count put it back, kept until the job was removed days later. The poll's
    count lands here right after the end, from the record it read just before (patched in at that point)."""
    from api.jobs import TriageJobs

    app, client, tokens = uploads
    jobs, inspector, polled, returned = app.state.ctx.jobs, auth(tokens["inspector"]), [], threading.Event()
    end = TriageJobs._end

    def polled_across_the_end(self, job_id, **values):
        running = self.get(job_id)  # what a poll read just before the job ended
        end(self, job_id, **values)
        polled.append(self.progress(running))  # its count, once the end has let go of the job's
        returned.set()  # the client may see the job done before this line: it waits for it

    monkeypatch.setattr(TriageJobs, "_end", polled_across_the_end)
    created = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
    job = wait_job(client, created.json()["id"], inspector)
    assert returned.wait(60)
    assert job["state"] == "done" and polled == [{"done": 1, "total": 1, "phase": "cases", "rate": None, "eta_s": None}]
    assert kept_per_job(jobs.records) == {}


def _running_job(root: Path, job_id: str, recorded: int) -> dict:
    """A photo job's folder as a run leaves it part way: its record (running, 2 photos) and `recorded` of them in its
    results.jsonl."""
    from api.jobs import RESULTS, write_job

    job = {"id": job_id, "owner": "inspector-user", "state": "running", "created_at": datetime.now(UTC).isoformat(),
           "started_at": None, "finished_at": None, "error": None, "total": 2, "cases": [], "files": []}
    write_job(root / job_id, job)
    (root / job_id / RESULTS).write_text("".join(json.dumps({"source": f"input/{n:04}.jpg"}) + "\n"
                                                 for n in range(recorded)))
    return job


def test_a_poll_held_reading_its_job_record_holds_no_other_jobs_progress(tmp_path, monkeypatch):
    """A poll read its job's job.json under the lock of every job's counts: on a slow share (NFS, the shared data
    folder) each other poll and each job's end waited out the read. A poll held inside that read leaves another job's
    progress and this job's end to go on; once its read returns it finds the job ended and keeps no count of it."""
    import api.jobs
    from api.jobs import RESULTS, end_job

    app, _ = make_app(settings_for(tmp_path), resume_jobs=False)
    jobs = app.state.ctx.jobs
    slow, other = _running_job(jobs.root, "a" * 16, 2), _running_job(jobs.root, "b" * 16, 1)
    reading, answered, polled = threading.Event(), threading.Event(), []
    read_job = api.jobs.read_job

    def share_not_answering(folder: Path) -> dict | None:
        if folder.name == slow["id"]:
            reading.set()
            answered.wait()
        return read_job(folder)

    monkeypatch.setattr(api.jobs, "read_job", share_not_answering)
    poll = threading.Thread(target=lambda: polled.append(jobs.progress(slow)))
    poll.start()
    try:
        assert reading.wait(60)
        progressed = threading.Thread(target=lambda: polled.append(jobs.progress(other)))
        progressed.start()
        progressed.join(60)  # it waited for the held read, for ever here
        assert polled == [{"done": 1, "total": 2, "phase": "photos", "rate": None, "eta_s": None}]
        end_job(jobs.records, jobs.root / slow["id"] / RESULTS, jobs.root / slow["id"], {**slow, "state": "done"})
    finally:
        answered.set()
        poll.join(60)
    assert polled[1] == {"done": 2, "total": 2, "phase": "cases", "rate": None, "eta_s": None}
    assert list(jobs.records._counts) == [jobs.root / other["id"] / RESULTS]  # the ended job's let go


def test_a_done_jobs_report_is_served_as_the_pages_are(uploads, bus_jpg):
    """The job writes report.html as `streetwatch triage` does, and no route served it; GET .../report answers it to
    whoever may read the job, under the pages' policy and kept by no browser, each photo named as uploaded (the run
    names it by its server path, which the API never shows)."""
    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    job = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("街道 <1> bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))]).json()
    assert wait_job(client, job["id"], inspector)["state"] == "done"
    report = client.get(f"/api/v1/triage/jobs/{job['id']}/report", headers=inspector)
    assert report.status_code == 200 and report.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>巡查照片分拣报告 · Photo triage report</h1>" in report.text
    assert "<b>街道 &lt;1&gt; bus.jpg</b>" in report.text and "<1>" not in report.text  # a name is text, not markup
    assert str(app.state.ctx.service.data_dir) not in report.text
    assert report.headers["content-security-policy"] == client.get("/ui/upload").headers["content-security-policy"]
    assert report.headers["x-frame-options"] == "DENY" and report.headers["cache-control"] == "no-store"
    other = app.state.ctx.accounts.add("inspector-2", "inspector")[1]
    assert client.get(f"/api/v1/triage/jobs/{job['id']}/report", headers=auth(other)).status_code == 404  # not theirs
    assert client.get("/api/v1/triage/jobs/0123456789abcdef/report", headers=inspector).status_code == 404


def _stopped_job(tmp_path, monkeypatch, stopped_records: list[dict]):
    """A job the server stopped while it ran, with `stopped_records` in its journal; the app resumes nothing (the test
    is the resumed run). (app, tokens, jobs, job id, the three inputs' paths 0001..0003.jpg as the journal names them)."""
    from pipelines.triage.journal import Journal

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    jobs = app.state.ctx.jobs
    job_id, inputs = jobs.new_dir()
    sources = tuple(str(inputs / f"000{i}.jpg") for i in (1, 2, 3))
    stopped = Journal(inputs.parent, resume=False)
    for record in stopped_records:
        stopped.append({**record, "source": sources[record["source"]]})
    stopped.close()
    jobs._write({"id": job_id, "owner": "inspector-user", "state": "running", "created_at": "2026-01-05T08:00:00+00:00",
                 "started_at": None, "finished_at": None, "error": None, "total": 3, "cases": [], "files": []})
    return app, tokens, jobs, job_id, sources


def test_a_resumed_jobs_progress_counts_a_retried_photo_once(tmp_path, monkeypatch):
    """A job stopped with a photo recorded as an error is resumed: the photo's new record is appended and its error
    line stays until the run ends, so counting lines showed 3 of 3 photos done (and the phase 'cases') with one
    still to do. Inputs are counted, each once; lines are read as they come (a line still being written waits),
    the journal's rewrite at its end afresh."""
    from pipelines.triage.journal import Journal

    app, tokens, jobs, job_id, (bus, copying, last) = _stopped_job(tmp_path, monkeypatch, [  # one photo judged, one failed
        {"source": 0, "sha256": "aa", "status": "ok", "findings": []},
        {"source": 1, "sha256": "bb", "status": "error", "reason": "corrupt or truncated image data"}])
    inputs = Path(bus).parent
    # the first look: the two recorded before it are not this run's rate
    assert jobs.progress(jobs.get(job_id)) == {"done": 2, "total": 3, "phase": "photos", "rate": None, "eta_s": None}

    resumed = Journal(inputs.parent, resume=True)  # the resumed run: 0002 tried again, its error line still there
    resumed.append({"source": copying, "sha256": "cc", "status": "ok", "findings": []})
    assert jobs.progress(jobs.get(job_id)) == {"done": 2, "total": 3, "phase": "photos", "rate": 0.0, "eta_s": None}
    line = json.dumps({"source": last, "sha256": "dd", "status": "ok", "findings": []}) + "\n"
    with (inputs.parent / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(line[:20])  # 0003's line, read while it is being written
        fh.flush()
        assert jobs.progress(jobs.get(job_id))["done"] == 2
        fh.write(line[20:])
    assert jobs.progress(jobs.get(job_id)) == {"done": 3, "total": 3, "phase": "cases", "rate": None, "eta_s": None}
    resumed.close()  # the superseded error is dropped: a new file
    assert [r["source"] for r in map(json.loads, (inputs.parent / "results.jsonl").read_text().splitlines())] == [bus, copying, last]
    jobs._update(job_id, state="done")
    with TestClient(app) as client:
        job = client.get(f"/api/v1/triage/jobs/{job_id}", headers=auth(tokens["reviewer"])).json()
    assert job["progress"] == {"done": 3, "total": 3, "phase": "done", "rate": None, "eta_s": None}


def test_a_running_jobs_progress_gives_the_rate_of_the_photos_it_records_and_the_time_left(tmp_path, monkeypatch, bus_jpg,
                                                                                            zidane_jpg, onnx_detector):
    """A job's progress said done/total and its phase only: a 2,000-photo upload running for 13 minutes gave staff no
    idea how long was left. While photos are judged it gives their rate (of the photos recorded since the poll
    before, as the CLI's bar counts this run's: `Pace`) and the seconds left at it (`seconds_left`); none once they
    all are. The detector judges a photo each time the test lets it, so polls find them recorded one by one."""
    import math

    from tests.conftest import SHARED

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    detector = Gated(onnx_detector)
    app, tokens = make_app(settings_for(tmp_path, triage={"workers": 1, "ocr": "off"}), detector=detector)
    inspector = auth(tokens["inspector"])
    photos = [bus_jpg, zidane_jpg, *sorted((SHARED / "datasets/street-scenes/images/mmj").glob("*.jpg"))[:3]]

    def poll(until) -> dict:
        return poll_progress(client, f"/api/v1/triage/jobs/{job_id}", inspector, until)

    with TestClient(app) as client:
        created = client.post("/api/v1/triage/jobs", headers=inspector,
                              files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos])
        job_id = created.json()["id"]
        journal = tmp_path / "service" / "jobs" / job_id / "results.jsonl"
        try:
            poll(lambda p: p["phase"] == "photos" and p["total"] == 5 and journal.exists())  # the run has begun
            first = poll(lambda p: True)  # its first look at the journal, no photo judged yet
            assert first["done"] == 0 and first["rate"] in (None, 0.0) and first["eta_s"] is None  # none judged: no rate
            for judged in (1, 2):
                detector.gate.release()
                progress = poll(lambda p, n=judged: p["done"] == n)
                assert progress["phase"] == "photos" and progress["rate"] > 0, progress
                assert progress["eta_s"] == math.ceil((5 - judged) / progress["rate"]) > 0, progress
        finally:  # a failed assertion must not leave the job held: the client's shutdown would wait for it
            for _ in range(5):
                detector.gate.release()
        done = poll(lambda p: p["phase"] == "done")
    assert done == {"done": 5, "total": 5, "phase": "done", "rate": None, "eta_s": None}


def test_an_uploaded_photo_is_timed_by_the_name_it_was_sent_as(uploads, bus_jpg):
    """A WeChat photo has no EXIF time (bus.jpg has none either); the time its name carries is when it was taken, as
    `streetwatch triage` reads it (docs/triage.md). Stored as `0001.jpg`, an upload was timed by that file's
    modification time instead, the moment of the upload, which its case then gave as when the violation was seen."""
    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    files = [("files", ("微信图片_20231129101522.jpg", bus_jpg.read_bytes(), "image/jpeg"))]
    job = wait_job(client, client.post("/api/v1/triage/jobs", headers=inspector, files=files).json()["id"], inspector)
    assert job["state"] == "done", job
    [record] = client.get(f"/api/v1/triage/jobs/{job['id']}/results", headers=inspector).json()
    assert (record["taken_at"], record["time_source"]) == ("2023-11-29T10:15:22+08:00", "name")
    [case] = job["cases"]
    assert app.state.ctx.store.get(case["case_id"]).first_seen_at == datetime(2023, 11, 29, 2, 15, 22, tzinfo=UTC)


def test_a_resumed_jobs_results_list_a_retried_photo_once(tmp_path, monkeypatch):
    """While a resumed job runs, a photo tried again has its error line and its new record in results.jsonl (the
    error goes when the run ends): the results listed both. One record per input, its latest, where that stands."""
    from pipelines.triage.journal import Journal

    app, tokens, jobs, job_id, (bus, copying, last) = _stopped_job(tmp_path, monkeypatch, [  # one photo failed, one judged
        {"source": 1, "sha256": "bb", "status": "error", "reason": "corrupt or truncated image data"},
        {"source": 0, "sha256": "aa", "status": "ok", "findings": []}])
    inputs = Path(bus).parent
    resumed = Journal(inputs.parent, resume=True)  # the resumed run: 0002 tried again, its error line still there
    resumed.append({"source": copying, "sha256": "cc", "status": "ok", "findings": []})
    resumed.append({"source": last, "sha256": "dd", "status": "error", "reason": "corrupt or truncated image data"})
    with TestClient(app) as client:
        listed = client.get(f"/api/v1/triage/jobs/{job_id}/results", headers=auth(tokens["reviewer"])).json()
        assert [(r["source"], r["status"]) for r in listed] == [("0001.jpg", "ok"), ("0002.jpg", "ok"), ("0003.jpg", "error")]
        resumed.close()  # the superseded error is dropped: the same list
        assert client.get(f"/api/v1/triage/jobs/{job_id}/results", headers=auth(tokens["reviewer"])).json() == listed


def _refused_zip(app, client, inspector: dict, archive: bytes, photo: Path) -> str:
    """Upload a photo and `archive` as 街道.zip: a zip triage refuses whole was taken with 202 and its job only recorded
    that it read nothing of it; the upload is refused 422 naming the zip, nothing kept (all or nothing); the detail."""
    created = client.post("/api/v1/triage/jobs", headers=inspector,
                          files=[("files", ("ok.jpg", photo.read_bytes())), ("files", ("街道.zip", archive))])
    assert created.status_code == 422, created.text
    problem = created.json()
    assert problem["type"] == "urn:streetwatch:problem:zip-refused" and "街道.zip：" in problem["detail"], problem
    assert "ok.jpg" not in problem["detail"] and _job_dirs(app) == []
    assert client.get("/api/v1/triage/jobs", headers=inspector).json() == []
    return problem["detail"]


def test_a_zip_bomb_is_refused_unread(uploads, bus_jpg):
    """Photos hardly compress, deflate packs 200 MB of zeros into 200 KB: a 2 MB upload of ten such entries named
    IMG_0001.jpg ... kept the job reading and hashing 2 GB for two minutes (a 512 MB upload: hours, every other upload
    waiting behind it). An archive whose entries add up to more than MAX_ZIP_RATIO times its size is refused unread."""
    from pipelines.triage.sources import MAX_ZIP_RATIO

    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(bus_jpg, "IMG_0001.jpg")
        zf.writestr("IMG_0002.jpg", b"\xff\xd8\xff\xe0" + bytes(60 * 2**20))
    assert len(archive.getvalue()) < LIMIT and 60 * 2**20 > MAX_ZIP_RATIO * len(archive.getvalue())
    detail = _refused_zip(app, client, inspector, archive.getvalue(), bus_jpg)
    assert "疑似压缩炸弹：0.2 MB 的压缩包解压后共 60 MB，超过其 100 倍" in detail, detail
    assert "街道.zip: zip bomb: its entries expand to 60 MB from 0.2 MB, more than 100 times" in detail, detail


def test_a_zip_of_too_many_entries_is_refused_before_its_directory_is_read(uploads, monkeypatch, bus_jpg):
    """300,000 empty entries in a 29 MB upload took 390 MB and 6 s while the upload was still being checked (zipfile
    reads a zip's whole directory on open); past MAX_ZIP_ENTRIES (small here) the zip is refused with its count."""
    from pipelines.triage import sources

    monkeypatch.setattr(sources, "MAX_ZIP_ENTRIES", 500)
    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(501):
            zf.writestr(f"IMG_{i:04d}.jpg", b"")
    detail = _refused_zip(app, client, inspector, archive.getvalue(), bus_jpg)
    assert "条目过多：一个压缩包有 501 个条目，超过 500 个不予读取" in detail, detail
    assert "街道.zip: too many entries: 501 in one zip, more than 500 are not read" in detail, detail


def _job_dirs(app) -> list:
    return [p for p in app.state.ctx.jobs.root.iterdir()]


def test_uploads_are_refused_before_they_fill_the_disk(uploads, bus_jpg, tmp_path):
    app, client, tokens = uploads
    h = auth(tokens["inspector"])
    url = "/api/v1/triage/jobs"
    big = b"\xff\xd8\xff" + b"0" * (LIMIT + 10)

    declared = client.post(url, headers=h, files=[("files", ("big.jpg", big, "image/jpeg"))])
    assert declared.status_code == 413 and "over the limit" in declared.json()["detail"]
    assert declared.json()["detail"].startswith("上传 "), declared.text  # Chinese first: city staff read the upload page

    def chunks():  # no Content-Length: counted while it streams
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        for _ in range(40):
            yield b"\xff" * 65536
    streamed = client.post(url, headers={**h, "Content-Type": "multipart/form-data; boundary=b"}, content=chunks())
    assert streamed.status_code == 413 and "stopped reading" in streamed.json()["detail"]

    text = client.post(url, headers=h, files=[("files", ("photo.jpg", b"just some text, not a photo", "image/jpeg")),
                                              ("files", ("ok.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
    assert text.status_code == 415 and "photo.jpg" in text.json()["detail"] and "ok.jpg" not in text.json()["detail"]
    assert text.json()["detail"].startswith("无法识别为照片或照片压缩包，本次上传的文件均未受理：photo.jpg "), text.text  # Chinese first
    pdf = client.post(url, headers=h, files=[("files", ("scan.zip", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "application/zip"))])
    assert pdf.status_code == 415
    empty = client.post(url, headers=h, files=[("files", ("empty.jpg", b"", "image/jpeg"))])
    assert empty.status_code == 415
    no_photos = io.BytesIO()  # a valid zip that triage would find nothing in: was a job "done, 0 of 0 photos"
    with zipfile.ZipFile(no_photos, "w") as zf:
        zf.writestr("readme.txt", "photos to follow")
        zf.writestr("__MACOSX/._bus.jpg", b"\x00\x05\x16\x07")
    for archive in (no_photos.getvalue(), b"PK\x05\x06" + b"\x00" * 18):  # and an empty zip
        zip_only = client.post(url, headers=h, files=[("files", ("ok.jpg", bus_jpg.read_bytes(), "image/jpeg")),
                                                      ("files", ("材料.zip", archive, "application/zip"))])
        detail = zip_only.json()["detail"]
        assert zip_only.status_code == 415 and "材料.zip (a zip archive with no photos in it)" in detail, detail
        assert "材料.zip（压缩包中没有照片）" in detail, detail
    as_json = client.post(url, headers=h, json={"files": ["bus.jpg"]})
    assert as_json.status_code == 415
    no_files = client.post(url, headers=h, data={"note": "hello"}, files=[("other", ("a.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
    assert no_files.status_code == 400 and "files" in no_files.json()["detail"]
    malformed = client.post(url, headers={**h, "Content-Type": "multipart/form-data; boundary=zzz"}, content=b"garbage\r\n--zzz")
    assert malformed.status_code == 400
    bogus_length = client.post(url, headers={**h, "Content-Type": "multipart/form-data; boundary=b", "Content-Length": "lots"}, content=b"")
    assert bogus_length.status_code in (400, 413)

    bomb = io.BytesIO()
    Image.new("1", (16000, 16000)).save(bomb, "PNG")  # 256 MP in a few kB
    refused = client.post(url, headers=h, files=[("files", ("bomb.png", bomb.getvalue(), "image/png"))])
    assert refused.status_code == 413 and "too many pixels" in refused.json()["detail"]
    # In a multi-file upload the refusal names the client's file, not the server's temporary name (issue 14, item 7).
    several = client.post(url, headers=h, files=[("files", ("ok.jpg", bus_jpg.read_bytes(), "image/jpeg")),
                                                 ("files", ("街道 全景.png", bomb.getvalue(), "image/png"))])
    detail = several.json()["detail"]
    assert several.status_code == 413 and detail.startswith("街道 全景.png：图片像素过多（超过 "), detail
    assert "街道 全景.png: image has too many pixels" in detail, detail
    assert ".upload" not in detail and "0002" not in detail

    crowd = client.post(url, headers=h, files=[("files", (f"p{i}.jpg", b"x", "image/jpeg")) for i in range(MAX_FILES + 1)])
    assert crowd.status_code == 413 and crowd.json()["detail"].startswith(f"一次最多上传 {MAX_FILES} 个文件"), crowd.text
    assert f" — more than {MAX_FILES} files in one upload" in crowd.json()["detail"], crowd.text

    for answer in (declared, streamed, text, pdf, empty, zip_only, as_json, no_files, malformed, refused, several, crowd):
        assert answer.headers["content-type"] == "application/problem+json"
    assert _job_dirs(app) == []  # nothing kept from any refused upload


def test_without_the_evidence_key_serve_says_so_and_a_jobs_groups_say_why_they_have_no_case(
        tmp_path, monkeypatch, caplog, onnx_detector, bus_jpg):
    """With STREETWATCH_EVIDENCE_KEY unset the service started without a word, took uploads, and each job ended `done`
    listing its groups with no case id and no error (the upload page: "1 件候选案件"), while the review queue stayed
    empty; the reason was only a log line of the job's thread. Start-up says it, naming the variable, and so does
    each group of a job."""
    monkeypatch.delenv("STREETWATCH_EVIDENCE_KEY", raising=False)
    settings = settings_for(tmp_path, triage={"workers": 1, "ocr": "off"})
    with caplog.at_level("WARNING", logger="api.app"):
        app, tokens = make_app(settings, detector=onnx_detector)
    assert any("STREETWATCH_EVIDENCE_KEY is not set" in r.getMessage() and "upload jobs write no candidate cases" in r.getMessage()
               for r in caplog.records), caplog.text
    inspector = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
        job = wait_job(client, created.json()["id"], inspector)
    assert job["state"] == "done" and job["summary"]["with_violations"] == 1
    [group] = job["cases"]
    assert group["case_id"] is None and "STREETWATCH_EVIDENCE_KEY is not set" in group["error"]
    assert app.state.ctx.store.list() == []  # the queue has nothing to show


def test_a_job_whose_key_file_is_unreadable_since_start_up_fails_naming_it_by_its_setting(tmp_path, onnx_detector, bus_jpg):
    """A key file that loaded at start-up and could not be read later ended the job `done` with its report only, each
    group's case stopped (its error naming the file's server path at first, `/srv/keys/evidence.key: cannot read ...`),
    where `streetwatch triage` refuses and a patrol job fails; the job fails before reading a photo, with the patrol
    job's error (`no_cases_error`), the key named by its setting, never by the server's path."""
    from detect.evidence.config import EvidenceConfig

    key = tmp_path / "keys" / "evidence.key"
    key.parent.mkdir()
    key.write_text("a-file-key-0123456789abcdef\n")
    settings = settings_for(tmp_path, triage={"workers": 1, "ocr": "off"})
    app, tokens = make_app(settings.model_copy(update={"evidence": EvidenceConfig(hmac_key_file=key)}), detector=onnx_detector)
    key.unlink()  # gone after start-up (a redeploy, a permissions change)
    inspector = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
        job = wait_job(client, created.json()["id"], inspector)
    assert job["state"] == "failed" and not job["cases"], job
    assert job["error"] == ("无法生成候选案件，任务未处理，请联系管理员 cases cannot be written: evidence.hmac_key_file: cannot read "
                            "evidence key: No such file or directory; fix it and upload again, or set service.triage.cases: "
                            "false for reports without cases"), job["error"]
    assert str(tmp_path) not in json.dumps(job, ensure_ascii=False)
    assert not (app.state.ctx.jobs.root / job["id"] / "results.jsonl").exists()  # refused before a photo was read


def test_a_cases_reason_names_key_files_by_their_settings_too(tmp_path, bus_event):
    """The case routes named a case's reason and its history's by the evidence folders only (the store's own
    `named_by_setting`, beside `Settings.named_by_setting`, which names the key files too), so a reason naming a key
    file showed its server path; they go through the one that names both."""
    from detect.evidence.config import EvidenceConfig
    from pipelines.cases import CaseState
    from tests.api_helpers import draft_cases

    key = tmp_path / "keys" / "evidence.key"
    key.parent.mkdir()
    key.write_text("a-file-key-0123456789abcdef\n")
    settings = settings_for(tmp_path)
    app, tokens = make_app(settings.model_copy(update={"evidence": EvidenceConfig(hmac_key_file=key)}))
    [case_id] = draft_cases(app, bus_event, [{}])
    why = f"evidence.hmac_key_file: {key}: cannot read evidence key: Permission denied"
    app.state.ctx.store.transition(case_id, CaseState.REJECTED, actor="test", reason=why)
    app.state.ctx.store.update(case_id, reason=f"{why} (in {settings.evidence_store.spool_dir.resolve()})")
    with TestClient(app) as client:
        detail = client.get(f"/api/v1/cases/{case_id}", headers=auth(tokens["reviewer"])).json()
    named = "evidence.hmac_key_file: cannot read evidence key: Permission denied"
    assert detail["case"]["reason"] == f"{named} (in evidence_store.spool_dir)", detail["case"]["reason"]
    assert detail["history"][-1]["reason"] == named, detail["history"]
    assert str(tmp_path) not in json.dumps(detail, ensure_ascii=False)

def test_the_job_list_reads_only_the_newest_jobs(tmp_path, caplog):
    """GET /triage/jobs answers the newest 200 but read every job.json the server ever kept to sort them. Folders
    are taken newest modification first, so the jobs of long ago are not read: here the oldest 40 have records no
    one can read, and nothing says so, while the list is what it was (by creation time: a job taken up again lately,
    whose folder changed then, stays where its creation puts it; an upload still arriving is no job yet)."""
    import logging
    import os
    from datetime import UTC, datetime, timedelta

    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    jobs, start = app.state.ctx.jobs, datetime(2026, 1, 5, 8, tzinfo=UTC)
    made = []
    for i in range(260):
        job_id, inputs = jobs.new_dir()
        created = start + timedelta(minutes=i)
        job = {"id": job_id, "owner": "inspector-user" if i % 4 == 0 else "someone-else", "state": "done",
               "created_at": created.isoformat(), "started_at": None, "finished_at": None, "error": None, "total": 0,
               "cases": [], "files": []}
        jobs._write(job)
        if i < 40:  # long ago, and unreadable now
            (inputs.parent / "job.json").write_text('{"id": "', encoding="utf-8")
        modified = datetime.now(UTC) if i == 45 else created  # job 45 was taken up again lately
        os.utime(inputs.parent, (modified.timestamp(), modified.timestamp()))
        made.append(job)
    jobs.new_dir()[1].mkdir(parents=True)  # an upload arriving: its folder, no job.json yet

    def listed(token) -> list[str]:
        answer = client.get("/api/v1/triage/jobs", headers=auth(token))
        assert answer.status_code == 200, answer.text
        return [j["id"] for j in answer.json()]

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.WARNING, logger="api.jobs"):
        assert listed(tokens["reviewer"]) == [j["id"] for j in made[::-1][:200]]
        assert "unreadable job record" not in caplog.text  # the oldest were not read
        # An inspector's own: all 55 readable ones (fewer than 200, so every folder is read).
        assert listed(tokens["inspector"]) == [j["id"] for j in made[::-1] if j["owner"] == "inspector-user" and j in made[40:]]


def test_a_failed_jobs_error_names_no_server_path(tmp_path, monkeypatch):
    """A resumed job whose input folder is gone fails with triage's refusal, which names the folder by its server
    path (/srv/.../jobs/<id>/input); the API never shows one, so the error names it from the job's folder."""
    app, tokens, jobs, job_id, (bus, _, _) = _stopped_job(tmp_path, monkeypatch, [
        {"source": 0, "sha256": "aa", "status": "ok", "findings": []}])
    shutil.rmtree(Path(bus).parent, ignore_errors=True)  # (an upload that had not arrived has none)
    jobs._detector = object()  # the refusal comes before any photo is judged
    jobs._run(job_id)
    with TestClient(app) as client:
        job = client.get(f"/api/v1/triage/jobs/{job_id}", headers=auth(tokens["reviewer"])).json()
    assert job["state"] == "failed"
    assert "input" in job["error"] and str(tmp_path) not in job["error"], job["error"]


def _storage_down(tmp_path: Path) -> Path:
    """The settings' evidence folder (`settings_for`) made a file: every upload fails until it is removed."""
    root = tmp_path / "evidence"
    shutil.rmtree(root, ignore_errors=True)
    root.write_text("a file where the evidence folder should be: every upload fails")
    return root


def _done_job(client, headers, photo: Path) -> dict:
    """The job of one uploaded photo once it is done."""
    created = client.post("/api/v1/triage/jobs", headers=headers, files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))])
    done = wait_job(client, created.json()["id"], headers)
    assert done["state"] == "done", done
    return done


def test_a_jobs_evidence_errors_name_no_server_path(uploads, tmp_path, bus_jpg, zidane_jpg):
    """With the evidence store unwritable a case's reason names the folder it could not write (`cannot write evidence
    to /srv/.../evidence/SW...`), and a job showed it as it was in its group's error, in its summary's spool and in
    its report; the API never shows a server path, so each names the folder by its setting."""
    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    _storage_down(tmp_path)
    first = _done_job(client, inspector, bus_jpg)
    [case] = first["cases"]
    assert case["case_id"] and f"cannot write evidence to evidence_store.local_root/{case['case_id']}: " in case["error"]
    assert str(tmp_path) not in case["error"], case["error"]
    quiet = _done_job(client, inspector, zidane_jpg)  # people only: its spool's news alone
    [waiting] = quiet["summary"]["spool"]["waiting_cases"]
    assert waiting["case_id"] == case["case_id"]
    assert f"cannot write evidence to evidence_store.local_root/{case['case_id']}: " in waiting["reason"]
    assert str(tmp_path) not in waiting["reason"], waiting["reason"]
    listed = client.get("/api/v1/triage/jobs", headers=inspector).json()
    assert str(tmp_path) not in json.dumps(listed) and str(tmp_path) not in json.dumps(first)
    report = client.get(f"/api/v1/triage/jobs/{first['id']}/report", headers=inspector).text
    assert "evidence_store.local_root" in report and str(tmp_path) not in report
    # the case itself (its reason, on the queue page) and its history, as the job names them
    detail = client.get(f"/api/v1/cases/{case['case_id']}", headers=inspector).json()
    assert f"cannot write evidence to evidence_store.local_root/{case['case_id']}: " in detail["case"]["reason"]
    cases = client.get("/api/v1/cases", headers=inspector).json()
    assert str(tmp_path) not in json.dumps(detail) and str(tmp_path) not in json.dumps(cases)


def test_a_jobs_summary_says_what_became_of_the_evidence_spool(uploads, tmp_path, bus_jpg, zidane_jpg):
    """A job's summary carries `spool`: the bundles earlier jobs left there (storage was down) that it stored, and each
    one still waiting with its case's reason; a job whose photos show no violation retries the spool too."""
    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    root = _storage_down(tmp_path)

    def job(photo: Path) -> dict:
        return _done_job(client, inspector, photo)

    first = job(bus_jpg)
    [case] = first["cases"]
    assert case["case_id"] and case["error"].startswith("evidence upload failed, will retry")  # said on its group
    own = first["summary"]["spool"]  # and in the spool's news: its own bundle waits as an earlier job's would
    assert (own["uploaded"], own["waiting"]) == (0, 1)
    assert own["waiting_cases"] == [{"case_id": case["case_id"], "reason": case["error"]}]
    still_down = job(zidane_jpg)  # people only: no group
    assert still_down["summary"]["groups"] == 0
    spool = still_down["summary"]["spool"]
    assert (spool["uploaded"], spool["waiting"]) == (0, 1) and spool["waiting_cases"][0]["case_id"] == case["case_id"]
    assert spool["waiting_cases"][0]["reason"].startswith("evidence upload failed, will retry: case ")

    root.unlink()  # storage is back
    up = job(zidane_jpg)
    assert up["summary"]["spool"] == {"uploaded": 1, "waiting": 0, "waiting_cases": []}
    assert app.state.ctx.store.get(case["case_id"]).evidence_ref == (root / case["case_id"]).resolve().as_uri()


def test_the_server_retries_the_evidence_spool_with_no_job_running(tmp_path, monkeypatch, bus_event):
    """`serve` retried the evidence spool only when a job ran: a bundle left while storage was down waited for the next
    upload, and one signed with a key rotated away began its 7 days' wait only then. The server retries it every
    `service.spool_retry_s` on its own (a tiny interval here), and the bundle is stored with no job run."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    app, _ = make_app(settings_for(tmp_path, spool_retry_s=0.05))
    store = app.state.ctx.store
    root = _storage_down(tmp_path)
    [case_id] = draft_cases(app, bus_event, [{}])
    assert store.get(case_id).evidence_ref is None and (tmp_path / "spool" / case_id).is_dir()  # spooled
    root.unlink()  # storage is back
    with TestClient(app):
        deadline = time.monotonic() + 60
        while store.get(case_id).evidence_ref is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert store.get(case_id).evidence_ref == (root / case_id).resolve().as_uri()
    assert not (tmp_path / "spool" / case_id).exists() and app.state.ctx.jobs.list() == []  # no job ran


def test_an_upload_spools_on_the_data_disk_not_in_the_system_temp_folder(tmp_path, monkeypatch, onnx_detector):
    """The multipart parser spooled every file part past 1 MiB to the system's temporary folder (/tmp), often small and
    apart from the data disk on a city server, which a patrol video or a zip of photos could fill. A part spools in
    `service.data_dir`/uploads, as an anonymous file that is gone once the upload is stored."""
    import os

    from api import uploads as uploads_module
    from tests.conftest import SHARED

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    photos = sorted((SHARED / "datasets/street-scenes/images/mmj").glob("*.jpg"))[:8]  # real street photos
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for photo in photos:
            zf.write(photo, photo.name)
    assert archive.getbuffer().nbytes > 1 << 20  # past the parser's 1 MiB in memory
    settings = settings_for(tmp_path, triage={"workers": 1, "ocr": "off", "cases": False})
    app, tokens = make_app(settings, detector=onnx_detector)
    spool = settings.service.upload_spool
    save, spooled = uploads_module._save, []

    def observed(upload, raw, label):  # while the stored copy is made, the part is in its spool file
        assert not upload._in_memory
        spooled.append((upload, Path(os.readlink(f"/proc/self/fd/{upload.file.fileno()}")).parent))
        return save(upload, raw, label)

    monkeypatch.setattr(uploads_module, "_save", observed)
    inspector = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/api/v1/triage/jobs", headers=inspector,
                              files=[("files", ("photos.zip", archive.getvalue(), "application/zip"))])
        assert created.status_code == 202, created.text
        wait_job(client, created.json()["id"], inspector)
    [(upload, folder)] = spooled
    assert folder == spool.resolve()
    assert upload.file.closed and list(spool.iterdir()) == []  # nothing left behind


def test_a_job_failed_by_the_map_zones_grades_file_names_it_by_its_setting(tmp_path, onnx_detector, bus_jpg):
    """A job whose `service.triage.scene_zones` names a road grades file that cannot be read failed with the loader's
    error as is, its server path in it (`ConfigError: /srv/.../grades.yaml: not valid YAML`), where the 503s name it
    `grades file of service.triage.scene_zones` (`AppContext.config_error`); the job names it the same way."""
    ring = [[[120.15, 30.27], [120.16, 30.27], [120.16, 30.28], [120.15, 30.28], [120.15, 30.27]]]
    zones = tmp_path / "zones" / "zones.geojson"
    zones.parent.mkdir()
    zones.write_text(json.dumps({"type": "FeatureCollection", "grades": "grades.yaml", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": ring},
         "properties": {"id": "wensan-road", "kind": "no_parking", "grade": "main"}}]}), encoding="utf-8")
    (zones.parent / "grades.yaml").write_text("grades: [", encoding="utf-8")
    settings = settings_for(tmp_path, triage={"workers": 1, "ocr": "off", "cases": False, "scene_zones": str(zones)})
    app, tokens = make_app(settings, detector=onnx_detector)
    inspector = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
        job = wait_job(client, created.json()["id"], inspector)
    assert job["state"] == "failed", job
    assert job["error"].startswith("ConfigError: grades file of service.triage.scene_zones: not valid YAML"), job["error"]
    assert str(tmp_path) not in json.dumps(job, ensure_ascii=False)


def _store_gone_on_first_use(app, detector, database: Path) -> Path:
    """The job's detector, loaded on first use (at the job's start), with the SQLite case store's file moved aside at
    that moment, as a database restarted under a running `serve`: the job finds the store unreachable. Where it went."""
    aside = database.with_name("aside.db")

    def load():
        database.rename(aside)
        return detector

    app.state.ctx.jobs._detector_factory = load
    return aside


def _store_full_on_first_use(app, detector) -> None:
    """The job's detector, loaded on first use, with the case store's disk then full: each write into the cases table
    meets SQLite's own 'database or disk is full' from the driver (a page cap cannot do it here: a case row still fits
    in its table's last page), through SQLAlchemy's error handling as a real one does."""
    import sqlite3

    import sqlalchemy as sa

    def _disk_full(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CASES"):
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode, full.sqlite_errorname = sqlite3.SQLITE_FULL, "SQLITE_FULL"  # as the driver sets them
            raise full

    def load():
        sa.event.listen(app.state.ctx.store.engine, "before_cursor_execute", _disk_full)
        return detector

    app.state.ctx.jobs._detector_factory = load


def _ended(folder: Path, deadline_s: float = 120) -> dict:
    """The job in `folder` once it ended, read from its job.json (the API needs the case store for the token)."""
    from api.jobs import read_job

    end = time.monotonic() + deadline_s
    while (job := read_job(folder))["state"] in ("queued", "running"):
        assert time.monotonic() < end, job
        time.sleep(0.2)
    return job


def test_a_job_finding_the_case_store_unreachable_says_so_without_naming_it(uploads, tmp_path, onnx_detector, bus_jpg, caplog):
    """Soak (the database restarted under `serve`): a job running then failed 'CaseStoreUnreachable: cannot open the
    case store postgresql+psycopg://user@host:port/db: connection failed: …' (a SQLite file's server path), shown to
    the inspector, in English; it says in Chinese and English that the case store could not be reached and to upload
    again, the server log naming the store and the reason, as the API's 503 case-store-unreachable does."""
    app, client, tokens = uploads
    app.state.ctx.jobs.config.store_wait_s = 0  # fails at once (the wait: the PostgreSQL tests below)
    inspector = auth(tokens["inspector"])
    database = tmp_path / "cases.db"
    aside = _store_gone_on_first_use(app, onnx_detector, database)
    created = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
    assert created.status_code == 202, created.text
    assert _ended(app.state.ctx.jobs.root / created.json()["id"])["state"] == "failed"
    aside.rename(database)
    job = client.get(f"/api/v1/triage/jobs/{created.json()['id']}", headers=inspector).json()
    assert job["state"] == "failed"
    assert job["error"].startswith("案件库暂时无法连接，任务未完成，请稍后重新上传 the case store could not be reached"), job["error"]
    assert str(tmp_path) not in job["error"] and "CaseStoreUnreachable" not in job["error"]
    logged = [r for r in caplog.records if r.getMessage() == f"triage job {job['id']} failed"]
    assert logged and str(database) in str(logged[0].exc_info[1])  # the log keeps the store and the reason


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, which it may stop and start (the session's is shared): (its folder for
    `pg_ctl`, its URL). The folder is a plain /tmp one: as root the server's user must enter it."""
    import tempfile

    from tests.pg import pg_bin, postgres_server

    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb/pg_ctl) are not installed: run scripts/install-system-deps.sh")
    root = Path(tempfile.mkdtemp(prefix="streetwatch-pg-"))
    try:
        with postgres_server(root) as url:
            yield root, url
    finally:
        shutil.rmtree(root, ignore_errors=True)


def poll_progress(client, path: str, headers: dict, until) -> dict:
    """The job's progress at `path`, polled until `until` holds of it (a minute at most, else the test fails on it)."""
    for _ in range(600):
        progress = client.get(path, headers=headers).json()["progress"]
        if until(progress):
            return progress
        time.sleep(0.1)
    pytest.fail(f"{path}: {progress}")


class Gated:
    """The real detector, each call waiting for the test to let one through: a job's polls find its inputs recorded
    one by one (the rate of a photo upload's and a patrol job's progress)."""

    def __init__(self, real) -> None:
        self.real, self.gate = real, threading.Semaphore(0)

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def detect(self, images):
        assert self.gate.acquire(timeout=60)
        return self.real.detect(images)

    def detect_with_features(self, images):
        assert self.gate.acquire(timeout=60)
        return self.real.detect_with_features(images)


class CountingDetector:
    """The real detector, counting the photos it is given: a photo judged again is counted again."""

    def __init__(self, real) -> None:
        self.real, self.images = real, 0

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def detect(self, images):
        self.images += len(images)
        return self.real.detect(images)

    def detect_with_features(self, images):
        self.images += len(images)
        return self.real.detect_with_features(images)


def _store_stopped_mid_case(monkeypatch, root: Path) -> None:
    """PostgreSQL stopped (`pg_ctl stop`) while the job records its first case: the case drafted, its evidence bundle
    about to be built, the case's next write meeting the store gone, as a database restarted under a running job."""
    from detect.evidence.builder import EvidenceBuilder
    from tests.pg import pg_ctl

    build, stopped = EvidenceBuilder.build, []

    def stop_then_build(self, *args, **kwargs):
        if not stopped:
            stopped.append(True)
            pg_ctl(root, "-m", "fast", "stop")
        return build(self, *args, **kwargs)

    monkeypatch.setattr(EvidenceBuilder, "build", stop_then_build)


def _waiting(folder: Path, deadline_s: float = 120) -> dict:
    """The job in `folder` once it says it waits for the case store (or has ended), read from its job.json."""
    from api.jobs import read_job

    end = time.monotonic() + deadline_s
    while not (job := read_job(folder)).get("waiting") and job["state"] in ("queued", "running"):
        assert time.monotonic() < end, job
        time.sleep(0.1)
    return job


def test_a_job_finding_the_case_store_unreachable_waits_for_it_and_goes_on_where_it_was(tmp_path, monkeypatch, onnx_detector,
                                                                                        bus_jpg, zidane_jpg, own_postgres):
    """Soak (PostgreSQL restarted under `serve`): a job that met the store gone while recording its cases failed, and the
    inspector uploaded every photo again. It waits (`service.store_wait_s`), saying so (等待案件库恢复…, phase `store`),
    and once the store is back ends done where it was: no photo judged again, the case it had drafted not drafted twice."""
    from tests.pg import pg_ctl

    root, url = own_postgres
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    detector = CountingDetector(onnx_detector)
    app, tokens = make_app(settings_for(tmp_path, cases_url=url, store_wait_s=300, triage={"workers": 1, "ocr": "off"}),
                           detector=detector)
    _store_stopped_mid_case(monkeypatch, root)
    inspector = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        files = [("files", (name, path.read_bytes(), "image/jpeg")) for name, path in (("bus.jpg", bus_jpg), ("zidane.jpg", zidane_jpg))]
        created = client.post("/api/v1/triage/jobs", headers=inspector, files=files)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        waiting = _waiting(app.state.ctx.jobs.root / job_id)
        assert waiting["state"] == "running" and waiting["waiting"].startswith("等待案件库恢复… the case store cannot be reached")
        assert app.state.ctx.jobs.progress(waiting)["phase"] == "store"
        judged = detector.images
        assert judged == 2
        pg_ctl(root, "restart")  # back on the same port
        job = wait_job(client, job_id, inspector)
    assert job["state"] == "done" and job["error"] is None and job.get("waiting") is None, job
    assert job["progress"] == {"done": 2, "total": 2, "phase": "done", "rate": None, "eta_s": None}
    assert detector.images == judged  # the photos judged before the outage were not judged again
    [case] = job["cases"]
    assert case["case_id"] and case["error"] is None
    [stored] = app.state.ctx.store.list(source_id=f"triage:{job_id}")  # drafted once, its evidence stored
    assert stored.id == case["case_id"] and stored.evidence_ref


def test_a_job_finding_the_case_store_down_past_its_wait_fails_saying_so(tmp_path, monkeypatch, onnx_detector, bus_jpg,
                                                                           own_postgres, caplog):
    """The store still down when `service.store_wait_s` has passed: the job, which said it waited, fails asking for the
    upload again (`STORE_DOWN`), the log keeping the store and the reason."""
    root, url = own_postgres
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    app, tokens = make_app(settings_for(tmp_path, cases_url=url, store_wait_s=2, triage={"workers": 1, "ocr": "off"}),
                           detector=onnx_detector)
    _store_stopped_mid_case(monkeypatch, root)
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/api/v1/triage/jobs", headers=auth(tokens["inspector"]),
                              files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
        assert created.status_code == 202, created.text
        folder = app.state.ctx.jobs.root / created.json()["id"]
        assert _waiting(folder).get("waiting", "").startswith("等待案件库恢复")
        job = _ended(folder)
    assert job["state"] == "failed" and job.get("waiting") is None, job
    assert job["error"].startswith("案件库暂时无法连接，任务未完成，请稍后重新上传 the case store could not be reached"), job["error"]
    assert url.split("@")[1].split("/")[0] not in job["error"]
    logged = [r for r in caplog.records if r.getMessage() == f"triage job {job['id']} failed"]
    assert logged and "127.0.0.1" in str(logged[0].exc_info[1])


def test_the_jobs_and_the_spool_retry_put_evidence_through_the_service_s_one_evidence_store(tmp_path, monkeypatch, moto_s3,
                                                                                           onnx_detector, bus_jpg, zidane_jpg):
    """Each upload job and each retry of the spool opened an evidence store of its own: with S3 a client and its
    connection pool per upload. They use the one `serve` opened at start-up, and the evidence still lands in S3."""
    from pipelines.evidence_store import S3EvidenceStore

    for name, value in (("STREETWATCH_EVIDENCE_KEY", KEY), ("STREETWATCH_S3_ACCESS_KEY", "testing"),
                        ("STREETWATCH_S3_SECRET_KEY", "testing")):
        monkeypatch.setenv(name, value)
    opened = []
    real_init = S3EvidenceStore.__init__

    def counted(self, *args, **kwargs):
        opened.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(S3EvidenceStore, "__init__", counted)
    base = settings_for(tmp_path, triage={"workers": 1, "ocr": "off"}).model_dump(mode="json")
    s3 = {"backend": "s3", "spool_dir": str(tmp_path / "spool"),
          "s3": {"endpoint": moto_s3, "secure": False, "bucket": "sw-one-client", "retries": 0}}
    app, tokens = make_app(Settings.model_validate({**base, "evidence_store": s3}), detector=onnx_detector)
    inspector = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        jobs = [client.post("/api/v1/triage/jobs", headers=inspector,
                            files=[("files", (path.name, path.read_bytes(), "image/jpeg"))]).json() for path in (bus_jpg, zidane_jpg)]
        jobs = [wait_job(client, job["id"], inspector) for job in jobs]
        assert app.state.ctx.jobs.retry_spool() == []
    assert [job["state"] for job in jobs] == ["done", "done"], jobs
    assert opened == [app.state.ctx.evidence]  # the service's, opened once
    [case] = jobs[0]["cases"]
    assert app.state.ctx.store.get(case["case_id"]).evidence_ref == f"s3://sw-one-client/cases/{case['case_id']}"


def test_a_job_finding_the_case_store_s_disk_full_says_so_without_naming_it(uploads, tmp_path, onnx_detector, bus_jpg, caplog):
    """A job whose case write found the store's disk full failed 'CaseStoreFull: case store sqlite:////srv/…: …',
    English and the server's path, shown to the inspector; it says in Chinese and English that the disk is full and to
    upload again once space is freed, the server log naming the store, as the API's 503 case-store-full does."""
    app, client, tokens = uploads
    inspector = auth(tokens["inspector"])
    _store_full_on_first_use(app, onnx_detector)
    created = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))])
    assert created.status_code == 202, created.text
    job = _ended(app.state.ctx.jobs.root / created.json()["id"])
    assert job["state"] == "failed", job
    assert job["error"].startswith("案件库所在磁盘已满，任务未完成"), job["error"]
    assert str(tmp_path) not in job["error"] and "CaseStoreFull" not in job["error"]
    logged = [r for r in caplog.records if r.getMessage() == f"triage job {job['id']} failed"]
    assert logged and "cases.db" in str(logged[0].exc_info[1])  # the log keeps the store


def test_an_upload_cut_off_halfway_is_one_info_line_and_keeps_nothing(uploads, caplog):
    """A phone's upload cut off halfway (the link dropped in the street) was logged as an unhandled ERROR with a
    Starlette ClientDisconnect traceback. Sent half a body over a real socket and closed: one INFO line naming the
    request, no ERROR, and no job nor spooled part kept."""
    import logging
    import socket

    from tests.api_helpers import on_loopback

    app, _, tokens = uploads
    part = b'--abc\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    body = part + b"\xff" * 200_000 + b"\r\n--abc--\r\n"
    with caplog.at_level(logging.INFO), on_loopback(app) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"POST /api/v1/triage/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {tokens['inspector']}\r\n"
                         f"Content-Type: multipart/form-data; boundary=abc\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body[:len(body) // 2])
            sock.shutdown(socket.SHUT_WR)  # the rest never comes
            sock.recv(4096)  # the server's answer or its close, once it has read what came
        deadline = time.monotonic() + 10
        while not any("upload cut off" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
    cut = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if "upload cut off" in r.getMessage()]
    assert cut == [("api.uploads", "INFO", "upload cut off by the caller: POST /api/v1/triage/jobs from inspector-user")]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert list(app.state.ctx.jobs.root.iterdir()) == []  # nothing kept


def test_a_malformed_multipart_body_is_logged_naming_the_request_and_answered_400(uploads, caplog):
    """A body broken where its boundary starts logged the multipart library's `Expected boundary character …` at
    WARNING, naming no request, so the log said nothing of whose upload it was; one line names the method, the path
    (`loggable_target`), the caller and the fault, the library's own left out, and the answer is 400 as before."""
    import logging

    app, client, tokens = uploads
    body = b'--abX\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\nxx\r\n--abc--\r\n'
    with caplog.at_level(logging.INFO):
        answer = client.post("/api/v1/triage/jobs", headers={**auth(tokens["inspector"]),
                                                             "Content-Type": "multipart/form-data; boundary=abc"}, content=body)
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:streetwatch:problem:malformed-upload"
    assert answer.json()["detail"] == "malformed multipart body: Invalid multipart data."
    lines = [r for r in caplog.records if "boundary character" in r.getMessage()]
    assert [(r.name, r.levelname) for r in lines] == [("api.uploads", "WARNING")], [r.getMessage() for r in lines]
    assert lines[0].getMessage() == ("malformed multipart body: POST /api/v1/triage/jobs from inspector-user: Invalid "
                                     "multipart data. (Expected boundary character 99, got 88 at index 6)")
    assert list((app.state.ctx.jobs.root).iterdir()) == []  # nothing kept


@pytest.mark.slow  # 14 s: two triage jobs around a promotion
def test_a_model_promoted_while_the_server_runs_judges_its_next_job(tmp_path, monkeypatch, bus_jpg, caplog):
    """`serve` loaded the detector at its first job and kept it: after `streetwatch models promote` a process judged
    with the model it had loaded until restarted, two processes restarted at different times judging with two models.
    Each job checks which model is promoted; the job after a promotion is judged by the new one, the switch logged once."""
    from detect.registry import Promotion, set_promoted

    monkeypatch.setenv("STREETWATCH_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path, triage={"workers": 1, "ocr": "off"}))
    inspector = auth(tokens["inspector"])

    def models_of(client, job: dict) -> set[str]:
        return {r["model"] for r in client.get(f"/api/v1/triage/jobs/{job['id']}/results", headers=inspector).json()}

    with TestClient(app) as client:
        assert {m.split("-")[0] for m in models_of(client, _done_job(client, inspector, bus_jpg))} == {"yolo11n"}
        assert {m.split("-")[0] for m in models_of(client, _done_job(client, inspector, bus_jpg))} == {"yolo11n"}
        set_promoted(Promotion(model="yolov8n", promoted_at=datetime.now(UTC), forced=True, reason="test"))
        with caplog.at_level("INFO", logger="api.jobs"):
            assert {m.split("-")[0] for m in models_of(client, _done_job(client, inspector, bus_jpg))} == {"yolov8n"}
            assert {m.split("-")[0] for m in models_of(client, _done_job(client, inspector, bus_jpg))} == {"yolov8n"}
    assert [r.getMessage() for r in caplog.records if "promoted model" in r.getMessage()] == [
        "service.triage: the promoted model is now yolov8n (was yolo11n): the jobs from now on are judged by it"]
    app.state.ctx.close()


def test_a_stop_with_jobs_held_says_the_running_one_finishes_first(tmp_path, monkeypatch, caplog):
    """`systemctl stop` of a serve running an upload job stood silent after uvicorn's 'Waiting for application
    shutdown.' for as long as the job took (a 300-photo zip: 56 s): the stop says why it waits, and what resumes."""
    import threading

    from tests.api_helpers import make_app, settings_for

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, _ = make_app(settings_for(tmp_path))
    jobs = app.state.ctx.jobs
    folder = jobs.root / "0123456789abcdef"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps({"id": folder.name, "state": "queued"}), encoding="utf-8")
    started, release = threading.Event(), threading.Event()
    assert jobs.submit(folder, lambda: (started.set(), release.wait(30)))
    assert started.wait(30)
    closing = threading.Thread(target=app.state.ctx.close)
    with caplog.at_level("INFO", logger="api.jobs"):
        closing.start()
        for _ in range(500):
            if "finishes first" in caplog.text:
                break
            release.wait(0.01)
        release.set()
        closing.join(30)
    assert "stopping: the running upload or patrol job finishes first (1 job(s) of this process" in caplog.text
