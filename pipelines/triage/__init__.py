"""Bulk photo triage for inspectors: photos in, ranked, grouped, evidence-backed candidate cases out.

Entry point: `run_triage(inputs, TriageSettings(...))` (the `streetwatch triage` command).
Modules: `sources` (files, folders, zips), `photos` (reduced decode, hash, EXIF via `exif`,
grid cells via `grid`), `pipeline` (bounded read/detect/write stream), `analyse` + `findings`
(photo rules, thumbnails), `record` (the typed photo record everything after reads), `journal`
(results.jsonl, resume), `grouping` (near-duplicates), `report` (report.html, cases.csv),
`cases` (candidate cases), `run` (the whole run).
"""

from pipelines.triage.run import TriageResult, run_triage
from pipelines.triage.settings import TriageSettings

__all__ = ["TriageResult", "TriageSettings", "run_triage"]
