"""Violation taxonomy: names, event-tree codes, evidence classes and default thresholds.

One YAML file (`detect/taxonomy.yaml`) is the single source of truth for violation types; the
rules, the evidence builder and the dispatch adapters all read it through `load_taxonomy`. City
code tables differ per city, so they are data: the shipped `default` city plus optional city
files (`city: hangzhou` + `codes: {type_id: {major_code, minor_code}}`) merged at load time.
The detector only knows class names; which class names count as evidence for which violation is
stated here, and so is what else a class is to the code (`classes:`: text, OCR trigger, signboard,
privacy blur, tracker family, zone anchor), so a newly trained model with `stall`, `small_ad` or
`shop_sign` classes plugs in without code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue

from detect.config_io import ConfigError, ConfigModel, load_model, read_mapping, validate_model

DEFAULT_TAXONOMY_PATH = Path(__file__).with_name("taxonomy.yaml")
VERIFIED_PREFIX = "verified:"
"""Class-name prefix of verifier verdicts (`verified:street_stall`), see detect.verifier."""
DEFAULT_CITY = "default"


class ZoneKind(StrEnum):
    """What a scene zone means for the rules (see docs/rules.md)."""

    NO_PARKING = "no_parking"
    SIDEWALK = "sidewalk"
    NO_VENDING = "no_vending"
    VENDING_PERMITTED = "vending_permitted"
    FRONTAGE = "frontage"
    NO_POSTING = "no_posting"
    IGNORE = "ignore"


class Anchor(StrEnum):
    """The point of a box that decides which zone it is in (docs/rules.md §2)."""

    BOTTOM_CENTER = "bottom_center"  # where a thing stands on the ground
    CENTER = "center"  # things on walls: text, posters, banners


class Severity(StrEnum):
    """How serious a case is (案件等级), for reports by severity and for the review queue.

    The type sets it (`severity` under the type), a road grade or a zone may raise or lower it for
    their zones (the same layering as the thresholds), and a reviewer may correct it on the case."""

    GENERAL = "general"  # 一般
    MAJOR = "major"  # 较重
    SERIOUS = "serious"  # 严重

    @property
    def name_zh(self) -> str:
        return SEVERITY_ZH[self]

    @classmethod
    def most_serious(cls, severities: Iterable[str]) -> Severity:
        """The most serious of some severities (none: general): what a case made of several sightings records."""
        order = list(cls)
        return max((cls(s) for s in severities), key=order.index, default=cls.GENERAL)


SEVERITY_ZH = {Severity.GENERAL: "一般", Severity.MAJOR: "较重", Severity.SERIOUS: "严重"}


class PrivacyRegion(StrEnum):
    """The part of a box blurred in the shared copies of evidence images (detect.evidence.privacy)."""

    HEAD = "head"  # the top quarter of a person's box
    PLATE = "plate"  # the lower middle band of a vehicle's box


class ClassRoles(ConfigModel):
    """What the code does with a class name besides weighing it as evidence: one entry under `classes:`.

    A new model's classes plug in here as they do under a type's `evidence`, with no code change."""

    text: bool = Field(
        False, title="Text",
        description="Text on a wall: OCR lines (text, small_ad_text, new_text) and things with writing (small ads, posters, "
        "stickers, banners). In a zone by the centre of its box and an OCR trigger, unless `anchor` or `ocr_trigger` say otherwise.")
    ocr_trigger: bool | None = Field(
        None, title="OCR trigger",
        description="A photo in which the detector sees this class is read whole by OCR (triage `--ocr auto`). "
        "Default: text and signboard classes.")
    signboard: bool = Field(
        False, title="Signboard",
        description="A legal shop sign: text lines whose centre lies inside its box are never flyposting (photos).")
    privacy: PrivacyRegion | None = Field(
        None, title="Privacy blur",
        description="The part of its box blurred in shared evidence copies: `head` (people) or `plate` (vehicles).")
    family: str | None = Field(
        None, title="Tracker family", min_length=1,
        description="Classes of one family share a tracker, so a car re-detected as a truck keeps its id "
        "(default: the class is its own family). A settings file's `tracking.families` adds to these.")
    anchor: Anchor | None = Field(
        None, title="Zone anchor",
        description="The point of its box that decides its zone: `bottom_center` (where it stands) or `center`. "
        "Default: center for text classes, bottom_center for everything else.")

    name_zh: str | None = Field(
        None, title="Chinese name", min_length=1,
        description="The class as city staff read it in the box labels over the evidence (客车 for `bus`): the review "
        "pages show it before the class name. Default: the class name alone.")

    @property
    def zone_anchor(self) -> Anchor:
        """`anchor`, or its default (centre for text)."""
        return self.anchor or (Anchor.CENTER if self.text else Anchor.BOTTOM_CENTER)

    @property
    def triggers_ocr(self) -> bool:
        """`ocr_trigger`, or its default (text and signboards)."""
        return self.ocr_trigger if self.ocr_trigger is not None else (self.text or self.signboard)


NO_ROLES = ClassRoles()
"""The roles of a class the taxonomy does not list: none (bottom-centre anchor, its own tracker family)."""


class CityCode(ConfigModel):
    """A violation type's 大类/小类 codes on one city's dispatch platform."""

    model_config = ConfigDict(frozen=True)

    major_code: str = Field(title="Major class code", description="大类 code on the city platform.", min_length=1)
    minor_code: str = Field(title="Minor class code", description="小类 code on the city platform.", min_length=1)


class Thresholds(ConfigModel):
    """The numbers a rule uses, and the severity of what it opens; defaults per type here, overrides
    per road grade and per zone."""

    min_conf: float = Field(0.3, title="Minimum confidence", description="Detections below this confidence are ignored.", ge=0.0, le=1.0)
    min_area: float = Field(
        0.0, title="Minimum box area", description="Smallest box area as a fraction of the image area (resolution independent).", ge=0.0, le=1.0
    )
    dwell_s: float = Field(300.0, title="Dwell seconds", description="Seconds the evidence must stay in the zone before a violation opens.", ge=0.0)
    clear_s: float = Field(120.0, title="Clear seconds", description="Seconds of absence after which an open violation is cleared.", ge=0.0)
    cooldown_s: float = Field(
        1800.0, title="Cooldown seconds", description="After a violation clears, no new one of the same type opens in the same zone for this long.", ge=0.0
    )
    min_count: int = Field(
        1, title="Minimum count", description="Objects a group must count (stalls of a road market) to be a violation; road grades raise it in lanes.", ge=1
    )
    severity: Severity = Field(
        Severity.GENERAL, title="Severity",
        description="Severity of the cases it opens (案件等级): general 一般, major 较重 or serious 严重; a road grade may set it per type.")

    def with_overrides(self, overrides: ThresholdOverrides | None) -> Thresholds:
        """These thresholds with the fields that `overrides` sets replaced."""
        if overrides is None:
            return self
        return Thresholds(**{**self.model_dump(include=set(Thresholds.model_fields)), **overrides.model_dump(exclude_none=True)})

    def threshold_values(self) -> dict[str, float]:
        """Only the threshold numbers (what an event records as `thresholds`)."""
        return {name: float(getattr(self, name)) for name in Thresholds.model_fields if name != "severity"}


class ThresholdOverrides(ConfigModel):
    """Per-zone replacements for some of a type's default thresholds (unset = keep default)."""

    min_conf: float | None = Field(None, title="Minimum confidence", description="Override of the type's min_conf.", ge=0.0, le=1.0)
    min_area: float | None = Field(None, title="Minimum box area", description="Override of the type's min_area (fraction of image).", ge=0.0, le=1.0)
    dwell_s: float | None = Field(None, title="Dwell seconds", description="Override of the type's dwell_s.", ge=0.0)
    clear_s: float | None = Field(None, title="Clear seconds", description="Override of the type's clear_s.", ge=0.0)
    cooldown_s: float | None = Field(None, title="Cooldown seconds", description="Override of the type's cooldown_s.", ge=0.0)
    min_count: int | None = Field(None, title="Minimum count", description="Override of the type's min_count.", ge=1)
    severity: Severity | None = Field(None, title="Severity", description="Override of the type's severity (general, major, serious).")


class ViolationType(Thresholds):
    """One violation type. Its threshold fields (inherited) are the type's defaults."""

    id: str = Field(title="Type id", description="Stable identifier, e.g. `street_stall`.", pattern=r"^[a-z][a-z0-9_]*$")
    name_zh: str = Field(title="Chinese name", description="Name used on Chinese dispatch platforms.", min_length=1)
    name_en: str = Field(title="English name", description="Name used in English UIs and Open311.", min_length=1)
    major_class: str = Field(title="Major class (大类)", description="Event-tree major class name, e.g. 街面秩序.", min_length=1)
    minor_class: str = Field(title="Minor class (小类)", description="Event-tree minor class name, e.g. 无照经营游商.", min_length=1)
    city_codes: dict[str, CityCode] = Field(
        title="City codes", description="大类/小类 codes per city; must include the `default` city."
    )
    open311_service_code: str = Field(title="Open311 service code", description="GeoReport v2 service_code.", min_length=1)
    zone_kinds: list[ZoneKind] = Field(
        title="Zone kinds", description="Scene zone kinds in which this type is judged (photos without a scene: everywhere).", min_length=1
    )
    evidence: dict[str, float] = Field(
        title="Evidence weights",
        description="Detector class name -> weight; an object is evidence when its distinct classes add up to min_evidence.",
        min_length=1,
    )
    min_evidence: float = Field(1.0, title="Minimum evidence", description="Summed weight of distinct classes needed.", gt=0.0)
    group: bool = Field(
        False, title="Group tracks", description="Nearby tracks of evidence classes form one object (umbrella + table + person = one stall)."
    )
    uncounted: list[str] = Field(
        default_factory=list,
        title="Uncounted classes",
        description="Evidence classes that support a group but are not counted in its object count (people at a stall).",
    )
    stationary: bool = Field(True, title="Must be stationary", description="Only stationary tracks count (vehicles, stalls).")
    verify: Literal["tiles", "objects"] | None = Field(
        None,
        title="Verifier judgement",
        description="How a loaded verifier (detect.verifier) judges this type. `tiles`: its tile or zone probability, as "
        "class `verified:<id>` (weight >= min_evidence), is the evidence; detector classes that weigh less than "
        "min_evidence no longer make a case alone, they refine the evidence box. `objects`: each evidence object is "
        "scored from the ground around it, and in photos without zones only objects that pass count.",
    )

    support: list[str] | None = Field(
        None, title="Support classes",
        description="Classes whose boxes refine a verified region of this type (default: the evidence classes that weigh "
        "less than min_evidence); for flyposting, the OCR text lines.")

    @model_validator(mode="after")
    def _verified_class_weighs_enough(self) -> ViolationType:
        if self.verify == "tiles":
            name = VERIFIED_PREFIX + self.id
            if self.evidence.get(name, 0.0) < self.min_evidence:
                raise ValueError(f"verify: tiles needs evidence '{name}' weighing at least min_evidence ({self.min_evidence})")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """In the file a type's id is its key under `types:` (see `Taxonomy`), so the file schema does not require it."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["required"] = [name for name in schema.get("required", []) if name != "id"]
        return schema

    @field_validator("city_codes")
    @classmethod
    def _has_default_city(cls, codes: dict[str, CityCode]) -> dict[str, CityCode]:
        if DEFAULT_CITY not in codes:
            raise ValueError(f"needs a `{DEFAULT_CITY}` city entry")
        return codes

    @field_validator("evidence")
    @classmethod
    def _positive_weights(cls, evidence: dict[str, float]) -> dict[str, float]:
        bad = [name for name, w in evidence.items() if not w > 0]
        if bad:
            raise ValueError(f"evidence weights must be > 0 (bad: {', '.join(bad)})")
        return evidence

    @property
    def short_name_zh(self) -> str:
        """The first of the Chinese names (`占道经营 / 无照经营游商` -> 占道经营): what a chart's legend or a message to a
        person needs, where the second names the vendor rather than what they do and the slash reads as a form."""
        return self.name_zh.split(" / ")[0].strip()

    @property
    def evidence_classes(self) -> list[str]:
        """Detector class names that count as evidence for this type."""
        return list(self.evidence)

    def evidence_classes_for(self, verified: bool) -> list[str]:
        """Evidence classes when a verifier is (not) loaded: with one, a `tiles` type counts only classes
        that are enough alone (its `verified:` class, a custom `stall` class); without one, the
        verifier's class never appears and every class counts as before."""
        if verified and self.verify == "tiles":
            return [name for name, w in self.evidence.items() if w >= self.min_evidence]
        return [name for name in self.evidence if not name.startswith(VERIFIED_PREFIX)]

    @property
    def support_classes(self) -> list[str]:
        """Classes that refine a verified region's box: `support`, else the evidence classes too weak alone."""
        if self.support is not None:
            return list(self.support)
        return [name for name, w in self.evidence.items() if w < self.min_evidence]

    @property
    def counted_classes(self) -> list[str]:
        """Support classes whose clusters a verified region counts (stalls of a market; not people)."""
        return [name for name in self.support_classes if name not in self.uncounted]

    @property
    def thresholds(self) -> Thresholds:
        """The type's default thresholds (and severity) alone."""
        return Thresholds(**self.model_dump(include=set(Thresholds.model_fields)))

    def evidence_score(self, class_names: set[str] | list[str]) -> float:
        """Summed weight of the distinct evidence classes present (other classes weigh 0)."""
        return sum(self.evidence.get(name, 0.0) for name in set(class_names))


class Taxonomy(ConfigModel):
    """All violation types, keyed by id (the YAML key is the id)."""

    version: int = Field(1, title="Format version", description="Taxonomy file format version.", ge=1)
    types: dict[str, ViolationType] = Field(title="Violation types", description="Violation types keyed by id.", min_length=1)
    classes: dict[str, ClassRoles] = Field(
        default_factory=dict, title="Class roles",
        description="Class name -> its roles besides evidence: text, OCR trigger, signboard, privacy blur, tracker family, "
        "zone anchor; and its Chinese name. Classes not listed have none.")

    @model_validator(mode="before")
    @classmethod
    def _ids_from_keys(cls, data: Any) -> Any:
        """`types: {street_stall: {...}}` -> each type's `id` is its key (a differing `id` is an error)."""
        if isinstance(data, dict) and isinstance(data.get("types"), dict):
            types = {}
            for key, body in data["types"].items():
                if isinstance(body, dict):
                    if body.get("id", key) != key:
                        raise ValueError(f"types.{key}: id {body['id']!r} differs from its key {key!r}")
                    body = {**body, "id": key}
                types[key] = body
            data = {**data, "types": types}
        return data

    def get(self, type_id: str) -> ViolationType:
        """The type, or a KeyError that lists the known ids."""
        try:
            return self.types[type_id]
        except KeyError:
            raise KeyError(f"unknown violation type {type_id!r} (known: {', '.join(sorted(self.types))})") from None

    def city_code(self, type_id: str, city: str = DEFAULT_CITY) -> CityCode:
        """大类/小类 codes of a type on a city's platform."""
        codes = self.get(type_id).city_codes
        if city not in codes:
            raise KeyError(f"violation type {type_id!r} has no codes for city {city!r} (cities: {', '.join(sorted(codes))})")
        return codes[city]

    def cities(self) -> set[str]:
        """Cities for which at least one type has codes."""
        return {city for t in self.types.values() for city in t.city_codes}

    def require_city(self, city: str, where: str, remedy: str) -> None:
        """Refuse a city no code table covers, naming the cities that have one (`where`: the setting or option that
        named it; `remedy`: where its table goes): one check for the settings (a missing table an error at start, not
        at the first case) and `rules taxonomy --city` (which showed `-` for every code)."""
        if city not in self.cities():
            raise ConfigError(f"{where}: no code table for city {city!r} (cities: {', '.join(sorted(self.cities()))}); {remedy}")

    def types_named(self, text: str) -> list[str]:
        """Ids of the types whose Chinese or English name holds `text` (case-insensitive; 占道经营, "street stall"): a
        search typed in staff's words finds the cases of that type, whose rows hold only the id."""
        wanted = text.strip().casefold()
        if not wanted:
            return []
        return [t.id for t in self.types.values() if wanted in t.name_zh.casefold() or wanted in t.name_en.casefold()]

    def types_for_class(self, class_name: str) -> list[ViolationType]:
        """Types for which a detector class counts as evidence."""
        return [t for t in self.types.values() if class_name in t.evidence]

    def roles(self, class_name: str) -> ClassRoles:
        """A class's roles (`classes:`), or none for a class the taxonomy does not list."""
        return self.classes.get(class_name, NO_ROLES)

    @property
    def text_classes(self) -> frozenset[str]:
        """Classes that are text on a wall (OCR lines, posters, banners ...)."""
        return frozenset(name for name, r in self.classes.items() if r.text)

    @property
    def ocr_trigger_classes(self) -> frozenset[str]:
        """Classes whose detection makes triage read the whole photo."""
        return frozenset(name for name, r in self.classes.items() if r.triggers_ocr)

    @property
    def signboard_classes(self) -> frozenset[str]:
        """Legal shop signs: text inside them is not flyposting."""
        return frozenset(name for name, r in self.classes.items() if r.signboard)

    @property
    def centre_anchored(self) -> frozenset[str]:
        """Classes in a zone by the centre of their box (the others: by its bottom-centre)."""
        return frozenset(name for name, r in self.classes.items() if r.zone_anchor is Anchor.CENTER)

    @property
    def privacy_regions(self) -> dict[str, PrivacyRegion]:
        """Class name -> the part of its box blurred in shared evidence copies."""
        return {name: r.privacy for name, r in self.classes.items() if r.privacy is not None}

    @property
    def class_names_zh(self) -> dict[str, str]:
        """Class name -> its Chinese name, for the box labels over the evidence: `classes:`'s name_zh, and each type's
        name_zh for its verifier's class `verified:<type id>`."""
        return {**{name: r.name_zh for name, r in self.classes.items() if r.name_zh},
                **{f"verified:{t.id}": t.name_zh for t in self.types.values()}}

    @property
    def families(self) -> dict[str, str]:
        """Class name -> tracker family, for the classes that share one."""
        return {name: r.family for name, r in self.classes.items() if r.family is not None}


@functools.cache
def default_taxonomy() -> Taxonomy:
    """The shipped taxonomy, loaded once: what a function that was given no taxonomy reads its class roles
    from (`detect.scenes.anchor_points`, `detect.ocr.label_texts` ...). Shared, so never change it."""
    return load_taxonomy()


class CityCodeFile(ConfigModel):
    """A city's code table: `city` name and codes for some or all types."""

    city: str = Field(title="City", description="City key used with Taxonomy.city_code(type, city).", min_length=1)
    name: str | None = Field(None, title="City name", description="Human-readable name (e.g. 杭州市).")
    codes: dict[str, CityCode] = Field(title="Codes", description="Violation type id -> 大类/小类 codes.", min_length=1)


def load_taxonomy(path: str | Path | None = None, city_files: list[str | Path] | None = None) -> Taxonomy:
    """Load and validate the taxonomy (default: the shipped one) and merge city code files.

    A city file naming an unknown violation type is refused with file, field and reason.
    """
    path = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
    taxonomy = validate_model(Taxonomy, read_mapping(path), str(path))
    for city_path in city_files or []:
        city = load_model(CityCodeFile, city_path)
        for type_id, code in city.codes.items():
            if type_id not in taxonomy.types:
                raise ConfigError(
                    f"{city_path}: codes.{type_id}: unknown violation type (known: {', '.join(sorted(taxonomy.types))})"
                )
            taxonomy.types[type_id].city_codes[city.city] = code
    return taxonomy
