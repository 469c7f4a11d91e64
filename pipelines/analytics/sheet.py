"""Assessment sheets (考核评分细则) as YAML: sections with points, items with deductions.

A sheet is the city's own scoring rule book, so it is configuration, validated at load like every
other file (`file: sections.0.items.3.bands: reason`). An item deducts points

- `per: case`  for each case (a flyposting spot, a piled-goods spot),
- `per: shop`  for each shop, once per time window (the same shop caught twice in a day is one),
- `per: stall` for each stall a case counted (a street-stall case knows how many it saw),
- `per: group` for each road market (stalls of one place and time together), by size `bands`,
- `per: quota` for each one short of a monthly target (phone numbers cut off).

An item may `replace` others: cases it deducts for (a stall in a road market, a food stall) are
not deducted again by the items it replaces. A section's deductions never exceed its points; an
item's never exceed its own `cap` when it has one. Only confirmed cases count unless the sheet
says `include_candidates: true`. docs/analytics.md explains every field with the example sheet.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from detect.config_io import ConfigError, ConfigModel, load_model
from detect.taxonomy import Taxonomy, load_taxonomy
from pipelines.analytics.places import Unit

EXAMPLE_SHEET = Path(__file__).with_name("example_sheet.yaml")
_ID = r"^[A-Za-z0-9_.-]+$"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "min": 60, "m": 60}


class Per(StrEnum):
    CASE = "case"
    SHOP = "shop"
    STALL = "stall"
    GROUP = "group"
    QUOTA = "quota"


class Band(ConfigModel):
    """One size band of a group item: `min`..`max` stalls (inclusive; no `max` = and more)."""

    min: int = Field(title="From", description="Smallest group size (stalls) in the band.", ge=1)
    max: int | None = Field(None, title="To", description="Largest group size in the band, inclusive; omit for no upper limit.", ge=1)
    deduct: float = Field(title="Deduction", description="Points deducted for each group in this band.", gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")
        return self

    def __str__(self) -> str:
        return f"{self.min}–{self.max}" if self.max is not None else f"≥{self.min}"

    def holds(self, size: int) -> bool:
        return size >= self.min and (self.max is None or size <= self.max)


class Grouping(ConfigModel):
    """What "one place and one time" means for road markets (`per: group`) and shops (`per: shop`)."""

    place: Literal["grid", "zone", "camera"] = Field(
        "grid", title="Place",
        description="grid: the case's grid cell; zone: the camera's zone (or the city zone of a photo); camera: the camera "
                    "or photo batch. A case without the chosen place is a place of its own.")
    time: str = Field(
        "day", title="Time",
        description="day: the same local calendar day; or a window such as 2h or 90min: cases of one place whose opening "
                    "times follow each other at most this far apart are one group.")

    @field_validator("time")
    @classmethod
    def _readable(cls, value: str) -> str:
        if value != "day" and not _DURATION.fullmatch(value.strip()):
            raise ValueError(f"cannot read {value!r} as a time: use `day` or a window like 2h, 90min, 1d")
        return value.strip()

    @property
    def window(self) -> timedelta | None:
        """None for calendar days, else the chaining window."""
        m = _DURATION.fullmatch(self.time)
        return None if m is None else timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])


class Item(ConfigModel):
    id: str = Field(title="Item id", description="Stable id (column name in the outputs).", pattern=_ID)
    name: str = Field(title="Name", description="The item as the sheet words it (Chinese).", min_length=1)
    types: list[str] = Field(title="Violation types", description="Taxonomy ids of the cases the item counts.", min_length=1)
    per: Per = Field(title="Deduct per", description="case, shop, stall, group (road market, by bands) or quota.")
    deduct: float | None = Field(
        None, title="Deduction", description="Points per case / shop / stall, or per one short of the quota (not for groups).", gt=0)
    bands: list[Band] = Field(default_factory=list, title="Size bands", description="per: group: deduction by group size.")
    monthly_quota: int | None = Field(
        None, title="Monthly quota", description="per: quota: numbers to get cut off per month (times the months of the period).", ge=1)
    cap: float | None = Field(None, title="Cap", description="Most points this item may deduct (the section's points always cap).", ge=0)
    tags: list[str] = Field(
        default_factory=list, title="Tags", description="Count only cases carrying one of these tags (case details `tags`).")
    replaces: list[str] = Field(
        default_factory=list, title="Replaces",
        description="Ids of items that do not deduct again for the cases this item deducts for.")
    units: list[Unit] | None = Field(
        None, title="Applies to", description="Only when scoring by these units (e.g. [squad] for a squad's quota); default all.")

    @field_validator("bands")
    @classmethod
    def _no_overlap(cls, bands: list[Band]) -> list[Band]:
        ordered = sorted(enumerate(bands), key=lambda ib: ib[1].min)
        for (i, a), (j, b) in zip(ordered, ordered[1:]):
            if a.max is None or a.max >= b.min:
                raise ValueError(f"bands {i} ({a}) and {j} ({b}) overlap")
        return bands

    @model_validator(mode="after")
    def _fields_for_per(self) -> Item:
        if self.per is Per.GROUP:
            if not self.bands:
                raise ValueError("per: group needs `bands` (group sizes and their deductions)")
            if self.deduct is not None:
                raise ValueError("per: group deducts by `bands`; remove `deduct`")
        else:
            if self.bands:
                raise ValueError(f"`bands` are only for per: group (this item is per: {self.per})")
            if self.deduct is None:
                raise ValueError(f"per: {self.per} needs `deduct` (points per {self.per if self.per is not Per.QUOTA else 'one short'})")
        if (self.per is Per.QUOTA) != (self.monthly_quota is not None):
            raise ValueError("per: quota needs `monthly_quota`" if self.per is Per.QUOTA else "`monthly_quota` is only for per: quota")
        return self


class Section(ConfigModel):
    id: str = Field(title="Section id", description="Stable id.", pattern=_ID)
    name: str = Field(title="Name", description="Section title as on the sheet (e.g. 流动摊贩及马路市场).", min_length=1)
    points: float = Field(title="Points", description="The section's points: its deductions are capped at this.", ge=0)
    items: list[Item] = Field(title="Items", description="Deduction items.", min_length=1)


class Sheet(ConfigModel):
    """An assessment sheet file (考核评分细则): `streetwatch config schema scoring-sheet` prints its JSON schema."""

    name: str = Field(title="Sheet name", description="Title of the sheet (shown on every output).", min_length=1)
    description: str | None = Field(None, title="Description", description="Where the sheet comes from, version, notes.")
    include_candidates: bool = Field(
        False, title="Count candidates",
        description="false: only confirmed cases count (approved in review or sent to dispatch); true: unreviewed candidates too. "
                    "Rejected cases never count.")
    grouping: Grouping = Field(default_factory=Grouping, title="One place, one time",
                               description="How road markets and repeat shops are told apart.")
    sections: list[Section] = Field(title="Sections", description="Sections with their points and items.", min_length=1)

    @property
    def points(self) -> float:
        return sum(s.points for s in self.sections)

    def items(self) -> list[tuple[Section, Item]]:
        return [(s, i) for s in self.sections for i in s.items]

    def tags(self) -> dict[str, list[Item]]:
        """Tag -> the items that count cases carrying it (what a reviewer's tag changes in the score)."""
        out: dict[str, list[Item]] = {}
        for _, item in self.items():
            for tag in item.tags:
                out.setdefault(tag, []).append(item)
        return out

    def evaluation_order(self) -> list[Item]:
        """Items that replace others come before them (checked acyclic at load)."""
        items = {i.id: i for _, i in self.items()}
        done: list[Item] = []

        def visit(item: Item) -> None:
            if item in done:
                return
            for other in items.values():  # whoever replaces `item` must run first
                if item.id in other.replaces:
                    visit(other)
            done.append(item)

        for _, item in self.items():
            visit(item)
        return done


def check_sheet(sheet: Sheet, taxonomy: Taxonomy, source: str) -> Sheet:
    """Checks across items: unique ids, known violation types, `replaces` naming items, no cycles."""
    seen: dict[str, str] = {}
    for si, section in enumerate(sheet.sections):
        if section.id in seen:
            raise ConfigError(f"{source}: sections.{si}.id: duplicate id {section.id!r} (also {seen[section.id]})")
        seen[section.id] = f"sections.{si}"
        for ii, item in enumerate(section.items):
            where = f"sections.{si}.items.{ii}"
            if item.id in seen:
                raise ConfigError(f"{source}: {where}.id: duplicate id {item.id!r} (also {seen[item.id]})")
            seen[item.id] = where
            for ti, type_id in enumerate(item.types):
                if type_id not in taxonomy.types:
                    raise ConfigError(f"{source}: {where}.types.{ti}: unknown violation type {type_id!r} "
                                      f"(known: {', '.join(sorted(taxonomy.types))})")
    item_ids = {i.id for _, i in sheet.items()}
    for si, section in enumerate(sheet.sections):
        for ii, item in enumerate(section.items):
            for ri, other in enumerate(item.replaces):
                if other not in item_ids or other == item.id:
                    reason = "an item cannot replace itself" if other == item.id else f"no item {other!r} in the sheet"
                    raise ConfigError(f"{source}: sections.{si}.items.{ii}.replaces.{ri}: {reason}")
    replaces = {i.id: set(i.replaces) for _, i in sheet.items()}

    def cycle_from(start: str) -> bool:
        stack, seen_ids = list(replaces[start]), set()
        while stack:
            current = stack.pop()
            if current == start:
                return True
            if current not in seen_ids:
                seen_ids.add(current)
                stack.extend(replaces[current])
        return False

    for item_id, where in ((i.id, seen[i.id]) for _, i in sheet.items()):
        if cycle_from(item_id):
            raise ConfigError(f"{source}: {where}.replaces: items replace each other in a circle (through {item_id!r})")
    return sheet


def load_sheet(path: str | Path | None = None, taxonomy: Taxonomy | None = None) -> Sheet:
    """The sheet at `path` (default: the shipped example), validated; ConfigError naming file, field, reason."""
    path = Path(path) if path is not None else EXAMPLE_SHEET
    return check_sheet(load_model(Sheet, path), taxonomy or load_taxonomy(), str(path))
