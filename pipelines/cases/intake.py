"""Intake: violation events in, candidate cases with signed evidence out (CCTV and photo triage).

The one façade the pipelines call. For an `opened` event it drafts the case (one per violation
id, so a restarted pipeline does not duplicate it), builds the evidence bundle into a local spool
folder and stores it in the evidence store. A bundle stays in the spool until the store has it:
when storage is down the case waits in `candidate` with the reason, and `retry_evidence()`
(called by the pipeline's loop) uploads it later. `updated`/`cleared` events add the latest frame
and times to the bundle; a re-check after the case was handled adds its frame and outcome.

CCTV and photos differ only in what they pass: cameras `BundleContext(source_kind="camera")`
with the scene's address, grid cell, zone polygon and a ring-buffer strip; photo triage
`source_kind="photo_batch"`, `source_id` = the batch id and `photo_ids`. Photos emit `opened` only.
"""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import supervision as sv

from detect.events import EventKind, ViolationEvent
from detect.evidence import Bundle, BundleContext, EvidenceBuilder, EvidenceError, ModelInfo, load_hmac_key
from detect.evidence.builder import detections_json
from detect.frames import Frame
from pipelines.cases.states import CaseState, check_transition
from pipelines.cases.store import Case, CaseStore, NewCase
from pipelines.evidence_store import EvidenceStore, StorageError, open_evidence_store

if TYPE_CHECKING:
    from detect.taxonomy import Taxonomy
    from pipelines.settings import Settings

log = logging.getLogger(__name__)


class Intake:
    """Turns events into cases. One lock serialises its work: violations open minutes apart, and
    one writer per bundle keeps the spool simple; safe to call from several camera threads."""

    def __init__(self, store: CaseStore, evidence: EvidenceStore, builder: EvidenceBuilder, spool_dir: str | Path, *,
                 auto_queue: str | None = None):
        self.store, self.evidence, self.builder = store, evidence, builder
        self.spool = Path(spool_dir)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.auto_queue = auto_queue  # dispatch target to queue for as soon as evidence is stored (no review)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, model: ModelInfo, *, auto_queue: str | None = None,
                      taxonomy: Taxonomy | None = None) -> Intake:
        """Wire the case store, evidence store, signing key and builder from the deployment settings.

        Raises EvidenceKeyError (no signing key) or StorageError (S3 credentials missing).
        """
        builder = EvidenceBuilder(settings.evidence, load_hmac_key(settings.evidence), model, taxonomy)
        return cls(CaseStore(settings.cases.url), open_evidence_store(settings.evidence_store), builder,
                   settings.evidence_store.spool_dir, auto_queue=auto_queue)

    def record_event(self, event: ViolationEvent, ctx: BundleContext | None = None) -> Case | None:
        """Apply one violation event; returns the case (None for an update of an unknown violation)."""
        ctx = ctx or BundleContext()
        with self._lock:
            if event.kind is EventKind.OPENED:
                return self._opened(event, ctx)
            return self._changed(event, ctx)

    def retry_evidence(self) -> list[Case]:
        """Upload every spooled bundle (storage was down); returns the cases now stored."""
        done = []
        with self._lock:
            for bundle in sorted(p for p in self.spool.iterdir() if p.is_dir() and not p.name.endswith(".partial")):
                case = self._upload(bundle.name, bundle)
                if case is not None:
                    done.append(case)
        return done

    def add_strip(self, violation_id: str, frames: list[Frame]) -> Case | None:
        """Frames from after the opening (CCTV ring buffer, a few seconds later) join the case's strip."""
        with self._lock:
            case = self.store.find(violation_id=violation_id)
            bundle_dir = None if case is None else self._local_bundle(case)
            if case is None or bundle_dir is None or not frames:
                return case
            bundle = self.builder.add_strip(bundle_dir, frames)
            self.store.update(case.id, evidence_digest=bundle.digest)
            return self._upload(case.id, bundle_dir) or self.store.get(case.id)

    def record_verification(self, case_id: str, frame: Frame, detections: sv.Detections, cleared: bool, *,
                            actor: str) -> Case:
        """The camera's re-check of a handled case: add the frame to the bundle and set the outcome.

        The outcome is recorded even when the evidence store is unreachable (the frame then waits in
        the spool like any other bundle change); a case that is not `verifying` is refused untouched.
        """
        outcome = CaseState.VERIFIED_CLEARED if cleared else CaseState.STILL_PRESENT
        with self._lock:
            case = self.store.get(case_id)
            check_transition(case.id, case.state, outcome)
            bundle_dir = self._local_bundle(case)
            ref = None
            if bundle_dir is not None:
                bundle = self.builder.add_verification(bundle_dir, frame, detections, outcome.value)
                ref = bundle.manifest["verifications"][-1]["artifact"]
                self._upload(case.id, bundle_dir)
            return self.store.record_verification(case_id, cleared, actor=actor, verification_ref=ref)

    # ---- steps ----------------------------------------------------------------------------

    def _opened(self, event: ViolationEvent, ctx: BundleContext) -> Case:
        case = self.store.find(violation_id=event.violation_id)
        if case is None:
            case = self.store.create_case(_new_case(event, ctx), actor=f"rules:{event.source_id}")
        elif case.evidence_ref is not None or (self.spool / case.id).is_dir():
            return case  # the same violation again (a restarted pipeline): nothing new
        bundle_dir = self.spool / case.id
        try:
            bundle = self.builder.build(event, bundle_dir, case.id, ctx)
        except (EvidenceError, OSError) as exc:
            log.error("case %s: evidence could not be built: %s", case.id, exc)
            return self.store.update(case.id, reason=f"evidence could not be built: {exc}")
        self.store.update(case.id, evidence_digest=bundle.digest, evidence_boxes=_boxes(bundle, event))
        return self._upload(case.id, bundle_dir) or self.store.get(case.id)

    def _changed(self, event: ViolationEvent, ctx: BundleContext) -> Case | None:
        case = self.store.find(violation_id=event.violation_id)
        if case is None:
            log.warning("%s event for unknown violation %s: no case to update", event.kind, event.violation_id)
            return None
        facts = {"cleared_at": event.cleared_at} if event.cleared_at is not None else {}
        if event.object_count > int((case.details or {}).get("object_count") or 1):
            # A street market grows after it opens: the case keeps its largest stall count (what an
            # assessment sheet counts, docs/analytics.md); the bundle's manifest keeps the latest.
            facts["details"] = {**(case.details or {}), "object_count": event.object_count}
        bundle_dir = self._local_bundle(case)
        if bundle_dir is not None and event.frame is not None:
            bundle = self.builder.update(bundle_dir, event, ctx)
            facts["evidence_digest"] = bundle.digest
        if facts:
            self.store.update(case.id, **facts)
        if bundle_dir is not None:
            self._upload(case.id, bundle_dir)
        return self.store.get(case.id)

    def _local_bundle(self, case: Case) -> Path | None:
        """The case's bundle in the spool (fetched from the store if needed); None if unavailable."""
        bundle_dir = self.spool / case.id
        if bundle_dir.is_dir():
            return bundle_dir
        if case.evidence_ref is None:
            return None
        try:
            return self.evidence.fetch_bundle(case.evidence_ref, bundle_dir)
        except StorageError as exc:
            shutil.rmtree(bundle_dir, ignore_errors=True)
            log.warning("case %s: evidence not updated, store unreachable: %s", case.id, exc)
            return None

    def _upload(self, case_id: str, bundle_dir: Path) -> Case | None:
        """Store a spooled bundle; on success the spool copy goes and the case may be queued."""
        try:
            ref = self.evidence.put_bundle(case_id, bundle_dir)
        except StorageError as exc:
            log.warning("case %s: evidence upload failed (will retry): %s", case_id, exc)
            self.store.update(case_id, reason=f"evidence upload failed, will retry: {exc}")
            return None
        digest = Bundle.read(bundle_dir).digest
        case = self.store.update(case_id, evidence_ref=ref, evidence_digest=digest, reason=None)
        shutil.rmtree(bundle_dir, ignore_errors=True)
        if self.auto_queue and case.state is CaseState.CANDIDATE:
            case = self.store.queue(case_id, self.auto_queue, actor="intake:auto")
        return case


def _new_case(event: ViolationEvent, ctx: BundleContext) -> NewCase:
    geo = ctx.geo or (event.frame.geo if event.frame is not None else None)
    return NewCase(
        violation_type=event.violation_type,
        source_kind=ctx.source_kind,
        source_id=ctx.source_id or event.source_id,
        violation_id=event.violation_id,
        zone_id=event.zone_id,
        lat=geo.lat if geo else None,
        lon=geo.lon if geo else None,
        address=ctx.address,
        grid_cell=ctx.grid_cell,
        first_seen_at=event.first_seen,
        opened_at=event.opened_at or event.at,
        cleared_at=event.cleared_at,
        details={"event_source": event.source_id, "object_id": event.object_id, "zone_kind": event.zone_kind,
                 "dwell_s": event.dwell_s, "score": event.score, "object_count": event.object_count,
                 "texts": list(event.texts), "phones": list(event.phones),
                 "recorded_at": datetime.now(UTC).isoformat()},
    )


def _boxes(bundle: Bundle, event: ViolationEvent) -> dict:
    """The evidence boxes with the image they are on (bundle path and size), for review and retraining."""
    original = next(a for a in bundle.artifacts() if a["role"] == "original_opened")
    frame = event.frame
    assert frame is not None
    return {"image": original["path"], "width": frame.width, "height": frame.height,
            "boxes": detections_json(event.detections)}
