"""`streetwatch demo`: the whole system on embedded defaults — monitoring, triage, review, dispatch, service.

Wiring only: every step is the code of a real command (`watch --replay`, `triage`, the API's
confirm endpoint, `dispatch run --once`, `dispatch-sim`, `serve`), pointed at one output folder.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from pipelines.wording import counted  # no import of its own
from streetwatch.commands.common import BackendOpt, DeviceOpt, ModelOpt, fail, judgement_or_fail, require_modules


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def _say(text: str) -> None:
    typer.secho(text, fg=typer.colors.CYAN, bold=True)


def _monitor(settings, cameras_file: Path, detector, events_path: Path, judgement=None) -> dict:
    """`streetwatch watch --replay` on the demo cameras: cases with evidence from the real detector and rules."""
    from detect.evidence.builder import ModelInfo
    from pipelines.cases.intake import Intake
    from pipelines.cctv.service import Watcher
    from pipelines.cctv.snapshots import SnapshotWriter

    intake = Intake.from_settings(settings, ModelInfo.of(detector, judgement))
    with open(events_path, "a", encoding="utf-8") as sink:
        def on_record(data: dict) -> None:
            sink.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
            sink.flush()
            if data.get("event") == "violation" and data.get("kind") in ("opened", "cleared"):
                typer.echo(f"  {data['camera_id']}: {data['type']} {data['kind']} in zone {data['zone_id']} at "
                           f"{data['at'][11:19]} UTC (media time) -> case {data['case_id']}")

        try:
            watcher = Watcher(cameras_file, detector, intake, replay=True, on_record=on_record, judgement=judgement,
                              on_analysed=SnapshotWriter(settings.service.snapshot_dir, every_s=2.0),
                              tracking=settings.tracking, rules=settings.rules, timezone=settings.timezone)
            for cid, message in watcher.refused.items():
                typer.secho(f"  camera {cid} refused: {message}", err=True, fg=typer.colors.RED)
            return watcher.run()
        finally:
            intake.store.close()


def _triage(settings, inputs: list[Path], out: Path, detector):
    """`streetwatch triage` over the photo folders, candidate cases included."""
    from pipelines.triage.run import run_triage
    from pipelines.triage.settings import TriageSettings

    return run_triage(inputs, TriageSettings(out=out, workers=1, ocr="all", cases=True), detector=detector,
                      deployment=settings, show_progress=False)


def _confirm_and_dispatch(settings, api_url: str, token: str, sim) -> dict:
    """Confirm one camera case as the demo reviewer through the API, deliver it, find it at the simulator, then
    let the simulator accept and handle it: its signed status webhooks move the case (handled -> verifying)."""
    import httpx

    from pipelines.dispatch.dispatcher import Dispatcher
    from pipelines.evidence_store import open_evidence_store

    store = settings.cases.open()
    try:
        candidates = [c for c in store.list(state="candidate") if c.source_kind == "camera" and c.evidence_ref]
        candidates.sort(key=lambda c: (c.violation_type != "flyposting", c.cleared_at is not None))
        if not candidates:
            return {"error": "no camera case with stored evidence to confirm"}
        case = candidates[0]
        answer = httpx.post(f"{api_url}/api/v1/cases/{case.id}/confirm", headers={"Authorization": f"Bearer {token}"},
                            json={"dispatch": True, "note": "streetwatch demo: confirmed automatically"}, timeout=30)
        if answer.status_code != 200:
            return {"case_id": case.id, "error": f"confirm answered {answer.status_code}: {answer.text}"}
        dispatcher = Dispatcher(store, open_evidence_store(settings.evidence_store, settings.service.url_key()), settings.dispatch, taxonomy=settings.load_taxonomy())
        try:
            stats = dispatcher.run_once()
        finally:
            dispatcher.close()
        case = store.get(case.id)
        received = next((r for r in sim.received() if r["external_id"] == case.id), None)
        sent = {"case_id": case.id, "type": case.violation_type, "state": str(case.state), "task_number": case.dispatch_ref,
                "delivered": stats.delivered, "simulator_received": received is not None,
                "simulator_ref": received and received["ref"], "errors": stats.errors[-3:]}
        if received is not None:  # the platform's side: accepted, then handled; each reported by its signed webhook
            sent["platform"] = [_platform_status(sim, received["ref"], status) for status in ("accepted", "handled")]
            sent["state_after_handled"] = str(store.get(case.id).state)
        return sent
    finally:
        store.close()


def _platform_status(sim, ref: str, status: str) -> dict:
    """Move the case on the simulator's side; it calls our webhook (signed) and says what the service answered."""
    import httpx

    answer = httpx.post(f"{sim.url}/sim/cases/{ref}/{status}", json={"note": f"streetwatch demo: {status}"}, timeout=30).json()
    return {"status": status, "webhook_status_code": answer.get("webhook", {}).get("status_code"),
            "webhook_error": answer.get("webhook", {}).get("error")}


def _cases(settings) -> list[dict]:

    store = settings.cases.open()
    try:
        return [{"id": c.id, "type": c.violation_type, "state": str(c.state), "source": c.source_id,
                 "cleared": c.cleared_at is not None, "evidence_ref": c.evidence_ref, "dispatch_ref": c.dispatch_ref}
                for c in store.list()]
    finally:
        store.close()


DEMO_NEEDS = ("uvicorn", "fastapi", "ultralytics")
"""Modules of extras the demo needs: the service (api) and the photos its footage is made from (torch: the ultralytics
package's assets). Checked first: uvicorn was imported only after the detector, media and simulator were up."""


def demo(
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the service and review pages (127.0.0.1).")] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Exit after the first pass instead of serving until Ctrl-C.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes (media, cases, evidence, report).")] = Path("demo-out"),
    backend: BackendOpt = "onnx",
    device: DeviceOpt = "cpu",
    model: ModelOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every pipeline record.")] = False,
) -> None:
    """Run monitoring, triage, review and dispatch end to end on embedded defaults, then serve the review pages.

    In --out: demo camera clips made from the photos inside the ultralytics package, a SQLite case
    store, a local evidence folder, a settings file, the triage report; the dispatch simulator and
    the service run on 127.0.0.1. Each run starts the case store afresh; photos dropped into
    <out>/inbox/ are triaged too. See docs/demo.md.
    """
    require_modules(*DEMO_NEEDS)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from detect.engine import DetectorConfigError, ModelNotFoundError, load_detector
    from detect.evidence.config import EvidenceKeyError
    from streetwatch.demo.media import make_media
    from pipelines.evidence_store import StorageError
    from pipelines.settings import load_settings
    from streetwatch.demo import stack

    started = time.monotonic()
    judgement = judgement_or_fail(None)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not no_serve and not stack.port_free(port):
        fail(f"port {port} on 127.0.0.1 is in use: choose another with --port, or use --no-serve")
    _say(f"streetwatch demo -> {out}")
    try:
        detector = load_detector(model, backend=backend, device=device, features=True)
        judgement.check(detector)
    except (DetectorConfigError, ModelNotFoundError, ValueError, OSError) as exc:
        fail(f"the detector cannot be loaded: {exc}")
    typer.echo(f"detector: {detector.model_id} ({backend}, {device})")
    stack.reset_run_state(out)
    inbox = out / "inbox"
    inbox.mkdir(exist_ok=True)
    try:
        media = make_media(out / "media")
    except (FileNotFoundError, OSError) as exc:
        fail(f"demo media cannot be made: {exc}")
    if media.font is None:
        typer.secho("notice: no CJK font found (Debian: apt-get install fonts-noto-cjk or fonts-wqy-microhei); the demo "
                    "poster and shop sign use Latin text, the phone number still makes it a small ad", fg=typer.colors.YELLOW)
    else:
        typer.echo(f"CJK font: {media.font}")
    sim = stack.start_simulator(stack.webhook_secret())
    stack.url_key()  # the service checks the attachment URLs the demo's dispatcher signs
    api_port = port if not no_serve else stack.free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    settings_path = stack.write_settings(out, api_url, sim.url, media.cameras_file)
    settings = load_settings(settings_path)
    service = None
    try:
        service = stack.start_service(settings_path, api_port, detector)
        token = stack.reviewer_token(settings_path)
        typer.echo(f"dispatch simulator: {sim.url}   service: {api_url}   settings: {settings_path}")

        _say(f"1/3 monitoring: replaying {len(media.clips)} demo cameras ({', '.join(media.clips)}) by media time")
        try:
            cameras = _monitor(settings, media.cameras_file, detector, out / "camera-events.jsonl", judgement)
        except (EvidenceKeyError, StorageError) as exc:
            fail(str(exc))
        _say(f"2/3 triage: {media.photos[0].parent} and {inbox} (drop your own photos there)")
        result = _triage(settings, [media.photos[0].parent, inbox], out / "triage", detector)
        typer.echo(f"  {counted(result.tally.ok, 'photo')} read, {counted(len(result.groups), 'candidate case')}; report: {result.files['report']}")
        _say("3/3 review and dispatch: the demo reviewer confirms one camera case")
        dispatched = _confirm_and_dispatch(settings, api_url, token, sim)
        if dispatched.get("simulator_received"):
            typer.echo(f"  case {dispatched['case_id']} ({dispatched['type']}) arrived at the simulator: "
                       f"task number {dispatched['task_number']}; case state {dispatched['state']}")
            answers = ", ".join(f"{p['status']} -> {p['webhook_status_code'] or p['webhook_error']}" for p in dispatched["platform"])
            typer.echo(f"  the platform accepted and handled it (signed webhooks answered: {answers}); case state "
                       f"{dispatched['state_after_handled']} (the camera re-checks the spot)")
        else:
            typer.secho(f"  dispatch did not reach the simulator: {dispatched}", fg=typer.colors.RED)
        cases = _cases(settings)
        summary = {
            "runtime_s": round(time.monotonic() - started, 1), "out": str(out), "settings": str(settings_path),
            "cases": cases, "counts": {f"{t} / {s}": n for (t, s), n in sorted(Counter((c["type"], c["state"]) for c in cases).items())},
            "evidence_dir": str(out / "evidence"), "evidence_key_file": str(stack.evidence_key_file(out) or ""),
            "triage_report": str(result.files["report"]), "inbox": str(inbox), "dispatched": dispatched,
            "cameras": cameras, "review_url": f"{api_url}/ui/queue", "login_url": f"{api_url}/ui/login",
            "reviewer": stack.REVIEWER, "token_hint": token[:8], "cjk_font": str(media.font or ""), "served": not no_serve,
        }
        (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
        _print_summary(summary, token)
        if no_serve:
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        _say(f"serving {api_url}/ui/login until Ctrl-C")
        while not stop.wait(1.0) and service.thread.is_alive():
            pass
    finally:
        if service is not None:
            service.stop()
        sim.stop()


def _print_summary(summary: dict, token: str) -> None:
    _say(f"summary (first pass in {summary['runtime_s']} s; also in {summary['out']}/summary.json)")
    typer.echo("  cases by type / state:")
    for key, n in summary["counts"].items():
        typer.echo(f"    {key}: {n}")
    typer.echo(f"  evidence bundles: {summary['evidence_dir']}  (check one: streetwatch evidence verify "
               f"{summary['evidence_dir']}/<case id>" + (f" --key-file {summary['evidence_key_file']})" if summary["evidence_key_file"] else ")"))
    typer.echo(f"  triage report:    {summary['triage_report']}")
    typer.echo(f"  your photos:      {summary['inbox']}  (drop photos there and run the demo again)")
    if summary["served"]:
        typer.echo(f"  review pages:     {summary['login_url']}  then {summary['review_url']}")
    else:  # the service stops with the demo: its URL would answer nothing; serving the run's settings brings it back
        port = summary["login_url"].rsplit(":", 1)[1].split("/", 1)[0]
        typer.echo(f"  review pages:     not served (--no-serve); to open them: streetwatch serve --config "
                   f"{summary['settings']} --port {port}, then {summary['login_url']}")
    typer.echo(f"  reviewer token ({summary['reviewer']}, shown once; paste it on the login page): {token}")
    typer.echo(f"  all commands take: --config {summary['settings']}")
