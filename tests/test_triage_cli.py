"""`streetwatch triage` as a user runs it: killed part way and resumed, exit codes, refusing to overwrite."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streetwatch.cli", "triage", *args]


def _env() -> dict[str, str]:
    """No evidence key and no settings file: these runs write the report only (cases are tested elsewhere)."""
    env = {k: v for k, v in os.environ.items() if k not in ("STREETWATCH_EVIDENCE_KEY", "STREETWATCH_CONFIG")}
    return {**env, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def test_killed_run_resumes_and_records_every_photo_exactly_once(tmp_path, real_sample_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:40]:
        shutil.copy(src, photos / src.name)
    out = tmp_path / "out"
    results = out / "results.jsonl"

    proc = subprocess.Popen(_cli(str(photos), "--out", str(out), "--workers", "1", "--no-progress"), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_lines(results)) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert running, "the run finished (or failed) before it could be interrupted"
    before = _lines(results)
    assert 5 <= len(before) < 40
    complete = [line for line in before if line.endswith("\n")]

    done = subprocess.run(_cli(str(photos), "--out", str(out), "--resume", "--no-progress"), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = _lines(results)
    assert after[: len(complete)] == complete  # what was recorded before the kill is kept as it was
    records = [json.loads(line) for line in after]
    assert sorted(Path(r["source"]).name for r in records) == sorted(p.name for p in photos.iterdir())
    assert all(r["status"] == "ok" for r in records)
    assert f"{40 - len(complete)} photos recorded" in done.stdout
    assert f"{len(complete)} already recorded earlier" in done.stdout
    assert (out / "report.html").stat().st_size > 0 and (out / "cases.csv").exists()

    again = subprocess.run(_cli(str(photos), "--out", str(out), "--no-progress"), cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites a run by accident
    assert _lines(results) == after


def test_exit_code_is_1_when_nothing_can_be_read_and_the_reasons_are_reported(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_text("hello")
    out = tmp_path / "out"
    done = subprocess.run(_cli(str(bad), str(tmp_path / "missing.jpg"), "--out", str(out), "--no-progress"), cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "no photo could be read" in done.stderr
    reasons = {Path(r["source"]).name: r["reason"] for r in map(json.loads, _lines(out / "results.jsonl"))}
    assert reasons == {"empty.jpg": "empty file (0 bytes)", "text.png": "not an image (unrecognised format)",
                       "missing.jpg": "not found"}
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "empty file (0 bytes)" in report and "No violations found" in report


def test_bad_configuration_is_refused_before_any_photo_is_read(tmp_path, bus_jpg):
    grid = tmp_path / "grid.geojson"
    grid.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [120.1, 30.2]}, "properties": {"id": "c1"}}]}))
    done = subprocess.run(_cli(str(bus_jpg), "--grid", str(grid), "--out", str(tmp_path / "out"), "--no-progress"),
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"{grid}: features.0.geometry" in done.stderr and "Polygon" in done.stderr
    assert not (tmp_path / "out").exists()
    ok = subprocess.run(_cli(str(bus_jpg), "--out", str(tmp_path / "ok"), "--no-progress"), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "1 with violations -> 1 candidate case;" in ok.stdout  # the same command without the grid
