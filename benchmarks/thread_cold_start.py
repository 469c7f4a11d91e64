"""Does a torch detector's first call from a new thread cost more than the next? (the open question of
triage on a GPU, benchmarks/README.md "On a GPU").

On an H200, triage's `infer` stage took 0.8-1 s per photo while the same detector took 6-14 ms in the
bench; triage calls it from worker threads that are new in every run. PyTorch keeps cuDNN plans and
cuBLAS handles per thread, so the suspicion is a per-thread cold start. This measures it directly:
for each of `--threads` fresh threads, the first and the second call of the network bypassing the
detector's own thread (the old behaviour), then the same through the detector (every call on its one
long-lived thread, the current behaviour). Medians in ms.

    python -m benchmarks.thread_cold_start [--device cuda] [--threads 4] [--out record.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

from benchmarks.harness import default_images
from detect.engine import load_detector
from detect.engine.base import Detector
from detect.imageio import read_image


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def in_new_thread(fn) -> tuple[float, float]:
    """(first call ms, second call ms) of `fn` in a thread that never ran it before."""
    out: list[float] = []
    thread = threading.Thread(target=lambda: out.extend((_ms(fn), _ms(fn))))
    thread.start()
    thread.join()
    return out[0], out[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=4, help="fresh threads per mode")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    image = read_image(default_images(1)[0])  # Ultralytics' bus.jpg
    detector = load_detector("yolo11n", backend="torch", device=args.device)
    detector.detect([image])  # warm: traced graph, and the detector's own thread

    def bypass():  # the network in the calling thread, as before the detector had its own
        return Detector._run(detector, [image], False)

    def through():
        return detector.detect([image])

    record: dict = {"device": args.device, "threads": args.threads, "detector": detector.describe()}
    for name, fn in (("calling_thread", bypass), ("detector_thread", through)):
        pairs = [in_new_thread(fn) for _ in range(args.threads)]
        record[name] = {"first_call_ms": round(statistics.median(p[0] for p in pairs), 2),
                        "second_call_ms": round(statistics.median(p[1] for p in pairs), 2),
                        "pairs_ms": [[round(a, 2), round(b, 2)] for a, b in pairs]}
        print(f"{name:16}: first call in a new thread {record[name]['first_call_ms']:8.1f} ms, "
              f"second {record[name]['second_call_ms']:8.1f} ms (median of {args.threads} threads)")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
