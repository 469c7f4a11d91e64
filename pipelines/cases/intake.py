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

Crash safety: a bundle is built under `<case>.partial` and renamed when sealed, so after a kill
the spool holds either sealed bundles (uploaded by `retry_evidence()`) or `.partial` leftovers,
which `retry_evidence()` removes while marking their cases: a case whose evidence is neither
stored nor spooled is unfinished, and the pipeline builds it again when it meets the same
violation (`record_event`), then queues it if the run auto-queues (`settle`). Several processes
may share one spool (the service's upload jobs, `watch`, a `triage` run): a lock file of the
spool (`<spool>.lock`, beside it) lets one of them write at a time, so a `.partial` seen under the
lock is never in progress.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import supervision as sv
from filelock import FileLock

from detect.events import EventKind, ViolationEvent
from detect.evidence import SIGNATURE
from detect.evidence.builder import Bundle, BundleContext, EvidenceBuilder, EvidenceError, ModelInfo, VerifierInfo
from detect.evidence.keys import SigningKeys, load_signing_keys
from detect.evidence.signing import VerifyReport, hmac_key_for, signed_key_id, verify_bundle
from detect.frames import Frame
from pipelines.cases.states import CaseState, check_transition
from pipelines.cases.store import Case, CaseNotFound, CaseStore, NewCase
from pipelines.cases.vocabulary import AutoQueue, queue_everything_for
from pipelines.evidence_store import EvidenceStore, StorageError, open_evidence_store

if TYPE_CHECKING:
    from detect.taxonomy import Taxonomy
    from pipelines.settings import Settings

log = logging.getLogger(__name__)

PARTIAL = ".partial"  # suffix of a bundle being built (detect.evidence.builder renames it when sealed)
REJECTED = ".rejected"  # spooled bundles refused for storage (not this case's sealed bundle), kept for a human
REBUILT = "it is built again when the pipeline meets this violation again"
INTERRUPTED = f"evidence bundle interrupted before it was sealed (the process stopped); {REBUILT}"
# A spooled bundle signed with an HMAC key not held waits this long for its key to be kept (an operator who rotated the
# key without keeping the old one reads the case's reason and adds it), then goes to `.rejected/` with its case saying
# how to bring it back: neither a forged key id nor a lost key keeps a bundle in the spool for good.
UNKNOWN_KEY_WAIT = timedelta(days=7)
UNKNOWN_KEY = ".unknown-key"  # spool/<case>.unknown-key: a file holding the key id; its time is when the wait began


class Intake:
    """Turns events into cases. One lock serialises its work: violations open minutes apart, and
    one writer per bundle keeps the spool simple; safe to call from several camera threads."""

    def __init__(self, store: CaseStore, evidence: EvidenceStore, builder: EvidenceBuilder, spool_dir: str | Path, *,
                 auto_queue: str | AutoQueue | None = None, previous_keys: list[bytes] | None = None,
                 zone: tzinfo = UTC):
        self.store, self.evidence, self.builder = store, evidence, builder
        # The zone whose date names a new case (SW<date>-…): the city's, in which the reports count its day
        self.zone = zone
        # HMAC keys a spooled bundle may be signed with: the builder's, then those it replaced (a rotation while
        # bundles waited for storage; `evidence.previous_hmac_key_files`)
        self.keys = [builder.key, *(previous_keys or [])]
        self.spool = Path(spool_dir)
        self.spool.mkdir(parents=True, exist_ok=True)
        # Which cases are queued as soon as their evidence is stored, for which target (no review):
        # a target name queues every case for it (triage --dispatch); CCTV passes its per-camera policy.
        self.auto_queue: AutoQueue | None = queue_everything_for(auto_queue) if isinstance(auto_queue, str) else auto_queue
        # (event, ctx) -> facts added to a new case's details (e.g. the responsible shop, pipelines.cityops)
        self.details_hooks: list[Callable[[ViolationEvent, BundleContext], dict]] = []
        self._lock = threading.Lock()
        # Beside the spool, not in it: the spool holds bundles only (empty = nothing waiting).
        self._spool_lock = FileLock(self.spool.with_name(self.spool.name + ".lock"))

    @classmethod
    def from_settings(cls, settings: Settings, model: ModelInfo, *, auto_queue: str | AutoQueue | None = None,
                      taxonomy: Taxonomy | None = None, keys: SigningKeys | None = None,
                      store: CaseStore | None = None, evidence: EvidenceStore | None = None) -> Intake:
        """Wire the case store, evidence store, signing key and builder from the deployment settings. `keys`: those
        `check_key_files` loaded at start-up (None: loaded here). `store`: the open store of `settings.cases` to write
        through (the service's own, which its jobs share: each store is a connection pool, counted against the
        database's connections); None: opened here, the caller's to close. `evidence`: the open evidence store to put
        bundles in (the service's own, which its jobs and spool retries share: with S3 each is a client and its
        connection pool); None: opened here.

        Raises EvidenceKeyError (no HMAC key, or an unreadable Ed25519 signing key) or StorageError
        (S3 credentials missing).
        """
        keys = keys or load_signing_keys(settings.evidence)
        builder = EvidenceBuilder(settings.evidence, keys.hmac, model, taxonomy or settings.load_taxonomy(), signer=keys.signer)
        return cls(store or settings.cases.open(), evidence or open_evidence_store(settings.evidence_store), builder,
                   settings.evidence_store.spool_dir, auto_queue=auto_queue, previous_keys=keys.previous_hmac,
                   zone=ZoneInfo(settings.analytics.timezone))

    def record_event(self, event: ViolationEvent, ctx: BundleContext | None = None) -> Case | None:
        """Apply one violation event; returns the case (None for an update of an unknown violation)."""
        ctx = ctx or BundleContext()
        with self._exclusive():
            if event.kind is EventKind.OPENED:
                return self._opened(event, ctx)
            return self._changed(event, ctx)

    def retry_evidence(self) -> list[Case]:
        """Finish what the spool holds: upload sealed bundles (storage was down, or the process stopped
        before uploading) and clear bundles interrupted before they were sealed, marking their cases
        unfinished (see the module doc). Returns the cases whose evidence is now stored."""
        done = []
        with self._exclusive():
            for bundle in sorted(p for p in self.spool.iterdir() if p.is_dir() and p.name != REJECTED):
                if bundle.name.endswith(PARTIAL):
                    self._interrupted(bundle)
                elif (case := self._upload(bundle.name, bundle)) is not None:
                    done.append(case)
            for marker in self.spool.glob(f"*{UNKNOWN_KEY}"):  # its bundle went another way (removed by hand, rebuilt)
                if not (self.spool / marker.name.removesuffix(UNKNOWN_KEY)).is_dir():
                    marker.unlink(missing_ok=True)
        return done

    def spooled(self) -> list[str]:
        """The cases whose sealed bundle waits in the spool for the evidence store (what `retry_evidence` will try)."""
        return sorted(p.name for p in self.spool.iterdir() if p.is_dir() and p.name != REJECTED and not p.name.endswith(PARTIAL))

    def settle(self, case: Case) -> Case:
        """Queue a case whose evidence is stored if the auto-queue policy wants it and nobody has yet (a run
        stopped between storing the evidence and queuing it); any other case comes back unchanged."""
        if self.auto_queue is None or case.state is not CaseState.CANDIDATE or case.evidence_ref is None:
            return case
        with self._exclusive():
            return self._queue_if_wanted(self.store.get(case.id))

    def unfinished(self, case: Case) -> bool:
        """No stored evidence and no sealed bundle waiting in the spool: the bundle must be built (again)."""
        return case.evidence_ref is None and not (self.spool / case.id).is_dir()

    def add_strip(self, violation_id: str, frames: list[Frame]) -> Case | None:
        """Frames from after the opening (CCTV ring buffer, a few seconds later) join the case's strip."""
        with self._exclusive():
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
        with self._exclusive():
            case = self.store.get(case_id)
            check_transition(case.id, case.state, outcome)
            bundle_dir = self._local_bundle(case)
            ref = None
            if bundle_dir is not None:
                bundle = self.builder.add_verification(bundle_dir, frame, detections, outcome.value)
                ref = bundle.manifest["verifications"][-1]["artifact"]
                self._upload(case.id, bundle_dir)
            return self.store.record_verification(case_id, cleared, actor=actor, verification_ref=ref)

    def add_record(self, case_id: str, section: str, record: dict) -> Case:
        """A workflow fact (e.g. the warning that preceded the case) joins the case's signed bundle."""
        with self._exclusive():
            case = self.store.get(case_id)
            bundle_dir = self._local_bundle(case)
            if bundle_dir is None:
                return case
            bundle = self.builder.add_record(bundle_dir, section, record)
            self.store.update(case.id, evidence_digest=bundle.digest)
            return self._upload(case.id, bundle_dir) or self.store.get(case.id)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One writer at a time: this process's threads (the lock) and other processes sharing the spool (the file)."""
        with self._lock, self._spool_lock:
            yield

    # ---- steps ----------------------------------------------------------------------------

    def _reject_spooled(self, case_id: str, bundle_dir: Path, report: VerifyReport, remedy: str = REBUILT) -> None:
        """A spooled bundle that is not this case's sealed bundle (another case's copied in, edited,
        torn by a kill during an update): never stored. It is moved to `spool/.rejected/` for a
        human; the case keeps the bundle already stored, or its reason says why and `remedy` (`{aside}`:
        where the bundle went), by default that it is built again."""
        why = report.why()
        aside = self.spool / REJECTED / f"{case_id}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        bundle_dir.rename(aside)
        log.error("case %s: spooled evidence refused (%s); moved to %s", case_id, why, aside)
        try:
            case = self.store.get(case_id)
        except CaseNotFound:
            return
        if case.evidence_ref is not None:
            try:
                stored = Bundle.from_signature(self.evidence.read_bytes(case.evidence_ref, SIGNATURE))
                self.store.update(case_id, evidence_digest=stored)
            except (StorageError, ValueError, KeyError) as exc:
                log.warning("case %s: stored evidence digest not re-read: %s", case_id, exc)
            return
        self.store.update(case_id, reason=f"spooled evidence bundle refused ({why}); {remedy.format(aside=aside)}")

    def _unknown_key(self, case_id: str, bundle_dir: Path) -> None:
        """A spooled bundle whose signature names an HMAC key not held (rotated away and not kept, or a made-up id).
        Its files, its case and the digest recorded at sealing are still checked: one that fails is refused at once.
        One that passes is what we sealed, under a key the operator may still add: it waits, its case saying so, for
        `UNKNOWN_KEY_WAIT` from the first retry that found it so, then is refused with how to bring it back."""
        named = signed_key_id(bundle_dir)
        marker = self.spool / f"{case_id}{UNKNOWN_KEY}"
        unknown = unknown_key(named)
        try:
            recorded = self.store.sealed_digest(case_id)
        except CaseNotFound:
            recorded = None
        report = verify_bundle(bundle_dir, None, case_id=case_id, digest=recorded)
        if report.problems or report.tampered or report.missing or report.extra or report.signature != "unchecked":
            marker.unlink(missing_ok=True)
            report.problems.insert(0, unknown)
            self._reject_spooled(case_id, bundle_dir, report)
            return
        if not marker.is_file() or marker.read_text(encoding="utf-8") != named:  # the wait begins (again, for a new id)
            marker.write_text(named, encoding="utf-8")
            reason = (f"evidence bundle waits in the spool: {unknown}; add that key's file there "
                      f"(moved to {REJECTED}/ if not kept within {UNKNOWN_KEY_WAIT.days} days)")
            log.warning("case %s: %s", case_id, reason)
            self.store.update(case_id, reason=reason)
            return
        since = datetime.fromtimestamp(marker.stat().st_mtime, UTC)
        if datetime.now(UTC) - since < UNKNOWN_KEY_WAIT:
            return  # its case says so since the wait began
        marker.unlink()
        report.problems.insert(0, f"{unknown} since {since:%Y-%m-%d %H:%M} UTC")
        self._reject_spooled(case_id, bundle_dir, report, remedy=(
            "to upload it, add that key's file to evidence.previous_hmac_key_files and move {aside} back to "
            f"{self.spool / case_id}"))

    def _interrupted(self, partial: Path) -> None:
        """A bundle left half-built by a killed process: remove it and mark its case unfinished."""
        shutil.rmtree(partial, ignore_errors=True)
        case_id = partial.name.removesuffix(PARTIAL)
        try:
            case = self.store.get(case_id)
        except CaseNotFound:
            return
        if self.unfinished(case):
            log.warning("case %s: %s", case_id, INTERRUPTED)
            self.store.update(case_id, reason=INTERRUPTED)

    def _opened(self, event: ViolationEvent, ctx: BundleContext) -> Case:
        case = self.store.find(violation_id=event.violation_id)
        if case is None:
            new = _new_case(event, ctx, self.builder.model.verifier)
            for hook in self.details_hooks:
                new.details.update(hook(event, ctx))
            case = self.store.create_case(new, actor=f"rules:{event.source_id}", zone=self.zone)
        elif not self.unfinished(case):
            return case  # the same violation again (a restarted pipeline): nothing new
        bundle_dir = self.spool / case.id
        try:
            bundle = self.builder.build(event, bundle_dir, case.id, ctx)
        except (EvidenceError, OSError) as exc:
            log.error("case %s: evidence could not be built: %s", case.id, exc)
            return self.store.update(case.id, reason=f"evidence could not be built: {exc}")
        self.store.update(case.id, evidence_digest=bundle.digest, evidence_boxes=_boxes(bundle))
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
        """Store a spooled bundle; on success the spool copy goes and the case may be queued.

        Only a bundle this intake sealed for this case is stored (its HMAC checks out and its
        manifest names the case); its digest is what the case store records and what the
        dispatcher and `evidence verify` later compare against. One signed with an HMAC key this
        intake does not hold (rotated away while it waited) waits in the spool for a while (`_unknown_key`).
        A case without its evidence boxes gets them from the bundle too: the store gone (or the process killed)
        between drafting the case and recording its sealed bundle left it without them, and the retry that
        uploaded the bundle never wrote them, so review and retraining had no boxes to draw.
        """
        key = hmac_key_for(bundle_dir, self.keys)
        if key is None:
            self._unknown_key(case_id, bundle_dir)
            return None
        (self.spool / f"{case_id}{UNKNOWN_KEY}").unlink(missing_ok=True)
        report = verify_bundle(bundle_dir, key, case_id=case_id)
        if not report.ok:
            self._reject_spooled(case_id, bundle_dir, report)
            return None
        try:
            ref = self.evidence.put_bundle(case_id, bundle_dir)
        except StorageError as exc:
            log.warning("case %s: evidence upload failed (will retry): %s", case_id, exc)
            self.store.update(case_id, reason=f"evidence upload failed, will retry: {exc}")
            return None
        boxes = {} if self.store.get(case_id).evidence_boxes else {"evidence_boxes": _boxes(Bundle.read(bundle_dir))}
        case = self.store.update(case_id, evidence_ref=ref, evidence_digest=report.digest, reason=None, **boxes)
        shutil.rmtree(bundle_dir, ignore_errors=True)
        return self._queue_if_wanted(case)

    def _queue_if_wanted(self, case: Case) -> Case:
        """The one auto-queue rule: a candidate whose evidence is stored is queued for the target the
        policy names for it (none: it waits for a reviewer)."""
        if self.auto_queue is None or case.state is not CaseState.CANDIDATE or case.evidence_ref is None:
            return case
        target = self.auto_queue(case)
        return case if target is None else self.store.queue(case.id, target, actor=f"auto-queue:{case.source_id}")


def unknown_key(named: str | None) -> str:
    """Why a bundle signed with HMAC key id `named` is not checked: no key held has that id (`hmac_key_for` None)."""
    return f"signed with HMAC key id {named}, which is neither the current key nor one of evidence.previous_hmac_key_files"


def _new_case(event: ViolationEvent, ctx: BundleContext, verifier: VerifierInfo | None = None) -> NewCase:
    """The case row of a new violation. `verifier`: what the bundle about to be built names as judging it; its id is kept
    in the details (`verifier_id`) for the case export, which reads the store alone and no bundle (the bundle's manifest
    stays the record: the case page and the platforms read it there). Written with the case, in one insert, so no
    reviewer's change made meanwhile is written over; none where the writer does not know it."""
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
                 "texts": list(event.texts), "phones": list(event.phones), "severity": str(event.severity),
                 "recorded_at": datetime.now(UTC).isoformat(), **({"verifier_id": verifier.id} if verifier else {})},
    )


def _boxes(bundle: Bundle) -> dict:
    """The evidence boxes with the image they are on, for review and retraining: read from the sealed bundle alone
    (`manifest_boxes`), so that a retry holding no event (`_upload`) records what the drafting run would have."""
    boxes = manifest_boxes(bundle.manifest)
    assert boxes is not None, f"{bundle.path}: a sealed bundle has its opening frame"  # the builder writes it first
    return boxes


def manifest_boxes(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """A case's evidence boxes (`Case.evidence_boxes`: the opening picture's bundle path, the frame's size, which its
    annotated copy records, and the manifest's detections) as its bundle's manifest gives them; None for a manifest
    without an opening picture. What the intake records, what `cases fill-boxes` writes once for a case stored without
    them (the release before left some so: a case whose bundle was uploaded by a retry), and what the readers of such
    a case that read its bundle anyway take until then: the review page and the export of reviews."""
    originals = [a for a in manifest.get("artifacts", []) if a.get("role") == "original_opened"]
    annotated = [a for a in manifest.get("artifacts", []) if a.get("role") == "annotated_opened"]
    if len(originals) != 1 or len(annotated) != 1:
        return None
    return {"image": originals[0]["path"], "width": annotated[0].get("width"), "height": annotated[0].get("height"),
            "boxes": manifest.get("detections", [])}


def case_boxes(case: Case, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """`case`'s evidence boxes: as recorded, else as its bundle's `manifest` gives them (`manifest_boxes`), for a case
    stored without them, which the readers (the review page, the export of reviews) would otherwise take for one
    without evidence: no boxes drawn, and a reviewed case left out of the training data as 'not stored yet'."""
    return case.evidence_boxes if (case.evidence_boxes or {}).get("image") else manifest_boxes(manifest)
