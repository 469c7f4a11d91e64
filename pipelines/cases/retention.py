"""Retention of rejected cases' evidence (`cases.rejected_evidence_keep_days`): a false alarm's bundle holds the faces,
plates and passers-by of people who did nothing wrong, so it is removed from the evidence store that many days after
the rejection; the case stays, with its digest, marked (`EVIDENCE_REMOVED`) so that its pages, the export of reviews
and a reopening say why its evidence is gone. `serve` runs it hourly, `streetwatch cases prune-evidence` at will.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipelines.cases.store import CaseStore
from pipelines.evidence_store import EvidenceStore, StorageError

log = logging.getLogger(__name__)


@dataclass
class Pruned:
    """What one round removed (or, dry, would remove): the cases' ids and the bytes their bundles held; `failed` the
    cases whose bundle the store would not remove (tried again at the next round), each with why."""

    cases: list[str] = field(default_factory=list)
    bytes: int = 0
    failed: list[str] = field(default_factory=list)


def prune_rejected_evidence(store: CaseStore, evidence: EvidenceStore, keep_days: int, *, now: datetime | None = None,
                            dry_run: bool = False) -> Pruned:
    """Remove the evidence bundles (every file of each, in the local folder or S3) of the cases rejected more than
    `keep_days` days before `now`, each removal audited (`CaseStore.remove_evidence`); nothing when `keep_days` is 0.
    `dry_run`: only count what would go. A bundle the store cannot remove is logged and left for the next round."""
    pruned, now = Pruned(), now or datetime.now(UTC)
    if keep_days <= 0:
        return pruned
    for case, rejected_at in store.rejected_before(now - timedelta(days=keep_days)):
        assert case.evidence_ref is not None  # rejected_before lists stored bundles only
        try:
            if dry_run:
                freed: int | None = evidence.bundle_bytes(case.evidence_ref)
            else:
                record = {"rejected_at": rejected_at.isoformat(), "keep_days": keep_days,
                          "evidence_digest": case.evidence_digest}
                freed = store.remove_evidence(case.id, lambda c: evidence.remove_bundle(c.evidence_ref or ""),
                                              record=record, now=now)
        except StorageError as exc:
            log.warning("case %s: rejected case's evidence not removed: %s", case.id, exc)
            pruned.failed.append(f"{case.id}: {exc}")
            continue
        if freed is not None:
            pruned.cases.append(case.id)
            pruned.bytes += freed
    return pruned
