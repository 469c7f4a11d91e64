"""Two `serve` processes behind one site (docs/service.md, Several server processes): one case store, one evidence
store, one `service.data_dir`. Two app instances in this process on the suite's real PostgreSQL stand for them; what
they share goes through the same files and rows as two processes' would (a job's claim is an `flock` on an open file,
so two instances in one process hold theirs apart as two processes do)."""

from __future__ import annotations

import errno
import fcntl
import logging
import json
import os
import threading
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import service_config
from api.job_retention import REMOVED, SWEEPING, remove_expired
from api.jobs import locked, write_job
from api.routers.cityops import resume_patrol_jobs
from pipelines.cases import CaseState
from pipelines.dispatch.webhook import sign
from pipelines.settings import URL_KEY_ENV
from tests.api_helpers import auth, draft_cases, make_app, settings_for
from tests.test_api_retention import OLD, _patrol_job, _photo_job


@pytest.fixture
def site(tmp_path, monkeypatch, fresh_postgres_url):
    """The settings both processes of one site run with (one PostgreSQL store, one evidence store, one data folder)."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    return settings_for(tmp_path, cases_url=fresh_postgres_url, triage={"workers": 1, "ocr": "off"})


def second_server(settings, detector=None):
    """The site's second process: the same settings, the tokens the first one's store holds."""
    return create_app(settings, service_config(settings, "test"), detector_factory=(lambda: detector) if detector else None,
                      resume_jobs=False)


def test_a_server_started_beside_one_running_a_job_leaves_that_job_to_it(site, bus_jpg, onnx_detector):
    """The second process resumed at its start every job the data folder held queued or running, also those the first
    was running: both ran the job into one journal and one record (a summary of 120 photos read 194). A job another
    live process holds is left to it; once it ended, nothing is taken up either."""
    gate = threading.Event()
    first, tokens = make_app(site, detector=None)
    first.state.ctx.jobs._detector_factory = lambda: (gate.wait(30), onnx_detector)[1]  # the job runs, held at its detector
    inspector = auth(tokens["inspector"])
    with TestClient(first) as client:
        job = client.post("/api/v1/triage/jobs", headers=inspector, files=[("files", ("bus.jpg", bus_jpg.read_bytes()))]).json()
        second = second_server(site, onnx_detector)
        try:
            assert second.state.ctx.jobs.resume_unfinished() == []  # the first runs it
            assert second.state.ctx.jobs.list()[0]["id"] == job["id"]  # and the second sees it, to answer its polls
        finally:
            gate.set()
        for _ in range(600):
            if (state := first.state.ctx.jobs.get(job["id"])["state"]) not in ("queued", "running"):
                break
            threading.Event().wait(0.05)
        assert state == "done"
        assert second.state.ctx.jobs.resume_unfinished() == []
        second.state.ctx.close()
    assert first.state.ctx.jobs.get(job["id"])["summary"]["readable"] == 1


def test_a_patrol_job_another_server_runs_is_not_resumed_but_a_stopped_ones_is(site, tmp_path):
    """Patrol jobs alike: the one a live process holds is left to it; the one a stopped process left (no claim) is
    taken up, as before."""
    first, _ = make_app(site, resume_jobs=False)
    second = second_server(site)
    root = site.service.patrol_dir.resolve()
    held, left = root / "0000000000000001", root / "0000000000000002"
    for n, folder in enumerate((held, left)):
        write_job(folder, {"id": folder.name, "owner": "inspector-user", "state": "running", "video": "video.mp4",
                           "created_at": f"2026-12-06T08:0{n}:00+00:00"})
    assert first.state.ctx.jobs.claims.take(held)
    second.state.ctx.jobs.pool.shutdown()  # nothing runs: which jobs it would take is the test
    second.state.ctx.jobs.pool = _Recorder()
    assert resume_patrol_jobs(second.state.ctx) == [left.name]
    first.state.ctx.jobs.claims.release(held)
    second.state.ctx.jobs.claims.release()
    first.state.ctx.close()
    second.state.ctx.store.close()


def test_one_sweep_at_a_time_removes_the_expired_jobs_of_a_shared_data_folder(site, caplog):
    """Each process sweeps at its start and hourly: two sweeps at once renamed and deleted the same folders under each
    other, logging `job folder not removed` for folders that were, writing each removal twice and counting some by
    neither. While another process sweeps a jobs folder (its lock held), this one leaves it; the next round sweeps."""
    app, _ = make_app(site, resume_jobs=False)
    jobs = app.state.ctx.jobs
    photo = _photo_job(jobs.root, "00000000000000a1", "done", OLD)
    patrol = _patrol_job(site.service.patrol_dir.resolve(), "00000000000000b1", "failed", OLD)
    held = os.open(jobs.root.with_name("jobs" + SWEEPING), os.O_RDWR | os.O_CREAT)  # the other process, sweeping the photo jobs now
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        with caplog.at_level(logging.INFO, logger="api.jobs"):
            swept = remove_expired(jobs)
        assert swept.jobs == [patrol.name] and photo.is_dir()  # its patrol jobs were nobody's to sweep
        assert "service.data_dir/jobs: another server process is sweeping expired jobs" in caplog.text
    finally:
        os.close(held)
    assert remove_expired(jobs).jobs == [photo.name] and not photo.exists()
    assert (jobs.root / REMOVED).read_text(encoding="utf-8").count(photo.name) == 1
    app.state.ctx.close()


def test_a_job_submitted_after_shutdown_leaves_no_claim(tmp_path):
    """An upload as the server stops: its claim was taken, then the stopped pool refused the run and the claim stayed
    held until the process exited, so another process (or this one's next try) could not take the job up."""
    app, _ = make_app(settings_for(tmp_path), resume_jobs=False)
    jobs = app.state.ctx.jobs
    folder = jobs.root / "00000000000000c1"
    write_job(folder, {"id": folder.name, "owner": "inspector-user", "state": "queued",
                       "created_at": "2026-12-06T08:00:00+00:00"})
    jobs.shutdown()
    with pytest.raises(RuntimeError):
        jobs.submit(folder, lambda: None)
    assert jobs.claims.take(folder)  # free again: the kernel holds no lock for the refused run
    jobs.claims.release()
    app.state.ctx.close()


def test_a_lock_the_file_system_refuses_closes_its_file(tmp_path, monkeypatch):
    """A job's claim and a sweep's lock are `flock`s (`locked`); on a share whose lock manager does not answer flock
    fails with ENOLCK, and the file opened for it stayed open: one descriptor lost per upload or sweep, until the
    process ran out. The error is raised, the file closed."""
    def no_lock_manager(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_lock_manager)  # what such a share answers, which a local disk never does
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(OSError) as refused:
            locked(tmp_path / ".claim")
        assert refused.value.errno == errno.ENOLCK
    assert set(os.listdir("/proc/self/fd")) - before == set()


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o660), (0o027, 0o640)])
def test_a_lock_file_is_made_group_writable_less_the_umask(tmp_path, umask, mode):
    """Two `serve` processes on one data folder as two users of one group: a claim or sweep lock file made 0600 by one
    could not be opened by the other. It is made as the job folders are, group-writable less the umask."""
    before = os.umask(umask)
    try:
        fd = locked(tmp_path / ".claim")
    finally:
        os.umask(before)
    os.close(fd)
    assert (tmp_path / ".claim").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o660), (0o027, 0o640)])
def test_a_lock_file_an_older_release_made_0600_is_widened_on_open(tmp_path, umask, mode):
    """Lock files made 0600 by a release before the group-writable ones stayed 0600, so another user's `serve` of the
    group still could not open them. This process, owning one, widens it to a new one's mode when it opens it."""
    claim = tmp_path / ".claim"
    claim.touch(mode=0o600)
    claim.chmod(0o600)
    before = os.umask(umask)
    try:
        os.close(locked(claim))
    finally:
        os.umask(before)
    assert claim.stat().st_mode & 0o777 == mode


def test_a_refused_widening_of_a_lock_file_is_logged_and_the_lock_taken(tmp_path, monkeypatch, caplog):
    """A lock file whose widening is refused (a share that refuses chmod) still locks, and the log names the file and
    what to run."""
    ours = tmp_path / ".claim"
    ours.touch()
    ours.chmod(0o600)

    def refused(fd, mode):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "fchmod", refused)
    before = os.umask(0o002)
    try:
        fd = locked(ours)
    finally:
        os.umask(before)
    assert fd is not None
    os.close(fd)
    assert ours.stat().st_mode & 0o777 == 0o600
    assert [r.getMessage() for r in caplog.records if r.name == "api.jobs"] == [
        f"{ours}: lock file is 600, another server process of the group cannot open it, and making it 660 was "
        "refused (Operation not permitted): run chmod 660 on it"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another user, and open it after")
def test_a_lock_file_of_another_user_is_left_as_it_is(tmp_path):
    """A lock file of another user is theirs to widen: this process (root here, which may open it) leaves its mode."""
    theirs = tmp_path / ".claim"
    theirs.touch()
    theirs.chmod(0o600)
    os.chown(theirs, os.geteuid() + 1, -1)
    before = os.umask(0o002)
    try:
        os.close(locked(theirs))
    finally:
        os.umask(before)
    assert theirs.stat().st_mode & 0o777 == 0o600


REGISTER = ("店名,统一社会信用代码,联系电话,摄像头编号,图像范围\n"
            "王记面馆,91330106MA27XY0001,13912345678,cam-01,\"0.1,0.5; 0.5,0.5; 0.5,1.0\"\n"
            "李家水果,91330106MA27XY0002,0571-87654321,cam-01,\"0.5,0.5; 0.9,0.5; 0.9,1.0\"\n")


def test_a_register_imported_on_both_servers_at_once_is_imported_by_each(site):
    """Two clerks import one register, each on a process of the site, and one was answered 500: both looked, found
    none of its shops and inserted them, the second insert meeting the first's rows (PostgreSQL). The second's import
    is written again over the first's, each import answered with its shops and recorded once; adding one shop alike."""
    first, tokens = make_app(site, resume_jobs=False)
    second = second_server(site)
    reviewer = auth(tokens["reviewer"])
    other = second.state.ctx.store.engine
    raced: list[str] = []

    @sa.event.listens_for(first.state.ctx.store.engine, "before_cursor_execute")
    def the_other_writes_first(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO shops") and not raced:  # this one looked and found none: the other commits now
            raced.append(statement)
            with TestClient(second) as client:
                assert client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.csv", REGISTER.encode())}).status_code == 200
            with other.connect() as c:
                assert c.execute(sa.text("SELECT count(*) FROM shops")).scalar_one() == 2

    with TestClient(first, raise_server_exceptions=False) as client:
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.csv", REGISTER.encode())})
        assert raced and answer.status_code == 200, answer.text
        assert answer.json()["shops"] == ["91330106MA27XY0001", "91330106MA27XY0002"]
        raced.clear()
        shop = {"name": "赵记茶叶", "frontages": [{"camera": "cam-01", "polygon": [[0.3, 0.6], [0.7, 0.6], [0.7, 1.0]]}]}
        with TestClient(second) as other_client:  # the other adds the same new shop after this one looked
            sa.event.remove(first.state.ctx.store.engine, "before_cursor_execute", the_other_writes_first)

            @sa.event.listens_for(first.state.ctx.store.engine, "before_cursor_execute")
            def the_other_adds_it(conn, cursor, statement, parameters, context, executemany):
                if statement.startswith("INSERT INTO shops") and not raced:
                    raced.append(statement)
                    assert other_client.put("/api/v1/shops/s9", headers=reviewer, json={**shop, "name": "赵记"}).status_code == 200

            put = client.put("/api/v1/shops/s9", headers=reviewer, json=shop)
        assert raced and put.status_code == 200, put.text
        assert [s["name"] for s in client.get("/api/v1/shops", headers=reviewer).json()["items"]] == ["李家水果", "王记面馆", "赵记茶叶"]
    audits = [r for r in first.state.ctx.accounts.audit_records() if r["action"] in ("import_shops", "put_shop")]
    assert sorted(r["action"] for r in audits) == ["import_shops", "import_shops", "put_shop", "put_shop"]
    second.state.ctx.close()
    first.state.ctx.close()


def test_a_server_without_the_url_key_says_its_evidence_links_open_on_it_alone(site, monkeypatch, caplog, bus_event):
    """Without `$STREETWATCH_API_URL_KEY` each process signs evidence links with a random key of its own, and `serve`
    started without a word about it: behind a balancer the other process refused half of a case's images. It says so
    at start-up, naming the variable; with the key set it says nothing and a link one hands out opens on the other."""
    monkeypatch.delenv(URL_KEY_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="api.app"):
        first, tokens = make_app(site, resume_jobs=False)
    assert (f"${URL_KEY_ENV} (service.url_key_env) is not set: evidence links are signed with a random key of this "
            "process, so another server process of this site refuses them (403 bad signature)") in caplog.text
    reviewer = auth(tokens["reviewer"])
    case_id = draft_cases(first, bus_event, [{}])[0]

    def link_on_the_other(one, other) -> int:
        with TestClient(one) as a, TestClient(other) as b:
            url = a.get(f"/api/v1/cases/{case_id}", headers=reviewer).json()["evidence"]["images"][0]["url"]
            return b.get(url).status_code

    assert link_on_the_other(first, second_server(site)) == 403
    monkeypatch.setenv(URL_KEY_ENV, "url-key-0123456789abcdef-site")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="api.app"):
        keyed = second_server(site), second_server(site)
    assert URL_KEY_ENV not in caplog.text
    assert link_on_the_other(*keyed) == 200


class _Recorder:
    """A pool that keeps what it was given to run, running none of it."""

    def __init__(self) -> None:
        self.submitted: list = []

    def submit(self, fn, *args):
        self.submitted.append((fn, args))


def test_a_webhook_call_one_server_took_is_refused_as_a_replay_by_the_other(tmp_path, fresh_postgres_url, monkeypatch, bus_event):
    """Each process kept the timestamped webhook calls it took in its own memory: a captured call replayed to the
    site's other process was taken again (an old 结案 after the case was reopened). The calls taken are in the case
    store: the other refuses it 409 as the first would, and takes a new call."""
    monkeypatch.setenv("SW_TEST_HOOK", "hook-secret-0123")
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    target = {"adapter": "cn-dcm", "url": "http://127.0.0.1:9/cn-dcm/cases", "webhook_secret_env": "SW_TEST_HOOK",
              "webhook_timestamp_header": "X-Timestamp"}
    site = settings_for(tmp_path, cases_url=fresh_postgres_url, dispatch={"targets": {"dcm": target}})
    first, tokens = make_app(site, resume_jobs=False)
    second = second_server(site)
    store = first.state.ctx.store
    case_id = draft_cases(first, bus_event, [{}])[0]
    hook, stamp = "/api/v1/dispatch/dcm/webhook", str(int(time.time()))
    body = json.dumps({"taskNumber": "T-300", "status": "立案"}).encode()
    signed = {"X-Timestamp": stamp, "X-Signature": sign("hook-secret-0123", body, stamp)}
    with TestClient(first) as client, TestClient(second) as other:
        client.post(f"/api/v1/cases/{case_id}/confirm", headers=auth(tokens["reviewer"]), json={})
        store.mark_delivered(store.outbox_entries(case_id=case_id)[0].id, "T-300")
        assert client.post(hook, content=body, headers=signed).json()["state"] == "accepted"
        replayed = other.post(hook, content=body, headers=signed)
        assert replayed.status_code == 409 and "refused as a replay" in replayed.json()["detail"], replayed.text
        closed = json.dumps({"taskNumber": "T-300", "status": "结案"}).encode()
        taken = other.post(hook, content=closed, headers={"X-Timestamp": stamp, "X-Signature": sign("hook-secret-0123", closed, stamp)})
        assert taken.status_code == 200 and store.get(case_id).state is CaseState.CLOSED
    second.state.ctx.close()
    first.state.ctx.close()
