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

    def removed(self, case_id: str, freed: int) -> None:
        """Count one case's bundle removed (or, dry, to remove)."""
        self.cases.append(case_id)
        self.bytes += freed

    def not_removed(self, case_id: str, exc: StorageError) -> None:
        """Report one case's bundle the evidence store would not remove: the next round tries it again."""
        log.warning("case %s: rejected case's evidence not removed (tried again at the next round): %s", case_id, exc)
        self.failed.append(f"{case_id}: {exc}")


def prune_rejected_evidence(store: CaseStore, evidence: EvidenceStore, keep_days: int, *, now: datetime | None = None,
                            dry_run: bool = False) -> Pruned:
    """Remove the evidence bundles (every file of each, in the local folder or S3) of the cases rejected more than
    `keep_days` days before `now`, each removal audited; no new case when `keep_days` is 0. `dry_run`: only count what
    would go. Each case is marked and audited first (`CaseStore.mark_evidence_removed`), its bundle deleted after, out
    of any transaction, so no writer waits on a deletion, and the deletion then noted finished
    (`CaseStore.finish_evidence_removal`); a bundle the store did not remove is logged, and the next rounds, even with
    `keep_days` back at 0 (its page already says removed), check that marked case until its deletion is finished."""
    pruned, now = Pruned(), now or datetime.now(UTC)
    for case in store.evidence_marked_removed():  # an earlier round's deletion that failed after its mark
        ref = case.evidence_ref or ""
        try:
            size = evidence.bundle_bytes(ref)  # one stat, or one S3 listing, a case
            if size:
                pruned.removed(case.id, size if dry_run else _delete(store, evidence, case.id, ref, now))
            elif not dry_run:  # gone already (the deletion finished, its note did not): noted, not checked again
                store.finish_evidence_removal(case.id, now=now)
        except StorageError as exc:
            pruned.not_removed(case.id, exc)
    if keep_days <= 0:
        return pruned
    cutoff = now - timedelta(days=keep_days)
    for case, rejected_at in store.rejected_before(cutoff):
        ref = case.evidence_ref or ""  # rejected_before lists stored bundles only
        try:
            size = evidence.bundle_bytes(ref)
            if dry_run:
                pruned.removed(case.id, size)
                continue
            record = {"rejected_at": rejected_at.isoformat(), "keep_days": keep_days,
                      "evidence_digest": case.evidence_digest, "bytes": size}
            if store.mark_evidence_removed(case.id, cutoff=cutoff, record=record, now=now) is None:
                continue  # reopened or rejected again meanwhile, or marked by another process's round
            pruned.removed(case.id, _delete(store, evidence, case.id, ref, now))
        except StorageError as exc:
            pruned.not_removed(case.id, exc)
    return pruned


def _delete(store: CaseStore, evidence: EvidenceStore, case_id: str, ref: str, now: datetime) -> int:
    """Delete a marked case's bundle and note the deletion finished, so that later rounds no longer check it; the bytes
    freed."""
    freed = evidence.remove_bundle(ref)
    store.finish_evidence_removal(case_id, now=now)
    return freed
