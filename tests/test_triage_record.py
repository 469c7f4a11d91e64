"""The typed photo record (`pipelines.triage.record`): what the analyser writes is what the report, the case
writer and the API read; a finding goes back to the event the rules made; older runs' lines still read."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from detect.engine.profile import StageProfile
from detect.rules import PhotoRules
from detect.taxonomy import load_taxonomy
from pipelines.triage import TriageSettings, run_triage
from pipelines.triage.analyse import Analyser
from pipelines.triage.journal import Journal, RecordError, read_records
from pipelines.triage.photos import Photo, load_photo
from pipelines.triage.pipeline import STAGES
from pipelines.triage.record import PhotoRecord
from pipelines.triage.sources import ArchiveCache, PhotoSource
from tests.api_helpers import auth, make_app, settings_for
from tests.triage_helpers import phone_photo

HERE = (30.2741, 120.1551)


def _stages() -> StageProfile:
    return StageProfile(seconds=dict.fromkeys(STAGES, 0.0))


def test_a_record_read_back_gives_the_event_the_photo_rules_made(tmp_path, bus_jpg, onnx_detector):
    photo_path = phone_photo(bus_jpg, tmp_path / "bus.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    settings = TriageSettings(out=tmp_path / "out", imgsz=320)  # a 1/2 decode of the 810x1080 photo
    journal = Journal(settings.out, resume=False)
    photo = load_photo(PhotoSource(photo_path), ArchiveCache(), settings, journal, None, _stages())
    assert isinstance(photo, Photo) and photo.scale > 1  # judged on a reduced decode, recorded at full resolution
    detections = onnx_detector.detect([photo.image])[0]
    taxonomy = load_taxonomy()
    analyser = Analyser(PhotoRules(taxonomy=taxonomy), taxonomy, settings.out, 360, onnx_detector.model_id)
    [finding] = analyser.findings(photo, detections)  # the rules' merged event, decoded-image pixels

    journal.append(analyser.record(photo, detections, _stages()))
    journal.close()
    [record] = read_records(settings.out / "results.jsonl")
    assert isinstance(record, PhotoRecord) and record.ok and record.path == str(photo_path)
    assert record.taken_at == photo.taken_at and (record.lat, record.lon) == HERE and record.width == photo.full_size[0]
    assert [b.class_name for b in record.detections] == [str(n) for n in detections.data["class_name"]]

    event = record.findings[0].event(record, "photo:x:illegal_parking")
    rules = finding.event
    assert (event.violation_type, event.zone_id, event.zone_kind, event.object_count) == \
        (rules.violation_type, rules.zone_id, rules.zone_kind, rules.object_count) == ("illegal_parking", "image", None, 1)
    assert event.score == pytest.approx(rules.score, abs=1e-4) and event.thresholds == rules.thresholds
    assert (event.texts, event.phones) == (sorted(rules.texts), rules.phones)
    assert (event.source_id, event.at, event.first_seen) == (photo.photo_id, photo.taken_at, photo.taken_at)
    assert list(event.detections.data["class_name"]) == list(rules.detections.data["class_name"]) == ["bus"]
    np.testing.assert_allclose(event.detections.xyxy, rules.detections.xyxy * photo.scale, atol=0.06)
    np.testing.assert_allclose(event.detections.confidence, rules.detections.confidence, atol=1e-4)
    assert event.severity == rules.severity == "general"
    # a case of several photos records the most serious of their severities, as cases.csv shows it
    main_road = record.findings[0].model_copy(update={"severity": "major"})
    assert record.findings[0].event(record, "photo:x:illegal_parking", group=[main_road]).severity == "major"


def _first_release(line: dict) -> dict:
    """A record as the first release wrote it: no locator, no verifier, findings without thresholds."""
    old = {k: v for k, v in line.items() if k not in ("path", "member", "verifier")}
    old["findings"] = [{k: v for k, v in f.items() if k != "thresholds"} for f in old.get("findings", [])]
    return {**old, "written_by": "a later release"}  # and a key this release does not know


def test_resume_reads_the_lines_of_earlier_releases(tmp_path, bus_jpg, zidane_jpg, onnx_detector):
    photos = tmp_path / "photos"
    photos.mkdir()
    phone_photo(bus_jpg, photos / "0900_bus.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    settings = TriageSettings(out=tmp_path / "out", verifier="none", ocr="off", cases=False)
    run_triage([photos], settings, detector=onnx_detector, show_progress=False)
    results = settings.out / "results.jsonl"
    [line] = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines()]
    assert "path" in line and "verifier" not in line  # verifier off
    refused = {"source": str(photos / "gone.jpg"), "sha256": None, "status": "error", "reason": "file not found"}
    results.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (_first_release(line), refused)), encoding="utf-8")
    old_lines = results.read_text(encoding="utf-8")

    phone_photo(bus_jpg, photos / "0902_bus_again.jpg", taken=datetime(2024, 6, 3, 9, 2), gps=HERE, crop=0.02)
    shutil.copyfile(zidane_jpg, photos / "1000_people.jpg")
    again = run_triage([photos], settings.model_copy(update={"resume": True}), detector=onnx_detector, show_progress=False)

    assert again.stats.skipped == 1 and again.stats.ok == 2  # the old line is the bus photo's record
    assert results.read_text(encoding="utf-8").startswith(old_lines)  # earlier lines are kept as written
    assert (again.tally.photos, again.tally.ok, again.tally.errors) == (4, 3, 1)
    [group] = again.groups
    assert group.type == "illegal_parking" and sorted(Path(m.source).name for m in group.members) == ["0900_bus.jpg", "0902_bus_again.jpg"]
    old = next(m for m in group.members if m.source.endswith("0900_bus.jpg"))
    assert old.record.path is None and old.finding.thresholds == {}  # read with the defaults of what it lacked
    assert old.finding.event(old.record, "v").thresholds == {}
    page = (settings.out / "report.html").read_text(encoding="utf-8")
    assert "0900_bus.jpg" in page and "0902_bus_again.jpg" in page and "file not found" in page
    new = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines()[2:]]
    assert all("path" in r and "written_by" not in r for r in new)  # this release writes its own shape


def test_a_line_that_is_not_a_record_is_named_with_its_file_line_and_field(tmp_path):
    journal = Journal(tmp_path, resume=False)
    journal.append({"source": "a.jpg", "sha256": "aa", "status": "ok", "findings": []})
    journal.close()
    with (tmp_path / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"source": "b.jpg", "status": "maybe"}\n')
    with pytest.raises(RecordError, match=r"results.jsonl:2: not a photo record: status: Input should be 'ok', 'error' or 'duplicate'"):
        Journal(tmp_path, resume=True)
    with pytest.raises(RecordError, match=r"results.jsonl:2: not a photo record: status"):
        list(read_records(tmp_path / "results.jsonl"))
    with pytest.raises(RecordError, match=r"new record: not a photo record: findings.0.boxes.0.xyxy: List should have at least 4 items"):
        Journal(tmp_path / "other", resume=False).append(
            {"source": "c.jpg", "status": "ok", "findings": [{"type": "t", "name_zh": "t", "name_en": "t", "score": 1,
                                                             "boxes": [{"class_name": "bus", "conf": 1, "xyxy": [1, 2]}]}]})


def test_the_api_serves_the_typed_record_without_server_paths(tmp_path, bus_jpg, onnx_detector):
    app, tokens = make_app(settings_for(tmp_path), detector=onnx_detector)
    job_id = "0123456789abcdef"
    folder = app.state.ctx.jobs.root / job_id
    (folder / "input").mkdir(parents=True)
    phone_photo(bus_jpg, folder / "input" / "0001.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=HERE)
    run_triage([folder / "input"], TriageSettings(out=folder, verifier="none", ocr="off", cases=False), detector=onnx_detector,
               show_progress=False)
    (folder / "job.json").write_text(json.dumps({
        "id": job_id, "owner": "inspector-user", "state": "done", "created_at": "2024-06-03T01:00:00+00:00", "started_at": None,
        "finished_at": None, "error": None, "total": 1, "cases": [],
        "files": [{"label": "街道 bus.jpg", "name": "0001.jpg", "kind": "image", "size": 1}]}), encoding="utf-8")
    with TestClient(app) as client:
        [result] = client.get(f"/api/v1/triage/jobs/{job_id}/results", headers=auth(tokens["inspector"])).json()
        spec = client.get("/openapi.json").json()
    [line] = [json.loads(x) for x in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert line["file_size"] == (folder / "input" / "0001.jpg").stat().st_size and "file_mtime_ns" in line
    assert result == {**{k: v for k, v in line.items() if k not in ("path", "member", "thumb", "file_size", "file_mtime_ns")},
                      "source": "街道 bus.jpg"}
    assert [f["type"] for f in result["findings"]] == ["illegal_parking"] and result["taken_at"].startswith("2024-06-03T09:00:00")
    answer = spec["paths"]["/api/v1/triage/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["items"]["$ref"].endswith("/PhotoRecord")
    models = spec["components"]["schemas"]
    assert models["PhotoFinding"]["properties"]["boxes"]["items"]["$ref"].endswith("/Box")
    assert set(models["PhotoRecord"]["required"]) == {"source", "status"}


def test_a_photo_timed_by_its_file_name_says_so_in_its_record_cases_and_report(tmp_path, bus_jpg, onnx_detector):
    """A WeChat export (no EXIF) of a parked bus: its case is timed by the name, and the report says where the time came from."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copyfile(bus_jpg, photos / "mmexport1701249322000.jpg")  # the bus photo has no EXIF at all
    settings = TriageSettings(out=tmp_path / "out", verifier="none", ocr="off", cases=False)
    result = run_triage([photos], settings, detector=onnx_detector, show_progress=False)
    [record] = read_records(settings.out / "results.jsonl")
    assert (record.taken_at.isoformat(), record.time_source) == ("2023-11-29T17:15:22+08:00", "name")
    [group] = result.groups
    assert group.type == "illegal_parking"
    with (settings.out / "cases.csv").open(encoding="utf-8-sig") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["first_taken_at"] == "2023-11-29T17:15:22+08:00"
    page = (settings.out / "report.html").read_text(encoding="utf-8")
    assert "2023-11-29 17:15:22" in page and "(无EXIF时间 no EXIF time: 取自文件名 from the file name)" in page


def test_a_small_ads_text_and_numbers_are_text_in_cases_csv(tmp_path):
    """A poster's OCR text such as `=HYPERLINK(…)` or `@SUM(…)` went into cases.csv as it was, a formula that runs in
    whoever opens the file in Excel or WPS; it is written after an apostrophe, as text. Its one phone number was written
    as bare digits, which Excel shows as 1.39E+10 (a landline without its leading 0): it is written ="…", text."""
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from pipelines.triage.grouping import Group, Member
    from pipelines.triage.record import PhotoFinding, RecordStatus
    from pipelines.triage.report import CaseRef, write_csv

    texts = ['=HYPERLINK("http://127.0.0.1:9/","办证")', "@SUM(A1)", "专业开锁"]
    finding = PhotoFinding(type="flyposting", name_zh="非法小广告", name_en="Flyposting", score=0.9, texts=texts,
                           phones=["13912345678"])
    record = PhotoRecord(source="wall.jpg", sha256="ab" * 32, status=RecordStatus.OK, photo_id="ab" * 8,
                         taken_at=datetime(2024, 6, 4, 7, 30, tzinfo=UTC), findings=[finding])
    path = tmp_path / "cases.csv"
    write_csv(path, [Group("flyposting", [Member(record, finding)])], [CaseRef()], ZoneInfo("Asia/Shanghai"))
    with path.open(encoding="utf-8-sig", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["texts"] == "'" + " | ".join(texts) and row["name_zh"] == "非法小广告"
    assert row["phones"] == '="13912345678"'


def test_a_triage_file_that_fails_half_way_leaves_the_earlier_one_and_no_temporary_file(tmp_path):
    """cases.csv, report.html and the journal's rewrite at close were written to a temporary file beside them by hand
    and renamed at the end, so a write that failed half way left `cases.csv.tmp`, `report.html.tmp` or
    `results.jsonl.tmp` in the run's folder; written through `replaced_atomically`, a failed one leaves the earlier
    file as it was and nothing beside it."""
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from pipelines.triage.grouping import Group, Member
    from pipelines.triage.record import PhotoFinding, RecordStatus
    from pipelines.triage.report import CaseRef, Tally, write_csv, write_report

    finding = PhotoFinding(type="flyposting", name_zh="非法小广告", name_en="Flyposting", score=0.9, texts=["办证"])
    record = PhotoRecord(source="wall.jpg", sha256="ab" * 32, status=RecordStatus.OK, photo_id="ab" * 8,
                         taken_at=datetime(2024, 6, 4, 7, 30, tzinfo=UTC), findings=[finding])
    groups, tz = [Group("flyposting", [Member(record, finding)])] * 2, ZoneInfo("Asia/Shanghai")
    out = tmp_path / "run"
    out.mkdir()
    csv_path, page = out / "cases.csv", out / "report.html"
    csv_path.write_text("earlier run\n", encoding="utf-8")
    page.write_text("<p>earlier run</p>\n", encoding="utf-8")
    with pytest.raises(ValueError):  # one case reference for two groups: fails after the first row is written
        write_csv(csv_path, groups, [CaseRef()], tz)
    results = out / "results.jsonl"  # a judged photo, then a line that is no record: the page fails while it is written
    results.write_text(record.model_dump_json() + "\n" + json.dumps({"source": "x.jpg"}) + "\n", encoding="utf-8")
    with pytest.raises(RecordError):
        write_report(page, results, groups[:1], [CaseRef()], Tally(photos=2), {"model": "m", "backend": "onnx", "conf": 0.25,
                                                                             "finished": "2024-06-04 08:00:00"}, tz, 10)
    assert csv_path.read_text(encoding="utf-8") == "earlier run\n"
    assert page.read_text(encoding="utf-8") == "<p>earlier run</p>\n"

    # the journal drops a superseded record at close: a line that is no record among them stops the rewrite half way
    again = record.model_copy(update={"findings": []})
    lines = [record.model_copy(update={"source": "kept.jpg"}).model_dump_json(), record.model_dump_json(),
             again.model_dump_json()]
    results.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    journal = Journal(out, resume=True)
    bad = "".join(line + "\n" for line in [lines[0], json.dumps({"source": "wall.jpg"}), lines[2]])
    results.write_text(bad, encoding="utf-8")  # the superseded line changed under the open journal
    with pytest.raises(RecordError):
        journal.close()
    assert results.read_text(encoding="utf-8") == bad
    assert sorted(p.name for p in out.iterdir()) == ["cases.csv", "report.html", "results.jsonl"]


def test_the_reports_statuses_missing_place_and_thumbnail_note_are_said_in_chinese(tmp_path, bus_jpg, onnx_detector):
    """City staff read the report: its errors table showed a bare `error` / `duplicate`, a case without GPS `no GPS`
    and a case past `report_max_cases` an English note only, beside the Chinese of everything else."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copyfile(bus_jpg, photos / "a_bus.jpg")  # no EXIF, no GPS
    shutil.copyfile(bus_jpg, photos / "b_bus_copy.jpg")
    (photos / "c_empty.jpg").write_bytes(b"")
    settings = TriageSettings(out=tmp_path / "out", verifier="none", ocr="off", cases=False, report_max_cases=0)
    run_triage([photos], settings, detector=onnx_detector, show_progress=False)
    page = (settings.out / "report.html").read_text(encoding="utf-8")
    assert '<td class="status">重复文件 duplicate</td>' in page and '<td class="status">错误 error</td>' in page
    assert "无GPS定位 no GPS" in page and "仅前 0 个案件显示缩略图" in page


def test_the_report_embeds_each_thumbnail_once_and_at_most_twelve_a_case_captioned_in_chinese(tmp_path, bus_jpg,
                                                                                                onnx_detector):
    """report_max_cases counted cases, not thumbnails: a case of 500 photos embedded 500, and a photo of two types
    (a parked car and motorcycles) was embedded in both its cases (25 MB for 2,000 photos). Each photo's thumbnail
    is embedded once, the cases showing it referring to it, at most THUMBS_PER_CASE a case, the others listed by
    name (另有 N 张); the boxes' classes are captioned in Chinese first (客车 bus), as the evidence labels are."""
    import re

    from tests.conftest import SHARED
    from pipelines.triage.report import THUMBS_PER_CASE, class_label

    photos, spot = tmp_path / "photos", (30.274, 120.155)
    for i in range(THUMBS_PER_CASE + 2):  # one parked bus shot 14 times from one spot
        phone_photo(bus_jpg, photos / f"bus_{i:02d}.jpg", taken=datetime(2024, 6, 3, 9, i), gps=spot, crop=0.003 * i)
    phone_photo(SHARED / "datasets/street-scenes/images/stk/070905DSCF0003.jpg", photos / "car_and_motorcycles.jpg",
                taken=datetime(2024, 6, 3, 11, 0), gps=(30.28, 120.16))
    settings = TriageSettings(out=tmp_path / "out", verifier="none", ocr="off", cases=False)
    result = run_triage([photos], settings, detector=onnx_detector, show_progress=False)
    page = (settings.out / "report.html").read_text(encoding="utf-8")
    bus = re.search(r'<section class="case"[^>]*data-photos="14".*?</section>', page, re.S).group(0)
    assert bus.count("<figure") == bus.count("<use href=") == THUMBS_PER_CASE
    assert "另有 2 张 · 2 more photos" in bus and bus.count('<li data-source="') == 2
    two_types = [g for g in result.groups if g.lead.source.endswith("car_and_motorcycles.jpg")]
    assert sorted(g.type for g in two_types) == ["illegal_parking", "nonmotor_parking"]
    embedded = re.findall(r'<image id="(thumb-\d+)"[^>]*href="data:image/jpeg;base64,', page)
    assert len(embedded) == len(set(embedded)) == THUMBS_PER_CASE + 1 and page.count("data:image/jpeg") == len(embedded)
    thumbs = sum(p.stat().st_size for p in (settings.out / "thumbs").iterdir())  # the 15 thumbnails' bytes
    assert (settings.out / "report.html").stat().st_size < thumbs * 4 / 3 + 40_000  # each at most once, in base64
    assert "客车 bus" in bus and "摩托车 motorcycle" in page and "小汽车 car" in page and "得分 score" in bus
    names = load_taxonomy().class_names_zh
    assert class_label("verified:street_stall", names) == "占道经营 / 无照经营游商 verified:street_stall"
    assert class_label("kite", names) == "kite"
