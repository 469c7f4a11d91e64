"""Analysis reports against the case store's own counts, their PDF pages, and the score/report/export commands."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook
from pypdf import PdfReader
from typer.testing import CliRunner

from detect.taxonomy import load_taxonomy
from pipelines.analytics.casedata import handling_times
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.periods import parse_period
from pipelines.analytics.places import load_places
from pipelines.analytics.report import PAGES, build_report, write_report
from pipelines.cases.states import STATE_NAMES_ZH, CaseState
from pipelines.cases.store import CaseQuery, CaseStore, NewCase
from tests.analytics_helpers import (
    G1, G2, G3, TWICE_G1, TWICE_G1_REFUSED, TZ, CaseMaker, local, november, write_grid, write_named_cameras, write_zones,
)
from streetwatch.cli import app
from tests.conftest import REPO

NOV = parse_period("2026-11")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """November's worked example plus three parking cases taken through dispatch to closing, at known times."""
    tmp = tmp_path_factory.mktemp("reports")
    store = CaseStore(f"sqlite:///{tmp}/cases.db")
    make = CaseMaker(store)
    cutoffs = november(make, tmp)
    for i, close_after_h in enumerate((3, 27, 51)):
        at = local(12 + i, 9)
        case_id = make.add("illegal_parking", G3, at, camera="cam-02", zone="kerb", state="candidate")
        store.update(case_id, evidence_ref=f"local:{case_id}")
        store.review(case_id, approve=True, reviewer="审核员", target="dcm", now=at + timedelta(hours=1))
        entry = store.claim_due(now=at + timedelta(hours=1))[0]
        store.mark_delivered(entry.id, f"T-{i}", now=at + timedelta(hours=2, minutes=30))
        store.apply_remote_state(case_id, CaseState.CLOSED, actor="dispatch:dcm", now=at + timedelta(hours=close_after_h))
    config = AnalyticsConfig(grid=write_grid(tmp / "grid.geojson"), zones=write_zones(tmp / "zones.geojson"),
                             cutoffs=cutoffs, reports_dir=tmp / "reports")
    yield {"store": store, "tmp": tmp, "config": config, "places": load_places(config)}
    store.close()


def _store_total(store: CaseStore, **filters) -> int:
    start, end = NOV.bounds(TZ)
    return store.search(CaseQuery(since=start, until=end, limit=1, **filters))[1]


def test_report_counts_equal_the_case_store(city):
    store, places = city["store"], city["places"]
    report = build_report(store.engine, places, load_taxonomy(), NOV, TZ)
    t = {k: dict((row[0], row) for row in table.rows) for k, table in report.tables.items()}
    rejected = _store_total(store, state=CaseState.REJECTED)
    assert report.summary["cases"] == _store_total(store) - rejected == 3 + 1 + 4 + 25 + 4 + 1 + 3
    assert report.summary["rejected"] == rejected == 1 and report.summary["unreviewed"] == 1
    assert report.summary["previous_cases"] == 1 and report.summary["closed"] == 3  # October's one flyposting spot
    # the cases each source found, beside the cameras with cases ('摄像头 cameras 2' read as 2 camera cases)
    assert report.summary["camera_cases"] + report.summary["photo_cases"] == report.summary["cases"]
    assert report.summary["camera_cases"] == sum(_store_total(store, source_id=cam) for cam in ("cam-01", "cam-02")) == 1 + 3 + 3
    assert dict(report.tables["summary"].rows)["涉及摄像头 cameras with cases"] == report.summary["cameras"] == 2
    for state in set(CaseState) - {CaseState.CANDIDATE}:
        assert t["by_state"][state.value][1:] == [STATE_NAMES_ZH[state], _store_total(store, state=state)], state
    # the store's candidates: those awaiting review (the summary's 待审 unreviewed), then those confirmed without
    # dispatch in a row of their own (all but one here: 42 待审核 beside the summary's 5 待审 read as a contradiction)
    assert t["by_state"]["candidate"][1:] == ["待审核", report.summary["unreviewed"]]
    assert t["by_state"]["confirmed_not_dispatched"][1:] == ["已确认未派遣", _store_total(store, state=CaseState.CANDIDATE) - 1]
    assert sum(row[2] for row in report.tables["by_state"].rows) == _store_total(store)
    for type_id in ("street_stall", "shopfront_spillover", "flyposting", "illegal_parking"):
        assert t["by_type"][type_id][2] == _store_total(store, violation_type=type_id) - _store_total(
            store, violation_type=type_id, state=CaseState.REJECTED), type_id
    assert t["by_type"]["flyposting"][3] == 1 and t["by_type"]["flyposting"][4] == "+3 (+300%)"
    for cell in (G1, G3):
        assert t["by_grid"][cell][4] == _store_total(store, grid_cell=cell) - _store_total(store, grid_cell=cell, state=CaseState.REJECTED)
    assert t["by_grid"][G1][2:4] == ["文新街道", "一中队"]
    total = report.summary["cases"]
    assert sum(row[1] for row in report.tables["by_day"].rows) == total and len(report.tables["by_day"].rows) == 30
    assert sum(row[1] for row in report.tables["by_hour"].rows) == total
    assert t["by_hour"][8][1] == 25 and t["by_hour"][0][1] == 1  # the one-a-day stalls at 08:00; the 00:30 case (local hour)
    assert t["by_street"]["蒋村街道"][1] + t["by_street"]["文新街道"][1] == total
    # Repeats: camera cam-01 on two days; the shop zone frontage-a twice on one day is not a repeat shop.
    assert t["repeat_cameras"]["cam-01"][1:3] == [4, 2] and t["repeat_cameras"]["cam-02"][1] == 3
    assert report.tables["repeat_shops"].rows == []
    # Handling: reviewed 1 h after drafting, dispatched 2.5 h after, closed 3 / 27 / 51 h after opening.
    parking = t["handling"]["机动车乱停放"]
    assert parking[1:] == [3, 3, 1.0, 3, 2.5, 3, 27.0, 51.0]


def test_a_reopened_case_counts_as_reviewed_only_when_reviewed_again(tmp_path):
    """A case reopened after a rejection had its undone rejection (or, queued before, its queuing) counted as its
    review, so a case waiting in the queue again read as reviewed 1 h after drafting. It is not reviewed until a
    reviewer decides again, and then its review time is that latest decision; an auto-queued case keeps its queuing."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    at = local(12, 9)
    waiting, confirmed, rejected, was_queued, auto = (make.add("illegal_parking", G3, at, state="candidate") for _ in range(5))
    for case_id in (was_queued, auto):
        store.update(case_id, evidence_ref=f"local:{case_id}")
    store.review(was_queued, approve=True, reviewer="审核员", target="dcm", now=at + timedelta(minutes=30))
    store.queue(auto, "dcm", now=at + timedelta(minutes=15))
    for case_id in (waiting, confirmed, rejected, was_queued):
        store.review(case_id, approve=False, reviewer="审核员", reason_code="duplicate", now=at + timedelta(hours=1))
        store.reopen(case_id, actor="审核员", note="误点驳回", within=timedelta(days=7), now=at + timedelta(hours=2))
    store.approve(confirmed, reviewer="审核员", now=at + timedelta(hours=5))
    store.review(rejected, approve=False, reviewer="审核员", reason_code="legal", now=at + timedelta(hours=6))
    handled = handling_times(store.engine, [waiting, confirmed, rejected, was_queued, auto])
    store.close()
    assert {i: handled[i].to_review for i in (waiting, confirmed, rejected, was_queued, auto)} == {
        waiting: None, confirmed: 5.0, rejected: 6.0, was_queued: None, auto: 0.25}


def test_a_case_withdrawn_by_triage_unreviewed_has_no_review_time(tmp_path):
    """A candidate that triage withdrew (its photo replaced in a resumed run) before anyone reviewed it had the
    withdrawal counted as its review, 1 h after drafting: nobody reviewed it, so it has no review time; a reviewer's
    rejection still has one."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    at = local(12, 9)
    withdrawn, rejected = (make.add("illegal_parking", G3, at, state="candidate") for _ in range(2))
    store.transition(withdrawn, CaseState.REJECTED, actor="triage:out", reason="撤回 withdrawn: its photo was replaced",
                     only_from=CaseState.CANDIDATE, now=at + timedelta(hours=1))
    store.review(rejected, approve=False, reviewer="审核员", reason_code="legal", now=at + timedelta(hours=2))
    handled = handling_times(store.engine, [withdrawn, rejected])
    store.close()
    assert {i: handled[i].to_review for i in (withdrawn, rejected)} == {withdrawn: None, rejected: 2.0}


@pytest.mark.slow  # 7 s: draws the charts and a PDF; the default suite's ~15-minute budget
def test_report_files_pdf_pages_and_font(city, tmp_path):
    store, places = city["store"], city["places"]
    report = build_report(store.engine, places, load_taxonomy(), NOV, TZ)
    files = write_report(report, tmp_path / "month")
    pdf = PdfReader(files["report.pdf"])
    assert len(pdf.pages) == len(PAGES)
    texts = [p.extract_text() for p in pdf.pages]
    for (key, title), text in zip(PAGES, texts):
        assert title.split()[0] in text and "月通报 2026-11" in text, (key, text[:200])
    assert "Noto Sans CJK SC" in texts[0] and str(report.summary["cases"]) in texts[0]
    # the hot spots page lists all 10 the HTML and Excel list (it showed 8)
    spots = [row[0] for row in report.tables["hot_spots"].rows]
    page = texts[[key for key, _ in PAGES].index("hot_spots")]
    assert len(spots) == 10 and [spot for spot in spots if spot not in page] == []
    assert "占道经营" in texts[1] and "按严重程度" in texts[1] and "较重 major" in texts[1]  # types and severities on one page
    html = files["report.html"].read_text(encoding="utf-8")
    assert html.count("<svg") == len(PAGES) - 1 and "Noto Sans CJK SC" in html
    assert f'<b id="total">{report.summary["cases"]}</b>' in html
    # made when, in the report's zone as every time in it (the HTML said '…+00:00 UTC'), the PDF too
    made = datetime.fromisoformat(report.generated_at).astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S")
    assert f"生成 generated {made}<br>" in html and f"生成 generated {made}" in texts[0], texts[0][:300]
    # November first to last day, as /ui/reports says it (they said 2026-11-01 – 2026-12-01（不含 exclusive）)
    assert "2026-11-01 – 2026-11-30 · Asia/Shanghai" in html and "2026-11-01 – 2026-11-30 · Asia/Shanghai" in texts[0]
    assert "12-01" not in html.split("<div")[0]
    book = load_workbook(files["report.xlsx"])
    assert {"按类型 By type", "按日 By day", "处置效率 Handling times (hours)", "说明 About"} <= set(book.sheetnames)
    # it opens on the summary, as the PDF and the HTML do (概况 Summary was its last sheet but 说明 About)
    assert book.sheetnames[0] == book.active.title == "概况 Summary" and len(book.sheetnames) == len(report.tables) + 1
    rows = list(book["按类型 By type"].iter_rows(values_only=True))
    assert rows[0][0] == "类型 type" and {r[0]: r[2] for r in rows[1:]}["street_stall"] == 30
    states = {r[0]: r[1] for r in book["按状态 By state"].iter_rows(min_row=2, values_only=True)}
    assert states["candidate"] == "待审核" and states["rejected"] == "已作废"  # the codes with what city staff call them
    assert "<td>candidate</td><td>待审核</td>" in html and "待审核" in texts[0]
    # the summary calls rejected cases by the state's one name too (it said 已驳回 where the state table says 已作废)
    assert "已作废 rejected<b>" in html and "已驳回" not in html and "已驳回" not in texts[0]
    meta = json.loads(files["report.json"].read_text(encoding="utf-8"))
    assert meta["label"] == "2026-11" and meta["summary"] == report.summary and "by_hour" in meta["tables"]


def test_pdf_labels_fit_their_cells(city):
    """The PDF's summary cut its first measure to '案件数（不含已作废、平台作废）cases (not rejected nor …' (40
    characters) and its column, half the table, hid more of it under the value: every heading and measure of every
    PDF table is whole and within its cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from pipelines.analytics import charts
    from pipelines.analytics.report import _figures

    report = build_report(city["store"].engine, city["places"], load_taxonomy(), NOV, TZ)
    labels = {row[0] for row in report.tables["summary"].rows}  # 平台作废 voided by platform among them
    with charts.style(report.font):
        for key, _, fig in _figures(report):
            renderer = FigureCanvasAgg(fig).get_renderer()
            fig.draw(renderer)
            for table in (t for ax in fig.axes for t in ax.tables):
                for (row, col), cell in table.get_celld().items():
                    text = cell.get_text()
                    if row == 0 or (col == 0 and key == "summary"):
                        assert "…" not in text.get_text(), (key, text.get_text())
                        assert text.get_window_extent(renderer).x1 <= cell.get_window_extent(renderer).x1, (key, text.get_text())
                        labels.discard(text.get_text())
    assert not labels  # every measure was drawn


@pytest.mark.slow  # 8 s: a whole report
def test_a_spot_names_every_cell_its_cases_fall_in(tmp_path):
    """A hot spot's and a repeat place's grid was its first case's cell: an address on the edge of two cells, two of
    its three cases in the second, sent a district head to the first cell's squad alone. They name every cell, the one
    with most cases first, as the repeat numbers do."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for day, cell in ((3, G1), (4, G2), (5, G2)):
        make.add("street_stall", cell, local(day, 9), address="文三路 100 号")
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    report = build_report(store.engine, places, load_taxonomy(), NOV, TZ)
    store.close()
    assert report.tables["hot_spots"].rows[0][:3] == ["文三路 100 号", [G2, G1], 3]
    assert report.tables["repeat_places"].rows[0][:4] == ["文三路 100 号", [G2, G1], 3, 3]
    files = write_report(report, tmp_path / "report")
    assert f"<td>文三路 100 号</td><td>{G2}, {G1}</td>" in files["report.html"].read_text(encoding="utf-8")


@pytest.mark.slow  # 8 s: a whole report
def test_repeat_cameras_lists_every_camera_seen_again(tmp_path):
    """Every table is in full in the HTML, Excel and JSON (the PDF page shows the first rows): repeat cameras
    stopped at 10, so a district's 11th camera with cases on two days was in none of them. The PDF showed the first 8
    without saying so, the page read as the period's all: it shows 10, as the hot spots, titled 前 10 条，共 12 条."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for i in range(12):
        for day in (3, 4 + i % 3):
            make.add("illegal_parking", G3, local(day, 9 + i), camera=f"cam-{i:02d}", zone="kerb")
    make.add("illegal_parking", G3, local(5), camera="cam-once", zone="kerb")
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    report = build_report(store.engine, places, load_taxonomy(), NOV, TZ)
    rows = report.tables["repeat_cameras"].rows
    assert sorted(row[0] for row in rows) == [f"cam-{i:02d}" for i in range(12)] and {row[1] for row in rows} == {2}
    files = write_report(report, tmp_path / "report")
    sheet = list(load_workbook(files["report.xlsx"])["重复摄像头 Repeat cameras"].iter_rows(values_only=True))
    assert len(sheet) == 1 + 12
    page = PdfReader(files["report.pdf"]).pages[[key for key, _ in PAGES].index("hot_spots")].extract_text()
    assert "重复摄像头 Repeat cameras（前 10 条，共 12 条 top 10 of 12）" in page, page
    assert [f"cam-{i:02d}" for i in range(12) if f"\ncam-{i:02d} 2 " in page] == [f"cam-{i:02d}" for i in range(10)], page
    store.close()


def test_hot_spots_name_cameras_and_zones_as_their_scenes_do(tmp_path):
    """The hot spots read 摄像头 cam-01 · curb: ids city staff do not know. A camera and its zone go by the names their
    scene gives them (service.cameras_file; cam-01 disabled now still named), the id after; one the scenes name nothing
    for, or no longer list, by its id."""
    cameras = write_named_cameras(tmp_path)
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for camera_id, zone_id, days in (("cam-01", "curb", (3, 4, 5)), ("cam-02", "kerb", (3, 4)), ("cam-09", "walk", (6,))):
        for day in days:
            make.add("illegal_parking", G3, local(day, 9), camera=camera_id, zone=zone_id)
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")), cameras_file=cameras)
    report = build_report(store.engine, places, load_taxonomy(), NOV, TZ)
    store.close()
    assert [row[0] for row in report.tables["hot_spots"].rows] == [
        "摄像头 文三路北门 (cam-01) · 北门人行道 (curb)", "摄像头 cam-02 · kerb", "摄像头 cam-09 · walk"]
    assert [row[0] for row in report.tables["repeat_cameras"].rows] == ["文三路北门 (cam-01)", "cam-02"]


def test_photos_without_a_place_are_no_hot_spot(tmp_path):
    """Photo cases with neither address, grid cell nor coordinates (WeChat photos keep no GPS) were one hot spot,
    "(未标注 none)", the period's first in a city whose inspectors send such photos. They are no spot: the summary
    counts them (无地点); a photo with coordinates alone is a spot of about 100 m."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    make.add("illegal_parking", G3, local(3, 9), camera="cam-01", zone="kerb")
    for n, (lat, lon) in enumerate([(None, None)] * 3 + [(30.27412, 120.15511), (30.27431, 120.15489)]):
        store.create_case(NewCase(violation_type="street_stall", source_kind="photo_batch", source_id="triage:batch-2",
                                  violation_id=f"p:{n}", zone_id=None, grid_cell=None, lat=lat, lon=lon, address=None,
                                  opened_at=local(4 + n, 9), first_seen_at=local(4 + n, 8)), now=local(4 + n, 9))
    report = build_report(store.engine, load_places(AnalyticsConfig()), load_taxonomy(), NOV, TZ)
    store.close()
    assert [row[:3] for row in report.tables["hot_spots"].rows] == [["坐标约 30.274, 120.155", ["(未标注 none)"], 2],
                                                                    ["摄像头 cam-01 · kerb", [G3], 1]]
    assert report.summary["unplaced"] == 3 and report.summary["cases"] == 6


def test_the_handling_chart_draws_no_bar_for_a_type_none_of_whose_cases_closed(city):
    """The chart of median hours to close drew a type none of whose cases had closed as a bar of 0 labelled 0, which
    reads as closed at once: November's stalls, shops and flyposting, none closed, stood at 0 beside parking's hours.
    It draws the types with a closed case; the table below it lists every type, its median empty."""
    from pipelines.analytics import charts
    from pipelines.analytics.report import _figures

    report = build_report(city["store"].engine, city["places"], load_taxonomy(), NOV, TZ)
    rows = {row[0]: row for row in report.tables["handling"].rows}
    parking = report.tables["by_type"].rows[[r[0] for r in report.tables["by_type"].rows].index("illegal_parking")][1]
    assert rows[parking][7] == 27 and all(row[7] is None for name, row in rows.items() if name not in (parking, "合计 all"))
    with charts.style(report.font):
        chart = next(fig for key, _, fig in _figures(report) if key == "handling").axes[0]
        assert [t.get_text() for t in chart.get_yticklabels()] == [parking]
        assert [t.get_text() for t in chart.texts if t.get_text() != ""] == ["27"]


@pytest.mark.slow  # draws every chart of a report with matplotlib
def test_dollar_signs_in_names_are_text_in_the_charts(tmp_path):
    """Matplotlib read `$…$` in a label as a formula, so a camera, shop or photo batch named with one (`cam-$\\foo$`)
    stopped the whole report with a ParseFatalException; the city's names are drawn as the text they are."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for day in (3, 4):
        make.add("illegal_parking", G3, local(day, 9), camera="cam-$\\foo$", zone="kerb")
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    files = write_report(build_report(store.engine, places, load_taxonomy(), NOV, TZ), tmp_path / "report")
    assert any("cam-$\\foo$" in page.extract_text() for page in PdfReader(files["report.pdf"]).pages)
    store.close()


@pytest.mark.slow  # 14 s: a whole report with charts
def test_a_case_its_platform_voided_is_counted_apart_from_the_rejections(tmp_path):
    """A case approved here and then voided by its platform (作废) was counted as 已作废 rejected, a false finding of
    the camera or the verifier, like a reviewer's rejection, though the platform's why is not known here. The report's
    summary and the scores count it apart (平台作废 voided by platform), out of the rejections and not scored."""
    from pipelines.analytics.scoring import score_store, score_tables
    from pipelines.analytics.sheet import load_sheet

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    make.add("illegal_parking", G3, local(3, 9), camera="cam-02", zone="kerb")
    make.add("illegal_parking", G3, local(4, 9), camera="cam-02", zone="kerb", state="rejected")
    voided = make.add("illegal_parking", G3, local(5, 9), camera="cam-02", zone="kerb", state="candidate")
    store.update(voided, evidence_ref=f"local:{voided}")
    store.review(voided, approve=True, reviewer="审核员", target="dcm", now=local(5, 10))
    store.mark_delivered(store.claim_due(now=local(5, 10))[0].id, "T-9", now=local(5, 11))
    store.apply_remote_state(voided, CaseState.REJECTED, actor="dispatch:dcm", reason="作废: 重复上报", now=local(6, 9))
    assert store.get(voided).voided_by_platform
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))

    report = build_report(store.engine, places, load_taxonomy(), NOV, TZ)
    assert (report.summary["cases"], report.summary["rejected"], report.summary["voided_by_platform"]) == (1, 1, 1)
    summary = dict(report.tables["summary"].rows)
    assert (summary["已作废 rejected"], summary["平台作废 voided by platform"]) == (1, 1)
    assert summary["案件数（不含已作废、平台作废）cases (not rejected nor voided by platform)"] == 1
    # The state table counted both in its `rejected` row (2), against the summary's 1 and 1: it counts as the summary
    # does, the platform's voiding in a row of its own after the rejections, its rows adding up to every case.
    states = {row[0]: row[1:] for row in report.tables["by_state"].rows}
    assert states["rejected"] == ["已作废", 1] and states["voided_by_platform"] == ["平台作废", 1]
    assert list(states).index("voided_by_platform") == list(states).index("rejected") + 1
    assert sum(n for _, n in states.values()) == 3 and states["confirmed_not_dispatched"] == ["已确认未派遣", 1]
    html = write_report(report, tmp_path / "report")["report.html"].read_text(encoding="utf-8")
    assert "已作废 rejected<b>1</b>" in html and "平台作废 voided by platform<b>1</b>" in html
    # the command's line of counts said "1 rejected" and nothing of the case voided (1 + 1 of the 3 opened)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": str(store.url)}, "analytics": {"grid": str(tmp_path / "grid.geojson")}}))
    done = _run("report", "--period", "month", "--date", "2026-11-15", "--out", str(tmp_path / "by-command"), "--config", str(settings))
    assert done.exit_code == 0, done.output
    assert "1 case (previous" in done.stdout and "1 rejected, 1 voided by platform (平台作废)" in done.stdout, done.stdout

    table = score_store(store.engine, places, load_sheet(), "grid", NOV, TZ)
    assert (table.cases_counted, table.voided_by_platform) == (1, 1) and table.to_json()["voided_by_platform"] == 1
    about = dict(score_tables(table)[-1].rows)
    assert about["平台作废（不计分） voided by platform (not scored)"] == 1
    store.close()


@pytest.mark.slow  # 7 s: a PDF and a workbook drawn; the default suite's ~15-minute budget
def test_empty_period_gives_an_empty_valid_report(city, tmp_path):
    report = build_report(city["store"].engine, city["places"], load_taxonomy(), parse_period("2027-03-02"), TZ)
    assert report.summary["cases"] == 0 and report.summary["previous_cases"] == 0
    files = write_report(report, tmp_path / "empty")
    pdf = PdfReader(files["report.pdf"])
    assert len(pdf.pages) == len(PAGES) and "本期无案件" in pdf.pages[1].extract_text()
    assert json.loads(files["report.json"].read_text(encoding="utf-8"))["tables"]["hot_spots"]["rows"] == []
    assert report.tables["by_day"].rows == [["2027-03-02", 0]]


# ---- the commands ---------------------------------------------------------------------------------------------

def _settings(city) -> str:
    path = city["tmp"] / "settings.yaml"
    path.write_text(yaml.safe_dump({"cases": {"url": str(city["store"].url)},
                                    "analytics": city["config"].model_dump(mode="json", exclude_none=True)}, allow_unicode=True))
    return str(path)


def _run(*args: str):
    """The command in-process (Click's runner): `.exit_code`, `.stdout`, `.stderr`."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def test_score_command_prints_and_writes_excel_and_json(city, tmp_path):
    done = _run("score", "--sheet", str(REPO / "pipelines/analytics/example_sheet.yaml"), "--period", "2026-11", "--by", "squad",
                "--out", str(tmp_path), "--config", _settings(city))
    assert done.exit_code == 0, done.stderr
    assert "一中队" in done.stdout and "二中队" in done.stdout and "road_market" in done.stdout
    assert "一中队 · 马路市场（10–20 个摊点扣 5 分，20 个以上扣 10 分）: -5 for 1" in done.stdout
    data = json.loads((tmp_path / "scores-2026-11-squad.json").read_text(encoding="utf-8"))
    assert {u["unit"]: u["score"] for u in data["units"]} == {"一中队": 42, "二中队": 26}
    # November's unreviewed candidate is not scored, and said so: a month of unreviewed cases was an empty table
    assert data["awaiting_review"] == 1 and "1 case of 2026-11 awaits review and is not scored" in done.stdout
    book = load_workbook(tmp_path / "scores-2026-11-squad.xlsx")
    about = dict(book["说明 About"].iter_rows(values_only=True))
    assert about["待审核（未计分） awaiting review (not scored)"] == 1
    scores = list(book["得分 Scores"].iter_rows(values_only=True))
    assert scores[0][:3] == ("中队 squad", "得分 score", "满分 points") and scores[1][:3] == ("一中队", 42, 60)
    details = list(book["扣分明细 Deductions"].iter_rows(values_only=True))
    market = next(r for r in details if r[0] == "一中队" and r[2].startswith("马路市场"))
    assert market[3:5] == (1, -5) and len(market[5].split(", ")) == 3


def test_score_command_says_the_cutoff_files_warnings(city, tmp_path):
    """A row of the cut-off file that repeats the header was skipped without a word; score says so on stderr and in
    the scores' JSON."""
    pasted = tmp_path / "cutoffs.csv"
    pasted.write_text(city["config"].cutoffs.read_text(encoding="utf-8") + "number,cut_off_at,note\n", encoding="utf-8")
    done = _run("score", "--period", "2026-11", "--by", "squad", "--cutoffs", str(pasted), "--out", str(tmp_path),
                "--config", _settings(city))
    said = f"{pasted} 第 11 行与表头相同，已跳过 — {pasted}: row 11 repeats the header, skipped"
    assert done.exit_code == 0 and f"warning: {said}" in done.stderr.replace("\n", ""), done.stderr
    assert json.loads((tmp_path / "scores-2026-11-squad.json").read_text(encoding="utf-8"))["warnings"] == [said]


def test_an_item_not_scored_is_said_so_where_its_deduction_would_be(city, tmp_path):
    """Without a cut-off file the squads' quota is not scored, yet its column showed 0 in the command's table and -0
    in the workbook's 得分 Scores sheet (and an item not applying to grid cells -0 there too), read as a quota met:
    both say 未评分 not scored (不适用 n/a), the reason in the deductions' note as before."""
    from pipelines.analytics.scoring import score_store, score_tables
    from pipelines.analytics.sheet import load_sheet

    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": str(city["store"].url)}, "analytics": city["config"].model_dump(
        mode="json", exclude_none=True, exclude={"cutoffs"})}, allow_unicode=True), encoding="utf-8")
    done = _run("score", "--period", "2026-11", "--by", "squad", "--no-details", "--out", str(tmp_path), "--config", str(settings))
    assert done.exit_code == 0, done.output
    rows = [line for line in done.stdout.splitlines() if "中队 " in line and "│" in line]
    assert len(rows) == 2 and all(line.rstrip(" │").endswith("未评分 not scored") for line in rows), done.stdout
    sheet = list(load_workbook(tmp_path / "scores-2026-11-squad.xlsx")["得分 Scores"].iter_rows(values_only=True))
    assert {row[0]: row[-1] for row in sheet[1:]} == {"一中队": "未评分 not scored", "二中队": "未评分 not scored"}
    by_grid = score_tables(score_store(city["store"].engine, city["places"], load_sheet(), "grid", NOV, TZ))[0]
    assert {row[-1] for row in by_grid.rows} == {"不适用 n/a"}


@pytest.mark.slow  # 8 s: the report command in a subprocess
def test_report_command_writes_into_the_reports_folder(city):
    done = _run("report", "--period", "month", "--date", "2026-11-15", "--config", _settings(city))
    assert done.exit_code == 0, done.stderr
    folder = city["config"].reports_dir / "month-2026-11"
    assert f"wrote {folder / 'report.pdf'}" in done.stdout and "font: Noto Sans CJK SC" in done.stdout
    assert {p.name for p in folder.iterdir()} == {"report.html", "report.pdf", "report.xlsx", "report.json"}


def test_cases_export_with_filters(city, tmp_path):
    settings = _settings(city)
    done = _run("cases", "export", "--period", "2026-11", "--type", "street_stall", "--street", "文新街道", "--config", settings)
    assert done.exit_code == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 4 and {r["网格 grid"] for r in rows} == {G1} and {r["街道 street"] for r in rows} == {"文新街道"}
    assert sorted(int(r["目标数 objects"]) for r in rows) == [2, 3, 4, 5]
    assert min(r["发现时间 opened (local)"] for r in rows) == "2026-11-05 09:00:00"
    out = tmp_path / "cameras.xlsx"
    done = _run("cases", "export", "--source", "camera", "--camera", "cam-02", "--state", "closed", "--out", str(out), "--config", settings)
    assert done.exit_code == 0 and "wrote 3 cases" in done.stdout, done.stderr
    sheet = list(load_workbook(out).active.iter_rows(values_only=True))
    assert len(sheet) == 4 and {r[3] for r in sheet[1:]} == {"closed"}
    # the review decision as the other columns read, Chinese first (it said approved alone)
    assert {r[sheet[0].index("审核 review")] for r in sheet[1:]} == {"已确认 approved"}
    csv_file = tmp_path / "all.csv"
    assert _run("cases", "export", "--out", str(csv_file), "--config", settings).exit_code == 0
    assert csv_file.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel opens the Chinese text as UTF-8
    assert len(list(csv.reader(io.StringIO(csv_file.read_text(encoding="utf-8-sig"))))) == 1 + len(city["store"].list()) == 1 + 43
    exported = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8-sig"))))
    reviews = {r["审核 review"] for r in exported}
    assert reviews == {"已确认 approved", "已驳回 rejected", ""}, reviews
    # coordinates to 6 decimals, without the float's noise (120.10199999999999)
    assert {(r["纬度 lat"], r["经度 lon"]) for r in exported} >= {("30.271", "120.102"), ("30.271", "120.11")}
    assert all(len(r["经度 lon"].partition(".")[2]) <= 6 for r in exported)
    general = _run("cases", "export", "--severity", "general", "--config", settings)  # none recorded: general
    assert general.exit_code == 0 and len(list(csv.DictReader(io.StringIO(general.stdout)))) == 43, general.stderr
    major = _run("cases", "export", "--severity", "major", "--severity", "serious", "--config", settings)
    assert major.exit_code == 0 and list(csv.DictReader(io.StringIO(major.stdout))) == [], major.stderr
    # a grid code the grid file does not have (a digit dropped) exported headers alone and said nothing
    typo = _run("cases", "export", "--grid", G1[:-1], "--grid", G2, "--period", "2026-11", "--config", settings)
    assert typo.exit_code == 0 and {r["网格 grid"] for r in csv.DictReader(io.StringIO(typo.stdout))} == {G2}
    assert f"warning: --grid '{G1[:-1]}': no cell of the grid file (analytics.grid) has this code" in typo.stderr
    assert G2 not in typo.stderr


@pytest.fixture
def case_pages(monkeypatch):
    """Pages of 10 cases (`casedata.PAGE`), and the store's reads of cases counted: `fail_at` (the n-th read) makes
    that read fail as a store gone away half way does."""
    import sqlalchemy as sa

    from pipelines.analytics import casedata

    monkeypatch.setattr(casedata, "PAGE", 10)
    pages = {"read": 0, "fail_at": None}

    def counted(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT cases.id,") and "LIMIT" in statement:
            pages["read"] += 1
            if pages["read"] == pages["fail_at"]:
                raise sa.exc.OperationalError(statement, parameters, Exception("disk I/O error"))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", counted)
    yield pages
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", counted)


@pytest.mark.parametrize("name", ["all.csv", "all.xlsx"])
def test_cases_export_reads_the_store_a_page_at_a_time_and_writes_every_case(city, tmp_path, case_pages, name):
    """The command built the whole export in memory (every case read at once) where the service streams it: it reads
    a page at a time too, and every case is in the file, in the store's order, none twice."""
    out = tmp_path / "exports" / name
    done = _run("cases", "export", "--out", str(out), "--config", _settings(city))
    assert done.exit_code == 0 and "wrote 43 cases" in done.stdout, done.output
    assert case_pages["read"] == 5  # 43 cases, 10 a page
    if name.endswith(".csv"):
        ids = [r["案件编号 id"] for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig")))]
    else:
        ids = [r[0] for r in list(load_workbook(out).active.iter_rows(values_only=True))[1:]]
    assert ids == [c.id for c in sorted(city["store"].list(limit=1000), key=lambda c: (c.opened_at, c.id))]
    assert [p.name for p in out.parent.iterdir()] == [name]  # no temporary file left beside it
    stdout = _run("cases", "export", "--config", _settings(city))
    assert stdout.exit_code == 0 and [r["案件编号 id"] for r in csv.DictReader(io.StringIO(stdout.stdout))] == ids


@pytest.mark.parametrize("name", ["all.csv", "all.xlsx"])
def test_a_cases_export_that_fails_half_way_leaves_the_earlier_file_and_no_half_file(city, tmp_path, case_pages, name):
    """Written as it is read, an export the store fails in the middle of must not leave the cases read so far as if
    they were all: the file is written beside `--out` and renamed onto it only once complete."""
    out = tmp_path / name
    out.write_bytes(b"yesterday's export")
    case_pages["fail_at"] = 3
    done = _run("cases", "export", "--out", str(out), "--config", _settings(city))
    assert done.exit_code != 0 and "disk I/O error" in str(done.exception)
    assert out.read_bytes() == b"yesterday's export" and [p.name for p in tmp_path.iterdir()] == [name]


def _cli(*args: str, **popen) -> subprocess.CompletedProcess:
    """The console script in its own process, as an operator or cron runs it (its own exit code and stderr)."""
    return subprocess.run([sys.executable, "-m", "streetwatch.cli", *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300, **popen)


def test_an_export_that_cannot_be_written_names_the_out_path_not_its_temporary_file(city, tmp_path):
    """`cases export --out /proc/x.csv` said `/proc/.x.csv.7078.tmp: No such file or directory`, a hidden name the
    user never gave; the error names --out."""
    folder = tmp_path / "cases.csv"  # a folder where the file is to go: the rename onto it fails
    folder.mkdir()
    done = _cli("cases", "export", "--out", str(folder), "--config", _settings(city))
    assert done.returncode == 2 and done.stderr.strip() == f"error: {folder}: Is a directory", done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["cases.csv"]
    if Path("/proc/self").is_dir():  # a folder no file can be made in
        done = _cli("cases", "export", "--out", "/proc/x.csv", "--config", _settings(city))
        assert done.returncode == 2 and done.stderr.strip() == "error: /proc/x.csv: No such file or directory", done.stderr


def test_cases_export_since_a_local_day(city):
    """The API exports from a local day (`since`, the map's default days) but the command had no --since: it
    starts at that day's local midnight (the 00:30 stall of the 6th is still the 5th in UTC), within --period too."""
    settings = _settings(city)
    stalls = ("--type", "street_stall", "--grid", G1, "--config", settings)
    done = _run("cases", "export", "--since", "2026-11-06", *stalls)
    assert done.exit_code == 0, done.stderr
    assert [r["发现时间 opened (local)"] for r in csv.DictReader(io.StringIO(done.stdout))] == ["2026-11-06 00:30:00"]
    within = _run("cases", "export", "--since", "2026-11-05", "--period", "2026-11-05", *stalls)
    assert within.exit_code == 0 and len(list(csv.DictReader(io.StringIO(within.stdout)))) == 3, within.stderr
    outside = _run("cases", "export", "--since", "2026-11-06", "--period", "2026-11-05", *stalls)
    assert outside.exit_code == 0 and list(csv.DictReader(io.StringIO(outside.stdout))) == [], outside.stderr


@pytest.mark.parametrize("args, message", [
    (["score", "--period", "2026-13"], "--period: period '2026-13': month must be in 1..12"),
    (["score", "--period", "Nov"], "does not parse (use YYYY-MM-DD"),
    (["score", "--period", "2026-11", "--by", "district"], "--by 'district': one of grid, street, squad, camera"),
    (["score", "--period", "2026-11", "--sheet", "{bad_sheet}"], "bad-sheet.yaml: sections.0.items.0.types.0: unknown violation type 'ufo'"),
    (["report", "--period", "fortnight"], "--period 'fortnight': one of day, week, month, quarter, year"),
    (["report", "--period", "day", "--date", "2026-02-30"], "--date '2026-02-30'"),
    # A day in year 1 or 9999 stopped with an OverflowError traceback (its period's bounds or previous period).
    (["report", "--period", "month", "--date", "0001-01-01"], "--date '0001-01-01': the year must be 1900–2999"),
    (["report", "--period", "year", "--date", "9999-06-01"], "--date '9999-06-01': the year must be 1900–2999"),
    (["cases", "export", "--type", "ufo"], "--type 'ufo': unknown violation type"),
    (["cases", "export", "--state", "lost"], "--state 'lost': not a case state"),
    (["cases", "export", "--severity", "awful"], "--severity 'awful': not a case severity"),
    (["cases", "export", "--period", "2026-Q5"], "--period '2026-Q5' does not parse"),
    (["cases", "export", "--since", "2026-11"], "--since '2026-11': not a day YYYY-MM-DD"),
    (["cases", "export", "--since", "2026-02-30"], "--since '2026-02-30': not a day"),
    (["cases", "export", "--out", "cases.pdf"], "name a .csv or .xlsx file"),
    # A misspelt street exported nothing, silently (streets come only from the grid file).
    (["cases", "export", "--street", "文新"], "--street '文新': no cell of the grid file (analytics.grid) is in it (streets: 文新街道, 蒋村街道)"),
])
def test_bad_input_is_refused_with_a_clear_error(city, tmp_path, monkeypatch, args, message):
    bad_sheet = tmp_path / "bad-sheet.yaml"
    bad_sheet.write_text(yaml.safe_dump({"name": "x", "sections": [{"id": "s", "name": "s", "points": 10, "items": [
        {"id": "i", "name": "i", "types": ["ufo"], "per": "case", "deduct": 1}]}]}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    done = _run(*[a.replace("{bad_sheet}", str(bad_sheet)) for a in args], "--config", _settings(city))
    assert done.exit_code == 2 and message in done.stderr, done.stderr
    assert done.exception is None or isinstance(done.exception, SystemExit)


def _grid_in_chinese(tmp_path) -> Path:
    """The test grid as a GIS export may name its properties: 街道 and 中队 instead of street and squad."""
    data = json.loads(write_grid(tmp_path / "grid-en.geojson").read_text(encoding="utf-8"))
    for f in data["features"]:
        p = f["properties"]
        f["properties"] = {"id": p["id"], "name": p["name"], "街道": p["street"], "中队": p["squad"]}
    path = tmp_path / "grid.geojson"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_scores_by_street_or_squad_need_cells_that_name_them(city, tmp_path):
    """A grid file whose cells name no squad scored every case under (未标注 none), one row, without a word."""
    grid = _grid_in_chinese(tmp_path)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": str(city["store"].url)}, "analytics": {"grid": str(grid)}}, allow_unicode=True))
    done = _run("score", "--period", "2026-11", "--by", "squad", "--config", str(settings), "--out", str(tmp_path))
    assert done.exit_code == 2 and not (tmp_path / "scores-2026-11-squad.json").exists(), done.stdout
    assert (f"--by squad: {grid}：网格中没有单元格标明中队（属性 `squad`），无法按中队评分 — {grid}: no cell names its squad "
            "(property `squad`; the cells have: id, name, 中队, 街道), so every case would count under (未标注 none)") in done.stderr, done.stderr
    no_grid = tmp_path / "no-grid.yaml"
    no_grid.write_text(yaml.safe_dump({"cases": {"url": str(city["store"].url)}}))
    done = _run("score", "--period", "2026-11", "--by", "street", "--config", str(no_grid), "--out", str(tmp_path))
    assert done.exit_code == 2 and "--by street: 未设置网格文件 analytics.grid，无法按街道评分 — analytics.grid is not set" in done.stderr, done.stderr
    done = _run("score", "--period", "2026-11", "--by", "grid", "--config", str(settings), "--out", str(tmp_path))
    assert done.exit_code == 0 and (tmp_path / "scores-2026-11-grid.json").exists(), done.stderr  # cells are still cells


def test_bad_grid_file_names_the_feature(city, tmp_path):
    grid = tmp_path / "grid.geojson"
    grid.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"id": "x"},
                                                                            "geometry": {"type": "Point", "coordinates": [120, 30]}}]}))
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": str(city["store"].url)}, "analytics": {"grid": str(grid)}}))
    done = _run("score", "--period", "2026-11", "--config", str(settings), "--out", str(tmp_path))
    assert done.exit_code == 2 and f"{grid}: features.0.geometry" in done.stderr and "Polygon" in done.stderr, done.stderr



def test_a_grid_file_with_two_cells_of_one_id_is_refused_by_the_commands(city, tmp_path):
    """`streetwatch score` and `report` scored by street and squad from a grid file whose two cells had one id, the
    last cell's street and squad taken for both without a word; each refuses it naming both cells, nothing written."""
    grid = write_grid(tmp_path / "grid.geojson", TWICE_G1)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"cases": {"url": str(city["store"].url)}, "analytics": {"grid": str(grid)}}))
    for command in (("score", "--period", "2026-11", "--by", "squad"), ("report", "--period", "month", "--date", "2026-11-15")):
        done = _run(*command, "--config", str(settings), "--out", str(tmp_path / "out"))
        assert done.exit_code == 2 and f"{grid}: {TWICE_G1_REFUSED}" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()

def test_the_chinese_font_finder_takes_a_regular_face_over_a_bold_one():
    """fonts-noto-cjk installs NotoSansCJK-Bold.ttc beside NotoSansCJK-Regular.ttc, and the finder sorted fontconfig's
    files by name alone, so Bold came first: the demo's posters were bold. It takes the Regular face of the family it
    prefers (fontconfig's weight 80), and Bold when asked: the verifier's slips stay in the face its heads were trained on."""
    from detect import fonts
    from pipelines.verifier.synth import slip_font

    found = fonts.find_cjk_font()
    assert found is not None and (found.parent / "NotoSansCJK-Bold.ttc").is_file(), "fonts-noto-cjk missing"
    assert found.name == "NotoSansCJK-Regular.ttc"
    assert fonts.find_cjk_font(fonts.BOLD).name == slip_font().name == "NotoSansCJK-Bold.ttc"


def test_charts_use_the_chinese_font_the_products_one_finder_finds(monkeypatch):
    """The charts knew only a fixed list of family names, so a machine whose Chinese font was another (here Noto
    Serif CJK, installed on this machine and on no such list) drew boxes while the demo's posters, which use
    `detect.fonts.find_cjk_font`, had Chinese. The charts take the finder's font, its simplified-Chinese face."""
    import re

    from detect import fonts
    from pipelines.analytics import charts

    found = fonts.find_cjk_font()
    assert found is not None, "fonts-noto-cjk missing: run scripts/install-system-deps.sh"
    assert charts.pick_font().cjk and Path(charts.pick_font().path).parent == found.parent
    serif = found.parent / "NotoSerifCJK-Regular.ttc"
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: serif)  # as on a machine whose Chinese font is this one
    font = charts.pick_font()
    assert (font.name, font.path, font.cjk) == ("Noto Serif CJK SC", str(serif), True)
    with charts.style(font):
        figure = charts.page("月通报 2026-11", "文三路 · 蒋村街道")
        pdf = io.BytesIO()
        figure.savefig(pdf, format="pdf")
    assert {name.split(b"+")[1] for name in re.findall(rb"/BaseFont /([\w+-]+)", pdf.getvalue())} == {
        b"NotoSerifCJKsc-Bold", b"NotoSerifCJKsc-Regular"}
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    assert "no Chinese font found" in charts.pick_font().describe()


def test_the_usage_lines_of_the_analytics_doc_name_every_option():
    """docs/analytics.md opens with the usage of score, report and cases export; cases export's left out --severity
    (and score's --no-details), so the doc hid filters the commands take. Every option of the three is on its line
    (either side of an on/off pair; --config is said once for all three below)."""
    import re

    import click
    import typer

    usage = (REPO / "docs" / "analytics.md").read_text(encoding="utf-8").split("```bash\n", 1)[1].split("```", 1)[0]
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^streetwatch (score|report|cases export)\b((?:.*\\\n)*.*)$", usage, re.M)}
    root = typer.main.get_command(app)
    context = click.Context(root)
    missing = []
    for name, line in lines.items():
        command = root
        for part in name.split():
            command = command.get_command(context, part)
        documented = set(re.findall(r"--[a-z][\w-]*", line))
        missing += [f"{name}: {p.opts[0]}" for p in command.params
                    if p.opts[0] != "--config" and not documented & {*p.opts, *p.secondary_opts}]
    assert sorted(lines) == ["cases export", "report", "score"] and missing == []


@pytest.mark.slow  # four CLI runs (call-out lists, scores, a report with its PDF) while readers hold the earlier files
def test_outputs_others_pick_up_are_replaced_whole_never_rewritten_in_place(city, tmp_path):
    """The call-out list (the file the call-out system picks up), the score sheets and the report files were written
    in place: a Ctrl-C or a full disk half way left a truncated file that looked complete, and a reader that had the
    earlier file open read the new one half written. Each is written beside its name and renamed onto it: a reader of
    the earlier file reads it whole to the end, the new file is whole, and nothing else is left in the folder."""
    settings = _settings(city)
    report_dir, score_dir, list_dir = tmp_path / "report", tmp_path / "scores", tmp_path / "lists"
    outputs = [list_dir / "calls.csv", list_dir / "calls.xlsx", score_dir / "scores-2026-11-squad.xlsx",
               score_dir / "scores-2026-11-squad.json", *(report_dir / name for name in ("report.pdf", "report.html",
                                                                                       "report.xlsx", "report.json"))]
    for path in outputs:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"yesterday's " + path.name.encode() + b"\n" * 100_000)
    readers = [path.open("rb") for path in outputs]  # a pick-up under way
    try:
        for args in (["callout", "export", str(list_dir / "calls.csv")], ["callout", "export", str(list_dir / "calls.xlsx")],
                     ["score", "--period", "2026-11", "--by", "squad", "--out", str(score_dir)],
                     ["report", "--period", "month", "--date", "2026-11-15", "--out", str(report_dir)]):
            done = _cli(*args, "--config", settings)
            assert done.returncode == 0, done.stderr
        for path, reader in zip(outputs, readers):
            assert reader.read() == b"yesterday's " + path.name.encode() + b"\n" * 100_000, path
            assert not path.read_bytes().startswith(b"yesterday's"), path
    finally:
        for reader in readers:
            reader.close()
    listed = list(csv.reader(io.StringIO((list_dir / "calls.csv").read_text(encoding="utf-8-sig"))))
    assert len(listed) > 1 and load_workbook(list_dir / "calls.xlsx")["追呼清单"].max_row == len(listed)
    for folder, names in ((list_dir, ["calls.csv", "calls.xlsx"]), (score_dir, ["scores-2026-11-squad.json", "scores-2026-11-squad.xlsx"]),
                          (report_dir, ["report.html", "report.json", "report.pdf", "report.xlsx"])):
        assert sorted(p.name for p in folder.iterdir()) == names
    assert json.loads((score_dir / "scores-2026-11-squad.json").read_text(encoding="utf-8"))
    assert len(PdfReader(report_dir / "report.pdf").pages) == len(PAGES)


def test_repeat_shops_are_named_as_people_name_them(tmp_path):
    """The repeat shops table showed the scores' grouping keys, `shop:老王面馆` and `zone:cam-01/frontage-a`: the shop
    a case names goes by its name, a camera's frontage zone as the hot spots name a camera and its zone."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for day in (3, 4):
        named = make.add("shopfront_spillover", G1, local(day, 9))
        store.update(named, details={**store.get(named).details, "shop": "老王面馆"})
        make.add("shopfront_spillover", G1, local(day, 10), camera="cam-01", zone="frontage-a")
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    report = build_report(store.engine, places, load_taxonomy(), NOV, TZ)
    store.close()
    assert sorted(row[0] for row in report.tables["repeat_shops"].rows) == ["摄像头 cam-01 · frontage-a", "老王面馆"]


def test_a_days_charts_count_cases_in_whole_numbers(tmp_path):
    """A day's report has a few cases: its charts counted them on axes of 0.25, 0.5 … 1.75 件, and the previous
    day's bars had no number (the legend lay over the bottom one). Ticks are whole cases; both periods' bars are
    numbered. Hours to close keep their fractions."""
    from pipelines.analytics import charts
    from pipelines.analytics.report import _figures

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    make = CaseMaker(store)
    for hour in (9, 10):
        make.add("street_stall", G1, local(3, hour))
    make.add("flyposting", G2, local(4, 9))
    make.add("street_stall", G1, local(4, 10))
    places = load_places(AnalyticsConfig(grid=write_grid(tmp_path / "grid.geojson")))
    report = build_report(store.engine, places, load_taxonomy(), parse_period("2026-11-04"), TZ)
    store.close()
    with charts.style(report.font):
        figures = {key: fig for key, _, fig in _figures(report)}
    by_type = figures["by_type"].axes[0]
    assert [t for t in by_type.get_xticks() if t != int(t)] == []
    assert [t for t in figures["by_hour"].axes[0].get_yticks() if t != int(t)] == []
    assert [t for t in figures["by_day"].axes[0].get_yticks() if t != int(t)] == []
    assert sorted(t.get_text() for t in by_type.texts) == ["0", "1", "1", "2"]  # this day: stall 1, flyposting 1; the day before: stall 2, flyposting 0
