"""City workflows: `patrol` (patrol-vehicle video), `shops` (frontage register), `callout` (追呼/停机 list)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from pipelines.sheet_encodings import listed_encodings  # no import of its own: the command modules load pipelines lazily
from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import (ModelOpt, ProgressOpt, SettingsOpt, VerifierOpt, existing_store_or_fail, fail, fail_interrupted,
                                         fail_report_interrupted, fail_unwritable, print_error, print_warning, say_spool, settings_or_fail, setup_logging)


def register(app: typer.Typer) -> None:
    app.command("patrol")(patrol)
    shops = typer.Typer(help="The frontage register (门前三包): shops and the strip in front of each.", no_args_is_help=True)
    shops.command("import")(shops_import)
    shops.command("list")(shops_list)
    app.add_typer(shops, name="shops")
    callout = typer.Typer(help="The call-out list (追呼/停机) of phone numbers from flyposting cases.", no_args_is_help=True)
    callout.command("export")(callout_export)
    callout.command("import")(callout_import)
    callout.command("cutoffs")(callout_cutoffs)
    app.add_typer(callout, name="callout")


def patrol(
    video: Annotated[Path, typer.Argument(help="The patrol car's video (MP4, MOV, MKV, TS...).")],
    track: Annotated[Path | None, typer.Option("--track", help="GPS track: .gpx, NMEA (.nmea/.log) or the dashcam's .srt (default: one beside the video with its name).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder: frames/, report.html, results.jsonl, cases.csv, patrol.json.")] = Path("patrol-out"),
    every_m: Annotated[float | None, typer.Option("--every-m", min=0.1, help="Sample a frame every this many metres driven (default: cityops.patrol_every_m, 10).")] = None,
    every_s: Annotated[float | None, typer.Option("--every-s", min=0.1, help="...and at least every this many seconds (default: cityops.patrol_every_s, 5).")] = None,
    start: Annotated[datetime | None, typer.Option("--start", help="Wall-clock time of the video's first frame, 'YYYY-MM-DD HH:MM:SS' (local time unless an offset is given; not before 2000 or in the future); default: the video's creation_time tag, or the SRT's own times.")] = None,
    scene_zones: Annotated[Path | None, typer.Option("--scene-zones", help="GeoJSON of city-wide zones applied at each frame's position.")] = None,
    grid: Annotated[Path | None, typer.Option("--grid", help="GeoJSON of 单元网格 cells to file each frame under.")] = None,
    radius_m: Annotated[float | None, typer.Option("--radius-m", min=0.0, help="Frames of one type this close are one case (spanning at most triage.group_span_m); an open case this close to its place is not doubled. [default: triage.group_radius_m, 30]")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Inference backend: onnx or torch. [default: onnx]")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda[:N] (or tensorrt for onnx). [default: cpu]")] = None,
    model: ModelOpt = None,
    conf: Annotated[float | None, typer.Option("--conf", min=0.0, max=1.0, help="Minimum detection confidence. [default: 0.25]")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="Network input size in pixels (multiple of 32). [default: 640]")] = None,
    ocr: Annotated[str | None, typer.Option("--ocr", help="Read text and phone numbers: auto, all or off (as triage). [default: auto]")] = None,
    verifier: VerifierOpt = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="Local time zone (the report, --start without an offset, SRT times). [default: triage.timezone, else the settings' timezone, Asia/Shanghai]")] = None,
    config: SettingsOpt = None,
    cases: Annotated[bool | None, typer.Option("--cases/--no-cases", help="Write candidate cases (default: when the evidence key is set; a key set but unusable, e.g. shorter than 16 bytes, stops the run).")] = None,
    progress: ProgressOpt = True,
    resume: Annotated[bool, typer.Option("--resume", help="Take up the run a stop (Ctrl-C, a crash, a power cut) left in --out: give the same video and track (refused otherwise); frames already sampled are kept, with the --every-m, --every-s and --start they were sampled with (one given now that differs is refused, naming both), and each is judged once.")] = False,
) -> None:
    """Triage a patrol car's video along its GPS track like photos taken on the route.

    Frames are sampled by distance and time, placed on the track and in their grid cell, judged by the
    triage pipeline, and the same violation seen in successive frames becomes one case; a case already
    open at the same place is not doubled. Frames the track does not cover are skipped with a message.
    Options not given come from the `triage:` section of the settings file (--config), as for
    `streetwatch triage`; the sampling distance and time from its `cityops:` section.
    """
    setup_logging()
    from pydantic import ValidationError

    from detect.config_io import ConfigError
    from detect.engine import DetectorConfigError, ModelNotFoundError
    from pipelines.cityops.patrol import SAMPLED, JudgingNotStarted, PatrolError, SamplingInterrupted, given_start, run_patrol
    from pipelines.triage import TriageSettings
    from pipelines.triage.cases import CasesUnavailable, check_keys
    from pipelines.triage.journal import JournalExists, OutputUnwritable
    from pipelines.triage.pipeline import ReportInterrupted, TriageInterrupted

    deployment = settings_or_fail(config)
    given = {k: v for k, v in dict(model=model, backend=backend, device=device, conf=conf, imgsz=imgsz, ocr=ocr, verifier=verifier, timezone=timezone,
                                   scene_zones=scene_zones, grid=grid, cases=cases, group_radius_m=radius_m).items() if v is not None}
    try:
        settings = TriageSettings(**{**deployment.triage.model_dump(exclude_unset=True), **given}, out=out)
        keys = check_keys(deployment, settings)
        if start is not None:
            start = given_start(start, settings.tz)
        result = run_patrol(video, track, settings, every_m=every_m, every_s=every_s, start=start, deployment=deployment,
                            show_progress=progress, resume=resume, keys=keys)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except (PatrolError, ConfigError, DetectorConfigError, ModelNotFoundError, JournalExists, CasesUnavailable) as exc:
        fail(str(exc))
    except TriageInterrupted:
        fail_interrupted(out, "frames")
    except OutputUnwritable as exc:
        fail_unwritable(out, exc, "frames")
    except SamplingInterrupted:
        fail_interrupted(out, done=f"stopped while sampling the video into {out / 'frames'}, before any frame was judged")
    except JudgingNotStarted:
        fail_interrupted(out, done=f"stopped once the video was sampled into {out / 'frames'} (kept, with {SAMPLED}), "
                                   "before its frames were judged")
    except ReportInterrupted:
        fail_report_interrupted(out, "frame")
    s = result.summary
    for message in s["messages"]:
        print_warning(message)
    typer.echo(f"{counted(s['frames'], 'frame')} sampled along the track ({s['skipped_without_position']} skipped without a position) "
               f"-> {counted(s['groups'], 'violation')}: {counted(len(s['cases']), 'new case')}, {len(s['already_open'])} already open")
    say_spool(result.triage.spool)
    typer.echo(f"  report  {s['report']}\n  summary {out / 'patrol.json'}")


def _store(config: Path | None, *, create: bool = False):
    """Settings and case store. Only an import may `create` the store (a new deployment's first register);
    a list, export or count of a store that is not there stops rather than reading an empty one."""

    settings = settings_or_fail(config)
    return settings, settings.cases.open() if create else existing_store_or_fail(settings.cases.url)


EncodingOpt = Annotated[str | None, typer.Option(
    "--encoding", help=f"The CSV's encoding: {listed_encodings()} (default: found; of GBK and Windows-1252, where both read a "
                       "sheet, the one charset_normalizer takes, with a warning).")]


def shops_import(
    file: Annotated[Path, typer.Argument(help="CSV (UTF-8) or Excel (.xlsx): name, address, licence_no, contact, camera, polygon, gps_polygon (Chinese headers too).")],
    encoding: EncodingOpt = None,
    config: SettingsOpt = None,
) -> None:
    """Import shops and frontages; each bad row is reported with its reason and the rest are imported."""
    from detect.config_io import ConfigError
    from pipelines.shops import ShopRegister

    _, store = _store(config, create=True)
    data = _read_or_fail(file)
    try:
        report = ShopRegister(store.engine).import_file(data, file.name, encoding)
    except ConfigError as exc:
        fail(str(exc))
    for error in report.errors:
        print_error(str(error))
    for warning in report.warnings:
        print_warning(warning)
    typer.echo(f"{counted(len(report.imported), 'shop')} imported, {counted(len(report.errors), 'row')} refused"
               + (f", {len(report.warnings)} to check" if report.warnings else ""))
    if not report.imported and report.errors:
        raise typer.Exit(1)


def shops_list(config: SettingsOpt = None) -> None:
    """Shops of the register as JSON lines."""
    from pipelines.shops import ShopRegister

    _, store = _store(config)
    for shop in ShopRegister(store.engine).list():
        typer.echo(json.dumps(shop.model_dump(exclude_none=True), ensure_ascii=False))


def _read_or_fail(file: Path) -> bytes:
    """The bytes of a file to import, or the one `PATH: reason` line (not Python's `[Errno 2] ...: 'PATH'`)."""
    try:
        return file.read_bytes()
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}")


def _calls(config: Path | None):
    from zoneinfo import ZoneInfo

    from pipelines.cityops.callout import CallOutList
    from pipelines.cityops.hooks import squads_of

    settings, store = _store(config)
    from detect.config_io import ConfigError

    try:
        squads = squads_of(settings.cityops.grid)
    except ConfigError as exc:
        fail(str(exc))
    return CallOutList(store.engine, squads, ZoneInfo(settings.cityops.timezone))


def callout_export(
    out: Annotated[Path, typer.Argument(help="File to write: .xlsx for Excel, else CSV (UTF-8 with BOM).")],
    status: Annotated[str | None, typer.Option("--status", help="Only numbers in this status (to_call, called, cut_off, reconnected_after_fine, fined).")] = None,
    config: SettingsOpt = None,
) -> None:
    """Bring the list up to date with the flyposting cases, then write it for the call-out system."""
    from pipelines.cityops.callout import Status

    calls = _calls(config)
    try:
        wanted = Status(status) if status else None
    except ValueError:
        fail(f"--status: {status!r} is not one of {', '.join(s.value for s in Status)}")
    n = calls.sync()
    calls.export(out, wanted)
    typer.echo(f"{len(calls.entries(wanted))} of {counted(n, 'number')} written to {out}")


def callout_import(
    file: Annotated[Path, typer.Argument(help="The call-out system's results: number, status (+ cut_off_at, amount, note), CSV or .xlsx.")],
    encoding: EncodingOpt = None,
    config: SettingsOpt = None,
) -> None:
    """Apply the call-out results; unknown numbers and bad rows are reported, the rest applied.

    Exit code 1 when rows were refused and none applied (as `shops import`): a cron job whose whole file was
    refused (wrong column, every number unknown) must not read as done."""
    from detect.config_io import ConfigError

    calls = _calls(config)
    data = _read_or_fail(file)  # before the list is brought up to date: a file not there changes nothing
    calls.sync()
    try:
        report = calls.import_results(data, file.name, encoding)
    except ConfigError as exc:
        fail(str(exc))
    for error in report.errors:
        print_error(str(error))
    for warning in report.warnings:
        print_warning(warning)
    typer.echo(f"{counted(len(report.applied), 'number')} updated, {counted(len(report.errors), 'row')} refused"
               + (f" ({len(report.unknown)} of them not on the list)" if report.unknown else ""))
    if not report.applied and report.errors:
        raise typer.Exit(1)


def callout_cutoffs(
    year: Annotated[int, typer.Option("--year", help="Calendar year (local months).")] = datetime.now().year,
    config: SettingsOpt = None,
) -> None:
    """Numbers cut off per month and squad (the assessment quota's count)."""
    counts = _calls(config).monthly_cut_offs(year)
    typer.echo(json.dumps(counts, ensure_ascii=False, indent=1))
