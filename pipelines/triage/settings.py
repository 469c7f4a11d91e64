"""Triage settings: one typed model, so the CLI, the docs, the service and the benchmark share the defaults.

`TriageOptions` are the knobs a settings file may hold (`triage:` for `streetwatch triage`,
`service.triage:` for upload jobs); `TriageSettings` adds what belongs to one run (its output
folder, resume, dispatch target).
"""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from detect.config_io import ConfigModel
from pipelines.triage.text import OcrMode


class TriageOptions(ConfigModel):
    """How photos are triaged: detector, OCR, zones, grouping, report (the `triage:` settings section)."""

    model: str | None = Field(
        None, title="Model", description="Model id or weight file; none: the promoted model (`streetwatch models promote`), else yolo11n.")
    backend: str = Field("onnx", title="Backend", description="onnx or torch.")
    device: str = Field("cpu", title="Device", description="cpu or cuda[:N].")
    conf: float = Field(0.25, title="Detector confidence", description="Detections below this are dropped before the rules.", ge=0, le=1)
    imgsz: int = Field(640, title="Input size", description="Network input size; photos are decoded straight to about this size.", gt=0, multiple_of=32)
    workers: int = Field(
        default_factory=lambda: min(8, os.cpu_count() or 1), title="Workers",
        description="Threads that each read, decode and detect photos (parallel inference streams); default one per core, at most 8.",
        ge=1, le=64,
    )
    ocr: OcrMode = Field(
        OcrMode.AUTO, title="OCR", description="Read text and phone numbers: auto (photos with text-bearing detections), all, or off."
    )
    ocr_max_side: int = Field(1600, title="OCR resolution", description="Long side of the decode that OCR reads.", ge=320, le=8192)
    timezone: str = Field("Asia/Shanghai", title="Time zone", description="Zone of EXIF times that carry no UTC offset, and of the report.")
    scene_zones: Path | None = Field(None, title="City zones", description="GeoJSON of city-wide zones (no-parking streets, vending points) for photos with GPS.")
    grid: Path | None = Field(None, title="Grid cells", description="GeoJSON of 单元网格 polygons with an `id` property.")
    group_window_s: float = Field(1800, title="Grouping window", description="Photos of one type taken at most this many seconds apart may be one case.", ge=0)
    group_radius_m: float = Field(30, title="Grouping radius", description="...and, when both have GPS, at most this many metres apart.", ge=0)
    group_phash_bits: int = Field(
        12, title="Grouping hash distance", description="...or, without GPS, perceptual hashes differing in at most this many of 64 bits.", ge=0, le=64
    )
    thumb_side: int = Field(360, title="Thumbnail size", description="Long side of report thumbnails in pixels.", ge=64, le=2048)
    report_max_cases: int = Field(
        1000, title="Cases with thumbnails", description="The report embeds thumbnails for this many top cases; the rest are listed without.", ge=0
    )
    cases: bool | None = Field(
        None, title="Write cases",
        description="Write candidate cases with evidence bundles to the case store: true, false, or null = when an evidence key is set.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class TriageSettings(TriageOptions):
    """Everything a triage run needs besides its inputs."""

    out: Path = Field(Path("triage-out"), title="Output folder", description="Where report.html, results.jsonl, cases.csv and thumbnails go.")
    dispatch_target: str | None = Field(
        None, title="Dispatch target", description="Queue every case for this dispatch target (the outbox) as soon as its evidence is stored."
    )
    resume: bool = Field(False, title="Resume", description="Continue the run in `out`, skipping photos already recorded (by content hash).")
