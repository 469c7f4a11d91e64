"""The city's accounts over HTTP: scores for a sheet and period, case exports, the map's layers
with counts, and the latest analysis reports (docs/analytics.md)."""

from __future__ import annotations

import logging
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import shapely
from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.accounts import Principal
from api.auth import READ_CASES
from api.context import AppContext, get_ctx
from api.exports import Export
from api.uploads import CHUNK
from api.problems import Problem, invalid, problems, unusable
from api.routers.pages import REPORT_HEADERS
from detect.cityzones import geometry_of
from detect.config_io import ConfigError, loaded_file, read_mapping
from pipelines.analytics.casedata import (IN_THE_STREET, CaseFact, CaseFilter, CasePoint, iter_cases, load_cases, load_points,
                                           newest_beyond)
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.export import COLUMNS, EXPORT_SHEET, FilterError, case_filter, export_rows
from pipelines.analytics.periods import PeriodError, last_days, parse_period
from pipelines.analytics.places import Places, load_places
from pipelines.analytics.report import FILES
from pipelines.analytics.scoring import ScoreTable, score_store, score_tables
from pipelines.analytics.sheet import Sheet, load_sheet
from pipelines.analytics.tables import Table, csv_chunks, write_xlsx_rows, xlsx_bytes
from pipelines.cityops.callout import number_status_source

router = APIRouter(tags=["analytics"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
MAP_CASES_LIMIT = 500
CSV = "text/csv; charset=utf-8"
Placed = TypeVar("Placed", CaseFact, CasePoint)  # a case as the map reads it: whole, or only where it is


class MapLayers(BaseModel):
    layers: dict[str, dict[str, Any]] = Field(
        description="`grid` and `zones`: GeoJSON FeatureCollections whose features carry `properties.count` (cases in the filter).")
    total: int = Field(description="Cases counted: those in the filter, at most analytics.map_max_cases.")
    unplaced: int = Field(description="Of them, cases in no grid cell of the grid file.")
    since: str | None = Field(
        description="No period given: the local day (YYYY-MM-DD) from which the cases of the last analytics.map_days "
                    "(30) days are counted; null when a period was given.")
    truncated: bool = Field(
        description="More cases matched than analytics.map_max_cases (20000): only that many, the newest, are counted; "
                    "a shorter period or a narrower filter counts them all.")
    tile_url: str | None = Field(description="XYZ tile URL drawn under the polygons (analytics.tile_url); null: none.")
    tile_attribution: str = Field(description="Credit line of the tiles.")


class MapCase(BaseModel):
    id: str
    type: str = Field(description="Violation type id.")
    state: str
    opened_at: str = Field(description="Local time (analytics.timezone), ISO 8601.")
    address: str | None
    grid_cell: str | None
    source_id: str = Field(description="Camera id or photo batch id.")
    objects: int = Field(description="Objects (stalls, vehicles) the case counts.")


class MapCases(BaseModel):
    layer: Literal["grid", "zones"]
    id: str = Field(description="Grid cell code or zone id.")
    total: int = Field(description="The feature's cases as the map counts them (its `count` on the map): those of the "
                                   "filter among the map's newest `max_cases`.")
    truncated: bool = Field(
        description="More cases of the filter matched on the whole map than `max_cases`: the map counted only that many, "
                    "the newest, and so do `total` and `items` (the map's own `truncated` for the filter); a shorter "
                    "period or a narrower filter counts them all.")
    max_cases: int = Field(description="analytics.map_max_cases (20000): the most cases of the filter, the newest, the map "
                                       "and each of its case lists count.")
    items: list[MapCase] = Field(description="The newest MAP_CASES_LIMIT (500) of the `total` cases, newest first.")


class ReportListing(BaseModel):
    """One report folder: what its report.json says (title, period, summary ...) and the files present."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Folder name; the files are at /api/v1/reports/{name}/{file}.")
    title: str | None = None
    kind: str | None = Field(None, description="day, week, month, quarter or year.")
    label: str | None = Field(None, description="The period, e.g. 2026-11.")
    generated_at: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict, description="Headline counts of the report.")
    files: list[str] = Field(description="Files of the report present in the folder.")


def _places_of(config_json: str, cameras_file: str | None) -> Places:
    return load_places(AnalyticsConfig.model_validate_json(config_json), cameras_file=Path(cameras_file) if cameras_file else None)


def sheet_for(ctx: AppContext) -> Sheet:
    """The deployment's scoring sheet (`analytics.sheet`, default the shipped example), loaded again when the file changes."""
    cfg = _config(ctx)
    try:
        return loaded_file(load_sheet, str(cfg.sheet) if cfg.sheet else None)
    except ConfigError as exc:
        raise unusable(ctx, "analytics", exc, "analytics-config") from None


def _config(ctx: AppContext) -> AnalyticsConfig:
    return ctx.settings.analytics


def _places(ctx: AppContext) -> Places:
    """The grid and zone files, and the names the cameras file's scenes give cameras and zones (the report's hot spots,
    the scores by camera, as the CLI's), loaded once and again when one of the files changes."""
    cfg = _config(ctx)
    cameras = ctx.settings.service.cameras_file
    try:
        return loaded_file(_places_of, cfg.model_dump_json(), str(cameras) if cameras else None)
    except ConfigError as exc:
        raise unusable(ctx, "analytics map files", exc, "analytics-config") from None


def _tz(ctx: AppContext) -> ZoneInfo:
    return ZoneInfo(_config(ctx).timezone)


def _filter(ctx: AppContext, **values: Any) -> CaseFilter:
    try:
        return case_filter(ctx.taxonomy, _tz(ctx), **values)
    except FilterError as exc:
        raise invalid(["query", exc.field], str(exc)) from None


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@dataclass
class ScorePage(ScoreTable):
    """The scores with a page of their units, in the table's order, and how many units there are: a district's 400 grid
    cells, each with its deductions and their cases, were one table of about 600 KiB."""

    total: int = 0  # units scored in all (every page)
    limit: int = 200
    offset: int = 0


@router.get("/scores", summary="Assessment scores for a period, per grid cell, street, squad or camera",
            response_model=ScorePage, responses={200: {"content": {XLSX: {}}}, **problems(401, 403, 422, 503)})
async def scores(
    ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES),
    period: str = Query(max_length=20, description="2026-11, 2026-Q4, 2026, 2026-W45 or 2026-11-03 (local time)."),
    by: Literal["grid", "street", "squad", "camera"] = Query("grid"),
    format: Literal["json", "xlsx"] = Query("json", description="json, or an Excel workbook (scores, deductions, groups)."),
    limit: int = Query(200, ge=1, le=500, description="At most this many units in the JSON (a page); the workbook has all."),
    offset: int = Query(0, ge=0, le=10_000_000, description="Skip this many units of the table (JSON)."),
) -> Any:
    """JSON on the threads every route shares, as before, a page of units; the Excel workbook, an export, whole, on the
    exports' own threads (`api.exports`) as the case and call-out exports are, 503 `exports-busy` when
    `service.export_queue` wait already."""
    if format == "json":
        table = await run_in_threadpool(_score_table, ctx, period, by)
        return ScorePage(**{**vars(table), "units": table.units[offset:offset + limit]}, total=len(table.units),
                         limit=limit, offset=offset)

    def build() -> Export:
        table = _score_table(ctx, period, by)
        return Export(xlsx_bytes(score_tables(table)), XLSX, _attachment(f"scores-{table.period}-{by}.xlsx"))

    return await ctx.exports.answer(build)


def _score_table(ctx: AppContext, period: str, by: str) -> ScoreTable:
    """The scores of `period` by `by` from the store (blocking), or the Problem saying why not."""
    try:
        when = parse_period(period)
    except PeriodError as exc:
        raise invalid(["query", "period"], str(exc)) from None
    cfg = _config(ctx)
    sheet = sheet_for(ctx)
    places = _places(ctx)
    try:
        places.check_unit(by)
        status = number_status_source(cfg, ctx.store.engine, _tz(ctx))
    except ConfigError as exc:
        raise unusable(ctx, "analytics", exc, "analytics-config") from None
    table = score_store(ctx.store.engine, places, sheet, by, when, _tz(ctx), status)
    table.warnings = [ctx.settings.named_by_setting(w) for w in table.warnings]  # the cut-off file as analytics.cutoffs
    return table


@router.get("/exports/cases", summary="Cases as CSV or Excel, with filters", response_class=Response,
            responses={200: {"content": {CSV: {}, XLSX: {}}}, **problems(401, 403, 422, 503)})
async def export_cases(
    ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES),
    format: Literal["csv", "xlsx"] = Query("csv"),
    type: list[str] = Query([], description="Violation type ids."),
    state: list[str] = Query([], description="Case states."),
    period: str | None = Query(None, max_length=20, description="Opened in this period (local time)."),
    since: str | None = Query(None, max_length=20, description=(
        "Opened on or after this local day (YYYY-MM-DD), within `period` if given too: /ui/map exports the days it "
        "counts without a period by sending its `since`.")),
    grid: list[str] = Query([], description="Grid cell codes."),
    street: list[str] = Query([], description="Streets (from the grid file)."),
    camera: list[str] = Query([], description="Camera ids or photo batch ids."),
    source: Literal["camera", "photo"] | None = Query(None),
    reviewed: bool | None = Query(None, description="Only reviewed (true) or unreviewed (false) cases."),
    severity: list[str] = Query([], description="Case severities: general (一般), major (较重), serious (严重)."),
) -> Response:
    """Read from the store a page at a time and streamed: CSV as it is read, Excel written row by row to a temporary
    file that is removed before it is sent. Built whole, 20,000 cases' Excel file held 153 MB of the server's memory.
    Run on the exports' own threads (`api.exports`): a burst of exports held every thread the other routes need; 503
    `exports-busy` when `service.export_queue` exports wait already."""

    def build() -> Export:
        places = _places(ctx)
        flt = _filter(ctx, types=type, states=state, period=period, since=since, grid_cells=grid, streets=street, cameras=camera,
                      source=source, reviewed=reviewed, severities=severity, known_streets=places.known_units("street"))
        found = iter_cases(ctx.store.engine, places, flt)
        first = list(islice(found, 1))  # the store is asked before the answer starts: unreachable is a 503, not a cut file
        rows = export_rows(chain(first, found), ctx.taxonomy, _tz(ctx))
        name = "cases-" + ("-".join(filter(None, [period, since and f"since-{since}"])) or "all")
        if format == "xlsx":
            return Export(_written_xlsx(rows), XLSX, _attachment(f"{name}.xlsx"))
        return Export((chunk.encode("utf-8") for chunk in csv_chunks(COLUMNS, rows)), CSV, _attachment(f"{name}.csv"))

    return await ctx.exports.answer(build)


def _written_xlsx(rows: Iterator[list]) -> Iterator[bytes]:
    """The export's workbook, written with `rows` in a temporary folder (openpyxl needs a file to write a zip into), the
    file open and the folder removed before the first byte is sent: no case list is left on the server, even when the
    client goes away half way."""
    with tempfile.TemporaryDirectory(prefix="cases-export-") as folder:
        path = write_xlsx_rows(Path(folder) / "cases.xlsx", Table(*EXPORT_SHEET, COLUMNS), rows)
        data = path.open("rb")
    with data:
        while chunk := data.read(CHUNK):
            yield chunk


def _feature_cases(ctx: AppContext, places: Places, layer: str, id: str, flt: CaseFilter) -> tuple[list[CaseFact], bool]:
    """The cases of one cell or zone among the map's newest `analytics.map_max_cases` of `flt`, as the map counts them,
    and whether more than those matched on the map (its `truncated`). A cell's list looked among the cell's own newest
    that many, a zone's among the map's, so a cell's total and `truncated` disagreed with its count on the map. Only
    the cases after the newest past the cap (found by its key alone) are read, of the cell, or in the zone's bounds and
    then tested against its polygon: the map's 20,000 cases read whole for each zone's list took about 1 s of it."""
    if layer == "grid" and id not in places.cells:  # an empty list read as a cell without cases, as for a zone
        raise Problem(404, f"no grid cell {id!r} on the map")
    zone = next((f for f in places.zone_features if f["properties"]["id"] == id), None) if layer == "zones" else None
    if layer == "zones" and zone is None:
        raise Problem(404, f"no zone {id!r} on the map")
    engine = ctx.store.engine
    edge = newest_beyond(engine, places, flt, _config(ctx).map_max_cases)
    if zone is None:
        return load_cases(engine, places, replace(flt, grid_cells=(id,)), after=edge), edge is not None
    near = load_cases(engine, places, flt, after=edge, within=geometry_of(zone["geometry"]).bounds)
    return _in_zones([zone], near)[0], edge is not None


def _in_zones(zones: list[dict[str, Any]], cases: list[Placed]) -> list[list[Placed]]:
    """The cases inside (or on the edge of) each zone polygon, in `cases`' order, cases without a position in none.
    The points are made once and indexed (an STRtree) for all the zones: rebuilt for each zone, 20,000 cases in 100
    zones took 1.2 s of each map."""
    located = [c for c in cases if c.lat is not None and c.lon is not None]
    found: list[list[Placed]] = [[] for _ in zones]
    if not located or not zones:
        return found
    points = shapely.STRtree(shapely.points([c.lon for c in located], [c.lat for c in located]))
    # (zone, point) pairs where the zone intersects the point, as shapely.intersects_xy judged each before
    zone_of, point_of = points.query([geometry_of(z["geometry"]) for z in zones], predicate="intersects")
    for z, i in sorted(zip(zone_of.tolist(), point_of.tolist())):
        found[z].append(located[i])
    return found


def _map_filter(ctx: AppContext, period: str | None, type: list[str], state: list[str],
                source: str | None) -> tuple[CaseFilter, str | None]:
    """The map's filter and, when no period is given, the first local day of its default window (the last
    `analytics.map_days` days): without one, every case the store ever held was read for the map. Without a state, the
    cases the reports count (`IN_THE_STREET`): a cell coloured for its false alarms disagreed with the report."""
    flt = _filter(ctx, types=type, states=state or list(IN_THE_STREET), period=period, source=source)
    if period:
        return flt, None
    first, start = last_days(_config(ctx).map_days, _tz(ctx))
    return replace(flt, start=start), first.isoformat()


def _newest(ctx: AppContext, places: Places, flt: CaseFilter,
            load: Callable[..., list[Placed]] = load_cases) -> tuple[list[Placed], bool]:
    """The map's cases of `flt` (as `load` reads them: `load_cases`, or `load_points` for counting), oldest first: at
    most `analytics.map_max_cases`, the newest, and whether more matched. The map and its case lists read no more, so
    a long period never loads a city's years of cases at once."""
    cap = _config(ctx).map_max_cases
    cases = load(ctx.store.engine, places, flt, newest=cap + 1)  # one more than counted says whether any were left
    truncated = len(cases) > cap
    return (cases[1:] if truncated else cases), truncated  # oldest first: the one over the cap is the oldest


_MAP_PERIOD = "2026-11, 2026-Q4, 2026, 2026-W45 or 2026-11-03 (local time); none: the last analytics.map_days (30) days."


@router.get("/map", summary="The map's layers (grid cells, zones) as GeoJSON with case counts",
            response_model=MapLayers, responses=problems(401, 403, 422, 503))
async def map_layers(
    ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES),
    period: str | None = Query(None, max_length=20, description=_MAP_PERIOD), type: list[str] = Query([]),
    state: list[str] = Query([]), source: Literal["camera", "photo"] | None = Query(None),
) -> Response:
    """Built on the exports' own threads (`api.exports`, `_gated_json`), 503 `exports-busy` past `service.export_queue`."""
    return await _gated_json(ctx, lambda: _map_layers(ctx, period, type, state, source))


def _map_layers(ctx: AppContext, period: str | None, type: list[str], state: list[str], source: str | None) -> MapLayers:
    """The map's layers with the counts of the filter's cases (blocking)."""
    places = _places(ctx)
    flt, since = _map_filter(ctx, period, type, state, source)
    cases, truncated = _newest(ctx, places, flt, load_points)
    zones = places.zone_features  # each zone id once (`check_zones`)
    counts = {"grid": Counter(c.grid_cell for c in cases),
              "zones": {f["properties"]["id"]: len(found) for f, found in zip(zones, _in_zones(zones, cases))}}
    layers = {}
    for layer in ("grid", "zones"):
        features = [{**f, "properties": {**f["properties"], "count": counts[layer][f["properties"]["id"]]}} for f in places.layer(layer)]
        layers[layer] = {"type": "FeatureCollection", "features": features}
    cfg = _config(ctx)
    return MapLayers(layers=layers, total=len(cases), unplaced=sum(c.grid_cell not in places.cells for c in cases),
                     since=since, truncated=truncated, tile_url=cfg.tile_url, tile_attribution=cfg.tile_attribution)


@router.get("/map/cases", summary="The cases of one grid cell or zone of the map", response_model=MapCases,
            responses=problems(401, 403, 404, 422, 503))
async def map_cases(
    ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES),
    layer: Literal["grid", "zones"] = Query(), id: str = Query(max_length=200, description="Grid cell code or zone id."),
    period: str | None = Query(None, max_length=20, description=_MAP_PERIOD), type: list[str] = Query([]),
    state: list[str] = Query([]), source: Literal["camera", "photo"] | None = Query(None),
) -> Response:
    """Built on the exports' own threads (`api.exports`, `_gated_json`), 503 `exports-busy` past `service.export_queue`."""
    return await _gated_json(ctx, lambda: _map_cases(ctx, layer, id, period, type, state, source))


def _map_cases(ctx: AppContext, layer: str, id: str, period: str | None, type: list[str], state: list[str],
               source: str | None) -> MapCases:
    """The cases of one cell or zone of the map, newest first (blocking)."""
    places = _places(ctx)
    flt, _ = _map_filter(ctx, period, type, state, source)
    found, truncated = _feature_cases(ctx, places, layer, id, flt)
    found.sort(key=lambda c: c.at, reverse=True)
    tz = _tz(ctx)
    items = [MapCase(id=c.id, type=c.violation_type, state=c.state.value, opened_at=c.at.astimezone(tz).isoformat(),
                     address=c.address, grid_cell=c.grid_cell, source_id=c.source_id, objects=c.object_count)
             for c in found[:MAP_CASES_LIMIT]]
    return MapCases(layer=layer, id=id, total=len(found), truncated=truncated, max_cases=_config(ctx).map_max_cases,
                    items=items)


async def _gated_json(ctx: AppContext, build: Callable[[], BaseModel]) -> Response:
    """The JSON of the model `build` makes, built and encoded on the exports' threads (`ctx.exports`). The map and its
    case lists read up to analytics.map_max_cases cases and count them in every zone: at that cap, on a 60 x 60 grid
    with 100 zones, 3.4-5 s a map (about 1 MB of GeoJSON) and 2.5 s a zone's list, measured on SQLite, each holding one
    of the threads every route shares; a few views at once stalled the case list and review as the exports did. Read as
    points (`load_points`) and counted in an STRtree, a map still takes 0.1-0.9 s there; a zone's list, reading the
    cases in its bounds alone (`_feature_cases`), 10-50 ms for a small zone, up to 0.3 s for one over a third of the city."""
    return await ctx.exports.answer(lambda: Export(build().model_dump_json().encode("utf-8"), "application/json"))


def _report_dirs(ctx: AppContext) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, description) of each report in `analytics.reports_dir`, newest first; one whose report.json cannot be
    read is left out (`_report_description` logs it)."""
    root = _config(ctx).reports_dir
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        meta_file = folder / "report.json"
        if folder.is_dir() and _NAME.match(folder.name) and meta_file.is_file():
            if (meta := loaded_file(_report_description, meta_file)) is not None:
                out.append((folder, meta))
    return sorted(out, key=lambda fm: str(fm[1].get("generated_at", "")), reverse=True)


def _report_description(meta_file: Path) -> dict[str, Any] | None:
    """A report's description: its report.json without its tables, which a listing does not show (read once per
    change of the file, `loaded_file`, not at each listing). None: it cannot be read, logged naming the report (once
    per change, the None kept as a description is) with the reason, which gives its path."""
    try:
        meta = read_mapping(meta_file)
    except ConfigError as exc:
        log.warning("GET /reports: report %s is not listed: its report.json cannot be read: %s", meta_file.parent.name, exc)
        return None
    meta.pop("tables", None)
    return meta


class ReportPage(BaseModel):
    """A page of the reports, newest first, and how many there are: a few years of daily reports are thousands."""

    items: list[ReportListing]
    total: int = Field(description="Reports listed in all (every page).")
    limit: int
    offset: int


@router.get("/reports", summary="The analysis reports, a page at a time (newest first)", response_model=ReportPage,
            responses=problems(401, 403, 422))
def reports(ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES),
            limit: int = Query(200, ge=1, le=500, description="At most this many (a page)."),
            offset: int = Query(0, ge=0, le=10_000_000, description="Skip this many of the newest first.")) -> ReportPage:
    listed = _report_dirs(ctx)
    items = [ReportListing(**{**meta, "name": folder.name, "files": [f for f in FILES if (folder / f).is_file()]})
             for folder, meta in listed[offset:offset + limit]]
    return ReportPage(items=items, total=len(listed), limit=limit, offset=offset)


class ReportTable(BaseModel):
    title: str
    columns: list[str]
    rows: list[list[Any]]


class ReportData(BaseModel):
    """report.json: the report's description (as listed) and its tables, for machines."""

    model_config = ConfigDict(extra="allow")

    title: str
    kind: str
    label: str
    generated_at: str
    summary: dict[str, Any]
    files: list[str]
    tables: dict[str, ReportTable]


_REPORT_MEDIA = {"html": "text/html; charset=utf-8", "pdf": "application/pdf", "xlsx": XLSX, "json": "application/json"}


@router.get("/reports/{name}/{file}", summary="One file of a report (html, pdf, xlsx, json)", response_class=FileResponse,
            responses={200: {"model": ReportData, "content": {kind: {} for kind in _REPORT_MEDIA.values() if kind != "application/json"}},
                       **problems(401, 403, 404)})
def report_file(name: str, file: str, ctx: AppContext = Depends(get_ctx), _: Principal = Depends(READ_CASES)) -> FileResponse:
    folder = next((f for f, _ in _report_dirs(ctx) if f.name == name), None)
    if folder is None or file not in FILES or not (folder / file).is_file():
        raise Problem(404, f"no report file {name}/{file}")
    return FileResponse(folder / file, media_type=_REPORT_MEDIA[file.rsplit(".", 1)[1]], filename=f"{name}-{file}",
                        content_disposition_type="inline" if file.endswith((".html", ".pdf")) else "attachment",
                        headers=REPORT_HEADERS)  # a report's cases and places: framed by no site, kept by no browser
