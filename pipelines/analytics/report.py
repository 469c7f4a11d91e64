"""Analysis reports (日研判、周提示、月通报、季分析、年总结) for one period, from the case store.

`build_report` counts; `write_report` writes `report.html` (self-contained, charts inline),
`report.pdf` (one chart page after another, `PAGES`), `report.xlsx` (every table) and
`report.json` (the same tables for machines, and what the service lists). Counts are of cases
opened in the period that were not rejected (a rejected case is a false alarm, not a problem in
the street); the state table shows the rejected ones too. The summary's rejected are those rejected here (a reviewer,
a triage withdrawal), the false findings; a case its platform voided after approval here (平台作废) is counted
apart, its why not known here, in the state table too. An empty period gives the same files
with zeros and "no cases" on the charts.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.engine import Engine

from detect.config_io import replaced_atomically, write_text_atomic
from detect.taxonomy import Severity, Taxonomy
from pipelines.analytics.casedata import VOIDED_BY_PLATFORM, CaseFact, CaseFilter, Handling, handling_times, load_cases
from pipelines.analytics.export import local_time
from pipelines.analytics.periods import NAMES_ZH, Period
from pipelines.analytics.places import NONE_UNIT, UNIT_NAMES_ZH, Places
from pipelines.analytics.scoring import shop_of
from pipelines.analytics.tables import Table, write_xlsx
from pipelines.cases.states import STATE_NAMES_ZH, CaseState

if TYPE_CHECKING:
    # Matplotlib (about 1.3 s with its PDF backend) is imported where a report is built or drawn: serve's analytics
    # routes import this module for FILES alone.
    from matplotlib.figure import Figure

    from pipelines.analytics import charts

# The PDF's pages in order: (key, title). Every report has all of them, empty or not.
PAGES = [
    ("summary", "概况 Summary"),
    ("by_type", "按类型与严重程度 By type and severity"),
    ("by_day", "按日期 By day"),
    ("by_hour", "按时段 By hour of day"),
    ("by_area", "按网格与街道 By grid cell and street"),
    ("hot_spots", "热点与重复 Hot spots and repeats"),
    ("handling", "处置效率 Handling times"),
]
FILES = ("report.html", "report.pdf", "report.xlsx", "report.json")
TABLES = ["summary", "by_state", "by_type", "by_severity", "by_day", "by_hour", "by_grid", "by_street", "by_squad", "hot_spots",
          "repeat_places", "repeat_shops", "repeat_numbers", "repeat_cameras", "handling"]
"""The tables in the order people read them, the summary first: the HTML's sections and the workbook's sheets (it opened
on 按状态 By state, the summary its last sheet but 说明 About, as the tables were built)."""
TOP = 10


@dataclass
class Report:
    period: Period
    previous: Period
    timezone: str
    title: str
    generated_at: str
    font: charts.FontChoice
    summary: dict[str, Any]
    tables: dict[str, Table]
    series: dict[str, Any] = field(default_factory=dict)  # chart data not kept as a table (by day per type)

    def generated_local(self) -> str:
        """When the report was made, in its time zone as every other time in it (`generated_at` is UTC, the files'
        record): the HTML said '2026-12-01T16:05:00+00:00 UTC', 00:05 on the 2nd in Shanghai."""
        return local_time(self.generated_at, self.timezone)

    def meta(self) -> dict[str, Any]:
        return {"title": self.title, "kind": self.period.kind, "label": self.period.label,
                "start": self.period.start.isoformat(), "end": self.period.end.isoformat(),
                "previous": self.previous.label, "timezone": self.timezone, "generated_at": self.generated_at,
                "font": self.font.describe(), "summary": self.summary, "files": list(FILES)}


def _short(taxonomy: Taxonomy, type_id: str) -> str:
    vt = taxonomy.types.get(type_id)
    return vt.short_name_zh if vt else type_id


def _spot(c: CaseFact, places: Places) -> str | None:
    """Where a case was, as a person would name the spot: the camera's zone, else the address, the grid cell, or its
    coordinates to about 100 m (`坐标约 30.274, 120.155`); None when nothing places it. A camera and its zone go by the
    names their scene gives them, the id after (`摄像头 北门路口 (cam-01) · 北门人行道 (curb)`); ids alone were all the
    hot spots showed, which city staff do not know. Photos without a place (a WeChat photo has no GPS) are no spot: as
    one "(未标注 none)" spot they topped the hot spots of a city whose inspectors send such photos."""
    if c.source_kind == "camera":
        return places.camera_zone_label(c.source_id, c.zone_id)
    if c.address:
        return c.address
    if c.grid_cell:
        return places.cell_label(c.grid_cell)
    if c.lat is not None and c.lon is not None:
        return f"坐标约 {c.lat:.3f}, {c.lon:.3f}"
    return None


def _shop_name(c: CaseFact, places: Places) -> str:
    """The shop `shop_of` counts a case under, as a person names it: the shop the case names, else its camera and
    frontage zone as the hot spots name them. The table showed the scores' keys, `shop:老王面馆` and
    `zone:cam-01/frontage-a`."""
    if c.shop:
        return c.shop
    return _spot(c, places) if c.source_kind == "camera" and c.zone_id else f"案件 {c.id}"


def _change(now: int, before: int) -> str:
    diff = now - before
    pct = f" ({diff / before:+.0%})" if before else ""
    return f"{diff:+d}{pct}"


def _hours(values: list[float | None]) -> tuple[int, float | None, float | None]:
    xs = [v for v in values if v is not None]
    if not xs:
        return 0, None, None
    return len(xs), round(float(np.median(xs)), 2), round(float(np.percentile(xs, 90, method="inverted_cdf")), 2)


VOIDED_ROW = "voided_by_platform"
"""The by-state table's row of the cases their platform voided after approval here (the summary's key too)."""
CONFIRMED_ROW, CONFIRMED_NAME = "confirmed_not_dispatched", "已确认未派遣"
"""The by-state table's row of the candidates a reviewer confirmed without dispatching them (`CaseStore.approve`)."""


def _state_row(c: CaseFact) -> str:
    if c.voided_by_platform:
        return VOIDED_ROW
    return CONFIRMED_ROW if c.state is CaseState.CANDIDATE and c.confirmed else c.state.value


def _by_state(cases: list[CaseFact]) -> Table:
    """Cases by state, as the summary counts them: the `candidate` row those awaiting review (the summary's 待审), those
    a reviewer confirmed without dispatch in a row of their own after it, 已确认未派遣 (the store's `candidate` state
    too: counted with them, a month's 42 待审核 stood beside the summary's 5 待审 on one page); the `rejected` row those
    rejected here, those their dispatch platform voided after approval here (`CaseFact.voided_by_platform`, in the
    store's `rejected` state too) in a row of their own after it, 平台作废, so that no one reads a platform's voiding
    as a false finding here. The rows add up to every case of the period."""
    states = Counter(_state_row(c) for c in cases)
    after = {CaseState.CANDIDATE: (CONFIRMED_ROW, CONFIRMED_NAME), CaseState.REJECTED: (VOIDED_ROW, VOIDED_BY_PLATFORM)}
    rows: list[list[Any]] = []
    for s in CaseState:
        rows.append([s.value, STATE_NAMES_ZH[s], states.get(s.value, 0)])
        if s in after:
            key, name = after[s]
            rows.append([key, name, states.get(key, 0)])
    return Table("by_state", "按状态 By state", ["状态 state", "名称 name", "案件数 cases"], rows)


def build_report(engine: Engine, places: Places, taxonomy: Taxonomy, period: Period, tz: ZoneInfo) -> Report:
    from pipelines.analytics import charts

    start, end = period.bounds(tz)
    everything = load_cases(engine, places, CaseFilter(start=start, end=end))
    cases = [c for c in everything if c.state is not CaseState.REJECTED]
    previous = period.previous()
    p_start, p_end = previous.bounds(tz)
    before = [c for c in load_cases(engine, places, CaseFilter(start=p_start, end=p_end)) if c.state is not CaseState.REJECTED]
    local = {c.id: c.at.astimezone(tz) for c in cases}
    tables: dict[str, Table] = {}

    def add(t: Table) -> None:
        tables[t.key] = t

    add(_by_state(everything))

    now_types, before_types = Counter(c.violation_type for c in cases), Counter(c.violation_type for c in before)
    type_ids = sorted(set(now_types) | set(before_types), key=lambda t: (-now_types[t], t))
    add(Table("by_type", "按类型 By type", ["类型 type", "名称 name", "本期 this period", f"上期 previous ({previous.label})", "变化 change"],
              [[t, _short(taxonomy, t), now_types[t], before_types[t], _change(now_types[t], before_types[t])] for t in type_ids]))

    now_sev, before_sev = Counter(c.severity for c in cases), Counter(c.severity for c in before)
    add(Table("by_severity", "按严重程度 By severity", ["程度 severity", "名称 name", "本期 this period", f"上期 previous ({previous.label})", "变化 change"],
              [[s.value, s.name_zh, now_sev[s], before_sev[s], _change(now_sev[s], before_sev[s])] for s in Severity]))

    monthly = len(period.days) > 92
    bins = sorted({d.strftime("%Y-%m") for d in period.days}) if monthly else [d.isoformat() for d in period.days]
    per_bin: dict[str, Counter] = defaultdict(Counter)
    for c in cases:
        per_bin[local[c.id].strftime("%Y-%m") if monthly else local[c.id].date().isoformat()][c.violation_type] += 1
    shown_types = [t for t in type_ids if now_types[t]]
    add(Table("by_day", "按月 By month" if monthly else "按日 By day", ["日期 date", "合计 total"] + [_short(taxonomy, t) for t in shown_types],
              [[b, sum(per_bin[b].values())] + [per_bin[b][t] for t in shown_types] for b in bins]))

    hours = Counter(local[c.id].hour for c in cases)
    add(Table("by_hour", "按时段 By hour of day", ["时 hour", "案件数 cases"], [[h, hours[h]] for h in range(24)]))

    grid_counts = Counter(c.grid_cell or NONE_UNIT for c in cases)
    add(Table("by_grid", "按网格 By grid cell", ["网格 grid", "名称 name", "街道 street", "中队 squad", "案件数 cases"],
              [[g, getattr(places.cells.get(g), "name", None), places.street_of(g), places.squad_of(g), n]
               for g, n in sorted(grid_counts.items(), key=lambda kv: (-kv[1], kv[0]))]))
    for unit, title in (("street", "按街道 By street"), ("squad", "按中队 By squad")):
        counted = Counter(c.unit(unit) for c in cases)
        add(Table(f"by_{unit}", title, [f"{UNIT_NAMES_ZH[unit]} {unit}", "案件数 cases"],
                  [[k, n] for k, n in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))]))

    spots: dict[str, list[CaseFact]] = defaultdict(list)
    for c in cases:
        if (spot := _spot(c, places)) is not None:
            spots[spot].append(c)

    def days_of(group: list[CaseFact]) -> int:
        return len({local[c.id].date() for c in group})

    def grids_of(group: list[CaseFact]) -> list[str]:
        """Every cell the cases fall in, the one with most first: a camera's spot or an address on a cell's edge is
        in two, and naming the first case's alone sent a district head to one squad for both."""
        counted = Counter(c.grid_cell or NONE_UNIT for c in group)
        return sorted(counted, key=lambda g: (-counted[g], g))

    def main_type(group: list[CaseFact]) -> str:
        return _short(taxonomy, Counter(c.violation_type for c in group).most_common(1)[0][0])

    ranked = sorted(spots.items(), key=lambda kv: (-len(kv[1]), -days_of(kv[1]), kv[0]))
    add(Table("hot_spots", "热点 Top hot spots", ["地点 spot", "网格 grids", "案件数 cases", "天数 days", "主要类型 main type"],
              [[s, grids_of(g), len(g), days_of(g), main_type(g)] for s, g in ranked[:TOP]]))
    add(Table("repeat_places", "重复地点 Repeat places", ["地点 spot", "网格 grids", "天数 days", "案件数 cases", "末次 last"],
              [[s, grids_of(g), days_of(g), len(g), f"{max(local[c.id] for c in g):%Y-%m-%d %H:%M}"]
               for s, g in sorted(spots.items(), key=lambda kv: (-days_of(kv[1]), -len(kv[1]), kv[0])) if days_of(g) >= 2]))
    shops: dict[str, list[CaseFact]] = defaultdict(list)
    for c in cases:
        if c.violation_type == "shopfront_spillover":
            shops[shop_of(c)].append(c)
    add(Table("repeat_shops", "重复商户 Repeat shops", ["商户 shop", "地址 address", "天数 days", "案件数 cases"],
              [[_shop_name(g[0], places), g[0].address, days_of(g), len(g)]
               for k, g in sorted(shops.items(), key=lambda kv: (-days_of(kv[1]), kv[0])) if days_of(g) >= 2]))
    numbers: dict[str, list[CaseFact]] = defaultdict(list)
    for c in cases:
        for n in c.phones:
            numbers[n].append(c)
    add(Table("repeat_numbers", "重复号码 Repeat numbers", ["号码 number", "案件数 cases", "网格 grids", "首次 first", "末次 last"],
              [[n, len(g), grids_of(g), f"{min(local[c.id] for c in g):%Y-%m-%d}",
                f"{max(local[c.id] for c in g):%Y-%m-%d}"]
               for n, g in sorted(numbers.items(), key=lambda kv: (-len(kv[1]), kv[0])) if len(g) >= 2]))
    cams: dict[str, list[CaseFact]] = defaultdict(list)
    for c in cases:
        if c.camera:
            cams[c.camera].append(c)
    add(Table("repeat_cameras", "重复摄像头 Repeat cameras", ["摄像头 camera", "案件数 cases", "天数 days", "主要类型 main type"],
              [[places.camera_label(k), len(g), days_of(g), main_type(g)] for k, g in sorted(cams.items(), key=lambda kv: (-len(kv[1]), kv[0]))
               if len(g) >= 2]))

    handled = handling_times(engine, [c.id for c in everything])
    by_type_h: dict[str, list[Handling]] = defaultdict(list)
    for c in everything:
        if c.id in handled:
            by_type_h[c.violation_type].append(handled[c.id])
            by_type_h["*"].append(handled[c.id])
    rows = []
    for t in [t for t in sorted(by_type_h) if t != "*"] + (["*"] if by_type_h else []):
        hs = by_type_h[t]
        r, rm, _ = _hours([h.to_review for h in hs])
        d, dm, _ = _hours([h.to_dispatch for h in hs])
        k, km, kp = _hours([h.to_close for h in hs])
        rows.append(["合计 all" if t == "*" else _short(taxonomy, t), len(hs), r, rm, d, dm, k, km, kp])
    add(Table("handling", "处置效率 Handling times (hours)",
              ["类型 type", "案件 cases", "已审核 reviewed", "审核中位 h", "已派遣 dispatched", "派遣中位 h", "已结案 closed",
               "结案中位 h", "结案P90 h"], rows))

    total, total_before = len(cases), len(before)
    summary = {
        "cases": total, "previous_cases": total_before, "change": _change(total, total_before),
        "confirmed": sum(c.confirmed for c in cases),
        "unreviewed": sum(c.state is CaseState.CANDIDATE and not c.confirmed for c in cases),
        "rejected": sum(c.rejected_here for c in everything),
        "voided_by_platform": sum(c.voided_by_platform for c in everything),
        "closed": sum(c.state.value in ("closed", "verified_cleared") for c in cases),
        "grid_cells": len({c.grid_cell for c in cases if c.grid_cell}),
        # the cameras with cases, beside the cases each source found: '摄像头 cameras 2' over '照片案件 photo cases 37' read
        # as 2 camera cases of 68
        "cameras": len(cams), "camera_cases": sum(c.source_kind == "camera" for c in cases),
        "photo_cases": sum(c.source_kind != "camera" for c in cases),
        "unplaced": total - sum(len(g) for g in spots.values()),  # the cases `_spot` placed nowhere
    }
    # the state's one name; a platform's voiding (平台作废) is counted apart, not as a false finding here
    void = STATE_NAMES_ZH[CaseState.REJECTED]
    labels = {"cases": f"案件数（不含{void}、{VOIDED_BY_PLATFORM}）cases (not rejected nor voided by platform)", "previous_cases": f"上期 previous ({previous.label})",
              "change": "变化 change", "confirmed": "已确认 confirmed", "unreviewed": "待审 unreviewed", "rejected": f"{void} rejected",
              "voided_by_platform": f"{VOIDED_BY_PLATFORM} voided by platform",
              "closed": "已结案 closed", "grid_cells": "涉及网格 grid cells", "cameras": "涉及摄像头 cameras with cases",
              "camera_cases": "摄像头案件 camera cases", "photo_cases": "照片案件 photo cases",
              "unplaced": "无地点（不计入热点）without a place (not in hot spots)"}
    add(Table("summary", "概况 Summary", ["指标 measure", "数值 value"], [[labels[k], v] for k, v in summary.items()]))
    title = f"{NAMES_ZH[period.kind]} {period.label}"
    return Report(period, previous, str(tz), title, datetime.now(UTC).isoformat(timespec="seconds"), charts.pick_font(),
                  summary, tables, {"by_day": {_short(taxonomy, t): [per_bin[b][t] for b in bins] for t in shown_types},
                                    "bins": bins})


# ---- rendering ------------------------------------------------------------------------------

def _figures(r: Report) -> list[tuple[str, str, Figure]]:
    """One figure per entry of PAGES (built inside the font style)."""
    from pipelines.analytics import charts

    subtitle = (f"{r.period.span} · {r.timezone} · "
                f"字体 font: {r.font.name} · 生成 generated {r.generated_local()}")
    t = r.tables
    out = []
    for key, title in PAGES:
        fig = charts.page(f"{r.title} · {title}", subtitle)
        if key == "summary":
            ax = fig.add_axes((0.05, 0.45, 0.45, 0.42))
            # the measures' column wide enough for the longest (the cases' 58 characters): at half the width it was cut
            charts.table(ax, "概况 Summary", t["summary"].columns, t["summary"].rows, max_rows=14, max_chars=60,
                         widths=[0.82, 0.18])
            ax2 = fig.add_axes((0.52, 0.45, 0.43, 0.42))
            charts.table(ax2, f"按状态 By state (含{STATE_NAMES_ZH[CaseState.REJECTED]}、{VOIDED_BY_PLATFORM} incl. rejected and voided)",
                         t["by_state"].columns, t["by_state"].rows, max_rows=12)
            ax3 = fig.add_axes((0.05, 0.05, 0.9, 0.33))
            charts.table(ax3, "较上期 Change against the previous period", t["by_type"].columns[1:],
                         [row[1:] for row in t["by_type"].rows], max_rows=9)
            fig.text(0.05, 0.02, f"报告字体 Report font: {r.font.describe()}", fontsize=8, color="#567")
        elif key == "by_type":
            rows = t["by_type"].rows
            charts.hbars(fig.add_axes((0.2, 0.34, 0.75, 0.52)), [row[1] for row in rows], [row[2] for row in rows],
                         "本期与上期 This period and the previous", previous=[row[3] for row in rows])
            rows = t["by_severity"].rows
            charts.hbars(fig.add_axes((0.2, 0.07, 0.75, 0.18)), [f"{row[1]} {row[0]}" for row in rows], [row[2] for row in rows],
                         t["by_severity"].title, previous=[row[3] for row in rows])
        elif key == "by_day":
            charts.stacked_columns(fig.add_axes((0.07, 0.14, 0.9, 0.72)), r.series["bins"], r.series["by_day"],
                                   t["by_day"].title)
        elif key == "by_hour":
            rows = t["by_hour"].rows
            charts.columns(fig.add_axes((0.07, 0.1, 0.9, 0.76)), [str(row[0]) for row in rows], [row[1] for row in rows],
                           "一天中各时段的案件 Cases by local hour of opening", "时 hour")
        elif key == "by_area":
            grid = t["by_grid"].rows[:15]
            charts.hbars(fig.add_axes((0.16, 0.08, 0.32, 0.78)), [row[1] or row[0] for row in grid],
                         [row[4] for row in grid], "网格 Top grid cells")
            street = t["by_street"].rows[:15]
            charts.hbars(fig.add_axes((0.62, 0.08, 0.34, 0.78)), [row[0] for row in street], [row[1] for row in street],
                         "街道 Streets")
        elif key == "hot_spots":
            # the hot spots whole (the TOP the HTML and Excel list: 8 of them left two out); the repeats, as many rows
            # in a box as high, their first TOP, the title saying of how many (charts.table)
            for (name, box) in (("hot_spots", (0.05, 0.5, 0.9, 0.37)), ("repeat_numbers", (0.05, 0.05, 0.42, 0.38)),
                                ("repeat_cameras", (0.53, 0.05, 0.42, 0.38))):
                charts.table(fig.add_axes(box), t[name].title, t[name].columns, t[name].rows, max_rows=TOP)
        elif key == "handling":
            # the types with a closed case: a type none closed has no median, and a bar of 0 read as closed at once
            rows = [row for row in t["handling"].rows if not str(row[0]).startswith("合计") and row[7] is not None]
            ax = fig.add_axes((0.2, 0.42, 0.75, 0.44))
            charts.hbars(ax, [row[0] for row in rows], [row[7] for row in rows], "结案用时中位数 Median hours to close",
                         unit="小时 hours", nothing="本期无结案案件 No case of this period closed yet", counts=False)
            charts.table(fig.add_axes((0.05, 0.04, 0.9, 0.3)), t["handling"].title, t["handling"].columns, t["handling"].rows,
                         max_chars=16)
        out.append((key, title, fig))
    return out


def _html(r: Report, svgs: list[tuple[str, str, str]]) -> str:
    env = Environment(loader=PackageLoader("pipelines.analytics", "templates"), autoescape=select_autoescape(["html"]))
    return env.get_template("report.html").render(
        r=r, meta=r.meta(), rejected=STATE_NAMES_ZH[CaseState.REJECTED], voided=VOIDED_BY_PLATFORM, charts=[(k, title, Markup(s)) for k, title, s in svgs], tables=[r.tables[k] for k in TABLES])


def write_report(r: Report, out: str | Path) -> dict[str, Path]:
    """Write the four files into `out`; returns them by name. Each is written beside its name and renamed onto it
    (`replaced_atomically`), so a run stopped half way (Ctrl-C, a full disk) leaves no truncated file that the
    service lists as a report, and a file written earlier as it was."""
    from matplotlib.backends.backend_pdf import PdfPages

    from pipelines.analytics import charts

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in FILES}
    with charts.style(r.font):
        figures = _figures(r)
        with replaced_atomically(files["report.pdf"]) as tmp, \
                PdfPages(tmp, metadata={"Title": r.title, "Subject": f"streetwatch {r.period.kind} report"}) as pdf:
            for _, _, fig in figures:
                pdf.savefig(fig)
        svgs = [(k, title, charts.svg(fig)) for k, title, fig in figures]
    write_text_atomic(files["report.html"], _html(r, svgs))
    write_xlsx(files["report.xlsx"], [r.tables[k] for k in TABLES] + [Table("about", "说明 About", ["项目 field", "值 value"],
                                                                    [[k, json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v]
                                                                     for k, v in r.meta().items()])])
    data = {**r.meta(), "tables": {k: {"title": t.title, "columns": t.columns, "rows": t.rows} for k, t in r.tables.items()}}
    write_text_atomic(files["report.json"], json.dumps(data, ensure_ascii=False, indent=1, default=str))
    return files
