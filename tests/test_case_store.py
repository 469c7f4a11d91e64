"""Case store on SQLite (WAL) and on a real PostgreSQL server: states, history, outbox, migrations."""

from __future__ import annotations

import re
import shutil
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from detect.config_io import ConfigError
from pipelines.cases import (ALLOWED, CaseQuery, CaseState, CaseStore, CaseStoreError, CaseStoreUnreachable, InvalidTransition,
                             NewCase)
from pipelines.cases import schema
from pipelines.settings import CaseStoreConfig, load_settings

T0 = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cases.db"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    s = CaseStore(url)
    yield s
    s.close()


def _draft(store: CaseStore, n: int = 0, **kw):
    new = NewCase(violation_type="illegal_parking", source_kind="camera", source_id="cam-01",
                  violation_id=f"cam-01:z1:illegal_parking:t{n}", zone_id="z1", lat=30.27, lon=120.15,
                  grid_cell="330106001001", first_seen_at=T0, opened_at=T0 + timedelta(minutes=5), **kw)
    return store.create_case(new, now=T0)


def _with_evidence(store: CaseStore, n: int = 0):
    case = _draft(store, n)
    return store.update(case.id, evidence_ref=f"file:///evidence/{case.id}", evidence_digest="d" * 64,
                        evidence_boxes={"image": "originals/opened_original.jpg", "width": 810, "height": 1080,
                                        "boxes": [{"class_name": "car", "xyxy": [1.0, 2.0, 300.0, 400.0],
                                                   "confidence": 0.91}]})


def test_lifecycle_history_and_review_facts(store):
    case = _with_evidence(store)
    assert case.state is CaseState.CANDIDATE and case.id.startswith("SW20250314-")
    assert case.evidence_boxes["boxes"][0]["class_name"] == "car"
    # The same violation drafted again (a restarted pipeline) is the same case.
    assert _draft(store).id == case.id

    queued = store.review(case.id, approve=True, reviewer="li.wei", target="cn-dcm", reason_code="confirmed",
                          note="clear view", now=T0 + timedelta(minutes=10))
    assert (queued.state, queued.review_decision, queued.reviewer, queued.review_reason) == (
        CaseState.QUEUED, "approved", "li.wei", "confirmed")
    [entry] = store.outbox_entries(case_id=case.id)
    assert (entry.status, entry.target, entry.idempotency_key) == ("pending", "cn-dcm", f"streetwatch:cn-dcm:{case.id}")

    [claimed] = store.claim_due(now=T0 + timedelta(minutes=11))
    submitted = store.mark_delivered(claimed.id, "DCM-0001", now=T0 + timedelta(minutes=12))
    assert (submitted.state, submitted.dispatch_ref) == (CaseState.SUBMITTED, "DCM-0001")
    assert store.find(dispatch_ref="DCM-0001", target="cn-dcm").id == case.id
    store.apply_remote_state(case.id, CaseState.ACCEPTED, actor="dispatch:cn-dcm")
    store.apply_remote_state(case.id, CaseState.ACCEPTED, actor="dispatch:cn-dcm")  # repeat: no-op
    store.mark_handled(case.id, actor="dispatch:cn-dcm")
    done = store.record_verification(case.id, cleared=True, actor="cctv:cam-01", verification_ref="verification/1")
    assert done.state is CaseState.VERIFIED_CLEARED and done.verification_ref == "verification/1"

    steps = [(h.from_state, h.to_state) for h in store.history(case.id)]
    S = CaseState
    assert steps == [(None, S.CANDIDATE), (S.CANDIDATE, S.QUEUED), (S.QUEUED, S.SUBMITTED), (S.SUBMITTED, S.ACCEPTED),
                     (S.ACCEPTED, S.VERIFYING), (S.VERIFYING, S.VERIFIED_CLEARED)]
    assert store.history(case.id)[1].actor == "li.wei"


def test_refused_transitions_name_case_and_allowed_states(store):
    case = _with_evidence(store)
    rejected = store.review(case.id, approve=False, reviewer="li.wei", reason_code="not_a_violation")
    assert rejected.state is CaseState.REJECTED and rejected.review_reason == "not_a_violation"
    with pytest.raises(InvalidTransition, match=f"case {case.id}: cannot move from rejected to queued.*final state"):
        store.queue(case.id, "cn-dcm")
    assert store.outbox_entries(case_id=case.id) == []  # refused queuing leaves no outbox entry
    with pytest.raises(CaseStoreError, match="change the state with transition"):
        store.update(case.id, state="queued")
    with pytest.raises(CaseStoreError, match="cannot update bogus"):
        store.update(case.id, bogus=1)
    # The table is the only source: every state has an entry, final states allow nothing.
    assert set(ALLOWED) == set(CaseState) and ALLOWED[CaseState.CLOSED] == frozenset()


def test_queue_needs_stored_evidence(store):
    case = _draft(store)
    store.update(case.id, reason="evidence upload failed: connection refused")
    with pytest.raises(CaseStoreError, match="before its evidence is stored.*connection refused"):
        store.queue(case.id, "cn-dcm")
    assert store.get(case.id).state is CaseState.CANDIDATE
    assert [c.id for c in store.waiting_for_evidence()] == [case.id]


def test_queuing_and_its_outbox_entry_are_one_transaction(store):
    case = _with_evidence(store)
    # Plant an outbox row with the key queuing will use, so the outbox insert fails inside queue().
    with store._writer.begin() as conn:
        conn.execute(schema.outbox.insert().values(
            case_id=case.id, target="cn-dcm", idempotency_key=f"streetwatch:cn-dcm:{case.id}", status="parked",
            attempts=0, next_attempt_at=T0, created_at=T0))
    with pytest.raises(sa.exc.IntegrityError):
        store.queue(case.id, "cn-dcm")
    # The state change and its history row were rolled back with the failed insert.
    assert store.get(case.id).state is CaseState.CANDIDATE
    assert [h.to_state for h in store.history(case.id)] == [CaseState.CANDIDATE]


def test_retry_schedule_park_and_requeue(store):
    case = _with_evidence(store)
    store.queue(case.id, "open311", now=T0)
    [entry] = store.claim_due(now=T0)
    assert store.claim_due(now=T0) == []  # leased: nobody else gets it
    store.schedule_retry(entry.id, "HTTP 503", T0 + timedelta(seconds=30))
    assert store.claim_due(now=T0 + timedelta(seconds=29)) == []
    assert store.next_due_at() == T0 + timedelta(seconds=30)
    [again] = store.claim_due(now=T0 + timedelta(seconds=30))
    assert (again.attempts, again.last_error) == (1, "HTTP 503")
    store.park(again.id, "HTTP 400: service_code unknown")
    assert store.get(case.id).reason == "dispatch to open311 parked: HTTP 400: service_code unknown"
    assert store.claim_due(now=T0 + timedelta(days=1)) == []
    store.requeue(again.id, actor="ops")
    assert store.get(case.id).reason is None
    assert [e.status for e in store.outbox_entries(case_id=case.id)] == ["pending"]


def test_expired_lease_is_claimed_again(store):
    case = _with_evidence(store)
    store.queue(case.id, "cn-dcm", now=T0)
    [first] = store.claim_due(now=T0, lease_s=5)
    [second] = store.claim_due(now=T0 + timedelta(seconds=6), lease_s=5)  # the first holder died
    assert first.id == second.id
    store.mark_delivered(second.id, "T-1")
    assert store.mark_delivered(first.id, "T-1").state is CaseState.SUBMITTED  # late duplicate: no-op


def test_a_lost_lease_sends_nothing_and_the_next_sender_knows_the_case_may_be_there(store):
    case = _with_evidence(store)
    store.queue(case.id, "cn-dcm", now=T0)
    [a] = store.claim_due(now=T0, lease_s=5, owner="dispatcher-a")
    assert a.lease_owner == "dispatcher-a" and a.in_doubt_since is None
    assert store.begin_send(a.id, "dispatcher-a", 5, now=T0 + timedelta(seconds=1))  # its request leaves: renewed
    assert store.claim_due(now=T0 + timedelta(seconds=5.5), owner="dispatcher-b") == []  # renewal covers the request
    # a dies mid-request; its lease runs out and b takes the entry over, knowing a may have reached them
    [b] = store.claim_due(now=T0 + timedelta(seconds=7), lease_s=5, owner="dispatcher-b")
    assert b.lease_owner == "dispatcher-b" and b.in_doubt_since == T0 + timedelta(seconds=1)
    assert not store.begin_send(a.id, "dispatcher-a", 5, now=T0 + timedelta(seconds=7))  # a woke up: may not send
    store.schedule_retry(a.id, "timeout", T0 + timedelta(hours=1), owner="dispatcher-a")  # nor touch b's entry
    [entry] = store.outbox_entries(case_id=case.id)
    assert (entry.attempts, entry.lease_owner) == (0, "dispatcher-b")
    store.clear_doubt(b.id, "dispatcher-b")  # b asked them: they do not have it
    assert store.outbox_entries(case_id=case.id)[0].in_doubt_since is None
    delivered = store.mark_delivered(b.id, "T-7", found=False)
    assert delivered.state is CaseState.SUBMITTED and store.outbox_entries(case_id=case.id)[0].attempts == 1


def test_concurrent_claims_never_share_an_entry(store):
    for n in range(30):
        case = _with_evidence(store, n)
        store.queue(case.id, "cn-dcm", now=T0)
    got: list[list[int]] = [[] for _ in range(4)]

    def worker(i: int) -> None:
        while batch := store.claim_due(limit=3, now=T0 + timedelta(seconds=1)):
            got[i] += [e.id for e in batch]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [e for ids in got for e in ids]
    assert len(claimed) == 30 and len(set(claimed)) == 30


def test_an_approval_without_dispatch_and_a_rejection_at_once_leave_one_decision(store):
    """A reviewer approving a candidate (no dispatch) while another rejects it, or approves it too: the check and the
    write are one transaction, so each case ends with one decision, the one that was not refused."""
    from pipelines.cases.store import NotCandidate

    ids = [_with_evidence(store, n).id for n in range(6)]
    outcome: dict[tuple[str, str], str] = {}

    def act(case_id: str, who: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            if who == "rejecter":
                store.review(case_id, approve=False, reviewer=who, reason_code="duplicate")
            else:
                store.approve(case_id, reviewer=who)
            outcome[case_id, who] = "done"
        except NotCandidate:
            outcome[case_id, who] = "not a candidate"
        except CaseStoreError:
            outcome[case_id, who] = "approved already"

    for i, case_id in enumerate(ids):
        barrier = threading.Barrier(2)
        rival = "rejecter" if i % 2 else "approver-2"
        threads = [threading.Thread(target=act, args=(case_id, who, barrier)) for who in ("approver-1", rival)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        case = store.get(case_id)
        if rival == "rejecter":  # an approval first is then rejected (allowed); one after the rejection is refused
            assert (case.state, case.review_decision, case.reviewer) == (CaseState.REJECTED, "rejected", "rejecter")
            assert outcome[case_id, "approver-1"] in ("done", "not a candidate")
        else:
            winner = case.reviewer
            assert case.state is CaseState.CANDIDATE and case.review_decision == "approved"
            assert sorted(outcome[case_id, w] for w in ("approver-1", "approver-2")) == ["approved already", "done"]
            assert outcome[case_id, winner] == "done"


def _paused_after_first_read(store: CaseStore, act, thread_name: str):
    """Run `act` on a thread named `thread_name` that stops right after its first read of the cases table (inside its
    transaction) until the returned `go` event is set; returns (thread, read, go, outcome)."""
    read, go, outcome = threading.Event(), threading.Event(), {}

    def pause(conn, cursor, statement, *args) -> None:
        if threading.current_thread().name == thread_name and not read.is_set() and "FROM cases" in statement:
            read.set()
            go.wait()

    sa.event.listen(store.engine, "after_cursor_execute", pause)

    def run() -> None:
        try:
            outcome["case"] = act()
        except CaseStoreError as exc:
            outcome["refused"] = exc

    return threading.Thread(target=run, name=thread_name), read, go, outcome


def _waiting_on_a_lock(url: str) -> bool:
    """Whether a session of the database of `url` waits for a row lock another holds."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'")).scalar()
    engine.dispose()
    return n > 0


@pytest.mark.parametrize("second", ["edit", "reject", "confirm"])
def test_two_reviewers_acting_on_one_loaded_case_on_postgresql_one_is_refused(fresh_postgres_url, second):
    """Two reviewers act at once on a case as both loaded it (`unchanged_since` its updated_at): on PostgreSQL the
    check read the row without locking it, so both passed it and both writes went through (a reviewer's edit kept
    and at once overwritten, or a case rejected over a description it never showed). The writer locks the row it
    reads, so the second waits for the first and is refused as changed."""
    from pipelines.cases.store import CaseChanged

    store = CaseStore(fresh_postgres_url)
    case = _with_evidence(store)
    seen = case.updated_at
    actions = {
        "edit": lambda: store.revise(case.id, actor="wang", description="王：车停在人行道上", unchanged_since=seen),
        "reject": lambda: store.review(case.id, approve=False, reviewer="wang", reason_code="duplicate", unchanged_since=seen),
        "confirm": lambda: store.review(case.id, approve=True, reviewer="wang", target="cn-dcm", unchanged_since=seen),
    }
    first, read, go, first_outcome = _paused_after_first_read(
        store, lambda: store.revise(case.id, actor="li", description="李：占用盲道", unchanged_since=seen), "reviewer-li")
    first.start()
    read.wait()  # li has read the case and checked it, and has not written yet
    second_outcome: dict = {}

    def act() -> None:
        try:
            second_outcome["case"] = actions[second]()
        except CaseStoreError as exc:
            second_outcome["refused"] = exc

    rival = threading.Thread(target=act)
    rival.start()
    while rival.is_alive() and not _waiting_on_a_lock(fresh_postgres_url):
        rival.join(0.05)
    go.set()
    first.join()
    rival.join()
    store.close()
    assert "case" in first_outcome and first_outcome["case"].description == "李：占用盲道"
    assert isinstance(second_outcome.get("refused"), CaseChanged), second_outcome
    after = CaseStore(fresh_postgres_url)
    final = after.get(case.id)
    after.close()
    assert (final.state, final.description, final.reviewer) == (CaseState.CANDIDATE, "李：占用盲道", None)


def _schema_differences(url: str) -> list:
    """What Alembic's autogenerate would change to make the database match the current tables."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": schema.VERSION_TABLE})
        diff = compare_metadata(context, schema.metadata)
    engine.dispose()
    return diff


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    return f"sqlite:///{tmp_path}/m.db" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")


def test_a_database_made_by_the_previous_release_is_upgraded(empty_url):
    """Issue 15.10: a store created and used by the previous release (its own schema module, kept verbatim in
    tests/legacy) is upgraded by Alembic on first open, its data intact and its schema the current one."""
    from tests.legacy import case_store_v1 as v1

    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        v1.migrate(conn)
        conn.execute(v1.cases.insert().values(
            id="SW20250314-0123456789ab", violation_id="cam-01:z1:illegal_parking:t1", violation_type="illegal_parking",
            state="queued", source_kind="camera", source_id="cam-01", evidence_ref="file:///e/SW20250314-0123456789ab",
            evidence_digest="d" * 64, details={"dwell_s": 360}, created_at=T0, updated_at=T0))
        conn.execute(v1.case_history.insert().values(case_id="SW20250314-0123456789ab", from_state="candidate",
                                                     to_state="queued", at=T0, actor="li.wei", details={}))
        conn.execute(v1.outbox.insert().values(case_id="SW20250314-0123456789ab", target="cn-dcm",
                                               idempotency_key="streetwatch:cn-dcm:SW20250314-0123456789ab", status="pending",
                                               attempts=2, next_attempt_at=T0, lease_until=T0, last_error="HTTP 503",
                                               created_at=T0))
    assert "schema_version" in sa.inspect(engine).get_table_names()
    engine.dispose()

    store = CaseStore(empty_url)
    with store.engine.connect() as conn:
        assert schema.current_revision(conn) == schema.head()
        tables = set(sa.inspect(conn).get_table_names())
    assert "schema_version" not in tables and schema.VERSION_TABLE in tables
    assert _schema_differences(empty_url) == []  # the same schema as a new database
    case = store.get("SW20250314-0123456789ab")
    assert (case.state, case.evidence_digest, case.details) == (CaseState.QUEUED, "d" * 64, {"dwell_s": 360})
    assert [h.actor for h in store.history(case.id)] == ["li.wei"]
    [entry] = store.claim_due(now=T0 + timedelta(minutes=1), owner="dispatcher-a")  # the new columns at work
    assert (entry.attempts, entry.last_error, entry.lease_owner, entry.in_doubt_since) == (2, "HTTP 503", "dispatcher-a", None)
    assert store.begin_send(entry.id, "dispatcher-a", 30, now=T0 + timedelta(minutes=1))
    assert store.mark_delivered(entry.id, "DCM-1").state is CaseState.SUBMITTED
    store.close()
    CaseStore(empty_url).close()  # opening again: nothing left to do


def test_a_new_database_gets_the_current_tables_and_one_at_an_unknown_revision_is_refused(empty_url):
    CaseStore(empty_url).close()
    assert _schema_differences(empty_url) == []
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(RuntimeError) as refused:
        CaseStore(empty_url)  # which store, where an office keeps several (a copy, last year's): the refusal named none
    # 9999 may be a newer release's or another build's (a branch's revision): calling it "newer" was a guess
    assert str(refused.value) == (f"case store {empty_url}: schema at revision 9999, unknown to this release (its newest: "
                                  f"{schema.head()}): written by a newer release or by another build; run the streetwatch "
                                  "that last opened the store (nothing was changed)")


def test_revision_0007_downgrades_to_0006_and_upgrades_again_with_the_webhook_calls_taken(empty_url):
    """0007 keeps the dispatch webhook's timestamped calls taken in the store (`webhook_calls`, shared by the site's
    `serve` processes). Down to 0006 the table and its index are gone, the cases kept; opened again, the store is
    upgraded to the current tables, and a call taken is refused again there."""
    from alembic import command

    from pipelines.dispatch.webhook import SeenCalls

    store = CaseStore(empty_url)
    case = _draft(store, 1)
    assert SeenCalls(store.engine).claim(("dcm", "sha256=ab"), until=1300, now=1000) is True
    store.close()
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        command.downgrade(schema.alembic_config(conn), "0006")
        assert schema.current_revision(conn) == "0006"
        assert "webhook_calls" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    store = CaseStore(empty_url)  # upgraded again by opening it
    assert store.get(case.id).violation_id == case.violation_id
    seen = SeenCalls(store.engine)
    assert seen.claim(("dcm", "sha256=ab"), until=1300, now=1000) is True and seen.claim(("dcm", "sha256=ab"), until=1300, now=1001) is False
    store.close()
    assert _schema_differences(empty_url) == []


def test_a_foreign_database_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/other.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE cases (id TEXT)")
    engine.dispose()
    with pytest.raises(RuntimeError, match=re.escape(f"case store {url}: a `cases` table but no case store version: not a "
                                                    "streetwatch case store")):
        CaseStore(url)


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = CaseStore(f"sqlite:///{tmp_path}/w.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_sqlite_file_deleted_under_an_open_store_refuses_the_next_write(tmp_path):
    """The store's folder removed while it runs (a cleanup, a wrong rm -r): SQLite's open connection went on writing
    into the deleted file, each case "stored" and lost with it. The next transaction names the database file."""
    folder = tmp_path / "data"
    database = folder / "cases.db"
    store = CaseStore(f"sqlite:///{database}")
    _draft(store, 1)
    shutil.rmtree(folder)
    with pytest.raises(CaseStoreUnreachable, match=re.escape(f"{database}: the database file was deleted")):
        _draft(store, 2)
    with pytest.raises(CaseStoreUnreachable, match="deleted after the store opened it"):  # not reopened, nor made anew
        _draft(store, 2)
    folder.mkdir()
    moved = tmp_path / "moved.db"
    other = CaseStore(f"sqlite:///{database}")
    _draft(other, 3)
    database.rename(moved)  # replaced by another file: the store's connections no longer write the file at the path
    CaseStore(f"sqlite:///{database}").close()
    with pytest.raises(CaseStoreUnreachable, match="deleted or replaced"):
        other.list()
    assert [c.violation_id for c in other.list()] == []  # the file now at the path, read afresh
    store.close()
    other.close()


def test_an_empty_sqlite_file_is_refused_not_made_a_new_empty_store(tmp_path):
    """A 0-byte file at cases.url (a copy or restore that failed) was taken by SQLite for a new database and the
    store's migration built an empty store in it, the lost cases then missing without a word. Opening it is refused
    naming the file and what to do, and the file is left empty; deleted, a new store is made there."""
    database = tmp_path / "cases.db"
    database.write_bytes(b"")
    with pytest.raises(CaseStoreUnreachable) as refused:
        CaseStore(f"sqlite:///{database}")
    assert f"{database}: the database file is empty (0 bytes), not a case store" in str(refused.value)
    assert "restore the store from its backup, or delete the empty file to start a new store" in str(refused.value)
    assert database.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["cases.db"]
    database.unlink()
    store = CaseStore(f"sqlite:///{database}")
    _draft(store, 1)
    assert len(store.list()) == 1
    store.close()


def test_a_store_another_connection_is_making_at_that_instant_is_opened_not_refused_as_empty(tmp_path):
    """A brand-new store's file is empty for the instant between SQLite making it and the first connection writing its
    header (WAL mode); a second process or thread of the service opening it then was refused as an empty file (a failed
    copy). An empty file is looked at again for a moment first, so the store being made is opened."""
    import sqlite3

    database = tmp_path / "cases.db"
    database.write_bytes(b"")  # as SQLite leaves it before the maker's first write

    def finish_making() -> None:
        threading.Event().wait(0.2)
        maker = sqlite3.connect(database)
        maker.execute("PRAGMA journal_mode=WAL")
        maker.close()

    maker = threading.Thread(target=finish_making)
    maker.start()
    store = CaseStore(f"sqlite:///{database}")
    maker.join()
    _draft(store, 1)
    assert len(store.list()) == 1
    store.close()


def test_sqlite_file_deleted_under_an_open_store_is_not_made_anew_empty(tmp_path):
    """The database file alone deleted (its folder kept) while the store runs: the next connection made an empty
    database at the path and the write after failed with 'no such table: cases'. Every one is refused naming the file,
    nothing is made at the path, and the store works again once the file is back; a new store is still made."""
    database = tmp_path / "cases.db"
    store = CaseStore(f"sqlite:///{database}")
    _draft(store, 1)
    aside = tmp_path / "aside.db"
    database.rename(aside)
    with pytest.raises(CaseStoreUnreachable, match=re.escape(f"{database}: the database file was deleted or replaced")):
        _draft(store, 2)  # the connection that held it (today's check)
    for _ in range(2):  # each new connection
        with pytest.raises(CaseStoreUnreachable, match=re.escape(f"{database}: the database file was deleted after the "
                                                                 "store opened it; no empty one is made in its place")):
            _draft(store, 2)
    assert not database.exists()
    aside.rename(database)
    _draft(store, 2)
    assert sorted(c.violation_id for c in store.list()) == ["cam-01:z1:illegal_parking:t1", "cam-01:z1:illegal_parking:t2"]
    store.close()


def test_search_and_revise(store):
    """The review API's queries and corrections, on both databases (LIKE escaping, case-insensitive text)."""
    from detect.taxonomy import Severity
    from pipelines.cases import CaseQuery

    made = [store.create_case(NewCase(violation_type=t, source_kind="camera", source_id=s, grid_cell=g, address=a,
                                      opened_at=T0 + timedelta(minutes=i)))
            for i, (t, s, g, a) in enumerate([("illegal_parking", "cam-01", "A1", "Wensan Road 50%_off"),
                                               ("street_stall", "cam-02", "A2", "学院路 1 号"),
                                               ("street_stall", "cam-01", "A1", "Wensan Road 500 off")])]
    ids = [c.id for c in made]
    page, total = store.search(CaseQuery(violation_type="street_stall", sort="opened_at", descending=False))
    assert total == 2 and [c.id for c in page] == [ids[1], ids[2]]
    assert [c.id for c in store.search(CaseQuery(text="50%_OFF"))[0]] == [ids[0]]  # % and _ are literal
    assert [c.id for c in store.search(CaseQuery(text="学院路"))[0]] == [ids[1]]
    window = CaseQuery(since=T0 + timedelta(seconds=30), until=T0 + timedelta(minutes=2), source_id="cam-02")
    assert [c.id for c in store.search(window)[0]] == [ids[1]]
    page, total = store.search(CaseQuery(limit=1, offset=1, sort="opened_at", descending=True))
    assert total == 3 and [c.id for c in page] == [ids[1]]
    with pytest.raises(CaseStoreError, match="cannot sort by"):
        store.search(CaseQuery(sort="evidence_ref"))
    store.revise(ids[2], actor="rev", severity=Severity.SERIOUS)  # the others have none recorded: general
    assert [c.id for c in store.search(CaseQuery(severity=Severity.SERIOUS))[0]] == [ids[2]]
    assert {c.id for c in store.search(CaseQuery(severity=Severity.GENERAL))[0]} == {ids[0], ids[1]}
    assert store.search(CaseQuery(severity=Severity.MAJOR))[1] == 0

    revised = store.revise(ids[0], actor="rev", violation_type="street_stall", description="tricycle with goods")
    assert revised.violation_type == "street_stall" and revised.details["detected_type"] == "illegal_parking"
    again = store.revise(ids[0], actor="rev2", violation_type="shopfront_spillover")
    assert again.details["detected_type"] == "illegal_parking"  # the detector's proposal is kept once
    assert [(r["field"], r["to"], r["by"]) for r in again.details["revisions"]] == [
        ("violation_type", "street_stall", "rev"), ("description", "tricycle with goods", "rev"),
        ("violation_type", "shopfront_spillover", "rev2")]
    store.review(ids[0], approve=False, reviewer="rev", reason_code="legal")
    with pytest.raises(CaseStoreError, match="only candidate, queued cases can be edited"):
        store.revise(ids[0], actor="rev", description="late")


def test_a_reviewer_sets_the_place_of_a_case_without_one(store, tmp_path):
    """A photo without GPS had neither address nor coordinates, and nothing could add them, so no platform could
    send a handler: revise takes an address and coordinates (recorded like the other edits), files the case in the
    grid cell of the coordinates as intake does, and refuses a place that cannot be one, naming the field."""
    from pipelines.cases.store import PlaceError
    from pipelines.grid import load_grid
    from tests.analytics_helpers import G2, LAT0, LON0, write_grid

    case = store.create_case(NewCase(violation_type="illegal_parking", source_kind="photo_batch", source_id="triage:wechat"))
    assert (case.address, case.lat, case.lon, case.grid_cell) == (None, None, None, None)
    grid = load_grid(write_grid(tmp_path / "grid.geojson"))
    placed = store.revise(case.id, actor="rev", address="  文三路 90 号东门  ", lat=LAT0 + 0.001, lon=LON0 + 0.006, grid=grid)
    assert (placed.address, placed.lat, placed.lon, placed.grid_cell) == ("文三路 90 号东门", LAT0 + 0.001, LON0 + 0.006, G2)
    assert [(r["field"], r["from"], r["to"], r["by"]) for r in placed.details["revisions"]] == [
        ("address", None, "文三路 90 号东门", "rev"), ("lat", None, LAT0 + 0.001, "rev"), ("lon", None, LON0 + 0.006, "rev"),
        ("grid_cell", None, G2, "rev")]
    outside = store.revise(case.id, actor="rev", lat=31.0, lon=121.0, grid=grid)
    assert outside.grid_cell is None and outside.details["revisions"][-1]["field"] == "grid_cell"
    assert store.revise(case.id, actor="rev", lat=31.0, lon=121.0, grid=grid) == outside  # nothing changed: nothing recorded
    assert store.revise(case.id, actor="rev", lat=30.5, lon=120.5).grid_cell is None  # no grid: the cell stays

    for kw, message in (({"address": "   "}, "address: 地址为空 — the address is empty"),
                        ({"address": "路" * 201}, "address: 地址过长（201 字，最多 200） — the address has 201 characters"),
                        ({"address": "文三路\x00 1 号"}, "address: 地址含控制字符（换行、制表符等） — the address has a control"),
                        ({"lat": 30.2}, "lon: 经纬度须同时填写 — give both lat and lon, or neither (lon is missing)"),
                        ({"lat": 91.0, "lon": 120.0}, "lat: 坐标超出范围（91.0，应在 -90 到 90 之间）"),
                        ({"lat": 30.0, "lon": float("nan")}, "lon: 坐标超出范围（nan")):
        with pytest.raises(PlaceError) as refused:
            store.revise(case.id, actor="rev", **kw)
        assert str(refused.value).startswith(message), kw
    assert store.get(case.id).address == "文三路 90 号东门"  # what was accepted before stays
    store.review(case.id, approve=False, reviewer="rev", reason_code="legal")
    with pytest.raises(CaseStoreError, match="only candidate, queued cases can be edited"):
        store.revise(case.id, actor="rev", address="学院路 1 号")


def test_a_photo_case_moved_to_another_cell_gets_the_severity_of_its_road_grade(store, tmp_path):
    """Intake gives a photo judged as a whole the severity of its cell's road grade (illegal parking on a main road:
    较重 major), but a place a reviewer set kept the old one: moving such a case to another cell gives it the new
    cell's, recorded by the same edit, while a severity a reviewer set, and a camera zone's, stay."""
    import json

    from detect.taxonomy import Severity, load_taxonomy
    from pipelines.grid import load_grid
    from tests.analytics_helpers import G1, G2, LAT0, LON0, write_grid

    path = write_grid(tmp_path / "grid.geojson")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["features"][1]["properties"]["grade"] = "main"  # G2: a main road (detect/grades.yaml)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    grid, taxonomy = load_grid(path), load_taxonomy()
    in_g1, in_g2 = (LAT0 + 0.001, LON0 + 0.001), (LAT0 + 0.001, LON0 + 0.006)

    def photo(zone_id: str = "image") -> str:
        return store.create_case(NewCase(violation_type="illegal_parking", source_kind="photo_batch", source_id="triage:wechat",
                                         zone_id=zone_id, details={"severity": "general"})).id

    def move(case_id: str, at: tuple[float, float], **kw):
        return store.revise(case_id, actor="rev", lat=at[0], lon=at[1], grid=grid, taxonomy=taxonomy, **kw)

    a = photo()
    moved = move(a, in_g2)
    assert (moved.grid_cell, moved.details["severity"]) == (G2, "major")
    assert [(r["field"], r["from"], r["to"], r["by"], r.get("derived_from")) for r in moved.details["revisions"]][-2:] == [
        ("grid_cell", None, G2, "rev", None), ("severity", "general", "major", "rev", "grid_cell")]
    again = move(a, in_g1)  # moved again (the first cell was a mistake): the place's severity again
    assert (again.grid_cell, again.details["severity"]) == (G1, "general")

    b = photo()
    store.revise(b, actor="rev", severity=Severity.SERIOUS)  # a reviewer's
    assert move(b, in_g2).details["severity"] == "serious"
    c = photo()
    assert move(c, in_g2, severity=Severity.GENERAL).details["severity"] == "general"  # given with the move: the reviewer's
    camera = photo(zone_id="no-parking-1")
    assert move(camera, in_g2).details["severity"] == "general"  # the zone's rules gave it, not the cell
    d = photo()
    assert move(d, in_g1).details["severity"] == "general" and move(d, (31.0, 121.0)).grid_cell is None  # ungraded, outside


def test_a_photo_case_retyped_gets_the_severity_of_its_new_type(store, tmp_path):
    """Intake gives a photo judged as a whole the severity of its type in its cell's road grade (illegal parking on a
    main road: 较重 major; non-motor parking there: 一般 general), but a reviewer's new type kept the old type's:
    retyping such a case recomputes it (`derived_from: violation_type`), while a severity a reviewer set, a camera
    zone's, and one whose cell's grade is unknown (no grid given) stay."""
    import json

    from detect.taxonomy import Severity, load_taxonomy
    from pipelines.grid import load_grid
    from tests.analytics_helpers import G2, LAT0, LON0, write_grid

    path = write_grid(tmp_path / "grid.geojson")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["features"][1]["properties"]["grade"] = "main"  # G2: a main road (detect/grades.yaml)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    grid, taxonomy = load_grid(path), load_taxonomy()

    def photo(zone_id: str = "image", grid_cell: str | None = G2) -> str:
        return store.create_case(NewCase(violation_type="illegal_parking", source_kind="photo_batch", source_id="triage:wechat",
                                         zone_id=zone_id, grid_cell=grid_cell, lat=LAT0 + 0.001, lon=LON0 + 0.006,
                                         details={"severity": "major"})).id

    def retype(case_id: str, to: str, **kw):
        return store.revise(case_id, actor="rev", violation_type=to, taxonomy=taxonomy, **{"grid": grid, **kw})

    a = photo()
    retyped = retype(a, "nonmotor_parking")
    assert retyped.details["severity"] == "general"
    assert [(r["field"], r["from"], r["to"], r.get("derived_from")) for r in retyped.details["revisions"]][-2:] == [
        ("violation_type", "illegal_parking", "nonmotor_parking", None), ("severity", "major", "general", "violation_type")]
    assert retype(a, "illegal_parking").details["severity"] == "major"  # back again: derived, so recomputed again

    b = photo()
    store.revise(b, actor="rev", severity=Severity.SERIOUS)  # a reviewer's
    assert retype(b, "nonmotor_parking").details["severity"] == "serious"
    c = photo()
    assert retype(c, "nonmotor_parking", severity=Severity.MAJOR).details["severity"] == "major"  # given with it
    camera = photo(zone_id="no-parking-1")
    assert retype(camera, "nonmotor_parking").details["severity"] == "major"  # the zone's rules gave it
    unknown = photo()
    assert retype(unknown, "nonmotor_parking", grid=None).details["severity"] == "major"  # its cell's grade not known here
    nowhere = store.create_case(NewCase(violation_type="illegal_parking", source_kind="photo_batch", source_id="triage:wechat",
                                        zone_id="image", details={"severity": "major"})).id
    assert retype(nowhere, "nonmotor_parking", grid=None).details["severity"] == "general"  # in no cell: the type's


def test_a_transition_only_from_a_state_refuses_a_case_moved_on(store):
    """A machine withdrawing a candidate it looked up a moment ago (a resumed triage run) must not reject a case a
    reviewer queued in between: `only_from` checks the state in the move's own transaction."""
    case = _with_evidence(store)
    store.review(case.id, approve=True, reviewer="reviewer-1", target="city")
    with pytest.raises(CaseStoreError, match=f"case {case.id} is queued now, not candidate: left as it is"):
        store.transition(case.id, CaseState.REJECTED, actor="triage:out", reason="withdrawn", only_from=CaseState.CANDIDATE)
    assert store.get(case.id).state is CaseState.QUEUED
    other = _with_evidence(store, 1)
    assert store.transition(other.id, CaseState.REJECTED, actor="triage:out", only_from=CaseState.CANDIDATE).state is CaseState.REJECTED


def test_a_dispatcher_lease_taken_between_the_reopen_check_and_its_withdrawal_refuses_the_reopening(store, monkeypatch):
    """On PostgreSQL a dispatcher can lease a rejected case's pending entry after `reopen` checked it was unleased and
    before it closed it; the reopening went on and left a live delivery under a candidate. It is refused as the check
    would have refused it a moment later, and nothing of it is kept."""
    case = _with_evidence(store)
    store.review(case.id, approve=True, reviewer="王芳", target="cn-dcm", now=T0)
    store.review(case.id, approve=False, reviewer="王芳", reason_code="not_a_violation", now=T0 + timedelta(minutes=1))
    now = T0 + timedelta(minutes=2)
    checked = CaseStore._reopen_refusal

    def lease_after_the_check(self, conn, case_, within, at):
        refusal = checked(self, conn, case_, within, at)
        conn.execute(schema.outbox.update().where(schema.outbox.c.case_id == case_.id)  # the dispatcher's claim lands
                     .values(lease_until=at + timedelta(minutes=1), lease_owner="dispatcher-b"))
        return refusal

    monkeypatch.setattr(CaseStore, "_reopen_refusal", lease_after_the_check)
    with pytest.raises(CaseStoreError, match=rf"^案件 {case.id} 正在撤回对 cn-dcm 的派遣，请稍后再试 "):
        store.reopen(case.id, actor="王芳", note="误点驳回", within=timedelta(days=7), now=now)
    [entry] = store.outbox_entries(case_id=case.id)
    assert (store.get(case.id).state, entry.status, entry.lease_owner) == (CaseState.REJECTED, "pending", None)


def test_the_store_serves_serve_s_threads_at_once_and_takes_the_pool_settings_on_postgresql(fresh_postgres_url, tmp_path):
    """The PostgreSQL pool was SQLAlchemy's (5 kept, 10 more): the 16th of `serve`'s 40 worker threads waited for a
    connection and failed after 30 s. By default a store holds 40 at once and more for its background work;
    `cases.pool_size`, `cases.max_overflow` and `cases.pool_timeout` set it, and a value out of range is refused
    naming the setting."""
    store = CaseStoreConfig(url=fresh_postgres_url).open()
    held = [store.engine.connect() for _ in range(41)]  # every worker thread in a query, and one job more
    assert [c.exec_driver_sql("SELECT 1").scalar() for c in held] == [1] * 41
    for conn in held:
        conn.close()
    store.close()

    small = CaseStoreConfig(url=fresh_postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.1).open()
    with small.engine.connect(), pytest.raises(sa.exc.TimeoutError):
        small.engine.connect()  # the one connection is in use: the next waits pool_timeout, then fails
    small.close()

    settings = tmp_path / "settings.yaml"
    settings.write_text(f"cases:\n  url: {fresh_postgres_url}\n  pool_size: 0\n  pool_timeout: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(settings)
    lines = str(refused.value).splitlines()
    assert any(line.startswith(f"{settings}: cases.pool_size: ") for line in lines), lines
    assert any(line.startswith(f"{settings}: cases.pool_timeout: ") for line in lines), lines


def test_a_connection_lost_under_a_query_is_the_store_unreachable_and_the_next_query_works(fresh_postgres_url):
    """Soak (the database server restarted under `serve`): a query in flight on a connection the server closed raised
    the driver's OperationalError ('consuming input failed: server closed the connection unexpectedly'), which `serve`
    answered 500 with its traceback and a running job showed in the driver's words; it is CaseStoreUnreachable, as a
    connection that cannot be opened is (503 case-store-unreachable), and the pool opens a new one for the next query."""
    from pipelines.cases import CaseQuery

    store = CaseStore(fresh_postgres_url)
    with pytest.raises(CaseStoreUnreachable, match="connection lost while in use: .*terminating connection"):
        with store.engine.connect() as conn:  # the server ends the connection under its query, as a restart ends each
            conn.execute(sa.text("select pg_terminate_backend(pg_backend_pid())"))
    assert store.search(CaseQuery())[1] == 0  # a new connection: the store works again
    store.close()



@pytest.mark.parametrize("query", [CaseQuery(), CaseQuery(state=CaseState.CLOSED),
                                   CaseQuery(state=CaseState.CANDIDATE, reviewed=False),
                                   CaseQuery(since=T0, until=T0 + timedelta(days=7)),
                                   CaseQuery(since=T0, descending=False)],
                         ids=["newest", "one state", "the queue", "a week", "oldest since"])
def test_a_page_of_cases_reads_an_index_not_every_case(tmp_path, query):
    """The case list's page (newest first by `opened_at`, maybe within a period or one state) read every case, or every
    case of the state, and sorted them: no index held `opened_at`, and a city's years of cases made each page slower
    (0.5 s at 100,000 on SQLite). SQLite's plans for the statements `search` runs (the page and its count) walk an
    index, the page's in the list's order."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    for n in range(3):
        _draft(store, n)
    ran: list[tuple[str, Any]] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda _c, _cur, sql, params, _ctx, _many: ran.append((sql, params)))
    store.search(query)
    with store.engine.connect() as conn:
        plans = {sql: " / ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
                 for sql, params in ran if sql.lstrip().upper().startswith("SELECT")}
    store.close()
    assert len(plans) == 2 and not any(re.search(r"\bSCAN cases\b(?! USING)", plan) for plan in plans.values()), plans
    [page] = [plan for sql, plan in plans.items() if "ORDER BY" in sql]
    assert "USE TEMP B-TREE FOR ORDER BY" not in page, plans


@pytest.mark.parametrize(("read", "index"), [
    (lambda store: store.list(limit=100), "ix_cases_created_at"),
    (lambda store: store.list(state=CaseState.CANDIDATE, limit=100), "ix_cases_state_created_at"),
    (lambda store: store.waiting_for_evidence(), "ix_cases_state_created_at"),
], ids=["all", "one state", "waiting for evidence"])
def test_cases_list_reads_an_index_in_its_order(tmp_path, read, index):
    """`cases list` (oldest stored first: created_at, then id) read every case and sorted them, no index holding
    created_at; SQLite's plan walks ix_cases_created_at in the list's order. With --state, and the intake's retry of
    candidates waiting for their evidence (one state, oldest stored first), SQLite read all of the state's cases by
    ix_cases_state_opened_at and sorted them; they walk ix_cases_state_created_at in their order."""
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    for n in range(3):
        _draft(store, n)
    ran: list[tuple[str, Any]] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda _c, _cur, sql, params, _ctx, _many: ran.append((sql, params)))
    assert len(read(store)) == 3
    [(sql, params)] = [(sql, params) for sql, params in ran if sql.lstrip().upper().startswith("SELECT")]
    with store.engine.connect() as conn:
        plan = " / ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
    store.close()
    assert re.search(rf"INDEX {index}\b", plan) and "TEMP B-TREE" not in plan, plan


def test_a_write_to_a_full_disk_is_one_line_naming_the_store_and_keeps_what_it_held(tmp_path):
    """A write the disk had no room for (SQLite's 'database or disk is full'; a tiny tmpfs did it, here a page cap
    does) printed SQLAlchemy's traceback from every command that writes (users add, triage): it is CaseStoreFull, the
    CLI's one line naming the store and where to free space; the cases stored before are all there afterwards."""
    from pipelines.cases.store import CaseStoreFull
    from streetwatch.cli import _user_error

    url = f"sqlite:///{tmp_path}/cases.db"
    store = CaseStore(url)
    kept = [_draft(store, 0).id]
    store.engine.dispose()

    @sa.event.listens_for(store.engine, "connect")
    def _no_room_left(dbapi_conn, _record) -> None:  # the file may grow by 8 pages only, as on a disk nearly full
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 8}")

    with pytest.raises(CaseStoreFull) as full:
        for n in range(1, 50):
            kept.append(_draft(store, n, description="占道经营，" * 400).id)
    store.close()
    line = _user_error(full.value)
    assert line == f"case store {url}: database or disk is full: this write was not kept (what the store held before " \
                   f"is); free space on the disk holding {tmp_path}/cases.db (and its -wal file beside it) and run the " \
                   "command again"
    again = CaseStore(url)
    assert sorted(c.id for c in again.list()) == sorted(kept) and len(kept) > 1
    again.close()


def test_the_documented_way_back_to_the_release_before_takes_a_store_down_to_its_revision(tmp_path):
    """docs/cases-and-dispatch.md said what each revision's downgrade drops, never how a site goes back: the alembic
    line it gave was a developer's, run from a checkout. Its 'going back' line, run as written (a shell, this
    release installed), takes a store of this release down to the release before's revision, its cases kept."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    docs = (repo / "docs" / "cases-and-dispatch.md").read_text(encoding="utf-8")
    [line] = [x for x in docs.splitlines() if x.startswith("alembic ") and " downgrade " in x]
    url = f"sqlite:///{tmp_path}/cases.db"
    store = CaseStore(url)
    case = _draft(store, 1)
    store.close()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    done = subprocess.run(["bash", "-c", line.replace("sqlite:////srv/streetwatch/cases.db", url)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert schema.current_revision(conn) == line.rsplit(" ", 1)[1] == "0006"
        assert "webhook_calls" not in sa.inspect(conn).get_table_names()
        assert conn.execute(sa.select(schema.cases.c.id)).scalars().all() == [case.id]
    engine.dispose()


def test_every_reason_the_store_writes_in_a_case_s_history_has_its_chinese(tmp_path):
    """The queue page's 原因 Reason column showed the history's stored English (case drafted, delivered as …) to city
    staff. Every way a case moves here (drafted, queued, parked, requeued, delivered or found there, withdrawn unsent or
    after it reached them, handled, re-checked, rejected with a code or with nothing said) writes a reason the page shows
    in Chinese first: `HISTORY_REASONS_ZH` has its Chinese, or it begins in Chinese; a reviewer's own words are theirs."""
    from pipelines.cases.vocabulary import history_reason_zh
    from pipelines.cityops.verification import DISPOSAL_RECEIVED

    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")
    [camera, photo, rejected, held, requeued] = [_with_evidence(store, n).id for n in range(5)]
    store.update(photo, source_kind="photo_batch", source_id="triage:day1")
    for case_id in (camera, photo, rejected, held, requeued):
        store.queue(case_id, "dcm", actor="li.wei")
    entry = {case_id: store.outbox_entries(case_id=case_id)[0].id for case_id in (camera, photo, rejected, held, requeued)}
    store.park(entry[requeued], "HTTP 400: bad grid cell")  # queued: said in the case's reason, not its history
    store.requeue(entry[requeued], actor="ops")
    store.review(rejected, approve=False, reviewer="王芳")
    store.close_withdrawn(entry[rejected])
    store.review(held, approve=False, reviewer="王芳", reason_code="duplicate")
    store.park(entry[held], "HTTP 503")  # no longer queued: said in its history
    store.mark_delivered(entry[held], "DCM-9")  # reached them all the same
    store.mark_delivered(entry[camera], "DCM-1")
    store.mark_delivered(entry[photo], "DCM-2", found=True)
    store.mark_handled(camera, actor="dispatch:dcm")
    store.record_verification(camera, False, actor="cctv:cam-01")
    store.apply_remote_state(camera, CaseState.VERIFYING, actor="city", reason=DISPOSAL_RECEIVED)
    store.record_verification(camera, True, actor="disposal-photo:city")
    store.mark_handled(photo, actor="dispatch:dcm")
    [reviewed] = [_with_evidence(store, 5).id]
    store.review(reviewed, approve=False, reviewer="王芳", reason_code="duplicate", note="与另一案件重复")

    written = [h.reason for case_id in (camera, photo, rejected, held, requeued) for h in store.history(case_id)]
    assert len(set(written)) == 15 and None not in written, written  # each path above, and none left without a reason
    untranslated = [r for r in written if not history_reason_zh(r) and not re.match(r"[\u3400-\u9fff]", r)]
    assert untranslated == []
    assert history_reason_zh("delivered as DCM-1") == "已送达平台" and history_reason_zh("duplicate") == "重复案件"
    assert [h.reason for h in store.history(reviewed)][-1] == "与另一案件重复"  # a reviewer's note: as written
    assert history_reason_zh("与另一案件重复") is None and history_reason_zh("closed by the street office") is None
    store.close()
