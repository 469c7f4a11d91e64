"""`streetwatch verifier to-label`: a triage run's close calls become a folder that `verifier train` reads
once labelled. Real photos of `street-scenes` (Hong Kong streets with their EXIF times, Shanghai and
travel photos without, three more with a phone's GPS written in), one of them inside a zip, judged by a real
triage run with the promoted verifier."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

from datetime import datetime

import pytest
from typer.testing import CliRunner

from pipelines.triage import TriageSettings, run_triage
from pipelines.verifier.data import DatasetError, load_dataset
from pipelines.verifier.to_label import MAX_MARGIN, places, read_run
from streetwatch.cli import app
from tests.test_verifier_parts import STREET_SCENES
from tests.triage_helpers import phone_photo

#: Where the GPS photos were taken, one morning: two 5.6 m apart either side of a 3-decimal boundary of latitude
#: (22.281 | 22.282), one 300 m north.
GPS_PHOTOS = {"gps-a.jpg": (22.28148, 114.158), "gps-b.jpg": (22.28153, 114.158), "gps-far.jpg": (22.2842, 114.158)}
LABEL_COLUMNS = ["street_stall", "shopfront_spillover", "flyposting", "exposed_garbage", "parking_motor", "parking_nonmotor"]


def _labels(photos: dict[Path, Path]) -> dict[str, dict]:
    """street-scenes' own labels of these photos (file -> the street-scenes photo it is or was made from), by the SHA-256 of their files."""
    with (STREET_SCENES / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = {row["file"]: row for row in csv.DictReader(fh)}
    return {hashlib.sha256(p.read_bytes()).hexdigest(): rows[str(src.relative_to(STREET_SCENES))] for p, src in photos.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory, onnx_detector):
    root = tmp_path_factory.mktemp("to-label")
    upload = root / "upload"
    upload.mkdir()
    images = STREET_SCENES / "images"
    photos = [*sorted((images / "cn2").glob("lindsay__*.jpg")), *sorted((images / "cn2").glob("rida__*.jpg"))[:8],
              *sorted((images / "mmj").glob("*.jpg"))[::40][:10]]  # lindsay's have EXIF times (one evening in Hong Kong)
    for src in photos:
        shutil.copy(src, upload / src.name)
    made = {phone_photo(src, upload / name, taken=datetime(2026, 11, 3, 9, n), offset="+08:00", gps=gps): src
            for n, ((name, gps), src) in enumerate(zip(GPS_PHOTOS.items(), sorted((images / "cn2").glob("rida__*.jpg"))[8:11], strict=True))}
    zipped = sorted((images / "cn2").glob("mpig__*.jpg"))[0]
    with zipfile.ZipFile(upload / "phone.zip", "w") as zf:
        zf.write(zipped, f"DCIM/{zipped.name}")
    settings = TriageSettings(out=root / "triage", cases=False, ocr="off")
    run_triage([upload], settings, detector=onnx_detector, show_progress=False)
    return {"root": root, "results": settings.out, "records": read_run(settings.out), "truth": _labels({**{p: p for p in [*photos, zipped]}, **made})}


def _to_label(*args: str):
    return CliRunner().invoke(app, ["verifier", "to-label", *args])


def _rows(folder: Path) -> list[dict]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8-sig") as fh:  # written with a BOM, for Excel
        return list(csv.DictReader(fh))


def test_the_close_calls_of_each_type_are_picked_and_copied_for_labelling(run):
    out = run["root"] / "round1"
    done = _to_label(str(run["results"]), "--out", str(out), "--count", "12", "--per-group", "2", "--source", "city")
    assert done.exit_code == 0, done.output
    rows = _rows(out)
    assert 8 <= len(rows) <= 12 and f"{len(rows)} of {len(run['records'])} judged photos to label" in done.output
    assert set(LABEL_COLUMNS) <= set(rows[0]) and all(not r[c] for r in rows for c in LABEL_COLUMNS)  # left to the labeller
    by_sha = {r.sha256: r for r in run["records"]}
    sheet = (out / "index.html").read_text(encoding="utf-8")
    for n, row in enumerate(rows, start=1):
        photo = out / row["file"]
        assert row["file"].startswith(f"images/city/{n:04d}-") and hashlib.sha256(photo.read_bytes()).hexdigest() == row["sha256"]
        assert f'<img src="{row["file"]}"' in sheet and f"row {n + 1} · {photo.name}" in sheet  # the sheet's row number
        verdicts = by_sha[row["sha256"]].verifier
        violation = {"parking_motor": "illegal_parking", "parking_nonmotor": "nonmotor_parking"}.get(row["picked_for"], row["picked_for"])
        assert float(row[f"p_{violation}"]) == verdicts[violation].p and float(row["threshold"]) == verdicts[violation].threshold
        assert 0 <= float(row["margin"]) <= MAX_MARGIN
    # the types take turns, and each type's photos come closest call first
    picked_for = [r["picked_for"] for r in rows]
    assert len(set(picked_for[:5])) == len(set(picked_for)) >= 4
    for label in set(picked_for):
        margins = [float(r["margin"]) for r in rows if r["picked_for"] == label]
        assert margins == sorted(margins)
    # no place and day more than twice; the Chinese photos' EXIF times make visits, the rest have no EXIF time
    groups = [r["group"] for r in rows]
    assert max(groups.count(g) for g in groups) <= 2
    assert (out / "README.md").read_text(encoding="utf-8").count("picked_for") >= 2


def test_a_labelled_folder_trains_beside_street_scenes_and_is_not_picked_again(run):
    out = run["root"] / "round-labelled"
    assert _to_label(str(run["results"]), "--out", str(out), "--count", "10", "--source", "city").exit_code == 0
    rows, truth = _rows(out), run["truth"]
    for row in rows:  # the labeller answers with what street-scenes says of the photo
        row.update({c: truth[row["sha256"]][c] for c in LABEL_COLUMNS}, notes="路边摊？ close call")

    def save(encoding: str) -> None:
        with (out / "labels.csv").open("w", newline="", encoding=encoding) as fh:
            writer = csv.DictWriter(fh, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    save("gbk")  # Excel's plain "CSV" on a Chinese Windows
    with pytest.raises(DatasetError, match=r"labels.csv: not UTF-8 text .*save it as \"CSV UTF-8\""):
        load_dataset(out)
    save("utf-8-sig")  # Excel's and WPS's "CSV UTF-8": with a byte-order mark
    dataset = load_dataset(out)
    assert all(p.notes == "路边摊？ close call" for p in dataset.photos)
    assert len(dataset.photos) == len(rows) and {p.source for p in dataset.photos} == {"city"}
    assert {p.group for p in dataset.photos} == {r["group"] for r in rows}
    answered = rows
    rows = [*answered, *({**r, **dict.fromkeys(LABEL_COLUMNS, "")} for r in answered[:2])]  # two rows not answered yet
    rows[-2]["file"], rows[-1]["file"] = rows[0]["file"], rows[1]["file"]
    save("utf-8-sig")
    assert len(load_dataset(out).photos) == len(answered)
    shown = CliRunner().invoke(app, ["verifier", "eval", "--data", str(out), "--limit", "1", "--ocr", "off"])
    assert shown.exit_code == 0, shown.output
    assert "note: " in shown.output and "2 rows with every label cell empty left out (labelled for no type)" in shown.output
    rows = answered
    save("utf-8-sig")
    dataset = load_dataset(out)
    stalls = sum(int(truth[r["sha256"]]["street_stall"]) for r in rows)
    assert int(dataset.labels("street_stall").sum()) == stalls

    again = run["root"] / "round2"
    done = _to_label(str(run["results"]), "--out", str(again), "--count", "10", "--source", "city", "--skip", str(out))
    assert done.exit_code == 0, done.output
    assert not {r["sha256"] for r in _rows(again)} & {r["sha256"] for r in rows}


def test_the_photos_of_reviewed_cases_are_not_picked_again(run, tmp_path):
    """`--skip` knew a labelled folder's photos by its sha256 column only, which `data from-cases --verifier` does not
    write: the photos of reviewed cases were picked for labelling again, without a word. A row without that column is
    known by the photo it names; a row naming a photo that is not there is refused with the row and the reason."""
    from pipelines.verifier.from_cases import verifier_dataset_from_cases

    assert _to_label(str(run["results"]), "--out", str(tmp_path / "first"), "--count", "4").exit_code == 0
    first = _rows(tmp_path / "first")
    by_sha = {r.sha256: r for r in run["records"]}
    export = tmp_path / "reviews"
    (export / "evidence").mkdir(parents=True)
    lines = []
    for n, row in enumerate(first[:2]):  # the two closest calls were reviewed as cases, their evidence copied apart
        shutil.copyfile(by_sha[row["sha256"]].path, export / "evidence" / f"{n}.jpg")
        lines.append({"case_id": f"c-{n}", "violation_type": "street_stall", "decision": "rejected",
                      "reason_code": "not_a_violation", "source_id": "batch-1", "image": f"evidence/{n}.jpg"})
    (export / "review.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    verifier_dataset_from_cases(export, tmp_path / "cases")
    done = _to_label(str(run["results"]), "--out", str(tmp_path / "next"), "--count", "4", "--skip", str(tmp_path / "cases"))
    assert done.exit_code == 0, done.output
    assert {r["sha256"] for r in first[:2]}.isdisjoint(r["sha256"] for r in _rows(tmp_path / "next"))

    (tmp_path / "cases" / "images" / "cases" / "c-1.jpg").unlink()
    done = _to_label(str(run["results"]), "--out", str(tmp_path / "third"), "--skip", str(tmp_path / "cases"))
    assert done.exit_code == 2 and f"{tmp_path / 'cases' / 'labels.csv'}: row 3: images/cases/c-1.jpg: No such file" in done.output


def test_photos_of_one_visit_share_a_group_and_photos_without_exif_time_do_not(run):
    groups = places(run["records"])
    exif = [r for r in run["records"] if r.time_source == "exif" and not r.has_gps]
    others = [r for r in run["records"] if r.time_source != "exif" and not r.has_gps]
    assert exif and others
    assert len({groups[r.sha256] for r in others}) == len(others)
    for a in exif:
        for b in exif:
            same_folder = Path(a.path).parent == Path(b.path).parent
            close = abs((a.capture_time - b.capture_time).total_seconds()) < 60
            if same_folder and close:
                assert groups[a.sha256] == groups[b.sha256]
    assert len({groups[r.sha256] for r in exif}) < len(exif)  # lindsay's photos were taken in series


def test_picked_photos_metres_apart_across_a_cell_edge_share_a_group(run, tmp_path):
    """Picking groups photos by GPS to 3 decimals, so two photos 5.6 m apart either side of 22.2815 were two groups in
    labels.csv, and could fall on both sides of a train/validation split. The picked photos within 100 m of each other
    on one day share the group named first; one 300 m away keeps its own."""
    gps = {r.sha256: Path(r.path).name for r in run["records"] if r.has_gps}
    assert sorted(gps.values()) == sorted(GPS_PHOTOS)
    groups = places(run["records"])
    near = {Path(r.path).name: groups[r.sha256] for r in run["records"] if r.has_gps}
    assert near["gps-a.jpg"] != near["gps-b.jpg"]  # picking still counts them as two places
    done = _to_label(str(run["results"]), "--out", str(tmp_path / "out"), "--count", str(len(run["records"])), "--per-group", "1")
    assert done.exit_code == 0, done.output
    rows = {gps[r["sha256"]]: r["group"] for r in _rows(tmp_path / "out") if r["sha256"] in gps}
    assert rows == {"gps-a.jpg": "2026-11-03@22.281,114.158", "gps-b.jpg": "2026-11-03@22.281,114.158",
                    "gps-far.jpg": "2026-11-03@22.284,114.158"}


def test_a_photo_picked_near_one_labelled_before_takes_its_group(run, tmp_path):
    """Groups were joined within one labels.csv only: a round run with --skip could pick a photo 5.6 m from one labelled
    before and give it another group, so the two could fall on both sides of a split. A photo picked within 100 m of
    one labelled before on its day takes that photo's group, its position from this run's record of it or, for a
    photo this run did not judge, from its file's EXIF; the earlier groups stay; one that cannot be read is counted."""
    by_name = {Path(r.path).name: r for r in run["records"] if r.has_gps}
    earlier = tmp_path / "round1"
    (earlier / "images").mkdir(parents=True)
    shutil.copyfile(by_name["gps-a.jpg"].path, earlier / "images" / "a.jpg")
    lat, lon = GPS_PHOTOS["gps-far.jpg"]
    kiosk = phone_photo(sorted((STREET_SCENES / "images" / "cn2").glob("mpig__*.jpg"))[1], earlier / "images" / "kiosk.jpg",
                        taken=datetime(2026, 11, 3, 10, 0), gps=(lat + 0.0002, lon))  # 22 m north, not judged by this run
    with (earlier / "labels.csv").open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, ["file", "group", "street_stall", "sha256"])
        writer.writeheader()
        writer.writerows([
            {"file": "images/a.jpg", "group": "2026-11-03@market", "street_stall": "0", "sha256": by_name["gps-a.jpg"].sha256},
            {"file": "images/kiosk.jpg", "group": "2026-11-03@kiosk", "street_stall": "1",
             "sha256": hashlib.sha256(kiosk.read_bytes()).hexdigest()},
            {"file": "images/gone.jpg", "group": "2026-11-03@gone", "street_stall": "1", "sha256": "0" * 64}])
    done = _to_label(str(run["results"]), "--out", str(tmp_path / "round2"), "--count", str(len(run["records"])),
                     "--per-group", "1", "--skip", str(earlier))
    assert done.exit_code == 0, done.output
    names = {r.sha256: name for name, r in by_name.items()}
    rows = {names[r["sha256"]]: r["group"] for r in _rows(tmp_path / "round2") if r["sha256"] in names}
    assert rows == {"gps-b.jpg": "2026-11-03@market", "gps-far.jpg": "2026-11-03@kiosk"}
    assert "warning: 1 photo labelled before (--skip) could not be read for their position" in done.output


def test_a_moved_photo_is_passed_over_with_the_reason_and_the_rest_written(run, tmp_path):
    results = tmp_path / "triage"
    shutil.copytree(run["results"], results)
    assert _to_label(str(results), "--out", str(tmp_path / "first"), "--count", "1").exit_code == 0
    first = _rows(tmp_path / "first")[0]["sha256"]  # the first type's closest call: picked at any count
    records = [json.loads(line) for line in (results / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    moved = next(r for r in records if r["sha256"] == first)
    moved["path"] = str(tmp_path / "gone" / "photo.jpg")
    lines = [json.dumps(r) for r in records]
    (results / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _to_label(str(results), "--out", str(tmp_path / "out"), "--count", str(len(lines)), "--per-group", "100")
    assert done.exit_code == 0, done.output
    assert "passed over" in done.output and "photo.jpg" in done.output
    rows = _rows(tmp_path / "out")
    assert moved["sha256"] not in {r["sha256"] for r in rows} and rows
    member = [r for r in rows if "phone.zip!DCIM/" in r["source_path"]]  # extracted from the zip, byte for byte
    assert len(member) == 1 and hashlib.sha256((tmp_path / "out" / member[0]["file"]).read_bytes()).hexdigest() == member[0]["sha256"]


@pytest.mark.parametrize("case, reason", [
    ("no-results", "no results.jsonl"),
    ("no-verifier", "has verifier probabilities"),
    ("unknown-type", "no photo of this run was judged for street_market"),
    ("labelled-out", "labels.csv exists"),
    ("bad-skip", "no labels.csv"),
    ("bad-source", "source '../city' (--source; default the run folder's name): use letters"),
])
def test_bad_input_is_refused_with_the_reason(run, tmp_path, case, reason):
    results, out, extra = run["results"], tmp_path / "out", []
    if case == "no-results":
        results = tmp_path
    elif case == "no-verifier":
        results = tmp_path / "triage"
        results.mkdir()
        lines = (run["results"] / "results.jsonl").read_text(encoding="utf-8").splitlines()
        plain = [{k: v for k, v in json.loads(line).items() if k != "verifier"} for line in lines]
        (results / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain), encoding="utf-8")
    elif case == "unknown-type":
        extra = ["--types", "street_stall,street_market"]
    elif case == "labelled-out":
        out.mkdir()
        (out / "labels.csv").write_text("file,group,street_stall\nimages/x/a.jpg,g,1\n", encoding="utf-8")
    elif case == "bad-skip":
        extra = ["--skip", str(tmp_path / "nowhere")]
    elif case == "bad-source":
        extra = ["--source", "../city"]
    done = _to_label(str(results), "--out", str(out), *extra)
    assert done.exit_code == 2 and reason in done.output
    if case in ("bad-source", "no-results"):
        assert not out.exists()
    if case == "labelled-out":
        assert (out / "labels.csv").read_text(encoding="utf-8").endswith("a.jpg,g,1\n")  # nothing already labelled is lost


def test_types_are_named_as_violations_or_as_label_columns(run, tmp_path):
    done = _to_label(str(run["results"]), "--out", str(tmp_path / "out"), "--types", "parking_motor,street_stall", "--count", "6")
    assert done.exit_code == 0, done.output
    assert {r["picked_for"] for r in _rows(tmp_path / "out")} == {"parking_motor", "street_stall"}
    assert "illegal_parking:" in done.output and "street_stall:" in done.output
