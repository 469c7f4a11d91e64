"""The case side of the CCTV service, in its own thread: events to cases, auto-queue, re-checks.

Building and uploading evidence takes tens of milliseconds to seconds (S3), so it never runs on
the inference worker: the worker posts events and re-check requests here and goes on. The
queue is unbounded on purpose: violations open minutes apart, and an event must never be
dropped. On shutdown the sink drains everything posted, then retries spooled evidence once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import supervision as sv

from detect.events import EventKind, ViolationEvent
from detect.evidence.builder import BundleContext
from detect.frames import Frame
from detect.scenes import resolve_thresholds
from detect.taxonomy import Taxonomy
from pipelines.cases import Case, CaseState, CaseStoreUnreachable
from pipelines.cases.intake import Intake
from pipelines.cctv.config import Camera
from pipelines.cctv.metrics import Metrics
from pipelines.cctv.runtime import present

log = logging.getLogger(__name__)

RETRY_EVIDENCE_S = 60.0
STORE_RETRY_S = 5.0
"""Seconds between the sink's tries of an item it could not record because the case store did not answer."""


@dataclass
class _Event:
    camera: Camera
    event: ViolationEvent
    ctx: BundleContext


@dataclass
class _Strip:
    violation_id: str
    frames: list[Frame]


@dataclass
class _Check:
    camera: Camera
    frame: Frame
    detections: sv.Detections


class CaseSink(threading.Thread):
    def __init__(self, intake: Intake, taxonomy: Taxonomy, metrics: Metrics, on_record=lambda data: None, warner=None,
                 verified: frozenset[str] = frozenset()):
        super().__init__(name="case-sink", daemon=True)
        self.intake, self.taxonomy, self.metrics = intake, taxonomy, metrics
        self.warner = warner  # pipelines.cityops.warnings.Warner: warn first, re-check, then a case (optional)
        self.on_record = on_record  # structured record of what happened (events file, logs)
        self.verified = verified  # types whose verdicts frames carry: re-checks judge them the same way
        self._queue: queue.Queue = queue.Queue()
        self._closing = threading.Event()  # set by close(): an item held for a store that is down is not waited for
        self._checks_paused_until = 0.0  # time.monotonic() before which re-checks are not queued (the case store is down)
        self.store_retry_s = STORE_RETRY_S
        self._cameras: dict[str, Camera] = {}
        self._absent_since: dict[str, dict[str, datetime]] = {}  # camera id -> its verifying cases not seen since
        # Cameras' `auto_queue` (type -> target) is the policy the intake applies when evidence is stored.
        intake.auto_queue = self._auto_queue_target

    # ---- called by the worker -----------------------------------------------------------

    def post_event(self, camera: Camera, event: ViolationEvent, ctx: BundleContext) -> None:
        self._queue.put(_Event(camera, event, ctx))

    def post_strip(self, violation_id: str, frames: list[Frame]) -> None:
        self._queue.put(_Strip(violation_id, frames))

    def post_check(self, camera: Camera, frame: Frame, detections: sv.Detections) -> None:
        """Queue a re-check of the camera's open cases on `frame`, unless the case store is down: a re-check holds a
        whole frame and comes again every `verify_every_s`, so queued through an outage of an hour they would fill
        memory with frames that say nothing the next re-check will not."""
        if time.monotonic() >= self._checks_paused_until:
            self._queue.put(_Check(camera, frame, detections))

    def close(self) -> None:
        """Finish everything posted so far, then stop (join the thread to wait for it); with the case store down, what
        could not be recorded is logged as lost rather than waited for."""
        self._closing.set()
        self._queue.put(None)

    # ---- thread -------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=RETRY_EVIDENCE_S)
            except queue.Empty:
                self._retry_evidence()
                continue
            if item is None:
                break
            self._handle_waiting_for_store(item)
        self._retry_evidence()

    def _handle_waiting_for_store(self, item: _Event | _Strip | _Check) -> None:
        """Handle `item`; while the case store does not answer (a database restarted or down), hold it and try again
        every `store_retry_s`, the items after it waiting in order: a violation opened during the outage was dropped
        with a traceback, and its later events found 'no case to update', the case never made. Recording an event is
        idempotent per violation id, so an attempt cut off half-way is taken up again, not doubled."""
        down = False
        while True:
            try:
                self._handle(item)
            except CaseStoreUnreachable as exc:
                # re-checks wait out the store's next try; one that failed is dropped: a later one judges the same cases
                self._checks_paused_until = time.monotonic() + 2 * self.store_retry_s
                if isinstance(item, _Check):
                    log.warning("case sink: camera %s: re-check skipped, the case store is down: %s", item.camera.id, exc)
                    return
                if self._closing.is_set():
                    log.error("case sink: %s not recorded, the watcher stopping while the case store is down: %s",
                              type(item).__name__, exc)
                    return
                if not down:
                    log.warning("case sink: %s; what the cameras report waits for it (tried again every %g s)",
                                exc, self.store_retry_s)
                    down = True
                self._closing.wait(self.store_retry_s)
                continue
            except Exception:  # noqa: BLE001 - one bad event must not stop the others
                log.exception("case sink: %s failed", type(item).__name__)
            if down:
                log.info("case sink: the case store answers again; recording goes on")
            return

    def _handle(self, item: _Event | _Strip | _Check) -> None:
        if isinstance(item, _Event):
            self._event(item)
        elif isinstance(item, _Strip):
            self.intake.add_strip(item.violation_id, item.frames)
        else:
            self._check(item)

    def _event(self, item: _Event) -> None:
        event, cam = item.event, item.camera
        self._cameras[cam.id] = cam
        self.metrics.events.labels(cam.id, event.violation_type, str(event.kind)).inc()
        if self.warner is not None and self.warner.handles(event):
            if event.kind is EventKind.OPENED:
                for record in self.warner.warn(cam, event, item.ctx):
                    self.on_record(record)
            return
        # the same violation again (a recording replayed, a restart without saved states) is the case it has: not opened
        known = event.kind is EventKind.OPENED and self.intake.store.find(violation_id=event.violation_id) is not None
        case = self.intake.record_event(event, item.ctx)
        if case is not None and event.kind is EventKind.OPENED and not known:
            self.metrics.cases_opened.labels(cam.id, event.violation_type).inc()
        self.on_record({"event": "violation", "kind": str(event.kind), "camera_id": cam.id, "violation_id": event.violation_id,
                        "type": event.violation_type, "zone_id": event.zone_id, "at": event.at.isoformat(),
                        "case_id": case.id if case else None, "case_state": str(case.state) if case else None})

    def _auto_queue_target(self, case: Case) -> str | None:
        """The camera's `auto_queue` target for the case's type (None: a reviewer decides)."""
        cam = self._cameras.get(case.source_id)
        return cam.config.auto_queue_target(case.violation_type) if cam else None

    def _retry_evidence(self) -> None:
        try:
            self.intake.retry_evidence()  # stored bundles are queued by the intake's policy
        except Exception:  # noqa: BLE001 - storage still down: the next round tries again
            log.exception("case sink: evidence retry failed")

    def _check(self, item: _Check) -> None:
        """Re-check this camera's handled cases: still there -> still_present at once; gone -> verified_cleared
        once the rules cleared it or it stayed away for the type's clear time (one missed detection is not a clearance)."""
        cam, frame = item.camera, item.frame
        if self.warner is not None:
            for record in self.warner.check(cam.id, frame, item.detections, lambda zone_id, vtype: present(
                    cam.scene, self.taxonomy, frame, item.detections, zone_id, vtype, cam.rules.group_gap, verified=self.verified)):
                if record["outcome"] == "escalated" and record["case_id"]:  # the case opens here, not at the rules' opening
                    self.metrics.cases_opened.labels(cam.id, record["type"]).inc()
                self.on_record(record)
        verifying = self.intake.store.list(state=CaseState.VERIFYING, source_id=cam.id)
        absent = self._still_verifying(cam.id, {case.id for case in verifying})
        for case in verifying:
            found = present(cam.scene, self.taxonomy, frame, item.detections, case.zone_id, case.violation_type, cam.rules.group_gap,
                            verified=self.verified)
            if len(found):
                absent.pop(case.id, None)
                self._verified(cam, case, frame, found, cleared=False)
                continue
            since = absent.setdefault(case.id, frame.ts)
            clear_s = self._clear_s(cam, case)
            if case.cleared_at is not None or (frame.ts - since).total_seconds() >= clear_s:
                absent.pop(case.id, None)
                self._verified(cam, case, frame, found, cleared=True)
        if absent:
            self._absent_since[cam.id] = absent

    def _still_verifying(self, camera_id: str, verifying: set[str]) -> dict[str, datetime]:
        """The camera's absences, but those of cases no longer in `verifying`: one closed in review (or re-checked by
        another process) left its entry here for as long as the watcher ran."""
        held = self._absent_since.pop(camera_id, {})
        return {case_id: since for case_id, since in held.items() if case_id in verifying}

    def _verified(self, cam: Camera, case: Case, frame: Frame, found: sv.Detections, cleared: bool) -> None:
        checked = self.intake.record_verification(case.id, frame, found, cleared, actor=f"cctv:{cam.id}")
        outcome = str(checked.state)
        self.metrics.reverifications.labels(cam.id, outcome).inc()
        self.on_record({"event": "reverification", "camera_id": cam.id, "case_id": case.id, "outcome": outcome,
                        "at": frame.ts.isoformat()})

    def _clear_s(self, cam: Camera, case: Case) -> float:
        zone = next((z for z in cam.scene.zones if z.id == case.zone_id), None)
        return resolve_thresholds(self.taxonomy.types.get(case.violation_type), zone).clear_s
