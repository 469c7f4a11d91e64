"""Case detail with signed evidence links, review actions with reviewer/time/audit, the dispatch webhook."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
from fastapi.testclient import TestClient
from PIL import Image

from detect.evidence import MANIFEST
from pipelines.cases.states import STATE_NAMES_ZH, CaseState
from pipelines.dispatch.dispatcher import apply_status
from pipelines.dispatch.webhook import sign
from pipelines.evidence_store import EvidenceStoreConfig
from pipelines.url_signing import ATTACHMENT
from tests.api_helpers import DCM, KEY, MODEL, auth, draft_cases, make_app, service, settings_for  # noqa: F401  (fixture)


def test_case_detail_serves_evidence_through_signed_expiring_links(service, bus_event, tmp_path):
    app, client, tokens, _ = service
    case_id, in_curb_lane = draft_cases(app, bus_event, [{}, {"zone_id": "curb-lane"}])
    answer = client.get(f"/api/v1/cases/{case_id}", headers=auth(tokens["inspector"]))
    assert answer.status_code == 200
    text = answer.text
    assert "file://" not in text and str(tmp_path) not in text and "evidence_ref" not in text  # no storage paths
    detail = answer.json()
    ev = detail["evidence"]
    assert ev["boxes"]["image"] == "originals/opened_original.jpg" and ev["boxes"]["boxes"][0]["class_name"] == "bus"
    assert ev["zone"]["polygon"] == [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]] and ev["zone"]["name"] is None
    named = client.get(f"/api/v1/cases/{in_curb_lane}", headers=auth(tokens["inspector"])).json()["evidence"]["zone"]
    assert (named["id"], named["name"]) == ("curb-lane", "文三路北侧路边")  # its scene's name, for the queue page's label
    assert {i["role"] for i in ev["images"]} >= {"original_opened", "annotated_opened", "crop"}
    assert [h["to"] for h in detail["history"]] == ["candidate"]
    assert (ev["model"]["id"], ev["verifier"]) == ("yolo11n-int8dq", MODEL.verifier.to_json())  # which heads judged it too

    image = client.get(ev["boxes"]["url"])  # no token: the signature is the permission
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(image.content)) as im:
        assert im.size == (ev["boxes"]["width"], ev["boxes"]["height"])

    url = ev["boxes"]["url"]
    path, query = url.split("?")
    params = dict(p.split("=") for p in query.split("&"))
    other = [i["url"] for i in ev["images"] if i["role"] == "crop"][0]
    refused = [
        client.get(path),  # no signature
        client.get(f"{path}?exp={params['exp']}&sig={'0' * 64}"),  # forged
        client.get(f"{path}?exp={int(params['exp']) + 60}&sig={params['sig']}"),  # lifetime stretched
        client.get(other.split("?")[0] + "?" + query),  # signature of another file
    ]
    assert [r.status_code for r in refused] == [422, 403, 403, 403]
    assert {r.json()["type"] for r in refused[1:]} == {"urn:streetwatch:problem:bad-link"}
    assert {r.json()["detail"] for r in refused[1:]} == {  # staff read it on the pages; clients parse the English part
        "证据链接被拒绝：签名无效，请重新打开案件获取新链接 evidence link refused: bad signature; reload the case for a fresh link"}
    signer = app.state.ctx.signer
    expired = client.get(signer.url(case_id, "originals/opened_original.jpg", now=time.time() - signer.expiry_s - 5))
    assert expired.status_code == 403 and expired.json()["detail"] == (
        "证据链接被拒绝：链接已过期，请重新打开案件获取新链接 evidence link refused: link expired; reload the case for a fresh link")
    for sneaky in ("../cases.db", "../../cases.db", "manifest.json/../../cases.db", "/etc/passwd"):
        # A validly signed path that is not a file of the manifest (dots escaped so the client keeps them).
        signed = signer.url(case_id, sneaky).replace("..", "%2E%2E")
        refused = client.get(signed)
        assert refused.status_code == 404 and "not a file of" in refused.json()["detail"], sneaky


def test_case_detail_gives_the_numbers_and_lines_its_evidence_read(service, bus_event):
    """The case page's 号码 Phones row read the manifest's top level, where the bundle never keeps them (they are under
    its `text`), so a small ad's number was never shown to its reviewer; a case without any says none."""
    app, client, tokens, _ = service
    posting, bus = draft_cases(app, bus_event, [{"violation_type": "flyposting", "texts": ["开锁 13800138000"],
                                                 "phones": ["13800138000"]}, {}])
    ev = client.get(f"/api/v1/cases/{posting}", headers=auth(tokens["inspector"])).json()["evidence"]
    assert (ev["texts"], ev["phones"]) == (["开锁 13800138000"], ["13800138000"])
    ev = client.get(f"/api/v1/cases/{bus}", headers=auth(tokens["inspector"])).json()["evidence"]
    assert (ev["texts"], ev["phones"]) == ([], [])


def test_a_case_stored_without_its_evidence_boxes_shows_those_of_its_bundle(service, bus_event):
    """A case the release before stored without its evidence boxes (its bundle uploaded by the spool's retry, which
    never wrote them) showed no box on the review page after the upgrade, its evidence there; they are its bundle's."""
    app, client, tokens, _ = service
    [case_id] = draft_cases(app, bus_event, [{}])
    store = app.state.ctx.store
    recorded = store.get(case_id).evidence_boxes
    store.update(case_id, evidence_boxes=None)  # as the release before left such a case

    boxes = client.get(f"/api/v1/cases/{case_id}", headers=auth(tokens["reviewer"])).json()["evidence"]["boxes"]
    assert {k: v for k, v in boxes.items() if k != "url"} == recorded and boxes["boxes"][0]["class_name"] == "bus"
    image = client.get(boxes["url"])
    with Image.open(io.BytesIO(image.content)) as im:
        assert image.status_code == 200 and im.size == (boxes["width"], boxes["height"])


def test_a_broken_scene_is_logged_once_per_change_not_at_each_view_of_a_case(service, bus_event, caplog):
    """The case page looked up its zone's name at each view, and a scene file that did not load logged an error each
    time (a reviewer going through a camera's cases wrote a line a click). It is looked up once per change of the files
    read, a broken one logged once, the evidence shown all the same; the file fixed, its name is shown at the next view."""
    import logging

    app, client, tokens, cams = service
    [case_id] = draft_cases(app, bus_event, [{"zone_id": "curb-lane"}])
    inspector = auth(tokens["inspector"])
    scene = cams["scene"].read_text(encoding="utf-8")
    cams["scene"].write_text(scene.replace("zones:", "zones: [", 1), encoding="utf-8")  # an edit gone wrong
    with caplog.at_level(logging.ERROR):
        views = [client.get(f"/api/v1/cases/{case_id}", headers=inspector) for _ in range(3)]
    assert [v.status_code for v in views] == [200] * 3
    assert {(v.json()["evidence"]["zone"]["id"], v.json()["evidence"]["zone"]["name"]) for v in views} == {("curb-lane", None)}
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and logged[0].startswith("case page: the name of zone curb-lane is not shown: "), logged
    cams["scene"].write_text(scene.replace("文三路北侧路边", "文三路北侧路边（改）"), encoding="utf-8")
    named = client.get(f"/api/v1/cases/{case_id}", headers=inspector).json()["evidence"]["zone"]
    assert named["name"] == "文三路北侧路边（改）"


def test_attachments_are_not_served_unsigned_where_no_unsigned_urls_were_handed_out(service, bus_event):
    """With no `public_base_url` (S3, or no platform fetching from here) and no URL key, /attachments served a
    queued case's photos to anyone with its id; only a signed URL opens one now (here signed by the app's key)."""
    app, client, tokens, _ = service
    [case_id] = draft_cases(app, bus_event, [{}])
    client.post(f"/api/v1/cases/{case_id}/confirm", headers=auth(tokens["reviewer"]), json={})
    ctx = app.state.ctx
    manifest = json.loads(ctx.evidence.read_bytes(ctx.store.get(case_id).evidence_ref, "manifest.json"))
    path = manifest["dispatch_attachments"][0]
    assert ctx.settings.unsigned_attachments() is None
    unsigned = client.get(f"/attachments/{case_id}/{path}")
    assert unsigned.status_code == 403 and unsigned.json()["detail"] == (
        "附件链接被拒绝：链接未签名（缺少 exp 和 sig） attachment link refused: link not signed (no exp and sig)")
    signed = client.get(f"/attachments/{case_id}/{path}?{ctx.signer.query(case_id, path, scope=ATTACHMENT)}")
    assert signed.status_code == 200 and signed.headers["content-type"] == "image/jpeg"


def test_review_actions_are_recorded_with_reviewer_time_and_audit(service, bus_event):
    app, client, tokens, _ = service
    store = app.state.ctx.store
    a, b, c = draft_cases(app, bus_event, [{}, {}, {}])
    reviewer = auth(tokens["reviewer"])

    edited = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "street_stall", "description": "三轮车占道"})
    assert edited.status_code == 200
    case = store.get(a)
    assert case.violation_type == "street_stall" and case.description == "三轮车占道"
    assert case.details["detected_type"] == "illegal_parking"  # what the detector proposed, for retraining
    assert [(r["field"], r["by"]) for r in case.details["revisions"]] == [("violation_type", "reviewer-user"),
                                                                           ("description", "reviewer-user")]

    confirmed = client.post(f"/api/v1/cases/{a}/confirm", headers=reviewer, json={"note": "clear"})
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "queued"
    case = store.get(a)
    assert (case.state, case.review_decision, case.reviewer, case.dispatch_target) == (CaseState.QUEUED, "approved", "reviewer-user", "dcm")
    assert case.reviewed_at is not None and [e.target for e in store.outbox_entries(case_id=a)] == ["dcm"]
    assert case.evidence_boxes["boxes"][0]["class_name"] == "bus"  # boxes kept for retraining
    late = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"description": "x"})
    assert late.status_code == 200  # queued cases may still be corrected before delivery

    rejected = client.post(f"/api/v1/cases/{b}/reject", headers=reviewer, json={"reason": "not_visible", "note": "blurred"})
    assert rejected.status_code == 200
    case = store.get(b)
    assert (case.state, case.review_decision, case.review_reason, case.review_note) == (CaseState.REJECTED, "rejected", "not_visible", "blurred")
    assert client.patch(f"/api/v1/cases/{b}", headers=reviewer, json={"type": "flyposting"}).status_code == 409
    # The reasons and their retraining meaning come from one place; `permitted` (retraining's word) is `legal`.
    [d] = draft_cases(app, bus_event, [{"violation_type": "flyposting"}])
    permitted = client.post(f"/api/v1/cases/{d}/reject", headers=reviewer, json={"reason": "permitted"})
    assert permitted.status_code == 200 and store.get(d).review_reason == "legal"
    reasons = {r["code"]: r for r in client.get("/api/v1/meta", headers=reviewer).json()["reject_reasons"]}
    assert reasons["privacy"]["hard_negative"] is False and reasons["not_a_violation"]["hard_negative"] is True

    only = client.post(f"/api/v1/cases/{c}/confirm", headers=reviewer, json={"dispatch": False})
    assert only.status_code == 200 and store.get(c).state is CaseState.CANDIDATE and store.get(c).review_decision == "approved"
    unknown = client.post(f"/api/v1/cases/{c}/confirm", headers=reviewer, json={"target": "nowhere"})
    assert unknown.status_code == 422 and "nowhere" in unknown.json()["detail"]

    audit = client.get(f"/api/v1/cases/{a}/audit", headers=reviewer).json()["items"]
    assert [(r["action"], r["actor"], r["role"]) for r in audit] == [("edit", "reviewer-user", "reviewer"),
                                                                      ("confirm", "reviewer-user", "reviewer"),
                                                                      ("edit", "reviewer-user", "reviewer")]
    assert audit[-1]["details"]["type"] == {"from": "illegal_parking", "to": "street_stall"} and audit[0]["at"]
    # the decision names the evidence it was made on: the digest `evidence verify --digest` ties a bundle to
    assert audit[1]["details"]["evidence_digest"] == store.get(a).evidence_digest is not None
    [refusal] = client.get(f"/api/v1/cases/{b}/audit", headers=reviewer).json()["items"]
    assert refusal["details"]["evidence_digest"] == store.get(b).evidence_digest is not None
    history = client.get(f"/api/v1/cases/{a}", headers=reviewer).json()["history"]
    assert [(h["to"], h["actor"]) for h in history] == [("candidate", "rules:batch-7/bus"), ("queued", "reviewer-user")]


def test_a_case_s_audit_log_is_answered_a_page_at_a_time_newest_first(service, bus_event):
    """A case's audit log answered its newest 200 records and no more, the older ones out of reach with nothing saying
    so; it answers a page, newest first ({items, total, limit, offset}), the other case's records apart."""
    from api.accounts import Principal, Role

    app, client, tokens, _ = service
    a, b = draft_cases(app, bus_event, [{}, {}])
    accounts, who = app.state.ctx.accounts, Principal("审核员", Role.REVIEWER, 1)
    for n in range(205):
        with accounts.recorded(who, "edit", a if n != 7 else b, {"n": n}):
            pass
    reviewer = auth(tokens["reviewer"])
    first = client.get(f"/api/v1/cases/{a}/audit", headers=reviewer).json()
    assert (first["total"], first["limit"], first["offset"], len(first["items"])) == (204, 200, 0, 200)
    older = client.get(f"/api/v1/cases/{a}/audit", headers=reviewer, params={"offset": 200}).json()
    assert [r["details"]["n"] for r in first["items"] + older["items"]] == [n for n in range(204, -1, -1) if n != 7]
    small = client.get(f"/api/v1/cases/{b}/audit", headers=reviewer, params={"limit": 1}).json()
    assert ([r["details"]["n"] for r in small["items"]], small["total"]) == ([7], 1)
    assert client.get(f"/api/v1/cases/{a}/audit", headers=reviewer, params={"limit": 501}).status_code == 422


def test_a_review_action_on_a_case_changed_since_it_was_loaded_is_refused_and_changes_nothing(service, bus_event):
    """Two reviewers on one queue: 李四 edits and confirms while 王芳's page still shows the cases as they were. 王芳's
    save (which sends the type, description and severity she saw) overwrote 李四's description and severity, and her
    reject of the case 李四 had just confirmed and queued went through; each action names the `updated_at` it saw, and
    one on a case changed since is 409 case-changed, Chinese first, naming who acted last, with nothing done."""
    app, client, tokens, _ = service
    store, accounts = app.state.ctx.store, app.state.ctx.accounts
    a, b = draft_cases(app, bus_event, [{}, {}])
    wang, li = auth(tokens["reviewer"]), auth(accounts.add("李四", "reviewer")[1])
    seen = {i: client.get(f"/api/v1/cases/{i}", headers=wang).json()["case"]["updated_at"] for i in (a, b)}  # 王芳's page

    assert client.patch(f"/api/v1/cases/{a}", headers=li, json={"description": "三轮车占道，已拍照", "severity": "serious"}).status_code == 200
    assert client.post(f"/api/v1/cases/{b}/confirm", headers=li, json={}).status_code == 200
    before = {i: store.get(i) for i in (a, b)}
    audits = len(accounts.audit_records())

    refused = [client.patch(f"/api/v1/cases/{a}", headers=wang, json={"type": "illegal_parking", "description": "",
                                                                       "severity": "general", "expected_updated_at": seen[a]}),
               client.post(f"/api/v1/cases/{a}/confirm", headers=wang, json={"dispatch": False, "expected_updated_at": seen[a]}),
               client.post(f"/api/v1/cases/{a}/confirm", headers=wang, json={"expected_updated_at": seen[a]}),
               client.post(f"/api/v1/cases/{b}/reject", headers=wang, json={"reason": "duplicate", "expected_updated_at": seen[b]})]
    assert [r.status_code for r in refused] == [409] * 4
    assert {r.json()["type"] for r in refused} == {"urn:streetwatch:problem:case-changed"}
    assert refused[0].json()["detail"].startswith(f"案件 {a} 在您打开后已被修改（最后操作人 李四，现为待审核），本次操作未执行，请刷新后再操作 ")
    assert refused[3].json()["detail"].startswith(f"案件 {b} 在您打开后已被修改（最后操作人 李四，现为待派遣）")
    # the same facts apart, for a page that reloads by itself and says so in its own words
    assert refused[0].json()["case"] == {"id": a, "state": "candidate", "last_by": "李四", "updated_at": store.get(a).updated_at.isoformat()}
    assert refused[3].json()["case"] == {"id": b, "state": "queued", "last_by": "李四", "updated_at": store.get(b).updated_at.isoformat()}
    assert {i: store.get(i) for i in (a, b)} == before and len(accounts.audit_records()) == audits  # nothing done
    assert [e.status for e in store.outbox_entries(case_id=b)] == ["pending"]

    fresh = client.get(f"/api/v1/cases/{a}", headers=wang).json()["case"]["updated_at"]  # reloaded: she sees 李四's change
    kept = client.patch(f"/api/v1/cases/{a}", headers=wang, json={"type": "street_stall", "expected_updated_at": fresh})
    assert kept.status_code == 200
    assert (kept.json()["violation_type"], kept.json()["description"]) == ("street_stall", "三轮车占道，已拍照")


def test_a_review_action_s_expected_updated_at_is_iso_8601_not_a_number(service, bus_event):
    """`expected_updated_at` in a body took a JSON number as Unix seconds (pydantic's lax datetime), though the schema
    and docs/service.md say ISO 8601, as the case gives its `updated_at`: a client sending a timestamp had its check
    made against some moment. A number is refused 422 naming the field, as the case search's `since` is, nothing done."""
    app, client, tokens, _ = service
    store = app.state.ctx.store
    [a] = draft_cases(app, bus_event, [{}])
    reviewer = auth(tokens["reviewer"])
    before = store.get(a)
    seconds = before.updated_at.timestamp()
    for send in (lambda body: client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "street_stall", **body}),
                 lambda body: client.post(f"/api/v1/cases/{a}/confirm", headers=reviewer, json={"dispatch": False, **body}),
                 lambda body: client.post(f"/api/v1/cases/{a}/reject", headers=reviewer, json={"reason": "duplicate", **body})):
        for number in (seconds, int(seconds), str(int(seconds))):
            refused = send({"expected_updated_at": number})
            assert refused.status_code == 422, refused.text
            assert [e["loc"] for e in refused.json()["errors"]] == [["body", "expected_updated_at"]], refused.text
            assert f"{number} is a number, not a date-time: give ISO 8601" in refused.json()["detail"]
    assert store.get(a) == before
    taken = client.patch(f"/api/v1/cases/{a}", headers=reviewer,
                         json={"type": "street_stall", "expected_updated_at": before.updated_at.isoformat()})
    assert taken.status_code == 200 and taken.json()["violation_type"] == "street_stall", taken.text


def test_a_confirm_without_dispatch_checks_the_case_in_the_transaction_that_approves_it(service, bus_event, monkeypatch):
    """Confirm with `dispatch: false` looked the case up, found a candidate, and wrote the approval separately: 李四's
    rejection landing in between (his thread runs right after 王芳's request read the case) was overwritten with an
    approval on a rejected case, and a second reviewer's confirm overwrote the first's approval. The check and the
    write are one transaction: the later action is refused naming why, the earlier one stands."""
    app, client, tokens, _ = service
    store, accounts = app.state.ctx.store, app.state.ctx.accounts
    a, b = draft_cases(app, bus_event, [{}, {}])
    wang, li = auth(tokens["reviewer"]), auth(accounts.add("李四", "reviewer")[1])
    rival = threading.Thread(target=lambda: client.post(f"/api/v1/cases/{a}/reject", headers=li, json={"reason": "duplicate"}))
    read = store.get

    def read_then_rival_acts(case_id: str):
        case = read(case_id)
        if case_id == a and not rival.ident:  # 王芳's request has read the case: 李四's rejection goes through now
            rival.start()
            rival.join()
        return case

    monkeypatch.setattr(store, "get", read_then_rival_acts)
    late = client.post(f"/api/v1/cases/{a}/confirm", headers=wang, json={"dispatch": False})
    assert rival.ident and late.status_code == 409 and late.json()["type"] == "urn:streetwatch:problem:invalid-transition"
    assert late.json()["detail"].startswith(f"案件 {a} 现为已作废，只有待审核的案件可以确认 ")
    case = store.get(a)
    assert (case.state, case.review_decision, case.reviewer) == (CaseState.REJECTED, "rejected", "李四")
    assert [r["action"] for r in client.get(f"/api/v1/cases/{a}/audit", headers=wang).json()["items"]] == ["reject"]

    assert client.post(f"/api/v1/cases/{b}/confirm", headers=li, json={"dispatch": False, "note": "属实"}).status_code == 200
    again = client.post(f"/api/v1/cases/{b}/confirm", headers=wang, json={"dispatch": False})
    assert again.status_code == 409 and again.json()["detail"].startswith(f"案件 {b} 已由 李四 确认（未派遣），本次确认未执行")
    assert (store.get(b).reviewer, store.get(b).review_note) == ("李四", "属实")
    assert client.post(f"/api/v1/cases/{b}/confirm", headers=wang, json={}).json()["state"] == "queued"  # dispatch it later


def test_a_rejection_in_review_is_reopened_and_one_by_a_platform_triage_or_long_ago_is_not(service, bus_event):
    """Rejected was final, so a reviewer's mis-click could not be undone. POST /cases/{id}/reopen makes a case rejected
    in review a candidate again (unreviewed, back in the queue), with who, why and whose rejection in its history and
    the audit log, within `service.reopen_within_days`; a case a platform voided, triage withdrew, whose withdrawn
    delivery a dispatcher is settling, or rejected too long ago is 409 not-reopenable naming why, Chinese first, with
    nothing done. One queued before its rejection is reopened once its entry is closed unsent, and confirmed again it
    gets that entry back (one delivery)."""
    app, client, tokens, _ = service
    store = app.state.ctx.store
    a, b, c, d, e = draft_cases(app, bus_event, [{}, {}, {}, {}, {}])
    reviewer = auth(tokens["reviewer"])
    assert client.post(f"/api/v1/cases/{a}/reject", headers=reviewer, json={"reason": "duplicate", "note": "点错了"}).status_code == 200
    assert client.get(f"/api/v1/cases/{a}", headers=reviewer).json()["reopen"] == {"allowed": True, "why_not": None}
    assert client.get(f"/api/v1/cases/{b}", headers=reviewer).json()["reopen"] is None  # not rejected: nothing to undo
    # what the queue page offers: a rejected case only its tags, severity and notes; a candidate everything
    assert client.get(f"/api/v1/cases/{a}", headers=reviewer).json()["actions"] == ["tag", "note"]
    assert client.get(f"/api/v1/cases/{b}", headers=reviewer).json()["actions"] == ["confirm", "reject", "edit", "tag", "note"]
    blank = client.post(f"/api/v1/cases/{a}/reopen", headers=reviewer, json={"note": "  "})
    assert blank.status_code == 422 and blank.json()["detail"].startswith("body.note: 请填写重新打开的原因")
    reopened = client.post(f"/api/v1/cases/{a}/reopen", headers=reviewer, json={"note": "误点驳回，应为违法"})
    assert reopened.status_code == 200
    case = store.get(a)
    assert (case.state, case.review_decision, case.reviewer, case.review_reason) == (CaseState.CANDIDATE, None, None, None)
    last = store.history(a)[-1]
    assert (last.from_state, last.to_state, last.actor, last.reason) == (CaseState.REJECTED, CaseState.CANDIDATE,
                                                                         "reviewer-user", "误点驳回，应为违法")
    assert last.details["reopened"]["rejected_by"] == "reviewer-user" and last.details["reopened"]["review_note"] == "点错了"
    [audit] = [r for r in client.get(f"/api/v1/cases/{a}/audit", headers=reviewer).json()["items"] if r["action"] == "reopen"]
    assert audit["details"]["note"] == "误点驳回，应为违法" and audit["details"]["review_reason"] == "duplicate"
    queue = client.get("/api/v1/cases", headers=reviewer, params={"state": "candidate", "reviewed": "false"}).json()
    assert a in [i["id"] for i in queue["items"]]
    assert client.post(f"/api/v1/cases/{a}/confirm", headers=reviewer, json={}).json()["state"] == "queued"

    assert client.post(f"/api/v1/cases/{b}/confirm", headers=reviewer, json={}).status_code == 200
    store.apply_remote_state(b, CaseState.REJECTED, actor="dispatch:dcm", reason="平台作废")
    store.transition(c, CaseState.REJECTED, actor="triage:job-1", reason="照片已重新分拣", only_from=CaseState.CANDIDATE)
    store.review(d, approve=False, reviewer="reviewer-user", reason_code="other", now=datetime.now(UTC) - timedelta(days=8))
    assert client.post(f"/api/v1/cases/{e}/confirm", headers=reviewer, json={}).status_code == 200
    assert client.post(f"/api/v1/cases/{e}/reject", headers=reviewer, json={"reason": "other"}).status_code == 200
    [entry] = store.outbox_entries(case_id=e)
    store.claim_due(owner="dispatcher-1")  # a dispatcher is settling its withdrawn delivery right now
    before = {i: store.get(i) for i in (b, c, d, e)}
    refused = {i: client.post(f"/api/v1/cases/{i}/reopen", headers=reviewer, json={"note": "重新打开"}) for i in (b, c, d, e)}
    assert {r.status_code for r in refused.values()} == {409}
    assert {r.json()["type"] for r in refused.values()} == {"urn:streetwatch:problem:not-reopenable"}
    assert refused[b].json()["detail"].startswith(f"案件 {b} 由派遣平台作废（dispatch:dcm：平台作废），不能在此重新打开 ")
    assert refused[c].json()["detail"].startswith(f"案件 {c} 由 triage:job-1 撤回（照片已重新分拣），不是审核驳回，不能重新打开 ")
    assert "已超过 7 天，不能重新打开" in refused[d].json()["detail"]
    assert refused[e].json()["detail"].startswith(f"案件 {e} 正在撤回对 dcm 的派遣，请稍后再试 ")
    assert {i: store.get(i) for i in (b, c, d, e)} == before
    store.close_withdrawn(entry.id, owner="dispatcher-1")  # settled: never sent, so the rejection can be undone
    assert client.post(f"/api/v1/cases/{e}/reopen", headers=reviewer, json={"note": "误点驳回"}).status_code == 200
    assert client.post(f"/api/v1/cases/{e}/confirm", headers=reviewer, json={}).json()["state"] == "queued"
    assert [(x.id, x.status) for x in store.outbox_entries(case_id=e)] == [(entry.id, "pending")]  # the same entry back
    shown = client.get(f"/api/v1/cases/{c}", headers=reviewer).json()["reopen"]
    assert shown == {"allowed": False, "why_not": refused[c].json()["detail"]}
    again = client.post(f"/api/v1/cases/{b}/reopen", headers=reviewer, json={"note": "x"})
    assert again.status_code == 409


def test_a_reopen_refusal_names_a_folder_by_its_setting(service, bus_event):
    """A refusal to reopen quotes the reason the case was rejected with, which may name an evidence folder (a job's
    case stopped because its evidence could not be written): POST /cases/{id}/reopen answered it with the server's
    path, which the case's detail already named by its setting; both name it `evidence_store.local_root`."""
    app, client, tokens, _ = service
    ctx = app.state.ctx
    root = ctx.settings.evidence_store.local_root.resolve()
    [a] = draft_cases(app, bus_event, [{}])
    ctx.store.transition(a, CaseState.REJECTED, actor="triage:job-1", only_from=CaseState.CANDIDATE,
                         reason=f"cannot write evidence to {root}/{a}: disk full")
    refused = client.post(f"/api/v1/cases/{a}/reopen", headers=auth(tokens["reviewer"]), json={"note": "重新打开"})
    assert refused.status_code == 409 and refused.json()["type"] == "urn:streetwatch:problem:not-reopenable"
    detail = refused.json()["detail"]
    assert f"cannot write evidence to evidence_store.local_root/{a}: disk full" in detail and str(root) not in detail
    shown = client.get(f"/api/v1/cases/{a}", headers=auth(tokens["reviewer"])).json()["reopen"]
    assert shown == {"allowed": False, "why_not": detail}


def test_a_retyped_camera_case_gets_the_severity_its_zone_gives_the_new_type(service, bus_event):
    """A camera's case kept the severity its zone gave its first type when a reviewer retyped it: a bike case in
    cam-01's sidewalk-north (a main road: parked cars 较重 major, bikes the type's 一般 general) retyped as a parked car
    stayed general. The new type gets the zone's severity, as the rules would give it; a case whose zone is no longer
    in the scene keeps its own, and a scene that cannot be read is 503 naming the camera, nothing changed."""
    app, client, tokens, cams = service
    a, b = draft_cases(app, bus_event, [{"violation_type": "nonmotor_parking", "zone_id": "sidewalk-north", "severity": "general"},
                                        {"violation_type": "nonmotor_parking", "zone_id": "gone", "severity": "general"}])
    reviewer = auth(tokens["reviewer"])
    retyped = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "illegal_parking"})
    assert retyped.status_code == 200, retyped.text
    assert retyped.json()["details"]["severity"] == "major"
    assert retyped.json()["details"]["revisions"][-1] | {"at": None} == {
        "field": "severity", "from": "general", "to": "major", "by": "reviewer-user", "at": None, "derived_from": "violation_type"}
    back = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "nonmotor_parking"})
    assert back.json()["details"]["severity"] == "general"
    kept = client.patch(f"/api/v1/cases/{b}", headers=reviewer, json={"type": "illegal_parking"})
    assert kept.status_code == 200 and kept.json()["details"]["severity"] == "general"
    cams["scene"].write_text("zones: [", encoding="utf-8")  # hand-edited into a file no watcher loads
    unusable = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "illegal_parking"})
    assert unusable.status_code == 503 and unusable.json()["detail"].startswith(
        "scene of camera cam-01 unusable: scene file of camera cam-01: not valid YAML")  # named, not by its server path
    assert str(cams["scene"].parent) not in unusable.json()["detail"]
    assert app.state.ctx.store.get(a).violation_type == "nonmotor_parking"


def map_zones(path: Path, *, grade: str = "main", grades: str | None = None) -> Path:
    """Writes `service.triage.scene_zones`'s map zones at `path`: one no-parking street, wensan-road, of `grade`,
    naming the grades file `grades` (beside it) where given; a test rewrites it to regrade the street while the app
    runs, so the zones' loading again on a change is what it sees."""
    ring = [[[120.15, 30.27], [120.16, 30.27], [120.16, 30.28], [120.15, 30.28], [120.15, 30.27]]]
    path.write_text(json.dumps({"type": "FeatureCollection", **({"grades": grades} if grades else {}), "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": ring},
         "properties": {"id": "wensan-road", "kind": "no_parking", "grade": grade}}]}), encoding="utf-8")
    return path


def photo_case_in_map_zone(tmp_path: Path, bus_event, zones: Path) -> tuple[Any, dict[str, str], str]:
    """An app whose `service.triage.scene_zones` is `zones`, its tokens, and a photo's bike case (一般 general) on
    wensan-road: a retype then gets its severity from that street's grade."""
    app, tokens = make_app(settings_for(tmp_path, dispatch=DCM, triage={"scene_zones": str(zones)}))
    [a] = draft_cases(app, bus_event, [{"source_kind": "photo_batch", "source_id": "batch-1", "zone_id": "wensan-road",
                                        "violation_type": "nonmotor_parking", "severity": "general"}])
    return app, tokens, a


@contextmanager
def retyping(tmp_path: Path, bus_event, zones: Path) -> Iterator[Callable[[str], str]]:
    """`retyped(type)`: a reviewer's retype of `photo_case_in_map_zone`'s case to `type` (200) -> its severity after,
    on one running app, so a test can change the zones' files between retypes."""
    app, tokens, a = photo_case_in_map_zone(tmp_path, bus_event, zones)
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        def retyped(vtype: str) -> str:
            answer = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": vtype})
            assert answer.status_code == 200, answer.text
            return answer.json()["details"]["severity"]

        yield retyped


def test_a_retyped_photo_case_in_a_map_zone_gets_the_severity_the_zone_gives_the_new_type(tmp_path, monkeypatch,
                                                                                         bus_event):
    """A photo's case opened in a map zone (`service.triage.scene_zones`) kept the severity the zone gave its first type
    when a reviewer retyped it: a bike case on a main road's no-parking street retyped as a parked car stayed 一般
    general. It gets the zone's severity for the new type, as upload jobs' rules give it; a zone no longer in the file
    keeps its own, and a file that cannot be read is 503 naming its setting, nothing changed."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    zones = map_zones(tmp_path / "zones.geojson")
    app, tokens = make_app(settings_for(tmp_path, dispatch=DCM, triage={"scene_zones": str(zones)}))
    photo = {"source_kind": "photo_batch", "source_id": "batch-1", "violation_type": "nonmotor_parking", "severity": "general"}
    a, b = draft_cases(app, bus_event, [{**photo, "zone_id": "wensan-road"}, {**photo, "zone_id": "gone"}])
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        retyped = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "illegal_parking"})
        assert retyped.status_code == 200, retyped.text
        assert retyped.json()["details"]["severity"] == "major"
        assert retyped.json()["details"]["revisions"][-1]["derived_from"] == "violation_type"
        kept = client.patch(f"/api/v1/cases/{b}", headers=reviewer, json={"type": "illegal_parking"})
        assert kept.status_code == 200 and kept.json()["details"]["severity"] == "general"
        zones.write_text("{", encoding="utf-8")
        unusable = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "nonmotor_parking"})
        assert unusable.status_code == 503, unusable.text
        assert unusable.json()["detail"].startswith(
            "service.triage.scene_zones unusable: service.triage.scene_zones: not valid JSON")
        assert str(tmp_path) not in unusable.json()["detail"]
    assert app.state.ctx.store.get(a).violation_type == "illegal_parking"


def test_a_changed_map_zones_file_is_read_again_for_a_retype(tmp_path, monkeypatch, bus_event):
    """The map zones a retype gives a photo case its zone's severity by (`service.triage.scene_zones`) are loaded once and
    again when the file changes: a street regraded from main to secondary gives a parked car the type's severity, not
    the main road's it had when the file was first read."""
    import os

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    zones = map_zones(tmp_path / "zones.geojson")
    with retyping(tmp_path, bus_event, zones) as retyped:
        assert retyped("illegal_parking") == "major"  # a main road's
        stamp = zones.stat().st_mtime_ns
        map_zones(zones, grade="secondary")
        os.utime(zones, ns=(stamp + 10**9, stamp + 10**9))  # changed a second later, whatever the clock's steps
        assert retyped("nonmotor_parking") == "general"
        assert retyped("illegal_parking") == "general"  # the type's: a secondary road's raises it no more


def test_a_changed_grades_file_of_the_map_zones_is_read_again_for_a_retype(tmp_path, monkeypatch, bus_event):
    """The map zones were loaded again when their file changed, not when the grades file it names did (no setting
    names it), so a main road whose grade was made milder while `serve` ran still gave a retyped parked car the main
    road's severity; an edit of the grades file alone is taken at the next retype."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    (tmp_path / "zones").mkdir()
    zones, grades = map_zones(tmp_path / "zones" / "zones.geojson", grades="grades.yaml"), tmp_path / "zones" / "grades.yaml"

    def main_road(illegal_parking: str) -> None:
        grades.write_text("grades:\n  main:\n    name_zh: 主要道路\n    name_en: Main road\n    thresholds:\n"
                          f"      illegal_parking: {illegal_parking}\n", encoding="utf-8")

    main_road("{dwell_s: 60, severity: major}")
    with retyping(tmp_path, bus_event, zones) as retyped:
        assert retyped("illegal_parking") == "major"  # the main road's, as first read
        main_road("{dwell_s: 120}")  # the zones file untouched
        assert retyped("nonmotor_parking") == "general"
        assert retyped("illegal_parking") == "general"  # the type's: the milder main road raises it no more


def test_a_map_zones_grades_file_that_cannot_be_read_is_named_not_by_its_server_path(tmp_path, monkeypatch, bus_event):
    """The grades file a map-zones file names (its `grades:`) is named by no setting, so the 503 of a retype whose
    zones it made unreadable quoted its server path (/srv/.../grades.yaml: not valid YAML); it is named as the cameras
    file's is, the grades file of `service.triage.scene_zones`."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    (tmp_path / "zones").mkdir()
    zones = map_zones(tmp_path / "zones" / "zones.geojson", grades="grades.yaml")
    (tmp_path / "zones" / "grades.yaml").write_text("grades: [", encoding="utf-8")
    app, tokens, a = photo_case_in_map_zone(tmp_path, bus_event, zones)
    with TestClient(app, raise_server_exceptions=False) as client:
        unusable = client.patch(f"/api/v1/cases/{a}", headers=auth(tokens["reviewer"]), json={"type": "illegal_parking"})
    assert unusable.status_code == 503, unusable.text
    assert unusable.json()["detail"].startswith(
        "service.triage.scene_zones unusable: grades file of service.triage.scene_zones: not valid YAML"), unusable.text
    assert str(tmp_path) not in unusable.json()["detail"]


def test_an_action_the_case_s_state_refuses_is_said_in_chinese_first(service, bus_event):
    """A reviewer who lists rejected cases (the state filter) and presses c on one, or corrects the type of a case
    already sent, read only English on the queue page's status line: each refusal names the states in staff's
    words first, the English after as it was."""
    app, client, tokens, _ = service
    a, b = draft_cases(app, bus_event, [{}, {}])
    reviewer = auth(tokens["reviewer"])
    assert client.post(f"/api/v1/cases/{a}/reject", headers=reviewer, json={"reason": "duplicate"}).status_code == 200
    answers = [client.post(f"/api/v1/cases/{a}/confirm", headers=reviewer, json={}),
               client.post(f"/api/v1/cases/{a}/confirm", headers=reviewer, json={"dispatch": False}),
               client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "street_stall"})]
    assert [r.status_code for r in answers] == [409, 409, 409]
    assert [r.json()["detail"] for r in answers] == [
        f"案件 {a} 现为已作废，不能改为待派遣（可改为：无（已是最终状态）） "
        f"case {a}: cannot move from rejected to queued; allowed from rejected: none (final state)",
        f"案件 {a} 现为已作废，只有待审核的案件可以确认 case {a} is rejected: only candidate cases can be confirmed",
        f"案件 {a} 现为已作废，只有待审核、待派遣的案件可以修改类型、描述和地点 "
        f"case {a} is rejected: only candidate, queued cases can be edited"]
    assert client.post(f"/api/v1/cases/{b}/confirm", headers=reviewer, json={}).status_code == 200
    again = client.post(f"/api/v1/cases/{b}/confirm", headers=reviewer, json={})
    assert again.json()["detail"].startswith(f"案件 {b} 现为待派遣，不能改为待派遣（可改为：已作废、已上报） ")


def test_a_reviewer_cannot_reject_a_case_a_platform_holds_and_the_platform_s_voiding_moves_it(service, bus_event):
    """A reviewer rejected a case the platform had (已上报, 已立案): here it read 已作废 with their reason, status updates
    stopped, and the platform went on sending a handler. It is 409 case-on-platform naming the platform and its task
    number, Chinese first, nothing done (no audit record); the platform's 作废 by webhook moves it to rejected. A
    queued case is still rejected here (withdrawn before it leaves)."""
    app, client, tokens, _ = service
    store = app.state.ctx.store
    reviewer, integration = auth(tokens["reviewer"]), auth(tokens["integration"])
    held, queued = draft_cases(app, bus_event, [{}, {"source_id": "cam-02"}])
    for case_id in (held, queued):
        client.post(f"/api/v1/cases/{case_id}/confirm", headers=reviewer, json={})
    assert client.get(f"/api/v1/cases/{queued}", headers=reviewer).json()["actions"] == ["reject", "edit", "tag", "note"]
    store.mark_delivered(store.outbox_entries(case_id=held)[0].id, "T-300")
    hook = "/api/v1/dispatch/dcm/webhook"

    for state, zh, status in ((CaseState.SUBMITTED, "已上报", "立案"), (CaseState.ACCEPTED, "已立案", None)):
        before = store.get(held)
        refused = client.post(f"/api/v1/cases/{held}/reject", headers=reviewer,
                              json={"reason": "not_a_violation", "expected_updated_at": before.updated_at.isoformat()})
        assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"] == "urn:streetwatch:problem:case-on-platform"
        assert "reject" not in client.get(f"/api/v1/cases/{held}", headers=reviewer).json()["actions"]  # the page offers none
        assert problem["detail"] == (f"案件 {held} 已上报 dcm（任务号 T-300，现为{zh}），由平台处理，不能在此作废：请在平台作废，"
                                     f"平台的状态更新会同步到这里 — case {held} is held by dcm as T-300 ({state.value}): it "
                                     "cannot be rejected here; void it on the platform, whose status update then moves it here")
        assert problem["case"] == {"id": held, "state": state.value, "dispatch_target": "dcm", "dispatch_ref": "T-300"}
        assert store.get(held) == before
        if status:
            assert client.post(hook, json={"taskNumber": "T-300", "status": status}, headers=integration).status_code == 200
    assert "reject" not in [r["action"] for r in client.get(f"/api/v1/cases/{held}/audit", headers=reviewer).json()["items"]]

    voided = client.post(hook, json={"taskNumber": "T-300", "status": "作废", "note": "非违法"}, headers=integration)
    assert voided.status_code == 200 and voided.json()["state"] == "rejected"
    last = store.history(held)[-1]
    assert (last.from_state, last.to_state, last.actor) == (CaseState.ACCEPTED, CaseState.REJECTED, "dispatch:dcm")
    withdrawn = client.post(f"/api/v1/cases/{queued}/reject", headers=reviewer, json={"reason": "duplicate"})
    assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "rejected"


def test_the_refusal_to_reject_a_case_open311_holds_says_to_close_it_there(tmp_path, monkeypatch, bus_event):
    """The 409 said 请在平台作废 for every platform, but Open311 has no voided status: a request the city closes comes
    back as handled. For an Open311 target it says to close it there and what that moves the case to here (a camera
    case is re-checked, a photo case closed), which the closing then does."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    city = {"targets": {"city311": {"adapter": "open311", "url": "http://127.0.0.1:9/open311"}}}
    app, tokens = make_app(settings_for(tmp_path, dispatch=city))
    store, reviewer = app.state.ctx.store, auth(tokens["reviewer"])
    kinds = {"camera": CaseState.VERIFYING, "photo_batch": CaseState.CLOSED}
    drafted = draft_cases(app, bus_event, [{"source_kind": kind, "source_id": f"src-{kind}"} for kind in kinds])
    with TestClient(app) as client:
        for i, (case_id, after) in enumerate(zip(drafted, kinds.values())):
            confirmed = client.post(f"/api/v1/cases/{case_id}/confirm", headers=reviewer, json={})
            assert confirmed.status_code == 200, confirmed.text
            store.mark_delivered(store.outbox_entries(case_id=case_id)[0].id, f"SR-{i}")
            refused = client.post(f"/api/v1/cases/{case_id}/reject", headers=reviewer, json={"reason": "duplicate"})
            assert refused.status_code == 409 and refused.json()["type"] == "urn:streetwatch:problem:case-on-platform"
            assert refused.json()["detail"] == (
                f"案件 {case_id} 已上报 city311（任务号 SR-{i}，现为已上报），由平台处理，不能在此作废：city311 没有作废状态，"
                f"请在平台办结/关闭，关闭后这里转为{STATE_NAMES_ZH[after]} — case {case_id} is held by city311 as SR-{i} "
                f"(submitted): it cannot be rejected here; city311 has no voided status: close it there, and its closing "
                f"moves the case here to {after.value}")
            assert apply_status(store, case_id, "handled", actor="dispatch:city311")
            assert store.get(case_id).state is after


def test_a_reviewer_sets_a_case_s_place_and_a_bad_one_is_refused_naming_the_field(tmp_path, monkeypatch, bus_event):
    """PATCH /cases/{id} could not set a place, so a photo without GPS could never be sent anywhere: it takes
    `address` and `lat`/`lon` (the case filed in the grid cell of `service.triage.grid` they lie in, as upload
    jobs do, with the severity of that cell's road grade; both null remove them), audited like the other edits, and
    answers a bad place 422 naming the field, Chinese first."""
    from tests.analytics_helpers import G3, LAT0, LON0, write_grid

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    grid = write_grid(tmp_path / "grid.geojson")
    cells = json.loads(grid.read_text(encoding="utf-8"))
    cells["features"][2]["properties"]["grade"] = "main"  # G3: a main road, where parking is 较重 major
    grid.write_text(json.dumps(cells, ensure_ascii=False), encoding="utf-8")
    settings = settings_for(tmp_path, dispatch=DCM, triage={"grid": str(grid)})
    app, tokens = make_app(settings)
    [a] = draft_cases(app, bus_event, [{"address": None}])  # the bus photo judged as a whole: severity general
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        edited = client.patch(f"/api/v1/cases/{a}", headers=reviewer,
                              json={"address": " 文三路 100 号 ", "lat": LAT0 + 0.001, "lon": LON0 + 0.009})
        assert edited.status_code == 200, edited.text
        assert {k: edited.json()[k] for k in ("address", "lat", "lon", "grid_cell")} == {
            "address": "文三路 100 号", "lat": LAT0 + 0.001, "lon": LON0 + 0.009, "grid_cell": G3}
        [record] = client.get(f"/api/v1/cases/{a}/audit", headers=reviewer).json()["items"]
        assert record["details"]["address"] == {"from": None, "to": "文三路 100 号"}
        assert record["details"]["grid_cell"] == {"from": "330106001001", "to": G3}
        assert record["details"]["severity"] == {"from": "general", "to": "major"}  # the new cell's road grade
        assert edited.json()["details"]["revisions"][-1]["derived_from"] == "grid_cell"
        retyped = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "nonmotor_parking"})
        assert retyped.status_code == 200 and retyped.json()["details"]["severity"] == "general"  # that type on a main road
        assert client.get(f"/api/v1/cases/{a}/audit", headers=reviewer).json()["items"][0]["details"]["severity"] == {
            "from": "major", "to": "general"}
        assert client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"type": "illegal_parking"}).json()["details"][
            "severity"] == "major"

        # each refusal names its field in errors[].loc, as FastAPI's own do (it was only the detail's first word)
        for body, detail in (({"address": ""}, "address: 地址为空 — the address is empty"),
                             ({"lon": 120.1}, "lat: 经纬度须同时填写 — give both lat and lon, or neither (lat is missing)"),
                             ({"lat": 30.2, "lon": 200}, "lon: 坐标超出范围（200.0，应在 -180 到 180 之间） — lon 200.0 is not between")):
            refused = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json=body)
            assert refused.status_code == 422 and refused.json()["detail"].startswith(f"body.{detail}"), refused.text
            assert [e["loc"] for e in refused.json()["errors"]] == [["body", detail.split(":")[0]]], refused.text
        assert app.state.ctx.store.get(a).address == "文三路 100 号"

        kept = grid.read_text(encoding="utf-8")
        grid.write_text("{", encoding="utf-8")  # hand-edited into a file no job loads: named by its setting, not path
        unusable = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"lat": LAT0, "lon": LON0})
        assert unusable.status_code == 503, unusable.text
        assert unusable.json()["detail"].startswith("service.triage.grid unusable: service.triage.grid: not valid JSON")
        assert str(tmp_path) not in unusable.json()["detail"]
        grid.write_text(kept, encoding="utf-8")

        # coordinates set by mistake: both null (not left out) remove them, the cell and that cell's severity with them
        assert client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"lat": None}).status_code == 422  # not a removal
        cleared = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"lat": None, "lon": None})
        assert cleared.status_code == 200, cleared.text
        assert {k: cleared.json()[k] for k in ("address", "lat", "lon", "grid_cell")} == {
            "address": "文三路 100 号", "lat": None, "lon": None, "grid_cell": None}
        assert cleared.json()["details"]["severity"] == "general"
        record = client.get(f"/api/v1/cases/{a}/audit", headers=reviewer).json()["items"][0]  # newest first
        assert record["details"]["lat"] == {"from": LAT0 + 0.001, "to": None} and record["details"]["grid_cell"]["to"] is None

        client.post(f"/api/v1/cases/{a}/reject", headers=reviewer, json={"reason": "not_visible"})
        late = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"address": "学院路 1 号"})
        assert late.status_code == 409 and "only candidate, queued cases can be edited" in late.json()["detail"]


def test_text_with_a_control_character_is_refused_naming_the_field_on_postgresql(tmp_path, monkeypatch, bus_event,
                                                                              fresh_postgres_url):
    """PostgreSQL refuses NUL in text, so a description, a review note, a shop's name or a call-out note with one (a
    paste) was a 500 there: each is refused 422 naming the field, Chinese first, before anything is written; a
    description keeps its line breaks and tabs."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    app, tokens = make_app(settings_for(tmp_path, dispatch=DCM, cases_url=fresh_postgres_url))
    a, b = draft_cases(app, bus_event, [{}, {}])
    reviewer = auth(tokens["reviewer"])
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path, body, field in (
                ("patch", f"/api/v1/cases/{a}", {"description": "占道\x00经营"}, "body.description"),
                ("post", f"/api/v1/cases/{a}/confirm", {"dispatch": False, "note": "ok\x00"}, "body.note"),
                ("post", f"/api/v1/cases/{b}/reject", {"reason": "legal", "note": "\x00"}, "body.note"),
                ("put", "/api/v1/callout/13800000000", {"status": "cut_off", "note": "\x00"}, "body.note"),
                ("put", "/api/v1/shops/s1", {"name": "小吃\x00店", "frontages": [{"camera": "cam-01", "polygon": [[0, 0], [1, 0], [1, 1]]}]},
                 "body.name")):
            refused = client.request(method, path, headers=reviewer, json=body)
            assert refused.status_code == 422, (path, refused.text)
            assert refused.json()["detail"].startswith(f"{field}: 含控制字符"), refused.text
        assert app.state.ctx.store.get(a).description is None and app.state.ctx.store.get(b).state is CaseState.CANDIDATE
        kept = client.patch(f"/api/v1/cases/{a}", headers=reviewer, json={"description": "摊位两处\n\t伞一把"})
        assert kept.status_code == 200 and kept.json()["description"] == "摊位两处\n\t伞一把"


def test_a_shop_field_with_a_line_break_is_refused_naming_it(tmp_path, monkeypatch):
    """A shop's name, address, licence number and contact go into the warnings' notices, the reports' sheets and the
    cases a platform gets, one line each, but PUT /shops took them with line breaks and tabs (only NUL was refused).
    Each is 422 naming the field, Chinese first, as a control character in it is; nothing is saved. Through uvicorn on
    loopback, as `serve` runs it. (An import folds such a cell instead: tests/test_cityops_registers.py.)"""
    from tests.api_helpers import on_loopback

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    app, tokens = make_app(settings_for(tmp_path))
    frontages = [{"camera": "cam-01", "polygon": [[0, 0], [1, 0], [1, 1]]}]
    typed = (("name", "小吃\n店"), ("address", "文三路\r\n1 号"), ("licence_no", "9133\t0106"), ("contact", "王师傅\n139"))
    with on_loopback(app) as url, httpx.Client(base_url=url, headers=auth(tokens["reviewer"]), timeout=30) as client:
        refused = [client.put("/api/v1/shops/s1", json={"name": "小吃店", field: value, "frontages": frontages}) for field, value in typed]
        one_line = client.put("/api/v1/shops/s1", json={"name": "小吃店", "address": "文三路 1 号", "frontages": frontages})
    assert [r.status_code for r in refused] == [422] * len(typed), [r.text for r in refused]
    assert [r.json()["errors"][0]["loc"] for r in refused] == [["body", field] for field, _ in typed]
    assert all(r.json()["detail"].startswith(f"body.{field}: 含控制字符（换行、制表符、NUL 等） — the text has a control character")
               for r, (field, _) in zip(refused, typed)), [r.json()["detail"] for r in refused]
    assert one_line.status_code == 200 and one_line.json()["name"] == "小吃店", one_line.text


def test_a_reviewer_notes_a_case_a_platform_holds_and_nothing_else_on_it_changes(service, bus_event):
    """A reviewer who found a submitted (已上报) case false had nowhere to say so: reject is refused (the platform
    voids it) and PATCH edits only candidates and queued cases. A note is added in any state, audited with who and
    what, listed in the case's detail, and leaves its state, signed evidence and updated_at as they were; a blank
    or too long note is 422 naming the field, an inspector's 403."""
    app, client, tokens, _ = service
    store = app.state.ctx.store
    reviewer = auth(tokens["reviewer"])
    [held] = draft_cases(app, bus_event, [{}])
    client.post(f"/api/v1/cases/{held}/confirm", headers=reviewer, json={})
    store.mark_delivered(store.outbox_entries(case_id=held)[0].id, "T-400")
    before = store.get(held)
    assert before.state is CaseState.SUBMITTED and before.evidence_digest
    signed = hashlib.sha256(app.state.ctx.evidence.read_bytes(before.evidence_ref, MANIFEST)).hexdigest()

    for text, why in (("", "少于 1 个字符 — String should have at least 1 character"), (" \n ", "请填写备注内容 — the note is blank"),
                      ("注" * 2001, "超过 2000 个字符 — String should have at most 2000 characters")):
        refused = client.post(f"/api/v1/cases/{held}/notes", headers=reviewer, json={"text": text})
        assert refused.status_code == 422 and refused.json()["detail"] == f"body.text: {why}", refused.text
    assert client.post(f"/api/v1/cases/{held}/notes", headers=reviewer, json={}).status_code == 422
    assert client.post(f"/api/v1/cases/{held}/notes", headers=auth(tokens["inspector"]), json={"text": "x"}).status_code == 403
    assert client.post("/api/v1/cases/SW-nope/notes", headers=reviewer, json={"text": "x"}).status_code == 404
    assert store.get(held) == before

    noted = client.post(f"/api/v1/cases/{held}/notes", headers=reviewer, json={"text": "现场为公交站台，非违停\n请平台作废"})
    assert noted.status_code == 201, noted.text
    after = store.get(held)
    assert (after.state, after.evidence_digest, after.updated_at) == (before.state, before.evidence_digest, before.updated_at)
    manifest = app.state.ctx.evidence.read_bytes(after.evidence_ref, MANIFEST)
    assert hashlib.sha256(manifest).hexdigest() == before.evidence_digest == signed
    [note] = after.details["notes"]
    assert (note["by"], note["text"]) == ("reviewer-user", "现场为公交站台，非违停\n请平台作废") and note["at"]
    assert client.get(f"/api/v1/cases/{held}", headers=reviewer).json()["case"]["details"]["notes"] == [note]
    audit = client.get(f"/api/v1/cases/{held}/audit", headers=reviewer).json()["items"]
    assert [(r["action"], r["actor"], r["role"], r["details"]) for r in audit if r["action"] == "note"] == [
        ("note", "reviewer-user", "reviewer", {"text": "现场为公交站台，非违停\n请平台作废",
                                                "evidence_digest": store.get(held).evidence_digest})]
    client.post(f"/api/v1/cases/{held}/notes", headers=reviewer, json={"text": "第二条"})
    assert [n["text"] for n in store.get(held).details["notes"]] == ["现场为公交站台，非违停\n请平台作废", "第二条"]


def test_a_text_over_its_length_is_refused_in_characters_chinese_first(tmp_path, monkeypatch, bus_event):
    """A review note over 2000 characters or a description over 4000 was refused 'Value should have at most 2000
    items after validation, not 2001' (pydantic measures them after their text check): it says characters. Every
    length refusal was English only, where the API's own field refusals say it in Chinese first for city staff
    (`请填写备注内容 — the note is blank`): a note, a description, a shop's name, a call-out note, a search or a
    case's tags over its limit is 422 naming the field, its reason `超过 … — …` as the routes word theirs. Through
    uvicorn on loopback, as `serve` runs it."""
    from pipelines.cases.store import MAX_TAGS
    from pipelines.shops import ShopRegister
    from tests.api_helpers import on_loopback

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "test-key-0123456789abcdef")
    app, tokens = make_app(settings_for(tmp_path))
    [a] = draft_cases(app, bus_event, [{}])
    before = app.state.ctx.store.get(a)
    reviewer = auth(tokens["reviewer"])
    asked = [("post", f"/api/v1/cases/{a}/confirm", {"dispatch": False, "note": "属" * 2001}, None),
             ("patch", f"/api/v1/cases/{a}", {"description": "占" * 4001}, None),
             ("put", "/api/v1/shops/s1", {"name": "店" * 201}, None),
             ("put", "/api/v1/callout/13800138000", {"status": "called", "note": "拨" * 2001}, None),
             ("get", "/api/v1/cases", None, {"q": "文三路" * 70}),
             ("patch", f"/api/v1/cases/{a}", {"tags": ["food_on_site"] * (MAX_TAGS + 1)}, None)]
    with on_loopback(app) as url, httpx.Client(base_url=url, headers=reviewer, timeout=30) as client:
        answers = [client.request(method, path, json=body, params=query) for method, path, body, query in asked]
    assert [r.status_code for r in answers] == [422] * len(asked), [r.text for r in answers]
    assert [r.json()["detail"] for r in answers] == [
        "body.note: 超过 2000 个字符 — String should have at most 2000 characters",
        "body.description: 超过 4000 个字符 — String should have at most 4000 characters",
        "body.name: 超过 200 个字符 — String should have at most 200 characters",
        "body.note: 超过 2000 个字符 — String should have at most 2000 characters",
        "query.q: 超过 200 个字符 — String should have at most 200 characters",
        f"body.tags: 超过 {MAX_TAGS} 项 — List should have at most {MAX_TAGS} items after validation, not {MAX_TAGS + 1}"]
    assert [r.json()["errors"][0]["msg"].split(" — ")[0] for r in answers][:2] == ["超过 2000 个字符", "超过 4000 个字符"]
    assert app.state.ctx.store.get(a) == before and ShopRegister(app.state.ctx.store.engine).get("s1") is None  # nothing saved


def test_a_webhook_body_over_its_limit_is_refused_after_the_caller_is_checked(service):
    """docs/service.md: a webhook call over 64 KiB is 401 without a token or signature (the caller is checked first,
    before the body is read) and 413 with one; a call within the limit is read as usual."""
    _, client, tokens, _ = service
    hook, too_big = "/api/v1/dispatch/dcm/webhook", b'{"note": "' + b"x" * (64 * 1024) + b'"}'
    nobody = client.post(hook, content=too_big)
    assert nobody.status_code == 401 and nobody.json()["type"] == "urn:streetwatch:problem:unauthenticated", nobody.text
    known = client.post(hook, content=too_big, headers=auth(tokens["integration"]))
    assert known.status_code == 413, known.text
    small = client.post(hook, content=b'{"note": "x"}', headers=auth(tokens["integration"]))
    assert small.status_code not in (401, 413), small.text


def test_webhook_moves_cases_with_a_token_or_a_signature(service, bus_event, monkeypatch):
    app, client, tokens, _ = service
    store = app.state.ctx.store
    monkeypatch.setenv("SW_TEST_HOOK", "hook-secret-0123")
    targets = app.state.ctx.settings.dispatch.targets
    targets["dcm"] = targets["dcm"].model_copy(update={"webhook_secret_env": "SW_TEST_HOOK"})
    case_id = draft_cases(app, bus_event, [{}])[0]
    client.post(f"/api/v1/cases/{case_id}/confirm", headers=auth(tokens["reviewer"]), json={})
    entry = store.outbox_entries(case_id=case_id)[0]
    store.mark_delivered(entry.id, "T-100")

    body = json.dumps({"taskNumber": "T-100", "status": "立案"}).encode()
    hook = "/api/v1/dispatch/dcm/webhook"
    neither = client.post(hook, content=body)
    assert neither.status_code == 401 and neither.json()["type"] == "urn:streetwatch:problem:unauthenticated"
    assert neither.json()["detail"] == ("需要集成方令牌（Authorization: Bearer）或已签名的请求体（X-Signature） "
                                        "send an integration token (Authorization: Bearer) or a signed body (X-Signature)")
    bad = client.post(hook, content=body, headers={"X-Signature": "sha256=" + "0" * 64})
    assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["type"] == "urn:streetwatch:problem:webhook-refused"  # Chinese first, the English integrators match as it was
    assert bad.json()["detail"] == "X-Signature 签名错误或缺失 bad or missing X-Signature"
    odd_header = client.post(hook, content=body, headers={"X-Signature": "sha256=é".encode("latin-1")})
    assert odd_header.status_code == 401  # not a 500
    assert store.get(case_id).state is CaseState.SUBMITTED
    ok = client.post(hook, content=body, headers={"X-Signature": sign("hook-secret-0123", body)})
    assert ok.status_code == 200 and ok.json() == {"case_id": case_id, "state": "accepted", "changed": True}

    closed = json.dumps({"externalId": case_id, "status": "closed", "note": "结案"}).encode()
    with_token = client.post(hook, content=closed, headers={**auth(tokens["integration"]), "X-Signature": sign("hook-secret-0123", closed)})
    assert with_token.status_code == 200 and store.get(case_id).state is CaseState.CLOSED
    unsigned = client.post(hook, content=closed, headers=auth(tokens["integration"]))
    assert unsigned.status_code == 401  # a target with a secret wants the signature, token or not
    odd = json.dumps({"taskNumber": "T-100", "status": "teleported"}).encode()
    unknown = client.post(hook, content=odd, headers={**auth(tokens["integration"]), "X-Signature": sign("hook-secret-0123", odd)})
    assert unknown.status_code == 422 and "teleported" in unknown.json()["detail"]
    assert client.post("/api/v1/dispatch/nowhere/webhook", content=body, headers=auth(tokens["integration"])).status_code == 404
    huge = client.post(hook, content=b"{" + b" " * 70_000 + b"}", headers=auth(tokens["integration"]))
    assert huge.status_code == 413


def test_an_unreadable_webhook_body_is_malformed_json_as_on_every_route(service):
    """A webhook body that could not be read as JSON (not JSON, not UTF-8, nested too deep) was 400 `webhook-refused`,
    where every other route answers `malformed-json` with the reason; it is that now, and a readable call the webhook
    refuses (not an object) stays `webhook-refused`."""
    _, client, tokens, _ = service
    hook, integration = "/api/v1/dispatch/dcm/webhook", auth(tokens["integration"])
    for body, why in ((b'{"status": ', "Expecting value"), (b'{"status": "\xff"}', "can't decode byte 0xff"),
                      (b"[" * 60_000, "nested too deep")):
        answer = client.post(hook, content=body, headers=integration)
        assert answer.status_code == 400 and answer.headers["content-type"] == "application/problem+json", answer.text
        assert answer.json()["type"] == "urn:streetwatch:problem:malformed-json", answer.text
        assert answer.json()["detail"].startswith("malformed JSON body: ") and why in answer.json()["detail"], answer.text
    listed = client.post(hook, content=b"[]", headers=integration)
    assert listed.status_code == 400 and listed.json()["type"] == "urn:streetwatch:problem:webhook-refused"
    assert listed.json()["detail"] == "body must be a JSON object"


def test_the_service_takes_a_timestamped_webhook_call_once(service, bus_event, monkeypatch):
    """The service's webhook keeps the calls it took in the case store (`webhook_calls`): the same signed call
    sent again within `webhook_max_age_s` is refused 409 as a replay, a new call is taken."""
    app, client, tokens, _ = service
    store = app.state.ctx.store
    monkeypatch.setenv("SW_TEST_HOOK", "hook-secret-0123")
    targets = app.state.ctx.settings.dispatch.targets
    targets["dcm"] = targets["dcm"].model_copy(update={"webhook_secret_env": "SW_TEST_HOOK",
                                                       "webhook_timestamp_header": "X-Timestamp"})
    case_id = draft_cases(app, bus_event, [{}])[0]
    client.post(f"/api/v1/cases/{case_id}/confirm", headers=auth(tokens["reviewer"]), json={})
    store.mark_delivered(store.outbox_entries(case_id=case_id)[0].id, "T-200")

    hook, stamp = "/api/v1/dispatch/dcm/webhook", str(int(time.time()))
    body = json.dumps({"taskNumber": "T-200", "status": "立案"}).encode()
    signed = {"X-Timestamp": stamp, "X-Signature": sign("hook-secret-0123", body, stamp)}
    assert client.post(hook, content=body, headers=signed).json()["state"] == "accepted"
    again = client.post(hook, content=body, headers=signed)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert "accepted already" in again.json()["detail"] and "refused as a replay" in again.json()["detail"]
    closed = json.dumps({"taskNumber": "T-200", "status": "结案"}).encode()
    taken = client.post(hook, content=closed, headers={"X-Timestamp": stamp, "X-Signature": sign("hook-secret-0123", closed, stamp)})
    assert taken.status_code == 200 and store.get(case_id).state is CaseState.CLOSED


def test_serve_warns_at_start_up_of_a_webhook_secret_variable_not_set(tmp_path, monkeypatch, caplog):
    """A target with `webhook_secret_env` whose variable was not exported where `serve` runs started without a word;
    every status call of the platform was then refused 503, token or signature, found only at its first call."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    monkeypatch.delenv("SW_TEST_HOOK", raising=False)
    dispatch = {"targets": {"dcm": {**DCM["targets"]["dcm"], "webhook_secret_env": "SW_TEST_HOOK"}}}
    with caplog.at_level("WARNING", logger="api.app"):
        app, tokens = make_app(settings_for(tmp_path / "a", dispatch=dispatch))
    warned = [r.getMessage() for r in caplog.records if "SW_TEST_HOOK" in r.getMessage()]
    assert warned == ["dispatch.targets.dcm.webhook_secret_env: $SW_TEST_HOOK is not set, so every status call to "
                      "/api/v1/dispatch/dcm/webhook is refused (503) until `streetwatch serve` runs with it"]
    caplog.clear()
    with TestClient(app) as client, caplog.at_level("ERROR", logger="pipelines.dispatch.webhook"):  # what it foretells
        body = json.dumps({"taskNumber": "T-1", "status": "立案"}).encode()
        refused = [client.post("/api/v1/dispatch/dcm/webhook", content=body, headers=auth(tokens["integration"])),
                   client.post("/api/v1/dispatch/dcm/webhook", content=body, headers={"X-Signature": "sha256=00"})]
    # The answer names nothing of the server (the second caller sent no token, only a signature header);
    # the operator's log names the variable.
    assert [(r.status_code, r.json()["detail"]) for r in refused] == [(503, "webhook not configured on this server")] * 2
    assert [r.getMessage() for r in caplog.records] == [
        "dispatch.targets.dcm.webhook_secret_env: $SW_TEST_HOOK is not set, so a status call to its webhook was refused "
        "(503); run `streetwatch serve` with it"] * 2
    caplog.clear()
    monkeypatch.setenv("SW_TEST_HOOK", "hook-secret-0123")
    with caplog.at_level("WARNING", logger="api.app"):
        make_app(settings_for(tmp_path / "b", dispatch=dispatch))
    assert not [r for r in caplog.records if "SW_TEST_HOOK" in r.getMessage()]


def test_webhook_naming_a_task_number_its_case_was_not_delivered_as_is_refused(service, bus_event):
    """{externalId: A, taskNumber: T-999} for case A delivered as T-100 moved case A by task T-999's status. Refused
    now with 409 naming both numbers; the same number (as text or as a JSON number) is applied. A case with no
    number stored yet (still queued: their answer to our POST may be on its way) is sent back for a retry."""
    app, client, tokens, _ = service
    store = app.state.ctx.store
    integration = auth(tokens["integration"])
    hook = "/api/v1/dispatch/dcm/webhook"
    delivered, queued = draft_cases(app, bus_event, [{}, {"source_id": "cam-02"}])
    for case_id in (delivered, queued):
        client.post(f"/api/v1/cases/{case_id}/confirm", headers=auth(tokens["reviewer"]), json={})
    store.mark_delivered(store.outbox_entries(case_id=delivered)[0].id, "100")

    other = client.post(hook, json={"externalId": delivered, "taskNumber": "T-999", "status": "立案"}, headers=integration)
    assert other.status_code == 409, other.text
    assert "'100'" in other.json()["detail"] and "'T-999'" in other.json()["detail"]
    assert store.get(delivered).state is CaseState.SUBMITTED
    not_a_number = client.post(hook, json={"externalId": delivered, "taskNumber": {"id": 100}, "status": "立案"},
                               headers=integration)
    assert not_a_number.status_code == 400 and "not a task number" in not_a_number.json()["detail"]
    early = client.post(hook, json={"externalId": queued, "taskNumber": "T-1", "status": "立案"}, headers=integration)
    assert early.status_code == 409 and "not recorded as delivered yet" in early.json()["detail"]
    assert store.get(queued).state is CaseState.QUEUED

    same = client.post(hook, json={"externalId": delivered, "taskNumber": 100, "status": "立案"}, headers=integration)
    assert same.status_code == 200 and same.json()["state"] == "accepted"


def test_webhook_for_a_case_withdrawn_while_its_delivery_was_in_flight_waits_for_its_number(service, bus_event):
    """A case rejected here while its POST was in flight has no task number stored and is no longer queued: a call
    naming it was found by our id alone and answered 200 whatever taskNumber it named. It is the 409 'not recorded
    as delivered yet' now; once the dispatcher stores the number, the retry is compared like any other."""
    app, client, tokens, _ = service
    store = app.state.ctx.store
    integration = auth(tokens["integration"])
    hook = "/api/v1/dispatch/dcm/webhook"
    [case_id] = draft_cases(app, bus_event, [{}])
    client.post(f"/api/v1/cases/{case_id}/confirm", headers=auth(tokens["reviewer"]), json={})
    store.transition(case_id, CaseState.REJECTED, actor="reviewer-user", reason="withdrawn: wrong street")

    early = client.post(hook, json={"externalId": case_id, "taskNumber": "T-999", "status": "立案"}, headers=integration)
    assert early.status_code == 409, early.text
    assert "not recorded as delivered yet (no task number stored, case rejected)" in early.json()["detail"]
    store.mark_delivered(store.outbox_entries(case_id=case_id)[0].id, "555")  # their answer reaches the dispatcher
    assert store.get(case_id).dispatch_ref == "555"
    retried = client.post(hook, json={"externalId": case_id, "taskNumber": "T-999", "status": "立案"}, headers=integration)
    assert retried.status_code == 409 and "'555'" in retried.json()["detail"] and "'T-999'" in retried.json()["detail"]
    theirs = client.post(hook, json={"externalId": case_id, "taskNumber": "555", "status": "立案"}, headers=integration)
    assert theirs.status_code == 200 and theirs.json() == {"case_id": case_id, "state": "rejected", "changed": False}


def test_evidence_and_api_answers_are_not_kept_by_browsers(service, bus_event):
    """Evidence photos, cases and snapshots are personal data on shared review PCs: no-store, never a cache lifetime."""
    app, client, tokens, _ = service
    case_id = draft_cases(app, bus_event, [{}])[0]
    inspector = auth(tokens["inspector"])
    detail = client.get(f"/api/v1/cases/{case_id}", headers=inspector)
    answers = [detail, client.get(detail.json()["evidence"]["boxes"]["url"]),
               client.get("/api/v1/cameras/cam-01/snapshot", headers=inspector),  # a file: ETag and Last-Modified
               client.get("/api/v1/cases", headers=inspector)]
    for answer in answers:
        assert answer.status_code == 200, answer.url
        assert answer.headers["cache-control"] == "no-store", answer.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url


def test_an_edit_overwriting_another_at_once_is_audited_with_what_it_overwrote_on_postgresql(tmp_path, monkeypatch,
                                                                                              bus_event, fresh_postgres_url):
    """Two reviewers edit one case's description at once, without `expected_updated_at` (the last write wins): the
    audit log's `from` was the case as the route read it before the store's transaction, so the second edit was
    audited as changing the description from nothing, and the text it overwrote was in no audit record. It is what
    the store replaced, as the case's own revisions say."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    app, tokens = make_app(settings_for(tmp_path, dispatch=DCM, cases_url=fresh_postgres_url))
    [a] = draft_cases(app, bus_event, [{}])
    li = app.state.ctx.accounts.add("李四", "reviewer")[1]
    store, revise = app.state.ctx.store, app.state.ctx.store.revise
    with TestClient(app, raise_server_exceptions=False) as client:
        def first_li_then(*args, **kw):  # 王芳's request has read the case; 李四's edit lands before hers is written
            if kw["actor"] == "reviewer-user":
                other = threading.Thread(target=lambda: client.patch(f"/api/v1/cases/{a}", headers=auth(li),
                                                                     json={"description": "李四：三轮车占道"}))
                other.start()
                other.join()
            return revise(*args, **kw)

        monkeypatch.setattr(store, "revise", first_li_then)
        done = client.patch(f"/api/v1/cases/{a}", headers=auth(tokens["reviewer"]), json={"description": "王芳：摊位两处"})
        assert done.status_code == 200 and done.json()["description"] == "王芳：摊位两处"
        audit = client.get(f"/api/v1/cases/{a}/audit", headers=auth(tokens["reviewer"])).json()["items"]  # newest first
    assert [(r["actor"], r["details"]["description"]) for r in audit] == [
        ("reviewer-user", {"from": "李四：三轮车占道", "to": "王芳：摊位两处"}), ("李四", {"from": None, "to": "李四：三轮车占道"})]
    assert [(r["by"], r["from"]) for r in store.get(a).details["revisions"]] == [("李四", None), ("reviewer-user", "李四：三轮车占道")]


def test_a_reopening_is_audited_with_the_rejection_it_undid_not_an_earlier_one(service, bus_event, monkeypatch):
    """The reopen route read the case, then reopened it, and audited whose rejection it undid from that read:
    when 李四 reopened the case and 张伟 rejected it again in between (a 'duplicate' becoming 'not a violation'), the first
    reviewer's audit record named their own earlier rejection while the reopening undid 张伟's. It names the one undone."""
    app, client, tokens, _ = service
    store, accounts = app.state.ctx.store, app.state.ctx.accounts
    [a] = draft_cases(app, bus_event, [{}])
    wang, li, zhang = auth(tokens["reviewer"]), auth(accounts.add("李四", "reviewer")[1]), auth(accounts.add("张伟", "reviewer")[1])
    assert client.post(f"/api/v1/cases/{a}/reject", headers=wang, json={"reason": "duplicate"}).status_code == 200

    def others_act():
        assert client.post(f"/api/v1/cases/{a}/reopen", headers=li, json={"note": "再看看"}).status_code == 200
        assert client.post(f"/api/v1/cases/{a}/reject", headers=zhang,
                           json={"reason": "not_a_violation", "note": "非违法"}).status_code == 200

    rival = threading.Thread(target=others_act)
    reopen = store.reopen

    def others_act_first(case_id: str, **kw):
        if case_id == a and threading.current_thread() is not rival and not rival.ident:  # 王芳's request is under way
            rival.start()
            rival.join()
        return reopen(case_id, **kw)

    monkeypatch.setattr(store, "reopen", others_act_first)
    assert client.post(f"/api/v1/cases/{a}/reopen", headers=wang, json={"note": "误点驳回"}).status_code == 200
    assert rival.ident
    audits = [r for r in client.get(f"/api/v1/cases/{a}/audit", headers=wang).json()["items"] if r["action"] == "reopen"]
    mine = [r for r in audits if r["details"]["note"] == "误点驳回"]
    assert [(r["details"]["rejected_by"], r["details"]["review_reason"], r["details"]["review_note"]) for r in mine] == [
        ("张伟", "not_a_violation", "非违法")]


def test_a_confirm_without_dispatch_is_named_as_the_last_action_of_a_changed_case(service, bus_event):
    """A confirm without dispatch moves no state and revises nothing, so the 409 case-changed of a reviewer whose page
    was older named whoever had acted before it (the rules that drafted the case) instead of the reviewer who confirmed."""
    app, client, tokens, _ = service
    [a] = draft_cases(app, bus_event, [{}])
    wang, li = auth(tokens["reviewer"]), auth(app.state.ctx.accounts.add("李四", "reviewer")[1])
    seen = client.get(f"/api/v1/cases/{a}", headers=wang).json()["case"]["updated_at"]
    assert client.post(f"/api/v1/cases/{a}/confirm", headers=li, json={"dispatch": False}).status_code == 200
    late = client.post(f"/api/v1/cases/{a}/reject", headers=wang, json={"reason": "duplicate", "expected_updated_at": seen})
    assert late.status_code == 409 and late.json()["case"]["last_by"] == "李四"
    assert late.json()["detail"].startswith(f"案件 {a} 在您打开后已被修改（最后操作人 李四，现为待审核）")


def test_a_review_action_whose_audit_record_cannot_be_written_is_not_done_on_postgresql(tmp_path, monkeypatch, bus_event,
                                                                                        fresh_postgres_url):
    """The audit record of a confirm, reject, reopen or edit was written in a transaction of its own after the action's:
    when that write failed the action stood with no audit record, and the reviewer, answered an error, might act
    again. The action and its record are one transaction: the audit log refusing the record (a trigger here), nothing
    is done; once it takes records again, each action is done once and recorded once."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    app, tokens = make_app(settings_for(tmp_path, dispatch=DCM, cases_url=fresh_postgres_url))
    store, accounts = app.state.ctx.store, app.state.ctx.accounts
    a, b, c, d = draft_cases(app, bus_event, [{}, {}, {}, {}])
    reviewer = auth(tokens["reviewer"])
    actions = [("patch", f"/api/v1/cases/{a}", {"description": "三轮车占道"}),
               ("post", f"/api/v1/cases/{a}/confirm", {}),
               ("post", f"/api/v1/cases/{b}/confirm", {"dispatch": False}),
               ("post", f"/api/v1/cases/{c}/reject", {"reason": "duplicate"}),
               ("post", f"/api/v1/cases/{d}/reopen", {"note": "误点驳回"})]
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(f"/api/v1/cases/{d}/reject", headers=reviewer, json={"reason": "duplicate"}).status_code == 200
        before = {i: (store.get(i), store.history(i), store.outbox_entries(case_id=i)) for i in (a, b, c, d)}
        audits = accounts.audit_records()
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN "
                                 "RAISE EXCEPTION 'audit log refuses records'; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW "
                                 "EXECUTE FUNCTION refuse_audit()")
        refused = [client.request(method, path, headers=reviewer, json=body) for method, path, body in actions]
        assert [r.status_code for r in refused] == [500] * len(actions)
        assert {i: (store.get(i), store.history(i), store.outbox_entries(case_id=i)) for i in (a, b, c, d)} == before
        assert accounts.audit_records() == audits

        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_audit ON audit_log")
        done = [client.request(method, path, headers=reviewer, json=body) for method, path, body in actions]
        assert [r.status_code for r in done] == [200] * len(actions), [r.text for r in done]
    new = accounts.audit_records()[:len(actions)]  # newest first
    assert [(r["action"], r["case_id"]) for r in reversed(new)] == [("edit", a), ("confirm", a), ("confirm", b),
                                                                    ("reject", c), ("reopen", d)]
    assert len(accounts.audit_records()) == len(audits) + len(actions)
    assert (store.get(a).state, store.get(b).review_decision, store.get(c).state, store.get(d).state) == (
        CaseState.QUEUED, "approved", CaseState.REJECTED, CaseState.CANDIDATE)


def test_evidence_links_from_s3_live_as_long_as_the_local_stores(tmp_path, monkeypatch, bus_event, moto_s3):
    """With S3 evidence the case detail's image URLs were presigned for evidence_store.s3.url_expiry_s, 7 days by
    default, where a local store's links live service.url_expiry_s (15 min; docs/service.md, docs/personal-data.md):
    a link copied off a review PC opened the unblurred originals (faces, plates) for a week. They live
    service.url_expiry_s whichever the store, and open the image while they do."""
    monkeypatch.setenv("STREETWATCH_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("STREETWATCH_S3_SECRET_KEY", "testing")
    s3 = EvidenceStoreConfig(backend="s3", spool_dir=tmp_path / "spool", s3={"endpoint": moto_s3, "secure": False, "bucket": "sw-links"})
    settings = settings_for(tmp_path, url_expiry_s=600).model_copy(update={"evidence_store": s3})
    assert settings.evidence_store.s3.url_expiry_s == 7 * 24 * 3600
    app, tokens = make_app(settings)
    with TestClient(app) as client:
        case_id = draft_cases(app, bus_event, [{}])[0]
        images = client.get(f"/api/v1/cases/{case_id}", headers=auth(tokens["reviewer"])).json()["evidence"]["images"]
    assert images and {parse_qs(urlparse(i["url"]).query)["X-Amz-Expires"][0] for i in images} == {"600"}
    assert httpx.get(images[0]["url"]).status_code == 200


def test_serve_warns_of_an_s3_url_expiry_the_release_before_read_and_this_one_does_not(tmp_path, monkeypatch, moto_s3,
                                                                                       caplog):
    """A settings file written from the example of the release before sets evidence_store.s3.url_expiry_s, which gave
    the review pages' S3 links their lifetime there; here they live service.url_expiry_s, and a city that had chosen
    a lifetime for them saw it ignored without a word. `serve` says at start-up which settings give the links'
    lifetimes now; a file that does not set it is not warned of."""
    monkeypatch.setenv("STREETWATCH_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("STREETWATCH_S3_SECRET_KEY", "testing")
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    old_example = {"endpoint": moto_s3, "secure": False, "bucket": "sw-expiry", "prefix": "cases",
                   "url_expiry_s": 604800}  # "presigned attachment URLs: 7 days (the S3 maximum)"
    warned = []
    for site, s3 in (("a", old_example), ("b", {k: v for k, v in old_example.items() if k != "url_expiry_s"})):
        store = EvidenceStoreConfig(backend="s3", spool_dir=tmp_path / site / "spool", s3=s3)
        settings = settings_for(tmp_path / site, url_expiry_s=600).model_copy(update={"evidence_store": store})
        caplog.clear()
        with caplog.at_level("WARNING", logger="api.app"):
            make_app(settings)
        warned.append([r.getMessage() for r in caplog.records if "url_expiry_s" in r.getMessage()])
    assert warned == [["evidence_store.s3.url_expiry_s (604800 s) is no longer read: the review pages' evidence links "
                       "live service.url_expiry_s (600 s) and a dispatch target's attachments its attachment_expiry_s; "
                       "set those, and remove it from the settings file"], []]
