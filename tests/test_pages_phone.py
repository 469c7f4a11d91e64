"""The pages on an inspector's phone (360 x 800 CSS px, touch), in headless Chromium against `streetwatch serve`:
layout facts (widths, boxes), not pixels."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import yaml

from tests.api_helpers import auth, draft_cases
from tests.conftest import CHROMIUM
from tests.test_review_pages import CHROMEDRIVER, FLAGS, _wait, served_pages, site_settings

#: A common Android phone as Chromium's device emulation has it: the page's own <meta name="viewport"> decides
#: whether it is laid out 360 px wide or as a desktop page shrunk to a third.
PHONE = {"deviceMetrics": {"width": 360, "height": 800, "pixelRatio": 2.0, "touch": True, "mobile": True}}
PAGES = ["queue", "upload", "cameras", "map", "scores", "reports", "city", "login"]
FINGER_PX = 44  # the smallest target a finger hits reliably (Apple's and WCAG 2.5.5's 44 CSS px)


def office_screen(served: dict[str, Any], width: int = 1366, mobile: bool = False) -> Any:
    """The served browser, logged in, made a `width` px wide office screen (a phone's where `mobile`)."""
    b = served["browser"]
    b.get(served["base"] + "/ui/login")
    b.execute_script("localStorage.setItem('sw_token', arguments[0]);", served["token"])
    b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 844 if mobile else 768, "deviceScaleFactor": 1, "mobile": mobile})
    return b


def office_screens(served: dict[str, Any]) -> Iterator[int]:
    """The served browser, logged in, made a 1366 then a 1280 px wide office screen: each width in turn."""
    for width in (1366, 1280):
        office_screen(served, width)
        yield width


@contextmanager
def phone(served: dict[str, Any], device: dict[str, Any] = PHONE) -> Iterator[Any]:
    """A second browser as a phone (or another touch `device`), holding `served`'s reviewer token."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_experimental_option("mobileEmulation", device)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        browser.get(served["base"] + "/ui/login")
        browser.execute_script("localStorage.setItem('sw_token', arguments[0]);", served["token"])
        yield browser
    finally:
        browser.quit()


#: What a phone shows of the page: the layout width, the page's full width, and the visible controls a finger must
#: hit that are shorter than FINGER_PX (tag, id or text, height).
LAYOUT = """
const small = [...document.querySelectorAll('button, label.file-button, label.tag, #jobs a, select, input:not([type=checkbox]):not([type=radio]):not([type=hidden])')]
  .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().height < arguments[0])
  .map((e) => [e.tagName, e.id || e.textContent.trim().slice(0, 20), Math.round(e.getBoundingClientRect().height)]);
return [document.documentElement.clientWidth, document.documentElement.scrollWidth, small];
"""


@pytest.mark.slow  # every page laid out on a phone in Chromium (10 s in CI): the default suite's ~15-minute budget
def test_every_page_fits_a_phone_and_its_buttons_a_finger(tmp_path, bus_jpg, bus_event):
    """The pages had no viewport setting, so a phone laid them out 980 px wide and shrank them to a third (text and
    buttons too small to read or tap); with one, the queue's two columns, the navigation bar, the upload page's
    progress bars and the wide tables ran off a 360 px screen. Each page is as wide as the phone (a wide table scrolls
    in its own box), the evidence image fits, and every button, field and list is at least a finger high; the queue's
    key line, of no use without a keyboard, is hidden."""
    from selenium.webdriver.common.by import By

    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), lambda app: draft_cases(app, bus_event, [{}])) as served, \
            phone(served) as b:
        for page in PAGES:
            b.get(f"{served['base']}/ui/{page}")
            if page == "queue":  # the case's detail and its evidence image drawn: the widest the page gets
                loaded = "const i = document.getElementById('evidence-image'); return !!i && i.complete && i.naturalWidth > 0;"
                _wait(b, lambda d: d.execute_script(loaded), "the evidence image on the phone")
                image = b.find_element(By.ID, "evidence-image").rect
                assert image["x"] >= 0 and image["x"] + image["width"] <= 360, image
                assert not b.find_element(By.CSS_SELECTOR, "p.keys").is_displayed()  # no keyboard to press them on
            elif page != "login":  # the navigation bar names the city's zone once the page's lists are in
                _wait(b, lambda d: d.find_element(By.ID, "zone").text, f"/ui/{page} loaded on the phone")
            width, page_width, small = b.execute_script(LAYOUT, FINGER_PX)
            assert (width, page_width) == (360, 360), f"/ui/{page} is {page_width} px wide on a {width} px layout"
            assert small == [], f"/ui/{page}: controls under {FINGER_PX} px high: {small}"


#: The squad leader's tablet held upright, and the inspector's phone turned on its side (both touch, wider than a phone's
#: one-column layout).
TABLET = {"deviceMetrics": {"width": 768, "height": 1024, "pixelRatio": 2.0, "touch": True, "mobile": True}}
ON_ITS_SIDE = {"width": 800, "height": 360, "deviceScaleFactor": 2, "mobile": True,
               "screenOrientation": {"type": "landscapePrimary", "angle": 90}}


def _fits_a_finger(b: Any, width: int, where: str) -> None:
    """The page as wide as the screen and every control a finger high (LAYOUT)."""
    layout, page_width, small = b.execute_script(LAYOUT, FINGER_PX)
    assert (layout, page_width) == (width, width), f"{where}: {page_width} px wide on a {layout} px screen"
    assert small == [], f"{where}: controls under {FINGER_PX} px high: {small}"


@pytest.mark.slow  # an upload judged through a dropped network, then two pages on a tablet, in Chromium
def test_an_inspector_uploads_through_a_dropped_network_and_works_the_pages_by_touch(tmp_path, bus_jpg, bus_event):
    """On a phone in the street: the job's progress stopped at the browser's English "Failed to fetch" when the network
    dropped after the photos were in, the photos still chosen, so an inspector uploaded them again (an upload cut off
    itself said "upload failed (network)", not what to do); the results table was 566 px wide on a 390 px phone (a
    WeChat photo's long name), its findings off the screen. Turned on its side (800 px) or on the squad leader's 768 px
    tablet the queue laid its two columns out 1012 px wide, and its lists and fields were the office's 23 px; a case
    tapped in the list, laid out above the case on a phone, showed only the list's highlight. Now a cut upload says the
    photos are still chosen to upload again; once they are in the page says so, clears the chosen files and goes on by
    itself once the network is back (one job); the results fit, a tapped case is gone down to, and every page fits each
    screen and a finger."""
    from selenium.webdriver.common.by import By

    photo = tmp_path / "微信图片_20261207_mpig__MarketUnderBridgeWithMural.jpg"  # as a WeChat export names it
    shutil.copyfile(bus_jpg, photo)
    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), lambda app: draft_cases(app, bus_event, [{}] * 5)) as served, \
            phone(served) as b:
        b.get(served["base"] + "/ui/upload")
        _wait(b, lambda d: d.find_element(By.ID, "jobs").text == "还没有任务 No jobs yet", "the upload page on the phone")
        b.execute_cdp_cmd("Network.enable", {})
        b.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/v1/triage/jobs"]})  # the upload itself cut off
        b.find_element(By.ID, "files").send_keys(str(photo))
        b.find_element(By.CSS_SELECTOR, "#upload button").click()
        _wait(b, lambda d: d.find_element(By.ID, "status").text.startswith("上传失败：网络中断。照片仍已选好"), "the cut upload said")
        assert b.find_element(By.ID, "files-chosen").text == f"已选择 {photo.name}"  # to tap 上传 again
        b.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/v1/triage/jobs/*"]})  # the job's progress unreachable
        b.find_element(By.CSS_SELECTOR, "#upload button").click()
        said = _wait(b, lambda d: "照片已上传" in d.find_element(By.ID, "status").text and d.find_element(By.ID, "status").text,
                     "the dropped network said")
        assert said.startswith("照片已上传（任务 ") and "无需重新上传" in said and "Failed to fetch" not in said
        assert b.find_element(By.ID, "status").get_attribute("class") == "status bad warn"  # ⚠ 请核对 Check, not an error
        assert b.find_element(By.ID, "files-chosen").text == "未选择文件 No file chosen"  # a second tap sends nothing
        b.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})  # the network back
        _wait(b, lambda d: "完成 Done" in d.find_element(By.ID, "status").text, "the job followed to its end", timeout=120)
        jobs = httpx.get(served["base"] + "/api/v1/triage/jobs", headers=auth(served["token"]), timeout=10).json()
        assert [j["state"] for j in jobs] == ["done"]
        _wait(b, lambda d: "完成 done" in d.find_element(By.ID, "jobs").text, "the job listed done")
        assert b.execute_script("const t = document.querySelector('table.results'); return t.scrollWidth - t.clientWidth;") == 0
        assert "机动车乱停放" in b.find_element(By.CSS_SELECTOR, "#results td:nth-child(3)").text
        _fits_a_finger(b, 360, "/ui/upload's results on the phone")
        b.get(served["base"] + "/ui/queue")  # a case tapped, a note begun, the phone turned on its side
        _wait(b, lambda d: d.find_elements(By.ID, "note-text"), "the first case on the phone")
        tapped = b.find_elements(By.CSS_SELECTOR, "#cases li")[2]
        case = tapped.get_attribute("data-case")
        tapped.click()
        _wait(b, lambda d: case in d.find_element(By.CSS_SELECTOR, "#detail h2").text, "the tapped case's detail")
        top = b.execute_script("return document.querySelector('#detail h2').getBoundingClientRect().top")
        assert 0 <= top < 800, f"the tapped case's detail is {top} px down a 800 px screen"  # under the list: gone to
        b.find_element(By.ID, "note-text").send_keys("摊主已离开")
        b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", ON_ITS_SIDE)
        assert b.find_element(By.ID, "note-text").get_attribute("value") == "摊主已离开"
        _fits_a_finger(b, 800, "/ui/queue on the phone on its side")
        with phone(served, TABLET) as tablet:
            for page, drawn in (("queue", "note-text"), ("upload", "job-report")):
                tablet.get(f"{served['base']}/ui/{page}")
                _wait(tablet, lambda d: d.find_elements(By.ID, drawn) and d.find_element(By.ID, "zone").text, f"/ui/{page} on the tablet")
                _fits_a_finger(tablet, 768, f"/ui/{page} on the tablet")


#: The navigation bar's items by the line each is on (their offsetTop) and the page's widths, once the zone is named.
NAV_LINES = """
return [[...document.querySelectorAll('nav.site > *')].map((e) => [e.textContent, e.offsetTop]),
        document.documentElement.clientWidth, document.documentElement.scrollWidth];
"""


#: Where the words of each of two elements begin on the screen (the top of their text, not of their box).
TEXT_TOPS = """
return [arguments[0], arguments[1]].map((selector) => {
  const range = document.createRange();
  range.selectNodeContents(document.querySelector(selector));
  return range.getClientRects()[0].top;
});
"""


@pytest.mark.slow  # every page at two office widths and on the phone (6.4 s in CI)
def test_the_navigation_bar_is_one_line_on_an_office_screen_and_wraps_on_a_phone(tmp_path, bus_jpg):
    """Letting the bar wrap for phones put its last item (令牌 Token) on a second line on a 1366 px office screen, the
    most common, and the time zone with it at 1280 px. At both, on every page, its items share one line (the scroll bar
    a long page has included); on a 360 px phone it wraps and the page is no wider than the screen, the time zone's
    words on the line of 令牌 Token's (they stood half a line above, the links padded for a finger and the zone not)."""
    from selenium.webdriver.common.by import By

    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), lambda app: None) as served, phone(served) as handset:
        b = served["browser"]
        for width in office_screens(served):
            for page in PAGES[:-1]:  # the login page has no bar
                b.get(f"{served['base']}/ui/{page}")
                _wait(b, lambda d: d.find_element(By.ID, "zone").text, f"/ui/{page} at {width} px")
                items, _, _ = b.execute_script(NAV_LINES)
                assert len(items) == 9 and len({top for _, top in items}) == 1, f"/ui/{page} at {width} px: {items}"
        for page in PAGES[:-1]:
            handset.get(f"{served['base']}/ui/{page}")
            _wait(handset, lambda d: d.find_element(By.ID, "zone").text, f"/ui/{page} on the phone")
            items, width, page_width = handset.execute_script(NAV_LINES)
            assert len({top for _, top in items}) > 1 and (width, page_width) == (360, 360), (page, items, page_width)
            zone, token = handset.execute_script(TEXT_TOPS, "#zone", "nav a[href='/ui/login']")
            assert abs(zone - token) < 1, f"/ui/{page} on the phone: the zone's words at {zone} px, 令牌 Token's at {token} px"


#: Each form label holding a field whose field is not on the line of the label's words: the words, and the two tops.
LABELS_APART = """
return [...document.querySelectorAll('form label')].flatMap((label) => {
  const field = label.querySelector('input:not([type=checkbox]):not([type=radio]), select');
  const words = [...label.childNodes].find((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
  if (!field || !words || field.offsetParent === null) return [];
  const range = document.createRange();
  range.selectNodeContents(words);
  const w = range.getBoundingClientRect(), f = field.getBoundingClientRect();
  return f.top < w.bottom && f.bottom > w.top ? [] : [[words.textContent.trim(), Math.round(w.top), Math.round(f.top)]];
});
"""


@pytest.mark.slow  # the forms at an office width in Chromium (8 s in CI): the default suite's ~15-minute budget
def test_a_label_and_its_field_share_a_line_on_an_office_screen(tmp_path, bus_jpg):
    """The queue's filters wrapped at 1366 px between 搜索 Search and its box, the words at the end of one line and the
    box at the start of the next (a list of types 540 px wide, for its longest name, pushed them there); on the map's
    and the scores' filters alike. At 1366 and 1280 px every form's label is on the line of its field."""
    from selenium.webdriver.common.by import By

    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), lambda app: None) as served:
        b = served["browser"]
        for width in office_screens(served):
            for page in ("queue", "map", "scores", "city"):
                b.get(f"{served['base']}/ui/{page}")
                _wait(b, lambda d: d.find_element(By.ID, "zone").text, f"/ui/{page} at {width} px")
                _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#f-type option, #f-by option")) > 1 or page == "city",
                      f"/ui/{page}'s lists filled")
                assert b.execute_script(LABELS_APART) == [], f"/ui/{page} at {width} px"


#: Each word of a shown label, heading (a page's, a table's), file field's line (what it holds), scored item's case id,
#: camera's note in the list, the map's export hint, a scored unit's item or a cell of a case's logs (an actor's
#: pieces), its own text split at spaces, brackets, colons and the slash between alternatives (the scoring sheet's
#: 越门/窗占道经营, an actor's rules:batch-7/bus, broken after it as the browser may), broken over lines: the word and
#: the element's text.
WORDS_BROKEN = """
return [...document.querySelectorAll(`label, th, .file-chosen, small.cases, small.cases > span, h1, h2, h3, .list li .note,
  #export-scope, #export-scope > span, #unit li, .log td, .log .actor > span`)].filter((e) => e.offsetParent !== null).flatMap((e) =>
  [...e.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).flatMap((text) =>
    [...text.textContent.matchAll(/[^\\s()（）:：,，、/]+/g)].flatMap((word) => {
      const range = document.createRange();
      range.setStart(text, word.index);
      range.setEnd(text, word.index + word[0].length);
      const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
      return lines > 1 ? [[word[0], e.textContent.trim()]] : [];
    })));
"""


#: A register's file as a city office names it: one word (no space) wider than a phone.
LONG_FILE = "2026年12月文三路东口至教工路口门前三包责任单位商户登记表_城管一中队_最终版.csv"


@pytest.mark.slow  # the pages with form labels on two phone widths in Chromium
def test_a_label_s_words_are_whole_on_a_phone(tmp_path, bus_jpg, bus_event):
    """On a phone the queue's case form broke its labels where the line ran out, inside a Chinese word (严重程 / 度
    Severity), the desktop's rule keeping a label whole (nowrap) being for office screens only; the city page's table
    headings (编 / 号 Id, 开始 / 时间 Start, 复查 Re- / check) and its file fields' lines (未选择文件 N / o file chosen)
    alike, and its section's heading (warn, re- / check), the case's history (rules:batch- / 7/bus), a camera's
    note (broken anywhere) and the map's export hint (起的案 / 件). At 390 and 360 px, on every page with labels (the
    queue's filters and case, the map's and the scores' filters, the city page's register, call-out list and patrol
    forms, the cameras' search, the login), no word of a label, a heading, a file field's line, the case's logs, a
    camera's note (cam-02's scene refused) or the export hint is broken over two lines; a file's name wider than the
    phone is broken all the same, the page no wider than the screen."""
    from selenium.webdriver.common.by import By

    register = tmp_path / LONG_FILE
    register.write_text("id,name\n", encoding="utf-8")
    settings = site_settings(tmp_path, bus_jpg)
    (tmp_path / "cameras" / "cam-02.yaml").write_text("camera_id: cam-02\nzones: [\n", encoding="utf-8")  # a scene error

    with served_pages(tmp_path, settings, lambda app: draft_cases(app, bus_event, [{}])) as served:
        for width in (390, 360):
            b = office_screen(served, width, mobile=True)
            for page in ("queue", "map", "scores", "city", "cameras", "login"):
                b.get(f"{served['base']}/ui/{page}")
                if page == "queue":  # the case's form and history drawn, its lists filled
                    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#edit-type option")) > 1
                          and d.find_elements(By.CSS_SELECTOR, "#history td"), f"the case at {width} px")
                elif page == "map":  # the export hint names the map's window
                    _wait(b, lambda d: d.find_element(By.ID, "export-scope").text, f"the export hint at {width} px")
                elif page == "cameras":
                    _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, ".list li .note"), f"cam-02's scene error at {width} px")
                elif page != "login":
                    _wait(b, lambda d: d.find_element(By.ID, "zone").text, f"/ui/{page} at {width} px")
                _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#f-type option, #f-by option")) > 1
                      or page not in ("queue", "map", "scores"), f"/ui/{page}'s lists filled")
                assert b.execute_script(WORDS_BROKEN) == [], f"/ui/{page} at {width} px"
                assert b.execute_script("return document.documentElement.scrollWidth") == width, f"/ui/{page} at {width} px"
            b.get(f"{served['base']}/ui/city")
            _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#shops-import .file-chosen"), f"/ui/city at {width} px")
            b.find_element(By.CSS_SELECTOR, "#shops-import input[type=file]").send_keys(str(register))
            _wait(b, lambda d: LONG_FILE in d.find_element(By.CSS_SELECTOR, "#shops-import .file-chosen").text, "the file chosen")
            assert b.execute_script("return document.documentElement.scrollWidth") == width, f"{LONG_FILE} at {width} px"


#: Each label over the evidence image (a box's, a zone's) as it is shown: its text, its type's size on the screen in
#: CSS px (its font size times the scale it is drawn at, an SVG's text scaled with the image) and whether it lies
#: within the image; and the image's shown width.
OVERLAY_LABELS = """
const image = document.getElementById(arguments[0]).getBoundingClientRect();
return [[...document.querySelectorAll('.box-label, .zone-label')].map((e) => {
  const scale = e.getScreenCTM ? e.getScreenCTM().a : 1, r = e.getBoundingClientRect();
  return [e.textContent, parseFloat(getComputedStyle(e).fontSize) * scale,
          r.left >= image.left - 1 && r.right <= image.right + 1 && r.top >= image.top - 1 && r.bottom <= image.bottom + 1];
}), image.width];
"""
LABEL_PX = 12  # the smallest type a reviewer reads on a phone held at arm's length, or an office screen
#: Each outline over the evidence image (a box's, a zone's): its class and its width on the screen in CSS px, its
#: stroke width times the scale it is drawn at unless it is a non-scaling stroke.
OUTLINES = """
return [...document.querySelectorAll('.overlay svg rect, .overlay svg polygon')].map((e) => {
  const style = getComputedStyle(e), ctm = e.getScreenCTM();
  const scale = style.vectorEffect === 'non-scaling-stroke' ? 1 : Math.min(Math.abs(ctm.a), Math.abs(ctm.d));
  return [e.getAttribute('class'), parseFloat(style.strokeWidth) * scale];
});
"""
OUTLINE_PX = 2  # an outline a reviewer sees on the photo at a glance


@pytest.mark.slow  # the evidence image at three sizes in Chromium (9 s in CI): the default suite's ~15-minute budget
def test_the_labels_and_outlines_on_the_evidence_image_are_seen_however_small_it_is_shown(tmp_path, bus_jpg, bus_event):
    """The labels of the evidence image's boxes and zones (bus 0.94) were drawn in the image's pixels and scaled with
    it: the 810 px photo shown about 340 px wide on a phone and 360 px on a 1366 px office screen (62 % of its height)
    put them at 7 to 9 px, unreadable, and the outlines (width/300 image px) at about 1 px; readable, a zone's label
    beside its first point ran off the image's right edge (sidewalk-north (sidewalk) from its middle on a phone). On
    the queue's case and the camera page's snapshot, at both widths, each label is at least 12 CSS px and wholly within
    the image, and each outline at least 2 CSS px wide."""
    from selenium.webdriver.common.by import By

    loaded = "const i = document.getElementById(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;"
    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), lambda app: draft_cases(app, bus_event, [{}])) as served, \
            phone(served) as handset:
        office = office_screen(served)
        for b, screen in ((handset, "phone"), (office, "1366 px")):
            for page, image, labels in (("queue", "evidence-image", 2), ("cameras", "snapshot-image", 7)):
                b.get(f"{served['base']}/ui/{page}")
                _wait(b, lambda d: d.execute_script(loaded, image), f"/ui/{page}'s image on the {screen}")
                _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".box-label, .zone-label")) == labels,
                      f"/ui/{page}'s labels on the {screen}")
                shown, width = b.execute_script(OVERLAY_LABELS, image)
                assert width < 500, f"/ui/{page} on the {screen}: the image is shown {width} px wide, not small"
                if page == "queue":
                    assert any(text.startswith("客车 bus 0.") for text, _, _ in shown), shown
                assert all(size >= LABEL_PX and inside for _, size, inside in shown), (page, screen, width, shown)
                outlines = b.execute_script(OUTLINES)
                assert len(outlines) >= labels and all(px >= OUTLINE_PX for _, px in outlines), (page, screen, outlines)


#: The case's fields a reviewer changes and the names each must show before it, Chinese first: the facts, the place
#: (where a platform sends a handler) and the reason a rejection is undone for.
CASE_FIELDS = {"edit-type": "类型 Type", "edit-description": "描述 Description", "edit-severity": "严重程度 Severity",
               "edit-address": "地址 Address", "edit-lat": "纬度 Lat", "edit-lon": "经度 Lon",
               "reopen-note": "重新打开原因（必填） Why reopen (required)"}


@pytest.mark.slow  # a rejected case opened on a phone and at an office width (6.0 s in CI)
def test_the_case_s_fields_are_named_on_the_page(tmp_path, bus_jpg, bus_event):
    """In the queue's case the type and severity lists, the description, the address and coordinates and the reopen
    reason had no name on the page, only a tooltip (a phone shows none) or a placeholder gone once something is typed
    (地点 Place and 经纬度 Lat/Lon were words beside the fields, tied to none). On a phone and a 1366 px screen each
    field of a case rejected in review has its name shown, Chinese first, as its <label for>, which is its accessible
    name; the place's fields are a group named 地点 Place."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def rejected(app) -> str:
        case_id, = draft_cases(app, bus_event, [{}])
        app.state.ctx.store.review(case_id, approve=False, reviewer="reviewer-user", reason_code="duplicate")
        return case_id

    with served_pages(tmp_path, site_settings(tmp_path, bus_jpg), rejected) as served, phone(served) as handset:
        office = office_screen(served)
        for b, screen in ((handset, "phone"), (office, "1366 px")):
            b.get(served["base"] + "/ui/queue")
            _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#f-state option")) > 1, f"the states on the {screen}")
            Select(b.find_element(By.ID, "f-state")).select_by_value("rejected")
            b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
            _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, f"#cases li[data-case='{served['data']}']"),
                  f"the rejected case listed on the {screen}")[0].click()
            _wait(b, lambda d: d.find_elements(By.ID, "reopen-note"), f"the rejected case's detail on the {screen}")
            for attempt in range(3):  # the detail may be drawn once more (the list reloaded, then the click): read afresh
                try:
                    for field_id, name in CASE_FIELDS.items():
                        labels = b.find_elements(By.CSS_SELECTOR, f"label[for='{field_id}']")
                        assert [label.text for label in labels] == [name], (screen, field_id)
                        assert labels[0].is_displayed() and labels[0].size["height"] > 0, (screen, field_id)
                        assert b.find_element(By.ID, field_id).accessible_name == name, (screen, field_id)
                    assert b.find_element(By.CSS_SELECTOR, "#detail .place").accessible_name == "地点 Place:", screen
                    break
                except StaleElementReferenceException:
                    assert attempt < 2, f"the case's detail on the {screen} kept being redrawn"


#: The labels over a figure's image (arguments[0]: the element holding it), once placed (SW.placeLabels runs before a
#: frame is painted, so two frames on they are): each one's class, text, title, its rectangle on the screen (left, top,
#: right, bottom) and whether its words are cut (wider than its box); the image's rectangle; the evidence boxes'
#: rectangles; and the ends of each leader line on the screen.
PLACED_LABELS = """
const done = arguments[arguments.length - 1], figure = document.querySelector(arguments[0]);
requestAnimationFrame(() => requestAnimationFrame(() => {
  const rect = (r) => [r.left, r.top, r.right, r.bottom];
  const svg = figure.querySelector('svg'), m = svg.getScreenCTM();
  const end = (x, y) => { const p = new DOMPoint(x, y).matrixTransform(m); return [p.x, p.y]; };
  done([[...figure.querySelectorAll('.box-label, .zone-label')].map((e) =>
          [e.className, e.textContent, e.title, rect(e.getBoundingClientRect()), e.scrollWidth > e.clientWidth]),
        rect(figure.querySelector('img').getBoundingClientRect()),
        [...svg.querySelectorAll('rect.box')].map((r) => rect(r.getBoundingClientRect())),
        [...svg.querySelectorAll('line.leader')].map((l) =>
          [end(l.x1.baseVal.value, l.y1.baseVal.value), end(l.x2.baseVal.value, l.y2.baseVal.value)])]);
}));
"""
#: Two zones whose labels' anchors (their first points) are about 2 px apart on a phone, and one whose name is
#: wider than the image shown on a phone.
ZONES = [{"id": "gate-east", "name": "北门人行道", "kind": "no_parking",
          "polygon": [[0.40, 0.20], [0.60, 0.20], [0.60, 0.30], [0.40, 0.30]]},
         {"id": "gate-west", "name": "西门人行道", "kind": "no_parking",
          "polygon": [[0.405, 0.205], [0.405, 0.31], [0.30, 0.31], [0.30, 0.21]]},
         {"id": "school-gate", "name": "文三路北侧人行道学院路小学校门前至教工路口流动摊贩临时疏导点", "kind": "vending_permitted",
          "polygon": [[0.70, 0.05], [0.95, 0.05], [0.95, 0.15], [0.70, 0.15]]}]


def _placed(b: Any, figure: str, points: dict[str, tuple[float, float]]) -> tuple[list, list[float], list, list]:
    """The labels over `figure` on the phone (PLACED_LABELS), checked: no two intersect, each is within the image with
    its words whole, and each touches its anchor by 6 px or less or a leader line runs from the anchor to it (a zone's
    anchor is its point in `points`, its label's text -> (x, y) in 0..1 of the image; an evidence box's its rectangle).
    The labels, the image's rectangle, the boxes' and the leader lines."""
    labels, image, boxes, leaders = b.execute_async_script(PLACED_LABELS, figure)
    assert image[2] - image[0] < 360, image
    anchors = {text: _on_screen(image, *point) for text, point in points.items()}
    anchors |= {text: box for (_, text, _, _, _), box in zip([x for x in labels if x[0] == "box-label"], boxes)}
    assert sorted(text for _, text, _, _, _ in labels) == sorted(anchors)
    for i, (_, text, _, (left, top, right, bottom), cut) in enumerate(labels):
        assert image[0] - 1 <= left and right <= image[2] + 1 and image[1] - 1 <= top and bottom <= image[3] + 1, \
            (text, (left, top, right, bottom), image)
        assert not cut, text
        for _, other, _, (l2, t2, r2, b2), _ in labels[i + 1:]:
            overlap = min(right, r2) - max(left, l2), min(bottom, b2) - max(top, t2)
            assert min(overlap) <= 0.5, f"{text!r} and {other!r} overlap by {overlap} px"
        anchor, rect = anchors[text], [left, top, right, bottom]
        pointed = any(_gap(a, anchor) <= 1.5 and _gap(b_, rect) <= 1.5 for a, b_ in leaders)
        assert _apart(anchor, rect) <= 6 or pointed, (text, anchor, rect, leaders)
    return labels, image, boxes, leaders


def _gap(point: tuple[float, float], rect: list[float]) -> float:
    """How far `point` is from `rect` (left, top, right, bottom), 0 inside it."""
    return _apart([*point, *point], rect)


def _apart(a: list[float], b: list[float]) -> float:
    """How far rectangles `a` and `b` (left, top, right, bottom) are apart, 0 where they meet."""
    return math.hypot(max(a[0] - b[2], 0, b[0] - a[2]), max(a[1] - b[3], 0, b[1] - a[3]))


def _on_screen(image: list[float], x: float, y: float) -> list[float]:
    """The point (x, y) in 0..1 of `image` (its rectangle on the screen), on the screen, as a rectangle."""
    px, py = image[0] + x * (image[2] - image[0]), image[1] + y * (image[3] - image[1])
    return [px, py, px, py]


@pytest.mark.slow  # the served camera and queue pages in a second browser as a phone (30 s on a loaded 2-core machine)
def test_the_labels_on_a_phone_neither_overlap_nor_leave_the_image(tmp_path, bus_jpg, bus_event):
    """Each zone's label was put by its first point whatever else was there, so two zones starting a few pixels apart
    had their labels drawn over each other, unreadable on a phone, and a label wider than the image ran off its edge
    and was cut. On the camera page and the queue's evidence on a phone no two labels intersect, each is within the
    image with its words whole (the long name wrapped) and each touches its anchor (6 px or less) or a leader line
    runs from the anchor to it. A zone is labelled by its name (北门人行道) where it has one, its id and kind in the
    tooltip (the pages showed the id only); and the evidence box's label keeps its first place above the box, where a
    zone's label placed before it had pushed it below the box (the zone's label, pushed off its point, has a leader
    line to it)."""
    scene_file = tmp_path / "cameras" / "cam-01.yaml"
    settings = site_settings(tmp_path, bus_jpg)
    scene = yaml.safe_load(scene_file.read_text(encoding="utf-8"))
    scene["zones"] += ZONES
    scene_file.write_text(yaml.safe_dump(scene, allow_unicode=True), encoding="utf-8")
    titles = {z.get("name") or f"{z['id']} ({z['kind']})": f"{z['id']} ({z['kind']})" for z in scene["zones"]}
    firsts = {z.get("name") or f"{z['id']} ({z['kind']})": z["polygon"][0] for z in scene["zones"]}
    event, _ = bus_event
    (height, width), (x1, y1, _, _) = event.frame.image.shape[:2], event.detections.xyxy[0].tolist()
    corner = (x1 / width + 0.05, y1 / height - 0.015)  # a zone starting just above the bus's box, at its label's first place
    in_curb_lane = {"source_id": "cam-01", "zone_id": "curb-lane", "zone_kind": "no_parking", "zone_polygon": [
        corner, (corner[0] + 0.2, corner[1]), (corner[0] + 0.2, corner[1] + 0.1), (corner[0], corner[1] + 0.1)]}

    loaded = "const i = document.getElementById(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;"
    with served_pages(tmp_path, settings, lambda app: draft_cases(app, bus_event, [in_curb_lane])) as served, \
            phone(served) as b:
        b.get(served["base"] + "/ui/cameras")
        _wait(b, lambda d: d.execute_script(loaded, "snapshot-image"), "the snapshot on the phone")
        _wait(b, lambda d: len(d.execute_script("return document.querySelectorAll('#snapshot .zone-label')")) == len(firsts),
              "the zones' labels")
        labels, _, _, _ = _placed(b, "#snapshot", firsts)
        assert {text: title for _, text, title, _, _ in labels} == titles

        b.get(served["base"] + "/ui/queue")
        _wait(b, lambda d: d.execute_script(loaded, "evidence-image"), "the evidence image on the phone")
        labels, image, [box], leaders = _placed(b, "#detail .figure", {"文三路北侧路边": corner})  # curb-lane's name
    [(_, bus, _, (_, _, _, bus_bottom), _)] = [x for x in labels if x[0] == "box-label"]
    [(_, _, title, zone_label, _)] = [x for x in labels if x[0] == "zone-label"]
    assert title == "curb-lane (no_parking)"
    assert bus.startswith("客车 bus ") and abs(bus_bottom - box[1]) <= 1, (bus_bottom, box)  # right above its box
    anchor = _on_screen(image, *corner)  # the zone's label pushed off its point by the box's, a leader line to it
    assert _apart(anchor, zone_label) > 6 and any(_gap(a, anchor) <= 1.5 and _gap(b_, zone_label) <= 1.5 for a, b_ in leaders), \
        (anchor, zone_label, leaders)


@pytest.mark.slow  # a case and an upload on a tablet and an office screen in Chromium
def test_a_tablet_shows_the_case_in_staff_s_words_without_keys_or_tooltips(tmp_path, bus_jpg, bus_event, zidane_jpg):
    """A field pass on the squad leader's 768 px tablet: the case's history said `case drafted` and its source
    `photo_batch triage:…` in English; the buttons named keys nobody could press (确认 Confirm (c), a reason's digit);
    the reject reasons' dialog ran past the screen's right edge; a tag's further sheet items and the zone's id were in
    tooltips alone, which a touch screen never shows; and a photo judged without findings had an empty 发现 cell. Now
    each reads in Chinese first, the keys are named on an office screen only, the dialog keeps clear of the edge, the
    zone's id is a fact and the tag names every item it counts in, and the photo says 未发现 none."""
    from selenium.webdriver.common.by import By

    def stall_photo(app) -> str:
        [case_id] = draft_cases(app, bus_event, [{"source_kind": "photo_batch", "source_id": "triage:day1",
                                                  "violation_type": "street_stall", "zone_kind": "no_stall"}])
        return case_id

    # a city's sheet that counts food_on_site in a second item too: the tag's label showed the first alone
    from pipelines.analytics.sheet import EXAMPLE_SHEET

    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(EXAMPLE_SHEET.read_text(encoding="utf-8").replace(
        "        per: group\n", "        tags: [food_on_site]\n        per: group\n", 1), encoding="utf-8")
    settings = site_settings(tmp_path, bus_jpg)
    settings = settings.model_copy(update={"analytics": settings.analytics.model_copy(update={"sheet": sheet})})
    with served_pages(tmp_path, settings, stall_photo) as served, phone(served, TABLET) as b:
        meta = httpx.get(served["base"] + "/api/v1/meta", headers=auth(served["token"]), timeout=10).json()
        [food] = [t for t in meta["tags"] if t["tag"] == "food_on_site"]
        zone = httpx.get(f"{served['base']}/api/v1/cases/{served['data']}", headers=auth(served["token"]),
                         timeout=10).json()["evidence"]["zone"]
        b.get(served["base"] + "/ui/queue")
        _wait(b, lambda d: served["data"] in d.find_element(By.CSS_SELECTOR, "#detail h2").text, "the case on the tablet")
        facts = {tr.find_elements(By.TAG_NAME, "td")[0].text: tr.find_elements(By.TAG_NAME, "td")[1].text
                 for tr in b.find_elements(By.CSS_SELECTOR, "#detail table.facts tr")}
        assert facts["来源 Source"] == "照片 photo_batch triage:day1"
        assert facts["区域 Zone"].endswith(f"{zone['id']} (no_stall)"), facts  # the overlay's label has its name or id alone
        assert [td.text for td in b.find_elements(By.CSS_SELECTOR, "#history tr:nth-child(2) td")][2:] == \
            ["待审核 candidate", "生成案件 case drafted"]
        tag = b.find_element(By.CSS_SELECTOR, "input.edit-tag[value='food_on_site']").find_element(By.XPATH, "..")
        assert len(food["items"]) == 2 and tag.text == f"{'；'.join(food['items'])} (food_on_site)"
        assert [b.find_element(By.ID, i).text for i in ("confirm", "reject")] == ["确认 Confirm", "驳回 Reject"]
        b.find_element(By.ID, "reject").click()
        dialog = _wait(b, lambda d: d.find_element(By.ID, "reasons").is_displayed() and d.find_element(By.ID, "reasons"),
                       "the reject reasons on the tablet")
        left, right = dialog.rect["x"], dialog.rect["x"] + dialog.rect["width"]
        assert left >= 8 and right <= 768 - 8, f"the dialog spans {left}–{right} px of a 768 px screen"
        assert dialog.find_element(By.TAG_NAME, "button").text == "类型错误 Wrong type"  # no 1 to press
        b.get(served["base"] + "/ui/upload")  # a photo of people alone: judged, nothing found
        _wait(b, lambda d: d.find_element(By.ID, "jobs").text == "还没有任务 No jobs yet", "the upload page on the tablet")
        b.find_element(By.ID, "files").send_keys(str(zidane_jpg))
        b.find_element(By.CSS_SELECTOR, "#upload button").click()
        _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#results tr"), "the photo's result", timeout=120)
        assert [td.text for td in b.find_elements(By.CSS_SELECTOR, "#results td")][1:3] == ["已读取 ok", "未发现 none"]
        office = office_screen(served)  # where there is a keyboard, its keys are named
        office.get(served["base"] + "/ui/queue")
        _wait(office, lambda d: d.find_elements(By.ID, "confirm"), "the case at an office screen")
        assert [office.find_element(By.ID, i).text for i in ("confirm", "reject")] == ["确认 Confirm (c)", "驳回 Reject (r)"]
