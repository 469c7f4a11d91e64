"""Triage settings: one typed model, so the CLI, the docs, the service and the benchmark share the defaults.

The knobs a settings file may hold are `pipelines.settings.TriageOptions` (`triage:` for
`streetwatch triage`, `service.triage:` for upload jobs); `TriageSettings` adds what belongs to
one run (its output folder, resume, dispatch target, the names its inputs were sent as).
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
    names: dict[str, str] = Field(
        {}, title="Names sent as", description="The name each input file was sent under, by its path (an upload job's "
        "stored `input/0001.jpg`: `微信图片_20231129101522.jpg`), whose capture time the name carries is read from it.")
    resume: bool = Field(False, title="Resume", description="Continue the run in `out`, skipping photos already recorded (by name and content hash) "
                                                          "and trying those recorded as errors again.")
