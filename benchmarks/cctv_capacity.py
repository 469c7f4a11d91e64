"""CCTV capacity: how many 720p H.264 cameras one machine analyses at 1 frame/s with lag under 2 s.

Every camera is the same generated 1280x720, 25 frame/s H.264 clip (a real street photo with a
bus parked in a no-parking zone; one key frame per second, as many cameras send), played live
(paced by its media time) through the whole CCTV service: reader threads, the drop-oldest
queue, one batched inference worker, per-camera tracker and rules. Camera starts are staggered
over one analysis period, as real cameras are not in phase. For each decode mode (key frames
only / every frame) the number of cameras is raised step by step; a step passes when the 95th
percentile of lag (analysis time - frame time) is under the limit, no frame was dropped and at
least 90 % of the expected frames were analysed. CPU time is split between decoding (reader
threads) and inference (the worker thread plus ONNX Runtime's pool), from /proc per thread.

    python -m benchmarks.cctv_capacity --cameras 4,8,12,16,20,24 --seconds 30
    python -m benchmarks.cctv_capacity --device cuda            # GPU inference (same measurement)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

CLIP_S, CLIP_FPS, SIZE = 90, 25, (1280, 720)
PASS_LAG_S, MIN_ANALYSED = 2.0, 0.9


def make_clip(folder: Path, seconds: int = CLIP_S) -> Path:
    """The 720p test clip (cached in `folder`): CABAC, deblocking and sensor noise at ~2.7 Mbit/s, so
    decoding costs what a real 720p camera stream costs (an ultrafast clip of a still scene decodes ~5x cheaper)."""
    from benchmarks.media import parked_vehicle_clip, real_sample_dir

    path = folder / f"cctv-720p-{CLIP_FPS}fps-{seconds}s-v2.mp4"
    if not path.is_file():
        from ultralytics.utils import ASSETS

        street = real_sample_dir() / "facades-ads" / "images" / "img_172.jpg"
        parked_vehicle_clip(path, ASSETS / "bus.jpg", street, duration_s=seconds, arrive_s=5, leave_s=seconds,
                            size=SIZE, fps=CLIP_FPS, gop_s=1.0, crf=20, preset="veryfast", noise=3.0)
    return path


def _thread_cpu(tid: int) -> float:
    """CPU seconds (user + system) of one native thread of this process; 0 once it is gone."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


PAVEMENT = [[0.0, 0.55], [1.0, 0.55], [1.0, 0.75], [0.0, 0.75]]
"""A no-vending zone beside the no-parking one: a zone the verifier judges on every analysed frame."""


def measure(n: int, clip: Path, detector, keyframes: bool, seconds: float, warmup_s: float, folder: Path,
            judgement=None) -> dict:
    """Run `n` live cameras for `warmup_s + seconds`; figures are taken over the last `seconds`.
    With a verifier (`judgement`), every camera also has a no-vending zone it verifies on each frame."""
    import yaml

    from detect.evidence.builder import EvidenceBuilder, ModelInfo
    from detect.evidence.config import EvidenceConfig
    from pipelines.cases import CaseStore
    from pipelines.cases.intake import Intake
    from pipelines.cctv.service import Watcher
    from benchmarks.media import write_scene
    from pipelines.evidence_store import LocalEvidenceStore

    run_dir = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=folder))
    cams = []
    for i in range(n):
        cid = f"cam-{i:02d}"
        zones = None
        if judgement is not None and judgement.active:
            from benchmarks.media import PARKING_ZONE

            zones = [{"id": "curb", "kind": "no_parking", "polygon": PARKING_ZONE},
                     {"id": "pavement", "kind": "no_vending", "polygon": PAVEMENT}]
        write_scene(run_dir / f"{cid}.yaml", cid, zones=zones)
        cams.append({"id": cid, "url": str(clip), "scene": f"{cid}.yaml", "keyframes_only": keyframes, "analysis_fps": 1})
    (run_dir / "cameras.yaml").write_text(yaml.safe_dump({"cameras": cams, "queue_size": max(16, 2 * n), "max_batch": 8}))
    intake = Intake(CaseStore(f"sqlite:///{run_dir}/cases.db"), LocalEvidenceStore(run_dir / "evidence"),
                    EvidenceBuilder(EvidenceConfig(), b"benchmark-key-0123456789", ModelInfo(detector.model_id)), run_dir / "spool")
    lags: list[float] = []
    window = {"open": False}

    def analysed(frame) -> None:
        if window["open"]:
            lags.append((datetime.now(UTC) - frame.ts).total_seconds())

    watcher = Watcher(run_dir / "cameras.yaml", detector, intake, on_analysed=analysed, judgement=judgement)
    runner = threading.Thread(target=watcher.run, kwargs={"poll_s": 0.5, "stagger_s": 1.0 / n}, daemon=True)
    runner.start()
    time.sleep(warmup_s)
    readers = {r.reader.native_id for r in watcher.runtimes.values()}
    worker = watcher._worker.native_id
    m = watcher.metrics

    def counters() -> tuple[float, float]:
        ids = [c["id"] for c in cams]
        return (sum(m.value("streetwatch_cctv_frames_analysed_total", camera=c) for c in ids),
                sum(m.value("streetwatch_cctv_frames_dropped_total", camera=c) for c in ids))

    def batches() -> tuple[float, float, float]:
        return (m.value("streetwatch_cctv_inference_seconds_sum"), m.value("streetwatch_cctv_inference_seconds_count"),
                m.value("streetwatch_cctv_batch_frames_sum"))

    b0 = batches()
    cpu0, dec0, inf0, (an0, dr0) = _process_cpu(), sum(map(_thread_cpu, readers)), _thread_cpu(worker), counters()
    window["open"] = True
    time.sleep(seconds)
    window["open"] = False
    cpu1, dec1, inf1, (an1, dr1) = _process_cpu(), sum(map(_thread_cpu, readers)), _thread_cpu(worker), counters()
    b1 = batches()
    n_batches = max(1.0, b1[1] - b0[1])
    watcher.stop()
    runner.join(60)
    intake.store.close()
    shutil.rmtree(run_dir, ignore_errors=True)

    total, decode, worker_cpu = cpu1 - cpu0, dec1 - dec0, inf1 - inf0
    analysed_n, dropped = int(an1 - an0), int(dr1 - dr0)
    lag = np.array(lags) if lags else np.array([float("inf")])
    expected = n * seconds
    ok = bool(np.percentile(lag, 95) < PASS_LAG_S and dropped == 0 and analysed_n >= MIN_ANALYSED * expected)
    return {
        "cameras": n, "keyframes_only": keyframes, "seconds": seconds, "ok": ok,
        "frames_expected": expected, "frames_analysed": analysed_n, "frames_dropped": dropped,
        "lag_s": {"p50": round(float(np.percentile(lag, 50)), 3), "p95": round(float(np.percentile(lag, 95)), 3),
                  "max": round(float(lag.max()), 3)},
        "cpu_s": {"total": round(total, 2), "decode": round(decode, 2), "inference": round(total - decode, 2),
                  "worker_thread": round(worker_cpu, 2)},
        "cpu_cores_used": round(total / seconds, 2),
        "batches": {"count": int(b1[1] - b0[1]), "mean_frames": round((b1[2] - b0[2]) / n_batches, 2),
                    "mean_detect_ms": round(1000 * (b1[0] - b0[0]) / n_batches, 1)},
        "ms_per_frame": {"decode": round(1000 * decode / max(1, analysed_n), 1),
                         "inference": round(1000 * (total - decode) / max(1, analysed_n), 1)},
    }


def run(cameras: list[int] | None = None, seconds: float = 30.0, warmup_s: float = 8.0, modes: tuple[str, ...] = ("keyframes", "full"),
        backend: str = "onnx", device: str = "cpu", model: str = "yolo11n", imgsz: int = 640, workdir: Path | None = None,
        log=print, threads: int | None = None, clip_s: int = CLIP_S, verifier: str | None = "none") -> dict:
    """Ramp the number of cameras per decode mode until a step fails; returns every step and the capacity.
    `verifier` (an id, None for the promoted one, "none" for none): each camera verifies a no-vending zone."""
    from benchmarks.environment import environment
    from detect.engine import load_detector
    from detect.judgement import load_judgement
    from detect.taxonomy import load_taxonomy

    judgement = load_judgement(verifier, load_taxonomy())

    cameras = cameras or [4, 8, 12, 16, 20, 24, 32]
    folder = Path(workdir or tempfile.mkdtemp(prefix="sw-cctv-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    clip = make_clip(folder, clip_s)
    detector = load_detector(model, backend=backend, device=device, imgsz=imgsz, max_batch=8, threads=threads,
                             features=judgement.needs_features)
    judgement.check(detector)  # another detector or input size: a chosen verifier is refused, the promoted one steps aside
    load_start = os.getloadavg()
    steps, capacity = [], {}
    for mode in modes:
        capacity[mode] = 0
        for n in cameras:
            step = measure(n, clip, detector, mode == "keyframes", seconds, warmup_s, folder, judgement)
            step["mode"] = mode
            steps.append(step)
            log(f"cctv {mode:9s} {n:3d} cameras: lag p95 {step['lag_s']['p95']:.2f}s, dropped {step['frames_dropped']}, "
                f"analysed {step['frames_analysed']}/{step['frames_expected']}, CPU {step['cpu_cores_used']} cores "
                f"(decode {step['ms_per_frame']['decode']} ms/frame, inference {step['ms_per_frame']['inference']} ms/frame), "
                f"batches of {step['batches']['mean_frames']} in {step['batches']['mean_detect_ms']} ms "
                f"{'ok' if step['ok'] else 'FAIL'}")
            if not step["ok"]:
                break
            capacity[mode] = n
    return {
        "benchmark": "cctv_capacity", "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "criteria": {"analysis_fps": 1, "lag_p95_below_s": PASS_LAG_S, "dropped": 0, "min_analysed_share": MIN_ANALYSED},
        "stream": {"codec": "h264", "size": list(SIZE), "fps": CLIP_FPS, "gop_s": 1.0,
                   "kbit_s": round(clip.stat().st_size * 8 / clip_s / 1000)},
        "detector": {"model": detector.model_id, "backend": backend, "device": device, "imgsz": imgsz, "threads": threads},
        "verifier": judgement.verifier.id if judgement.verifier else None,
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "environment": environment(), "capacity": capacity, "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", default="4,8,12,16,20,24,32", help="camera counts to try, ascending")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per step (after warm-up)")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring each step")
    parser.add_argument("--modes", default="keyframes,full", help="keyframes, full or both")
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (GPU mode: inference on the GPU)")
    parser.add_argument("--model", default="yolo11n")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, help="inference intra-op threads (default: the runtime's)")
    parser.add_argument("--workdir", type=Path, help="keep the generated clip here")
    parser.add_argument("--verifier", default="none",
                        help="verifier id (promoted: the default one) judging a no-vending zone per camera; none (default): zones of parking only")
    parser.add_argument("--out", type=Path, help="write the JSON record here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = run([int(x) for x in args.cameras.split(",")], args.seconds, args.warmup, tuple(args.modes.split(",")),
                 args.backend, args.device, args.model, args.imgsz, args.workdir, log=lambda s: print(s, file=sys.stderr),
                 threads=args.threads, verifier=None if args.verifier == "promoted" else args.verifier)
    record["command"] = "python -m benchmarks.cctv_capacity " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(record, indent=2, ensure_ascii=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(json.dumps({"capacity": record["capacity"], "load_average": record["load_average"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
