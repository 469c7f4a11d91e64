"""The benchmark result file: one pydantic model, so results are written and read back the same way.

A record holds the run's configuration, the full environment, the model's identity and digest,
the benchmark images, and per suite a list of variant results. Every suite fills the same
`VariantResult` fields (latency, throughput, stage split, accuracy, flags) and puts what only it
measures into `extra`, so the Markdown table and `--compare` work for every suite alike.
Reading goes through `detect.config_io`, so a damaged file is refused with file, field and reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from detect.config_io import load_model

SCHEMA = "streetwatch-bench/1"
Status = Literal["ok", "skipped", "error"]


class Latency(BaseModel):
    """Milliseconds per call (one call = one batch for the model suite)."""

    p50: float = Field(title="Median", ge=0)
    p90: float = Field(title="90th percentile", ge=0)
    p99: float = Field(title="99th percentile", ge=0)
    mean: float = Field(title="Mean", ge=0)
    min: float = Field(title="Fastest", ge=0)
    max: float = Field(title="Slowest", ge=0)


class Accuracy(BaseModel):
    """Agreement of a variant's detections with its fp32 reference on the benchmark images."""

    reference: str = Field(title="Reference variant", description="Key of the variant compared against.")
    iou: float = Field(0.5, title="IoU threshold", gt=0, le=1)
    ref_boxes: int = Field(title="Reference boxes", ge=0)
    test_boxes: int = Field(title="Variant boxes", ge=0)
    matched: int = Field(title="Matched boxes", ge=0)
    recall: float = Field(title="Recall", description="Share of reference boxes the variant found.", ge=0, le=1)
    precision: float = Field(title="Precision", description="Share of the variant's boxes the reference has.", ge=0, le=1)
    min_iou: float = Field(title="Lowest IoU of a matched pair", ge=0, le=1)
    max_conf_diff: float = Field(title="Largest confidence change of a matched pair", ge=0)


class ModelFile(BaseModel):
    """Which file a variant ran, and its digest (the weights are not in the repository)."""

    id: str = Field(title="Model id")
    file: str = Field(title="File name")
    sha256: str = Field(title="SHA-256", pattern=r"^[0-9a-f]{64}$")


class VariantResult(BaseModel):
    """One measured configuration of one suite (or the reason it could not run)."""

    suite: str = Field(title="Suite")
    key: str = Field(title="Key", description="Unique within the suite; how --compare pairs results.")
    params: dict[str, str | int | float | bool | None] = Field(title="Parameters", description="What was varied.")
    status: Status = Field(title="Status")
    reason: str | None = Field(None, title="Reason", description="Why the variant was skipped or failed.")
    model: ModelFile | None = Field(None, title="Model file")
    iterations: int = Field(0, title="Timed calls", ge=0)
    items: int = Field(0, title="Items processed in the timed calls", ge=0)
    seconds: float = Field(0.0, title="Timed seconds", ge=0)
    latency_ms: Latency | None = Field(None, title="Latency per call (ms)")
    throughput: float | None = Field(None, title="Throughput", description="Items per second.", ge=0)
    unit: str = Field("images/s", title="Throughput unit")
    stages_ms: dict[str, float] = Field(default_factory=dict, title="Stage split", description="ms per item per stage.")
    outside_model_fraction: float | None = Field(None, title="Time outside the model", ge=0, le=1)
    accuracy: Accuracy | None = Field(None, title="Accuracy check")
    flags: list[str] = Field(default_factory=list, title="Flags", description="e.g. inaccurate, fast-but-wrong.")
    extra: dict[str, Any] = Field(default_factory=dict, title="Suite-specific figures")


class SuiteResult(BaseModel):
    status: Status = Field(title="Status")
    reason: str | None = Field(None, title="Reason", description="Why the whole suite was skipped or failed.")
    results: list[VariantResult] = Field(default_factory=list, title="Variant results")


class ImageInfo(BaseModel):
    name: str = Field(title="File name")
    width: int = Field(title="Width", gt=0)
    height: int = Field(title="Height", gt=0)
    sha256: str = Field(title="SHA-256 of the file", pattern=r"^[0-9a-f]{64}$")


class BenchRecord(BaseModel):
    """A whole `streetwatch bench` run."""

    schema_: Literal["streetwatch-bench/1"] = Field(SCHEMA, alias="schema", title="Format version")
    created: str = Field(title="Created (UTC, ISO 8601)")
    command: str = Field(title="Command line")
    config: dict[str, Any] = Field(title="Configuration")
    environment: dict[str, Any] = Field(title="Environment", description="benchmarks.environment.environment().")
    model: ModelFile = Field(title="Base model")
    images: list[ImageInfo] = Field(title="Benchmark images")
    suites: dict[str, SuiteResult] = Field(title="Suites")

    model_config = {"populate_by_name": True}

    def variants(self) -> list[VariantResult]:
        return [v for s in self.suites.values() for v in s.results]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2, by_alias=True) + "\n", encoding="utf-8")


def load_record(path: Path) -> BenchRecord:
    """Read a result file; `ConfigError` names the file, the field and the reason when it is unusable."""
    return load_model(BenchRecord, path)
