"""Road grades (道路分级管控): one set of thresholds per grade of street, applied where zones are loaded.

Cities manage main roads, secondary roads and lanes with different strictness (主要道路严禁、次要
道路严控、支路街巷规范): the same stall is a case at once on a main road and only after a longer
dwell, or only as a group of several, in a lane. A zone (scene or city GeoJSON) names its `grade`;
`apply_grades` folds the grade into the zone when the file is loaded, so the rules keep reading
ordinary per-zone thresholds and types: taxonomy defaults < grade < the zone's own overrides.
Grades live in one file (`detect/grades.yaml` by default, a city's own by path).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from detect.config_io import ConfigError, ConfigModel, FieldError, load_model
from detect.taxonomy import Severity, Taxonomy, ThresholdOverrides, ViolationType

DEFAULT_GRADES_PATH = Path(__file__).with_name("grades.yaml")


class Grade(ConfigModel):
    """One grade of street and the thresholds its zones get."""

    name_zh: str = Field(title="Chinese name", description="e.g. 主要道路（严禁）.", min_length=1)
    name_en: str = Field(title="English name", description="e.g. Main road (prohibited).", min_length=1)
    types: list[str] | None = Field(
        None, title="Enforced types", description="Only these violation types are judged in zones of this grade (default: all).")
    thresholds: dict[str, ThresholdOverrides] = Field(
        default_factory=dict, title="Thresholds", description="Violation type id -> thresholds replacing the taxonomy defaults.")


class Grades(ConfigModel):
    """A grades file."""

    version: int = Field(1, title="Format version", description="Grades file format version.", ge=1)
    grades: dict[str, Grade] = Field(title="Grades", description="Grade id (what zones name in `grade`) -> grade.", min_length=1)


def load_grades(path: str | Path | None = None, taxonomy: Taxonomy | None = None) -> Grades:
    """A grades file (default: the shipped one); type ids are checked against the taxonomy."""
    path = Path(path) if path is not None else DEFAULT_GRADES_PATH
    grades = load_model(Grades, path)
    if taxonomy is not None:
        for gid, grade in grades.grades.items():
            for type_id in [*(grade.types or []), *grade.thresholds]:
                if type_id not in taxonomy.types:
                    raise ConfigError(f"{path}: grades.{gid}: unknown violation type {type_id!r} "
                                      f"(known: {', '.join(sorted(taxonomy.types))})")
    return grades


def apply_grades(zones: list, grades: Grades, source: str, field_template: str = "zones.{i}") -> None:
    """Fold each graded zone's grade into its `types` and `thresholds` (in place; see module doc).

    A zone naming an unknown grade is refused with file, field and the known grades.
    """
    for i, zone in enumerate(zones):
        if zone.grade is None:
            continue
        grade = grades.grades.get(zone.grade)
        if grade is None:
            raise FieldError(source, f"{field_template.format(i=i)}.grade",
                             f"unknown grade {zone.grade!r} (known: {', '.join(sorted(grades.grades))})")
        merged = {}
        for type_id in {*grade.thresholds, *zone.thresholds}:
            base = grade.thresholds.get(type_id)
            own = zone.thresholds.get(type_id)
            values = {**(base.model_dump(exclude_none=True) if base else {}), **(own.model_dump(exclude_none=True) if own else {})}
            merged[type_id] = ThresholdOverrides(**values)
        zone.thresholds = merged
        if zone.types is None and grade.types is not None:
            zone.types = list(grade.types)


def graded_severity(vtype: ViolationType, grade: Grade | None) -> Severity:
    """The severity a case of `vtype` judged as a whole photo gets in a grid cell of `grade` (None: ungraded): the
    grade's for the type, else the type's, as the rules derive it (`ZoneView.overrides`); what a case moved to
    another cell is given again."""
    return vtype.with_overrides(grade.thresholds.get(vtype.id) if grade is not None else None).severity
