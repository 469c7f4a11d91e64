"""The dispatcher: delivers outbox entries to dispatch systems, exactly once as seen by them.

Exactly once comes from these pieces together:
- the outbox entry is written in the same transaction that queues the case (case store);
- an entry is *leased* while in flight, never flagged, and one entry at a time: it is claimed
  when its turn comes and the lease is renewed as its request leaves (`begin_send`), so a lease
  only ever covers one request (`lease_s` > twice the timeout) and a second dispatcher on the
  same store cannot take an entry whose request is still running; a dispatcher killed
  mid-request leaves a lease that runs out, and the next dispatcher takes the entry over;
- before a request leaves, the entry is marked *in doubt* (the other side may hold the case from
  then on); whoever sends an in-doubt entry again first asks the other side whether it already
  holds the case (`look_up`) and adopts the reference it created;
- every attempt carries the same idempotency key (one per case and target), so a receiver that
  honours it answers a repeat with the first result too.

Failures: transient ones (timeouts, connection errors, 5xx, unreadable answers) are retried with
exponential back-off and jitter, never sooner than their Retry-After (up to `max_s`), the next
attempt time persisted in the entry so a restart keeps the schedule; permanent ones (4xx) park
the entry with the reason for a human. A per-target circuit breaker stops hammering a system that
keeps failing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from detect.evidence import MANIFEST, SIGNATURE
from detect.taxonomy import Taxonomy, load_taxonomy
from pipelines.cases.states import CaseState, InvalidTransition
from pipelines.cases.store import Case, CaseStore, CaseStoreUnreachable, OutboxEntry
from pipelines.dispatch.adapters import Delivery, DeliveryError, Duplicate, Permanent, Transient, make_adapter
from pipelines.dispatch.config import BreakerPolicy, DispatchConfig, RetryPolicy
from pipelines.evidence_store import EvidenceStore, StorageError, content_type
from pipelines.logs import mask_phones

log = logging.getLogger(__name__)


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Delay after the `attempt`-th failure: base * 2^(attempt-1), capped, with `jitter` of it random.

    Written out rather than taken from tenacity because the delay is persisted in the outbox
    (`next_attempt_at`), not slept in a retry loop.
    """
    delay = min(policy.max_s, policy.base_s * 2 ** max(0, attempt - 1))
    return delay * (1 - policy.jitter * rng.random())


@dataclass
class CircuitBreaker:
    """Closed -> open after `failures` consecutive failures -> after `cooldown_s` one trial (half-open).

    In memory on purpose: after a restart the first deliveries are the trial.
    """

    policy: BreakerPolicy
    consecutive: int = 0
    open_until: datetime | None = None

    def allows(self, now: datetime) -> bool:
        return self.open_until is None or now >= self.open_until

    def success(self) -> None:
        self.consecutive, self.open_until = 0, None

    def failure(self, now: datetime) -> bool:
        """Count a failure; True when this opens (or re-opens) the circuit."""
        self.consecutive += 1
        if self.consecutive >= self.policy.failures:
            self.open_until = now + timedelta(seconds=self.policy.cooldown_s)
            return True
        return False


@dataclass
class PassStats:
    delivered: int = 0
    found: int = 0  # of `delivered`: already on their side (an earlier attempt had reached them), adopted
    retried: int = 0
    parked: int = 0
    withdrawn: int = 0  # entries of cases withdrawn here, or queued for another target since, before they were sent: closed, never sent
    deferred: int = 0
    lost: int = 0  # entries whose lease ran out and went to another dispatcher before we sent them
    status_changes: int = 0
    #: what went wrong, as `dispatch run` prints it (a journal keeps it as long as a log): phone numbers masked
    errors: list[str] = field(default_factory=list)

    def add(self, other: PassStats) -> None:
        for name in ("delivered", "found", "retried", "parked", "withdrawn", "deferred", "lost", "status_changes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors


class Dispatcher:
    def __init__(self, store: CaseStore, evidence: EvidenceStore, config: DispatchConfig, *,
                 taxonomy: Taxonomy | None = None, client: httpx.Client | None = None, seed: int | None = None):
        self.store, self.evidence, self.config = store, evidence, config
        taxonomy = taxonomy or load_taxonomy()
        self.adapters = {name: make_adapter(name, t, taxonomy) for name, t in config.targets.items()}
        self.breakers = {name: CircuitBreaker(config.breaker) for name in config.targets}
        self.clients = {name: client or httpx.Client(timeout=t.timeout_s) for name, t in config.targets.items()}
        self.rng = random.Random(seed)
        self.last_failure: dict[str, str] = {}  # per target: the failure that counts toward its circuit, for held cases' reason
        # Whose lease it is: several dispatchers (processes, machines) may share one store.
        self.owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # The first poll waits one interval: a request just delivered has nothing to report yet.
        self._last_poll: dict[str, datetime] = dict.fromkeys(config.targets, datetime.now(UTC))

    def close(self) -> None:
        for client in set(self.clients.values()):
            client.close()

    # ---- delivery -------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> PassStats:
        """Deliver what is due now (up to `batch` entries, each claimed when its turn comes and handled
        at most once per pass), then poll statuses that are due."""
        stats = PassStats()
        handled: list[int] = []
        for _ in range(self.config.batch):
            claimed = self.store.claim_due(limit=1, lease_s=self.config.lease_s, now=now, owner=self.owner, skip=handled)
            if not claimed:
                break
            handled.append(claimed[0].id)
            self._deliver(claimed[0], stats)
        stats.add(self.poll_statuses())
        return stats

    def run(self, stop: threading.Event | None = None) -> PassStats:
        """Deliver until `stop` is set: passes back to back while work is due, else sleep until the next due time.

        A case store that cannot be reached (a database restarted or down) is waited for, tried again every `idle_s`:
        the process is a service's, and it exited at the first pass that met the outage, so deliveries stopped until
        someone restarted it. An entry claimed when the store went away is taken again once its lease runs out, asking
        the platform first if its request may have left (in doubt), as after a dispatcher killed mid-request."""
        stop = stop or threading.Event()
        total = PassStats()
        down = False
        while not stop.is_set():
            try:
                stats = self.run_once()
                worked = bool(stats.delivered or stats.retried or stats.parked or stats.withdrawn)
                due = None if worked else self.store.next_due_at()
            except CaseStoreUnreachable as exc:
                if not down:  # one line an outage, not one a second
                    log.warning("%s; deliveries wait for it, tried again every %g s", exc, self.config.idle_s)
                down = True
                stop.wait(self.config.idle_s)
                continue
            if down:
                log.info("the case store answers again: deliveries go on")
                down = False
            total.add(stats)
            if worked:
                continue
            wait = self.config.idle_s if due is None else (due - datetime.now(UTC)).total_seconds()
            stop.wait(min(max(wait, 0.01), self.config.idle_s))
        return total

    def _deliver(self, entry: OutboxEntry, stats: PassStats) -> None:
        now = datetime.now(UTC)
        adapter = self.adapters.get(entry.target)
        if adapter is None:
            self.store.park(entry.id, f"no dispatch target named {entry.target!r} is configured", owner=self.owner)
            stats.parked += 1
            return
        breaker = self.breakers[entry.target]
        if not breaker.allows(now):
            why = f"held while {entry.target} is failing (circuit open); last error: {self.last_failure.get(entry.target)}"
            self.store.defer(entry.id, breaker.open_until, why, owner=self.owner)
            stats.deferred += 1
            return
        case = self.store.get(entry.case_id)
        if case.state is not CaseState.QUEUED:
            self._withdrawn(entry, case, stats, now)
            return
        if case.dispatch_target != entry.target:
            self._stale(entry, case, stats)
            return
        client = self.clients[entry.target]
        try:
            delivery = self._delivery(entry)
            if entry.in_doubt_since is not None and self.config.targets[entry.target].lookup:
                ref = adapter.look_up(client, delivery)
                if ref is not None:
                    breaker.success()
                    self._record(entry, ref, stats, found=True)
                    return
                self.store.clear_doubt(entry.id, self.owner)
            if not self.store.begin_send(entry.id, self.owner, self.config.lease_s):
                stats.lost += 1
                log.warning("case %s: lease on its outbox entry lost before sending; another dispatcher has it", entry.case_id)
                return
            ref = adapter.deliver(client, delivery)
        except Duplicate as exc:
            self._duplicate(entry, exc, delivery, stats, now)
            return
        except DeliveryError as exc:
            self._failed(entry, exc, breaker, stats, now)
            return
        breaker.success()
        self._record(entry, ref, stats)

    def _duplicate(self, entry: OutboxEntry, exc: Duplicate, delivery: Delivery, stats: PassStats, now: datetime) -> None:
        """They refused the case as one they hold already (409): an earlier attempt reached them and its answer was
        lost, or the case went to them under another target name. Parked, the case had no task number, so their
        status calls about it were refused; it is looked up and their number adopted, as for an attempt in doubt.
        Not found (or look-ups off), it is parked with their words and what to do."""
        breaker = self.breakers[entry.target]
        if self.config.targets[entry.target].lookup:
            try:
                ref = self.adapters[entry.target].look_up(self.clients[entry.target], delivery)
            except DeliveryError as failed:
                self._failed(entry, failed, breaker, stats, now)
                return
            if ref is not None:
                breaker.success()
                self._record(entry, ref, stats, found=True)
                return
        where = "their look-up did not find it" if self.config.targets[entry.target].lookup else "look-ups are off"
        self._failed(entry, Duplicate(f"{exc} (they say they hold this case already, and {where}: find their task "
                                      "number there; a requeue looks it up again before sending)"), breaker, stats, now)

    def _withdrawn(self, entry: OutboxEntry, case: Case, stats: PassStats, now: datetime) -> None:
        """An entry whose case was withdrawn here (rejected) before it was sent: it is not sent now, and closed as
        withdrawn (not parked: there is nothing for anyone to fix). But an entry in doubt may have reached them on an
        earlier attempt: they are asked first, and a case they hold is recorded with their reference and the words to
        have it voided (`_record`), where parking it as 'not sent' lost their number; with look-ups off it is parked
        for someone to check there (said in the case's history: its reason stays the reviewer's)."""
        target = self.config.targets[entry.target]
        if entry.in_doubt_since is not None and target.lookup:
            try:
                ref = self.adapters[entry.target].look_up(self.clients[entry.target], self._delivery(entry))
            except DeliveryError as exc:
                self._failed(entry, exc, self.breakers[entry.target], stats, now)
                return
            self.breakers[entry.target].success()
            if ref is not None:
                self._record(entry, ref, stats, found=True)
                return
        if entry.in_doubt_since is not None and not target.lookup:
            self.store.park(entry.id, f"case is {case.state}, not queued: not sent; an earlier attempt may have reached "
                            f"{entry.target} (look-ups are off): check there", owner=self.owner)
            stats.parked += 1
            return
        self.store.close_withdrawn(entry.id, owner=self.owner)
        stats.withdrawn += 1

    def _stale(self, entry: OutboxEntry, case: Case, stats: PassStats) -> None:
        """An entry for a platform the queued case is not queued for (it was queued for another since, as a reopening
        that raced a dispatcher's claim on PostgreSQL can leave it): sent, the case would reach both platforms. Not
        sent: closed as withdrawn, the case's history saying why; one in doubt may have reached them on an earlier
        attempt, so it is parked for someone to check there (adopting their reference would take the case off the
        platform it is queued for)."""
        why = f"not sent to {entry.target}: the case is queued for {case.dispatch_target} now"
        if entry.in_doubt_since is not None:
            why += f"; an earlier attempt may have reached {entry.target}: check there"
            self.store.park(entry.id, why, owner=self.owner)
            stats.parked += 1
        else:
            self.store.close_withdrawn(entry.id, owner=self.owner, why=why)
            stats.withdrawn += 1
        log.warning("case %s: %s", case.id, why)

    def _record(self, entry: OutboxEntry, ref: str, stats: PassStats, *, found: bool = False) -> None:
        """They hold the case as `ref` (their answer, or `found` by a look-up): recorded, and a case withdrawn here
        meanwhile is named in the pass's errors, since they will act on it unless someone has it voided."""
        case = self.store.mark_delivered(entry.id, ref, found=found)
        stats.delivered += 1
        stats.found += found
        if found:
            log.info("case %s was already on %s as %s (an earlier attempt reached it): adopted", entry.case_id, entry.target, ref)
        else:
            log.info("case %s delivered to %s as %s (attempt %d)", entry.case_id, entry.target, ref, entry.attempts + 1)
        if case.state is CaseState.REJECTED and case.dispatch_ref == ref:
            stats.errors.append(f"case {case.id}: {mask_phones(case.reason or '')}")
            log.warning("case %s: %s", case.id, mask_phones(case.reason or ""))

    def _failed(self, entry: OutboxEntry, exc: DeliveryError, breaker: CircuitBreaker, stats: PassStats,
                now: datetime) -> None:
        """Park or schedule the retry of a failed delivery. The platform's text is kept whole for staff (the outbox,
        the case's reason) but logged through `mask_phones`: a platform's error often echoes the description sent,
        with the numbers read from a posting, and a log keeps them for years."""
        attempt = entry.attempts + 1
        reason = f"{entry.target}: {exc}"
        stats.errors.append(f"case {entry.case_id}: {mask_phones(reason)}")
        if not exc.retry:
            breaker.success()  # they answered: the system is up, the request was wrong
            self.store.park(entry.id, str(exc), owner=self.owner)
            stats.parked += 1
            log.warning("case %s parked: %s", entry.case_id, mask_phones(reason))
            return
        self.last_failure[entry.target] = str(exc)
        if breaker.failure(now):
            log.warning("%s: circuit open until %s after %d failures", entry.target, breaker.open_until, breaker.consecutive)
        limit = self.config.retry.max_attempts
        if limit is not None and attempt >= limit:
            self.store.park(entry.id, f"gave up after {attempt} attempts; last: {exc}", owner=self.owner)
            stats.parked += 1
            return
        delay = backoff_s(attempt, self.config.retry, self.rng)
        if exc.retry_after_s is not None:  # they said when (429/503 Retry-After): not before, up to our longest back-off
            delay = max(delay, min(exc.retry_after_s, self.config.retry.max_s))
        when = now + timedelta(seconds=delay)
        if breaker.open_until is not None:
            when = max(when, breaker.open_until)
        self.store.schedule_retry(entry.id, reason, when, owner=self.owner)
        stats.retried += 1
        log.info("case %s attempt %d failed (%s); next at %s", entry.case_id, attempt, mask_phones(str(exc)), when.isoformat())

    def _delivery(self, entry: OutboxEntry) -> Delivery:
        return self.delivery(entry.case_id, entry.target, entry.idempotency_key, entry.created_at)

    def delivery(self, case_id: str, target_name: str, idempotency_key: str, queued_at: datetime | None) -> Delivery:
        """What `target_name` is sent for the case: its signed manifest, checked, and its attachments' URLs (also
        `dispatch preview`'s, which shows a case's request without an outbox entry or sending it)."""
        case = self.store.get(case_id)
        if case.evidence_ref is None:
            raise Transient("evidence not stored yet")
        target = self.config.targets[target_name]
        try:
            raw = self.evidence.read_bytes(case.evidence_ref, MANIFEST)
            manifest = _stored_json(case, MANIFEST, raw)
            check_evidence(case, manifest, hashlib.sha256(raw).hexdigest())
            signed = _stored_json(case, SIGNATURE, self.evidence.read_bytes(case.evidence_ref, SIGNATURE)).get(
                "public_key_signature")
            by_path = {a["path"]: a for a in manifest["artifacts"]}
            expiry = timedelta(seconds=target.attachment_expiry_s)
            attachments = [{"path": p, "url": self.evidence.url(case.evidence_ref, p, expiry),
                            "content_type": by_path[p].get("content_type") or content_type(p), "sha256": by_path[p]["sha256"]}
                           for p in manifest["dispatch_attachments"]]
        except StorageError as exc:
            raise Transient(f"evidence store: {exc}") from exc
        except (KeyError, TypeError, AttributeError) as exc:  # a manifest that is JSON but not one we wrote
            raise Permanent(f"evidence at {case.evidence_ref}: {MANIFEST} lacks what dispatch needs "
                            f"({type(exc).__name__}: {exc}): not sent") from exc
        return Delivery(case=case, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest(),
                        attachments=attachments, idempotency_key=idempotency_key, queued_at=queued_at,
                        public_signature=signed if isinstance(signed, dict) else None)

    # ---- status feedback ------------------------------------------------------------------

    def poll_statuses(self, now: datetime | None = None, *, force: bool = False) -> PassStats:
        """Ask polling targets (Open311) about open cases, at most every `poll_interval_s` per target."""
        now = now or datetime.now(UTC)
        stats = PassStats()
        for name, adapter in self.adapters.items():
            if not hasattr(adapter, "resolve_token"):
                continue
            last = self._last_poll[name]
            if not force and (now - last).total_seconds() < self.config.targets[name].poll_interval_s:
                continue
            self._last_poll[name] = now
            for case in self.store.awaiting_status(name):
                try:
                    ref = case.dispatch_ref
                    if ref.startswith("token:"):
                        resolved = adapter.resolve_token(self.clients[name], ref)
                        if resolved is None:
                            continue
                        self.store.update(case.id, dispatch_ref=resolved)
                        ref = resolved
                    status = adapter.status(self.clients[name], ref)
                except DeliveryError as exc:
                    stats.errors.append(f"case {case.id}: status poll: {mask_phones(str(exc))}")
                    continue
                if status is not None and apply_status(self.store, case.id, status, actor=f"dispatch:{name}"):
                    stats.status_changes += 1
        return stats


def _stored_json(case: Case, name: str, raw: bytes) -> dict:
    """A JSON object file of the stored bundle; anything else is `Permanent`: the store never holds a half-written
    manifest (it is renamed in, or written last), so an unreadable one was damaged there and a human must look,
    rather than the exception stopping every delivery behind it."""
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise Permanent(f"evidence at {case.evidence_ref}: {name} is unreadable ({exc}): not sent") from None
    if not isinstance(data, dict):
        raise Permanent(f"evidence at {case.evidence_ref}: {name} holds a JSON {type(data).__name__}, not an object: not sent")
    return data


def check_evidence(case: Case, manifest: dict, digest: str) -> None:
    """The stored bundle is the one sealed for this case: its manifest names the case (else `Permanent`:
    another case's bundle was put in its place, a human must look) and its digest is the one the case
    store recorded at sealing (else `Transient`: a newer bundle is still on its way to the store, or
    the stored one was replaced; it is not sent either way)."""
    if manifest.get("case_id") != case.id:
        raise Permanent(f"evidence at {case.evidence_ref} belongs to case {manifest.get('case_id')}, not {case.id}: not sent")
    if case.evidence_digest is not None and digest != case.evidence_digest:
        raise Transient(f"evidence at {case.evidence_ref} has digest {digest[:16]}…, not the {case.evidence_digest[:16]}… "
                        "sealed for this case (upload pending, or the stored bundle was replaced): not sent")


def apply_status(store: CaseStore, case_id: str, status: str, *, actor: str, note: str | None = None) -> bool:
    """Move a case by a dispatch-side status (`accepted`, `rejected`, `closed`, `handled`); True if it changed.

    A status that does not fit the case's current state (a late `accepted` after `handled`) is
    logged and ignored: the dispatch side's history arrives out of order sometimes.
    """
    before = store.get(case_id).state
    try:
        if status == "handled":
            after = store.mark_handled(case_id, actor=actor, note=note).state
        else:
            after = store.apply_remote_state(case_id, CaseState(status), actor=actor, reason=note).state
    except InvalidTransition as exc:
        log.info("status %r for case %s ignored: %s", status, case_id, exc)
        return False
    return after is not before
