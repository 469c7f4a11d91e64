"""The `service:` section of the deployment settings file, as `streetwatch serve` loads it.

The section's model lives with the other sections in `pipelines.settings` (one file, one model,
one JSON schema); errors read `file: service.field: reason` like every config file.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.settings import URL_KEY_ENV, JobTriageOptions, ServiceConfig, Settings, load_settings

__all__ = ["URL_KEY_ENV", "JobTriageOptions", "ServiceConfig", "load_service", "service_config"]


def service_config(settings: Settings, source: str = "settings") -> ServiceConfig:
    """The `service:` section, validated with the rest of the settings (errors already named `source`'s file)."""
    return settings.service


def load_service(path: str | Path | None = None) -> tuple[Settings, ServiceConfig]:
    """Deployment settings and the service section from one file (or $STREETWATCH_CONFIG, or defaults)."""
    settings = load_settings(path)
    return settings, settings.service
