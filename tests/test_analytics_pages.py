"""The map, scores and reports pages in headless Chromium against `streetwatch serve` (no internet: every
non-loopback name is unresolvable, so the map draws the city's own polygons with the vendored Leaflet)."""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from detect.taxonomy import load_taxonomy
from pipelines.analytics.periods import parse_period
from pipelines.analytics.places import load_places
from pipelines.analytics.report import build_report, write_report
from pipelines.cases.states import CaseState
from pipelines.cases.store import CaseQuery
from tests.analytics_helpers import G1, G2, G3, G4, TZ, CaseMaker, cell_polygon, november, write_grid, write_zones
from tests.api_helpers import make_app, settings_for
from tests.conftest import CHROMIUM, REPO, start_server, stop_process
from tests.pg import free_port
from tests.test_pages_phone import WORDS_BROKEN
from tests.test_review_pages import CHROMEDRIVER, FLAGS, _first_answer_held, _release_first, _wait

# every test here drives headless Chromium against a served page (33 s in all in CI); test_review_pages keeps the pages' browser checks in the default suite's ~15-minute budget
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are needed: run scripts/install-system-deps.sh")
    tmp = tmp_path_factory.mktemp("analytics-pages")
    settings = settings_for(tmp)
    settings.analytics.grid = write_grid(tmp / "grid.geojson")
    settings.analytics.zones = write_zones(tmp / "zones.geojson")
    settings.analytics.reports_dir = tmp / "reports"
    app, tokens = make_app(settings, resume_jobs=False)
    store = app.state.ctx.store
    settings.analytics.cutoffs = november(CaseMaker(store), tmp)
    write_report(build_report(store.engine, load_places(settings.analytics), load_taxonomy(), parse_period("2026-11"), TZ),
                 settings.analytics.reports_dir / "month-2026-11")
    start, end = parse_period("2026-11").bounds(TZ)
    g1_cases = {c.id for c in store.search(CaseQuery(grid_cell=G1, since=start, until=end, limit=500))[0]}
    # every case the map counts (all but the rejected one), when it was opened
    opened = {c.id: c.opened_at for c in store.search(CaseQuery(limit=500))[0] if c.state is not CaseState.REJECTED}
    app.state.ctx.close()
    with _served(settings, tokens["reviewer"], tmp) as (base, browser):
        yield {"base": base, "browser": browser, "g1_cases": g1_cases, "opened": opened, "downloads": tmp / "downloads",
               "cutoffs": settings.analytics.cutoffs}


@contextmanager
def _served(settings, token: str, tmp: Path):
    """`streetwatch serve` of `settings` on loopback and headless Chromium signed in with `token`: (base URL, browser);
    downloads go to tmp/downloads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    config = tmp / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json"), allow_unicode=True), encoding="utf-8")
    port = free_port()
    server = start_server([sys.executable, "-m", "streetwatch.cli", "serve", "--port", str(port), "--config", str(config)],
                          "127.0.0.1", port, tmp / "serve.log", timeout_s=60, cwd=REPO, env=dict(os.environ))
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, log_output=str(tmp / "chromedriver.log")))
        try:
            base = f"http://127.0.0.1:{port}"
            browser.get(base + "/ui/login")  # the token lives in the page origin's localStorage
            browser.execute_script("localStorage.setItem('sw_token', arguments[0]);", token)
            browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp / "downloads")})
            yield base, browser
        finally:
            browser.quit()
    finally:
        stop_process(server)


def test_map_shows_the_grid_cells_and_a_click_lists_their_cases(site):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/map")
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map path.sw-cell")) == 4, "the four grid cells on the map")
    assert len(b.find_elements(By.CSS_SELECTOR, "#map path.sw-zone")) == 1
    assert not b.find_elements(By.CSS_SELECTOR, "#map img.leaflet-tile")  # no tile URL configured: polygons only
    b.find_element(By.ID, "f-period").send_keys("2026-11")
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    _wait(b, lambda d: "件 cases" in d.find_element(By.ID, "status").text, "the map's counts")

    def fills(d) -> dict[str, str]:  # read again when the page redraws a cell between finding and reading it
        return {cell: d.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{cell}").get_attribute("fill") for cell in (G1, G3)}

    fill = _wait(b, lambda d: (f := fills(d))[G3] == "#a50f15" and f, "G3, which has the most cases, drawn darkest")
    assert fill[G1] != fill[G3]
    # The no-vending zone covers the cell's lower half: click its upper half, as a person would to pick the cell.
    cell = b.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G1}")
    ActionChains(b).move_to_element_with_offset(cell, 0, -cell.size["height"] // 3).click().perform()
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#feature-cases li")) == len(site["g1_cases"]), "G1's cases listed")
    listed = {li.get_attribute("data-case") for li in b.find_elements(By.CSS_SELECTOR, "#feature-cases li")}
    assert listed == site["g1_cases"]
    states = [s.text for s in b.find_elements(By.CSS_SELECTOR, "#feature-cases li .state")]
    assert states and all(re.match(r"^[\u4e00-\u9fff]+ [a-z_]+$", s) for s in states), states  # "待审核 candidate", as staff read it
    assert "文新街道" in b.find_element(By.CSS_SELECTOR, "#feature h2").text
    assert "selected" in b.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G1}").get_attribute("class")


def test_a_map_cells_cases_are_those_of_the_map_drawn(site):
    """A cell's click listed its cases under the filter boxes as they were at the click: a period changed without 筛选
    listed another period's cases (none) beside the counts drawn. It lists them under the filter of the map drawn."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/map")
    period = _wait(b, lambda d: d.find_element(By.ID, "f-period"), "the period box")
    period.send_keys("2026-11")
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    _wait(b, lambda d: "件 cases" in d.find_element(By.ID, "status").text and "since" not in d.find_element(By.ID, "status").text,
          "November's counts")
    period.clear()
    period.send_keys("2025-01")  # not submitted: the map still shows November
    cell = b.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G1}")
    ActionChains(b).move_to_element_with_offset(cell, 0, -cell.size["height"] // 3).click().perform()
    total = _wait(b, lambda d: d.find_element(By.ID, "feature-total"), "G1's cases listed")
    assert total.text.startswith(f"{len(site['g1_cases'])} 件 cases"), total.text
    assert {li.get_attribute("data-case") for li in b.find_elements(By.CSS_SELECTOR, "#feature-cases li")} == site["g1_cases"]


def test_map_says_what_its_counts_are_of(site):
    """Without a period the map counts the last analytics.map_days days, and at most analytics.map_max_cases cases: the
    status line names the first day counted, and says when the service counted only the newest (the answer's
    `truncated`, set here on the service's real answer: the cap is tested against a real store in test_analytics_api)."""
    from datetime import datetime, timedelta

    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/map")
    since = (datetime.now(TZ).date() - timedelta(days=29)).isoformat()
    status = _wait(b, lambda d: "件 cases" in (t := d.find_element(By.ID, "status").text) and t, "the map's counts")
    assert f"{since} 起 since {since}" in status and "仅统计" not in status
    b.execute_script("""const real = window.fetch;
      window.fetch = (url, opts) => String(url).includes('/api/v1/map?') ? real(url, opts).then((r) => r.json())
        .then((d) => new Response(JSON.stringify({...d, truncated: true}), {status: 200})) : real(url, opts);""")
    b.find_element(By.ID, "f-period").send_keys("2026-11")
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    status = _wait(b, lambda d: "仅统计最新" in (t := d.find_element(By.ID, "status").text) and t, "the notice that the count was cut")
    assert "起 since" not in status and "only the newest" in status
    assert "bad" in b.find_element(By.ID, "status").get_attribute("class")


LEGEND_CHECK = """
const wrong = [];
for (let max = 1; max <= 30; max++) {
  legend(max);
  const nodes = [...document.getElementById("legend").childNodes];
  const steps = nodes.flatMap((node, j) => node.tagName === "I" && j > 1 ? [[node.style.background, parseInt(nodes[j + 1].textContent)]] : []);
  if (steps.some(([, first], i) => i && first <= steps[i - 1][1])) wrong.push(`max ${max}: legend ${JSON.stringify(steps)}`);
  for (let n = 1; n <= max; n++) {
    const drawn = document.createElement("i");
    drawn.style.background = colour(n, max);
    const said = steps.filter(([, first]) => first <= n).pop();
    if (!said || said[0] !== drawn.style.background) wrong.push(`max ${max}: ${n} drawn ${drawn.style.background}, legend ${JSON.stringify(said)}`);
  }
}
return wrong;
"""


def test_map_legend_says_the_counts_each_colour_is_drawn_for(site):
    """The legend's lower bounds were one too low where the highest count divides by 5 (with 10, a 2 was drawn in the
    first colour while the legend started the second at 2+): for every highest count up to 30, each count's colour on
    the map is the legend's step that its number falls in, and no two steps show one number."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/map")
    _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#map path.sw-cell"), "the map drawn")
    assert b.execute_script(LEGEND_CHECK) == []


def _scores_by_squad(b, site, period: str) -> None:
    """Open the scores page and ask for `period` by squad. The page puts this month in the box once the city's clock is
    read: typed before, the two ran together."""
    from selenium.webdriver.common.by import By

    b.get(site["base"] + "/ui/scores")
    box = _wait(b, lambda d: d.find_element(By.ID, "f-period").get_attribute("value") and d.find_element(By.ID, "f-period"),
                "this month in the period box")
    box.clear()
    box.send_keys(period)
    b.find_element(By.CSS_SELECTOR, "#f-by option[value=squad]").click()
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()


def test_scores_page_shows_the_table_and_the_cases_behind_a_deduction(site):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    b = site["browser"]
    _scores_by_squad(b, site, "2026-11")
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#scores tbody tr")) == 2, "two squads scored")
    scores = {r.get_attribute("data-unit"): r.find_element(By.CSS_SELECTOR, "td.score").text
              for r in b.find_elements(By.CSS_SELECTOR, "#scores tbody tr")}
    assert scores == {"一中队": "42", "二中队": "26"}
    assert b.find_element(By.CSS_SELECTOR, "#scores thead th").text == "中队 squad"  # the unit in Chinese too
    b.find_element(By.CSS_SELECTOR, "#scores tr[data-unit='一中队']").click()
    market = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#unit li[data-item=road_market]"), "the unit's deductions")
    assert "−5 (1)" in market.text and len(market.find_element(By.CSS_SELECTOR, "small.cases").text.split(", ")) == 3
    # by keyboard (the rows opened by mouse only): Tab from the row clicked to the next, Enter shows that unit
    ActionChains(b).send_keys(Keys.TAB).perform()
    assert b.execute_script("return document.activeElement.dataset.unit;") == "二中队"
    ActionChains(b).send_keys(Keys.ENTER).perform()
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#unit h2").text.startswith("二中队: 26"), "二中队's deductions")
    assert b.find_element(By.CSS_SELECTOR, "#scores tr.current").get_attribute("data-unit") == "二中队"


def test_a_scored_item_s_cases_are_whole_on_a_phone(site):
    """A scored item's cases (SW20261103-1a2b3c4d5e6f, …) were broken anywhere (break-all), an id split over two lines
    on a phone where a reviewer reads it to find the case, and an item's name inside a word (每处 / 扣). At 360 px each
    id is on one line, as the table's headings and the words of the unit's headings and items (WORDS_BROKEN), the page
    no wider than the screen."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    try:
        _scores_by_squad(b, site, "2026-11")
        _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#scores tr[data-unit='一中队']"), "一中队 scored")[0].click()
        _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#unit small.cases"), "the unit's cases")
        assert b.execute_script(WORDS_BROKEN) == [] and b.execute_script("return document.documentElement.scrollWidth") == 360
    finally:
        b.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_scores_page_lists_the_cutoff_files_warnings(site):
    """The cut-off file's warnings (a row repeating the header, skipped) were in the JSON alone, which staff do not
    read: the page lists them above the table, 提醒 first as the city page's imports, and its status line counts them."""
    from selenium.webdriver.common.by import By

    cutoffs = site["cutoffs"]
    kept = cutoffs.read_bytes()
    b = site["browser"]
    try:
        cutoffs.write_bytes(kept + "号码,停机时间\n".encode("utf-8"))  # the server reads the file at each scoring
        b.get(site["base"] + "/ui/scores")  # this month scored: the warning is the file's, whatever the period
        listed = _wait(b, lambda d: [li.text for li in d.find_elements(By.CSS_SELECTOR, "#warnings li")], "the warnings listed")
    finally:
        cutoffs.write_bytes(kept)
    assert listed == ["提醒 analytics.cutoffs 第 11 行与表头相同，已跳过 — analytics.cutoffs: row 11 repeats the header, skipped"]
    assert "1 条提醒 to check" in b.find_element(By.ID, "status").text
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()  # the file as it was: nothing to check
    _wait(b, lambda d: not d.find_elements(By.CSS_SELECTOR, "#warnings li") and "提醒" not in d.find_element(By.ID, "status").text,
          "the warnings gone")


def test_scores_page_says_when_there_is_no_unit_to_score(site):
    """A period with no case counted, scored by a unit none is configured for, showed the table's head alone, which
    reads like a page that did not load; a row across the table says there is none, as the city page's tables do."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/scores")
    _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#scores thead th"), "this month scored")
    period = b.find_element(By.ID, "f-period")
    period.clear()
    period.send_keys("2025-01")
    b.find_element(By.CSS_SELECTOR, "#f-by option[value=camera]").click()
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    _wait(b, lambda d: "2025-01" in d.find_element(By.ID, "sheet").text, "January 2025 scored")
    rows = b.find_elements(By.CSS_SELECTOR, "#scores tbody tr")
    assert [r.text for r in rows] == ["没有可评分的单位：本期没有计分案件，也没有配置单位 No units: no case counted this period and none configured"]
    columns = len(b.find_elements(By.CSS_SELECTOR, "#scores thead th"))
    assert rows[0].find_element(By.TAG_NAME, "td").get_attribute("colspan") == str(columns) and columns > 2


def test_scores_page_says_how_many_cases_await_review(site):
    """November's unreviewed candidate is not scored (the sheet counts confirmed cases): the line over the table says so,
    as the command does; a month of unreviewed cases scored as an empty table before, a month without violations."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/scores")
    period = _wait(b, lambda d: d.find_element(By.ID, "f-period").get_attribute("value") and d.find_element(By.ID, "f-period"),
                   "this month in the period box")
    period.clear()
    period.send_keys("2026-11")
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    sheet = _wait(b, lambda d: "2026-11" in d.find_element(By.ID, "sheet").text and d.find_element(By.ID, "sheet").text,
                  "November scored")
    assert "待审核 1 件（未计分，请先审核） awaiting review, not scored" in sheet


def test_scores_pager_pages_the_table_shown(site):
    """上一页/下一页 read the period and unit boxes as they were when clicked: a box changed without 评分 had the next page
    load the new filter's units under the table shown. They page the table scored. SW.PAGE is set to 2 on the page, so
    the four grid cells make two pages (205 cells are paged in test_review_pages, with a server of their own)."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/scores")
    period = _wait(b, lambda d: d.find_element(By.ID, "f-period").get_attribute("value") and d.find_element(By.ID, "f-period"),
                   "this month in the period box")
    b.execute_script("SW.PAGE = 2;")
    period.clear()
    period.send_keys("2026-11")
    b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    pager = b.find_element(By.ID, "scores-pager")
    _wait(b, lambda d: "第 1–2 条，共 4 条" in pager.text and "2026-11" in d.find_element(By.ID, "sheet").text, "the first two cells")
    first = [r.get_attribute("data-unit") for r in b.find_elements(By.CSS_SELECTOR, "#scores tbody tr")]
    period.clear()
    period.send_keys("2025-01")
    b.find_element(By.CSS_SELECTOR, "#f-by option[value=squad]").click()
    pager.find_element(By.CLASS_NAME, "next").click()
    _wait(b, lambda d: "第 3–4 条，共 4 条" in pager.text, "the last two cells")
    second = [r.get_attribute("data-unit") for r in b.find_elements(By.CSS_SELECTOR, "#scores tbody tr")]
    assert sorted(first + second) == [G1, G2, G3, G4]
    assert "2026-11" in b.find_element(By.ID, "sheet").text
    assert b.find_element(By.CSS_SELECTOR, "#scores thead th").text == "网格 grid"


def test_scores_page_keeps_the_table_asked_for_when_its_first_load_answers_late(site):
    """The page's own first load (this month by grid) answering after the one the reader submitted drew this month's
    table over it (a rare failure of the scores test above): a load overtaken is dropped (SW.newest), the table asked
    for stays."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    with _first_answer_held(b, "/api/v1/scores?"):
        _scores_by_squad(b, site, "2026-11")
        _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#scores tbody tr")) == 2, "two squads scored")
        _release_first(b)
    assert [r.get_attribute("data-unit") for r in b.find_elements(By.CSS_SELECTOR, "#scores tbody tr")] == ["一中队", "二中队"]
    assert "2026-11" in b.find_element(By.ID, "sheet").text
    assert b.find_element(By.CSS_SELECTOR, "#scores thead th").text == "中队 squad"


def test_map_keeps_the_counts_asked_for_when_its_first_load_answers_late(site):
    """The map's own first load (the last analytics.map_days days) answering after the period the reader submitted
    drew those days' counts over it: dropped as the scores page's (SW.newest), the period's counts stay."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    with _first_answer_held(b, "/api/v1/map?"):
        b.get(site["base"] + "/ui/map")
        _wait(b, lambda d: d.execute_script("return typeof window.releaseFirst === 'function';"), "the map's first load asked")
        b.find_element(By.ID, "f-period").send_keys("2026-11")
        b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        _wait(b, lambda d: "件 cases" in d.find_element(By.ID, "status").text, "the period's counts")
        _release_first(b)
    status = b.find_element(By.ID, "status").text
    assert "件 cases" in status and "起 since" not in status, status
    assert b.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G3}").get_attribute("fill") == "#a50f15"


def test_reports_page_lists_the_latest_report(site):
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/reports")
    row = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#reports tr[data-report='month-2026-11']"), "the report's row")
    assert "月通报 2026-11" in row.text
    assert row.find_elements(By.TAG_NAME, "td")[1].text == "2026-11-01 – 2026-11-30"  # its last day, not December's first
    assert [e.get_attribute("data-file") for e in row.find_elements(By.CSS_SELECTOR, "button")] == [
        "report.html", "report.pdf", "report.xlsx", "report.json"]


def test_review_pages_export_the_filtered_cases(site):
    """The map's export buttons (period and type) and the queue's (its type filter; no state = unreviewed)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    b, folder = site["browser"], site["downloads"]
    b.get(site["base"] + "/ui/map")
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#f-type option")) > 1, "the type filter")
    # no state chosen is what the map counts and exports, every state but rejected: its box says so, not 全部 All
    assert Select(b.find_element(By.ID, "f-state")).first_selected_option.text == "全部（不含已作废） All but rejected"
    b.find_element(By.ID, "f-period").send_keys("2026-11")
    Select(b.find_element(By.ID, "f-type")).select_by_value("flyposting")
    b.find_element(By.ID, "export-csv").click()
    _wait(b, lambda d: (folder / "cases-2026-11.csv").is_file(), "the CSV download")
    rows = (folder / "cases-2026-11.csv").read_text(encoding="utf-8-sig").splitlines()
    # what the map counts: the 4 spots, not the rejected one (a false alarm), nor October's
    assert len(rows) == 1 + 4 and all(",flyposting," in r and ",rejected," not in r for r in rows[1:])
    b.get(site["base"] + "/ui/queue")
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#f-type option")) > 1, "the queue's filters")
    Select(b.find_element(By.ID, "f-type")).select_by_value("street_stall")
    b.find_element(By.ID, "export-xlsx").click()
    _wait(b, lambda d: (folder / "cases-all.xlsx").is_file() and not list(folder.glob("*.crdownload")), "the Excel download")
    from openpyxl import load_workbook

    sheet = list(load_workbook(folder / "cases-all.xlsx").active.iter_rows(values_only=True))
    # What the queue shows: unreviewed candidates (the one in G2), not the approved ones still in `candidate`.
    review = next(i for i, name in enumerate(sheet[0]) if name == "审核 review")  # by its header, not a place
    assert len(sheet) == 2 and sheet[1][1:4] == ("street_stall", "占道经营 / 无照经营游商", "candidate") and sheet[1][review] is None  # not reviewed yet


def test_the_maps_export_covers_the_days_the_map_shows(site):
    """Without a period the map counts the last analytics.map_days days, but its export buttons sent no period and
    exported every case ever held: they export from the map's first day (its `since`), and the page says which
    period an export covers (then the period typed, once there is one)."""
    import csv
    from datetime import datetime, timedelta

    from selenium.webdriver.common.by import By

    b, folder = site["browser"], site["downloads"]
    b.get(site["base"] + "/ui/map")
    since = (datetime.now(TZ).date() - timedelta(days=29)).isoformat()
    _wait(b, lambda d: f"since {since}" in d.find_element(By.ID, "status").text, "the map's counts")
    scope = b.find_element(By.ID, "export-scope").text
    assert scope == f"导出 {since} 起的案件（地图默认期间）Exports the cases since {since} (the map's default days)"
    b.find_element(By.ID, "export-csv").click()
    exported = folder / f"cases-since-{since}.csv"
    _wait(b, lambda d: exported.is_file(), "the CSV download")
    with exported.open(encoding="utf-8-sig", newline="") as f:
        ids = {row["案件编号 id"] for row in csv.DictReader(f)}
    shown = {i for i, at in site["opened"].items() if at.astimezone(TZ).date().isoformat() >= since}
    assert ids == shown and ids != set(site["opened"])  # the days the map counts, not October's case nor any before
    b.find_element(By.ID, "f-period").send_keys("2026-11")
    assert b.find_element(By.ID, "export-scope").text == "导出期间 Exports period 2026-11"


def test_a_cells_list_says_when_only_the_newest_cases_were_looked_at(site):
    """A cell's list is of the map's newest analytics.map_max_cases cases, as the map counts; when the map cut
    (`truncated`, set here on the service's real answer: the cap is tested against a real store in test_analytics_api)
    the list says so, naming the cap, and a list shorter than its total (500 listed) says which it shows of how many."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/map")
    cell = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G3}"), "a grid cell on the map")
    b.execute_script("""const real = window.fetch;
      window.fetch = (url, opts) => String(url).includes('/api/v1/map/cases') ? real(url, opts).then((r) => r.json())
        .then((d) => new Response(JSON.stringify({...d, truncated: true, total: d.items.length + 3}), {status: 200}))
        : real(url, opts);""")
    ActionChains(b).move_to_element_with_offset(cell, 0, -cell.size["height"] // 3).click().perform()
    total = _wait(b, lambda d: d.find_element(By.ID, "feature-total"), "the cell's list")
    n = len(b.find_elements(By.CSS_SELECTOR, "#feature-cases li"))
    assert n and total.text == (f"前 {n} 条，共 {n + 3} 条 newest {n} of {n + 3} · 仅统计全图最新 20000 件，请缩短期间或收窄筛选 "
                                "only the map's newest 20000 counted: choose a shorter period or a narrower filter")
    assert "bad" in total.get_attribute("class")


def test_map_says_when_a_cells_cases_do_not_load(site):
    """A click on a cell whose case list answers 503 says so in the list's place, not "loading" for ever."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(site["base"] + "/ui/map")
    cell = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G3}"), "a grid cell on the map")
    b.execute_script("""const real = window.fetch;
      window.fetch = (url, opts) => String(url).includes('/api/v1/map/cases')
        ? Promise.resolve(new Response(JSON.stringify({detail: 'busy'}), {status: 503})) : real(url, opts);""")
    ActionChains(b).move_to_element_with_offset(cell, 0, -cell.size["height"] // 3).click().perform()
    _wait(b, lambda d: "503: busy" in d.find_element(By.ID, "feature").text, "the failure in the cell's list")
    assert "loading" not in b.find_element(By.ID, "feature").text
    assert "503: busy" in b.find_element(By.ID, "status").text


def test_map_shows_names_from_the_grid_file_and_the_tile_credit_as_text(tmp_path):
    """The map's tooltips and tile credit were written as HTML: a grid file (or settings) whose cell name was
    <img src=x onerror=...> ran its script in every reviewer's browser that hovered the cell. They are text."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    hostile = "<img src=x onerror=\"window.ranFrom='{}'\">"
    grid = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [cell_polygon(0)]},
         "properties": {"id": G1, "name": hostile.format("cell"), "street": "文新街道", "squad": "一中队"}}]}
    settings = settings_for(tmp_path)
    settings.analytics.grid = tmp_path / "grid.geojson"
    settings.analytics.grid.write_text(json.dumps(grid, ensure_ascii=False), encoding="utf-8")
    settings.analytics.tile_url = "http://127.0.0.1:9/{z}/{x}/{y}.png"  # nothing answers there: the credit is drawn all the same
    settings.analytics.tile_attribution = hostile.format("attribution") + " © 城市底图"
    app, tokens = make_app(settings, resume_jobs=False)
    app.state.ctx.close()
    with _served(settings, tokens["reviewer"], tmp_path) as (base, b):
        b.get(base + "/ui/map")
        cell = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G1}"), "the cell on the map")
        ActionChains(b).move_to_element(cell).perform()
        tooltip = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, ".leaflet-tooltip"), "the cell's tooltip")
        assert tooltip.text == f"网格 {G1} {hostile.format('cell')} · 文新街道 · 一中队 · 0 件"
        credit = b.find_element(By.CSS_SELECTOR, ".leaflet-control-attribution").text
        assert hostile.format("attribution") + " © 城市底图" in credit, credit
        assert not b.find_elements(By.CSS_SELECTOR, "#map img[src=x]")
        assert b.execute_script("return window.ranFrom") is None
