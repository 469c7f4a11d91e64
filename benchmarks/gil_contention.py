"""The torch backend beside busy Python threads: one detect call alone and with N threads spinning in Python.

Why: PyTorch releases the GIL around every operator it runs, and a thread that gives the GIL up
beside busy Python threads waits up to the interpreter's switch interval (5 ms) to get it back, so
an eager network of ~300 operators slows by orders of magnitude (triage's readers and the CCTV
readers are such threads). The torch backend runs one traced graph per input shape instead
(`detect/engine/torch_backend.py`); each run measures both, the traced graph and the eager network.

    python -m benchmarks.gil_contention [--imgsz 320] [--busy 3] [--calls 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import threading
import time

from benchmarks.harness import default_images
from detect.engine import load_detector
from detect.imageio import read_image


def ms_per_call(detector, image, calls: int) -> float:
    detector.detect([image])  # warm: the graph for this shape is traced here
    start = time.perf_counter()
    for _ in range(calls):
        detector.detect([image])
    return (time.perf_counter() - start) / calls * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--busy", type=int, default=3, help="Python threads spinning beside the detector")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    image = read_image(default_images(1)[0])  # Ultralytics' bus.jpg
    detector = load_detector("yolo11n", backend="torch", device=args.device, threads=1, imgsz=args.imgsz)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    for mode in ("traced", "eager"):
        detector.graphs.eager = mode == "eager"
        alone = ms_per_call(detector, image, args.calls)
        stop.clear()
        threads = [threading.Thread(target=spin, daemon=True) for _ in range(args.busy)]
        for t in threads:
            t.start()
        busy = ms_per_call(detector, image, max(1, args.calls // 2))
        stop.set()
        for t in threads:
            t.join()
        print(f"{mode:6}: {alone:8.1f} ms per call alone, {busy:8.1f} ms beside {args.busy} busy Python threads ({busy / alone:.1f}x)")


if __name__ == "__main__":
    main()
