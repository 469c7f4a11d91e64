"""`streetwatch watch`: monitor CCTV cameras, open candidate cases with evidence, report camera health."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from streetwatch.commands.common import (
    BackendOpt, ConfOpt, ImgszOpt, ModelOpt, RayOpt, SettingsOpt, VerifierOpt, fail, judged_with, judgement_or_fail,
    print_error, settings_or_fail, setup_logging,
)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(
    cameras: Annotated[Path, typer.Option("--cameras", help="Cameras file (YAML/JSON; see docs/cctv.md).")],
    backend: BackendOpt = "onnx",
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda[:N] (or tensorrt for onnx). [default: cpu; "
                                                                "with --ray: cuda when the cluster has GPUs]")] = None,
    model: ModelOpt = None,
    conf: ConfOpt = 0.25,
    imgsz: ImgszOpt = 640,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", min=1, max=65535,
                                                     help="Serve Prometheus metrics on this port (/metrics).")] = None,
    metrics_addr: Annotated[str, typer.Option("--metrics-addr", help="Address the metrics server binds.")] = "127.0.0.1",
    replay: Annotated[bool, typer.Option("--replay", help="Judge video files by their media time, as fast as they decode, "
                                                          "every sampled frame; exit when all files are done.")] = False,
    events: Annotated[Path | None, typer.Option("--events", help="Append violation, re-check, health and status records "
                                                                 "here as JSON lines.")] = None,
    snapshots: Annotated[Path | None, typer.Option("--snapshots", help="Keep the latest analysed frame of each camera "
                                                                     "here as <camera id>.jpg (the service's snapshot_dir).")] = None,
    snapshot_every: Annotated[float, typer.Option("--snapshot-every", min=0.0,
                                                  help="Seconds between snapshot writes per camera.")] = 10.0,
    state: Annotated[Path | None, typer.Option("--state", help="Save each camera's rules state (tracks, dwell, open violations) "
                                                               "here at stop and restore it at start: a restart does not open a "
                                                               "second case for what stood there throughout; its folder must be "
                                                               "writable. [default: the cameras file's name + .state, beside it; "
                                                               "where that folder is not writable (a read-only /etc), "
                                                               "service.data_dir/watch/<name>-<8 hex>.state; with --ray too, on "
                                                               "the driver's machine]")] = None,
    no_state: Annotated[bool, typer.Option("--no-state", help="Start every camera afresh and save no state "
                                                              "(a replay judged again from its start).")] = False,
    config: SettingsOpt = None,
    verifier: VerifierOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    ray: RayOpt = None,
) -> None:
    """Watch the cameras of a cameras file until SIGTERM/SIGINT (or, with --replay, until the files end).

    Each camera is read in its own thread at its analysis rate; one worker batches frames across
    cameras through the detector; each camera's tracker and rules open violations, which become
    candidate cases with signed evidence in the case store. A camera whose scene is invalid is
    refused with the reason and the others run. SIGHUP, or a change to the cameras file or a
    scene file, reloads them without stopping unchanged cameras (a running camera whose scene turns
    invalid keeps its last valid one, the refusal its `config_refused` health condition). Tracker and rule knobs: the
    settings file's `tracking:` and `rules:`, changed per camera by its own `tracking:`/`rules:`.
    Each camera's rules state is saved at a stop and restored at the next start (--state, beside the cameras file
    by default, in service.data_dir where that folder is not writable; --no-state to start afresh). Prints a JSON summary at exit; with --replay, exit code 1 when no
    camera could be read at all.

    With --ray the cameras are spread over owner actors of a Ray cluster (each reads, tracks and judges
    its cameras) that share inference actors; an owner that dies is restarted elsewhere from its
    cameras' saved rules states (docs/scale-out.md), and the states are kept across a stop as without --ray
    (--state, written by the driver). Warn-first rules (cityops.warn) do not run with --ray.
    """
    setup_logging(verbose)
    from detect.config_io import ConfigError, load_model
    from detect.engine import DetectorConfigError, ModelNotFoundError, load_detector
    from detect.evidence.builder import ModelInfo
    from detect.evidence.config import EvidenceKeyError
    from pipelines.cases.intake import Intake
    from pipelines.cctv.service import Watcher
    from pipelines.cctv.snapshots import SnapshotWriter
    from pipelines.evidence_store import StorageError

    from pipelines.cctv.config import CamerasFile

    settings = settings_or_fail(config)
    try:
        load_model(CamerasFile, cameras)  # a broken cameras file fails before the model loads
    except ConfigError as exc:
        fail(str(exc))
    if state is not None and no_state:
        fail("--state and --no-state: give one of them")
    if not no_state:  # on by default: a deployment that never heard of it must not duplicate cases at each restart
        from pipelines.cctv.state import NoStateFolder, state_file

        try:
            state = state_file(cameras, state, settings.service.data_dir)
        except NoStateFolder as exc:
            fail(str(exc))
    if ray is not None:
        return _watch_on_ray(ray, cameras, settings, dict(model=model, backend=backend, device=device, conf=conf, imgsz=imgsz),
                             replay=replay, events=events, snapshots=snapshots, snapshot_every=snapshot_every, verifier=verifier,
                             metrics_port=metrics_port, metrics_addr=metrics_addr, state=state)
    device = device or "cpu"
    try:
        taxonomy = settings.load_taxonomy()  # the deployment's taxonomy file and city code tables
    except ConfigError as exc:
        fail(str(exc))
    judgement = judgement_or_fail(verifier, taxonomy)
    try:
        detector = load_detector(model, backend=backend, device=device, conf=conf, imgsz=imgsz, features=judgement.needs_features)
        judgement.check(detector)
    except (DetectorConfigError, ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
    _say_judging(judgement)
    try:
        intake = Intake.from_settings(settings, ModelInfo.of(detector, judgement), taxonomy=taxonomy)
    except (EvidenceKeyError, StorageError) as exc:
        fail(str(exc))
    sink = open(events, "a", encoding="utf-8") if events else None

    def on_record(data: dict) -> None:
        if sink is not None:
            sink.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
            sink.flush()

    from pipelines.cityops.hooks import make_warner
    from pipelines.shops import attach_shops

    shops = attach_shops(intake)  # shop-front cases name the responsible shop (frontage register)
    try:
        watcher = Watcher(cameras, detector, intake, replay=replay, on_record=on_record, judgement=judgement,
                          on_analysed=SnapshotWriter(snapshots, snapshot_every) if snapshots else None,
                          tracking=settings.tracking, rules=settings.rules, taxonomy=taxonomy,
                          warner=make_warner(settings, intake, taxonomy, shops), dispatch_targets=list(settings.dispatch.targets),
                          timezone=settings.timezone, state_path=state)
    except ConfigError as exc:
        fail(str(exc))
    server = _start(watcher, cameras, bool(watcher.runtimes), metrics_port, metrics_addr)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: watcher.request_reload())
    try:
        summary = watcher.run()
    finally:
        if server is not None:
            server.shutdown()
        if sink is not None:
            sink.close()
        intake.store.close()
    typer.echo(json.dumps(summary, ensure_ascii=False))
    _exit_when_nothing_replayed(summary, replay)


def _exit_when_nothing_replayed(summary: dict, replay: bool) -> None:
    """Exit 1 when a --replay read no camera at all (every file unreadable or refused), as triage does
    when no photo could be read: a script replaying a day's recordings must not take that for success."""
    cameras = summary.get("cameras", {})
    if replay and cameras and all(c.get("status") in ("failed", "refused") for c in cameras.values()):
        fail("no camera could be replayed (each one's reason is in the summary above)", code=1)


def _say_judging(judgement) -> None:
    """What `watch` judges with, on stderr at the start, with --ray or without (`judged_with`)."""
    typer.echo(f"judging with {judged_with(judgement)}; a verifier promoted later is taken at the next start", err=True)


def _watch_on_ray(address: str, cameras: Path, settings, detector: dict, *, replay: bool, events: Path | None,
                  snapshots: Path | None, snapshot_every: float, verifier: str | None, metrics_port: int | None,
                  metrics_addr: str, state: Path | None) -> None:
    """`watch` on a Ray cluster: the supervisor here, owners and inference actors on the nodes; `state`: the rules
    states file the driver reads at the start and writes at a graceful stop (None: --no-state)."""
    from detect.config_io import ConfigError
    from detect.evidence.builder import ModelInfo
    from detect.evidence.config import EvidenceKeyError
    from detect.verifier import VerifierError
    from pipelines.cases.intake import Intake
    from pipelines.cluster.connect import ClusterError, absolute_paths, check_shared_stores, joined
    from pipelines.cluster.triage import retire_idle_actors
    from pipelines.cluster.watch import ClusterWatcher, InferenceOptions
    from pipelines.evidence_store import StorageError

    sink = open(events, "a", encoding="utf-8") if events else None

    def on_record(data: dict) -> None:
        if sink is not None:
            sink.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
            sink.flush()

    server = None
    try:
        with joined(address, settings.cluster) as info:
            check_shared_stores(settings, info)
            try:  # the stores and the evidence key, checked here before any actor starts
                Intake.from_settings(settings, ModelInfo("check")).store.close()
            except (EvidenceKeyError, StorageError) as exc:
                fail(str(exc))
            retire_idle_actors(settings.cluster.namespace)  # warm triage actors hold CPUs the owners need
            watcher = ClusterWatcher(cameras, absolute_paths(settings), info, InferenceOptions(**detector), replay=replay,
                                     verifier=verifier, on_record=on_record, snapshot_dir=snapshots.absolute() if snapshots else None,
                                     snapshot_every_s=snapshot_every, taxonomy=settings.load_taxonomy(),
                                     state_path=state.absolute() if state else None, on_judgement=_say_judging)
            server = _start(watcher, cameras, bool(watcher.groups), metrics_port, metrics_addr)
            summary = watcher.run()
    except (ClusterError, ConfigError, VerifierError) as exc:
        fail(str(exc))
    finally:
        if server is not None:
            server.shutdown()
        if sink is not None:
            sink.close()
    typer.echo(json.dumps(summary, ensure_ascii=False))
    _exit_when_nothing_replayed(summary, replay)


def _start(watcher, cameras: Path, running: bool, metrics_port: int | None, metrics_addr: str):
    """One machine or a cluster alike: refused cameras as error lines (one line each, as the log's: a YAML error's
    position and quoted line joined), stop when none can run, then the metrics server (returned) and SIGTERM/SIGINT
    stopping the watcher."""
    from detect.config_io import one_line

    for cid, message in watcher.refused.items():
        print_error(f"camera {cid} refused: {one_line(message)}")
    if not running:
        # with nothing refused, pointing at "the refusals above" pointed at nothing: every camera is switched off
        fail("no camera can run (see the refusals above)" if watcher.refused else
             f"{cameras}: no camera to watch: every camera has enabled: false")
    server = watcher.metrics.serve(metrics_port, metrics_addr) if metrics_port else None
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
    signal.signal(signal.SIGINT, lambda *_: watcher.stop())
    return server
