"""ONNX Runtime backend vs a plain Ultralytics `YOLO(weights).predict` loop, in one process.

Both loops start from the same files on disk (decode included) with the same model, image size
and confidence, so the ratio is what a user gains by switching. Prints per-image latency of each,
their ratio, the agreement of detections, and writes a JSON record.

    python -m benchmarks.engine_vs_ultralytics --images DIR_OR_FILES... [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.environment import environment
from detect.engine import load_detector
from detect.engine.compare import match_all
from detect.imageio import read_image
from detect.registry import resolve_weights
from detect.digests import sha256_file
from detect.runtime_env import prepare_ultralytics_env


def _time_loop(files: list[Path], rounds: int, once) -> tuple[list[float], list]:
    once(files[0])  # warm-up (session init, first allocations)
    latencies, outputs = [], []
    for r in range(rounds):
        for f in files:
            start = time.perf_counter()
            out = once(f)
            latencies.append(time.perf_counter() - start)
            if r == 0:
                outputs.append(out)
    return latencies, outputs


def _ultralytics_as_detections(result):
    import supervision as sv

    return sv.Detections.from_ultralytics(result)


def run(files: list[Path], *, model: str = "yolo11n", imgsz: int = 640, conf: float = 0.25, rounds: int = 3,
        threads: int | None = None) -> dict:
    prepare_ultralytics_env()
    from ultralytics import YOLO

    weights, _ = resolve_weights(model)
    detector = load_detector(model, backend="onnx", imgsz=imgsz, conf=conf, threads=threads)
    yolo = YOLO(str(weights), task="detect")

    onnx_lat, onnx_out = _time_loop(files, rounds, lambda f: detector.detect([read_image(f)])[0])
    ultra_lat, ultra_out = _time_loop(
        files, rounds, lambda f: _ultralytics_as_detections(yolo.predict(str(f), imgsz=imgsz, conf=conf, verbose=False)[0])
    )
    agreement = match_all(ultra_out, onnx_out, iou_threshold=0.5)
    onnx_ms = statistics.mean(onnx_lat) * 1000
    ultra_ms = statistics.mean(ultra_lat) * 1000
    return {
        "benchmark": "engine_vs_ultralytics",
        "model": model,
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "onnx_model": detector.describe()["model"],
        "backend": "onnx",
        "device": "cpu",
        "imgsz": imgsz,
        "batch": 1,
        "threads": threads or "onnxruntime default",
        "images": len(files),
        "rounds": rounds,
        "onnx_ms_per_image": {"mean": round(onnx_ms, 2), "median": round(statistics.median(onnx_lat) * 1000, 2)},
        "ultralytics_ms_per_image": {"mean": round(ultra_ms, 2),
                                     "median": round(statistics.median(ultra_lat) * 1000, 2)},
        "speedup": round(ultra_ms / onnx_ms, 3),
        "agreement_iou50": agreement.as_dict(),
        "environment": environment(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", type=Path, required=True, help="image files or folders")
    parser.add_argument("--model", default="yolo11n")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=40, help="images used at most")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    args = parser.parse_args(argv)
    from detect.imageio import expand_inputs

    files = expand_inputs(args.images)[: args.limit]
    record = run(files, model=args.model, imgsz=args.imgsz, conf=args.conf, rounds=args.rounds, threads=args.threads)
    o, u = record["onnx_ms_per_image"]["mean"], record["ultralytics_ms_per_image"]["mean"]
    a = record["agreement_iou50"]
    print(f"{len(files)} images x {args.rounds} rounds, {args.model} @ {args.imgsz}, {record['environment']['cpu']}")
    print(f"  onnx backend      : {o:7.1f} ms/image")
    print(f"  ultralytics loop  : {u:7.1f} ms/image")
    print(f"  speed-up          : {record['speedup']:.2f}x")
    print(f"  agreement (IoU .5): recall {a['recall']:.3f} precision {a['precision']:.3f} "
          f"({a['matched']}/{a['ref_boxes']} boxes)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
        print(f"  record            : {args.out}")


if __name__ == "__main__":
    main()
