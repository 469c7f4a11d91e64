"""Score a sheet for a period, per grid cell / street / squad / camera, with the cases behind each deduction.

Every unit starts from the sheet's full points. Items run in `Sheet.evaluation_order()` (an item
that replaces others first), each over the unit's counted cases of its types that no earlier item
took for it. Road markets are the stall cases of one place and one time (`Sheet.grouping`) whose
stalls add up to a band; the stalls of a market in no band (a few stalls together) stay single
stalls. A section deducts at most its points; the score is the sum of what the sections keep.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from detect.candidates import WHOLE_IMAGE
from pipelines.analytics.casedata import VOIDED_BY_PLATFORM, CaseFact, CaseFilter, load_cases
from pipelines.analytics.export import local_time
from pipelines.analytics.periods import Period
from pipelines.analytics.places import NONE_UNIT, Places, Unit
from pipelines.analytics.quota import NumberStatus
from pipelines.analytics.sheet import Grouping, Item, Per, Sheet
from pipelines.analytics.tables import Table, cell_runs
from pipelines.cases.states import CaseState


@dataclass
class Group:
    """Cases of one place and one time: a road market, or one shop's visits."""

    place: str
    start: datetime  # local time of the first case
    cases: list[CaseFact]

    @property
    def size(self) -> int:
        return sum(c.object_count for c in self.cases)


NOT_APPLICABLE, NOT_SCORED = "不适用 n/a", "未评分 not scored"
"""How an item's note starts when the item was not scored for a unit: it does not apply to the unit (a squad's quota
by grid, a monthly quota for a week), or its source is missing (no cut-off file); the scores page reads them too."""


@dataclass
class ItemScore:
    id: str
    name: str
    per: str
    count: int = 0  # cases, shops, stalls, markets in a band, or numbers cut off
    deduction: float = 0.0
    cases: list[str] = field(default_factory=list)
    note: str | None = None  # why it was not scored (NOT_APPLICABLE, NOT_SCORED ...), or the quota's target
    groups: list[dict[str, Any]] = field(default_factory=list)  # road markets / numbers with their cases

    @property
    def unscored(self) -> str | None:
        """`NOT_APPLICABLE` or `NOT_SCORED` when the item was not scored for the unit, else None: what a score table
        shows in its column, where its deduction of 0 read as nothing to deduct (a quota met)."""
        return next((label for label in (NOT_APPLICABLE, NOT_SCORED) if self.note and self.note.startswith(label)), None)


CAPPED = "分项封顶 section cap"
"""The deductions row giving back what a section's items deducted beyond its points, so that a unit's rows add up to
its score (三中队's items deducted 38 of a 30-point section, and the table read 11 where the score said 19)."""


@dataclass
class SectionScore:
    id: str
    name: str
    points: float
    deduction: float  # what the section deducts: its items' deductions, at most its points
    items: list[ItemScore]

    @property
    def items_deduction(self) -> float:
        """What the items deduct together, before the section's points cap it."""
        return sum(i.deduction for i in self.items)

    @property
    def over_cap(self) -> float:
        """What the items deducted beyond the section's points (not deducted: the section's points cap it)."""
        return round(self.items_deduction - self.deduction, 2)

    @property
    def cap_note(self) -> str:
        return (f"分项扣分 {self.items_deduction:g} 超过满分 {self.points:g}，按 {self.points:g} 分扣 "
                f"the items deducted more than the section's {self.points:g} points, which cap it")


@dataclass
class UnitScore:
    unit: str
    score: float
    points: float
    sections: list[SectionScore]
    label: str  # the unit as staff read it: a camera by its scene's name, its id after (`Places.unit_label`)

    def item(self, item_id: str) -> ItemScore:
        return next(i for s in self.sections for i in s.items if i.id == item_id)


@dataclass
class ScoreTable:
    sheet: str
    period: str
    by: Unit
    timezone: str
    include_candidates: bool
    points: float
    cases_counted: int
    generated_at: str
    voided_by_platform: int  # the period's cases voided by their platform after approval here (平台作废): not scored, not rejections
    items: list[dict[str, str]]  # section id/name, item id/name, in sheet order (the columns)
    units: list[UnitScore]
    warnings: list[str] = field(default_factory=list)  # what the number status source had to check (the cut-off file's rows)
    # the period's candidates not yet reviewed, left out because the sheet counts confirmed cases only: without it a month
    # of unreviewed cases scored as an empty table, which read as a month without violations
    awaiting_review: int = 0

    def unit(self, name: str) -> UnitScore:
        return next(u for u in self.units if u.unit == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


AWAITING_REVIEW = "待审核（未计分）"
"""What the scores call the period's unreviewed candidates a sheet without `include_candidates` leaves out."""


def counts(case: CaseFact, sheet: Sheet) -> bool:
    """Rejected cases never count, those rejected here nor those voided by their platform (平台作废, told apart in the
    table's `voided_by_platform`); candidates only when the sheet says so."""
    return case.state is not CaseState.REJECTED and (case.confirmed or sheet.include_candidates)


def place_of(case: CaseFact, place: str) -> str:
    """The grouping place of a case; a case without one is a place of its own."""
    if place == "grid" and case.grid_cell:
        return f"grid:{case.grid_cell}"
    if place == "zone" and case.zone_id and case.zone_id != WHOLE_IMAGE:
        return f"zone:{case.source_id}/{case.zone_id}" if case.source_kind == "camera" else f"zone:{case.zone_id}"
    if place == "camera" and case.source_kind == "camera":
        return f"camera:{case.source_id}"
    return f"case:{case.id}"


def place_name(case: CaseFact, place: str, places: Places) -> str:
    """The place `place_of` groups `case` under, as a person names it: the scores' road markets read
    `grid:330106003001` and `zone:cam-01/curb`, the keys, where the report's hot spots named the spot."""
    key = place_of(case, place)
    if key.startswith("grid:"):
        return places.cell_label(key.removeprefix("grid:"))
    if key.startswith("zone:"):
        return places.camera_zone_label(case.source_id, case.zone_id) if case.source_kind == "camera" else f"区域 {case.zone_id}"
    if key.startswith("camera:"):
        return f"摄像头 {places.camera_label(case.source_id)}"
    return f"案件 {case.id}"


def shop_of(case: CaseFact) -> str:
    """A shop: the one the case names (`details.shop`), else the camera's frontage zone, else the case. A camera's
    whole-image zone (a scene with no zones) is no frontage: every shop in view would be one shop, as `place_of`
    says for its zones."""
    if case.shop:
        return f"shop:{case.shop}"
    if case.source_kind == "camera" and case.zone_id and case.zone_id != WHOLE_IMAGE:
        return f"zone:{case.source_id}/{case.zone_id}"
    return f"case:{case.id}"


def group_cases(cases: list[CaseFact], key, grouping: Grouping, tz: ZoneInfo) -> list[Group]:
    """Cases of one key and one time: the same local day, or opening times chained within the window."""
    by_key: dict[str, list[CaseFact]] = defaultdict(list)
    for c in cases:
        by_key[key(c)].append(c)
    window = grouping.window
    groups: list[Group] = []
    for place, members in sorted(by_key.items()):
        members.sort(key=lambda c: (c.at, c.id))
        current: Group | None = None
        for c in members:
            local = c.at.astimezone(tz)
            same = current is not None and (
                local.date() == current.start.date() if window is None
                else local - current.cases[-1].at.astimezone(tz) <= window)
            if same:
                current.cases.append(c)
            else:
                current = Group(place, local, [c])
                groups.append(current)
    return groups


def _capped(item: Item, value: float) -> float:
    return min(value, item.cap) if item.cap is not None else value


class _UnitScorer:
    def __init__(self, sheet: Sheet, by: Unit, period: Period, tz: ZoneInfo, number_status: NumberStatus | None,
                 places: Places):
        self.sheet, self.by, self.period, self.tz, self.status, self.places = sheet, by, period, tz, number_status, places

    def score(self, unit: str, cases: list[CaseFact], quota_cases: list[CaseFact]) -> UnitScore:
        taken: dict[str, set[str]] = defaultdict(set)  # item id -> case ids other items deducted for
        results: dict[str, ItemScore] = {}
        for item in self.sheet.evaluation_order():
            mine = [c for c in cases if c.violation_type in item.types and c.id not in taken[item.id]
                    and (not item.tags or set(item.tags) & set(c.tags))]
            result = ItemScore(item.id, item.name, str(item.per))
            if item.units is not None and self.by not in item.units:
                result.note = f"{NOT_APPLICABLE} when scoring by {self.by} (applies to: {', '.join(item.units)})"
            elif item.per is Per.QUOTA and unit == NONE_UNIT:
                # no squad's target: a city's photos without a place (WeChat, no GPS) lost a whole quota, 10 points, as
                # a squad of their own beside the real ones
                result.note = f"{NOT_APPLICABLE}: {NONE_UNIT} is no {self.by}; its cases have no quota"
            elif item.per is Per.QUOTA:
                self._quota(item, [c for c in quota_cases if c.violation_type in item.types], result)
            else:
                used = self._deduct(item, mine, result)
                for other in item.replaces:
                    taken[other] |= used
            results[item.id] = result
        sections = []
        for s in self.sheet.sections:
            items = [results[i.id] for i in s.items]
            sections.append(SectionScore(s.id, s.name, s.points, min(s.points, sum(i.deduction for i in items)), items))
        kept = sum(s.points - s.deduction for s in sections)
        return UnitScore(unit, round(kept, 2), self.sheet.points, sections, self.places.unit_label(self.by, unit))

    def _deduct(self, item: Item, cases: list[CaseFact], result: ItemScore) -> set[str]:
        """Fill `result`; returns the ids of the cases deducted for (what `replaces` hands on)."""
        grouping = self.sheet.grouping
        if item.per is Per.GROUP:
            used: set[str] = set()
            total = 0.0
            for g in group_cases(cases, lambda c: place_of(c, grouping.place), grouping, self.tz):
                band = next((b for b in item.bands if b.holds(g.size)), None)
                if band is None:
                    continue
                ids = [c.id for c in g.cases]
                used |= set(ids)
                total += band.deduct
                result.groups.append({"place": g.place, "place_name": place_name(g.cases[0], grouping.place, self.places),
                                      "start": g.start.isoformat(), "stalls": g.size, "band": str(band),
                                      "deduction": band.deduct, "cases": ids})
            result.count = len(result.groups)
            result.deduction = _capped(item, total)
            result.cases = sorted(used)
            return used
        if item.per is Per.SHOP:
            result.count = len(group_cases(cases, shop_of, grouping, self.tz))
        elif item.per is Per.STALL:
            result.count = sum(c.object_count for c in cases)
        else:
            result.count = len(cases)
        assert item.deduct is not None
        result.deduction = _capped(item, result.count * item.deduct)
        result.cases = [c.id for c in cases]
        return set(result.cases)

    def _quota(self, item: Item, cases: list[CaseFact], result: ItemScore) -> None:
        assert item.monthly_quota is not None and item.deduct is not None
        if self.period.months == 0:
            result.note = f"{NOT_APPLICABLE}: the quota is monthly; score a month, quarter or year, not a {self.period.kind}"
            return
        if self.status is None:
            result.note = f"{NOT_SCORED}: no number status source (analytics.cutoffs or --cutoffs)"
            return
        start, end = self.period.bounds(self.tz)
        numbers: dict[str, list[str]] = defaultdict(list)
        for c in cases:
            for n in c.phones:
                numbers[n].append(c.id)
        done = self.status.cut_off(numbers, start, end)
        target = item.monthly_quota * self.period.months
        result.count = len(done)
        result.deduction = _capped(item, max(0, target - len(done)) * item.deduct)
        result.cases = sorted({cid for n in done for cid in numbers[n]})
        result.note = f"目标 target {target}, 已停机 cut off {len(done)}"
        result.groups = [{"number": n, "cut_off_at": done[n].isoformat(), "cases": numbers[n]} for n in sorted(done)]


def score_cases(sheet: Sheet, by: Unit, period: Period, tz: ZoneInfo, cases: list[CaseFact], places: Places, *,
                quota_cases: list[CaseFact] | None = None, number_status: NumberStatus | None = None) -> ScoreTable:
    """Score `cases` (those opened in `period`); `quota_cases` are the cases whose numbers quotas
    may credit (default: the same; the store runner passes every case opened before the period's end)."""
    counted = [c for c in cases if counts(c, sheet)]
    quota_pool = [c for c in (cases if quota_cases is None else quota_cases) if counts(c, sheet)]
    per_unit: dict[str, list[CaseFact]] = defaultdict(list)
    for c in counted:
        per_unit[c.unit(by)].append(c)
    quota_per_unit: dict[str, list[CaseFact]] = defaultdict(list)
    for c in quota_pool:
        quota_per_unit[c.unit(by)].append(c)
    known = places.known_units(by)  # the grid file's order, then units only cases name (a camera, a redrawn cell), none last
    units = known + sorted(set(per_unit) - set(known), key=lambda u: (u == NONE_UNIT, u))
    scorer = _UnitScorer(sheet, by, period, tz, number_status, places)
    return ScoreTable(
        sheet=sheet.name, period=period.label, by=by, timezone=str(tz), include_candidates=sheet.include_candidates,
        points=sheet.points, cases_counted=len(counted), generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        voided_by_platform=sum(c.voided_by_platform for c in cases),
        items=[{"section": s.id, "section_name": s.name, "id": i.id, "name": i.name} for s, i in sheet.items()],
        units=[scorer.score(u, per_unit.get(u, []), quota_per_unit.get(u, [])) for u in units],
        warnings=list(number_status.warnings) if number_status is not None else [],
        awaiting_review=0 if sheet.include_candidates else sum(c.state is CaseState.CANDIDATE and not c.confirmed for c in cases),
    )


def score_store(engine: Engine, places: Places, sheet: Sheet, by: Unit, period: Period, tz: ZoneInfo,
                number_status: NumberStatus | None = None) -> ScoreTable:
    """Read the period's cases (and, for quotas, earlier cases of the quota types) and score them."""
    start, end = period.bounds(tz)
    cases = load_cases(engine, places, CaseFilter(start=start, end=end))
    quota_types = tuple(sorted({t for _, i in sheet.items() if i.per is Per.QUOTA for t in i.types}))
    quota_cases = load_cases(engine, places, CaseFilter(types=quota_types, end=end)) if quota_types else []
    return score_cases(sheet, by, period, tz, cases, places, quota_cases=quota_cases, number_status=number_status)


def _case_rows(head: list[Any], numbers: list[Any], cases: list[str], note: str | None = None) -> list[list[Any]]:
    """One row: `head`, `numbers`, the case ids (and `note`); case ids that do not fit one Excel cell go on on rows
    of their own under the same `head`, without the numbers (a sum of the column stays the deductions') and marked 续."""
    first, *rest = cell_runs(cases)
    tail, more = ([], []) if note is None else ([note], ["续 continued"])
    return [head + numbers + [first] + tail] + [head + [None] * len(numbers) + [run] + more for run in rest]


def _shown(item: ItemScore) -> float | str:
    """An item's cell in the 得分 Scores sheet: its deduction (negative), or why it was not scored."""
    return item.unscored or -item.deduction


def _minute(at: str, zone: str) -> str:
    """A group's time as the workbook's other times read, local to the minute: the call-out list's cut-offs are kept in
    UTC, and cut at 16 characters an ISO time showed `2026-11-12T02:20` for a number cut off at 10:20 in Shanghai."""
    return local_time(at, zone)[:16]


def score_tables(table: ScoreTable) -> list[Table]:
    """The score table as sheets for Excel: scores, deductions with their cases, groups, and what was scored with
    the warnings of its sources (说明 About, one 提醒 row each, as the city page lists the registers' imports')."""
    from pipelines.analytics.places import UNIT_NAMES_ZH

    unit_col = f"{UNIT_NAMES_ZH[table.by]} {table.by}"
    scores = Table("scores", "得分 Scores", [unit_col, "得分 score", "满分 points"] + [i["name"] for i in table.items])
    details = Table("deductions", "扣分明细 Deductions",
                    [unit_col, "分项 section", "扣分项 item", "计数 count", "扣分 deduction", "案件 cases", "说明 note"])
    groups = Table("groups", "马路市场与号码 Groups", [unit_col, "扣分项 item", "明细 detail", "扣分 deduction", "案件 cases"])
    for u in table.units:
        scores.rows.append([u.label, u.score, u.points] + [_shown(u.item(i["id"])) for i in table.items])
        for s in u.sections:
            for i in s.items:
                if i.count or i.deduction or i.note:
                    details.rows += _case_rows([u.label, s.name, i.name], [i.count, -i.deduction], i.cases, i.note or "")
                for g in i.groups:
                    what = (f"{g['place_name']} {_minute(g['start'], table.timezone)} · {g['stalls']} 摊 stalls · {g['band']}"
                            if "stalls" in g else f"{g['number']} 停机 {_minute(g['cut_off_at'], table.timezone)}")
                    groups.rows += _case_rows([u.label, i.name, what], [-g.get("deduction", 0)], g["cases"])
            if (over := s.over_cap) > 0:
                details.rows.append([u.label, s.name, CAPPED, None, over, "", s.cap_note])
    about = Table("about", "说明 About", ["项目 field", "值 value"], [
        ["评分细则 sheet", table.sheet], ["期间 period", table.period], ["单位 by", table.by],
        ["时区 time zone", table.timezone], ["计入候选案件 include candidates", table.include_candidates],
        ["计分案件数 cases counted", table.cases_counted],
        [f"{VOIDED_BY_PLATFORM}（不计分） voided by platform (not scored)", table.voided_by_platform],
        [f"{AWAITING_REVIEW} awaiting review (not scored)", table.awaiting_review],
        [f"生成时间 generated ({table.timezone})", local_time(table.generated_at, table.timezone)]]
        + [["提醒 warning", w] for w in table.warnings])  # staff read the workbook, not the JSON: the cut-off file's rows to check
    return [scores, details, groups, about]
