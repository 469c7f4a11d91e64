"""Handing a case's evidence over (to a court, an appeal office): where its bundle is, and a copy of it into the
handover folder, whole or not at all.

A handover is read again by people who were not there: a half-copied bundle, or one copied over another case's
earlier handover without a word, would be worse than none. So a bundle is fetched (through the configured
`EvidenceStore`, local or S3) into a hidden folder beside its destination and renamed into place once it is all
there; a destination that is already there is refused (`FileExistsError`) unless the caller asks to replace it.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from pipelines.cases import CaseNotFound, CaseStore
from pipelines.cases.store import evidence_removed
from pipelines.evidence_store import EvidenceStore, StorageError


class NotStored(Exception):
    """A case whose bundle cannot be handed over: not in the case store, still in the spool, never built, or removed
    by the retention. The message names the case and why."""


def stored_bundle(store: CaseStore, case_id: str, spool_dir: Path) -> tuple[str, str | None]:
    """The case's stored bundle reference and the digest recorded when it was sealed; `NotStored` saying why there
    is none to fetch (a bundle still in `spool_dir` waits for the evidence store: it is sealed, not yet stored)."""
    try:
        case = store.get(case_id)
    except CaseNotFound:
        raise NotStored(f"case {case_id} is not in the case store {store.url}") from None
    if case.evidence_removed_at is not None:
        raise NotStored(f"case {case_id}: {evidence_removed(case)}")
    if case.evidence_ref is None:
        if (Path(spool_dir) / case_id).is_dir():
            raise NotStored(f"case {case_id}: its evidence is still in the spool ({Path(spool_dir) / case_id}), waiting "
                            "for the evidence store: nothing stored to fetch yet (serve, watch and triage upload the spool "
                            "when the store answers; `streetwatch cases show` gives the reason it waits)")
        raise NotStored(f"case {case_id} has no stored evidence (state {case.state.value}: no bundle built yet)")
    return case.evidence_ref, case.evidence_digest


def copy_bundle(evidence: EvidenceStore, ref: str, dest: Path, *, replace: bool = False) -> Path:
    """Fetch the bundle at `ref` into `dest` (its parent must exist), whole or not at all. `FileExistsError` when
    `dest` is there and `replace` is False (checked before anything is fetched); with `replace`, the old folder
    goes only once the new one is all there. `StorageError` when it cannot be fetched (nothing is left behind)."""
    dest = Path(dest)
    if dest.exists() and not replace:
        raise FileExistsError(dest)
    partial = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.partial"
    old = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.old"
    try:
        evidence.fetch_bundle(ref, partial)
        if dest.exists():
            dest.rename(old)
        partial.rename(dest)
    except OSError as exc:
        if old.exists() and not dest.exists():  # the earlier copy back where it was
            old.rename(dest)
        raise StorageError(f"{ref}: cannot write the copy to {dest}: {exc}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return dest
