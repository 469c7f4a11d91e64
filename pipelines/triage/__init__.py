"""Bulk photo triage for inspectors: photos in, ranked, grouped, evidence-backed candidate cases out.

Entry point: `run_triage(inputs, TriageSettings(...))` (the `streetwatch triage` command).
Modules: `sources` (files, folders, zips), `photos` (reduced decode, hash, EXIF via `exif`,
grid cells via `grid`), `pipeline` (bounded read/detect/write stream), `analyse` + `findings`
(photo rules, thumbnails, records), `journal` (results.jsonl, resume), `grouping`
(near-duplicates), `report` (report.html, cases.csv), `run` (the whole run).
"""

from pipelines.triage.settings import TriageOptions, TriageSettings

__all__ = ["TriageOptions", "TriageResult", "TriageSettings", "run_triage"]


def __getattr__(name: str):
    """`run_triage` and `TriageResult` load the whole pipeline on first use: the settings file's model
    (`pipelines.settings`) needs `TriageOptions` from this package, and the pipeline needs the settings."""
    if name in ("run_triage", "TriageResult"):
        from pipelines.triage import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
