"""`streetwatch score` and `streetwatch report`: the city's assessment scores and analysis reports (docs/analytics.md)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import SettingsOpt, existing_store_or_fail, fail, print_warning, settings_or_fail

UnitOpt = Annotated[str, typer.Option("--by", help="Score per grid (网格), street (街道), squad (中队) or camera (摄像头).")]


def _analytics(config: Path | None):
    """Settings, their analytics section, the time zone, the map places and the case store (or one clear error)."""
    from zoneinfo import ZoneInfo

    from detect.config_io import ConfigError
    from pipelines.analytics.places import load_places

    settings = settings_or_fail(config)
    try:
        places = load_places(settings.analytics, cameras_file=settings.service.cameras_file)
    except ConfigError as exc:
        fail(str(exc))
    return settings, ZoneInfo(settings.analytics.timezone), places, existing_store_or_fail(settings.cases.url)


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score(
        period: Annotated[str, typer.Option("--period", help="2026-11 (month), 2026-Q4, 2026, 2026-W45 or 2026-11-03.")],
        by: UnitOpt = "grid",
        sheet: Annotated[Path | None, typer.Option("--sheet", help="Scoring sheet YAML (default: analytics.sheet, else the shipped example).")] = None,
        cutoffs: Annotated[Path | None, typer.Option("--cutoffs", help="CSV or Excel file of numbers cut off (number,cut_off_at) for quota items (default: analytics.cutoffs).")] = None,
        out: Annotated[Path, typer.Option("--out", help="Folder for scores-<period>-<by>.xlsx and .json.")] = Path("."),
        details: Annotated[bool, typer.Option("--details/--no-details", help="Print every deduction with the cases behind it under the table (the .xlsx and .json have them either way).")] = True,
        config: SettingsOpt = None,
    ) -> None:
        """Score an assessment sheet for a period: score per unit, deductions per item and the cases behind each."""
        from detect.config_io import ConfigError, write_text_atomic
        from pipelines.analytics.periods import PeriodError, parse_period
        from pipelines.analytics.places import UNITS
        from pipelines.analytics.scoring import AWAITING_REVIEW, score_store, score_tables
        from pipelines.analytics.sheet import load_sheet
        from pipelines.analytics.tables import write_xlsx
        from pipelines.cityops.callout import number_status_source

        if by not in UNITS:
            fail(f"--by {by!r}: one of {', '.join(UNITS)}")
        try:
            when = parse_period(period)
        except PeriodError as exc:
            fail(f"--period: {exc}")
        settings, tz, places, store = _analytics(config)
        try:
            places.check_unit(by)
        except ConfigError as exc:
            fail(f"--by {by}: {exc}")
        try:
            the_sheet = load_sheet(sheet or settings.analytics.sheet)
            status = number_status_source(settings.analytics, store.engine, tz, cutoffs)
        except ConfigError as exc:
            fail(str(exc))
        table = score_store(store.engine, places, the_sheet, by, when, tz, status)
        store.close()
        _print_scores(table, details)
        if table.awaiting_review:
            typer.echo(f"{counted(table.awaiting_review, 'case')} of {table.period} {'awaits' if table.awaiting_review == 1 else 'await'} review and {'is' if table.awaiting_review == 1 else 'are'} not scored ({AWAITING_REVIEW}; "
                       "the sheet counts confirmed cases only, include_candidates: false): confirm or reject them on /ui/queue")
        for warning in table.warnings:
            print_warning(warning)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"scores-{when.label}-{by}"
        write_xlsx(stem.with_suffix(".xlsx"), score_tables(table))
        write_text_atomic(stem.with_suffix(".json"), json.dumps(table.to_json(), ensure_ascii=False, indent=1))
        typer.echo(f"wrote {stem}.xlsx and {stem}.json")

    @app.command("report")
    def report(
        period: Annotated[str, typer.Option("--period", help="day (日研判), week (周提示), month (月通报), quarter (季分析) or year (年总结).")],
        on: Annotated[str | None, typer.Option("--date", help="A day in the period, YYYY-MM-DD (default: yesterday, local time).")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: analytics.reports_dir/<period>-<label>, which the service lists).")] = None,
        config: SettingsOpt = None,
    ) -> None:
        """Write an analysis report for a period: report.html, report.pdf (charts), report.xlsx (tables), report.json."""
        from detect.taxonomy import load_taxonomy
        from pipelines.analytics.periods import KINDS, PeriodError, check_year, default_day, period_of
        from pipelines.analytics.casedata import VOIDED_BY_PLATFORM
        from pipelines.analytics.report import build_report, write_report

        if period not in KINDS:
            fail(f"--period {period!r}: one of {', '.join(KINDS)}")
        settings, tz, places, store = _analytics(config)
        try:
            day = date.fromisoformat(on) if on else default_day(tz)
        except ValueError as exc:
            fail(f"--date {on!r}: {exc} (use YYYY-MM-DD)")
        try:  # a day in year 1 or 9999 has a period whose bounds or previous period overflow Python's dates
            check_year(day.year, f"--date {on!r}")
        except PeriodError as exc:
            fail(str(exc))
        when = period_of(period, day)
        data = build_report(store.engine, places, load_taxonomy(), when, tz)
        files = write_report(data, out or settings.analytics.reports_dir / f"{when.kind}-{when.label}")
        store.close()
        s = data.summary
        typer.echo(f"{data.title}: {counted(s['cases'], 'case')} (previous {data.previous.label}: {s['previous_cases']}, {s['change']}), "
                   f"{s['confirmed']} confirmed, {s['unreviewed']} unreviewed, {s['rejected']} rejected, "
                   f"{s['voided_by_platform']} voided by platform ({VOIDED_BY_PLATFORM})")
        typer.echo(f"font: {data.font.describe()}")
        for path in files.values():
            typer.echo(f"wrote {path}")


def _print_scores(table, details: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipelines.analytics.places import UNIT_NAMES_ZH
    from pipelines.analytics.scoring import NOT_APPLICABLE

    console = Console()
    grid = Table(title=f"{table.sheet} · {table.period} · {UNIT_NAMES_ZH[table.by]} {table.by} · 满分 {table.points:g}")
    grid.add_column(table.by)
    grid.add_column("得分 score", justify="right")
    for item in table.items:
        grid.add_column(item["id"], justify="right")
    for u in table.units:
        grid.add_row(u.unit, f"{u.score:g}", *[_cell(u.item(i["id"])) for i in table.items])
    console.print(grid)
    for i in table.items:
        console.print(f"  {i['id']}: {i['section_name']} · {i['name']}")
    if not details:
        return
    for u in table.units:
        for s in u.sections:
            for item in s.items:
                if item.deduction or item.note and item.unscored != NOT_APPLICABLE:
                    cases = ", ".join(item.cases) or "-"
                    note = f" ({item.note})" if item.note else ""
                    console.print(f"{u.unit} · {item.name}: -{item.deduction:g} for {item.count}{note}: {cases}", highlight=False)
            if s.over_cap > 0:
                console.print(f"{u.unit} · {s.name}: +{s.over_cap:g} ({s.cap_note})", highlight=False)


def _cell(item) -> str:
    if item.unscored:
        return item.unscored
    return f"-{item.deduction:g} ({item.count})" if item.deduction else "0"
