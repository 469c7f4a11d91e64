"""What every benchmark suite receives: the validated configuration and the decoded images."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field, PositiveInt, field_validator

#: Suite name -> module holding `run(ctx)` (`benchmarks.suites`); the order is the order of `--suite all`.
SUITES: dict[str, str] = {
    "model": "benchmarks.suites.model",
    "triage": "benchmarks.suites.triage",
    "cctv": "benchmarks.suites.cctv",
}


class BenchConfig(BaseModel):
    """Options of one `streetwatch bench` run (validated like every config: field and reason)."""

    suites: list[str] = Field(["model"], title="Suites", description="Names in SUITES.", min_length=1)
    model: str = Field("yolo11n", title="Model", description="Registry id or .pt/.onnx file.")
    backends: list[Literal["onnx", "torch"]] = Field(["onnx", "torch"], title="Backends", min_length=1)
    devices: list[str] = Field(["cpu"], title="Devices", description="cpu, cuda[:N], tensorrt (onnx only).", min_length=1)
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(["fp32"], title="Precisions", min_length=1)
    batches: list[PositiveInt] = Field([1, 8], title="Batch sizes", min_length=1)
    imgsz: list[Annotated[int, Field(gt=0, multiple_of=32)]] = Field([640], title="Image sizes", min_length=1)
    duration_s: float = Field(10.0, title="Seconds per variant", description="Timed run length unless count is set.", gt=0)
    count: PositiveInt | None = Field(None, title="Calls per variant", description="Exact number of timed calls; wins over duration.")
    warmup: int = Field(3, title="Warm-up calls", ge=0)
    input: Literal["square", "rect"] = Field(
        "square", title="Input shape",
        description="square: every batch is a real batch at imgsz x imgsz; rect: stride-aligned rectangles "
        "(the CPU default in production), so mixed aspect ratios split a batch into several network calls.")
    conf: float = Field(0.25, title="Confidence threshold", ge=0, le=1)
    iou: float = Field(0.7, title="NMS IoU threshold", gt=0, le=1)
    threads: PositiveInt | None = Field(None, title="CPU threads", description="Intra-op threads; library default when unset.")
    torch_compile: Literal["default", "reduce-overhead", "max-autotune"] | None = Field(
        None, title="torch.compile mode", description="reduce-overhead records CUDA graphs.")
    device_preprocess: bool | None = Field(
        None, title="Letterbox on the device", description="Torch backend; default: on for CUDA, off for CPU.")
    min_agreement: float = Field(0.9, title="Accuracy floor",
                                 description="Recall and precision vs the fp32 reference below this flag a variant.", ge=0, le=1)
    max_images: PositiveInt = Field(16, title="Images used at most")

    @field_validator("suites")
    @classmethod
    def _known_suites(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in SUITES:
                raise ValueError(f"unknown suite '{name}' (choose from {', '.join(SUITES)})")
        return names

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, devices: list[str]) -> list[str]:
        for d in devices:
            if d not in ("cpu", "tensorrt") and not (d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit())):
                raise ValueError(f"unknown device '{d}' (use cpu, cuda, cuda:N or tensorrt)")
        return devices


@dataclass
class BenchContext:
    """Handed to each suite: configuration, the same real images for every variant, a scratch folder."""

    config: BenchConfig
    files: list[Path]
    images: list[np.ndarray]
    log: Callable[[str], None] = print
    #: Suites keep what they build once per run here (e.g. the model suite's INT8 exports).
    cache: dict = field(default_factory=dict)
    _workdir: Path | None = field(default=None, repr=False)

    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="sw-bench-"))
        return self._workdir

    def calibration_dir(self) -> Path:
        """A folder holding (links to) the benchmark images, for INT8 calibration."""
        folder = self.workdir() / "calib"
        if not folder.is_dir():
            folder.mkdir()
            for i, f in enumerate(self.files):
                (folder / f"{i:03d}-{f.name}").symlink_to(f.resolve())
        return folder

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
