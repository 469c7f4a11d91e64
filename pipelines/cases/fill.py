"""`streetwatch cases fill-boxes`: the evidence boxes of the cases the release before stored without them.

That release recorded a case's boxes (`Case.evidence_boxes`) when it drafted the case, but a bundle its spool's retry
uploaded left the case without them. The review page and the export of reviews read such a case's boxes from its
bundle (`case_boxes`), but the call-out list's photos (`CallOutList.sync`: one SQL pass over every flyposting case,
at each list request after a case changed), the case's API record and `cases show` read the store alone: an old
flyposting case had no photo on the call-out list. Reading the bundle there would cost an evidence store read per such
case at every sync, with photos coming and going with the evidence store's reachability; written once into the store,
as the intake writes them, the boxes are there for every reader.

Each case's stored bundle is fetched and verified as the intake verifies a bundle before it records its boxes
(`verify_bundle`: the HMAC under the current or an earlier key, every file as listed, the case it names and the digest
recorded at sealing), and its boxes taken as the intake takes them (`manifest_boxes`). A case that has its boxes, or no
stored evidence yet (the intake writes them when it uploads the bundle), is left alone: a second run fills nothing.
The store's own query picks the cases to fill (`CaseStore.without_boxes`, a page at a time): one with its boxes is never
read, and a city's years of cases are never all in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from detect.evidence.signing import hmac_key_for, read_manifest, signed_key_id, verify_bundle
from pipelines.cases.intake import manifest_boxes, unknown_key
from pipelines.cases.store import Case, CaseStore, evidence_removed
from pipelines.evidence_store import EvidenceStore, StorageError
from pipelines.wording import counted


@dataclass
class Filled:
    """What a fill did, by case id: `filled` (boxes written), `had_none` (a verified bundle without an opening picture:
    no boxes to write), `removed` (the evidence removed by the rejected cases' retention, as it should be), `missing`
    (unreadable: not stored where the case says, the store unreachable) and `refused` (not the bundle sealed for the
    case); each of the last three with why."""

    filled: list[str] = field(default_factory=list)
    had_none: list[str] = field(default_factory=list)
    removed: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"filled the evidence boxes of {counted(len(self.filled), 'case')}; {len(self.had_none)} had none (no opening "
                f"picture in the bundle); {len(self.removed) + len(self.missing)} with their evidence missing "
                f"({len(self.removed)} removed by the retention, {len(self.missing)} unreadable); "
                f"{len(self.refused)} refused (not the bundle sealed for the case)")


def fill_boxes(store: CaseStore, evidence: EvidenceStore, keys: list[bytes],
               progress: Callable[[int, int], None] | None = None) -> Filled:
    """Write the boxes of each case the store gives as `without_boxes` (read a page at a time) from its verified bundle.
    `keys`: the current HMAC key, then the earlier ones (`evidence.previous_hmac_key_files`). `progress(done, total)`
    after each case."""
    done = Filled()
    total = store.count_without_boxes()
    for n, case in enumerate(store.without_boxes(), 1):
        _fill(store, evidence, keys, case, done)
        if progress is not None:
            progress(n, total)
    return done


def _fill(store: CaseStore, evidence: EvidenceStore, keys: list[bytes], case: Case, done: Filled) -> None:
    """One case of `fill_boxes`, counted in `done`."""
    if case.evidence_removed_at is not None:
        done.removed[case.id] = evidence_removed(case)
        return
    with tempfile.TemporaryDirectory(prefix="sw-fill-") as tmp:
        try:
            bundle = evidence.fetch_bundle(str(case.evidence_ref), Path(tmp) / case.id)
        except StorageError as exc:
            done.missing[case.id] = f"evidence unreadable: {exc}"
            return
        key = hmac_key_for(bundle, keys)
        if key is None:
            done.refused[case.id] = f"evidence not verified: {unknown_key(signed_key_id(bundle))}"
            return
        report = verify_bundle(bundle, key, case_id=case.id, digest=case.evidence_digest)
        if not report.ok:
            done.refused[case.id] = f"evidence not verified: {report.why()}"
            return
        boxes = manifest_boxes(read_manifest(bundle))
    if boxes is None:
        done.had_none.append(case.id)
        return
    store.update(case.id, evidence_boxes=boxes)
    done.filled.append(case.id)
