"""Where cases are: grid cells (单元网格) with their street (街道) and squad (中队), and city zones.

Cases store only their grid cell code (cameras take it from the scene, photos from their GPS and
the triage grid file). Streets and squads are facts of the cell, so they come from the city's grid
GeoJSON (`street` and `squad` properties), joined at read time: a cell moved to another squad
moves its whole history with it, and no case row needs rewriting. The same files are the map
layers of the review pages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detect.cityzones import CityZonesFile
from detect.config_io import ConfigError, load_model
from detect.scenes import check_zones, load_scene
from detect.taxonomy import Taxonomy, load_taxonomy
from pipelines.analytics.config import AnalyticsConfig
from pipelines.cctv.config import CamerasFile, file_grades
from pipelines.grid import read_grid_file

Unit = Literal["grid", "street", "squad", "camera"]
UNITS: tuple[Unit, ...] = ("grid", "street", "squad", "camera")
UNIT_NAMES_ZH = {"grid": "网格", "street": "街道", "squad": "中队", "camera": "摄像头"}
NONE_UNIT = "(未标注 none)"  # cases whose cell is unknown, or whose cell has no street/squad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    id: str
    name: str | None = None
    street: str | None = None
    squad: str | None = None


@dataclass
class Places:
    """Grid cells by code and the raw features of both map layers."""

    cells: dict[str, Cell] = field(default_factory=dict)
    grid_features: list[dict[str, Any]] = field(default_factory=list)
    zone_features: list[dict[str, Any]] = field(default_factory=list)
    grid_file: str | None = None  # analytics.grid, when set
    grid_properties: set[str] = field(default_factory=set)  # every property name its cells have (for the error below)
    camera_names: dict[str, str] = field(default_factory=dict)  # camera id -> its scene's `name` (service.cameras_file)
    zone_names: dict[tuple[str, str], str] = field(default_factory=dict)  # (camera id, zone id) -> the zone's `name`

    def camera_label(self, camera_id: str) -> str:
        """`北门路口 (cam-01)`: the camera as staff know it, its id after; the id alone where its scene names none."""
        return _named(self.camera_names.get(camera_id), camera_id)

    def zone_label(self, camera_id: str, zone_id: str) -> str:
        """`北门人行道 (curb)`: a camera's zone as staff know it, its id after; the id alone where it has no name."""
        return _named(self.zone_names.get((camera_id, zone_id)), zone_id)

    def camera_zone_label(self, camera_id: str, zone_id: str | None) -> str:
        """`摄像头 北门路口 (cam-01) · 北门人行道 (curb)`: a camera's zone as the report's hot spots and the scores' road
        markets name it (`-` for no zone)."""
        return f"摄像头 {self.camera_label(camera_id)} · {self.zone_label(camera_id, zone_id) if zone_id else '-'}"

    def cell_label(self, cell_id: str) -> str:
        """`网格 文三路东 (330106001001)`: a grid cell by the name the grid file gives it, its code after."""
        cell = self.cells.get(cell_id)
        return f"网格 {_named(cell.name if cell else None, cell_id)}"

    def unit_label(self, by: Unit, unit: str) -> str:
        """A scored unit as the scores sheet and page show it: a camera by `camera_label` (`score --by camera` listed
        ids staff do not know); a grid cell, street or squad as it is (the codes and names the grid file gives)."""
        return self.camera_label(unit) if by == "camera" and unit != NONE_UNIT else unit

    def street_of(self, cell_id: str | None) -> str | None:
        cell = self.cells.get(cell_id or "")
        return cell.street if cell else None

    def squad_of(self, cell_id: str | None) -> str | None:
        cell = self.cells.get(cell_id or "")
        return cell.squad if cell else None

    def known_units(self, by: Unit) -> list[str]:
        """Every grid cell, street or squad the grid file names (scored at full points when clean), in the file's
        order: the city's own (一中队, 二中队, 三中队), where sorting by code point gave 一中队, 三中队, 二中队."""
        if by == "grid":
            return list(self.cells)
        if by in ("street", "squad"):
            return list(dict.fromkeys(v for c in self.cells.values() if (v := getattr(c, by))))
        return []

    def check_unit(self, by: Unit) -> None:
        """ConfigError when scoring `by` street or squad would file every case under NONE_UNIT because no cell
        names one: a grid file without those properties (a GIS export's 街道/中队 or STREET are not read), or none."""
        if by not in ("street", "squad") or self.known_units(by):
            return
        zh = UNIT_NAMES_ZH[by]  # the scores page shows the reason to city staff as it comes: Chinese first
        if self.grid_file is None:
            raise ConfigError(f"未设置网格文件 analytics.grid，无法按{zh}评分 — analytics.grid is not set: a case's {by} is "
                              f"its grid cell's `{by}` property in that file")
        raise ConfigError(f"{self.grid_file}：网格中没有单元格标明{zh}（属性 `{by}`），无法按{zh}评分 — {self.grid_file}: no cell "
                          f"names its {by} (property `{by}`; the cells have: {', '.join(sorted(self.grid_properties))}), "
                          f"so every case would count under {NONE_UNIT}")

    def cells_where(self, *, streets: list[str] | None = None, squads: list[str] | None = None) -> set[str]:
        """Codes of the cells in any of `streets` (and any of `squads`)."""
        return {c.id for c in self.cells.values()
                if (not streets or c.street in streets) and (not squads or c.squad in squads)}

    def layer(self, name: Literal["grid", "zones"]) -> list[dict[str, Any]]:
        return self.grid_features if name == "grid" else self.zone_features


def _named(name: str | None, id: str) -> str:
    return f"{name} ({id})" if name and name != id else id


def _camera_names(places: Places, cameras_file: Path, taxonomy: Taxonomy) -> None:
    """The names of the cameras and their zones in `cameras_file`'s scenes, for the report's hot spots (cases keep ids
    only). A camera disabled now still names its past cases; a scene that cannot be read leaves its camera's cases
    under their ids, with a warning naming the file and why (a report is not stopped for a label)."""
    try:
        file = load_model(CamerasFile, cameras_file)
        grades = file_grades(file, cameras_file, taxonomy)
    except ConfigError as exc:
        log.warning("service.cameras_file: %s; the report names cameras and zones by their ids", exc)
        return
    for cfg in file.cameras:
        try:
            scene = load_scene(cameras_file.parent / cfg.scene, taxonomy, grades)
        except ConfigError as exc:
            log.warning("camera %s: scene refused: %s; the report names it and its zones by their ids", cfg.id, exc)
            continue
        if scene.name:
            places.camera_names[cfg.id] = scene.name
        places.zone_names |= {(cfg.id, z.id): z.name for z in scene.zones if z.name}


def load_places(config: AnalyticsConfig, taxonomy: Taxonomy | None = None, cameras_file: Path | None = None) -> Places:
    """Validate and load the configured grid and zone files (errors name file, feature and reason), and the names of
    the cameras and zones in `cameras_file` (the settings' `service.cameras_file`), when given."""
    places = Places()
    if cameras_file is not None:
        _camera_names(places, cameras_file, taxonomy or load_taxonomy())
    if config.grid is not None:
        grid = read_grid_file(config.grid)
        places.grid_file = str(config.grid)
        for f in grid.features:
            p = f.properties
            places.grid_properties |= p.model_fields_set
            places.cells[p.id] = Cell(p.id, p.name, p.street, p.squad)
            places.grid_features.append({"type": "Feature", "geometry": f.geometry, "properties": {
                "id": p.id, "name": p.name, "street": p.street, "squad": p.squad}})
    if config.zones is not None:
        zones = load_model(CityZonesFile, config.zones)
        check_zones([f.properties for f in zones.features], taxonomy or load_taxonomy(), str(config.zones), "features.{i}.properties")
        for f in zones.features:
            z = f.properties
            places.zone_features.append({"type": "Feature", "geometry": f.geometry, "properties": {
                "id": z.id, "name": z.name, "kind": str(z.kind)}})
    return places
