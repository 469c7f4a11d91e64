"""The `service:` section of the deployment settings file: what `streetwatch serve` needs besides
the case store, evidence and dispatch sections it shares with every other command.

Validated here (not in `pipelines.settings`) so that commands which never serve do not import
the triage pipeline's models. Errors read `file: service.field: reason` like every config file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from detect.config_io import ConfigError
from pipelines.settings import Settings, load_settings
from pipelines.triage.settings import ocr_from_yaml

URL_KEY_ENV = "STREETWATCH_API_URL_KEY"


class TriageJobSettings(BaseModel):
    """How uploaded photos are triaged: the same knobs as `streetwatch triage` (out/resume are per job)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("yolo11n", title="Model", description="Model id or weight file.")
    backend: str = Field("onnx", title="Backend", description="onnx or torch.")
    device: str = Field("cpu", title="Device", description="cpu or cuda[:N].")
    conf: float = Field(0.25, title="Detector confidence", description="Detections below this are dropped.", ge=0, le=1)
    imgsz: int = Field(640, title="Input size", description="Network input size.", gt=0, multiple_of=32)
    workers: int = Field(2, title="Workers per job", description="Decode+detect threads of one job.", ge=1, le=64)
    ocr: Annotated[str, BeforeValidator(ocr_from_yaml)] = Field(
        "auto", title="OCR", description="auto, all or off (see docs/triage.md); `off` may be left unquoted.",
        pattern="^(auto|all|off)$")
    timezone: str = Field("Asia/Shanghai", title="Time zone", description="Zone of EXIF times without an offset.")
    scene_zones: Path | None = Field(None, title="City zones", description="GeoJSON of city-wide zones for photos with GPS.")
    grid: Path | None = Field(None, title="Grid cells", description="GeoJSON of 单元网格 polygons with an `id` property.")
    cases: bool | None = Field(
        None, title="Write cases", description="Write candidate cases (true/false; null = when the evidence key is set).")


class ServiceConfig(BaseModel):
    """`service:` in the settings file. Every field has a working default for one machine."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(Path("streetwatch-data/service"), title="Data folder",
                           description="Upload jobs live here (jobs/<id>/input, jobs/<id>/out); never named by a client.")
    max_upload_bytes: int = Field(512 * 2**20, title="Upload limit",
                                  description="Largest upload request (all files together); refused with 413 before it fills the disk.", gt=0)
    max_upload_files: int = Field(1000, title="Files per upload", description="Most files in one upload request.", ge=1)
    job_concurrency: int = Field(1, title="Concurrent jobs",
                                 description="Triage jobs running at once (each uses `triage.workers` threads); the rest wait in order.", ge=1, le=16)
    triage: TriageJobSettings = Field(default_factory=TriageJobSettings, title="Triage", description="How upload jobs are triaged.")
    cameras_file: Path | None = Field(None, title="Cameras file",
                                      description="The cameras file `streetwatch watch --cameras` runs (cameras and their scene files).")
    camera_events: Path | None = Field(None, title="Camera events",
                                       description="The JSON-lines file `streetwatch watch --events` appends to: camera status and health are read from it.")
    snapshot_dir: Path | None = Field(None, title="Snapshot folder",
                                      description="Folder where a watcher writes the latest frame per camera as <camera id>.jpg.")
    cors_origins: list[str] = Field(default_factory=list, title="CORS origins",
                                    description="Origins allowed to call the API from a browser (default: none; the pages are same-origin).")
    url_key_env: str = Field(URL_KEY_ENV, title="URL key variable",
                             description="Environment variable with the key signing evidence URLs; unset: a random key per process.")
    url_expiry_s: int = Field(900, title="Evidence URL lifetime", description="Seconds a signed evidence URL stays valid.", gt=0, le=7 * 24 * 3600)
    default_page_size: int = Field(50, title="Page size", description="Cases per page when the client does not say.", ge=1, le=500)

    def url_key(self) -> bytes | None:
        value = os.environ.get(self.url_key_env)
        return value.encode() if value else None

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


def service_config(settings: Settings, source: str = "settings") -> ServiceConfig:
    """The validated `service:` section (ConfigError naming the file and field when it is wrong)."""
    try:
        return ServiceConfig.model_validate(settings.service)
    except ValidationError as exc:  # same shape as every config error: file: service.field: reason
        raise ConfigError("\n".join(f"{source}: service.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                     for e in exc.errors())) from None


def load_service(path: str | Path | None = None) -> tuple[Settings, ServiceConfig]:
    """Deployment settings and the service section from one file (or $STREETWATCH_CONFIG, or defaults)."""
    settings = load_settings(path)
    source = str(path or os.environ.get("STREETWATCH_CONFIG") or "defaults")
    return settings, service_config(settings, source)

