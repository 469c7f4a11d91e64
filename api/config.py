"""The `service:` section of the deployment settings file, as `streetwatch serve` loads it.

The section's model lives with the other sections in `pipelines.settings` (one file, one model,
one JSON schema); errors read `file: service.field: reason` like every config file.
"""

from __future__ import annotations

from pathlib import Path

from detect import cityzones
from detect.config_io import ConfigError, load_model
from pipelines.cctv import config as cctv_config
from pipelines.settings import URL_KEY_ENV, JobTriageOptions, ServiceConfig, Settings, load_settings

__all__ = ["URL_KEY_ENV", "JobTriageOptions", "ServiceConfig", "load_service", "named_files", "service_config"]


def service_config(settings: Settings, source: str = "settings") -> ServiceConfig:
    """The `service:` section, validated with the rest of the settings (errors already named `source`'s file)."""
    return settings.service


def load_service(path: str | Path | None = None) -> tuple[Settings, ServiceConfig]:
    """Deployment settings and the service section from one file (or $STREETWATCH_CONFIG, or defaults)."""
    settings = load_settings(path)
    return settings, settings.service


def named_files(service: ServiceConfig) -> list[tuple[str, Path]]:
    """(name, file) of the files the service's own input files name, for `Settings.named_by_setting`'s `files`: each
    camera's scene and the cameras' road grades file (`service.cameras_file`: `scene file of camera cam-01`), the map
    zones' grades file (`service.triage.scene_zones`: `grades file of service.triage.scene_zones`). The one list both
    a 503's error (`AppContext.config_error`) and a failed job's (`api.jobs.as_uploaded`) are named by, so neither
    shows the server's path. Nothing for a file that cannot be read itself (its own error is named by its setting)."""
    files = []
    if service.cameras_file is not None:
        try:
            files += cctv_config.named_files(load_model(cctv_config.CamerasFile, service.cameras_file), service.cameras_file)
        except ConfigError:
            pass
    if service.triage.scene_zones is not None:
        files += cityzones.named_files(service.triage.scene_zones, "service.triage.scene_zones")
    return files
