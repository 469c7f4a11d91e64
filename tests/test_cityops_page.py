"""The /ui/city page in headless Chromium against `streetwatch serve`: register import with its row errors."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.api_helpers import auth
from tests.test_cityops_registers import REGISTER
from tests.test_review_pages import _login, _wait, site  # noqa: F401  (fixture)


def test_city_page_imports_the_register_and_shows_bad_rows(site, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    b = site["browser"]
    _login(site)
    b.find_element(By.CSS_SELECTOR, "nav a[href='/ui/city']").click()  # reached from the other pages' navigation
    _wait(b, lambda d: urlsplit(d.current_url).path == "/ui/city", "the city page")
    assert b.find_element(By.CSS_SELECTOR, "nav a.active").text == "城市管理 City workflows"
    # empty tables say so (an empty register asks for an import), rather than look like a page that did not load
    _wait(b, lambda d: "import a CSV or Excel file" in d.find_element(By.CSS_SELECTOR, "#shops tbody tr.none").text, "the empty register")
    register = tmp_path / "shops.csv"
    register.write_text(REGISTER, encoding="utf-8")
    b.find_element(By.CSS_SELECTOR, "#shops-import input[type=file]").send_keys(str(register))
    b.find_element(By.CSS_SELECTOR, "#shops-import button").click()
    _wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#shops tbody tr")) == 2, "two imported shops")
    errors = [li.text for li in b.find_elements(By.CSS_SELECTOR, "#import-errors li")]
    assert len(errors) == 3 and "row 5: polygon: no usable frontage" in errors[0]
    assert "导入 2 家商户" in b.find_element(By.ID, "status").text

    b.find_element(By.CSS_SELECTOR, "#shops tbody tr[data-shop='91330106MA27XY0002']").click()
    box = b.find_element(By.ID, "shop-json")
    b.execute_script("const s = JSON.parse(arguments[0].value); s.contact = '李女士 13700002222'; arguments[0].value = JSON.stringify(s);", box)
    b.find_element(By.ID, "save-shop").click()
    _wait(b, lambda d: "已保存" in d.find_element(By.ID, "status").text, "the saved shop")
    shops = httpx.get(f"{site['base']}/api/v1/shops", headers=auth(site["token"]), timeout=10).json()
    assert next(s for s in shops if s["id"] == "91330106MA27XY0002")["contact"] == "李女士 13700002222"
    assert b.find_element(By.CSS_SELECTOR, "#warnings tbody").text == "暂无劝导告知 No warnings yet"
    assert b.find_element(By.CSS_SELECTOR, "#callout tbody").text == "暂无号码 No numbers on the call-out list"
