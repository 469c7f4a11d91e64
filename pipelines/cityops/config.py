"""The `cityops:` section of the deployment settings: the city workflows' knobs (docs/city-operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from detect.scenes import TimeZoneName
from detect.taxonomy import ZoneKind


class WarnRule(BaseModel):
    """Which first detections become a warning instead of a case, and when the camera looks again."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] = Field(title="Violation types", description="Types warned first, e.g. shopfront_spillover, illegal_parking.", min_length=1)
    zone_kinds: list[ZoneKind] = Field(
        default_factory=list, title="Zone kinds", description="Only in zones of these kinds (empty: any zone).")
    recheck_after_s: float = Field(
        600.0, title="Re-check after", description="Seconds (media time) between the warning and the camera's re-check.", gt=0)


class WarnConfig(BaseModel):
    """Warn, re-check, then a case (CCTV): off unless `rules` are given."""

    model_config = ConfigDict(extra="forbid")

    rules: list[WarnRule] = Field(default_factory=list, title="Warn first", description="Types and zone kinds warned before a case.")
    webhook_url: HttpUrl | None = Field(
        None, title="Notification webhook",
        description="Each warning is POSTed here as JSON (an SMS / WeCom / DingTalk gateway relays it to the shop); unset: recorded only.")
    token_env: str | None = Field(None, title="Token variable", description="Environment variable whose value is sent as `Authorization: Bearer`.")
    timeout_s: float = Field(5.0, title="Timeout", description="Seconds per webhook request.", gt=0)
    attempts: int = Field(3, title="Attempts", description="Webhook attempts (exponential back-off between them) before the warning is marked not notified.", ge=1, le=10)
    images_dir: Path = Field(Path("streetwatch-data/warnings"), title="Warning images",
                             description="Where the annotated warning frames are kept (shown in the service).")


class CityOpsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: TimeZoneName = Field("Asia/Shanghai", title="Time zone", description="Zone in which call-out months are counted.")
    grid: Path | None = Field(
        None, title="Grid cells", description="GeoJSON of 单元网格 (as for triage) with a `squad` property: call-out counts per squad.")
    warn: WarnConfig = Field(default_factory=WarnConfig, title="Warnings", description="Warn, re-check, then a case.")
    patrol_every_m: Annotated[float, Field(gt=0)] = Field(
        10.0, title="Patrol sampling distance", description="Patrol video: a frame every this many metres driven.")
    patrol_every_s: Annotated[float, Field(gt=0)] = Field(
        5.0, title="Patrol sampling time", description="Patrol video: and at least one frame this many seconds (a stopped car still looks).")
