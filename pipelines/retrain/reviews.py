"""Review export: reviewed cases in the case store -> the JSON Lines `data from-cases` reads.

The case store keeps, per case, the review decision (approved/rejected), reason code and note,
the evidence reference, and the evidence boxes with the bundle path of the picture they were
drawn on (`evidence_boxes`). This copies each reviewed case's picture out of the evidence store
(checking it against the sha256 its bundle manifest lists, so altered evidence never becomes
training data) and writes one line per case. The export is a plain folder, so a reviewer can
look at it, and `data from-cases` stays testable without a database.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from detect.evidence.signing import MANIFEST
from detect.digests import sha256_bytes
from pipelines.cases import CaseStore
from pipelines.evidence_store import EvidenceStore, StorageError
from pipelines.retrain.check import Finding

EXPORT = "review.jsonl"


def export_reviews(store: CaseStore, evidence: EvidenceStore, out_dir: Path, *,
                   since: datetime | None = None) -> tuple[Path, int, list[Finding]]:
    """Write `out_dir/review.jsonl` and `out_dir/evidence/<case>/<picture>`; returns (file, cases, problems)."""
    out_dir = Path(out_dir)
    if (out_dir / EXPORT).exists():
        raise FileExistsError(f"{out_dir / EXPORT} already exists: export into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    findings: list[Finding] = []
    lines = []
    for case in store.list():
        if case.review_decision not in ("approved", "rejected") or (since and case.reviewed_at and case.reviewed_at < since):
            continue
        boxes = case.evidence_boxes or {}
        if not case.evidence_ref or not boxes.get("image"):
            findings.append(Finding(f"case {case.id}", "reviewed but its evidence is not stored yet: skipped"))
            continue
        try:
            data = evidence.read_bytes(case.evidence_ref, boxes["image"])
            manifest = json.loads(evidence.read_bytes(case.evidence_ref, MANIFEST))
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
            "source_id": case.source_id, "image": picture.relative_to(out_dir).as_posix(),
            "image_sha256": sha256_bytes(data), "width": boxes.get("width"), "height": boxes.get("height"),
            "boxes": [{"class_name": b["class_name"], "xyxy": b["xyxy"]} for b in boxes.get("boxes", [])],
        })
    path = out_dir / EXPORT
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path, len(lines), findings
