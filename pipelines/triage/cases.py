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
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from detect.events import ViolationEvent
from detect.evidence import BundleContext
from detect.frames import Frame, GeoPoint
from detect.imageio import ImageReadError, decode_image
from pipelines.cases.intake import Intake
from pipelines.cases.store import CaseStore
from pipelines.cases.vocabulary import DispatchTargetError, pick_target
from pipelines.triage.grouping import Group, Member
from pipelines.triage.record import detections_of
from pipelines.triage.report import CaseRef
from pipelines.triage.sources import ArchiveCache, PhotoSource, SourceReadError

log = logging.getLogger(__name__)

STRIP_SIDE = 1280  # other photos of a group: decoded to about this size for the bundle's strip


def violation_id(member: Member) -> str:
    return f"photo:{member.sha256[:16]}:{member.type}"


class TriageCases:
    """Writes ranked groups as candidate cases (and, with `auto_queue` on the intake, queues them)."""

    def __init__(self, intake: Intake, store: CaseStore, batch_id: str, staging: Path) -> None:
        self.intake, self.store, self.batch_id = intake, store, batch_id
        self.staging = staging
        self.archives = ArchiveCache()

    def write(self, groups: list[Group], on_case=None) -> list[CaseRef]:
        """One `CaseRef` per group, in order; a group whose photos cannot be read again gets none."""
        self.intake.retry_evidence()  # bundles an earlier run could not upload
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

    def _write(self, group: Group) -> CaseRef:
        """The group's case, finished: drafted if new, its bundle built again if an earlier run stopped
        before sealing it, and queued if this run auto-queues and that had not happened yet."""
        existing = next((c for m in group.members if (c := self.store.find(violation_id=violation_id(m))) is not None), None)
        if existing is not None and existing.evidence_ref is not None:
            case = self.intake.settle(existing)
            return CaseRef(case.id, case.evidence_ref, str(case.state))
        if existing is not None and not self.intake.unfinished(existing):  # sealed, waiting in the spool for storage
            return CaseRef(existing.id, None, str(existing.state), error=existing.reason)
        try:
            event, ctx = self._event(group, existing.violation_id if existing else violation_id(group.lead))
        except (SourceReadError, ImageReadError) as exc:
            log.error("%s: photo cannot be read again for its evidence: %s", group.lead.source, exc)
            return CaseRef(None, None, None, error=f"evidence not built: {exc}")
        case = self.intake.record_event(event, ctx)
        return CaseRef(case.id, case.evidence_ref, str(case.state), error=case.reason)

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
                     meta={"source": member.source})


class CasesUnavailable(RuntimeError):
    """Cases were asked for but cannot be written (no evidence key, unknown dispatch target...)."""


def open_triage_cases(deployment, detector, taxonomy, out: Path, dispatch_target: str | None) -> TriageCases:
    """The case writer for a run, from the deployment settings (`pipelines.settings.Settings`).

    Raises `CasesUnavailable` with the fix when the evidence key or storage credentials are
    missing or the dispatch target is not configured, before any photo is read.
    """
    from detect.evidence import EvidenceKeyError, ModelInfo
    from pipelines.evidence_store import StorageError

    if dispatch_target is not None:
        try:
            pick_target(deployment.dispatch.targets, dispatch_target)
        except DispatchTargetError as exc:
            raise CasesUnavailable(f"{exc}; add it under dispatch.targets in the --config file") from None
    model = ModelInfo.of(detector)
    try:
        intake = Intake.from_settings(deployment, model, auto_queue=dispatch_target, taxonomy=taxonomy)
    except EvidenceKeyError as exc:
        raise CasesUnavailable(f"{exc}; set it to write signed candidate cases, or pass --no-cases for the report only") from None
    except StorageError as exc:
        raise CasesUnavailable(f"evidence store: {exc}") from None
    from pipelines.shops import attach_shops

    attach_shops(intake)  # shop-front cases name the responsible shop (frontage register, by GPS)
    return TriageCases(intake, intake.store, batch_id=f"triage:{out.resolve().name}", staging=out / "evidence-staging")


def pick_dispatch_target(deployment, name: str | None) -> str:
    """The target named, or the only configured one (`pipelines.cases.vocabulary.pick_target`)."""
    try:
        return pick_target(deployment.dispatch.targets, name)
    except DispatchTargetError as exc:
        hint = {"none": ": --dispatch needs one; add it under dispatch.targets in the --config file",
                "several": " with --dispatch-target"}.get(exc.kind, "")
        raise CasesUnavailable(f"{exc}{hint}") from None
