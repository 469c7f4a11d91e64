"""Fault runs: nothing lost, nothing doubled, every bundle verifiable, under kills and a hostile platform.

Not a speed benchmark: these runs record *correctness under faults* as figures (issue 14), on
loopback only, with real processes (`streetwatch dispatch run`, `streetwatch triage`,
`streetwatch dispatch-sim`) killed with SIGKILL at chosen moments.

    # 220 cases, 30 % faults of every kind, three kill -9 of one of two dispatchers, a platform
    # that ignores Idempotency-Key
    python -m benchmarks.fault_run dispatch --cases 220 --out benchmarks/results/fault-run-dispatch-$(date +%F).json
    # triage killed in three phases (photo stream, sealing a bundle, writing the report), then --resume
    python -m benchmarks.fault_run triage --out benchmarks/results/fault-run-triage-$(date +%F).json

`tests/test_fault_runs.py` runs both (smaller in the default suite, full size marked slow).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from benchmarks.media import real_sample_dir

REPO = Path(__file__).resolve().parents[1]
KEY = "fault-run-evidence-key-0123456789"
EVIDENCE_URL = "https://evidence.example/sw"  # attachment URLs only; nothing fetches them here
TARGET = "city"


class FaultRunError(RuntimeError):
    """The run could not reach its end state in time (the message says where it stood)."""


# ---- processes ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1", "STREETWATCH_EVIDENCE_KEY": KEY}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streetwatch.cli", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Simulator:
    """`streetwatch dispatch-sim` as a subprocess on a free loopback port."""

    def __init__(self, work: Path, *args: str):
        import httpx

        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(timeout=30)
        log = (work / f"sim-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(_cli("dispatch-sim", "--port", str(self.port), *args), cwd=REPO, env=_env(),
                                     stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise FaultRunError(f"dispatch-sim did not start: see {log.name}") from None
                time.sleep(0.05)

    def received(self) -> dict:
        return self.http.get(f"{self.base}/sim/received").json()

    def faults(self, **kw) -> None:
        self.http.post(f"{self.base}/sim/faults", json=kw)

    def stop(self) -> None:
        self.http.close()
        _stop(self.proc)


def _settings(work: Path, sim: Simulator | None, timeout_s: float = 0.3, lookup: bool = True) -> Path:
    import yaml

    settings = {
        "cases": {"url": f"sqlite:///{work / 'cases.db'}"},
        "evidence_store": {"backend": "local", "local_root": str(work / "evidence"), "spool_dir": str(work / "spool"),
                           "public_base_url": EVIDENCE_URL},
        "dispatch": {"targets": {TARGET: {"adapter": "cn-dcm", "url": f"{sim.base if sim else 'http://127.0.0.1:9'}/cn-dcm/cases",
                                          "timeout_s": timeout_s, "lookup": lookup}},
                     "retry": {"base_s": 0.02, "max_s": 0.2}, "breaker": {"failures": 1000, "cooldown_s": 0.2},
                     "lease_s": max(1.0, 2 * timeout_s + 1), "idle_s": 0.05},
    }
    path = work / "streetwatch.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    return path


# ---- dispatch --------------------------------------------------------------------------------


def bus_event():
    """The real illegal-parking event of Ultralytics' bus.jpg (detector + photo rules), on a 1/3-scale
    frame so that hundreds of bundles are quick to write."""
    from datetime import UTC

    import cv2

    from detect.engine import load_detector
    from detect.frames import Frame
    from detect.imageio import read_image
    from detect.rules import PhotoRules

    spec = importlib.util.find_spec("ultralytics")
    bus = Path(spec.origin).parent / "assets" / "bus.jpg"
    image = read_image(bus)
    frame = Frame(image=image, source_id="fault-run", ts=datetime(2025, 3, 14, 2, 0, tzinfo=UTC), frame_id="bus")
    [event] = PhotoRules().process(frame, load_detector("yolo11n", backend="onnx").detect([image])[0])
    small = cv2.resize(image, (frame.width // 3, frame.height // 3), interpolation=cv2.INTER_AREA)
    dets = event.detections[:]
    dets.xyxy = dets.xyxy / 3
    small_frame = replace(frame, image=small)
    return replace(event, frame=small_frame, first_frame=small_frame, detections=dets)


def queue_cases(work: Path, event, n: int) -> list[str]:
    """`n` camera cases through the real intake: bundle built, signed, stored, queued for the target."""
    from detect.evidence.builder import BundleContext, EvidenceBuilder, ModelInfo
    from detect.evidence.config import EvidenceConfig
    from detect.frames import GeoPoint
    from pipelines.cases import CaseStore
    from pipelines.cases.intake import Intake
    from pipelines.evidence_store import LocalEvidenceStore

    store = CaseStore(f"sqlite:///{work / 'cases.db'}")
    evidence = LocalEvidenceStore(work / "evidence", public_base_url=EVIDENCE_URL)
    intake = Intake(store, evidence, EvidenceBuilder(EvidenceConfig(), KEY.encode(), ModelInfo("yolo11n", "ab" * 32)),
                    work / "spool", auto_queue=TARGET)
    ctx = BundleContext(source_kind="camera", source_id="cam-fault", address="杭州市西湖区文三路 1 号",
                        grid_cell="330106001001", geo=GeoPoint(30.2741, 120.1551))
    ids = [intake.record_event(replace(event, violation_id=f"cam-fault:z1:illegal_parking:t{i}"), ctx).id for i in range(n)]
    store.close()
    return ids


def dispatch_fault_run(work: Path, n: int, *, event=None, fail_rate: float = 0.3, kills: int = 3, dispatchers: int = 2,
                       ignore_key: bool = True, lookup: bool = True, seed: int = 7, limit_s: float = 900) -> dict:
    """Deliver `n` cases through `dispatchers` concurrent `dispatch run` processes against a simulator
    failing `fail_rate` of requests (every fault kind), SIGKILL one dispatcher `kills` times while a
    request is in flight (restarting it each time), and count what the platform holds. `lookup=False`
    is the baseline: exactly-once resting on the platform's honouring Idempotency-Key alone."""
    from pipelines.cases import CaseState, CaseStore

    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ids = queue_cases(work, event or bus_event(), n)
    made_s = time.monotonic() - started
    sim_args = ["--fail-rate", str(fail_rate), "--stall-s", "0.6", "--seed", str(seed)]
    sim = Simulator(work, *sim_args, *(["--ignore-idempotency-key"] if ignore_key else []))
    config = _settings(work, sim, lookup=lookup)
    store = CaseStore(f"sqlite:///{work / 'cases.db'}")
    wanted = set(ids)
    procs: list[subprocess.Popen] = []
    runs = collections.Counter()

    def start(slot: int) -> subprocess.Popen:
        runs[slot] += 1
        log = (work / f"dispatcher{slot}-run{runs[slot]}.log").open("wb")
        return subprocess.Popen(_cli("dispatch", "run", "--config", str(config)), cwd=REPO, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT)

    def on_platform() -> int:
        return len({c["external_id"] for c in sim.received()["cases"]} & wanted)

    def wait_for(condition, what: str) -> None:
        end = time.monotonic() + limit_s
        while not condition():
            if time.monotonic() > end:
                raise FaultRunError(f"gave up waiting for {what}: outbox {store.outbox_counts()}, platform holds {on_platform()}")
            time.sleep(0.05)

    kill_log = []
    try:
        delivering = time.monotonic()
        procs = [start(slot) for slot in range(dispatchers)]
        for k in range(1, kills + 1):
            wait_for(lambda k=k: on_platform() >= n * k // (kills + 1), f"{k}/{kills + 1} of the cases on the platform")
            sim.faults(latency_ms=400)  # every request now lasts 0.4 s: the dispatcher is inside one
            time.sleep(0.2)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            in_flight = [e for e in store.outbox_entries(status="pending") if e.lease_owner and e.in_doubt_since]
            kill_log.append({"kill": k, "on_platform": on_platform(), "entries_in_flight": len(in_flight)})
            sim.faults(latency_ms=0)
            procs[0] = start(0)
        wait_for(lambda: all(store.get(i).state is not CaseState.QUEUED for i in ids), "every case to leave `queued`")
        delivered_s = time.monotonic() - delivering
    finally:
        for proc in procs:
            _stop(proc)
        snapshot = sim.received()
        sim.stop()

    per_case = collections.Counter(c["external_id"] for c in snapshot["cases"])
    refs = {c["external_id"]: c["ref"] for c in snapshot["cases"]}
    states = collections.Counter(store.get(i).state.value for i in ids)
    found = sum(any((h.reason or "").startswith("found on") for h in store.history(i)) for i in ids)
    entries = [e for i in ids for e in store.outbox_entries(case_id=i)]
    result = {
        "cases": n, "dispatchers": dispatchers, "kills": kill_log, "fail_rate": fail_rate,
        "fault_modes": ["error", "error-after", "close", "garbage", "stall"], "platform_honours_idempotency_key": not ignore_key,
        "lookup_before_resend": lookup,
        "on_platform_total": len(snapshot["cases"]), "distinct_on_platform": len(set(per_case) & wanted),
        "duplicates": sum(c - 1 for c in per_case.values() if c > 1), "lost": len(wanted - set(per_case)),
        "foreign": len(set(per_case) - wanted), "states": dict(states),
        "references_match": all(store.get(i).dispatch_ref == refs.get(i) for i in ids),
        "adopted_after_lookup": found, "attempts": sum(e.attempts for e in entries),
        "simulator_counters": snapshot["counters"], "case_creation_s": round(made_s, 1),
        "delivery_s": round(delivered_s, 1),
    }
    store.close()
    return result


# ---- triage ----------------------------------------------------------------------------------


def triage_photos(folder: Path, *, spots: int = 8, others: int = 24) -> Path:
    """Real photos to triage: Ultralytics' bus.jpg re-shot at `spots` places far apart (one case each,
    phone EXIF time and GPS) and `others` real street photos from ../shared (mostly no violation), each
    with a phone's GPS too: a case without a place is parked before any platform sees it, and this run
    is about delivering every case once, not about places."""
    import cv2
    import piexif

    spec = importlib.util.find_spec("ultralytics")
    bus = Path(spec.origin).parent / "assets" / "bus.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    image = cv2.imread(str(bus))
    for i in range(spots):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90 - i])  # other bytes, same scene
        piexif.insert(_phone_exif(30.2 + i * 0.01, 120.1, f"2024:06:03 {9 + i:02d}:00:00"), buf.tobytes(),
                      str(folder / f"spot-{i:02d}.jpg"))
    shared = real_sample_dir()
    pool = sorted((shared / "street-garbage" / "images").glob("*.jpg")) + sorted((shared / "facades-ads" / "images").glob("*.jpg"))
    for j, src in enumerate(pool[:others]):
        piexif.insert(_phone_exif(30.5 + j * 0.01, 120.3), src.read_bytes(), str(folder / f"street-{src.name}"))
    return folder


def _phone_exif(lat: float, lon: float, taken: str | None = None) -> bytes:
    """EXIF as a phone writes it: GPS (north, east) and, when given, the time taken (`YYYY:MM:DD HH:MM:SS`)."""
    import piexif

    rational = lambda v: ((int(v), 1), (int((v % 1) * 60), 1), (round(((v * 60) % 1) * 60 * 100), 100))  # noqa: E731
    return piexif.dump({"Exif": {piexif.ExifIFD.DateTimeOriginal: taken.encode()} if taken else {},
                        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: rational(lat),
                                piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: rational(lon)}})


def triage_fault_run(work: Path, *, spots: int = 8, others: int = 24, limit_s: float = 600) -> dict:
    """`streetwatch triage --dispatch` killed with SIGKILL in three phases (the photo stream, sealing a
    bundle, writing the report), resumed each time, then delivered; every photo must be recorded
    once, every case delivered once, every bundle verify and belong to its case."""
    from detect.evidence.signing import verify_bundle
    from pipelines.cases import CaseStore
    from pipelines.triage.journal import RESULTS, read_records

    work.mkdir(parents=True, exist_ok=True)
    photos = triage_photos(work / "photos", spots=spots, others=others)
    sim = Simulator(work, "--seed", "3")
    config = _settings(work, sim, timeout_s=5)
    out, spool = work / "out", work / "spool"
    cmd = _cli("triage", str(photos), "--out", str(out), "--config", str(config), "--dispatch", "--workers", "1",
               "--ocr", "off", "--no-progress")

    def results() -> int:
        path = out / RESULTS
        return path.read_bytes().count(b"\n") if path.exists() else 0

    phases = {
        "photo stream": lambda: results() >= 5,
        "sealing a bundle": lambda: spool.is_dir() and any(p.name.endswith(".partial") for p in spool.iterdir()),
        "writing the report": lambda: (out / "cases.csv").exists(),
    }
    kills = []
    try:
        for i, (phase, reached) in enumerate(phases.items()):
            if phase == "writing the report":
                (out / "cases.csv").unlink(missing_ok=True)
            log = (work / f"triage-run{i + 1}.log").open("wb")
            proc = subprocess.Popen(cmd + (["--resume"] if i else []), cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
            end = time.monotonic() + limit_s
            while proc.poll() is None and not reached() and time.monotonic() < end:
                time.sleep(0.002)
            caught = proc.poll() is None and reached()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append({"phase": phase, "killed_there": caught, "records_at_kill": results(),
                          "half_written_bundles": sum(p.name.endswith(".partial") for p in spool.iterdir()) if spool.is_dir() else 0})
        final = subprocess.run(cmd + ["--resume"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=limit_s)
        if final.returncode != 0:
            raise FaultRunError(f"the last --resume failed: {final.stderr[-2000:]}")
        delivered = subprocess.run(_cli("dispatch", "run", "--once", "--config", str(config)), cwd=REPO, env=_env(),
                                   capture_output=True, text=True, timeout=limit_s)
        if delivered.returncode != 0:
            raise FaultRunError(f"dispatch run --once failed: {delivered.stderr[-2000:]}")
        snapshot = sim.received()
    finally:
        sim.stop()

    records = list(read_records(out / RESULTS))
    per_photo = collections.Counter(Path(r.source).name for r in records)
    store = CaseStore(f"sqlite:///{work / 'cases.db'}")
    cases = store.list()
    per_case = collections.Counter(c["external_id"] for c in snapshot["cases"])
    bundles = [verify_bundle(work / "evidence" / c.id, KEY.encode(), case_id=c.id, digest=c.evidence_digest) for c in cases]
    result = {
        "photos": len(list(photos.iterdir())), "kills": kills,
        "records": len(records), "photos_recorded_once": sum(v == 1 for v in per_photo.values()),
        "photos_recorded_twice_or_more": sum(v > 1 for v in per_photo.values()),
        "photos_missing": len({p.name for p in photos.iterdir()} - set(per_photo)),
        "cases": len(cases), "states": dict(collections.Counter(c.state.value for c in cases)),
        "delivered_once": sum(per_case.get(c.id) == 1 for c in cases),
        "duplicates": sum(v - 1 for v in per_case.values() if v > 1), "lost": sum(c.id not in per_case for c in cases),
        "bundles_verified": sum(r.ok for r in bundles), "bundle_problems": [r.as_dict() for r in bundles if not r.ok],
        "spool_left": [p.name for p in spool.iterdir() if p.is_dir()] if spool.is_dir() else [],
    }
    store.close()
    return result


# ---- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from benchmarks.environment import environment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", choices=["dispatch", "triage"])
    parser.add_argument("--cases", type=int, default=220, help="dispatch: cases to deliver")
    parser.add_argument("--fail-rate", type=float, default=0.3, help="dispatch: share of platform requests that fail")
    parser.add_argument("--kills", type=int, default=3, help="dispatch: SIGKILLs of a dispatcher")
    parser.add_argument("--dispatchers", type=int, default=2, help="dispatch: concurrent `dispatch run` processes")
    parser.add_argument("--honour-key", action="store_true", help="dispatch: the platform honours Idempotency-Key")
    parser.add_argument("--no-lookup", action="store_true", help="dispatch: baseline without the look-up before re-sending")
    parser.add_argument("--spots", type=int, default=8, help="triage: places with a violation (one case each)")
    parser.add_argument("--others", type=int, default=24, help="triage: other real street photos")
    parser.add_argument("--work", type=Path, help="keep the run's files here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the record (JSON) here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"sw-fault-{args.run}-"))
    command = "python -m benchmarks.fault_run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.run == "dispatch":
        result = dispatch_fault_run(work, args.cases, fail_rate=args.fail_rate, kills=args.kills,
                                    dispatchers=args.dispatchers, ignore_key=not args.honour_key, lookup=not args.no_lookup)
        ok = result["duplicates"] == 0 and result["lost"] == 0 and result["distinct_on_platform"] == args.cases
    else:
        result = triage_fault_run(work, spots=args.spots, others=args.others)
        ok = (result["photos_recorded_twice_or_more"] == 0 and result["photos_missing"] == 0 and result["duplicates"] == 0
              and result["lost"] == 0 and result["bundles_verified"] == result["cases"] == result["delivered_once"])
    record = {"run": args.run, "command": command, "passed": ok, "result": result, "environment": environment()}
    text = json.dumps(record, ensure_ascii=False, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
