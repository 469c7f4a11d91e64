"""`streetwatch triage`: an inspector's photos in, a ranked and grouped case list out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import (ModelOpt, ProgressOpt, RayOpt, SettingsOpt, fail, fail_interrupted, fail_report_interrupted,
                                         fail_unwritable, judged_with, say_spool, settings_or_fail, setup_logging)

if TYPE_CHECKING:
    from pipelines.triage.cases import Withdrawals


def register(app: typer.Typer) -> None:
    app.command("triage")(triage)


def triage(
    # readable=False: an unreadable input is recorded with its reason, not refused with the whole run
    inputs: Annotated[list[Path], typer.Argument(help="Photo files, folders (searched recursively) or .zip archives.", readable=False)],
    out: Annotated[Path, typer.Option("--out", help="Output folder: report.html, results.jsonl, cases.csv, thumbs/.")] = Path("triage-out"),
    scene_zones: Annotated[Path | None, typer.Option("--scene-zones", help="GeoJSON of city-wide zones (no-parking streets, vending points...) applied to photos by their GPS position.")] = None,
    grid: Annotated[Path | None, typer.Option("--grid", help="GeoJSON of 单元网格 grid-cell polygons (property `id`) to file each photo under its cell.")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Inference backend: onnx (ONNX Runtime, no torch) or torch (Ultralytics/PyTorch). [default: onnx]")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda[:N] (or tensorrt for onnx). [default: cpu]")] = None,
    model: ModelOpt = None,
    conf: Annotated[float | None, typer.Option("--conf", min=0.0, max=1.0, help="Minimum detection confidence. [default: 0.25]")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="Network input size in pixels (multiple of 32). [default: 640]")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=64, help="Parallel workers, each reading, decoding and detecting photos; on CPU the cores are shared out among them. Default: one per core (at most 8).")] = None,
    verifier: Annotated[str | None, typer.Option("--verifier", help="Verifier id or card (docs/verifier.md) that judges stalls, spillover, postings and zone-less parking; none = detector classes alone. [default: the promoted verifier]")] = None,
    ocr: Annotated[str | None, typer.Option("--ocr", help="Read text and phone numbers (flyposting): auto = the 2 most posting-like tiles of photos the verifier gates, and photos where the model saw posters, signs or small ads; all = every photo whole (slow: ~1 s/photo on CPU); off. [default: auto]")] = None,
    phone_region: Annotated[str | None, typer.Option("--phone-region", help="Region whose phone numbers are read without a country code (ISO 3166: CN, HK, TW, GB ...). [default: CN]")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="Time zone of EXIF times without a UTC offset and of times in file names (IMG_20231129_101522.jpg), and of the report. [default: triage.timezone, else the settings' timezone, Asia/Shanghai]")] = None,
    config: SettingsOpt = None,
    cases: Annotated[bool | None, typer.Option("--cases/--no-cases", help="Write candidate cases with signed evidence bundles to the case store (--config). Default: when the evidence key is set (a key set but unusable, e.g. shorter than 16 bytes, stops the run).")] = None,
    dispatch: Annotated[bool, typer.Option("--dispatch", help="Queue every case for the dispatcher (outbox) as soon as its evidence is stored.")] = False,
    dispatch_target: Annotated[str | None, typer.Option("--dispatch-target", help="Dispatch target for --dispatch (default: the only one in --config).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out: photos already recorded there (same name and content hash) are skipped; those that failed, and those whose content changed since, are tried again.")] = False,
    progress: ProgressOpt = True,
    ray: RayOpt = None,
) -> None:
    """Triage photos: detect violations, group near-duplicates, write a ranked report.

    Every input gets one line in results.jsonl: its violations, "no violation", or why it could not be read.
    Bad files never stop the run. Options not given come from the `triage:` section of the settings
    file (--config), which also holds the grouping and report knobs (docs/triage.md); the defaults shown
    apply when neither says otherwise.
    With --ray the photos are read, decoded and seen by tasks and actors of a Ray cluster (docs/scale-out.md);
    the results are the same.
    Exit code: 1 only when no photo at all could be read; 130 when interrupted by Ctrl-C, 143 by SIGTERM (systemd's
    stop, `timeout`), each after recording what was finished (continue with --resume).
    """
    setup_logging()
    from pydantic import ValidationError

    from detect.config_io import ConfigError
    from detect.imageio import IMAGE_SUFFIXES
    from detect.engine import DetectorConfigError, ModelNotFoundError
    from detect.verifier import VerifierError
    from pipelines.triage import TriageSettings, run_triage
    from pipelines.triage.cases import CasesUnavailable, check_keys, pick_dispatch_target
    from pipelines.triage.journal import InputGone, JournalExists, OutputUnwritable
    from pipelines.triage.pipeline import ReportInterrupted, TriageInterrupted

    deployment = settings_or_fail(config)
    given = {k: v for k, v in dict(model=model, backend=backend, device=device, conf=conf, imgsz=imgsz, workers=workers, ocr=ocr,
                                   verifier=verifier, phone_region=phone_region, timezone=timezone, scene_zones=scene_zones,
                                   grid=grid, cases=cases).items() if v is not None}
    try:
        if dispatch:
            dispatch_target = pick_dispatch_target(deployment, dispatch_target)
        elif dispatch_target:
            fail("--dispatch-target needs --dispatch")
        options = deployment.triage.model_dump(exclude_unset=True)
        settings = TriageSettings(**{**options, **given}, out=out, dispatch_target=dispatch_target if dispatch else None, resume=resume)
        keys = check_keys(deployment, settings)
        if ray is None:
            result = run_triage(inputs, settings, deployment=deployment, show_progress=progress, keys=keys)
        else:
            result = _triage_on_ray(ray, inputs, settings, deployment, progress, keys)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except (ConfigError, DetectorConfigError, ModelNotFoundError, JournalExists, InputGone, CasesUnavailable, VerifierError) as exc:
        fail(str(exc))
    except TriageInterrupted:
        fail_interrupted(out)
    except ReportInterrupted:
        fail_report_interrupted(out)
    except OutputUnwritable as exc:
        fail_unwritable(out, exc)
    s, t = result.stats, result.tally
    typer.echo(f"{counted(s.recorded, 'photo')} recorded in {s.elapsed_s:.1f} s ({s.rate:.1f} photos/s)"
               + (f", {s.skipped} already recorded earlier" if s.skipped else "")
               + (f" ({s.gone} judged earlier {'is' if s.gone == 1 else 'are'} no longer there; "
                  f"{'its result is' if s.gone == 1 else 'their results are'} kept)" if s.gone else "")
               + (f" ({s.unreadable} judged earlier cannot be read now; "
                  f"{'its result is' if s.unreadable == 1 else 'their results are'} kept)" if s.unreadable else "")
               + (f", {s.retried} that failed earlier tried again ({s.recovered} judged now)" if s.retried else "")
               + (f", {s.changed} changed since judged earlier and judged again (the new result replaces the old"
                  + (f"; {s.changed_unreadable} unreadable now, the error replacing it" if s.changed_unreadable else "")
                  + ")" if s.changed else ""))
    if result.judgement is not None:
        typer.echo(f"judged with {judged_with(result.judgement)}")
    n = len(result.groups)
    typer.echo(f"all runs: {t.ok} readable, {t.positives} with violations -> {counted(n, 'candidate case')}; "
               f"{counted(t.errors, 'error')}, {counted(t.duplicates, 'duplicate')}")
    for source, reason in t.first_errors:
        typer.echo(f"  not read: {source}: {reason}")
    if t.errors > len(t.first_errors):
        typer.echo(f"  ... and {t.errors - len(t.first_errors)} more not read (all in {result.files.get('report', 'the report')})")
    written = [r for r in result.refs if r.case_id]
    if written:
        queued = sum(r.state == "queued" for r in written)
        waiting = sum(r.evidence is None for r in written)
        found = sum(r.found for r in written)
        typer.echo(f"case store: {counted(len(written), 'candidate case')}"
                   + (f" ({found} drafted by an earlier run over these photos, found and not drafted again)" if found else "")
                   + (f", {queued} queued for {settings.dispatch_target}" if queued else "")
                   + (f", {waiting} waiting for evidence storage (see the report)" if waiting else ""))
    _say_withdrawn(result.withdrawals)
    say_spool(result.spool)
    for name, path in result.files.items():
        typer.echo(f"  {name:8s}{path}")
    if t.ok + t.errors + t.duplicates == 0:  # nothing listed, so nothing refused: the report holds no reason
        fail(f"no photo found in {', '.join(map(str, inputs))}: folders are searched for "
             f"{', '.join(sorted(IMAGE_SUFFIXES))} and .zip files (other files, such as documents, are not listed)", code=1)
    if result.readable == 0:
        fail("no photo could be read (reasons in the report and results.jsonl)", code=1)


def _triage_on_ray(address: str, inputs: list[Path], settings, deployment, progress: bool, keys):
    """`run_triage` with the per-photo steps on the cluster; a cluster it cannot use is one error line."""
    from pipelines.cluster.connect import ClusterError, check_shared_stores, joined
    from pipelines.cluster.triage import RayPhotos
    from pipelines.triage import run_triage

    try:
        with joined(address, deployment.cluster) as info:
            check_shared_stores(deployment, info, cases=settings.cases is not False or settings.dispatch_target is not None,
                                or_else="--no-cases for the report only")
            photos = RayPhotos(info, deployment.cluster)
            result = run_triage(inputs, settings, deployment=deployment, show_progress=progress, photos=photos, keys=keys)
            typer.echo(photos.summary())
            return result
    except ClusterError as exc:
        fail(str(exc))


def _say_withdrawn(w: Withdrawals) -> None:
    """The cases drafted from photos a resumed run found replaced (`TriageCases.withdraw`): those withdrawn, and each
    one left as it is because people are on it already, for them to check."""
    if w.withdrawn:
        n = len(w.withdrawn)
        typer.echo(f"case store: {counted(n, 'candidate case')} withdrawn, drafted from photos replaced since: "
                   + ", ".join(f"{case.id} ({photo})" for case, photo in w.withdrawn[:5]) + (", ..." if n > 5 else ""))
    for case, photo in w.left:
        typer.echo(f"  case {case.id} ({case.state}) was drafted from {photo}, replaced since: left as it is, reviewed "
                   "or dispatched already; check whether it still stands")
