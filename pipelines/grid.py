"""Which 单元网格 (unit grid cell) a GPS point lies in, from the city's GeoJSON of cells.

Digital urban-management platforms file every case under a grid cell (the ~10,000 m² block a
grid inspector is responsible for). Cities publish the cells as polygons; a district has a few
thousand, so the lookup uses shapely's STR-tree instead of testing every polygon per photo.

Shared by photo triage (the cell of each photo) and the analytics (streets and squads of cells,
the map's grid layer), so it belongs to neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import shapely
from pydantic import BaseModel, ConfigDict, Field, field_validator

from detect.cityzones import GeoFeature
from detect.cityzones import geometry_of as valid_polygon
from detect.config_io import ConfigError, load_model
from detect.frames import GeoPoint
from detect.grades import Grade, Grades, load_grades
from detect.scenes import IdKind, check_unique_ids
from detect.taxonomy import Taxonomy

CELL_IDS = IdKind("网格", "cell", "案件按网格编号归档，其街道、中队与道路等级也按编号查找",
                  "a case is filed under its cell's id, and the cell's street, squad and grade are found by it",
                  "（一个网格有几块的，写成一个 MultiPolygon）", " (a cell of several parts is one MultiPolygon feature)")


class GridCellProperties(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(title="Cell code", description="The 单元网格 code used by the dispatch platform (e.g. 330102001001).", min_length=1)
    name: str | None = Field(None, title="Cell name", description="Human-readable name of the cell.")
    # Read by the analytics (scores and reports by street or squad; docs/analytics.md), not by triage.
    street: str | None = Field(None, title="Street (街道)", description="The street / sub-district the cell belongs to (街长制).")
    squad: str | None = Field(None, title="Squad (中队)", description="The enforcement squad responsible for the cell.")
    grade: str | None = Field(None, title="Road grade", description="Grade id of the cell's streets (道路分级: main, secondary, lane ... of "
                              "the grades file): photos judged as a whole in this cell get the grade's types and thresholds.")

    @field_validator("id", mode="before")
    @classmethod
    def _code_as_text(cls, value: Any) -> Any:
        """Cell codes are often written as JSON numbers; they are identifiers, so keep them as text."""
        return str(value) if isinstance(value, int) else value


class GridCellFeature(GeoFeature):
    """A polygon feature validated like a city zone's, with cell properties instead of zone rules."""

    properties: GridCellProperties = Field(title="Cell", description="Cell code (`id`) and optional `name`.")


class GridFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["FeatureCollection"] = Field(title="Type", description="GeoJSON object type.")
    grades: Path | None = Field(None, title="Road grades file", description="The city's grades file (relative to this file) for cells "
                                "with a `grade`; default: the shipped one.")
    features: list[GridCellFeature] = Field(title="Cells", description="One feature per grid cell.", min_length=1)


class GridCells:
    """Point -> cell code lookup."""

    def __init__(self, data: GridFile, grades: Grades | None = None) -> None:
        self.codes = [f.properties.id for f in data.features]
        self._grades = [grades.grades[f.properties.grade] if grades and f.properties.grade else None for f in data.features]
        self._shapes = [valid_polygon(f.geometry) for f in data.features]
        self._tree = shapely.STRtree(self._shapes)

    def __len__(self) -> int:
        return len(self.codes)

    def at(self, point: GeoPoint) -> str | None:
        """Code of the cell containing the point (the smallest if cells overlap), else None."""
        i = self._index(point)
        return None if i is None else self.codes[i]

    def cell_at(self, point: GeoPoint) -> tuple[str, Grade | None] | None:
        """Code and road grade (None: ungraded) of the cell containing the point, in one lookup; None: no cell."""
        i = self._index(point)
        return None if i is None else (self.codes[i], self._grades[i])

    def cell(self, code: str) -> tuple[str, Grade | None] | None:
        """Code and road grade of the cell named `code`, as `cell_at` gives them; None: no such cell (the grid file
        changed since a case was filed in it)."""
        return (code, self._grades[self.codes.index(code)]) if code in self.codes else None

    def _index(self, point: GeoPoint) -> int | None:
        hits = self._tree.query(shapely.Point(point.lon, point.lat), predicate="intersects")
        if len(hits) == 0:
            return None
        return int(min(hits, key=lambda i: self._shapes[i].area))


def read_grid_file(path: str | Path) -> GridFile:
    """The grid file at `path`, validated, each cell's id its own (`check_unique_ids`): of two cells with one id the
    analytics kept the last one's street and squad and triage filed both under one code without a word. Every reader
    of a grid file (triage, the case edits' cell, the analytics, the call-out list's squads) reads it here, so each
    refuses the same file alike."""
    data = load_model(GridFile, path)
    check_unique_ids([f.properties for f in data.features], str(path), "features.{i}.properties", CELL_IDS)
    return data


def load_grid(path: str | Path, taxonomy: Taxonomy | None = None) -> GridCells:
    """Load and validate a GeoJSON FeatureCollection of cells; errors name file, feature and reason
    (a cell naming a grade its grades file lacks, too)."""
    data = read_grid_file(path)
    graded = [(i, f.properties.grade) for i, f in enumerate(data.features) if f.properties.grade]
    if not graded:
        return GridCells(data)
    grades = load_grades(Path(path).parent / data.grades if data.grades else None, taxonomy)
    for i, grade in graded:
        if grade not in grades.grades:
            raise ConfigError(f"{path}: features.{i}.properties.grade: unknown grade {grade!r} (known: {', '.join(sorted(grades.grades))})")
    return GridCells(data, grades)
