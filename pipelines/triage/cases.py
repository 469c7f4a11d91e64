"""Candidate cases from triage: each ranked group becomes one case through the shared intake.

The case store, the evidence bundle and the outbox are the same as for cameras
(`pipelines.cases.intake.Intake`); triage only turns a group of photos into the `opened` event
(`record.PhotoFinding.event`, from the lead photo's record) and bundle context the intake expects:

- the lead (best) photo is the opening frame, decoded again at full resolution so the crops and
  the annotated frame are sharp; its file is copied into the bundle byte for byte (EXIF intact);
- the earliest photo of the group, when it is not the lead, is the first-sight frame (also full
  resolution, also copied as received);
- the other photos of the group go in as the bundle's frame strip, and every photo's SHA-256 is
  listed in the manifest (`source.photo_ids`), which ties each of the inspector's files to it.

A case's violation id is `photo:<first 16 hex of a photo's SHA-256>:<type>`. Before drafting one,
every member's id is looked up, so a resumed or repeated run over the same photos finds the
case it already made (even if a better photo joined the group since) instead of making another.
A case found without stored or spooled evidence (a run killed while writing its bundle) gets
its bundle built again, and a case whose evidence is stored is queued if the run auto-queues.

A resumed run that finds a photo replaced by another (or unreadable now) drops what it held from the
report; a candidate case this batch drafted from that content, not reviewed yet, is withdrawn
(`rejected`, the photo named in its history), and one reviewed or dispatched already is left to
the people handling it (`withdraw`). What to withdraw waits in the run folder (`journal.WITHDRAW`) until a run
writing cases has done it: a run killed first, or one without cases, leaves it to the next.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from detect.config_io import replaced_atomically
from detect.events import ViolationEvent
from detect.evidence.builder import BundleContext, VerifierInfo
from detect.evidence.keys import SigningKeys
from detect.frames import TIME_SOURCE, Frame, GeoPoint
from detect.imageio import ImageReadError, decode_image
from pipelines.cases.intake import Intake
from pipelines.cases.states import CaseState
from pipelines.cases.store import Case, CaseNotFound, CaseStore, CaseStoreError
from pipelines.cases.vocabulary import DispatchTargetError, pick_target
from pipelines.evidence_store import EvidenceStore
from pipelines.logs import loggable_name
from pipelines.triage.grouping import Group, Member
from pipelines.triage.journal import RESULTS
from pipelines.triage.record import PhotoRecord, detections_of
from pipelines.triage.report import CaseRef
from pipelines.triage.sources import ArchiveCache, PhotoSource, SourceReadError

log = logging.getLogger(__name__)

BATCH = "batch.json"
"""In the run folder: the batch id its cases were written under (`batch_id`)."""
STRIP_SIDE = 1280  # other photos of a group: decoded to about this size for the bundle's strip


def photo_violation_id(sha256: str, violation_type: str) -> str:
    """The violation id of a photo content's finding of one type (module docstring)."""
    return f"photo:{sha256[:16]}:{violation_type}"


def violation_id(member: Member) -> str:
    return photo_violation_id(member.sha256, member.type)


@dataclass
class Withdrawals:
    """Cases this batch drafted from photo content a resumed run replaced (`TriageCases.withdraw`), each with the
    photo that held it: `withdrawn` (candidates not reviewed: now `rejected`), `left` (reviewed or dispatched
    already: left as they are)."""

    withdrawn: list[tuple[Case, str]] = field(default_factory=list)
    left: list[tuple[Case, str]] = field(default_factory=list)


@dataclass
class SpoolRetry:
    """What the run's retry of the spool did (bundles earlier runs, or cameras, could not upload: storage was down):
    `uploaded` (case ids stored now), and what the spool holds once the run wrote its cases: `waiting` (case id, why it
    is still spooled), the bundles this run just left there too."""

    uploaded: list[str] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"uploaded": len(self.uploaded), "waiting": len(self.waiting),
                "waiting_cases": [{"case_id": case_id, "reason": reason} for case_id, reason in self.waiting]}


class TriageCases:
    """Writes ranked groups as candidate cases (and, with `auto_queue` on the intake, queues them)."""

    def __init__(self, intake: Intake, store: CaseStore, batch_id: str, staging: Path) -> None:
        self.intake, self.store, self.batch_id = intake, store, batch_id
        self.staging = staging
        self.archives = ArchiveCache()

    def judged_by(self, verifier: VerifierInfo) -> None:
        """Name the verifier the run judges with in every bundle written (the manifest's `verifier`): the writer is
        opened before the run's judgement is checked against its detector (patrol's before triage loads it)."""
        builder = self.intake.builder
        builder.model = replace(builder.model, verifier=verifier)

    def write(self, groups: list[Group], on_case=None) -> list[CaseRef]:
        """One `CaseRef` per group, in order; a group whose photos cannot be read again gets none. The run retries
        the spool before (`retry_spool`) and says what it holds after (`spooled`), groups or not."""
        refs = []
        try:
            for group in groups:
                refs.append(self._write(group))
                if on_case is not None:
                    on_case()
        finally:
            self.archives.close()
            shutil.rmtree(self.staging, ignore_errors=True)
        return refs

    def retry_spool(self) -> list[str]:
        """Upload the bundles an earlier run could not: the ids of the cases stored now. A run with no violations calls
        it too: else spooled evidence would wait for a run that has some, and the summary of every run until then
        would not say that it waits."""
        return [case.id for case in self.intake.retry_evidence()]

    def spooled(self, uploaded: list[str]) -> SpoolRetry:
        """`uploaded` (`retry_spool`) and each bundle the spool still holds with why (the case's reason), called once
        the run wrote its cases: a bundle it just left there (storage still down) waits as the earlier ones do, and a
        summary that counted only those said `waiting 0` while the run's own evidence was not stored."""
        waiting = []
        for case_id in self.intake.spooled():
            try:
                reason = self.store.get(case_id).reason or "not uploaded yet"
            except CaseNotFound:
                reason = "no such case in the case store"
            waiting.append((case_id, reason))
        return SpoolRetry(uploaded, waiting)

    def withdraw(self, replaced: Iterable[PhotoRecord], current: set[str]) -> Withdrawals:
        """Withdraw each case this batch drafted from a finding of `replaced` (judged records a resumed run
        superseded: `Journal.replaced`) that no record holds now (`current`: the violation ids of every finding
        recorded), while it is a candidate nobody reviewed; the report no longer shows it, and no reviewer should
        find it waiting. A case reviewed or dispatched already is left to the people handling it."""
        done = Withdrawals()
        for record in replaced:
            for finding in record.findings:
                vid = photo_violation_id(record.sha256 or "", finding.type)
                case = None if vid in current else self.store.find(violation_id=vid)
                if case is None or case.source_id != self.batch_id or case.state is CaseState.REJECTED:
                    continue
                if case.state is not CaseState.CANDIDATE or case.review_decision is not None:
                    done.left.append((case, record.source))
                    continue
                reason = (f"撤回 withdrawn: its photo {record.source} was replaced by another since it was drafted "
                          f"({self.batch_id} resumed); no photo of that run holds what it was drafted from")
                try:
                    done.withdrawn.append((self.store.transition(case.id, CaseState.REJECTED, actor=self.batch_id,
                                                                 reason=reason, only_from=CaseState.CANDIDATE), record.source))
                except CaseStoreError:  # reviewed since it was looked up
                    done.left.append((self.store.get(case.id), record.source))
        return done

    def _write(self, group: Group) -> CaseRef:
        """The group's case, finished: drafted if new, its bundle built again if an earlier run stopped
        before sealing it, and queued if this run auto-queues and that had not happened yet."""
        existing = next((c for m in group.members if (c := self.store.find(violation_id=violation_id(m))) is not None), None)
        if existing is not None and existing.evidence_ref is not None:
            case = self.intake.settle(existing)
            return CaseRef(case.id, case.evidence_ref, str(case.state), found=True)
        if existing is not None and not self.intake.unfinished(existing):  # sealed, waiting in the spool for storage
            return CaseRef(existing.id, None, str(existing.state), error=existing.reason, found=True)
        try:
            event, ctx = self._event(group, existing.violation_id if existing else violation_id(group.lead))
        except (SourceReadError, ImageReadError) as exc:
            log.error("%s: photo cannot be read again for its evidence: %s", loggable_name(group.lead.source),
                      loggable_name(str(exc)))  # an ImageReadError names the photo too
            return CaseRef(None, None, None, error=f"evidence not built: {exc}")
        case = self.intake.record_event(event, ctx)
        return CaseRef(case.id, case.evidence_ref, str(case.state), error=case.reason, found=existing is not None)

    def _event(self, group: Group, vid: str) -> tuple[ViolationEvent, BundleContext]:
        lead = group.lead
        first = min(group.members, key=lambda m: (m.taken_at, -m.score))
        lead_frame = self._frame(lead)
        first_frame = self._frame(first) if first is not lead else None
        others = [m for m in group.members if m is not lead and m is not first]
        placed = group.placed
        geo = GeoPoint(lat=placed.lat, lon=placed.lon) if placed is not None else None
        event = lead.finding.event(lead.record, vid, lead_frame, first_seen=first.taken_at, first_frame=first_frame,
                                   group=[m.finding for m in group.members if m is not lead])
        ctx = BundleContext(
            source_kind="photo_batch",
            source_id=self.batch_id,
            grid_cell=placed.record.grid_cell if placed is not None else None,
            geo=geo,
            photo_ids=[m.sha256 for m in group.members],
            strip=[self._frame(m, STRIP_SIDE) for m in others],
            first_detections=first.finding.detections() if first_frame is not None else None,
            privacy_detections=detections_of(lead.record.detections),
        )
        return event, ctx

    def _frame(self, member: Member, max_side: int | None = None) -> Frame:
        """The member's photo as a frame: full resolution (or about `max_side`), upright, its file as `path`."""
        source = PhotoSource.from_locator(member.record)
        data = source.read_bytes(self.archives)
        image = decode_image(data, member.source, max_side=max_side).image
        path = source.path
        if source.member is not None:  # archive member: stage its bytes so the bundle keeps the original
            self.staging.mkdir(parents=True, exist_ok=True)
            path = self.staging / f"{member.sha256[:16]}{source.suffix}"
            path.write_bytes(data)
        return Frame(image=image, source_id=member.photo_id, ts=member.taken_at, frame_id=member.sha256,
                     geo=GeoPoint(lat=member.lat, lon=member.lon) if member.has_gps else None, path=str(path),
                     meta={"source": member.source, TIME_SOURCE: member.record.time_source})


class CasesUnavailable(RuntimeError):
    """Cases were asked for but cannot be written (no evidence key, unknown dispatch target...). `reason`: what is
    wrong, without `hint`, the command's way round it (`--no-cases`), which a caller without that option (the
    service's patrol job) replaces with its own."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason + hint)
        self.reason = reason


def check_keys(deployment, settings) -> SigningKeys | None:
    """Refuse a run that writes cases (`settings`, a `TriageSettings`: `cases` not False, or a dispatch target) when a
    key the deployment settings name cannot be used (a key variable shorter than 16 bytes, a key file that does not
    load), before any photo or frame is read: by default (`cases` unset) such a run went on report-only under a
    warning, as it still does when no key is set at all. `streetwatch triage` and `streetwatch patrol` both ask. The
    keys loaded, for the run's case writer (`open_triage_cases`), or None (no cases, or no key set: it says so)."""
    from detect.evidence.config import EvidenceKeyError
    from detect.evidence.keys import check_key_files

    if settings.cases is False and settings.dispatch_target is None:
        return None
    try:
        return check_key_files(deployment.evidence)
    except EvidenceKeyError as exc:
        raise CasesUnavailable(str(exc), "; or pass --no-cases for the report only") from None


def open_triage_cases(deployment, detector, taxonomy, out: Path, dispatch_target: str | None,
                      batch: str | None = None, keys: SigningKeys | None = None, store: CaseStore | None = None,
                      evidence: EvidenceStore | None = None) -> TriageCases:
    """The case writer for a run, from the deployment settings (`pipelines.settings.Settings`); `batch`: the name its
    batch id is chosen from (`batch_id`: a patrol video's `patrol:<name>`), else the folder's `triage:<name>`; `keys`:
    those `check_keys` loaded (None: loaded here); `store`, `evidence`: the open case and evidence stores to write through
    (`Intake.from_settings`; None: opened here).

    Raises `CasesUnavailable` with the fix when the evidence key or storage credentials are
    missing or the dispatch target is not configured, before any photo is read.
    """
    from detect.evidence.builder import ModelInfo
    from detect.evidence.config import EvidenceKeyError
    from pipelines.evidence_store import StorageError

    if dispatch_target is not None:
        try:
            pick_target(deployment.dispatch.targets, dispatch_target)
        except DispatchTargetError as exc:
            raise CasesUnavailable(f"{exc}; add it under dispatch.targets in the --config file") from None
    model = ModelInfo.of(detector)
    try:
        intake = Intake.from_settings(deployment, model, auto_queue=dispatch_target, taxonomy=taxonomy, keys=keys, store=store,
                                      evidence=evidence)
    except EvidenceKeyError as exc:
        raise CasesUnavailable(str(exc), "; set it to write signed candidate cases, or pass --no-cases for the report only") from None
    except StorageError as exc:
        raise CasesUnavailable(f"evidence store: {exc}") from None
    from pipelines.shops import attach_shops

    attach_shops(intake)  # shop-front cases name the responsible shop (frontage register, by GPS)
    return TriageCases(intake, intake.store, batch_id=batch_id(out, intake.store, batch), staging=out / "evidence-staging")


def batch_id(out: Path, store: CaseStore, name: str | None = None) -> str:
    """The batch id of the run in `out` (its cases' `source_id`, the actor of their withdrawal), kept in `BATCH` from
    the first run that writes cases: `name` (default `triage:<out folder name>`; a patrol's `patrol:<video name>`), or
    `<name>-2`, `-3`... when cases of another folder hold it already (a second `triage-out`, the default; a second
    phone's `VID_0001.mp4`) or another new folder claimed it (`CaseStore.claim_batch`, so two started together differ).
    Named by the name alone, the batches of two folders were one: listed together, and a resume in one withdrew the
    other's cases. A folder an earlier release ran in (records, no `BATCH`) keeps the name its cases have."""
    path = out / BATCH
    try:
        return json.loads(path.read_text(encoding="utf-8"))["batch_id"]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CasesUnavailable(f"{path}: not a batch record ({exc}); it names this folder's cases in the case store: "
                               "restore it, or delete it if no run in this folder wrote cases") from None
    chosen = name = name or f"triage:{out.resolve().name}"
    results = out / RESULTS
    if not (results.exists() and results.stat().st_size):  # a new run: a name no other batch has, claimed in the store
        chosen = store.claim_batch(name, str(out.resolve()))
    out.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        tmp.write_text(json.dumps({"batch_id": chosen}, ensure_ascii=False) + "\n", encoding="utf-8")
    return chosen


def pick_dispatch_target(deployment, name: str | None) -> str:
    """The target named, or the only configured one (`pipelines.cases.vocabulary.pick_target`)."""
    try:
        return pick_target(deployment.dispatch.targets, name)
    except DispatchTargetError as exc:
        hint = {"none": ": --dispatch needs one; add it under dispatch.targets in the --config file",
                "several": " with --dispatch-target"}.get(exc.kind, "")
        raise CasesUnavailable(f"{exc}{hint}") from None
