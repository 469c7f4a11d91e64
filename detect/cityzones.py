"""City-wide zones on the map (GeoJSON, lon/lat) for photos that carry GPS but no camera scene.

An inspector's phone photo has no fixed camera and so no image polygons; if the city publishes
its no-parking streets or permitted vending points as GeoJSON, the photo's GPS position puts the
whole photo in those zones. Each Feature is a Polygon or MultiPolygon whose `properties` are the
same zone fields a scene zone has (id, kind, schedule, types, thresholds); a top-level
`timezone` member (a GeoJSON foreign member) gives the schedules' time zone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import shapely
from pydantic import BaseModel, ConfigDict, Field, field_validator
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from detect.config_io import ConfigError, load_model
from detect.frames import GeoPoint
from detect.grades import apply_grades, load_grades
from detect.scenes import TimeZoneName, ZoneRules, check_zones, checked_shape, follow_zone, refusal
from detect.taxonomy import Taxonomy, load_taxonomy


def geometry_of(geom: dict[str, Any]) -> BaseGeometry:
    """A valid lon/lat Polygon/MultiPolygon, or a refusal (a ValueError) saying why not, Chinese first as a camera's
    polygon says it (`scenes.refusal`): staff read it on the upload pages and in the register import."""
    if not isinstance(geom, dict) or geom.get("type") not in ("Polygon", "MultiPolygon"):
        got = geom.get("type") if isinstance(geom, dict) else type(geom).__name__
        raise refusal("几何类型应为 Polygon 或 MultiPolygon，现为 {got} — geometry must be a Polygon or MultiPolygon, got {got}",
                      got=str(got))
    try:
        shp = shape(geom)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise refusal("坐标无法读取（{why}） — bad coordinates: {why}", why=str(exc)) from None
    minx, miny, maxx, maxy = shp.bounds
    if not shp.is_empty and not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise refusal("坐标超出经度 [-180, 180] / 纬度 [-90, 90]（范围 {bounds}；应先写经度后写纬度） — "
                      "coordinates outside lon [-180, 180] / lat [-90, 90]: bounds {bounds}", bounds=str(shp.bounds))
    return checked_shape(shp)


class GeoFeature(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["Feature"] = Field(title="Type", description="GeoJSON object type.")
    geometry: dict[str, Any] = Field(title="Geometry", description="Polygon or MultiPolygon in lon/lat (WGS-84).")
    properties: ZoneRules = Field(title="Zone", description="Zone fields: id, kind, schedule, types, thresholds.")

    @field_validator("geometry")
    @classmethod
    def _valid_geometry(cls, geom: dict[str, Any]) -> dict[str, Any]:
        geometry_of(geom)
        return geom


class CityZonesFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["FeatureCollection"] = Field(title="Type", description="GeoJSON object type.")
    timezone: TimeZoneName = Field("Asia/Shanghai", title="Time zone", description="IANA time zone of the zone schedules; default: the caller's (triage's `timezone`), else Asia/Shanghai.")
    grades: Path | None = Field(None, title="Road grades file", description="The city's grades file (relative to this file) for zones with a `grade`; default: the shipped one.")
    features: list[GeoFeature] = Field(title="Features", description="One feature per zone.")


class CityZones:
    """Map zones with a point lookup."""

    def __init__(self, data: CityZonesFile) -> None:
        self.timezone = data.timezone
        self.zones = [f.properties for f in data.features]
        self._shapes = [geometry_of(f.geometry) for f in data.features]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def at(self, point: GeoPoint) -> list[ZoneRules]:
        """Zones whose area contains (or touches) the point, smallest (most specific) first."""
        hits = [(s.area, i) for i, s in enumerate(self._shapes) if shapely.intersects_xy(s, point.lon, point.lat)]
        return [self.zones[i] for _, i in sorted(hits)]


def load_city_zones(path: str | Path, taxonomy: Taxonomy | None = None, timezone: str | None = None) -> CityZones:
    """Load a GeoJSON FeatureCollection of zones; errors name file, feature and reason.

    `timezone`: the schedules' time zone when the file names none (a triage run's `--timezone`: a city
    outside China would otherwise have its `07:00`-`21:00` checked in Shanghai time); default Asia/Shanghai.
    """
    data = load_model(CityZonesFile, path)
    follow_zone(data, timezone)
    taxonomy = taxonomy or load_taxonomy()
    zones = [f.properties for f in data.features]
    check_zones(zones, taxonomy, str(path), "features.{i}.properties")
    if any(z.grade for z in zones):
        apply_grades(zones, load_grades(grades_file(data, path), taxonomy), str(path), "features.{i}.properties")
    return CityZones(data)


def grades_file(data: CityZonesFile, path: str | Path) -> Path | None:
    """The road grades file the map-zones file at `path` names (its `grades`, relative to it); None: the shipped one."""
    return Path(path).parent / data.grades if data.grades else None


def named_files(path: str | Path, setting: str) -> list[tuple[str, Path]]:
    """(name, file) of the files the map-zones file that `setting` names at `path` names itself (its grades file), as
    the API names them in what it answers, never by their server path (`Settings.named_by_setting`), as the cameras
    file's are (`pipelines.cctv.config.named_files`). Nothing while the zones file cannot be read (its own error is named
    by `setting`)."""
    try:
        file = grades_file(load_model(CityZonesFile, path), path)
    except ConfigError:
        return []
    return [(f"grades file of {setting}", file)] if file else []
