"""Deployment settings for the case side: case store URL, evidence signing and storage, dispatch targets.

One YAML/JSON file (`--config`, or `$STREETWATCH_CONFIG`) with one section per concern; every
section has working defaults (SQLite under `streetwatch-data/`, local evidence folder, no dispatch
targets), so a bare checkout runs without one. Secrets (HMAC key, S3 keys, dispatch tokens) are
never in the file: it names the environment variables that hold them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from detect.config_io import load_model
from detect.evidence import EvidenceConfig
from pipelines.analytics.config import AnalyticsConfig
from pipelines.cases.store import DEFAULT_URL
from pipelines.cityops.config import CityOpsConfig
from pipelines.dispatch.config import DispatchConfig
from pipelines.evidence_store import EvidenceStoreConfig

CONFIG_ENV = "STREETWATCH_CONFIG"


class CaseStoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(DEFAULT_URL, title="Database URL",
                     description="SQLAlchemy URL: sqlite:///path.db (default, WAL) or postgresql+psycopg://user@host/db.",
                     min_length=1)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: CaseStoreConfig = Field(default_factory=CaseStoreConfig, title="Case store", description="Where cases live.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, title="Evidence",
                                     description="Bundle contents, time zone, signing key source, privacy copies.")
    evidence_store: EvidenceStoreConfig = Field(default_factory=EvidenceStoreConfig, title="Evidence store",
                                                description="Local folder or S3-compatible storage for bundles.")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig, title="Dispatch",
                                     description="Dispatch targets (cn-dcm, open311) and delivery behaviour.")
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig, title="Analytics",
                                       description="Scores, reports, exports and the map: grid and zone files, sheet, reports folder.")
    cityops: CityOpsConfig = Field(default_factory=CityOpsConfig, title="City workflows",
                                   description="Warnings before cases, call-out list, patrol video (docs/city-operations.md).")
    # Validated by `streetwatch serve` (api.config.ServiceConfig), so commands that never serve do not
    # import the API's models; `pipelines` never imports `api`.
    service: dict[str, Any] = Field(default_factory=dict, title="API service",
                                    description="`streetwatch serve`: uploads, jobs, cameras, limits (see docs/service.md).")


def load_settings(path: str | Path | None = None) -> Settings:
    """The settings file given, else `$STREETWATCH_CONFIG`, else the defaults."""
    path = path or os.environ.get(CONFIG_ENV)
    return load_model(Settings, path) if path else Settings()
