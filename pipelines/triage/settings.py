"""Triage settings: one typed model, so the CLI, the docs, the service and the benchmark share the defaults.

The knobs a settings file may hold are `pipelines.settings.TriageOptions` (`triage:` for
`streetwatch triage`, `service.triage:` for upload jobs); `TriageSettings` adds what belongs to
one run (its output folder, resume, dispatch target).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipelines.settings import TriageOptions

__all__ = ["TriageOptions", "TriageSettings"]


class TriageSettings(TriageOptions):
    """Everything a triage run needs besides its inputs."""

    out: Path = Field(Path("triage-out"), title="Output folder", description="Where report.html, results.jsonl, cases.csv and thumbnails go.")
    dispatch_target: str | None = Field(
        None, title="Dispatch target", description="Queue every case for this dispatch target (the outbox) as soon as its evidence is stored."
    )
    resume: bool = Field(False, title="Resume", description="Continue the run in `out`, skipping photos already recorded (by name and content hash) "
                                                          "and trying those recorded as errors again.")
