"""Triage and CCTV on a Ray cluster on 127.0.0.1 (`--ray`): the same results as one process, through actor
and owner deaths, with PostgreSQL and S3 (moto_server) as the stores every node shares.

The cluster is a head and a second node started as separate processes (raylets) with their own
resources (`ray.cluster_utils.Cluster`); the commands run as `streetwatch` subprocesses that join it
by address, exactly as on a real cluster. Ray keeps every port on 127.0.0.1 here
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, see pipelines/cluster/connect.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, new_database
from tests.triage_helpers import phone_photo

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray", reason="the ray extra is not installed")

KEY = "cluster-test-key-0123456789"
ENV = {"STREETWATCH_EVIDENCE_KEY": KEY, "STREETWATCH_S3_ACCESS_KEY": "testing", "STREETWATCH_S3_SECRET_KEY": "testing",
       "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
HERE = (30.2741, 120.1551)
NEAR = (30.27417, 120.1551)


@pytest.fixture(scope="module")
def ray_cluster():
    """A head (3 CPUs) and a second node (3 CPUs, resource `second`) on 127.0.0.1; yields the head's address.
    Workers inherit this process's environment: the evidence key and the S3 keys are set first."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 3, "node_ip_address": "127.0.0.1", "include_dashboard": False, "object_store_memory": 300 * 2**20})
    try:
        second = cluster.add_node(num_cpus=3, node_ip_address="127.0.0.1", resources={"second": 1},
                                  object_store_memory=300 * 2**20)
        yield {"address": cluster.address, "cluster": cluster, "second": second}
    finally:
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cli(args: list[str], tmp: Path, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV, "YOLO_CONFIG_DIR": str(REPO / ".cache" / "ultralytics")}
    exe = Path(sys.executable).parent / "streetwatch"
    return subprocess.run([str(exe), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def _settings(path: Path, pg_url: str | None, s3: str | None, bucket: str, **cluster) -> Path:
    data: dict = {"cluster": {"inference_actors": 2, **cluster},
                  "cases": {"url": pg_url or f"sqlite:///{path.parent}/cases.db"},
                  "evidence_store": {"spool_dir": str(path.parent / f"spool-{bucket}"), "local_root": str(path.parent / "evidence")}}
    if s3:
        data["evidence_store"].update(backend="s3", s3={"endpoint": s3, "secure": False, "bucket": bucket})
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _cases(url: str) -> list[tuple]:
    from pipelines.cases import CaseStore

    store = CaseStore(url)
    try:
        return sorted((c.violation_id, c.violation_type, c.source_kind, c.zone_id, c.opened_at, c.cleared_at,
                       c.evidence_ref is not None, tuple(sorted((c.details or {}).get("photo_ids", [])))) for c in store.list())
    finally:
        store.close()


def _ray_processes(title: str, cluster: dict) -> list:
    """Worker processes of this test's cluster (children of its raylets) whose process title names
    `title` (an actor class). Only this cluster's: Ray workers of an earlier test or a step before
    (another cluster, shutting down) carry the same titles."""
    import psutil

    found = []
    for node in (cluster["cluster"].head_node, cluster["second"]):
        try:
            workers = psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in workers:
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:  # exited meanwhile
                continue
            if cmd.startswith("ray::") and title in cmd:
                found.append(p)
    return found


# ---- triage ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory, bus_jpg, zidane_jpg, real_sample_dir):
    """A real day's upload: a bus photographed twice 8 m apart (one case), people, real street shots,
    an exact copy, unreadable files and a zip."""
    day = tmp_path_factory.mktemp("cluster-photos") / "day"
    phone_photo(bus_jpg, day / "0900_bus.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    phone_photo(bus_jpg, day / "0902_bus_retake.jpg", taken=datetime(2024, 6, 3, 9, 2), gps=NEAR, crop=0.04, gain=1.1)
    phone_photo(zidane_jpg, day / "1000_people.jpg", taken=datetime(2024, 6, 3, 10, 0))
    streets = sorted((real_sample_dir / "facades-ads" / "images").glob("*.jpg"))[:3] + \
        sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:3]
    for i, src in enumerate(streets):
        phone_photo(src, day / "street" / f"11{i:02d}.jpg", taken=datetime(2024, 6, 3, 11, i))
    shutil.copy(day / "0900_bus.jpg", day / "copy_of_bus.jpg")
    (day / "empty.jpg").write_bytes(b"")
    (day / "notes.jpg").write_text("meeting notes, not a photo")
    with zipfile.ZipFile(day / "phone.zip", "w") as zf:
        zf.write(streets[0], "DCIM/again.jpg")
        zf.write(bus_jpg, "../../evil.jpg")
    return day


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photos, onnx_detector):
    """The single-process run of the same photos (report only)."""
    from pipelines.triage import TriageSettings, run_triage

    out = tmp_path_factory.mktemp("cluster-ref") / "out"
    run_triage([photos], TriageSettings(out=out, cases=False, workers=2), detector=onnx_detector, show_progress=False)
    return out


@pytest.mark.slow  # a two-node Ray cluster triaging photos (21 s in CI): the default suite's ~15-minute budget
def test_triage_on_two_nodes_gives_the_single_process_records_report_and_groups(tmp_path, ray_cluster, photos, reference):
    """Resume included: a first run over part of the folder, then `--resume` over all of it."""
    out = tmp_path / "out"
    first = _cli(["triage", str(photos / "street"), "--out", str(out), "--no-cases", "--no-progress",
                  "--ray", ray_cluster["address"]], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(_records(out)) == 6
    again = _cli(["triage", str(photos), "--out", str(out), "--no-cases", "--no-progress", "--resume",
                  "--ray", ray_cluster["address"]], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 already recorded earlier" in again.stdout

    ref, got = _records(reference), _records(out)
    assert len(got) == len(ref) == 14  # every input exactly once: 12 files (2 unreadable) and 2 zip members
    by_source = {r["source"]: r for r in got}
    assert {r["source"] for r in ref} == set(by_source)
    for r in ref:  # same findings, boxes, verifier scores, facts and reasons, photo by photo
        assert by_source[r["source"]] == r, r["source"]
    statuses = sorted(r["status"] for r in got)
    assert statuses.count("duplicate") == 1 and statuses.count("error") == 3  # copy; empty, notes, ../ member
    assert any(r["findings"] for r in got if r["status"] == "ok")
    assert (out / "cases.csv").read_text(encoding="utf-8") == (reference / "cases.csv").read_text(encoding="utf-8")
    assert all((out / r["thumb"]).is_file() for r in got if r.get("thumb"))


@pytest.mark.slow  # four Ray triage runs, each starting a CLI and (three of them) actors: ~2.5 min
def test_a_second_run_finds_its_actors_warm_and_idle_ones_give_way_to_other_settings(tmp_path, ray_cluster, photos, reference):
    """Triage actors outlive a run (`cluster.keep_actors_s`): the next `triage --ray` on the cluster is
    served by the same processes, with the single-process results; a run with other detector settings
    stops the idle ones and starts its own; with `keep_actors_s: 0` a run's actors stop with it."""
    warm = _settings(tmp_path / "warm.yaml", None, None, "unused", keep_actors_s=600)
    cold = _settings(tmp_path / "cold.yaml", None, None, "unused", keep_actors_s=0)

    def triage(out: str, config: Path, *more: str) -> str:
        run = _cli(["triage", str(photos / "street"), "--out", str(tmp_path / out), "--config", str(config), "--no-cases",
                    "--no-progress", "--ray", ray_cluster["address"], *more], tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        logs[out] = run.stderr
        return run.stdout

    logs: dict[str, str] = {}

    def alive(pids: set[int]) -> set[int]:
        return {p.pid for p in _ray_processes("SeePhotos", ray_cluster) if p.pid in pids}

    def settle(pids: set[int], expected: set[int]) -> set[int]:
        deadline = time.monotonic() + 60  # a stopped actor's process exits a moment after the call that stops it
        while alive(pids) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        return alive(pids)

    assert "0 triage actors found warm, 2 started; they stay up 600 s" in triage("first", warm)
    first = {p.pid for p in _ray_processes("SeePhotos", ray_cluster)}
    assert "2 triage actors found warm, 0 started" in triage("second", warm)
    assert first and alive(first) == first and {p.pid for p in _ray_processes("SeePhotos", ray_cluster)} <= first  # no process started
    expected = {Path(r["source"]).name: r.get("findings") for r in _records(reference) if Path(r["source"]).parent.name == "street"}
    assert len(expected) == 6
    for out in ("first", "second"):
        assert {Path(r["source"]).name: r.get("findings") for r in _records(tmp_path / out)} == expected

    assert "0 triage actors found warm, 2 started" in triage("other", warm, "--conf", "0.4")
    left = settle(first, set())  # the idle actors of the other settings gave their CPUs up
    assert left == set(), logs["other"][-3000:]
    other = {p.pid for p in _ray_processes("SeePhotos", ray_cluster)}
    assert other and not other & first

    assert "they stopped with the run" in triage("cold", cold)
    deadline = time.monotonic() + 60
    while {p.pid for p in _ray_processes("SeePhotos", ray_cluster)} != other and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {p.pid for p in _ray_processes("SeePhotos", ray_cluster)} == other  # the cold run's actors are gone, the warm ones stay


@pytest.mark.slow  # a two-node Ray cluster started to be refused (8 s in CI): the default suite's ~15-minute budget
def test_a_multi_node_run_pointed_at_sqlite_is_refused_with_the_reason(tmp_path, ray_cluster, photos):
    config = _settings(tmp_path / "settings.yaml", None, None, "unused")
    run = _cli(["triage", str(photos / "street"), "--out", str(tmp_path / "out"), "--config", str(config), "--cases",
                "--no-progress", "--ray", ray_cluster["address"]], tmp_path)
    assert run.returncode == 2
    assert "cases.url is SQLite" in run.stderr and "has 2 nodes" in run.stderr and "PostgreSQL" in run.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()  # refused before any photo was read

    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(yaml.safe_dump({"cameras": [{"id": "cam-01", "url": "x.mp4", "scene": "cam-01.yaml"}]}))
    watch = _cli(["watch", "--cameras", str(cameras), "--config", str(config), "--replay", "--ray", ray_cluster["address"]], tmp_path)
    assert watch.returncode == 2 and "cases.url is SQLite" in watch.stderr and "has 2 nodes" in watch.stderr

    # PostgreSQL for cases but evidence in a local folder: refused too, naming the evidence store.
    local = _settings(tmp_path / "local.yaml", "postgresql+psycopg://u@127.0.0.1:1/db", None, "unused")
    run = _cli(["triage", str(photos / "street"), "--out", str(tmp_path / "out2"), "--config", str(local), "--cases",
                "--no-progress", "--ray", ray_cluster["address"]], tmp_path)
    assert run.returncode == 2 and "evidence_store.backend is local" in run.stderr and "s3" in run.stderr


@pytest.mark.slow
def test_killing_a_see_actor_mid_run_loses_no_photo_and_doubles_no_case(tmp_path, ray_cluster, photos, onnx_detector,
                                                                       postgres_url, moto_s3, monkeypatch):
    """Cases in PostgreSQL with evidence on S3, as a cluster keeps them; the single-process run of the same
    photos into its own database is the reference."""
    from pipelines.settings import load_settings
    from pipelines.triage import TriageSettings, run_triage

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    monkeypatch.setenv("STREETWATCH_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("STREETWATCH_S3_SECRET_KEY", "testing")
    ref_url, url = new_database(postgres_url), new_database(postgres_url)
    ref_config = _settings(tmp_path / "ref.yaml", ref_url, moto_s3, "sw-ref")
    ref_out = tmp_path / "ref"
    run_triage([photos], TriageSettings(out=ref_out, cases=True, workers=2), detector=onnx_detector,
               deployment=load_settings(ref_config), show_progress=False)

    config = _settings(tmp_path / "ray.yaml", url, moto_s3, "sw-ray", photos_per_batch=1)
    out = tmp_path / "out"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "streetwatch"), "triage", str(photos), "--out", str(out),
                             "--config", str(config), "--cases", "--no-progress", "--ray", ray_cluster["address"]],
                            cwd=REPO, env={**os.environ, **ENV, "YOLO_CONFIG_DIR": str(REPO / ".cache" / "ultralytics")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        done = len(_records(out)) if (out / "results.jsonl").exists() else 0
        actors = _ray_processes("SeePhotos.run", ray_cluster)  # an actor busy with this run's photos
        if done >= 2 and actors:
            killed = actors[0].pid
            actors[0].kill()  # SIGKILL: the actor dies with whatever batch it holds
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "the run finished before an actor could be killed"
    assert proc.returncode == 0, stderr[-3000:]

    got, ref = _records(out), _records(ref_out)
    assert sorted(r["source"] for r in got) == sorted(r["source"] for r in ref)  # no photo lost, none twice
    assert {r["source"]: r.get("findings") for r in got} == {r["source"]: r.get("findings") for r in ref}
    ray_cases = _cases(url)
    assert ray_cases and len(ray_cases) == len({c[0] for c in ray_cases})  # one case per violation id
    assert ray_cases == _cases(ref_url)  # same violations, types, times, stored evidence


# ---- CCTV -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_cameras(tmp_path_factory, bus_jpg, real_sample_dir):
    """Four replayed cameras: the bus parks in each one's no-parking strip at its own time and leaves."""
    from tests.cctv_helpers import cameras_file, parked_clip, scene_for

    root = tmp_path_factory.mktemp("cluster-cams")
    cams = []
    for i in range(4):
        cid = f"cam-{i:02d}"
        parked_clip(root / f"{cid}.mp4", bus_jpg, real_sample_dir, duration_s=80, arrive_s=5 + 4 * i, leave_s=60)
        scene_for(root, cid, real_sample_dir, dwell_s=20, clear_s=10)
        cams.append({"id": cid, "url": f"{cid}.mp4", "scene": f"{cid}.yaml"})
    return cameras_file(root / "cameras.yaml", cams)


@pytest.fixture(scope="module")
def watch_reference(tmp_path_factory, four_cameras, postgres_url, moto_s3):
    """The single-process `watch --replay` of the four cameras into its own PostgreSQL database. Every run of the four
    cameras is `--no-state`: each replays the same files from their start (a kept state would skip them)."""
    url = new_database(postgres_url)
    tmp = tmp_path_factory.mktemp("cluster-watch-ref")
    config = _settings(tmp / "settings.yaml", url, moto_s3, "sw-watch-ref")
    run = _cli(["watch", "--cameras", str(four_cameras), "--config", str(config), "--replay", "--no-state"], tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    cases = _cases(url)
    assert len(cases) == 4 and all(c[5] is not None for c in cases)  # each camera: one case, opened and cleared
    return cases


@pytest.mark.slow
def test_four_replayed_cameras_across_two_nodes_open_the_same_cases(tmp_path, ray_cluster, four_cameras, watch_reference,
                                                                    fresh_postgres_url, moto_s3):
    config = _settings(tmp_path / "settings.yaml", fresh_postgres_url, moto_s3, "sw-watch", cameras_per_owner=2)
    events = tmp_path / "events.jsonl"
    run = _cli(["watch", "--cameras", str(four_cameras), "--config", str(config), "--replay", "--no-state", "--events", str(events),
                "--snapshots", str(tmp_path / "snaps"), "--snapshot-every", "1", "--ray", ray_cluster["address"]], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "judging with verifier street-v7 (" in run.stderr, run.stderr[-3000:]  # as `watch` says it without --ray
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["owners"] == 2 and summary["restarts"] == 0 and summary["cluster"]["nodes"] == 2
    assert len({cam["node"] for cam in summary["cameras"].values()}) == 2  # the owners ran on both nodes
    assert all(cam["status"] == "finished" and cam["frames_analysed"] == 80 for cam in summary["cameras"].values())
    assert _cases(fresh_postgres_url) == watch_reference
    records = [json.loads(line) for line in events.read_text().splitlines()]
    opened = sorted(r["camera_id"] for r in records if r.get("event") == "violation" and r["kind"] == "opened")
    assert opened == ["cam-00", "cam-01", "cam-02", "cam-03"]  # every owner's records reach the one events file
    assert sorted(p.name for p in (tmp_path / "snaps").glob("*.jpg")) == [f"cam-0{i}.jpg" for i in range(4)]
    # each camera's start line in the command's stderr, from both owners: Ray merged lines alike but for their numbers
    # across processes, so the second owner's cameras were hidden behind the first's (RAY_DEDUP_LOGS=0)
    for cid in ("cam-00", "cam-01", "cam-02", "cam-03"):
        assert f'"event": "camera_status", "camera_id": "{cid}", "status": "starting"' in run.stderr, run.stderr[-3000:]


@pytest.mark.slow
def test_an_owner_killed_mid_replay_restarts_from_its_saved_state_with_the_same_cases(
        tmp_path, ray_cluster, four_cameras, watch_reference, fresh_postgres_url, moto_s3):
    config = _settings(tmp_path / "settings.yaml", fresh_postgres_url, moto_s3, "sw-watch-kill", cameras_per_owner=2, checkpoint_s=5)
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "streetwatch"), "watch", "--cameras", str(four_cameras), "--config",
                             str(config), "--replay", "--no-state", "--events", str(events), "--ray", ray_cluster["address"]],
                            cwd=REPO, env={**os.environ, **ENV, "YOLO_CONFIG_DIR": str(REPO / ".cache" / "ultralytics")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        opened = events.read_text().count('"opened"') if events.exists() else 0
        owners = _ray_processes("CameraOwner", ray_cluster)
        if opened >= 1 and owners:  # past a violation's opening, so a saved state holds it
            killed = owners[0].pid
            owners[0].kill()
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "the replay finished before an owner could be killed"
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["restarts"] == 1
    assert all(cam["status"] == "finished" for cam in summary["cameras"].values())
    restarted = [cam for cam in summary["cameras"].values() if cam["owner_restarts"] == 1]
    assert len(restarted) == 2 and all(cam["frames_analysed"] < 80 for cam in restarted)  # carried on from the saved states
    assert _cases(fresh_postgres_url) == watch_reference  # none lost, none doubled, same times and evidence


@pytest.mark.slow  # two `watch --ray` runs, each starting a CLI, inference actors and an owner: ~1 min
def test_a_stop_and_start_of_watch_on_ray_keeps_the_standing_violation_and_its_one_case(
        tmp_path, ray_cluster, bus_jpg, real_sample_dir, fresh_postgres_url, moto_s3):
    """`watch --ray`'s checkpoint actor was created afresh at each start and `--state` refused, so a stop and start
    opened a second case for a bus standing throughout, its first never cleared. As on one machine, the driver keeps
    the owners' last states in `<cameras file>.state` at a graceful stop and the owners restore them at the next start
    (`cluster.checkpoint_s` longer than the clip: the state kept is the one each owner saves at its stop)."""
    from pipelines.cases import CaseStore
    from pipelines.cctv.state import load_file
    from tests.cctv_helpers import cameras_file, parked_clip, scene_for

    start = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    scene_for(tmp_path, "cam-01", real_sample_dir, dwell_s=4, clear_s=3)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-01", "url": "cam-01.mp4", "scene": "cam-01.yaml", "analysis_fps": 2}])
    config = _settings(tmp_path / "settings.yaml", fresh_postgres_url, moto_s3, "sw-watch-state", checkpoint_s=60)
    events = tmp_path / "events.jsonl"
    args = ["watch", "--cameras", str(cams), "--config", str(config), "--replay", "--events", str(events),
            "--ray", ray_cluster["address"]]

    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=1, leave_s=12, start=start)
    first = _cli(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.strip().splitlines()[-1])["cases_opened"] == 1
    assert set(load_file(tmp_path / "cameras.yaml.state")) == {"cam-01"}  # one file, `watch`'s format

    # the camera's next recording: the bus still stands there, and drives off 6 s in
    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=6,
                start=start + timedelta(seconds=12))
    again = _cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["cases_opened"] == 0
    # the owner's INFO line, in the command's stderr (Ray forwards the owner's), once: an actor had no handler at INFO
    restored = f"INFO pipelines.cctv.state: camera cam-01: rules state restored from state file {tmp_path / 'cameras.yaml.state'} ("
    assert again.stderr.count(restored) == 1, again.stderr[-3000:]
    store = CaseStore(fresh_postgres_url)
    [case] = store.list()
    store.close()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["kind"] for r in records if r.get("event") == "violation" and r["kind"] in ("opened", "cleared")] == ["opened", "cleared"]
    assert case.cleared_at is not None


@pytest.mark.slow  # two `watch --ray` runs of four cameras on two owners (a CLI, inference actors, two owners each): ~1.5 min
def test_a_stop_and_start_of_watch_on_ray_with_two_owners_restores_each_camera_s_state_to_that_camera(
        tmp_path, ray_cluster, bus_jpg, real_sample_dir, fresh_postgres_url, moto_s3):
    """No test had several owners save and restore states at once: four cameras on two owners, each recording of its
    own length (so each state has its own last frame), a bus standing at the stop in two of them. At the next start
    each camera's state comes back to that camera: its own last frame named, the standing buses' one case each kept
    and cleared, the empty views' buses opening their first case."""
    from pipelines.cases import CaseStore
    from pipelines.cctv.state import load_file
    from tests.cctv_helpers import cameras_file, parked_clip, scene_for

    start = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    lengths = {"cam-00": 12, "cam-01": 10, "cam-02": 13, "cam-03": 11}  # seconds of the first recording
    standing = {"cam-00", "cam-02"}  # a bus arrives 1 s in and is still there at the stop; the others see none
    for cid in lengths:
        scene_for(tmp_path, cid, real_sample_dir, dwell_s=4, clear_s=3)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": cid, "url": f"{cid}.mp4", "scene": f"{cid}.yaml", "analysis_fps": 2}
                                                    for cid in lengths])
    config = _settings(tmp_path / "settings.yaml", fresh_postgres_url, moto_s3, "sw-watch-owners", checkpoint_s=60,
                       cameras_per_owner=2)
    args = ["watch", "--cameras", str(cams), "--config", str(config), "--replay", "--ray", ray_cluster["address"]]

    for cid, length in lengths.items():
        arrive = 1 if cid in standing else length  # length: never in view
        parked_clip(tmp_path / f"{cid}.mp4", bus_jpg, real_sample_dir, duration_s=length, arrive_s=arrive, leave_s=length,
                    start=start)
    first = _cli(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["owners"] == 2 and summary["cases_opened"] == 2, summary
    last = {cid: start + timedelta(seconds=length - 0.5) for cid, length in lengths.items()}  # 2 fps: the last frame's time
    saved = load_file(tmp_path / "cameras.yaml.state")
    assert {cid: ts for cid, (_, ts, _) in saved.items()} == last

    # each camera's next recording, going on where its first ended: a bus stands there from its start and leaves 6 s in
    for cid, length in lengths.items():
        parked_clip(tmp_path / f"{cid}.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=6,
                    start=start + timedelta(seconds=length))
    again = _cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["owners"] == 2 and summary["cases_opened"] == 2, summary  # the two buses not standing at the stop
    assert len({cam["owner"] for cam in summary["cameras"].values()}) == 2
    state_file = tmp_path / "cameras.yaml.state"
    for cid in lengths:  # each camera restored once, with its own state (its own last frame)
        line = f"camera {cid}: rules state restored from state file {state_file} (last frame judged {last[cid].isoformat()})"
        assert again.stderr.count(line) == 1, (cid, again.stderr[-3000:])
    store = CaseStore(fresh_postgres_url)
    cases = store.list()
    store.close()
    assert sorted(c.source_id for c in cases) == sorted(lengths) and all(c.cleared_at is not None for c in cases)
    for case in cases:  # a standing bus's one case opened before the stop; the others' in the second recording
        opened_before_stop = case.opened_at < start + timedelta(seconds=lengths[case.source_id])
        assert opened_before_stop == (case.source_id in standing), (case.source_id, case.opened_at)


@pytest.mark.slow  # a `watch --ray` run (a CLI, inference actors and an owner), stopped while its camera hangs: ~1 min
def test_an_owner_slower_to_stop_than_the_stop_wait_is_named_with_the_state_its_camera_keeps(
        tmp_path, ray_cluster, real_sample_dir, fresh_postgres_url, moto_s3):
    """At a graceful stop the driver fetched each owner's result without a timeout (after a fixed 60 s wait that bound
    nothing), so an owner slow to stop held the driver's stop, and the state file, for as long as it took, without a
    word. It waits `cluster.stop_wait_s`, then names each camera of a late owner with the state the file keeps for it.
    The owner here is slow for real: its camera's snapshot URL stops answering, and a reader stuck in its request holds
    the owner's stop for 15 s (`Watcher.shutdown`'s wait for its readers)."""
    import signal
    import threading

    import cv2

    from benchmarks.media import street_view
    from pipelines.cctv.state import load_file
    from tests.cctv_helpers import SIZE, CameraHandler, cameras_file, scene_for, street
    from tests.test_cctv_sources import _serve

    _, jpeg = cv2.imencode(".jpg", street_view(street(real_sample_dir), SIZE))
    served, hang = [], threading.Event()

    class Camera(CameraHandler):
        def do_GET(self):
            served.append(self.path)
            if len(served) > 6:  # the camera stops answering
                hang.wait(120)
                self.send_error(503)
                return
            self.send_jpeg(jpeg.tobytes())

    scene_for(tmp_path, "cam-01", real_sample_dir)
    config = _settings(tmp_path / "settings.yaml", fresh_postgres_url, moto_s3, "sw-watch-late", checkpoint_s=1, stop_wait_s=2)
    snaps = tmp_path / "snaps"
    with _serve(Camera) as base:
        cams = cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-01", "url": f"{base}/snapshot.jpg", "snapshot": True,
                                                         "scene": "cam-01.yaml", "analysis_fps": 2, "timeout_s": 60}])
        proc = subprocess.Popen([str(Path(sys.executable).parent / "streetwatch"), "watch", "--cameras", str(cams), "--config",
                                 str(config), "--snapshots", str(snaps), "--snapshot-every", "0", "--ray", ray_cluster["address"]],
                                cwd=REPO, env={**os.environ, **ENV, "YOLO_CONFIG_DIR": str(REPO / ".cache" / "ultralytics")},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while not ((snaps / "cam-01.jpg").exists() and len(served) > 6) and proc.poll() is None:
                assert time.monotonic() < deadline, "the camera's frames were never judged"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)  # a frame judged (a checkpoint put), the reader stuck in its request
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            hang.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    state = tmp_path / "cameras.yaml.state"
    late = (f"camera cam-01: owner-000 did not stop within 2 s (cluster.stop_wait_s): {state} keeps its state from "
            "the running cluster's checkpoint (last frame judged ")
    assert late in stderr, stderr[-3000:]
    assert set(load_file(state)) == {"cam-01"}  # its latest checkpoint, kept
    cam = json.loads(stdout.strip().splitlines()[-1])["cameras"]["cam-01"]  # in the summary too, in the same words
    assert cam["status"] == "left_behind" and f"camera cam-01: {cam['reason']}" in stderr


# ---- operations ---------------------------------------------------------------------------------------


@pytest.mark.slow  # 11 s: starts Ray
def test_a_local_cluster_listens_on_loopback_only_and_single_machine_runs_never_import_ray(tmp_path):
    script = """
import json, os, sys, psutil
from pipelines.cluster.connect import joined
from pipelines.settings import ClusterConfig
with joined("local", ClusterConfig(local_cpus=1)) as info:
    import ray
    listening = sorted({c.laddr.ip for p in psutil.Process().children(recursive=True)
                        for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN})
    print(json.dumps({"nodes": info.nodes, "node_ip": ray.nodes()[0]["NodeManagerAddress"], "listening": listening,
                      "usage_stats": os.environ["RAY_USAGE_STATS_ENABLED"]}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["nodes"] == 1 and facts["node_ip"] == "127.0.0.1" and facts["usage_stats"] == "0"
    assert facts["listening"] and set(facts["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1"}, facts["listening"]

    single = """
import sys
from pathlib import Path
from pipelines.triage import TriageSettings, run_triage
import streetwatch.cli, pipelines.cctv.service
run_triage([Path(sys.argv[1])], TriageSettings(out=Path(sys.argv[2]), cases=False, workers=1, ocr="off"), show_progress=False)
print("ray" in sys.modules)
"""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", one / "not-a-photo.jpg")
    run = subprocess.run([sys.executable, "-c", single, str(one), str(tmp_path / "out")], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "False"


def test_metrics_of_every_owner_are_served_in_one_scrape_on_loopback():
    """Two owners' watcher registries (one camera each, on two nodes) and the inference batches, scraped
    over HTTP from 127.0.0.1; a dead owner's samples go when it is forgotten."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from pipelines.cctv.metrics import Metrics
    from pipelines.cluster.metrics import ClusterMetrics
    from tests.pg import free_port

    owners = {"owner-000": ("node-a", "cam-01", 7), "owner-001": ("node-b", "cam-02", 3)}
    cluster = ClusterMetrics()
    for owner, (node, camera, frames) in owners.items():
        m = Metrics()
        m.frames_analysed.labels(camera).inc(frames)
        m.cases_opened.labels(camera, "illegal_parking").inc()
        cluster.update(owner, node, list(m.registry.collect()))
    cluster.observe_batch("0", 6, 0.2)
    port = free_port()
    server = cluster.serve(port, "127.0.0.1")
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("streetwatch_cctv_frames_analysed_total", (("camera", "cam-01"), ("node", "node-a"), ("owner", "owner-000")))] == 7
    assert samples[("streetwatch_cctv_frames_analysed_total", (("camera", "cam-02"), ("node", "node-b"), ("owner", "owner-001")))] == 3
    assert cluster.value("streetwatch_cctv_cases_opened_total") == 2
    assert samples[("streetwatch_cluster_batch_frames_sum", (("actor", "0"),))] == 6
    cluster.forget("owner-001")
    assert cluster.value("streetwatch_cctv_frames_analysed_total") == 7


def test_the_triage_plan_uses_gpus_where_the_cluster_has_them_and_one_worker_per_cpu_otherwise(tmp_path):
    from pipelines.cluster.connect import ClusterError, ClusterInfo
    from pipelines.cluster.triage import plan
    from pipelines.settings import ClusterConfig
    from pipelines.triage import TriageSettings

    settings = TriageSettings(out=tmp_path)
    cpu = plan(ClusterInfo("x", 2, 8.0, 0.0), ClusterConfig(), settings)
    assert [(s.role, s.method, s.count, s.gpus) for s in cpu.stages] == [("worker", "run", 8, 0.0)]
    assert cpu.batch == 1 and cpu.stages[0].detector.threads == 1  # one photo per call, one inference thread, as a worker thread

    gpu = plan(ClusterInfo("x", 3, 16.0, 2.0), ClusterConfig(photos_per_batch=16), settings)
    assert gpu.device == "cuda" and gpu.batch == 16
    assert [(s.role, s.count, s.gpus) for s in gpu.stages] == [("read", 4, 0.0), ("see", 2, 1.0), ("finish", 10, 0.0)]
    assert gpu.stages[1].detector.max_batch == 16 and gpu.describe()["read_actors"] == 4

    forced = plan(ClusterInfo("x", 3, 16.0, 2.0), ClusterConfig(), TriageSettings(out=tmp_path, device="cpu"))
    assert forced.device == "cpu" and forced.stages[0].role == "worker"  # a CPU device given on a GPU cluster stays on CPU
    with pytest.raises(ClusterError, match="has no GPU"):
        plan(ClusterInfo("x", 1, 4.0, 0.0), ClusterConfig(), TriageSettings(out=tmp_path, device="cuda"))


def test_a_restored_state_names_where_it_came_from_the_state_file_or_the_running_cluster(tmp_path):
    """The checkpoint actor is seeded from the state file at the start, yet an owner restoring from it logged
    'restored from the cluster's checkpoint' either way. Each state keeps its origin: the state file by path until an
    owner of this run checkpoints the camera, the running cluster's checkpoint after (an owner restarted)."""
    from pipelines.cluster.watch import Checkpoints

    at = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    state_file = tmp_path / "cameras.yaml.state"
    checkpoints = Checkpoints({"cam-01": ("key", at, b"kept"), "cam-02": ("key", at, b"kept")}, f"state file {state_file}")
    checkpoints.put("cam-01", "key", at + timedelta(seconds=5), b"newer")
    assert checkpoints.restorable(["cam-01", "cam-02", "cam-03"]) == {
        "cam-01": (("key", at + timedelta(seconds=5), b"newer"), "the running cluster's checkpoint"),
        "cam-02": (("key", at, b"kept"), f"state file {state_file}")}  # its owner died before checkpointing it
    assert checkpoints.get(["cam-02"]) == {"cam-02": ("key", at, b"kept")}  # what the driver writes at a stop


@pytest.mark.slow  # 7 s: starts a Ray actor; the default suite's ~15-minute budget
def test_an_inference_actor_sets_up_logging_at_the_drivers_level_before_it_loads_its_detector(monkeypatch):
    """An inference actor's process had no log handler (the owners set one up, it did not): its INFO lines were lost
    and its warnings (a model exported on first use) came bare through Python's last resort. It sets up logging as
    `watch` does, at the level the driver passes, before the load that may warn."""
    from pipelines.cluster import watch

    calls: list = []
    load = watch.load_detector
    monkeypatch.setattr(watch, "setup_logging", lambda level: calls.append(("logging", level)))
    monkeypatch.setattr(watch, "load_detector", lambda *a, **kw: calls.append(("detector",)) or load(*a, **kw))
    server = watch.InferenceServer("yolo11n", "onnx", "cpu", 0.25, 320, False, 8, 0.05, 1, logging.DEBUG)
    assert calls == [("logging", logging.DEBUG), ("detector",)]
    assert server.facts()["model"] == server.detector.model_id


def _two_owners(tmp_path: Path, real_sample_dir: Path, state: Path | None):
    """A `watch --ray` driver over two cameras, one per owner, that nothing has started (no Ray): what its stop and its
    summary make of owners as the test leaves them."""
    from pipelines.cluster.connect import ClusterInfo
    from pipelines.cluster.watch import ClusterWatcher, InferenceOptions
    from pipelines.settings import Settings
    from tests.cctv_helpers import cameras_file, scene_for

    for cid in ("cam-01", "cam-02"):
        scene_for(tmp_path, cid, real_sample_dir)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": cid, "url": f"{cid}.mp4", "scene": f"{cid}.yaml"}
                                                    for cid in ("cam-01", "cam-02")])
    settings = Settings.model_validate({"cluster": {"cameras_per_owner": 1, "stop_wait_s": 2}})
    return ClusterWatcher(cams, settings, ClusterInfo("local", 1, 2.0, 0.0), InferenceOptions(), state_path=state)


def test_a_late_owner_with_no_state_asks_nothing_of_the_checkpoint_actor_and_an_unwritten_file_is_named(
        tmp_path, real_sample_dir, caplog):
    """With --no-state a late owner's cameras asked the checkpoint actor for states never written, and its failure was
    logged as 'None: rules states not saved …'. Nothing is asked of it then; with a state file, its failure names the
    file and what failed, and each late camera the state the file keeps."""
    from ray.exceptions import RayActorError

    watcher = _two_owners(tmp_path, real_sample_dir, state=None)
    watcher._checkpoints = object()  # started, and never asked: --no-state keeps nothing
    with caplog.at_level("WARNING", logger="pipelines.cluster.watch"):
        watcher._save_states([watcher.groups[1]])
    assert [r.getMessage() for r in caplog.records] == [
        "camera cam-02: owner-001 did not stop within 2 s (cluster.stop_wait_s): no state kept (--no-state)"]

    state = tmp_path / "cameras.yaml.state"
    watcher = _two_owners(tmp_path, real_sample_dir, state=state)
    assert watcher._not_saved(RayActorError()) == (f"{state}: rules states not saved: the checkpoint actor failed "
                                                   "(RayActorError); the file keeps what the stop before wrote, if anything")
    assert watcher._kept("cam-02", None) == (f"{state} not written (the checkpoint actor failed): it keeps what the stop "
                                             "before wrote")


def test_a_camera_whose_owner_is_left_behind_at_the_stop_has_its_line_in_the_summary(tmp_path, real_sample_dir):
    """An owner that did not stop within cluster.stop_wait_s returns no summary, so its cameras were missing from the
    one `watch --ray` prints at exit: each has its status and the state kept for it, in the log line's words."""
    watcher = _two_owners(tmp_path, real_sample_dir, state=None)
    done, late = watcher.groups
    done.summary = {"cameras": {"cam-01": {"status": "stopped", "frames_analysed": 7}}, "cases_opened": 1}
    watcher._checkpoints = object()  # started, and never asked: --no-state keeps nothing
    watcher._save_states([late])
    summary = watcher.summary()
    assert summary["cameras"]["cam-02"] == {
        "status": "left_behind", "reason": "owner-001 did not stop within 2 s (cluster.stop_wait_s): no state kept (--no-state)",
        "owner": "owner-001", "node": None, "owner_restarts": 0}
    assert summary["cameras"]["cam-01"]["status"] == "stopped" and summary["cases_opened"] == 1


def test_a_camera_whose_owner_is_left_behind_at_the_stop_gets_its_status_in_the_events_the_pages_read(
        tmp_path, real_sample_dir):
    """A late owner writes no `stopped` of its own, and the driver wrote none for it, so the cameras page showed the
    camera as it was before the stop (online, or offline through the next run). The driver writes its
    `camera_status`, `left_behind` with the log line's words, which ends the conditions its reader had left."""
    from api.cameras import CameraEvents

    events = tmp_path / "events.jsonl"
    before = [{"event": "camera_status", "camera_id": "cam-02", "status": "online", "detail": "", "at": "2025-03-14T02:00:00+00:00"},
              {"event": "camera_health", "camera_id": "cam-02", "kind": "frozen", "active": True, "at": "2025-03-14T02:01:00+00:00"}]
    events.write_text("".join(json.dumps(r) + "\n" for r in before), encoding="utf-8")
    watcher = _two_owners(tmp_path, real_sample_dir, state=None)

    def append(data: dict) -> None:  # as `watch --events` does
        with events.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(data) + "\n")

    watcher.on_record = append
    watcher._checkpoints = object()  # started, and never asked: --no-state keeps nothing
    watcher._save_states([watcher.groups[1]])
    [record] = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()][2:]
    reason = "owner-001 did not stop within 2 s (cluster.stop_wait_s): no state kept (--no-state)"
    assert {k: record[k] for k in ("event", "camera_id", "status", "detail")} == {
        "event": "camera_status", "camera_id": "cam-02", "status": "left_behind", "detail": reason}
    shown = CameraEvents(events)
    shown.refresh()
    assert shown.of("cam-02") == {"status": "left_behind", "detail": reason, "since": record["at"], "conditions": []}
    assert watcher.summary()["cameras"]["cam-02"]["status"] == "left_behind"  # the summary's word, the same


def test_a_restored_violation_whose_case_has_no_evidence_is_announced_again(tmp_path):
    """An owner killed while sealing a case's bundle, after its state was saved: the restored violation never sends
    `opened` again by itself, so that case kept no evidence (seen once in CI). Settled spool first, then: no case, or a
    case without stored or sealed evidence -> announced again at the next sighting; a finished case -> left alone."""
    import pickle

    from detect.evidence.builder import BundleContext
    from detect.rules import CameraRules
    from detect.tracking import TrackingConfig
    from pipelines.cases.intake import PARTIAL, _new_case
    from pipelines.cctv.state import violations_to_reopen
    from tests.cctv_helpers import make_intake
    from tests.test_rules_camera import CAR1, CAR2, ROAD, dets, jitter, run, scene

    rules = CameraRules(scene(road=ROAD), tracking=TrackingConfig(frame_rate=0.5))
    both = lambda t: dets(("car", jitter(CAR1, t)), ("car", jitter(CAR2, t)))  # noqa: E731
    opened = [event for _, _, event in run(rules, both, end_s=310)]
    assert len(opened) == 2
    restored = pickle.loads(pickle.dumps(rules))  # what a checkpoint holds
    intake = make_intake(tmp_path)
    ctx = BundleContext(source_kind="camera")
    half = intake.store.create_case(_new_case(opened[0], ctx), actor="rules:cam-1")  # drafted, its bundle half-built
    (intake.spool / f"{half.id}{PARTIAL}").mkdir(parents=True)
    assert sorted(violations_to_reopen(restored, intake)) == sorted(e.violation_id for e in opened)  # one without a case
    assert not (intake.spool / f"{half.id}{PARTIAL}").exists()  # the dead owner's leftover cleared
    finished = intake.record_event(opened[0], ctx)  # the announcement again builds the same case's bundle
    assert finished.id == half.id and finished.evidence_ref is not None
    assert violations_to_reopen(restored, intake) == [opened[1].violation_id]
    intake.record_event(opened[1], ctx)
    assert violations_to_reopen(restored, intake) == []


@pytest.mark.slow  # 14 s: starts a two-node Ray cluster; the default suite's ~15-minute budget
def test_joining_a_loopback_cluster_by_address_connects_without_the_loopback_variable(ray_cluster):
    """An operator's shell has no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER: joining 127.0.0.1:PORT used to take this
    machine's network address for the driver's and wait for a GCS there for ever (without a word)."""
    script = """
import sys
from pipelines.cluster.connect import joined
from pipelines.settings import ClusterConfig
with joined(sys.argv[1], ClusterConfig()) as info:
    print(info.nodes)
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    run = subprocess.run([sys.executable, "-c", script, ray_cluster["address"]], cwd=REPO,
                         env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "2"


def test_a_head_address_where_nothing_answers_is_one_clear_error(tmp_path):
    """Ray retried a GCS that is not there for a minute and more, printing only its retries."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = _cli(["triage", str(tmp_path), "--out", str(tmp_path / "out"), "--no-cases", "--ray", f"127.0.0.1:{port}"],
               tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"cannot join the Ray cluster at 127.0.0.1:{port}: nothing answers there (Connection refused)" in run.stderr


def test_a_join_the_head_refuses_names_token_authentication(monkeypatch):
    """A head that found ~/.ray/auth_token requires token authentication, and Ray 2.60 tells a driver joining without
    RAY_AUTH_MODE only `Failed to connect to Ray cluster at …` (its ConnectionError, ray/_private/worker.py): the
    refusal names the likely cause, this process's RAY_AUTH_MODE and where the docs explain it."""
    from pipelines.cluster.connect import join_refused

    refused = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379")  # as Ray 2.60 raises it
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert join_refused("127.0.0.1:6379", refused) == (
        "cannot join the Ray cluster at 127.0.0.1:6379: Failed to connect to Ray cluster at 127.0.0.1:6379; the cluster "
        "may require token authentication (RAY_AUTH_MODE is not set here): set RAY_AUTH_MODE=token, with the same "
        "~/.ray/auth_token, the same on every node and in the shell that runs streetwatch (docs/scale-out.md, Plain machines)")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "(RAY_AUTH_MODE is 'token' here)" in join_refused("10.0.0.10:6379", refused)
    assert "RAY_AUTH_MODE" in (REPO / "docs" / "scale-out.md").read_text(encoding="utf-8")
    assert "### Plain machines" in (REPO / "docs" / "scale-out.md").read_text(encoding="utf-8")


def test_every_owner_judges_with_the_verifier_the_driver_checked_though_another_is_promoted_since(
        tmp_path, real_sample_dir, monkeypatch):
    """Each owner loaded its verifier by the name given (the promoted one by default), so an owner restarted after a
    `verifier promote` judged with the new heads while its bundles named the driver's. The owners are sent the card the
    driver checked (its path), or `none` where the promoted one stepped aside for another detector."""
    from detect.evidence.builder import VerifierInfo
    from detect.judgement import load_judgement
    from detect.verifier import promote_verifier
    from pipelines.cluster import watch

    shipped = REPO / "models" / "verifiers"
    mine = tmp_path / "models" / "verifiers"
    mine.mkdir(parents=True)
    shutil.copy2(shipped / "street-v7.npz", mine / "street-v7.npz")
    (mine / "mine.yaml").write_text((shipped / "street-v7.yaml").read_text(encoding="utf-8").replace("id: street-v7", "id: mine", 1),
                                    encoding="utf-8")
    monkeypatch.setenv("STREETWATCH_MODELS", str(tmp_path / "models"))
    watcher = _two_owners(tmp_path, real_sample_dir, state=None)
    facts = watch.InferenceServer("yolo11n", "onnx", "cpu", 0.25, 640, True, 8, 0.05, 1, logging.INFO).facts()
    judgement = load_judgement(None, watcher.taxonomy)  # the promoted street-v7, as the driver starts
    judgement.check(watch.RemoteDetector([], facts))
    spec = watcher._owner_spec(judgement, facts, logging.INFO)
    promote_verifier("mine")  # while the cluster runs
    owner = load_judgement(spec.verifier, spec.taxonomy)  # an owner restarted now
    assert spec.model.verifier.id == "street-v7" and VerifierInfo.of(owner) == spec.model.verifier

    judgement = load_judgement(None, watcher.taxonomy)  # `mine`, trained for another input size than the actors'
    judgement.check(watch.RemoteDetector([], {**facts, "imgsz": 320}))  # steps aside: the detector judges alone
    spec = watcher._owner_spec(judgement, facts, logging.INFO)
    assert spec.verifier == "none" and load_judgement(spec.verifier, spec.taxonomy).verifier is None
