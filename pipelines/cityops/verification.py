"""Verification back to the platform: a case closes on evidence, not on a claim.

Two checks decide whether a handled case was really dealt with:
- the camera's automatic re-check (`pipelines.cctv.case_sink`: cleared / still present, with the
  new frame in the bundle);
- the handler's disposal photo (处置照片), posted to the service or fetched from the platform, judged
  by the same photo judgement triage uses (detector, the verifier, `detect.rules.PhotoRules`, with
  OCR for types that are read from text): is a violation of the case's type still in the picture?
Both record the outcome through `Intake.record_verification` (state `verified_cleared` or
`still_present`, the frame in the signed bundle). `VerificationReporter` then sends each outcome
once to the platform the case went to, through the dispatch adapter's `report_verification`
(cn-dcm: a POST to the task's verification URL; Open311 has no such call: recorded `unsupported`).
Reports are rows of `verification_reports`, so a restart or an unreachable platform loses none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import sqlalchemy as sa
import supervision as sv

from detect import fields
from detect.evidence import MANIFEST
from detect.frames import Frame
from detect.imageio import FORMAT_SUFFIXES, decode_image
from detect.judgement import Judgement
from detect.rules import PhotoRules
from detect.taxonomy import Taxonomy, load_taxonomy
from detect.verifier import Verdicts
from pipelines.cases.intake import Intake
from pipelines.cases.states import CaseState
from pipelines.cases.store import Case, CaseStore
from pipelines.cityops.schema import verification_reports
from pipelines.dispatch.adapters import DeliveryError, Unsupported, VerificationReport, make_adapter
from pipelines.dispatch.config import DispatchConfig
from pipelines.evidence_store import EvidenceStore, StorageError, content_type

log = logging.getLogger(__name__)

OUTCOMES = (CaseState.VERIFIED_CLEARED.value, CaseState.STILL_PRESENT.value)
DISPOSAL_ACTOR = "disposal-photo"
DISPOSAL_RECEIVED = "handled: disposal photo received, check pending"  # the case's history (vocabulary.HISTORY_REASONS_ZH)
WAITS_FOR_PHOTO = (CaseState.SUBMITTED, CaseState.ACCEPTED, CaseState.VERIFYING, CaseState.STILL_PRESENT)
"""States in which a handler's after-photo is checked: the case is at the dispatch system."""
TEXT_TYPES = ("flyposting",)
"""Types judged from text: the after-photo is read by OCR too (as triage does with `ocr: all`)."""


class DisposalCheckError(ValueError):
    """A disposal photo that cannot be checked: unreadable (`conflict` False), or the case is not waiting for it."""

    def __init__(self, message: str, *, conflict: bool = False):
        super().__init__(message)
        self.conflict = conflict


@dataclass
class DisposalResult:
    case: Case
    cleared: bool
    boxes: list[dict[str, Any]]


def check_disposal_photo(intake: Intake, detector, case_id: str, data: bytes, name: str, *, actor: str,
                         taxonomy: Taxonomy | None = None, judgement: Judgement | None = None) -> DisposalResult:
    """Judge the handler's after-photo of a case and record the outcome (see module doc).

    `judgement`: the verifier triage uses (`load_judgement(settings.triage.verifier, ...)`, checked
    against `detector`); None judges by detector classes alone.

    A case the platform has not yet marked handled (`submitted`/`accepted`) moves to `verifying`
    first: the photo is their claim of having handled it. Raises DisposalCheckError naming the
    photo or the case when it cannot be checked; nothing is recorded then.
    """
    from detect.imageio import ImageReadError

    taxonomy = taxonomy or load_taxonomy()
    case = intake.store.get(case_id)
    if case.state not in WAITS_FOR_PHOTO:
        raise DisposalCheckError(f"case {case.id} is {case.state}: a disposal photo is checked once the case is at the "
                                 f"dispatch system (submitted, accepted, verifying or still_present)", conflict=True)
    try:  # read before the case moves: a file that is no photo is no claim of handling it
        decoded = decode_image(data, name)
    except ImageReadError as exc:
        raise DisposalCheckError(f"{name}: {exc.reason}") from None
    if case.state is not CaseState.VERIFYING:
        case = intake.store.apply_remote_state(case.id, CaseState.VERIFYING, actor=actor,
                                               reason=DISPOSAL_RECEIVED)
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="disposal-") as tmp:
        path = Path(tmp) / f"disposal-{sha[:16]}{FORMAT_SUFFIXES.get(decoded.format or '', '.jpg')}"
        path.write_bytes(data)  # the bundle keeps the photo's bytes exactly as received
        frame = Frame(image=decoded.image, source_id=f"disposal:{sha[:16]}", ts=datetime.now(UTC), frame_id=sha, path=str(path),
                      meta={"source": name})
        from pipelines.triage.pipeline import judge_image
        from pipelines.triage.text import OcrMode, PhotoText

        judgement = judgement or Judgement(None, taxonomy)
        text = PhotoText(OcrMode.ALL if case.violation_type in TEXT_TYPES else OcrMode.OFF, taxonomy=taxonomy)
        detections, verdicts = judge_image(decoded.image, data, name, detector, judgement, text)
        verified = Verdicts.judged_types(verdicts)
        events = [e for e in PhotoRules(taxonomy=taxonomy).process(frame, detections, verified=verified)
                  if e.violation_type == case.violation_type]
        found = sv.Detections.merge([_plain(e.detections) for e in events]) if events else sv.Detections.empty()
        checked = intake.record_verification(case.id, frame, found, cleared=not events, actor=f"{DISPOSAL_ACTOR}:{actor}")
    from detect.evidence.builder import detections_json

    return DisposalResult(checked, not events, detections_json(found))


def _plain(dets: sv.Detections) -> sv.Detections:
    keep = {k: v for k, v in dets.data.items() if k == fields.CLASS_NAME}
    return sv.Detections(xyxy=dets.xyxy, confidence=dets.confidence, class_id=dets.class_id, data=keep)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def fetch_photo(url: str, limit: int = 50 * 2**20, allowed_hosts: Collection[str] | None = None) -> tuple[bytes, str]:
    """The platform's disposal photo at `url` (http/https), or DisposalCheckError saying why not.

    With `allowed_hosts` (`host` or `host:port`) the URL, and every redirect it takes, must be on one of
    them: the service fetches what a token holder names, and must not be made to read its own network.
    The body is read as it streams and given up past `limit` bytes."""
    if not url.startswith(("http://", "https://")):
        raise DisposalCheckError(f"{url!r}: only http(s) URLs are fetched")
    allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    def check_host(request: httpx.Request) -> None:
        # httpx drops a scheme's default port from the URL (`https://h/` and `https://h:443/` are `h`), while the
        # default hosts carry it (`Settings.photo_url_hosts`: `h:443`): compared with it, a platform's photo URLs on
        # the default port were all refused
        host, netloc = request.url.host.lower(), request.url.netloc.decode().lower()
        port = request.url.port or _DEFAULT_PORTS[request.url.scheme]
        if allowed is not None and host not in allowed and f"{host}:{port}" not in allowed:
            raise DisposalCheckError(f"{request.url}: {netloc} is not a host photos are fetched from "
                                     f"(service.photo_url_hosts, default the dispatch targets' hosts: {', '.join(sorted(allowed)) or 'none'})")

    try:
        with httpx.Client(timeout=30, follow_redirects=True, event_hooks={"request": [check_host]}) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise DisposalCheckError(f"{url}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise DisposalCheckError(f"{url}: larger than {limit // 2**20} MB")
    except httpx.HTTPError as exc:
        raise DisposalCheckError(f"{url}: cannot fetch: {type(exc).__name__}: {exc}") from None
    return bytes(body), url.rsplit("/", 1)[-1].split("?")[0] or "disposal.jpg"


@dataclass
class ReportStats:
    queued: int = 0
    delivered: int = 0
    retried: int = 0
    unsupported: int = 0
    parked: int = 0
    errors: list[str] = field(default_factory=list)


class VerificationReporter:
    """Sends each recorded re-check outcome once to the case's dispatch target (see module doc)."""

    def __init__(self, store: CaseStore, evidence: EvidenceStore, config: DispatchConfig, *, taxonomy: Taxonomy | None = None,
                 client: httpx.Client | None = None, max_attempts: int = 20):
        self.store, self.evidence, self.config = store, evidence, config
        taxonomy = taxonomy or load_taxonomy()
        self.adapters = {name: make_adapter(name, t, taxonomy) for name, t in config.targets.items()}
        self.client = client or httpx.Client(timeout=30)
        self.max_attempts = max_attempts

    def close(self) -> None:
        self.client.close()

    def collect(self) -> int:
        """Queue a report for every re-check outcome not reported yet; returns how many were queued."""
        from pipelines.cases.schema import case_history, cases

        query = (sa.select(cases.c.id, cases.c.dispatch_target).where(
            cases.c.verification_ref.is_not(None), cases.c.dispatch_target.is_not(None), cases.c.dispatch_ref.is_not(None)))
        queued = 0
        with self.store.engine.begin() as conn:
            known = {(r.case_id, r.target, r.verification_ref) for r in conn.execute(sa.select(
                verification_reports.c.case_id, verification_reports.c.target, verification_reports.c.verification_ref))}
            for case_id, target in conn.execute(query).all():
                steps = conn.execute(sa.select(case_history.c.to_state, case_history.c.actor, case_history.c.details, case_history.c.at)
                                     .where(case_history.c.case_id == case_id, case_history.c.to_state.in_(OUTCOMES))
                                     .order_by(case_history.c.id)).all()
                for to_state, actor, details, at in steps:
                    ref = (details or {}).get("verification_ref")
                    if not ref or (case_id, target, ref) in known:
                        continue
                    kind = "disposal_photo" if actor.startswith(DISPOSAL_ACTOR) else "auto_recheck"
                    conn.execute(verification_reports.insert().values(
                        case_id=case_id, target=target, verification_ref=ref, kind=kind, outcome=to_state, status="pending",
                        attempts=0, created_at=at))
                    known.add((case_id, target, ref))
                    queued += 1
        return queued

    def run_once(self) -> ReportStats:
        """Queue new outcomes, then try every pending report once."""
        stats = ReportStats(queued=self.collect())
        with self.store.engine.connect() as conn:
            pending = conn.execute(sa.select(verification_reports).where(verification_reports.c.status == "pending")
                                   .order_by(verification_reports.c.id)).all()
        for row in pending:
            self._send(row._mapping, stats)
        return stats

    def _send(self, row, stats: ReportStats) -> None:
        adapter = self.adapters.get(row["target"])
        values: dict[str, Any] = {"attempts": row["attempts"] + 1}
        try:
            if adapter is None:
                raise Unsupported(f"no dispatch target named {row['target']!r} is configured")
            report = self._report(row)
            adapter.report_verification(self.client, report)
        except Unsupported as exc:
            values.update(status="unsupported", last_error=str(exc))
            stats.unsupported += 1
        except DeliveryError as exc:
            stats.errors.append(f"case {row['case_id']}: verification report to {row['target']}: {exc}")
            parked = not exc.retry or values["attempts"] >= self.max_attempts
            values.update(status="parked" if parked else "pending", last_error=str(exc))
            stats.parked += parked
            stats.retried += not parked
        else:
            values.update(status="delivered", delivered_at=datetime.now(UTC), last_error=None)
            stats.delivered += 1
        with self.store.engine.begin() as conn:
            conn.execute(verification_reports.update().where(verification_reports.c.id == row["id"]).values(**values))

    def _report(self, row) -> VerificationReport:
        from pipelines.dispatch.adapters import Transient

        case = self.store.get(row["case_id"])
        target = self.config.targets[row["target"]]
        try:
            raw = self.evidence.read_bytes(case.evidence_ref, MANIFEST)
            manifest = json.loads(raw)
            check = next((v for v in reversed(manifest.get("verifications", [])) if v.get("artifact") == row["verification_ref"]), None)
            by_path = {a["path"]: a for a in manifest["artifacts"]}
            paths = _shareable(check or {"artifact": row["verification_ref"]}, manifest, by_path)
            expiry = timedelta(seconds=target.attachment_expiry_s)
            attachments = [{"path": p, "url": self.evidence.url(case.evidence_ref, p, expiry),
                            "content_type": by_path[p].get("content_type") or content_type(p), "sha256": by_path[p]["sha256"]}
                           for p in paths]
        except StorageError as exc:
            raise Transient(f"evidence store: {exc}") from exc
        checked = (check or {}).get("at", {}).get("utc") or row["created_at"].isoformat()
        return VerificationReport(case=case, kind=row["kind"], outcome=row["outcome"], checked_at=checked,
                                  manifest_sha256=hashlib.sha256(raw).hexdigest(), attachments=attachments,
                                  idempotency_key=f"streetwatch:{row['target']}:{case.id}:verification:{row['verification_ref']}")


def _shareable(check: dict, manifest: dict, by_path: dict[str, dict]) -> list[str]:
    """The re-check's frames that may leave the building, as for the case itself (the manifest's
    `dispatch_attachments`): its blurred copy when privacy is on, else its annotated frame. Its original
    (`verification_N_original`, an unblurred CCTV frame or the handler's photo with its EXIF) never: sent
    before, it reached a platform past the privacy blur through S3's presigned URLs, and /attachments
    refused it from a local store."""
    moment = "_" + PurePosixPath(check["artifact"]).stem  # roles: annotated_verification_1, shared_verification_1 ...
    return [p for p in manifest.get("dispatch_attachments", []) if p in by_path and by_path[p]["role"].endswith(moment)]


def list_reports(engine, case_id: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(verification_reports).order_by(verification_reports.c.id)
    if case_id is not None:
        query = query.where(verification_reports.c.case_id == case_id)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]


