"""Review export: reviewed cases in the case store -> the JSON Lines `data from-cases` reads.

The case store keeps, per case, the review decision (approved/rejected), reason code and note,
the evidence reference, and the evidence boxes with the bundle path of the picture they were
drawn on (`evidence_boxes`). This copies each reviewed case's picture out of the evidence store
(checking it against the sha256 its bundle manifest lists, so altered evidence never becomes
training data) and writes one line per case; a case its platform voided after approval (作废) is left
out, its label unknown. The export is a plain folder, so a reviewer can
look at it, and `data from-cases` stays testable without a database.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from detect.digests import sha256_bytes
from detect.evidence import MANIFEST
from pipelines.analytics.casedata import VOIDED_BY_PLATFORM
from pipelines.cases import Case, CaseStore
from pipelines.cases.intake import case_boxes
from pipelines.cases.store import EVIDENCE_REMOVED_ZH, evidence_removed
from pipelines.cases.vocabulary import REASONS, RejectReason
from pipelines.evidence_store import EvidenceStore, StorageError
from pipelines.retrain.check import Finding
from pipelines.retrain.dataset import DatasetError
from pipelines.wording import counted

EXPORT = "review.jsonl"
SHOWN_SKIPS = 20
"""Skipped reviewed cases `no_reviewed_cases` names at most (then a count of the rest)."""
#: What each kind of `Skip` is called in `skips_summary`, in the order it lists them.
SKIP_NAMES = {
    "voided": f"{VOIDED_BY_PLATFORM} voided by their platform after approval",
    "privacy": f"{REASONS[RejectReason.PRIVACY].zh} rejected for privacy",
    "evidence_removed": f"{EVIDENCE_REMOVED_ZH} evidence removed after the retention period",
}
PRIVATE_SKIP = ("rejected as 'privacy' (涉及隐私): its picture is not copied out of the evidence store (a reviewer judged "
                "it private, and it teaches the detector nothing): skipped")


@dataclass(frozen=True)
class Skip(Finding):
    """A reviewed case left out by design (`SKIP_NAMES`: voided by its platform, rejected for privacy, its evidence
    removed by the retention), not a fault: `data export-reviews` counts these in one line (`skips_summary`) where each
    was an error line, which staff took for failures to chase. Its reason stays, for a refusal and the retrain summary."""

    severity: Literal["error", "warning"] = "warning"
    kind: str = ""


def skips_summary(findings: list[Finding]) -> str | None:
    """One line counting the `Skip`s among `findings` by kind, None without any."""
    counts = Counter(f.kind for f in findings if isinstance(f, Skip))
    if not counts:
        return None
    kinds = ", ".join(f"{counts[kind]} {name}" for kind, name in SKIP_NAMES.items() if counts[kind])
    return f"skipped {counted(counts.total(), 'reviewed case')} as intended (not errors): {kinds}"


def export_reviews(store: CaseStore, evidence: EvidenceStore, out_dir: Path, *,
                   since: datetime | None = None) -> tuple[Path, int, list[Finding]]:
    """Write `out_dir/review.jsonl` and `out_dir/evidence/<case>/<picture>`; returns (file, cases, problems), the
    cases left out by design among the problems as `Skip`s.
    DatasetError (`no_reviewed_cases`) when no case can be exported: nothing is written then, since an empty export is
    refused by `data from-cases` anyway and would only be a file to wonder about."""
    out_dir = Path(out_dir)
    if (out_dir / EXPORT).exists():
        raise FileExistsError(f"{out_dir / EXPORT} already exists: export into a new folder")
    findings: list[Finding] = []
    lines = []
    counts = {"cases": 0, "unreviewed": 0, "before": 0}
    for case in store.list():
        counts["cases"] += 1
        if case.review_decision not in ("approved", "rejected"):
            counts["unreviewed"] += 1
            continue
        if since and case.reviewed_at and case.reviewed_at < since:
            counts["before"] += 1
            continue
        if case.voided_by_platform:
            findings.append(Skip(f"case {case.id}", voided_skip(store, case), kind="voided"))
            continue
        if _private(case):
            findings.append(Skip(f"case {case.id}", PRIVATE_SKIP, kind="privacy"))
            continue
        if case.evidence_removed_at is not None:
            findings.append(Skip(f"case {case.id}", f"{evidence_removed(case)}: skipped (export the reviews before the "
                                                    "retention removes them)", kind="evidence_removed"))
            continue
        if not case.evidence_ref:
            findings.append(Finding(f"case {case.id}", "reviewed but its evidence is not stored yet: skipped"))
            continue
        try:
            manifest = json.loads(evidence.read_bytes(case.evidence_ref, MANIFEST))
            boxes = case_boxes(case, manifest)
            if boxes is None:
                findings.append(Finding(f"case {case.id}", "its evidence bundle has no opening picture: skipped"))
                continue
            data = evidence.read_bytes(case.evidence_ref, boxes["image"])
        except (StorageError, ValueError) as exc:
            findings.append(Finding(f"case {case.id}", f"evidence unreadable: {exc}"))
            continue
        listed = {a["path"]: a.get("sha256") for a in manifest.get("artifacts", [])}
        if listed.get(boxes["image"]) != sha256_bytes(data):
            findings.append(Finding(f"case {case.id}", f"{boxes['image']} does not match its bundle manifest: skipped"))
            continue
        picture = out_dir / "evidence" / case.id / Path(boxes["image"]).name
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_bytes(data)
        lines.append({
            "case_id": case.id, "violation_type": case.violation_type, "decision": case.review_decision,
            "reason_code": case.review_reason, "reason": case.review_note or case.review_reason or "",
            "source_id": case.source_id, **({"grid_cell": case.grid_cell} if case.grid_cell else {}),
            "image": picture.relative_to(out_dir).as_posix(),
            "image_sha256": sha256_bytes(data), "width": boxes.get("width"), "height": boxes.get("height"),
            "boxes": [{"class_name": b["class_name"], "xyxy": b["xyxy"]} for b in boxes.get("boxes", [])],
            **_retyped(case),
        })
    if not lines:
        raise no_reviewed_cases(counts, since, findings)
    path = out_dir / EXPORT
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path, len(lines), findings


def voided_skip(store: CaseStore, case: Case) -> str:
    """Why a case approved here and voided by its platform (作废) is left out: the platform's voiding may mean not a
    violation, a duplicate or not theirs, so the case is neither a positive (as its approval says) nor a hard negative."""
    last = store.history(case.id)[-1]
    why = f": {last.reason}" if last.reason else ""
    return (f"approved here, then voided by {last.actor} (作废{why}): whether it is a violation is unknown, "
            "neither a positive nor a negative: skipped")


def no_reviewed_cases(counts: dict[str, int], since: datetime | None, findings: list[Finding]) -> DatasetError:
    """The refusal of an export with no case to write, saying what counts as reviewed and how many cases the store
    holds, are not reviewed yet, were reviewed before `since`, or were skipped (and why): which of these to change."""
    window = f", {counts['before']} reviewed before --since {since.isoformat()}" if since else ""
    skipped = "".join(f"\n  {f.path}: {f.reason}" for f in findings[:SHOWN_SKIPS])
    more = f"\n  … and {len(findings) - SHOWN_SKIPS} more" if len(findings) > SHOWN_SKIPS else ""
    return DatasetError(
        "no reviewed cases to export (a case counts as reviewed once confirmed or rejected on the review page or "
        f"POST /cases/{{id}}/confirm or /reject): the store holds {counts['cases']} cases, {counts['unreviewed']} not reviewed"
        f"{window}, {len(findings)} reviewed but skipped{':' if findings else ''}{skipped}{more}")


def _private(case: Case) -> bool:
    """A case a reviewer rejected for privacy (涉及隐私): its picture stays in the evidence store. Neither `data
    from-cases` nor the verifier's dataset learns from it (the rejection says nothing about what the picture shows), so
    a copy in the export, handed to the data team or a vendor, would only spread what the reviewer kept back."""
    try:
        return case.review_decision == "rejected" and RejectReason(str(case.review_reason or "").lower()) is RejectReason.PRIVACY
    except ValueError:
        return False


def _retyped(case: Case) -> dict[str, str]:
    """`detected_type`, the type the detector proposed, for a case a reviewer gave another type (`CaseStore.revise`
    keeps it): the verifier's dataset learns from it that the photo does not show the proposed type (a stall head's
    false finding on a shop's goods), as it learns from a rejection. Nothing for a case whose type stands."""
    detected = (case.details or {}).get("detected_type")
    return {"detected_type": detected} if detected and detected != case.violation_type else {}
