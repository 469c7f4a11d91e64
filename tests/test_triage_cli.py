"""`streetwatch triage` as a user runs it: killed part way and resumed, exit codes, refusing to overwrite."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streetwatch.cli", "triage", *args]


def _env() -> dict[str, str]:
    """No evidence key and no settings file: these runs write the report only (cases are tested elsewhere)."""
    env = {k: v for k, v in os.environ.items() if k not in ("STREETWATCH_EVIDENCE_KEY", "STREETWATCH_CONFIG")}
    return {**env, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def test_summary_nouns_agree_with_their_counts():
    """The one rule every summary line counts by: "1 duplicates", "1 errors" and "1 photos recorded" were printed."""
    from pipelines.wording import counted

    assert [counted(n, "duplicate") for n in (0, 1, 2)] == ["0 duplicates", "1 duplicate", "2 duplicates"]
    assert counted(1, "candidate case") == "1 candidate case" and counted(3, "box", "boxes") == "3 boxes"
    assert counted(1, "error/duplicate", "errors/duplicates") == "1 error/duplicate"


@pytest.mark.slow  # 11 s: a subprocess killed mid-run and a second run; the default suite's ~15-minute budget
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


@pytest.mark.slow  # 5-7 s: triage runs in a subprocess
def test_a_folder_without_photos_is_said_to_hold_none_not_sent_to_the_report_for_reasons(tmp_path):
    """A folder holding no photo (the wrong folder: a day's videos and notes) ended with `no photo could be read
    (reasons in the report and results.jsonl)`, where there is no reason: nothing was listed, so nothing was refused.
    It says no photo was found there, and what a folder is searched for."""
    day = tmp_path / "day"
    day.mkdir()
    (day / "notes.txt").write_text("巡查记录")
    done = subprocess.run(_cli(str(day), "--out", str(tmp_path / "out"), "--no-progress", "--verifier", "none",
                               "--ocr", "off"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert f"no photo found in {day}: folders are searched for .bmp, .heic" in done.stderr, done.stderr
    assert "reasons in the report" not in done.stderr


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
    for name, reason in reasons.items():  # the terminal names each file not read, with its reason
        assert f"not read: {bad / name if name != 'missing.jpg' else tmp_path / name}: {reason}" in done.stdout


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


def test_an_evidence_key_variable_shorter_than_16_bytes_is_refused_before_any_photo_is_read(tmp_path, bus_jpg):
    """A key too short to sign with took the run on report-only under a warning (cases default to `when the key is
    set`), as if no key were set; the operator's set key is refused, naming the variable and the minimum."""
    env = {**_env(), "STREETWATCH_EVIDENCE_KEY": "short-key"}
    done = subprocess.run(_cli(str(bus_jpg), "--out", str(tmp_path / "out"), "--no-progress"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "environment variable STREETWATCH_EVIDENCE_KEY: evidence key has 9 bytes; use at least 16" in done.stderr
    assert "--no-cases" in done.stderr and not (tmp_path / "out").exists()


def _as_unprivileged() -> list[str]:
    """A command prefix under which permission bits apply: root drops the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to make a file unreadable to root")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def _special_files(folder: Path, bus_jpg: Path) -> dict[str, str]:
    """Every kind of file a folder scan met and skipped without a word, with the reason now recorded."""
    from PIL import Image

    folder.mkdir()
    shutil.copy(bus_jpg, folder / "good.jpg")
    shutil.copy(bus_jpg, folder / "locked.jpg")
    (folder / "locked.jpg").chmod(0)
    Image.new("RGB", (32, 32)).save(folder / "anim.gif")
    (folder / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop-a.jpg").symlink_to(folder / "loop-b.jpg")
    (folder / "loop-b.jpg").symlink_to(folder / "loop-a.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "notes.txt").write_text("not a photo: not listed")
    svg_gif = "files are not read: convert to JPEG or PNG (read: JPEG, PNG, WebP, BMP, TIFF, HEIC)"
    return {"locked.jpg": "permission denied", "anim.gif": f"GIF {svg_gif}", "logo.svg": f"SVG {svg_gif}",
            "dangling.jpg": "dangling symbolic link (its target does not exist)", "loop-a.jpg": "symbolic link loop",
            "loop-b.jpg": "symbolic link loop", "zero.jpg": "not a regular file (a character device)",
            "pipe.jpg": "not a regular file (a FIFO)"}


def test_every_file_a_folder_holds_gets_a_record_and_special_files_never_hang(tmp_path, bus_jpg):
    """Issue 14, items 6 and 7: unreadable, GIF/SVG, broken links, /dev/zero and a FIFO, in a folder and
    named directly: each recorded with its reason, the good photo triaged, the run not stopped."""
    folder = tmp_path / "day"
    expected = _special_files(folder, bus_jpg)
    out = tmp_path / "out"
    direct = [str(folder / n) for n in ("zero.jpg", "pipe.jpg", "locked.jpg")]
    done = subprocess.run(_as_unprivileged() + _cli(str(folder), *direct, "--out", str(out), "--no-progress", "--ocr", "off"),
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in _lines(out / "results.jsonl")]
    reasons = {Path(r["source"]).name: r.get("reason") for r in records}
    assert reasons == {"good.jpg": None, **expected} and len(records) == len(reasons)  # each once, named twice or not
    assert [r["status"] for r in records if Path(r["source"]).name == "good.jpg"] == ["ok"]
    named = [line for line in done.stdout.splitlines() if line.startswith("  not read: ")]
    assert len(named) == 5 and f"... and {len(expected) - 5} more not read (all in {out / 'report.html'})" in done.stdout


def test_detect_reports_an_unreadable_file_and_goes_on_with_the_others(tmp_path, bus_jpg):
    """Issue 14, item 7: `detect` refused the whole batch for one file it could not read. With --json the files
    not read were said on stderr only, so a script reading stdout never learnt which failed: each is a record
    `{"image", "error"}` there too."""
    folder = tmp_path / "day"
    expected = _special_files(folder, bus_jpg)
    cmd = [sys.executable, "-m", "streetwatch.cli", "detect", str(folder / "good.jpg"), str(folder / "locked.jpg"),
           str(folder / "zero.jpg"), str(folder / "pipe.jpg"), "--json"]
    done = subprocess.run(_as_unprivileged() + cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(r["image"]).name for r in records if "error" not in r] == ["good.jpg"]
    assert [(r["image"], r["error"]) for r in records if "error" in r] == [
        (str(folder / name), expected[name]) for name in ("locked.jpg", "zero.jpg", "pipe.jpg")]
    for name in ("locked.jpg", "zero.jpg", "pipe.jpg"):
        assert f"{folder / name}: {expected[name]}" in done.stderr
    scanned = subprocess.run(_as_unprivileged() + cmd[:4] + [str(folder)], cwd=REPO, env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert scanned.returncode == 0 and "good.jpg (810x1080)" in scanned.stdout
    assert all(f"{folder / name}: {reason}" in scanned.stderr for name, reason in expected.items())


def test_detect_out_keeps_one_annotated_copy_per_image_when_names_repeat(tmp_path, bus_jpg, zidane_jpg):
    """Phones number photos per folder: `a/IMG_0001.jpg` and `b/IMG_0001.jpg` each get their own copy."""
    import cv2

    for folder, photo in (("a", bus_jpg), ("b", zidane_jpg)):
        (tmp_path / "day" / folder).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "day" / folder / "IMG_0001.jpg")
    out = tmp_path / "annotated"
    done = subprocess.run([sys.executable, "-m", "streetwatch.cli", "detect", str(tmp_path / "day"), "--out", str(out), "--json",
                           "--verifier", "none"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["IMG_0001-2.jpg", "IMG_0001.jpg"]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(Path(r["image"]).parent.name, Path(r["annotated"]).name) for r in records] == [("a", "IMG_0001.jpg"), ("b", "IMG_0001-2.jpg")]
    for r in records:  # each copy is its own image, not the other drawn over it
        assert cv2.imread(r["annotated"]).shape[:2] == (r["height"], r["width"])


def _first_run(tmp_path: Path, sources: dict[str, Path]) -> tuple[Path, Path, list[str], subprocess.CompletedProcess]:
    """`sources` copied into a folder under their names and triaged once with the fast options (no verifier, no
    OCR), as the `--resume` tests start: (the folder, the out folder, the arguments to run again, the first run)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, src in sources.items():
        shutil.copy(src, photos / name)
    out = tmp_path / "out"
    args = [str(photos), "--out", str(out), "--no-progress", "--verifier", "none", "--ocr", "off"]
    first = subprocess.run(_cli(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    return photos, out, args, first


@pytest.mark.slow  # 10 s: triage runs in subprocesses
def test_resume_tries_failed_photos_again_and_reports_each_once(tmp_path, bus_jpg, zidane_jpg, real_sample_dir):
    """A photo whose judging failed (its thumbnail could not be written) and a corrupt file replaced since are
    tried again by `--resume`; each ends with one record, one report row and one case, none left as an error."""
    from datetime import datetime

    from tests.triage_helpers import phone_photo

    photos = tmp_path / "photos"
    bus = phone_photo(bus_jpg, photos / "0900_bus.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=(30.2741, 120.1551))
    shutil.copy(zidane_jpg, photos / "1000_people.jpg")
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[0]
    (photos / "1100_copying.jpg").write_bytes(garbage.read_bytes()[:3000])  # copied off the phone half way
    out = tmp_path / "out"
    blocked = out / "thumbs" / f"{hashlib.sha256(bus.read_bytes()).hexdigest()[:16]}.jpg"
    blocked.mkdir(parents=True)  # the bus's thumbnail cannot be written: its judging fails
    args = [str(photos), "--out", str(out), "--no-progress", "--verifier", "none", "--ocr", "off"]

    first = subprocess.run(_cli(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    reasons = {Path(r["source"]).name: r.get("reason") for r in map(json.loads, _lines(out / "results.jsonl"))}
    assert reasons["0900_bus.jpg"].startswith("internal error while judging") and reasons["1000_people.jpg"] is None
    assert reasons["1100_copying.jpg"].startswith("corrupt or truncated image data")
    people = next(line for line in _lines(out / "results.jsonl") if "1000_people.jpg" in line)

    blocked.rmdir()
    shutil.copy(garbage, photos / "1100_copying.jpg")  # the copy finished
    done = subprocess.run(_cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 already recorded earlier, 2 that failed earlier tried again (2 judged now)" in done.stdout
    assert "2 inputs that failed there are tried again" in done.stderr
    assert "3 readable, 1 with violations -> 1 candidate case; 0 errors, 0 duplicates" in done.stdout
    lines = _lines(out / "results.jsonl")
    records = [json.loads(line) for line in lines]
    assert sorted(Path(r["source"]).name for r in records) == ["0900_bus.jpg", "1000_people.jpg", "1100_copying.jpg"]
    assert all(r["status"] == "ok" for r in records) and lines[0] == people  # the judged photo's record is kept as written
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "internal error while judging" not in report and "corrupt or truncated" not in report
    with (out / "cases.csv").open(encoding="utf-8-sig") as fh:
        assert [Path(row["lead_photo"]).name for row in csv.DictReader(fh)] == ["0900_bus.jpg"]

    again = subprocess.run(_cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "3 already recorded earlier" in again.stdout and "tried again (" not in again.stdout
    assert _lines(out / "results.jsonl") == lines


def test_a_zip_member_named_with_a_line_break_is_logged_in_one_line(tmp_path, bus_jpg, zidane_jpg):
    """A photo's name was logged as it came, so a zip member named `现场\\nERROR …: forged.jpg` wrote a line of its own
    that read as ours (a sender's zip forging the server's log). Names are logged with their control characters
    escaped: one line per event, the name still recognisable."""
    import zipfile

    photos = tmp_path / "photos"
    photos.mkdir()
    member = "现场\nERROR pipelines.triage.pipeline: forged.jpg"
    with zipfile.ZipFile(photos / "batch.zip", "w") as zf:
        zf.writestr(member, bus_jpg.read_bytes())
        zf.write(zidane_jpg, "people.jpg")  # judged: the run ends well
    out = tmp_path / "out"
    (out / "thumbs" / f"{hashlib.sha256(bus_jpg.read_bytes()).hexdigest()[:16]}.jpg").mkdir(parents=True)  # judging fails
    run = subprocess.run(_cli(str(photos), "--out", str(out), "--no-progress", "--verifier", "none", "--ocr", "off"),
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    [line] = [line for line in run.stderr.splitlines() if "judging failed" in line]
    assert line.endswith("batch.zip!现场\\nERROR pipelines.triage.pipeline: forged.jpg: judging failed"), line
    assert not [line for line in run.stderr.splitlines() if line.startswith("ERROR pipelines.triage.pipeline: forged")]


@pytest.mark.slow  # 7 s: triage runs in subprocesses
def test_resume_keeps_the_result_of_a_photo_judged_earlier_and_moved_since(tmp_path, real_sample_dir):
    """A photo named on the command line, judged, then moved away before `--resume`, got a 'not found' error
    beside its judged record: the report and the CSV listed it both ways. Its result is kept, the summary says so
    once, and a photo never judged that is gone is still reported."""
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    photos = tmp_path / "photos"
    photos.mkdir()
    kept, moved = (shutil.copy(src, photos / f"{n}.jpg") for n, src in (("kept", garbage[0]), ("moved", garbage[1])))
    never = photos / "never.jpg"  # named, but not there in either run
    out = tmp_path / "out"
    args = [str(kept), str(moved), str(never), "--out", str(out), "--no-progress", "--verifier", "none", "--ocr", "off"]
    first = subprocess.run(_cli(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    judged = _lines(out / "results.jsonl")

    shutil.move(moved, tmp_path / "elsewhere.jpg")  # filed away by the inspector after the first run
    done = subprocess.run(_cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3 already recorded earlier (1 judged earlier is no longer there; its result is kept)" in done.stdout
    assert "2 readable" in done.stdout and "1 error," in done.stdout
    assert _lines(out / "results.jsonl") == judged  # nothing added: not a second record for the moved photo
    records = {Path(r["source"]).name: r for r in map(json.loads, judged)}
    assert records["moved.jpg"]["status"] == "ok" and records["never.jpg"]["reason"] == "not found"
    assert (out / "report.html").read_text(encoding="utf-8").count("not found") == 1  # the never-there photo only


@pytest.mark.slow  # 11 s: triage runs in subprocesses
def test_resume_judges_again_a_photo_replaced_since_by_another_of_the_same_name(tmp_path, bus_jpg, real_sample_dir):
    """A photo saved over another of the same name between a run and its `--resume` got a second record beside
    the first: the report, the CSV and the counts held the old photo and the new one under one name. It is judged
    again, its new record replaces the old, and the summary says how many changed."""
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    photos, out, args, _ = _first_run(tmp_path, {"IMG_0001.jpg": garbage[0], "IMG_0002.jpg": garbage[1]})
    kept = next(line for line in _lines(out / "results.jsonl") if "IMG_0002.jpg" in line)

    shutil.copy(bus_jpg, photos / "IMG_0001.jpg")  # the phone numbered a new photo as an old one
    done = subprocess.run(_cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("1 photo recorded" in done.stdout and "1 already recorded earlier, "
            "1 changed since judged earlier and judged again (the new result replaces the old)" in done.stdout)
    lines = _lines(out / "results.jsonl")
    records = {Path(r["source"]).name: r for r in map(json.loads, lines)}
    assert len(lines) == 2 and kept in lines
    assert records["IMG_0001.jpg"]["sha256"] == hashlib.sha256(bus_jpg.read_bytes()).hexdigest()
    assert "all runs: 2 readable," in done.stdout and "; 0 errors, 0 duplicates" in done.stdout

    again = subprocess.run(_cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 already recorded earlier" in again.stdout and "changed since" not in again.stdout
    assert _lines(out / "results.jsonl") == lines


@pytest.mark.slow  # 7 s: triage runs in subprocesses
def test_copies_of_a_photo_replaced_since_are_judged_in_its_place(tmp_path, bus_jpg, zidane_jpg):
    """A photo recorded as a duplicate of one replaced since (an earlier run's copy, or a photo moved before the
    replacement was met) stayed 'duplicate of' a photo that no longer held its content, and that content's result
    went with the superseded record: the bus and its case were gone from the report. The copies are judged
    themselves, the first of them the bus, the other its duplicate."""
    photos, out, args, first = _first_run(tmp_path, {"b_bus.jpg": bus_jpg, "c_copy.jpg": bus_jpg})
    assert "1 readable, 1 with violations -> 1 candidate case; 0 errors, 1 duplicate" in first.stdout

    shutil.move(photos / "b_bus.jpg", photos / "a_moved.jpg")  # listed before the name it left
    shutil.copy(zidane_jpg, photos / "b_bus.jpg")
    done = subprocess.run(_cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3 photos recorded" in done.stdout and "already recorded earlier" not in done.stdout
    assert "1 changed since judged earlier and judged again" in done.stdout
    assert "2 inputs recorded as duplicates of photos changed since are judged themselves" in done.stderr
    assert "2 readable, 1 with violations -> 1 candidate case; 0 errors, 1 duplicate" in done.stdout
    records = {Path(r["source"]).name: r for r in map(json.loads, _lines(out / "results.jsonl"))}
    assert len(records) == len(_lines(out / "results.jsonl")) == 3
    assert records["a_moved.jpg"]["status"] == "ok" and records["a_moved.jpg"]["findings"]
    assert records["c_copy.jpg"]["duplicate_of"] == str(photos / "a_moved.jpg")
    with (out / "cases.csv").open(encoding="utf-8-sig") as fh:
        assert [Path(row["lead_photo"]).name for row in csv.DictReader(fh)] == ["a_moved.jpg"]


@pytest.mark.slow  # 9 s: triage runs in subprocesses
def test_copies_of_a_replaced_photo_not_named_on_the_resumed_run_are_judged_where_they_are(tmp_path, bus_jpg, zidane_jpg):
    """Copies of a photo replaced since, in a folder the resumed run does not name, stayed 'duplicate of' a photo
    whose content was gone, and that content's result and case went with it. They are judged where their records
    say they are (a zip member too, and from a record written before duplicates held their path); one no longer there
    gets an error saying it was such a copy and needs judging."""
    import zipfile

    day, other = tmp_path / "day", tmp_path / "other"
    day.mkdir()
    other.mkdir()
    shutil.copy(bus_jpg, day / "bus.jpg")
    shutil.copy(bus_jpg, other / "copy.jpg")
    shutil.copy(bus_jpg, other / "filed.jpg")
    with zipfile.ZipFile(other / "phone.zip", "w") as zf:
        zf.write(bus_jpg, "DCIM/bus.jpg")
    out = tmp_path / "out"
    opts = ["--out", str(out), "--no-progress", "--verifier", "none", "--ocr", "off"]
    first = subprocess.run(_cli(str(day), str(other), *opts), cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    assert "1 readable, 1 with violations -> 1 candidate case; 0 errors, 3 duplicates" in first.stdout
    records = [json.loads(line) for line in _lines(out / "results.jsonl")]
    member = next(r for r in records if r["source"].endswith("!DCIM/bus.jpg"))
    assert (member["path"], member["member"]) == (str(other / "phone.zip"), "DCIM/bus.jpg")
    (out / "results.jsonl").write_text("".join(  # the zip member's record as duplicates were written before
        json.dumps({k: v for k, v in r.items() if r is not member or k not in ("path", "member")}, ensure_ascii=False) + "\n"
        for r in records), encoding="utf-8")

    shutil.copy(zidane_jpg, day / "bus.jpg")  # the phone numbered a new photo as the old one
    (other / "filed.jpg").unlink()
    done = subprocess.run(_cli(str(day), *opts, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 photos recorded" in done.stdout and "1 changed since judged earlier and judged again" in done.stdout
    assert ("3 inputs recorded as duplicates of photos changed since are judged themselves (3 of them read where their "
            "records say, not listed now)") in done.stderr
    assert "all runs: 2 readable, 1 with violations -> 1 candidate case; 1 error, 1 duplicate" in done.stdout
    records = {r["source"]: r for r in map(json.loads, _lines(out / "results.jsonl"))}
    assert len(records) == len(_lines(out / "results.jsonl")) == 4
    copy, in_zip = records[str(other / "copy.jpg")], records[f"{other / 'phone.zip'}!DCIM/bus.jpg"]
    assert copy["status"] == "ok" and copy["findings"] and in_zip["duplicate_of"] == str(other / "copy.jpg")
    assert records[str(other / "filed.jpg")]["status"] == "error"
    assert records[str(other / "filed.jpg")]["reason"] == (
        f"file not found; it was recorded as a duplicate of {day / 'bus.jpg'}, whose content has changed since, and "
        "needs judging itself: put it back and resume with it among the inputs")
    with (out / "cases.csv").open(encoding="utf-8-sig") as fh:
        assert [row["lead_photo"] for row in csv.DictReader(fh)] == [str(other / "copy.jpg")]


@pytest.mark.slow  # 12 s: triage runs in subprocesses
def test_resume_refuses_an_input_folder_that_is_gone_and_keeps_the_results(tmp_path, real_sample_dir):
    """The whole input folder gone at `--resume` (a drive not mounted) was recorded as one more 'not found' error
    and the run went on as done. It is refused before anything is read or written, naming the folder; a folder
    that was never there is still recorded as before, and resuming without the gone one keeps its results."""
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:2]
    day = tmp_path / "stick" / "day"
    day.mkdir(parents=True)
    for src in garbage:
        shutil.copy(src, day / src.name)
    never = tmp_path / "never"
    out = tmp_path / "out"
    opts = ["--out", str(out), "--no-progress", "--verifier", "none", "--ocr", "off"]
    first = subprocess.run(_cli(str(day), str(never), *opts), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    judged = _lines(out / "results.jsonl")
    report = (out / "report.html").read_bytes()

    shutil.move(tmp_path / "stick", tmp_path / "unmounted")
    done = subprocess.run(_cli(str(day), str(never), *opts, "--resume"), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert f"error: {day}: not found, and the run in {out} read 2 photos from it; nothing was changed" in done.stderr
    assert _lines(out / "results.jsonl") == judged and (out / "report.html").read_bytes() == report

    without = subprocess.run(_cli(str(never), *opts, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert without.returncode == 0, without.stderr
    assert "1 already recorded earlier" in without.stdout and "all runs: 2 readable" in without.stdout
    assert _lines(out / "results.jsonl") == judged


@pytest.mark.slow  # 8 s: triage runs in subprocesses
def test_resume_keeps_a_judged_photo_it_cannot_read_and_replaces_one_truncated_since(tmp_path, real_sample_dir):
    """A photo judged earlier and unreadable at `--resume` got an error beside its result. One that cannot be read
    (permission denied: nothing says it changed) keeps its result; one truncated since has changed, and its error
    replaces the stale result. The summary says which is which."""
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:3]
    photos, out, args, _ = _first_run(tmp_path, dict(zip(("kept.jpg", "locked.jpg", "cut.jpg"), garbage, strict=True)))
    judged = {Path(json.loads(line)["source"]).name: line for line in _lines(out / "results.jsonl")}

    (photos / "locked.jpg").chmod(0)
    os.utime(photos / "locked.jpg")  # its time changed (saved again): it must be read to tell whether it changed
    (photos / "cut.jpg").write_bytes(garbage[2].read_bytes()[:3000])  # copied over again, half way
    done = subprocess.run(_as_unprivileged() + _cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("1 photo recorded" in done.stdout and "2 already recorded earlier (1 judged earlier cannot be read now; "
            "its result is kept), 1 changed since judged earlier and judged again (the new result replaces the old; "
            "1 unreadable now, the error replacing it)" in done.stdout)
    assert "all runs: 2 readable" in done.stdout and "1 error, 0 duplicates" in done.stdout
    lines = _lines(out / "results.jsonl")
    records = {Path(r["source"]).name: r for r in map(json.loads, lines)}
    assert len(lines) == 3 and judged["kept.jpg"] in lines and judged["locked.jpg"] in lines
    assert records["cut.jpg"]["status"] == "error" and records["cut.jpg"]["reason"].startswith("corrupt or truncated")
    assert "permission denied" not in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow  # 8 s: triage runs in subprocesses
def test_resume_reads_only_the_photos_whose_size_or_time_changed(tmp_path, bus_jpg, real_sample_dir):
    """`--resume` read and hashed every photo judged earlier to tell whether it changed: on a network share of
    50,000 photos, the whole run's reading again. A photo whose file has the size and time its record holds is kept
    unread (here one made unreadable: it is never opened); one touched since is hashed and, the same, keeps its
    record; one replaced is judged again; a record without a stamp (an earlier release's) is hashed as before."""
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:4]
    names = ("unchanged.jpg", "touched.jpg", "replaced.jpg", "old_record.jpg")
    photos, out, args, _ = _first_run(tmp_path, dict(zip(names, garbage, strict=True)))
    judged = {Path(json.loads(line)["source"]).name: line for line in _lines(out / "results.jsonl")}
    stamp = json.loads(judged["unchanged.jpg"])
    info = (photos / "unchanged.jpg").stat()
    assert (stamp["file_size"], stamp["file_mtime_ns"]) == (info.st_size, info.st_mtime_ns)
    old = {k: v for k, v in json.loads(judged["old_record.jpg"]).items() if k not in ("file_size", "file_mtime_ns")}
    judged["old_record.jpg"] = json.dumps(old, ensure_ascii=False, separators=(",", ":")) + "\n"
    (out / "results.jsonl").write_text("".join(judged.values()), encoding="utf-8")

    (photos / "unchanged.jpg").chmod(0)  # read, it would be 'cannot be read now'
    (photos / "old_record.jpg").chmod(0)  # no stamp: read, and so unreadable now
    touched = (photos / "touched.jpg").stat()
    os.utime(photos / "touched.jpg", ns=(touched.st_atime_ns, touched.st_mtime_ns + 10**9))
    shutil.copy(bus_jpg, photos / "replaced.jpg")
    done = subprocess.run(_as_unprivileged() + _cli(*args, "--resume"), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("1 photo recorded" in done.stdout and "3 already recorded earlier (1 judged earlier cannot be read now; "
            "its result is kept), 1 changed since judged earlier and judged again" in done.stdout)
    lines = _lines(out / "results.jsonl")
    records = {Path(r["source"]).name: r for r in map(json.loads, lines)}
    assert len(lines) == 4 and all(judged[n] in lines for n in ("unchanged.jpg", "touched.jpg", "old_record.jpg"))
    assert records["replaced.jpg"]["sha256"] == hashlib.sha256(bus_jpg.read_bytes()).hexdigest()
    assert records["replaced.jpg"]["file_size"] == bus_jpg.stat().st_size


def test_sigterm_stops_triage_as_ctrl_c_does_and_says_to_resume(tmp_path, real_sample_dir):
    """SIGTERM (systemd stopping the unit, `timeout`) killed triage at once: exit 143 and not a word, when the docs
    said 130 when interrupted and Ctrl-C says what was recorded and to continue with --resume. It stops the run as
    Ctrl-C does, says the same, and exits 143 (a shell's code for SIGTERM, 130 staying Ctrl-C's)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:40]:
        shutil.copy(src, photos / src.name)
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(str(photos), "--out", str(out), "--workers", "1", "--no-progress"), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while len(_lines(out / "results.jsonl")) < 3 and proc.poll() is None:
        time.sleep(0.01)
    running = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert running, "the run finished (or failed) before it could be stopped"
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    assert f"interrupted: the photos finished so far are in {out / 'results.jsonl'}; run the same command with --resume" in stderr
    recorded = _lines(out / "results.jsonl")
    assert all(line.endswith("\n") for line in recorded) and len(recorded) < 40


@pytest.mark.slow  # 4 s: subprocesses signalled; the default suite's ~15-minute budget
def test_ctrl_c_or_sigterm_in_a_command_without_its_own_handler_says_so(tmp_path):
    """Ctrl-C in detect (verifier eval, data import, cases export...) exited 130 without a word, a stopped run looking
    like a failure nobody explained; one line says it was interrupted and what is left, exit 130 (143 for SIGTERM)."""
    from streetwatch.cli import INTERRUPTED
    from tests.conftest import SHARED

    photos = SHARED / "datasets" / "street-scenes" / "images" / "cn2"
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "streetwatch.cli", "detect", str(photos), "--batch", "1", "--verifier", "none"],
                                cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # one image done: the command is under way
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
        assert " detections" in first and proc.returncode == 128 + sig, (sig, stderr)
        assert stderr.splitlines()[-1] == f"error: {INTERRUPTED}" and "Traceback" not in stderr


#: A console script (`python -m stopped`) whose one command is stopped by the signal it sends itself: inside code run by
#: exec of a string (as the dataclasses, typing's string annotations and numpy run at import), or while Typer still
#: builds the commands (reading the command's signature), before its own Ctrl-C handling.
STOPPED_MODULE = """
import os, signal, sys, time
from streetwatch import cli

SIG = getattr(signal, sys.argv[2])


class Stopper:
    __name__ = "stop"

    def __call__(self):
        pass

    @property
    def __signature__(self):
        os.kill(os.getpid(), SIG)
        while True:
            pass

def in_exec():
    exec("os.kill(os.getpid(), SIG)\\nwhile True:\\n    pass")


def in_native_import():  # as scipy's HiGHS module does when the signal cuts its initialization short
    try:
        in_exec()
    except KeyboardInterrupt:
        raise ImportError("initialization failed") from None

class Collected:  # as importlib's module locks' weakref callbacks, run at every import: an exception there is ignored
    def __del__(self):
        os.kill(os.getpid(), SIG)


def in_del():
    Collected()
    for _ in range(100):  # the command goes on (serve's start-up), 10 s, then ends as if no signal had come
        time.sleep(0.1)

cli.app.command("stop")({"exec": in_exec, "native": in_native_import, "del": in_del}.get(sys.argv[1]) or Stopper())
sys.argv[1:] = ["stop"]
cli.main()
"""


@pytest.mark.slow  # 4 s: a subprocess signalled during start-up (test_sigterm_stops_triage_as_ctrl_c_does_and_says_to_resume stays); the default suite's ~15-minute budget
def test_a_signal_during_start_up_imports_exits_with_the_line_and_the_signals_code(tmp_path):
    """`serve` stopped during its start-up imports said 'interrupted (已中断)' and then died by SIGINT (exit -2, 143
    lost for SIGTERM) when the signal came inside code an import ran by exec of a string (CPython then notes the
    interrupt as unhandled, though the console script handled it); stopped while Typer built the commands it printed a
    KeyboardInterrupt traceback; stopped while a native module was imported (scipy's), its ImportError traceback
    (exit 1); stopped inside a weakref callback or a __del__ (importlib's, at every import), the interrupt was
    'Exception ignored' and the command went on (serve started and served until killed: a test's 120 s hang). Each
    says the one line and exits 130 (143 for SIGTERM)."""
    from streetwatch.cli import INTERRUPTED

    (tmp_path / "stopped.py").write_text(STOPPED_MODULE)
    env = {**_env(), "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    for where in ("exec", "typer", "native", "del"):
        for sig in (signal.SIGINT, signal.SIGTERM):
            run = subprocess.run([sys.executable, "-m", "stopped", where, sig.name], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 128 + sig and "Traceback" not in run.stderr, (where, sig, run.returncode, run.stderr)
            assert run.stderr.splitlines() == [f"error: {INTERRUPTED}"], (where, sig, run.stderr)


#: The console script (`from streetwatch.cli import main`) run by a program that sends itself the signal when the
#: module named is first imported: Typer (the first import of the entry point's start-up), pydantic (its longest, under
#: Typer's parameter adapters, since no command module loads OpenCV at import) or the last command module.
STOPPED_AT_IMPORT = """
import importlib.abc, os, signal, sys

MODULE, SIG = sys.argv[1], getattr(signal, sys.argv[2])


class StopAt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), SIG)
            while True:
                pass


sys.meta_path.insert(0, StopAt())
sys.argv[1:] = ["config", "show"]
from streetwatch.cli import main
sys.exit(main())
"""


def test_a_signal_while_the_entry_point_imports_the_commands_exits_with_the_line_and_the_signals_code(tmp_path):
    """The entry point imported Typer and every command module (OpenCV, numpy then: 0.4 s) when it was imported, before
    main() installed the handlers: Ctrl-C in those first moments of any command was a KeyboardInterrupt traceback and
    SIGTERM killed it without a word (exit -15). main() installs them first and imports after, so either says the one
    line and exits 130 (143 for SIGTERM)."""
    from streetwatch.cli import INTERRUPTED

    (tmp_path / "stopped_at_import.py").write_text(STOPPED_AT_IMPORT)
    env = {**_env(), "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    for module in ("typer", "pydantic", "streetwatch.commands.cityops"):
        for sig in (signal.SIGINT, signal.SIGTERM):
            run = subprocess.run([sys.executable, "-m", "stopped_at_import", module, sig.name], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 128 + sig, (module, sig, run.returncode, run.stderr)
            assert run.stderr.splitlines() == [f"error: {INTERRUPTED}"], (module, sig, run.stderr)


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler of its own for `sig` (the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # it ended
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (sig - 1) & 1)


def test_a_signal_the_moment_a_command_can_answer_it_exits_with_the_line_and_the_signals_code(tmp_path):
    """Real signals, each sent the moment the command has handlers for them (before that, Python's own start-up
    answers as Python does: nothing of ours has run), a few times each: the one line and 130 (143 for SIGTERM), no
    traceback, whatever the command was doing then."""
    from streetwatch.cli import INTERRUPTED

    for attempt in range(3):
        for sig in (signal.SIGINT, signal.SIGTERM):
            proc = subprocess.Popen([sys.executable, "-m", "streetwatch.cli", "config", "show"], cwd=tmp_path,
                                    env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while proc.poll() is None and not _catches(proc.pid, signal.SIGTERM):
                pass
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 128 + sig, (attempt, sig, proc.returncode, stderr)
            assert stderr.splitlines() == [f"error: {INTERRUPTED}"], (attempt, sig, stderr)


def test_a_run_whose_stderr_is_a_file_logs_its_progress_and_draws_no_bar(tmp_path, bus_jpg):
    """Into a log file rich drew no bar while the run went but printed its last frame at the end, one line cut to 80
    columns ("3.7 0:00… phot…") after the progress lines had said it all. The file holds the lines and no bar."""
    out = tmp_path / "out"
    with (tmp_path / "run.log").open("w") as log:
        done = subprocess.run(_cli(str(bus_jpg), "--out", str(out), "--ocr", "off"), cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, stderr=log, text=True, timeout=300)
    assert done.returncode == 0, (tmp_path / "run.log").read_text()
    logged = (tmp_path / "run.log").read_text()
    assert "triage: 1/1 inputs (100%)" in logged, logged
    assert [line for line in logged.splitlines() if "photos/s" in line and "triage: " not in line] == [], logged
    assert "━" not in logged and "…" not in logged, logged


def test_python_dash_m_streetwatch_is_the_console_script(tmp_path):
    """Where the `streetwatch` script is not on PATH (a venv not activated), `python -m streetwatch` failed with "No module
    named streetwatch.__main__"; it is the same entry point."""
    ran = subprocess.run([sys.executable, "-m", "streetwatch", "config", "schema"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and json.loads(ran.stdout)["settings"]["$schema"].endswith("2020-12/schema"), ran.stderr
