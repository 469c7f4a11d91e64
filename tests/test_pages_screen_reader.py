"""The review pages as a screen reader reads them and a keyboard works them: Chromium's accessibility tree (CDP) of
each page served by `streetwatch serve`, in headless Chromium (Selenium and Debian's chromium-driver)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.analytics_helpers import write_grid, write_zones
from tests.api_helpers import draft_cases
from tests.test_review_pages import _wait, served_pages, site_settings

PAGES = ["login", "queue", "upload", "cameras", "map", "scores", "reports", "city"]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def site(tmp_path_factory, bus_event, bus_jpg):
    """The pages served with two candidate cases, two cameras, a grid and zones; the browser holds an admin's token."""
    tmp = tmp_path_factory.mktemp("a11y")
    settings = site_settings(tmp, bus_jpg)
    settings.analytics.grid = write_grid(tmp / "grid.geojson")
    settings.analytics.zones = write_zones(tmp / "zones.geojson")
    with served_pages(tmp, settings, lambda app: draft_cases(app, bus_event, [{}, {}])) as served:
        served["browser"].get(served["base"] + "/ui/login")
        served["browser"].execute_script("localStorage.setItem('sw_token', arguments[0]);", served["tokens"]["admin"])
        yield served


def _open(site, page: str) -> Any:
    """The browser on /ui/<page>, once its script has run (the navigation bar drawn; the login page has none)."""
    from selenium.webdriver.common.by import By

    b = site["browser"]
    b.get(f"{site['base']}/ui/{page}")
    if page != "login":
        _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "nav a"), f"the {page} page's navigation bar")
    return b


def _ax(browser, selector: str) -> dict[str, Any]:
    """The accessibility node Chromium gives the element `selector` finds: role, name and properties (live, focusable …)."""
    root = browser.execute_cdp_cmd("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node = browser.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    assert node, f"no element {selector}"
    ax = browser.execute_cdp_cmd("Accessibility.getPartialAXTree", {"nodeId": node, "fetchRelatives": False})["nodes"][0]
    return {"role": ax.get("role", {}).get("value"), "name": ax.get("name", {}).get("value", ""),
            **{p["name"]: p["value"].get("value") for p in ax.get("properties", [])}}


def _ax_text(browser, selector: str) -> str:
    """What a screen reader reads as the text of the element `selector` finds: its accessibility tree's text nodes,
    in order (CSS generated content included, as Chromium gives it)."""
    nodes = browser.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    by_id = {n["nodeId"]: n for n in nodes}
    root = browser.execute_cdp_cmd("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    dom = browser.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    backend = browser.execute_cdp_cmd("DOM.describeNode", {"nodeId": dom})["node"]["backendNodeId"]
    start = next(n for n in nodes if n.get("backendDOMNodeId") == backend)

    def text(node: dict[str, Any]) -> str:
        if node.get("role", {}).get("value") == "StaticText":
            return node.get("name", {}).get("value", "")
        return "".join(text(by_id[c]) for c in node.get("childIds", []) if c in by_id)
    return text(start)


@pytest.mark.slow  # an upload refused and a warning shown in a browser (the suite's budget)
def test_an_error_in_the_status_line_is_said_in_words(site):
    """An error in the status line was shown by its red background alone: a screen reader (and a reader who cannot
    tell red) got the words of the refusal with nothing saying it was one. An error is marked 错误 Error, a warning
    (work done, something to check) 请核对 Check, read with the line; a plain message has no mark, and the line's own
    text is unchanged."""
    from selenium.webdriver.common.by import By

    b = _open(site, "upload")
    b.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()  # no file chosen: refused
    _wait(b, lambda d: d.find_element(By.ID, "status").text == "请选择文件 Choose files first", "the refusal")
    assert _ax_text(b, "#status") == "错误 Error：请选择文件 Choose files first"
    b.execute_script("SW.say('导入 3 家商户 imported; 1 行错误 rows refused', 'warn');")
    assert _ax_text(b, "#status") == "请核对 Check：导入 3 家商户 imported; 1 行错误 rows refused"
    assert "bad" in b.find_element(By.ID, "status").get_attribute("class")
    b.execute_script("SW.say('任务 Job 1');")
    assert _ax_text(b, "#status") == "任务 Job 1"


@pytest.mark.slow  # eight pages loaded in a browser to read one attribute each (the suite's budget)
def test_every_pages_status_line_is_announced(site):
    """The status line (a job finished, an import counted, a refusal) was a plain paragraph: a screen reader said
    nothing when it changed, so a reviewer who cannot see it never heard that an upload failed. It is a live region
    (role status, announced politely) on every page."""
    for page in PAGES:
        b = _open(site, page)
        status = _ax(b, "#status")
        assert (status["role"], status.get("live")) == ("status", "polite"), (page, status)


@pytest.mark.slow  # the map drawn in a browser and worked by keys (the suite's budget)
def test_a_map_cell_is_named_and_lists_its_cases_by_keyboard(site):
    """The map's cells and zones answered a mouse alone: Tab reached them, but a screen reader named each "graphics
    symbol" without its cell or count, and Enter on one did nothing, so a keyboard user could not list a cell's cases.
    Each is a button named as its tooltip, and Enter (or Space) lists its cases as a click does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.analytics_helpers import G1, G3

    b = _open(site, "map")
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map path.sw-cell")) == 4, "the four grid cells on the map")
    cell = _ax(b, f"#map path.sw-grid-{G1}")
    assert cell["role"] == "button" and cell.get("focusable"), cell
    assert cell["name"].startswith(f"网格 {G1} ") and cell["name"].endswith(" · 0 件"), cell  # no case in G1 here
    assert _ax(b, "#map path.sw-zone")["name"].startswith("区域 "), "the zone named too"
    b.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G1}").send_keys(Keys.ENTER)
    _wait(b, lambda d: G1 in d.find_element(By.CSS_SELECTOR, "#feature h2").text, "G1's cases listed by Enter")
    b.find_element(By.CSS_SELECTOR, f"#map path.sw-grid-{G3}").send_keys(" ")
    # the heading comes with 加载中 loading… before the list: its total is waited for, not read at once
    _wait(b, lambda d: G3 in d.find_element(By.CSS_SELECTOR, "#feature h2").text and d.find_elements(By.ID, "feature-total"),
          "G3's cases listed by Space")
    assert "0 件 cases" in b.find_element(By.ID, "feature-total").text


@pytest.mark.slow  # a case's evidence and a camera's snapshot loaded in a browser (the suite's budget)
def test_evidence_images_say_what_they_show(site):
    """The evidence photo's alt text was "evidence 证据" whatever the case, its thumbnails were read by their codes
    ("crop", "annotated_opened"), the boxes' drawing an unnamed image, and a camera's snapshot "snapshot 快照"
    whichever camera: each says what it shows, in Chinese first (the case's type, source and time; which image of the
    bundle; the camera), and the drawing is left to its labels, which name the boxes' classes in Chinese (客车 bus 0.94)
    where they were the detector's English alone."""
    from selenium.webdriver.common.by import By

    b = _open(site, "queue")
    img = _wait(b, lambda d: d.find_element(By.ID, "evidence-image"), "the current case's evidence photo")
    alt = img.get_attribute("alt")
    assert re.fullmatch(r"证据照片 Evidence photo: 机动车乱停放 Illegal parking \(motor vehicle\) · cam-01 · "
                        r"2025-03-14 10:00 · 检出框 \d+ 个 boxes", alt), alt
    thumbs = [t.get_attribute("alt") for t in b.find_elements(By.CSS_SELECTOR, "#detail .thumbs img")]
    assert thumbs and all(t.endswith(" · 机动车乱停放 Illegal parking (motor vehicle)") for t in thumbs), thumbs
    assert "标注图 annotated（立案时 at opening） · 机动车乱停放 Illegal parking (motor vehicle)" in thumbs
    assert "目标截图 crop · 机动车乱停放 Illegal parking (motor vehicle)" in thumbs
    # the boxes' labels name their class as staff read it, the detector's name beside it (it was "bus 0.94" alone)
    labels = [label.text for label in b.find_elements(By.CSS_SELECTOR, "#detail .box-label")]
    assert labels and all(re.fullmatch(r"客车 bus 0\.\d\d", text) for text in labels), labels
    images = [n for n in b.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
              if not n.get("ignored") and n.get("role", {}).get("value") == "image"]
    assert [n.get("name", {}).get("value", "") for n in images if not CJK.search(n.get("name", {}).get("value", ""))] == []

    b = _open(site, "cameras")
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#cameras li[data-camera='cam-01']"), "cam-01 listed").click()
    _wait(b, lambda d: d.find_element(By.ID, "snapshot-image").get_attribute("alt").startswith("摄像头 cam-01 快照 Camera snapshot，"),
          "cam-01's snapshot named")


def _unnamed(browser) -> list[tuple[str, str]]:
    """The page's controls a screen reader cannot name in the staff's language: (role, name) of each button, link,
    field, list, progress bar or other Tab stop whose accessible name is empty or has no Chinese (a placeholder such as
    swt_… is no name). A list's options are named by their data (UTF-8, a case's id) and left out."""
    controls = {"button", "link", "textbox", "combobox", "spinbutton", "checkbox", "listbox", "progressbar", "searchbox"}
    found = []
    for node in browser.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]:
        if node.get("ignored"):
            continue
        role, name = node.get("role", {}).get("value"), node.get("name", {}).get("value", "")
        focusable = any(p["name"] == "focusable" and p["value"].get("value") for p in node.get("properties", []))
        if (role in controls or focusable) and role not in {"RootWebArea", "option", "row", "listitem"} and not CJK.search(name):
            found.append((role, name))
    return found


@pytest.mark.slow  # the eight pages loaded in a browser and their accessibility trees read (the suite's budget)
def test_every_control_has_a_chinese_name(site):
    """A screen reader read the login's token field as "swt_…" (its placeholder), the scene and shop editors and the
    upload progress bars as nothing, and the map as "map" with "Zoom in" / "Zoom out": each control is named in
    Chinese, the staff's language, as the others were."""
    from selenium.webdriver.common.by import By

    ready = {"queue": "#detail h2", "map": "#map path.sw-cell", "cameras": "#cameras li"}
    unnamed = {}
    for page in PAGES:
        b = _open(site, page)
        if page in ready:
            _wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, ready[page]), f"the {page} page drawn")
        unnamed[page] = _unnamed(b)
    assert unnamed == {page: [] for page in PAGES}


@pytest.mark.slow  # the cameras page worked by keys in a browser (the suite's budget)
def test_a_camera_is_picked_by_keyboard(site):
    """The cameras list answered a click alone: Tab went from the navigation bar past it to the first camera's scene,
    so a keyboard user could open no other camera, and the one shown was marked by its background alone. Each camera
    is a Tab stop that Enter opens, the one shown marked current for a screen reader."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    b = _open(site, "cameras")
    _wait(b, lambda d: d.find_element(By.ID, "snapshot-image").get_attribute("alt").startswith("摄像头 cam-01 "), "cam-01 shown")
    b.execute_script("document.getElementById('cameras-q').focus();")  # the list's search box, just before it
    ActionChains(b).send_keys(Keys.TAB, Keys.TAB).perform()
    assert b.execute_script("return document.activeElement.dataset.camera;") == "cam-02"
    ActionChains(b).send_keys(Keys.ENTER).perform()
    _wait(b, lambda d: '"camera_id": "cam-02"' in d.find_element(By.ID, "scene").get_attribute("value"), "cam-02's scene")
    current = [li.get_attribute("aria-current") for li in b.find_elements(By.CSS_SELECTOR, "#cameras li")]
    assert current == ["false", "true"]


def _contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two CSS colours as the browser computes them (rgb(r, g, b) or rgba(…))."""
    def luminance(colour: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"[\d.]+", colour)[:3]]
        r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    hi, lo = sorted([luminance(a), luminance(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _mark(browser, selector: str) -> tuple[str, str]:
    """The colour of the bar drawn on the element `selector` finds (none: "none") and the background of its row, or
    of the navigation bar."""
    return tuple(browser.execute_script(
        "const s = getComputedStyle(document.querySelector(arguments[0]));"
        "const bar = s.boxShadow === 'none' ? 'none' : s.boxShadow.match(/rgba?\\([^)]*\\)/)[0];"
        "const row = getComputedStyle(document.querySelector(arguments[0]).closest('li, tr, nav'));"
        "return [bar, row.backgroundColor];", selector))


@pytest.mark.slow  # the cameras and scores pages worked in a browser (the suite's budget)
def test_the_current_page_camera_and_unit_are_marked(site):
    """The navigation bar's link to the page shown had no aria-current, so a screen reader did not say which page it
    was on, and the camera and the scores' unit shown were marked by a light background 1.3:1 against the others'
    (the unit's row not marked for a screen reader at all), and the page's link by its white bold text alone, 1.2:1
    against the others'. Each is aria-current, the camera and the unit carry a dark bar at their left and the page's
    link a light bar under it, each at least 3:1 against its background."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    b = _open(site, "cameras")
    # (CDP's accessibility tree gives no aria-current: the attribute is what Chromium hands a screen reader)
    assert {a.get_attribute("href").rsplit("/", 1)[-1]: a.get_attribute("aria-current")
            for a in b.find_elements(By.CSS_SELECTOR, "nav a")}["cameras"] == "page"
    assert [a.get_attribute("aria-current") for a in b.find_elements(By.CSS_SELECTOR, "nav a")].count("page") == 1
    bar, background = _mark(b, 'nav a[aria-current="page"]')
    assert bar != "none" and _contrast(bar, background) >= 3, (bar, background)
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#cameras li.current"), "cam-01 shown")
    bar, background = _mark(b, "#cameras li.current")
    assert bar != "none" and _contrast(bar, background) >= 3, (bar, background)

    b = _open(site, "scores")
    row = _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#scores tbody tr[data-unit]"), "a unit scored")
    row.send_keys(Keys.ENTER)
    _wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "#unit h2"), "the unit's deductions")
    assert [r.get_attribute("aria-current") for r in b.find_elements(By.CSS_SELECTOR, "#scores tbody tr[data-unit]")][0] == "true"
    bar, background = _mark(b, "#scores tr.current td:first-child")
    assert bar != "none" and _contrast(bar, background) >= 3, (bar, background)


@pytest.mark.slow  # a photo uploaded and triaged through the page (the suite's budget)
def test_an_upload_jobs_link_says_which_job(site, bus_jpg):
    """Each upload job's link was named by its job id alone, a code that told a screen reader user neither when nor
    what was uploaded. It is named as a triage job with its time and number of files, its id kept (the words shown)."""
    from selenium.webdriver.common.by import By

    from tests.test_review_pages import _upload_and_wait

    try:
        b = _upload_and_wait(site, bus_jpg)
        _wait(b, lambda d: "完成 done" in d.find_element(By.ID, "jobs").text, "the job listed done")
        link = b.find_element(By.CSS_SELECTOR, "#jobs li a")
        name = _ax(b, "#jobs li a")["name"]
        assert re.fullmatch(rf"分拣任务 Triage job {re.escape(link.text)} · \d{{4}}-\d\d-\d\d \d\d:\d\d · 1 文件 files", name), name
    finally:  # the admin's token back for the module's other tests
        b = site["browser"]
        b.execute_script("localStorage.setItem('sw_token', arguments[0]);", site["tokens"]["admin"])
