"""The `analytics:` section of the deployment settings: map layers, the scoring sheet, number
status for quotas, where reports go, and the local time zone periods are cut in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from detect.config_io import ConfigModel
from detect.scenes import TimeZoneName


class AnalyticsConfig(ConfigModel):
    """Map layers, scoring sheet, number status and reports folder of `streetwatch score/report` and the service."""

    timezone: TimeZoneName = Field(
        "Asia/Shanghai", title="Time zone",
        description="IANA zone in which days, weeks, months and hours of day are counted (a day starts at local midnight) "
                    "and the pages show times; default: the settings' `timezone`.")
    grid: Path | None = Field(
        None, title="Grid cells",
        description="GeoJSON of 单元网格 polygons (usually the file triage uses): property `id`, optional `name`, "
                    "`street` (街道) and `squad` (中队). Streets and squads of cases come from here.")
    zones: Path | None = Field(
        None, title="City zones", description="GeoJSON of city zones (the triage `scene_zones` format), drawn on the map.")
    sheet: Path | None = Field(
        None, title="Scoring sheet",
        description="Assessment sheet the service scores with (/api/v1/scores); default: the shipped example sheet.")
    cutoffs: Path | None = Field(
        None, title="Number status file",
        description="CSV or Excel file of phone numbers cut off (停机) and when, for quota items; without it (and without "
                    "`number_status: callout`) quotas are not scored.")
    number_status: Literal["file", "callout"] = Field(
        "file", title="Number status source",
        description="Where quota items learn which numbers were cut off: `file` (the `cutoffs` CSV) or `callout` "
                    "(the service's call-out list, docs/city-operations.md).")
    reports_dir: Path = Field(
        Path("streetwatch-data/reports"), title="Reports folder",
        description="`streetwatch report` writes here by default (one folder per period); the service lists it.")
    tile_url: str | None = Field(
        None, title="Map tile URL",
        description="Optional XYZ tile URL template (e.g. http://tiles.internal/{z}/{x}/{y}.png) drawn under the polygons; "
                    "unset: only the city's own polygons are drawn (works offline).", pattern=r"^https?://.*\{z\}.*")
    tile_attribution: str = Field("", title="Tile attribution", description="Credit line shown with the tiles.")
    map_days: int = Field(
        30, ge=1, le=3660, title="Map default period (days)",
        description="/api/v1/map and /ui/map without a period count the cases opened in the last this many days (today "
                    "and the days before it, local time), so a city with years of cases does not load them all.")
    map_max_cases: int = Field(
        20000, ge=1, title="Map case cap",
        description="The map and its case lists (a cell or zone clicked) count at most this many cases, the newest; when "
                    "more match, the answer says so (`truncated`) and /ui/map shows it.")
