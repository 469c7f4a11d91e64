"""The `service:` section of the deployment settings file, as `streetwatch serve` loads it.

The section's model lives with the other sections in `pipelines.settings` (one file, one model,
one JSON schema); errors read `file: service.field: reason` like every config file.
"""

from __future__ import annotations

from pathlib import Path

from detect import cityzones
from detect.config_io import ConfigError, load_model
from detect.registry import named_model_dirs
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
    """(name, file) of the files and folders the service's settings lead to that no setting names itself, for
    `Settings.named_by_setting`'s `files`: each camera's scene and the cameras' road grades file
    (`service.cameras_file`: `scene file of camera cam-01`), the map zones' grades file (`service.triage.scene_zones`:
    `grades file of service.triage.scene_zones`), the verifier's card and the model folders it is looked for in
    (`service.triage.verifier`, `models`, `$STREETWATCH_MODELS`). The one list a 503's error
    (`AppContext.config_error`) and a failed job's (`api.jobs.as_uploaded`) are named by, so neither shows the server's
    path. Nothing for a file that cannot be read itself (its own error is named by its setting)."""
    files = []
    if service.cameras_file is not None:
        try:
            files += cctv_config.named_files(load_model(cctv_config.CamerasFile, service.cameras_file), service.cameras_file)
        except ConfigError:
            pass
    if service.triage.scene_zones is not None:
        files += cityzones.named_files(service.triage.scene_zones, "service.triage.scene_zones")
    return files + _verifier_files(service.triage.verifier)


def _verifier_files(verifier: str | None) -> list[tuple[str, Path]]:
    """(name, path) of the verifier's card when the setting is a path, its folder (where its weights are) and the model
    folders (`detect.registry.named_model_dirs`), which the verifier's errors name (`verifier 'street-v9' not found in
    /srv/.../models/verifiers`)."""
    files = named_model_dirs()
    if verifier is not None and Path(verifier).suffix in (".yaml", ".yml"):
        files += [("service.triage.verifier", Path(verifier)), ("folder of service.triage.verifier", Path(verifier).parent)]
    return files
