"""Deployment settings: case store, evidence signing and storage, dispatch targets, the judgement's
defaults (rules, tracking, triage) and the API service.

One YAML/JSON file (`--config`, or `$STREETWATCH_CONFIG`) with one section per concern; every
section has working defaults (SQLite under `streetwatch-data/`, local evidence folder, no dispatch
targets), so a bare checkout runs without one. Secrets (HMAC key, S3 keys, dispatch tokens) are
never in the file: it names the environment variables that hold them. `rules:` and `tracking:`
are the defaults of every camera; a camera in the cameras file changes the fields it sets
(`detect.config_io.overlay`). `streetwatch config schema` writes this file's JSON schema.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from detect.config_io import ConfigModel, load_model
from detect.evidence import EvidenceConfig
from detect.rules import RuleSettings
from detect.tracking import TrackingConfig
from pipelines.cases.store import DEFAULT_URL
from pipelines.dispatch.config import DispatchConfig
from pipelines.evidence_store import EvidenceStoreConfig
from pipelines.triage.settings import TriageOptions

CONFIG_ENV = "STREETWATCH_CONFIG"
URL_KEY_ENV = "STREETWATCH_API_URL_KEY"


class CaseStoreConfig(ConfigModel):
    url: str = Field(DEFAULT_URL, title="Database URL",
                     description="SQLAlchemy URL: sqlite:///path.db (default, WAL) or postgresql+psycopg://user@host/db.",
                     min_length=1)


class JobTriageOptions(TriageOptions):
    """How upload jobs are triaged: as `streetwatch triage`, with 2 workers per job (jobs share the cores)."""

    workers: int = Field(2, title="Workers per job", description="Decode+detect threads of one job.", ge=1, le=64)


class ServiceConfig(ConfigModel):
    """`service:` in the settings file (`streetwatch serve`). Every field has a working default for one machine."""

    data_dir: Path = Field(Path("streetwatch-data/service"), title="Data folder",
                           description="Upload jobs live here (jobs/<id>/input, jobs/<id>/out); never named by a client.")
    max_upload_bytes: int = Field(512 * 2**20, title="Upload limit",
                                  description="Largest upload request (all files together); refused with 413 before it fills the disk.", gt=0)
    max_upload_files: int = Field(1000, title="Files per upload", description="Most files in one upload request.", ge=1)
    job_concurrency: int = Field(1, title="Concurrent jobs",
                                 description="Triage jobs running at once (each uses `triage.workers` threads); the rest wait in order.", ge=1, le=16)
    triage: JobTriageOptions = Field(default_factory=JobTriageOptions, title="Triage", description="How upload jobs are triaged.")
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


class Settings(ConfigModel):
    """The deployment settings file."""

    cases: CaseStoreConfig = Field(default_factory=CaseStoreConfig, title="Case store", description="Where cases live.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, title="Evidence",
                                     description="Bundle contents, time zone, signing key source, privacy copies.")
    evidence_store: EvidenceStoreConfig = Field(default_factory=EvidenceStoreConfig, title="Evidence store",
                                                description="Local folder or S3-compatible storage for bundles.")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig, title="Dispatch",
                                     description="Dispatch targets (cn-dcm, open311) and delivery behaviour.")
    rules: RuleSettings = Field(default_factory=RuleSettings, title="Rules",
                                description="Violation lifecycle knobs for photos and, as defaults, for every camera (a camera's `rules` changes the fields it sets).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, title="Tracking",
                                     description="Tracker defaults for every camera (a camera's `tracking` changes the fields it sets; `frame_rate` follows its `analysis_fps`).")
    triage: TriageOptions = Field(default_factory=TriageOptions, title="Triage",
                                  description="Defaults of `streetwatch triage` (its flags change them per run).")
    service: ServiceConfig = Field(default_factory=ServiceConfig, title="API service",
                                   description="`streetwatch serve`: uploads, jobs, cameras, limits (see docs/service.md).")


def load_settings(path: str | Path | None = None) -> Settings:
    """The settings file given, else `$STREETWATCH_CONFIG`, else the defaults."""
    path = path or os.environ.get(CONFIG_ENV)
    return load_model(Settings, path) if path else Settings()
