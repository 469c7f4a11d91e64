"""`streetwatch watch` as a process: SIGTERM mid-work loses nothing; the documented example file loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from detect.digests import sha256_file
from detect.evidence.signing import verify_bundle
from pipelines.cases import CaseStore
from pipelines.cctv.config import load_cameras
from tests.cctv_helpers import cameras_file, parked_clip, scene_for
from tests.conftest import REPO

KEY = "cctv-cli-test-key-0123456789"


def _opened(events: Path) -> list[dict]:
    if not events.is_file():
        return []
    records = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    return [r for r in records if r["event"] == "violation" and r["kind"] == "opened"]


@pytest.mark.slow  # 15 s: a watch process signalled mid-work
def test_sigterm_during_work_loses_nothing(tmp_path, bus_jpg, real_sample_dir):
    parked_clip(tmp_path / "long.mp4", bus_jpg, real_sample_dir, duration_s=300, arrive_s=2, leave_s=300)
    cams = []
    for cid in ("cam-a", "cam-b"):
        scene_for(tmp_path, cid, real_sample_dir, dwell_s=8, clear_s=5)
        cams.append({"id": cid, "url": "long.mp4", "scene": f"{cid}.yaml"})
    cameras_file(tmp_path / "cameras.yaml", cams)
    settings = {"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")}}
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
    events = tmp_path / "events.jsonl"
    env = {**os.environ, "STREETWATCH_EVIDENCE_KEY": KEY, "YOLO_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "streetwatch.cli", "watch", "--cameras", str(tmp_path / "cameras.yaml"), "--replay",
           "--config", str(tmp_path / "settings.yaml"), "--events", str(events)]
    with open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
        try:
            deadline = time.monotonic() + 120
            while len(_opened(events)) < 2:  # both cameras opened their case: work is in full flow
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no case opened in time"
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (tmp_path / "stderr.log").read_text()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["in_flight"] == 0
    for cid in ("cam-a", "cam-b"):
        cam = summary["cameras"][cid]
        assert cam["status"] == "stopped" and cam["frames_dropped"] == 0
        assert cam["frames_queued"] == cam["frames_analysed"] < 300  # stopped mid-clip, every queued frame judged

    store = CaseStore(settings["cases"]["url"])
    cases = store.list()
    assert sorted(c.violation_id for c in cases) == sorted(r["violation_id"] for r in _opened(events))
    for case in cases:
        assert case.evidence_ref is not None and verify_bundle(Path(case.evidence_ref.removeprefix("file://")), KEY.encode()).ok
    assert not any((tmp_path / "spool").iterdir())  # nothing left waiting for upload
    store.close()


def test_scene_files_without_a_zone_follow_the_settings_zone(tmp_path, bus_jpg, real_sample_dir):
    """A Berlin city's scene file naming no timezone was read in Asia/Shanghai: its replay started 7 hours early (and
    its schedules ran on Shanghai time). It follows the settings' timezone; a scene's own timezone still wins."""
    from typer.testing import CliRunner

    from streetwatch.cli import app

    parked_clip(tmp_path / "parked.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=12)
    scene_for(tmp_path, "cam-berlin", real_sample_dir, dwell_s=4, timezone=None)
    scene_for(tmp_path, "cam-shanghai", real_sample_dir, dwell_s=4, timezone="Asia/Shanghai")
    cameras_file(tmp_path / "cameras.yaml", [{"id": cid, "url": "parked.mp4", "scene": f"{cid}.yaml", "start_time": "2026-01-05T08:00:00"}
                                             for cid in ("cam-berlin", "cam-shanghai")])
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"timezone": "Europe/Berlin", "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                        "evidence_store": {"local_root": str(tmp_path / "ev"), "spool_dir": str(tmp_path / "spool")}}))
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(app, ["watch", "--cameras", str(tmp_path / "cameras.yaml"), "--config", str(settings), "--replay",
                                      "--events", str(events)], env={"STREETWATCH_EVIDENCE_KEY": KEY, "STREETWATCH_CONFIG": ""})
    assert result.exit_code == 0, result.output
    opened = {r["camera_id"]: datetime.fromisoformat(r["at"]) for r in _opened(events)}
    # 08:00 local is 07:00 UTC in Berlin (winter), 00:00 UTC in Shanghai; the case opens after the 4 s dwell
    assert timedelta(0) < opened["cam-berlin"] - datetime(2026, 1, 5, 7, 0, tzinfo=UTC) < timedelta(seconds=12)
    assert timedelta(0) < opened["cam-shanghai"] - datetime(2026, 1, 5, 0, 0, tzinfo=UTC) < timedelta(seconds=12)


@pytest.mark.slow  # 8 s: two `watch` runs over a replay; the default suite's ~15-minute budget
def test_a_restart_without_any_flag_keeps_the_standing_violation_and_its_one_case(tmp_path, bus_jpg, real_sample_dir):
    """Saving the rules state took `--state FILE`, so a 24/7 deployment that never heard of it opened a second case for a
    bus standing through each restart, its first case never cleared. `watch` keeps the state beside the cameras file
    by default; `--no-state` with `--state` is refused."""
    from typer.testing import CliRunner

    from streetwatch.cli import app

    start = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    scene_for(tmp_path, "cam-01", real_sample_dir, dwell_s=4, clear_s=3)
    cams = cameras_file(tmp_path / "cameras.yaml", [{"id": "cam-01", "url": "cam-01.mp4", "scene": "cam-01.yaml", "analysis_fps": 2}])
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                        "evidence_store": {"local_root": str(tmp_path / "ev"), "spool_dir": str(tmp_path / "spool")}}))
    events = tmp_path / "events.jsonl"
    args = ["watch", "--cameras", str(cams), "--config", str(settings), "--replay", "--events", str(events)]
    env = {"STREETWATCH_EVIDENCE_KEY": KEY, "STREETWATCH_CONFIG": ""}

    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=1, leave_s=12, start=start)
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["cases_opened"] == 1
    assert (tmp_path / "cameras.yaml.state").is_file()

    # the camera's next recording: the bus still stands there, and drives off 6 s in
    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=6, start=start + timedelta(seconds=12))
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["cases_opened"] == 0
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    [case] = store.list()
    store.close()
    assert case.cleared_at is not None and len(_opened(events)) == 1
    card = REPO / "models" / "verifiers" / "street-v7.yaml"  # the promoted heads judged with the detector: the bundle says which
    manifest = json.loads((tmp_path / "ev" / case.id / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["verifier"] == {"id": "street-v7", "card_sha256": sha256_file(card),
                                    "heads_sha256": sha256_file(card.with_suffix(".npz"))}
    assert verify_bundle(tmp_path / "ev" / case.id, KEY.encode()).ok

    both = CliRunner().invoke(app, [*args, "--state", str(tmp_path / "other.state"), "--no-state"], env=env)
    assert both.exit_code == 2 and "--state and --no-state" in both.output


@pytest.mark.slow  # 11 s: watch processes
def test_a_read_only_cameras_folder_keeps_the_state_in_the_data_dir_or_refuses_to_start(tmp_path, bus_jpg, real_sample_dir,
                                                                                        monkeypatch):
    """A cameras file installed read-only (/etc/streetwatch, root's) ran all day and said only at the stop that the
    rules states were not saved, so every restart opened a second case for a bus standing through it. The states go
    to service.data_dir/watch when the cameras file's folder cannot be written (a second run restores them); with
    that unwritable too, or --state in such a folder, `watch` does not start, naming the folders and what to set.
    (Root may write anywhere, so `may_write` is told which folders are read-only, as test_install's `locked`.)"""
    from typer.testing import CliRunner

    import pipelines.cctv.state
    from streetwatch.cli import app

    etc, data = tmp_path / "etc", tmp_path / "data"
    etc.mkdir()
    read_only = {etc}
    may_write = pipelines.cctv.state.may_write
    monkeypatch.setattr(pipelines.cctv.state, "may_write", lambda d: d not in read_only and may_write(d))
    start = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
    scene_for(etc, "cam-01", real_sample_dir, dwell_s=4, clear_s=3)
    cams = cameras_file(etc / "cameras.yaml", [{"id": "cam-01", "url": str(tmp_path / "cam-01.mp4"), "scene": "cam-01.yaml",
                                                "analysis_fps": 2}])
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"}, "service": {"data_dir": str(data)},
                                        "evidence_store": {"local_root": str(tmp_path / "ev"), "spool_dir": str(tmp_path / "spool")}}))
    args = ["watch", "--cameras", str(cams), "--config", str(settings), "--replay"]
    env = {"STREETWATCH_EVIDENCE_KEY": KEY, "STREETWATCH_CONFIG": ""}

    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=1, leave_s=12, start=start)
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["cases_opened"] == 1
    [kept] = (data / "watch").iterdir()
    assert kept.name.startswith("cameras.yaml-") and kept.suffix == ".state" and not (etc / "cameras.yaml.state").exists()

    parked_clip(tmp_path / "cam-01.mp4", bus_jpg, real_sample_dir, duration_s=12, arrive_s=0, leave_s=6, start=start + timedelta(seconds=12))
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["cases_opened"] == 0  # the standing bus kept its one case

    read_only.add(data / "watch")
    refused = CliRunner().invoke(app, args, env=env)
    assert refused.exit_code == 2 and " ".join(refused.output.split()) == (
        f"error: --cameras {cams}: no folder this user may write for the cameras' rules states: tried {etc} (beside it) "
        f"and {data / 'watch'} (service.data_dir); give --state FILE in a folder you may write, set service.data_dir to "
        "one, or give --no-state"), refused.output
    named = CliRunner().invoke(app, [*args, "--state", str(etc / "mine.state")], env=env)
    assert named.exit_code == 2 and f"--state {etc / 'mine.state'}: this user may not write {etc}" in named.output
    assert CliRunner().invoke(app, [*args, "--no-state"], env=env).exit_code == 0


def test_documented_example_cameras_file_loads():
    """Loaded as watch loads it, with the dispatch targets of the example settings file, which names it as its
    service.cameras_file: its first camera's auto_queue named 'cn-dcm', an adapter, not one of those targets (hz-dcm,
    city-311), so watch refused the camera a deployment copied from the two examples."""
    from detect.config_io import load_model
    from pipelines.settings import Settings

    examples = REPO / "docs" / "examples"
    targets = list(load_model(Settings, examples / "streetwatch-settings.yaml").dispatch.targets)
    loaded = load_cameras(examples / "cameras.yaml", dispatch_targets=targets)
    assert loaded.refused == {}
    assert [c.id for c in loaded.cameras] == ["hz-xihu-0417", "hz-xihu-0418", "hz-lobby-snapshot"]
    first = loaded.cameras[0]
    assert first.config.url.startswith("rtsp://") and first.config.keyframes_only
    assert first.config.auto_queue_target("illegal_parking") == "hz-dcm" and first.config.auto_queue_target("street_stall") is None
    assert first.scene.zones and first.scene.camera_id == first.id


def test_invalid_scene_is_refused_with_file_field_reason_and_others_load(tmp_path):
    (tmp_path / "good.yaml").write_text("camera_id: good\nzones: []\n")
    (tmp_path / "bad.yaml").write_text("camera_id: bad\nzones:\n  - {id: z, kind: no_parking, polygon: [[0,0],[1,0],[0,1],[1,1]]}\n")
    (tmp_path / "other.yaml").write_text("camera_id: somebody-else\n")
    cams = cameras_file(tmp_path / "cameras.yaml", [
        {"id": "good", "url": "a.mp4", "scene": "good.yaml"},
        {"id": "bad", "url": "a.mp4", "scene": "bad.yaml"},
        {"id": "lost", "url": "a.mp4", "scene": "missing.yaml"},
        {"id": "mixed", "url": "a.mp4", "scene": "other.yaml"},
        {"id": "typo", "url": "a.mp4", "scene": "typo.yaml", "auto_queue": {"illegal_parkng": "cn-dcm"}},
        {"id": "any", "url": "a.mp4", "scene": "any.yaml", "auto_queue": {"*": "cn-dcm"}},
    ])
    (tmp_path / "typo.yaml").write_text("camera_id: typo\nzones: []\n")
    (tmp_path / "any.yaml").write_text("camera_id: any\nzones: []\n")
    loaded = load_cameras(cams)
    assert [c.id for c in loaded.cameras] == ["good", "any"]
    # a misspelt type never matched a case: its cases silently waited for review
    assert loaded.refused["typo"].startswith(f"{cams}: cameras.4.auto_queue: unknown violation type 'illegal_parkng' (known: ")
    assert "cameras.1.scene" in loaded.refused["bad"] and "bad.yaml: zones.0.polygon" in loaded.refused["bad"]
    assert "self-intersecting" in loaded.refused["bad"]
    assert "missing.yaml: file not found" in loaded.refused["lost"]
    assert "scene of camera 'somebody-else', not 'mixed'" in loaded.refused["mixed"]
    # with the settings' targets, a target they do not configure is refused too (the dispatcher parked its cases later)
    checked = load_cameras(cams, dispatch_targets=["hz-dcm"])
    assert [c.id for c in checked.cameras] == ["good"]
    assert checked.refused["any"] == f"{cams}: cameras.5.auto_queue: no dispatch target 'cn-dcm' in the settings (dispatch.targets: hz-dcm)"
    assert [c.id for c in load_cameras(cams, dispatch_targets=["cn-dcm"]).cameras] == ["good", "any"]


def test_a_duplicate_camera_id_names_both_entries_without_their_passwords(tmp_path):
    """The refusal said only `duplicate camera id 'cam-01'`: in a file of hundreds of cameras, which two? It names their
    positions and URLs, each password written *** as in every other reason."""
    from detect.config_io import ConfigError

    cams = cameras_file(tmp_path / "cameras.yaml", [
        {"id": "cam-01", "url": "rtsp://admin:S3cret@10.0.0.1/ch1", "scene": "a.yaml"},
        {"id": "cam-02", "url": "rtsp://10.0.0.2/ch1", "scene": "b.yaml"},
        {"id": "cam-01", "url": "http://10.0.0.3/snap.jpg?usr=admin&pwd=S3cret", "scene": "c.yaml", "snapshot": True},
    ])
    with pytest.raises(ConfigError) as refused:
        load_cameras(cams)
    assert str(refused.value) == (f"{cams}: cameras: Value error, duplicate camera id 'cam-01': cameras.0 (rtsp://admin:***@10.0.0.1/ch1)"
                                  " and cameras.2 (http://10.0.0.3/snap.jpg?usr=admin&pwd=***)")


@pytest.mark.slow
def test_capacity_benchmark_record(tmp_path):
    """The capacity benchmark end to end on a short clip: every step has its lag, CPU split and batches."""
    from benchmarks.cctv_capacity import run

    record = run([1, 2], seconds=3, warmup_s=2, modes=("keyframes",), workdir=tmp_path, log=lambda s: None, clip_s=12)
    assert record["stream"]["size"] == [1280, 720] and record["stream"]["kbit_s"] > 0
    assert [s["cameras"] for s in record["steps"]][:1] == [1] and record["capacity"]["keyframes"] in (0, 1, 2)
    step = record["steps"][0]
    assert step["frames_analysed"] >= 1 and step["cpu_s"]["decode"] > 0 and step["cpu_s"]["inference"] > 0
    assert step["lag_s"]["p95"] >= step["lag_s"]["p50"] >= 0 and step["batches"]["count"] >= 1
    assert len(record["load_average"]["start"]) == 3


def test_watch_refuses_bad_input_with_the_reason(tmp_path):
    from typer.testing import CliRunner

    from streetwatch.cli import app

    (tmp_path / "cameras.yaml").write_text("cameras:\n  - {id: cam-1, url: a.mp4, scene: s.yaml, analysis_fps: 0}\n")
    result = CliRunner().invoke(app, ["watch", "--cameras", str(tmp_path / "cameras.yaml")])
    assert result.exit_code == 2 and "cameras.yaml: cameras.0.analysis_fps: Input should be greater than 0" in result.output

    (tmp_path / "s.yaml").write_text("camera_id: cam-1\nzones: [{id: z, kind: no_parking, polygon: [[0, 0], [1, 1]]}]\n")
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - {id: cam-1, url: a.mp4, scene: s.yaml}\n")
    env = {"STREETWATCH_EVIDENCE_KEY": KEY, "STREETWATCH_CONFIG": ""}
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                        "evidence_store": {"local_root": str(tmp_path / "ev"), "spool_dir": str(tmp_path / "spool")}}))
    result = CliRunner().invoke(app, ["watch", "--cameras", str(tmp_path / "cameras.yaml"), "--config", str(settings)], env=env)
    assert result.exit_code == 2
    assert "camera cam-1 refused" in result.output and "s.yaml: zones.0.polygon" in result.output
    assert "no camera can run" in result.output

    (tmp_path / "cameras.yaml").write_text("cameras:\n  - {id: cam-1, url: a.mp4, scene: s.yaml, enabled: false}\n")
    result = CliRunner().invoke(app, ["watch", "--cameras", str(tmp_path / "cameras.yaml"), "--config", str(settings)], env=env)
    assert result.exit_code == 2 and "refused" not in result.output  # there were no refusals to point at
    assert f"{tmp_path / 'cameras.yaml'}: no camera to watch: every camera has enabled: false" in result.output


def test_a_replay_that_reads_no_camera_exits_1_with_the_reasons(tmp_path):
    """Every replayed file unreadable: the summary says why per camera, and the exit code is 1 (it was 0)."""
    from typer.testing import CliRunner

    from streetwatch.cli import app

    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    for cam in ("cam-1", "cam-2"):
        (tmp_path / f"{cam}.yaml").write_text(f"camera_id: {cam}\nzones: [{{id: z, kind: no_parking, polygon: [[0, 0], [1, 0], [1, 1]]}}]\n")
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - {id: cam-1, url: empty.mp4, scene: cam-1.yaml}\n"
                                           "  - {id: cam-2, url: text.mp4, scene: cam-2.yaml}\n")
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                        "evidence_store": {"local_root": str(tmp_path / "ev"), "spool_dir": str(tmp_path / "spool")}}))
    result = CliRunner().invoke(app, ["watch", "--cameras", str(tmp_path / "cameras.yaml"), "--config", str(settings), "--replay"],
                                env={"STREETWATCH_EVIDENCE_KEY": KEY, "STREETWATCH_CONFIG": ""})
    assert result.exit_code == 1, result.output
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert {c["status"] for c in summary["cameras"].values()} == {"failed"} and all(c["reason"] for c in summary["cameras"].values())
    assert "no camera could be replayed" in result.output


def test_a_camera_refused_at_start_is_one_error_line(tmp_path):
    """A scene broken as YAML: the refusal's error line on stderr ran over four lines (YAML's position, the quoted line,
    a caret) beside the log record that says it on one; the error line is one line too, position and quote joined."""
    from typer.testing import CliRunner

    from streetwatch.cli import app

    (tmp_path / "s.yaml").write_text("camera_id: cam-1\nzones: x: y\n")
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - {id: cam-1, url: a.mp4, scene: s.yaml}\n")
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                        "evidence_store": {"local_root": str(tmp_path / "ev"), "spool_dir": str(tmp_path / "spool")}}))
    result = CliRunner().invoke(app, ["watch", "--cameras", str(tmp_path / "cameras.yaml"), "--config", str(settings)],
                                env={"STREETWATCH_EVIDENCE_KEY": KEY, "STREETWATCH_CONFIG": ""})
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: camera cam-1 refused")]
    assert "mapping values are not allowed here" in line and ", line 2, column " in line and "zones: x: y" in line, result.stderr
    assert not any(line.strip() == "^" for line in result.stderr.splitlines()), result.stderr


def test_verbose_logging_shows_our_debug_lines_and_not_the_lock_library_s(tmp_path):
    """`watch -v` drowned its own lines in filelock's four DEBUG lines for every lock taken; -v is for what the run did."""
    script = ("import logging, filelock; from pipelines.logs import setup_logging; setup_logging(logging.DEBUG); "
              f"lock = filelock.FileLock({str(tmp_path / 'x.lock')!r}); lock.acquire(); lock.release(); "
              "logging.getLogger('pipelines.cctv').debug('frame 1 analysed')")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "DEBUG pipelines.cctv: frame 1 analysed" in done.stderr, done.stderr
    assert "filelock" not in done.stderr


@pytest.mark.parametrize("journal", [False, True], ids=["file", "journald"])
def test_log_lines_carry_their_time_except_under_the_journal(journal):
    """A log redirected to a file (cron, nohup, a container) had no times: nobody could tell when a store went down.
    Lines start with the local time and its offset; under systemd's journal (JOURNAL_STREAM), which times each line, not."""
    import os
    import re

    script = "import logging; from pipelines.logs import setup_logging; setup_logging(); logging.getLogger('pipelines.x').info('up')"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"} | ({"JOURNAL_STREAM": "8:1234"} if journal else {})
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    timed = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} "
    assert re.fullmatch(("" if journal else timed) + "INFO pipelines.x: up", line), line
