"""Camera scenes: where a camera is, and which parts of its image mean what, and when.

Legality comes from place and time, not from the detector (DESIGN §1): a scene file per camera
says where its zones are (polygons in normalised image coordinates, so they survive a change of
stream resolution), what kind each zone is, its schedule in the camera's own time zone, and
per-zone threshold overrides. Files are validated at load; a bad file names file, field, reason,
and the camera is refused rather than run without rules.

Membership: an object is in a zone when the bottom-centre of its box is (where it stands on the
ground); text is in a zone by its centre (it hangs on a wall, it does not stand). Which classes are
text is the taxonomy's `classes:` (`anchor`, `text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import shapely
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, Field, PlainSerializer, PrivateAttr, WithJsonSchema, field_validator, model_validator,
)
from pydantic_core import PydanticCustomError
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from detect import fields
from detect.config_io import ZH_EN, ConfigError, ConfigModel, FieldError, load_model
from detect.grades import Grades, apply_grades, load_grades
from detect.taxonomy import (
    Taxonomy, ThresholdOverrides, Thresholds, ViolationType, ZoneKind, default_taxonomy, load_taxonomy,
)

if TYPE_CHECKING:
    import supervision as sv  # imported where used: with scipy it takes 1.2-1.5 s, which the store's commands skip


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


WEEK = list(Weekday)


def _minutes(value: Any) -> int:
    """`HH:MM` (or YAML 1.1's sexagesimal int that an unquoted 07:00 becomes) -> minutes of day."""
    if isinstance(value, bool):
        raise ValueError("expected a time like '07:00'")
    if isinstance(value, int):  # PyYAML reads unquoted 07:30 as 7*60+30 = 450
        minutes = value
    elif isinstance(value, time):
        minutes = value.hour * 60 + value.minute
    elif isinstance(value, str):
        try:
            hh, mm = value.strip().split(":")
            if len(mm) != 2:
                raise ValueError
            minutes = int(hh) * 60 + int(mm)
            if not 0 <= int(mm) < 60:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad time {value!r}: expected HH:MM between 00:00 and 24:00") from None
    else:
        raise ValueError(f"bad time {value!r}: expected HH:MM")
    if not 0 <= minutes <= 24 * 60:
        raise ValueError(f"bad time {value!r}: expected HH:MM between 00:00 and 24:00")
    return minutes


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


ClockTime = Annotated[
    int,
    BeforeValidator(_minutes),
    PlainSerializer(_hhmm, return_type=str, when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\d{1,2}:\d{2}$"},
                              {"type": "integer", "minimum": 0, "maximum": 24 * 60}]}, mode="validation"),
]
"""A time of day: written `HH:MM` (or the minutes an unquoted YAML 1.1 `07:00` becomes), held as minutes
of the day, written back as `HH:MM`."""


class TimeWindow(ConfigModel):
    """Weekdays and a daily time range in the camera's time zone.

    `end` before `start` runs over midnight: `fri 22:00-02:00` covers Friday 22:00 to
    Saturday 02:00 (the window belongs to the day it starts on).
    """

    days: list[Weekday] = Field(default_factory=lambda: list(WEEK), title="Weekdays", description="Days the window starts on (default: every day).", min_length=1)
    start: ClockTime = Field(title="Start", description="Start time HH:MM, local to the camera.")
    end: ClockTime = Field(title="End", description="End time HH:MM (24:00 = midnight); before start = runs over midnight.")

    @model_validator(mode="after")
    def _non_empty(self) -> TimeWindow:
        if self.start == self.end:
            raise ValueError("bad time range: start equals end (use start '00:00', end '24:00' for all day)")
        if self.start == 24 * 60:
            raise ValueError("bad time range: start must be before 24:00")
        return self

    def contains(self, local: datetime) -> bool:
        """Whether a local (camera time zone) datetime falls in the window."""
        minute = local.hour * 60 + local.minute + local.second / 60
        today = WEEK[local.weekday()]
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        yesterday = WEEK[(local.weekday() - 1) % 7]
        return (today in self.days and minute >= self.start) or (yesterday in self.days and minute < self.end)


def _known_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_timezone)]
"""An IANA time zone name, checked against the system's tz database."""


def follow_zone(config: BaseModel, timezone: str | None) -> None:
    """A scene or city zones file that names no `timezone` takes `timezone` (the settings' city zone): a city
    outside China would otherwise run its schedules and replay times on the Asia/Shanghai default unless every
    file named its zone. The file's own `timezone` still wins; None leaves the default."""
    if timezone is not None and "timezone" not in config.model_fields_set:
        config.timezone = _known_timezone(timezone)


def image_polygon(points: list[list[float]]) -> Polygon:
    """A valid shapely polygon from [[x, y], ...] in a camera's normalised image coordinates, or a refusal saying why
    not, Chinese first, for the staff who draw zones (a scene's) and frontages (the shops register's) on the cameras
    page and in the register: one check for both."""
    if len(points) < 3:
        raise refusal("多边形至少需要 3 个点，现有 {n} 个 — polygon needs at least 3 points, got {n}", n=len(points))
    for i, p in enumerate(points):
        if len(p) != 2:
            raise refusal("点 {i} 应写作 [x, y]，现为 {p} — point {i} must be [x, y], got {p}", i=i, p=str(p))
        x, y = p
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise refusal("点 {i} {p} 超出 [0, 1] 范围（归一化图像坐标） — point {i} {p} is outside [0, 1] (normalised image "
                          "coordinates)", i=i, p=str(p))
    return checked_shape(Polygon(points))


S = TypeVar("S", bound=BaseGeometry)


def checked_shape(shape: S) -> S:
    """`shape` if it is a valid polygon with an area, else a refusal saying why, Chinese first: one wording for a camera's
    image polygon and a map polygon (a GeoJSON zone or grid cell, a register's `gps_polygon`: `cityzones.geometry_of`)."""
    if not shape.is_valid:
        why = explain_validity(shape)
        raise refusal("多边形自相交或无效（{why_zh}） — polygon is self-intersecting or invalid ({why})", why=why, why_zh=validity_zh(why))
    if shape.is_empty or shape.area == 0:
        raise refusal("多边形面积为零（各点共线或重复） — polygon has zero area (points are collinear or repeated)")
    return shape


#: GEOS's reasons a polygon is invalid (shapely's `explain_validity`, the point it names in brackets after) in Chinese.
VALIDITY_ZH = {"Self-intersection": "自相交", "Ring Self-intersection": "边界自相交", "Too few points in geometry component": "点数太少",
               "Too few distinct points in geometry component": "不同的点太少", "Hole lies outside shell": "内洞在外边界之外",
               "Holes are nested": "内洞相互嵌套", "Interior is disconnected": "内部不连通", "Nested shells": "外边界相互嵌套",
               "Duplicate Rings": "边界重复", "Invalid Coordinate": "坐标无效", "Ring is not closed": "边界未闭合"}


def validity_zh(why: str) -> str:
    """`explain_validity`'s reason for the Chinese half of a refusal (`Self-intersection[0.5 0.5]` read as `自相交，位于 0.5 0.5`):
    shapely's English stays in the English half; a reason not in `VALIDITY_ZH` is pointed to there."""
    reason, bracket, where = why.partition("[")
    zh = VALIDITY_ZH.get(reason.strip())
    if zh is None:
        return "原因见英文"
    return f"{zh}，位于 {where.removesuffix(']')}" if bracket else zh


def refusal(message: str, **context: Any) -> PydanticCustomError:
    """A polygon's refusal as pydantic reports it: `message` (Chinese — English, `config_io.zh_en`) as it is, no
    'Value error, ' before the Chinese; a ValueError where it is raised outside a model."""
    return PydanticCustomError("polygon", message, context)


class ZoneRules(ConfigModel):
    """What a zone means: shared by image zones (scenes) and map zones (city GeoJSON)."""

    id: str = Field(title="Zone id", description="Stable id, part of every violation id in this zone.", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str | None = Field(None, title="Name", description="Human-readable name, e.g. 北门人行道.")
    kind: ZoneKind = Field(title="Kind", description="no_parking, sidewalk, no_vending, vending_permitted, frontage, no_posting or ignore.")
    schedule: list[TimeWindow] = Field(
        default_factory=list,
        title="Schedule",
        description="When the zone applies (enforcement hours; for vending_permitted: the permitted hours). Empty = always.",
    )
    types: list[str] | None = Field(
        None, title="Violation types", description="Only these violation types are judged here (default: every type whose zone_kinds include this kind)."
    )
    thresholds: dict[str, ThresholdOverrides] = Field(
        default_factory=dict, title="Threshold overrides", description="Violation type id -> thresholds replacing the taxonomy defaults in this zone."
    )
    grade: str | None = Field(
        None, title="Road grade", description="Road grade (main, secondary, lane or a city's own; detect/grades.py): its thresholds and types apply, "
        "the zone's own `thresholds` and `types` win.",
    )

    def active(self, local: datetime) -> bool:
        """Whether the zone's schedule applies at this local time (no schedule: always)."""
        return not self.schedule or any(w.contains(local) for w in self.schedule)


def resolve_thresholds(vtype: ViolationType | None, zone: ZoneRules | None) -> Thresholds:
    """The thresholds a type has in a zone: the taxonomy's defaults for the type with the zone's overrides
    on top. A type the taxonomy no longer has (a case older than the current taxonomy) gets the
    defaults every type starts from (`Thresholds()`), never a number made up where it is needed."""
    if vtype is None:
        return Thresholds()
    return vtype.with_overrides(zone.thresholds.get(vtype.id) if zone is not None else None)


class Zone(ZoneRules):
    """A zone in one camera's image: polygon in normalised [0, 1] coordinates."""

    polygon: list[list[float]] = Field(title="Polygon", description="[[x, y], ...] in normalised image coordinates (0..1, origin top-left).")
    _shape: Polygon = PrivateAttr()

    @field_validator("polygon")
    @classmethod
    def _valid_polygon(cls, points: list[list[float]]) -> list[list[float]]:
        image_polygon(points)
        return points

    def model_post_init(self, __context: Any) -> None:
        self._shape = Polygon(self.polygon)

    @property
    def area(self) -> float:
        """Polygon area as a fraction of the image."""
        return float(self._shape.area)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of normalised (N, 2) points inside or on the polygon."""
        if len(points) == 0:
            return np.zeros(0, dtype=bool)
        return shapely.intersects_xy(self._shape, points[:, 0], points[:, 1])


class Location(ConfigModel):
    lat: float = Field(title="Latitude", description="WGS-84 latitude.", ge=-90, le=90)
    lon: float = Field(title="Longitude", description="WGS-84 longitude.", ge=-180, le=180)
    address: str | None = Field(None, title="Address", description="Street address shown on cases.")


class Scene(ConfigModel):
    """One camera's scene file."""

    camera_id: str = Field(title="Camera id", description="Source id of the camera (Frame.source_id).", min_length=1)
    name: str | None = Field(None, title="Name", description="Human-readable camera name.")
    location: Location | None = Field(None, title="Location", description="Where the camera looks (used for cases).")
    grid_cell: str | None = Field(None, title="Grid cell", description="单元网格 code of the area the camera watches.")
    timezone: TimeZoneName = Field(
        "Asia/Shanghai", title="Time zone",
        description="IANA time zone of schedules and of a naive replay start_time, e.g. Europe/Berlin; default: the settings' `timezone` "
        "(watch, demo), else Asia/Shanghai.")
    reference_snapshot: str | None = Field(
        None, title="Reference snapshot", description="Image of the scene without violations; its text (shop signs) is never flyposting. Relative to the scene file."
    )
    zones: list[Zone] = Field(default_factory=list, title="Zones", description="Zones of the image.")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_time(self, ts: datetime) -> datetime:
        """A UTC-aware timestamp in the camera's local time (what schedules are written in)."""
        return ts.astimezone(self.tz)


def check_zones(zones: list[ZoneRules], taxonomy: Taxonomy, source: str, field_template: str = "zones.{i}") -> None:
    """What zones (a scene's, a map-zones file's) must pass beyond their model: ids of their own (`check_unique_ids`)
    and violation types the taxonomy knows (`check_types`), each refusal naming its field (`FieldError`)."""
    check_unique_ids(zones, source, field_template)
    check_types(zones, taxonomy, source, field_template)


class Identified(Protocol):
    """What `check_unique_ids` reads of an item: a zone's or a grid cell's properties."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str | None: ...


@dataclass(frozen=True)
class IdKind:
    """What the ids `check_unique_ids` checks name, for its refusal, Chinese and English: the thing (区域 zone), why an
    id of its own matters, and what else to do (a grid cell of several parts is one MultiPolygon feature)."""

    zh: str
    en: str
    why_zh: str
    why_en: str
    hint_zh: str = ""
    hint_en: str = ""


ZONE_IDS = IdKind("区域", "zone", "案件按编号找区域", "cases and rules find a zone by its id")


def check_unique_ids(items: Sequence[Identified], source: str, field_template: str = "zones.{i}",
                     kind: IdKind = ZONE_IDS) -> None:
    """Refuse an item (a zone, a grid cell) whose id an earlier one has, naming its id field and both by position and
    name: cases, warnings and rules name a zone, and cases a grid cell, by its id, so of two drawn with one id only one
    was ever found, the other silently never used."""
    def named(k: int, zh: bool = False) -> str:  # `zones.0 (北门)`, in Chinese `zones.0（北门）`
        name = items[k].name
        return field_template.format(i=k) + ("" if not name else f"（{name}）" if zh else f" ({name})")

    first: dict[str, int] = {}
    for i, item in enumerate(items):
        j = first.setdefault(item.id, i)
        if j != i:
            raise FieldError(source, f"{field_template.format(i=i)}.id",
                             f"{kind.zh}编号 {item.id!r} 重复：{named(j, zh=True)} 与 {named(i, zh=True)}；{kind.why_zh}，"
                             f"其中一个将永远用不上，请为每个{kind.zh}另起编号{kind.hint_zh}{ZH_EN}{kind.en} id {item.id!r} is "
                             f"used twice: by {named(j)} and {named(i)}; {kind.why_en}, so one of the two would never be "
                             f"used: give each {kind.en} an id of its own{kind.hint_en}")


def check_types(zones: list[ZoneRules], taxonomy: Taxonomy, source: str, field_template: str = "zones.{i}") -> None:
    """Refuse zones that name violation types the taxonomy does not know, naming the field (`zones.2.types.0`,
    `zones.2.thresholds.<type>`)."""
    for i, zone in enumerate(zones):
        named = [(f"types.{j}", t) for j, t in enumerate(zone.types or [])] + [(f"thresholds.{t}", t) for t in zone.thresholds]
        for field, type_id in named:
            if type_id not in taxonomy.types:
                raise FieldError(source, f"{field_template.format(i=i)}.{field}",
                                 f"unknown violation type {type_id!r} (known: {', '.join(sorted(taxonomy.types))})")


def check_scene(scene: Scene, source: str, taxonomy: Taxonomy | None = None, grades: Grades | None = None) -> Scene:
    """What a scene must pass beyond its model: zones of their own ids and violation types the taxonomy knows
    (`check_zones`), and road grades the grades file has (`grades`: default the shipped file), folded into the zones here. A scene file at start-up and a scene written
    through the API pass this one check, so the API never saves a scene the watcher then refuses."""
    taxonomy = taxonomy or load_taxonomy()
    check_zones(scene.zones, taxonomy, source)
    if any(z.grade for z in scene.zones):
        apply_grades(scene.zones, grades or load_grades(taxonomy=taxonomy), source)
    return scene


def load_scene(path: str | Path, taxonomy: Taxonomy | None = None, grades: Grades | None = None,
               timezone: str | None = None) -> Scene:
    """Load and validate a scene file (`check_scene`: violation types, road grades).

    A relative `reference_snapshot` is resolved against the scene file's folder. Zones that name a
    road `grade` get its thresholds and types here (`grades`: default the shipped grades file).
    `timezone`: the zone of a file that names none (the settings' city zone, `follow_zone`).
    """
    path = Path(path)
    scene = load_model(Scene, path)
    follow_zone(scene, timezone)
    check_scene(scene, str(path), taxonomy, grades)
    if scene.reference_snapshot and not Path(scene.reference_snapshot).is_absolute():
        scene.reference_snapshot = str(path.parent / scene.reference_snapshot)
    return scene


def read_reference(scene: Scene) -> np.ndarray | None:
    """The scene's reference snapshot as a BGR image (None: it names none), as a loaded scene names it.

    The moved-camera check needs it and, where a camera reads text, so does OCR: a file that is missing or not an
    image is a `ConfigError` naming it and why, which the watcher takes as a warning (no moved-camera check) and
    `streetwatch rules check` reports, where the scene itself is valid."""
    if not scene.reference_snapshot:
        return None
    path = Path(scene.reference_snapshot)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    import cv2  # here, not at the top: the case store loads this module, and `cases list` needs no OpenCV

    image = cv2.imread(str(path))
    if image is None:
        raise ConfigError(f"{path}: not an image OpenCV can read")
    return image


def anchor_points(detections: sv.Detections, width: int, height: int, taxonomy: Taxonomy | None = None) -> np.ndarray:
    """Normalised (N, 2) zone anchors: bottom-centre for things on the ground, centre for the classes the
    taxonomy anchors by their centre (text; default: the shipped taxonomy)."""
    import supervision as sv

    if len(detections) == 0:
        return np.zeros((0, 2))
    bottom = detections.get_anchors_coordinates(sv.Position.BOTTOM_CENTER)
    centre = detections.get_anchors_coordinates(sv.Position.CENTER)
    centred = np.isin(fields.names(detections), list((taxonomy or default_taxonomy()).centre_anchored))
    points = np.where(centred[:, None], centre, bottom)
    return points / np.array([width, height], dtype=float)
