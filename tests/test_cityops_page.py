"""The /ui/city page in headless Chromium against `streetwatch serve`: register import with its row errors,
the warnings and the call-out list as city staff read them."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest

from detect.evidence.builder import BundleContext
from detect.frames import GeoPoint
from detect.taxonomy import load_taxonomy
from pipelines.cctv.config import load_cameras
from pipelines.cityops.callout import CallOutList, Status
from pipelines.cityops.warnings import Warner
from pipelines.settings import WarnConfig
from tests.api_helpers import auth
from tests.cctv_helpers import ts_copy
from tests.test_cityops_api import _intake
from tests.test_cityops_patrol import START, _fixes, clip, write_gpx  # noqa: F401  (fixture)
from tests.test_cityops_registers import REGISTER
from tests.test_pages_screen_reader import _ax
from tests.test_review_pages import _first_answer_held, _first_page_then_next, _login, _release_first, _wait, served_pages, site, site_settings  # noqa: F401  (fixture)

# every test here drives headless Chromium against a served page (65 s in all in CI); test_review_pages keeps the pages' browser checks in the default suite's ~15-minute budget
pytestmark = pytest.mark.slow

NUMBER = "13800138000"


def test_city_page_imports_the_register_and_shows_bad_rows(site, tmp_path):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    b = site["browser"]
    _login(site)
    b.find_element(By.CSS_SELECTOR, "nav a[href='/ui/city']").click()  # reached from the other pages' navigation
    _wait(b, lambda d: urlsplit(d.current_url).path == "/ui/city", "the city page")
    assert b.find_element(By.CSS_SELECTOR, "nav a.active").text == "城市管理 City workflows"
    # empty tables say so (an empty register asks for an import), rather than look like a page that did not load
    _wait(b, lambda d: "import a CSV or Excel file" in d.find_element(By.CSS_SELECTOR, "#shops tbody tr.none").text, "the empty register")
    register = tmp_path / "shops.csv"
    register.write_bytes(REGISTER.encode("gbk"))  # a plain "CSV" from Excel or WPS on a Chinese Windows
    b.find_element(By.CSS_SELECTOR, "#shops-import input[type=file]").send_keys(str(register))
    b.find_element(By.CSS_SELECTOR, "#shops-import button").click()
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#shops tbody tr")) == 2, "two imported shops")
    errors = [li.text for li in b.find_elements(By.CSS_SELECTOR, "#import-errors li")]
    assert len(errors) == 4 and "row 5: polygon: no usable frontage" in errors[0]
    assert errors[0].startswith("shops.csv 第 5 行「图像范围」：没有可用的门前范围")  # staff read Chinese first
    # GBK under an English header reads as Windows-1252 too: the page says which it was read as, quoting a cell both ways
    assert errors[3].startswith("提醒 shops.csv：已按 GB18030 (GBK) 编码读取（“王记面馆”），但它也可按 Windows-1252 读取")
    assert "导入 2 家商户" in b.find_element(By.ID, "status").text

    b.find_element(By.CSS_SELECTOR, "#shops tbody tr[data-shop='91330106MA27XY0002']").click()
    box = b.find_element(By.ID, "shop-json")
    b.execute_script("const s = JSON.parse(arguments[0].value); s.contact = '李女士 13700002222'; arguments[0].value = JSON.stringify(s);", box)
    b.find_element(By.ID, "save-shop").click()
    _wait(b, lambda d: "已保存" in d.find_element(By.ID, "status").text, "the saved shop")
    shops = httpx.get(f"{site['base']}/api/v1/shops", headers=auth(site["token"]), timeout=10).json()["items"]
    assert next(s for s in shops if s["id"] == "91330106MA27XY0002")["contact"] == "李女士 13700002222"
    # by keyboard (a row opened by mouse only): Tab from the register's search reaches the first shop, Enter opens it
    b.execute_script("document.querySelector('#shops-search button').focus();")
    ActionChains(b).send_keys(Keys.TAB).perform()
    first = b.execute_script("return document.activeElement.dataset.shop;")
    assert first == b.find_element(By.CSS_SELECTOR, "#shops tbody tr").get_attribute("data-shop")
    ActionChains(b).send_keys(Keys.ENTER).perform()
    assert b.execute_script("return document.activeElement.id;") == "shop-json"
    assert json.loads(box.get_attribute("value"))["id"] == first
    assert b.find_element(By.CSS_SELECTOR, "#warnings tbody").text == "暂无劝导告知 No warnings yet"
    assert b.find_element(By.CSS_SELECTOR, "#callout tbody").text == "暂无号码 No numbers on the call-out list"

    # a phone number a spreadsheet kept as a number, with no way to tell its leading 0 back: imported, and said
    register.write_text("店名,联系电话,GPS范围\n赵记,5718765432,\"120.1,30.2; 120.2,30.2; 120.2,30.3\"\n", encoding="utf-8")
    b.find_element(By.CSS_SELECTOR, "#shops-import input[type=file]").send_keys(str(register))
    b.find_element(By.CSS_SELECTOR, "#shops-import button").click()
    _wait(b, lambda d: "1 行待核对" in d.find_element(By.ID, "status").text, "the import with a row to check")
    [warning] = [li.text for li in b.find_elements(By.CSS_SELECTOR, "#import-errors li")]
    assert warning.startswith("提醒 shops.csv 第 2 行「联系人」：5718765432 不是有效的电话号码")



@pytest.fixture(scope="module")
def city(tmp_path_factory, bus_event, bus_jpg):
    """The pages served with one warning, the bus parked in bus.jpg (2025-03-14 02:00 UTC) warned on cam-01, and
    one number on the call-out list, read on a flyposting case of that photo and fined 200 yuan."""
    tmp = tmp_path_factory.mktemp("city-page")
    settings = site_settings(tmp, bus_jpg)

    def prepare(app) -> None:
        event, _ = bus_event
        camera = load_cameras(settings.service.cameras_file).cameras[0]
        # a gateway that refuses (nothing listens on port 9): the warning is recorded as failed, with the reason
        warner = Warner(WarnConfig(rules=[{"types": ["illegal_parking"]}], images_dir=tmp / "warnings", attempts=1,
                                   webhook_url="http://127.0.0.1:9/sms"), _intake(app), load_taxonomy())
        warner.warn(camera, event, BundleContext(source_kind="camera", source_id=camera.id, geo=GeoPoint(30.2741, 120.1551),
                                                 address="文三路 1 号"))
        _intake(app).record_event(replace(event, violation_id="photo:0:flyposting", violation_type="flyposting", phones=[NUMBER]),
                                  BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551)))
        calls = CallOutList(app.state.ctx.store.engine)
        calls.sync()
        calls.set_status(NUMBER, Status.FINED, amount=200)

    with served_pages(tmp, settings, prepare) as served:
        yield served


def test_city_page_shows_warnings_as_staff_read_them(city):
    """The warning's type in Chinese with its id (it was the bare id, illegal_parking), and its times on the
    city's clock on a PC set to UTC."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    b.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
    try:
        _login(city)
        b.get(city["base"] + "/ui/city")
        row = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#warnings tbody tr[data-warning]"), "the warning")
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[2] == "机动车乱停放 illegal_parking", cells
        assert (cells[0], cells[5]) == ("2025-03-14 10:00", "2025-03-14 10:10"), cells  # warned, re-check 600 s later
        # the gateway's failure and why (the page said failed alone, though docs/city-operations.md said it showed why)
        assert cells[4].startswith("发送失败 failed\n") and "Connection refused" in cells[4], cells
    finally:
        b.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})


def test_a_warnings_view_button_says_which_warning(city):
    """Every warning's button was read "查看 View", with nothing saying which warning's frame it would show: a screen
    reader user going down the buttons heard the same word in each row. Each is named by its warning: its camera, type
    and time, after the words it shows."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#warnings tbody tr[data-warning] button"), "the warning's button")
    name = _ax(b, "#warnings tbody tr[data-warning] button")["name"]
    assert re.fullmatch(r"查看 View：劝导告知画面 warning frame cam-01 · 机动车乱停放 illegal_parking · \d{4}-\d\d-\d\d \d\d:\d\d", name), name


def test_a_patrol_job_waiting_for_the_case_store_says_what_its_api_answer_says(city):
    """A patrol job's phase names were the city page's own copy of the upload page's (SW.JOB_PHASES is both's), and a
    job waiting for the case store showed its phase's words alone, not the job's `waiting` sentence saying it goes on
    once the store is back and how long it waits: a job's row says that sentence while it waits."""
    from selenium.webdriver.common.by import By

    from api.jobs import STORE_WAITING

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    _wait(b, lambda d: d.find_element(By.ID, "patrol"), "the patrol form")
    waiting = {"progress": {"done": 3, "total": 15, "phase": "store"}, "waiting": STORE_WAITING}  # as the API answers
    assert b.execute_script("return patrolProgress(arguments[0]);", waiting) == f"3 / 15 帧 frames · {STORE_WAITING}"
    judging = {"progress": {"done": 3, "total": 15, "phase": "frames"}, "waiting": None}
    assert b.execute_script("return patrolProgress(arguments[0]);", judging) == "3 / 15 帧 frames · 识别画面 judging frames"


def test_city_page_shows_fines_in_yuan(city):
    """The call-out list's fine column said a bare 200; it says 200 元."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    row = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f"#callout tbody tr[data-number='{NUMBER}']"), "the fined number")
    assert row.find_elements(By.TAG_NAME, "td")[-1].text == "200 元"


def test_a_patrol_jobs_progress_says_the_frames_rate_and_time_left(city):
    """A patrol job's progress line said frames judged of those sampled only, the upload page's rate and time left
    beside its photos; while frames are judged it says theirs as that page does (SW.pace), in frames."""
    _login(city)
    b = city["browser"]
    b.get(city["base"] + "/ui/city")
    _wait(b, lambda d: d.execute_script("return typeof patrolProgress === 'function'"), "the city page's script")
    judging = {"state": "running", "waiting": None,  # a patrol job as the API answers while its frames are judged
               "progress": {"phase": "frames", "done": 530, "total": 1800, "rate": 0.5, "eta_s": 400}}
    assert b.execute_script("return patrolProgress(arguments[0])", judging) == \
        "530 / 1800 帧 frames · 识别画面 judging frames · 0.5 帧/秒 frames/s · 约剩 7 分钟 about 7 min left"


def test_a_call_out_search_is_kept_when_the_pages_first_list_answers_late(city):
    """The page's own first list of the call-out numbers answering after a search the reader submitted drew the whole
    list over the search's answer: a load overtaken is dropped (SW.newest, as on every paged list), the search's stays."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    with _first_answer_held(b, "/api/v1/callout?"):
        b.get(city["base"] + "/ui/city")
        _wait(b, lambda d: d.execute_script("return typeof window.releaseFirst === 'function';"), "the page's first list asked")
        b.find_element(By.ID, "callout-q").send_keys("13999")
        b.find_element(By.CSS_SELECTOR, "#callout-search button").click()
        _wait(b, lambda d: "没有含「13999」的号码" in d.find_element(By.CSS_SELECTOR, "#callout tbody").text, "the search's answer")
        _release_first(b)
    assert not b.find_elements(By.CSS_SELECTOR, "#callout tbody tr[data-number]")
    assert b.find_element(By.CSS_SELECTOR, "#callout tbody").text == "没有含「13999」的号码 No number holds 13999"


def test_the_register_pager_pages_the_search_shown(city):
    """The register's 上一页/下一页 read its search box as it was when clicked: text typed without 搜索 had the next page
    load its shops (none, and so the first page of none) under the search shown. They page the search shown (SW.pager,
    as the call-out list's). SW.PAGE is set to 2 on the page, so the search's three shops make two pages."""
    from selenium.webdriver.common.by import By

    rows = "".join(f'翻页商户{i},"120.1,30.2; 120.2,30.2; 120.2,30.3"\n' for i in range(3))
    imported = httpx.post(f"{city['base']}/api/v1/shops/import", headers=auth(city["token"]),
                          files={"file": ("shops.csv", f"name,gps_polygon\n{rows}".encode(), "text/csv")}, timeout=10)
    assert imported.status_code == 200 and imported.json()["imported"] == 3, imported.text
    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    pager = b.find_element(By.ID, "shops-pager")
    _wait(b, lambda d: "共" in pager.text, "the register")
    b.execute_script("SW.PAGE = 2;")
    b.find_element(By.ID, "shops-q").send_keys("翻页商户")
    b.find_element(By.CSS_SELECTOR, "#shops-search button").click()
    _wait(b, lambda d: "第 1–2 条，共 3 条" in pager.text, "the search's first two shops")

    def names(d) -> list[str]:
        return [r.find_elements(By.TAG_NAME, "td")[1].text for r in d.find_elements(By.CSS_SELECTOR, "#shops tbody tr[data-shop]")]

    first = names(b)
    b.find_element(By.ID, "shops-q").send_keys("没有")  # not searched
    pager.find_element(By.CLASS_NAME, "next").click()
    _wait(b, lambda d: "第 3–3 条，共 3 条" in pager.text, "the search's third shop")
    assert sorted(first + names(b)) == ["翻页商户0", "翻页商户1", "翻页商户2"]


def test_city_page_exports_the_call_out_list(city, tmp_path):
    """导出 CSV downloads the call-out list with the page's token, through SW.download (the page had a copy of its own,
    which never released the file's object URL)."""
    import csv

    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f"#callout tbody tr[data-number='{NUMBER}']"), "the fined number")
    b.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    b.find_element(By.ID, "export-csv").click()
    exported = tmp_path / "callout.csv"
    _wait(b, lambda d: exported.is_file() and not list(tmp_path.glob("*.crdownload")), "the CSV download")
    with exported.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert [row[:3] for row in rows[1:]] == [[f'="{NUMBER}"', "fined", "已罚款"]]  # the number kept as text for Excel


def test_city_page_shows_a_patrol_job_as_staff_read_it(city, clip, tmp_path):  # noqa: F811
    """The patrol result was the job's raw JSON (English keys and states); it is a short summary in Chinese with the
    English beside it, and a button opens the run's report. A dashcam's TS (no creation_time) goes with its start time,
    and the track is required."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    form = _wait(b, lambda d: d.find_element(By.ID, "patrol"), "the patrol form")
    assert form.find_element(By.CSS_SELECTOR, "input[name=track]").get_attribute("required") is not None  # the API answers 400 without
    form.find_element(By.CSS_SELECTOR, "input[name=video]").send_keys(str(ts_copy(clip, tmp_path / "行车 0310.ts", 100)))
    form.find_element(By.CSS_SELECTOR, "input[name=track]").send_keys(str(write_gpx(tmp_path / "drive.gpx", _fixes(START, 20))))
    b.execute_script("arguments[0].value = '2026-11-20T09:00:00';", form.find_element(By.CSS_SELECTOR, "input[name=start]"))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    state = _wait(b, lambda d: "完成 done" in d.find_element(By.CSS_SELECTOR, "#patrol-job p.state").text
                  and d.find_element(By.CSS_SELECTOR, "#patrol-job p.state"), "the finished patrol job", timeout=240)
    assert state.text == "行车 0310.ts · 完成 done"
    lines = [li.text for li in b.find_elements(By.CSS_SELECTOR, "#patrol-job li")]
    assert lines[0] == "抽取画面 Frames sampled: 11 (2026-11-20 09:00:00 – 2026-11-20 09:00:29 Asia/Shanghai)", lines
    assert lines[1] == "跳过 Skipped: 1 帧无定位，轨迹未覆盖 9.5 秒视频 frames without a position, 9.5 s of video the track does not cover", lines
    assert lines[2].startswith("发现违规 Violations found: "), lines
    assert lines[3].startswith("提示 Note: drive.gpx: the track does not cover the whole video"), lines
    assert "{" not in b.find_element(By.ID, "patrol-job").text

    # the run's report, which no route served: opened from the summary with the page's token
    page = b.current_window_handle
    b.find_element(By.ID, "patrol-report").click()
    report = _wait(b, lambda d: next((h for h in d.window_handles if h != page), None), "the report's tab")
    try:
        b.switch_to.window(report)
        _wait(b, lambda d: d.title == "巡查照片分拣报告 · Photo triage report", "the patrol report")
        assert b.find_element(By.CSS_SELECTOR, "figure[data-source^='frame-00000-']")
    finally:
        b.close()
        b.switch_to.window(page)


def test_a_patrol_video_on_a_slow_network_shows_its_upload_and_is_sent_once(city, clip, tmp_path):  # noqa: F811
    """The patrol form sent the video with fetch, which reports no progress: on a phone's network the page showed
    nothing until the whole video was in, and 上传 could be pressed again, sending it twice. The page shows the
    upload going (MB sent of the total) with the button disabled, saying 上传中, until the service has it."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    form = _wait(b, lambda d: d.find_element(By.ID, "patrol"), "the patrol form")
    form.find_element(By.CSS_SELECTOR, "input[name=video]").send_keys(str(clip))
    form.find_element(By.CSS_SELECTOR, "input[name=track]").send_keys(str(write_gpx(tmp_path / "slow.gpx", _fixes(START, 30))))
    size_mb = f"{clip.stat().st_size / 1048576:.1f}"
    button = form.find_element(By.CSS_SELECTOR, "button[type=submit]")
    b.execute_cdp_cmd("Network.enable", {})
    b.execute_cdp_cmd("Network.emulateNetworkConditions",  # a weak mobile uplink: 16 KB/s
                      {"offline": False, "latency": 100, "downloadThroughput": 200_000, "uploadThroughput": 16_000})
    try:
        button.click()
        _wait(b, lambda d: button.get_attribute("disabled") is not None and button.text == "上传中… Uploading…"
              and d.find_element(By.ID, "patrol-upload-text").text.endswith(f" / {size_mb} MB"), "the upload shown going")
    finally:
        b.execute_cdp_cmd("Network.emulateNetworkConditions",
                          {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    _wait(b, lambda d: "完成 done" in d.find_element(By.CSS_SELECTOR, "#patrol-job p.state").text, "the patrol job done", timeout=240)
    assert (button.get_attribute("disabled"), button.text) == (None, "上传 Upload")
    assert b.execute_script("return document.getElementById('patrol-progress').value") == 1
    assert b.find_element(By.ID, "patrol-upload-text").text == f"{size_mb} / {size_mb} MB"
    jobs = httpx.get(f"{city['base']}/api/v1/patrol/jobs", headers=auth(city["token"]), timeout=10).json()
    assert [j["video_label"] for j in jobs].count(clip.name) == 1


def test_city_page_says_what_became_of_a_patrol_jobs_evidence(city, clip, tmp_path):  # noqa: F811
    """A patrol job's summary has the evidence spool's news (its own bundles wait while storage is down), which the
    page said nothing of, as the upload page says it: 证据待上传 N 份."""
    from selenium.webdriver.common.by import By

    root = city["settings"].evidence_store.local_root
    aside = root.with_name("evidence-aside")
    root.rename(aside)
    root.write_text("a file where the evidence folder should be: every upload fails")
    try:
        b = city["browser"]
        _login(city)
        b.get(city["base"] + "/ui/city")
        form = _wait(b, lambda d: d.find_element(By.ID, "patrol"), "the patrol form")
        form.find_element(By.CSS_SELECTOR, "input[name=video]").send_keys(str(clip))
        # a kilometre east of the other patrols' bus: a case of its own, not the one they drafted (already open)
        track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30, east_m=1000))
        form.find_element(By.CSS_SELECTOR, "input[name=track]").send_keys(str(track))
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _wait(b, lambda d: "完成 done" in d.find_element(By.CSS_SELECTOR, "#patrol-job p.state").text, "the finished patrol job",
              timeout=240)
        lines = [li.text for li in b.find_elements(By.CSS_SELECTOR, "#patrol-job li")]
        found = next(line for line in lines if line.startswith("发现违规 Violations found: "))
        new = int(found.split("新案件 New cases: ")[1].split()[0])
        assert new and f"证据待上传 {new} 份 evidence waiting for storage" in lines, lines
    finally:
        root.unlink()
        aside.rename(root)


def test_city_page_lists_patrol_jobs_and_a_reload_finds_the_running_one(city, clip, tmp_path):  # noqa: F811
    """The page kept the job it had uploaded only in its own memory (there was no list of patrol jobs): reloaded while
    the job ran, it showed nothing of it. It lists the recent patrol jobs in Chinese, and a reload goes on following
    the one still running (sampling and judging take seconds, a reload a moment) to its summary and report."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    form = _wait(b, lambda d: d.find_element(By.ID, "patrol"), "the patrol form")
    headers = [th.text for th in b.find_elements(By.CSS_SELECTOR, "#patrol-jobs thead th")]
    assert headers == ["上传时间 Uploaded", "视频 Video", "开始时间 Start", "状态 State", "进度 Progress", "详情 Details"]
    form.find_element(By.CSS_SELECTOR, "input[name=video]").send_keys(str(ts_copy(clip, tmp_path / "巡查 重载.ts", 100)))
    form.find_element(By.CSS_SELECTOR, "input[name=track]").send_keys(str(write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))))
    b.execute_script("arguments[0].value = '2026-11-20T09:00:00';", form.find_element(By.CSS_SELECTOR, "input[name=start]"))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#patrol-job p.state").text.startswith("巡查 重载.ts · "), "the uploaded job")
    [job] = [j for j in httpx.get(f"{city['base']}/api/v1/patrol/jobs", headers=auth(city["token"]), timeout=10).json()
             if j["video_label"] == "巡查 重载.ts"]
    assert job["state"] in ("queued", "running"), job

    b.refresh()
    row = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f"#patrol-jobs tr[data-job='{job['id']}']"), "the job's row after the reload")
    assert [td.text for td in row.find_elements(By.TAG_NAME, "td")][1:3] == ["巡查 重载.ts", "2026-11-20 09:00"]
    # its 查看 View named by the job (each row's said the same)
    assert _ax(b, f"#patrol-jobs tr[data-job='{job['id']}'] button")["name"].startswith("查看 View：巡查任务 patrol job 巡查 重载.ts · ")
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#patrol-job p.state").text == "巡查 重载.ts · 完成 done",
          "the followed job's summary", timeout=240)
    row = b.find_element(By.CSS_SELECTOR, f"#patrol-jobs tr[data-job='{job['id']}']")
    assert [td.text for td in row.find_elements(By.TAG_NAME, "td")][3:5] == ["完成 done", "15 / 15 帧 frames · 完成 done"]
    assert b.find_element(By.CSS_SELECTOR, "#patrol-job li").text == "抽取画面 Frames sampled: 15 (2026-11-20 09:00:00 – 2026-11-20 09:00:29 Asia/Shanghai)"
    assert b.find_element(By.ID, "patrol-report").text == "巡查报告 Patrol report"


def test_the_patrol_start_is_typed_as_the_city_writes_a_time_and_checked_before_the_upload(city, clip, tmp_path):  # noqa: F811
    """The patrol form's 开始时间 was the browser's own date-time field, in the browser's language and clock: mm/dd/yyyy
    with AM/PM on an English browser, which city staff misread. It is typed as the API takes it, 2026-11-20 09:00 on the
    24-hour clock, with the format and zone said beside it; a start in another form or no such date is refused before
    the video is sent, the status line saying why in Chinese first, and a good one reaches the job as the city's time."""
    from selenium.webdriver.common.by import By

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    form = _wait(b, lambda d: d.find_element(By.ID, "patrol"), "the patrol form")
    hint = b.find_element(By.ID, "patrol-start-hint")
    assert hint.is_displayed() and hint.text.startswith("开始时间：年-月-日 时:分[:秒]，24 小时制"), hint.text
    video = ts_copy(clip, tmp_path / "开始时间.ts", 100)  # a dashcam's TS: no creation time, the start needed
    form.find_element(By.CSS_SELECTOR, "input[name=video]").send_keys(str(video))
    form.find_element(By.CSS_SELECTOR, "input[name=track]").send_keys(str(write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))))
    start = form.find_element(By.CSS_SELECTOR, "input[name=start]")

    def jobs() -> list[dict]:
        answer = httpx.get(f"{city['base']}/api/v1/patrol/jobs", headers=auth(city["token"]), timeout=10).json()
        return [j for j in answer if j["video_label"] == video.name]

    for typed, said in (("11/20/2026 9:00 AM", "开始时间「11/20/2026 9:00 AM」格式不对，请按 年-月-日 时:分[:秒] 填写"),
                        ("2026-02-30 09:00", "开始时间「2026-02-30 09:00」没有这个日期或时间")):
        start.clear()
        start.send_keys(typed)
        assert start.get_attribute("value") == typed
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _wait(b, lambda d: d.find_element(By.ID, "status").text.startswith(said), f"{typed!r} refused on the page")
        assert b.execute_script("return document.getElementById('patrol-progress').value") == 0  # nothing sent
        assert jobs() == []
    start.clear()
    start.send_keys("2026-11-20 09:00")
    assert start.get_attribute("value") == "2026-11-20 09:00"
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    job = _wait(b, lambda d: next((j for j in jobs() if j["state"] in ("done", "failed")), None), "the patrol job ended", timeout=240)
    assert (job["state"], job["start"]) == ("done", "2026-11-20T09:00:00+08:00"), job


def test_city_page_imports_a_sheet_in_the_encoding_chosen_beside_it(city, tmp_path):
    """A sheet GBK and Windows-1252 both read is read as one with a warning naming the other; on the page there was no
    way to read it as the other (only the CLI's `--encoding`). Each import has a select, 自动 / UTF-8 / GBK / cp1252,
    sent as the form field `encoding` that the API takes, validated as the CLI option is, and the warning names it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from pipelines.tables import SHEET_ENCODING_CHOICES

    headers = auth(city["token"])
    refused = httpx.post(f"{city['base']}/api/v1/shops/import", headers=headers, data={"encoding": "latin-9"},
                         files={"file": ("shops.csv", b"name\nx\n", "text/csv")}, timeout=10)
    assert refused.status_code == 422 and refused.json()["detail"] == (
        "编码 'latin-9' 不可用，请用 utf-8、gbk 或 cp1252 — encoding 'latin-9': use utf-8, gbk or cp1252"), refused.text
    assert "x" not in {s["name"] for s in httpx.get(f"{city['base']}/api/v1/shops", headers=headers, timeout=10).json()["items"]}

    b = city["browser"]
    _login(city)
    b.get(city["base"] + "/ui/city")
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f"#callout tbody tr[data-number='{NUMBER}']"), "the call-out list")
    for form in ("shops-import", "callout-import"):
        options = b.find_elements(By.CSS_SELECTOR, f"#{form} select[name=encoding] option")
        assert [(o.get_attribute("value"), o.text) for o in options] == [("", "自动"), *SHEET_ENCODING_CHOICES.values()]

    sheet = tmp_path / "shops.csv"  # one Windows-1252 row charset_normalizer takes for GBK
    sheet.write_bytes('name,gps_polygon\r\nGénéral,"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"\r\n'.encode("cp1252"))
    b.find_element(By.CSS_SELECTOR, "#shops-import input[type=file]").send_keys(str(sheet))
    b.find_element(By.CSS_SELECTOR, "#shops-import button").click()
    _wait(b, lambda d: "1 行待核对" in d.find_element(By.ID, "status").text, "the import with its warning")
    [warning] = [li.text for li in b.find_elements(By.CSS_SELECTOR, "#import-errors li")]
    assert warning.startswith("提醒 shops.csv：已按 GB18030 (GBK) 编码读取（“G閚閞al”），但它也可按 Windows-1252 读取（“Général”）；"
                              "若后者才对，请指定编码 cp1252 重新导入（命令行 --encoding cp1252，/ui/city 页面导入旁的“编码”选 cp1252）"), warning
    Select(b.find_element(By.CSS_SELECTOR, "#shops-import select[name=encoding]")).select_by_visible_text("cp1252")
    b.find_element(By.CSS_SELECTOR, "#shops-import input[type=file]").send_keys(str(sheet))
    b.find_element(By.CSS_SELECTOR, "#shops-import button").click()
    _wait(b, lambda d: "0 行待核对" in d.find_element(By.ID, "status").text, "the import read as Windows-1252")
    assert "Général" in {s["name"] for s in httpx.get(f"{city['base']}/api/v1/shops", headers=headers, timeout=10).json()["items"]}

    results = tmp_path / "results.csv"  # the fine as it is, with a note charset_normalizer reads as GBK alone
    results.write_bytes(f"number,status,amount,note\r\n{NUMBER},fined,200,Côte\r\n".encode("cp1252"))
    Select(b.find_element(By.CSS_SELECTOR, "#callout-import select[name=encoding]")).select_by_visible_text("cp1252")
    b.find_element(By.CSS_SELECTOR, "#callout-import input[type=file]").send_keys(str(results))
    b.find_element(By.CSS_SELECTOR, "#callout-import button").click()
    _wait(b, lambda d: "更新 1 个号码" in d.find_element(By.ID, "status").text, "the results read as Windows-1252")
    assert b.find_elements(By.CSS_SELECTOR, "#callout-errors li") == []
    [entry] = httpx.get(f"{city['base']}/api/v1/callout", headers=headers, timeout=10).json()["items"]
    assert (entry["note"], entry["amount"]) == ("Côte", 200)


def test_a_patrol_done_without_cases_says_why_on_the_status_line(tmp_path, bus_jpg, clip):  # noqa: F811
    """With no evidence key set (`service.triage.cases` unset) a patrol job ends done with its report and no case;
    the status line said only 巡查完成 Patrol done: 0 件新案件 new cases, the reason (the summary's `no_cases`) said
    only in the list below it. The status line says it too, as a warning."""
    from selenium.webdriver.common.by import By

    settings = site_settings(tmp_path, bus_jpg)
    settings.evidence.hmac_key_env = "STREETWATCH_TEST_KEY_NOT_SET"  # the served process has no such variable
    with served_pages(tmp_path, settings, lambda app: None) as served:
        b = served["browser"]
        _login(served)
        b.get(served["base"] + "/ui/city")
        form = _wait(b, lambda d: d.find_element(By.ID, "patrol"), "the patrol form")
        form.find_element(By.CSS_SELECTOR, "input[name=video]").send_keys(str(clip))
        form.find_element(By.CSS_SELECTOR, "input[name=track]").send_keys(str(write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))))
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        status = _wait(b, lambda d: d.find_element(By.ID, "status").text.startswith("巡查完成 Patrol done")
                       and d.find_element(By.ID, "status"), "the patrol done", timeout=240)
        found = next(li.text for li in b.find_elements(By.CSS_SELECTOR, "#patrol-job li") if li.text.startswith("发现违规"))
        assert "新案件 New cases: 0" in found, found  # a violation found, no case written
        assert status.text.startswith("巡查完成 Patrol done: 0 件新案件 new cases；未生成案件 No cases written: upload jobs "
                                      "write no candidate cases, only their report: "), status.text
        assert "STREETWATCH_TEST_KEY_NOT_SET is not set" in status.text and "bad" in status.get_attribute("class")


def test_city_page_pages_through_the_warnings(tmp_path, bus_jpg):
    """The page listed the newest 200 warnings and no more, a district's thousands a year out of reach and nothing
    saying so. It shows a page of 200, which rows of how many, and 下一页 to the rest."""
    from datetime import UTC, datetime, timedelta

    from selenium.webdriver.common.by import By

    from pipelines.cases.schema import warnings

    def prepare(app) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        with app.state.ctx.store.engine.begin() as conn:
            conn.execute(warnings.insert(), [{"id": f"w{i:03d}", "violation_id": f"v{i}", "violation_type": "illegal_parking",
                                              "camera_id": "cam-01", "state": "warned", "warned_at": start + timedelta(hours=i),
                                              "recheck_at": start + timedelta(hours=i, minutes=10), "details": {}} for i in range(250)])

    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), prepare) as served:
        b, pager = _first_page_then_next(served, "/ui/city", "warnings", "#warnings tbody tr[data-warning]", 250)
        rows = b.find_elements(By.CSS_SELECTOR, "#warnings tbody tr[data-warning]")
        assert [r.get_attribute("data-warning") for r in rows] == [f"w{i:03d}" for i in range(49, -1, -1)]
        assert pager.find_element(By.CLASS_NAME, "next").get_attribute("disabled") is not None


def test_city_page_pages_through_the_register_and_finds_a_shop(tmp_path, bus_jpg):
    """The page put the whole register in one table, a district's 2,000 shops at once, found only with the browser's
    search. It shows 200 by name, which of how many, 下一页 to the rest, and a search the register answers."""
    from selenium.webdriver.common.by import By

    from pipelines.shops import Shop, ShopRegister

    def prepare(app) -> None:
        register = ShopRegister(app.state.ctx.store.engine)
        for i in range(250):
            register.put(Shop(id=f"91330106MA{i:08d}", name=f"商户{i:03d}号店", address=f"文三路 {i} 号"))

    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), prepare) as served:
        b, pager = _first_page_then_next(served, "/ui/city", "shops", "#shops tbody tr[data-shop]", 250)
        assert b.find_element(By.CSS_SELECTOR, "#shops tbody tr[data-shop]").get_attribute("data-shop") == "91330106MA00000200"
        b.find_element(By.ID, "shops-q").send_keys("商户007")
        b.find_element(By.CSS_SELECTOR, "#shops-search button").click()
        _wait(b, lambda d: "第 1–1 条，共 1 条" in pager.text, "the shop found")
        assert [r.get_attribute("data-shop") for r in b.find_elements(By.CSS_SELECTOR, "#shops tbody tr[data-shop]")] == ["91330106MA00000007"]


def test_city_page_pages_through_the_call_out_list_and_finds_a_number(tmp_path, bus_jpg):
    """The page listed every number of the call-out list at once, a status menu each: a district's hundreds. It
    shows 200, last seen first, which of how many, 下一页 to the rest, and finds a number by its digits."""
    from selenium.webdriver.common.by import By

    from tests.test_cityops_api import numbers_on_the_list

    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), lambda app: numbers_on_the_list(app.state.ctx.store.engine, 250)) as served:
        numbers = served["data"]
        b, pager = _first_page_then_next(served, "/ui/city", "callout", "#callout tbody tr[data-number]", 250)
        assert [r.get_attribute("data-number") for r in b.find_elements(By.CSS_SELECTOR, "#callout tbody tr[data-number]")] == numbers[200:]
        b.find_element(By.ID, "callout-q").send_keys("13900000007")
        b.find_element(By.CSS_SELECTOR, "#callout-search button").click()
        _wait(b, lambda d: "第 1–1 条，共 1 条" in pager.text, "the number found")
        [row] = b.find_elements(By.CSS_SELECTOR, "#callout tbody tr[data-number]")
        assert row.get_attribute("data-number") == "13900000007" and "待追呼" in row.text
