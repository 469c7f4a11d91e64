"""What Ray costs on one machine: `triage --ray local` against the single-process run, same process count.

On one machine the scale-out can only show its overhead. This makes the triage benchmark's
folder of real 12 MP phone photos (`benchmarks.triage_throughput.make_12mp`: real street photos
upscaled to 4000x3000 with EXIF capture times, in a temporary folder deleted afterwards) at two
sizes, then times `run_triage` on each, alternating:

- single: worker threads in this process (`--workers N`, one inference thread each);
- ray: the same steps on a local cluster of N CPUs (`RayPhotos`: N actors with one inference
  thread each), the cluster started once before the clocks. The first Ray run starts the actors
  (imports, a detector loaded in each) and is timed apart (`cold_run_s`); the rounds then find
  them warm, as every later `triage --ray` on a running cluster does within
  `cluster.keep_actors_s`.

Both use the same model, settings and driver-side detector (loaded before the clocks), and the
results are checked to be the same records. Reported per mode: the wall time of each size
(medians over rounds), photos/s, and the marginal rate `(large - small) / (T_large - T_small)`,
which leaves out the fixed start-up of each run; the start-up is what remains,
`T_small - small / marginal`. The target is Ray no more than
15 % slower than the single-process run.

    python -m benchmarks.ray_triage [--small 40 --large 120 --workers 2 --rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.environment import environment
from detect.runtime_env import prepare_ultralytics_env


def run(small: int = 40, large: int = 120, *, workers: int = 2, rounds: int = 3, model: str = "yolo11n") -> dict:
    prepare_ultralytics_env()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from benchmarks.triage_throughput import make_12mp, source_photos
    from pipelines.cluster.connect import joined
    from pipelines.cluster.triage import RayPhotos, plan
    from pipelines.settings import ClusterConfig
    from pipelines.triage import TriageSettings, run_triage
    from pipelines.triage.run import triage_detector

    tmp = Path(tempfile.mkdtemp(prefix="ray-triage-bench-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `timeout` still deletes the photos (finally below)
    settings = TriageSettings(out=tmp / "out", model=model, workers=workers, cases=False)
    detector = triage_detector(settings)
    config = ClusterConfig(local_cpus=workers)
    try:
        files = make_12mp(source_photos(large), tmp / "all")
        folders = {small: tmp / "small", large: tmp / "all"}
        folders[small].mkdir()
        for f in files[:small]:
            os.link(f, folders[small] / f.name)
        for f in files:  # the same page-cache state for every run
            f.read_bytes()
        times: dict[str, dict[int, list[float]]] = {"single": {small: [], large: []}, "ray": {small: [], large: []}}
        records: dict[str, list[str]] = {}
        load = [os.getloadavg()[0]]
        with joined("local", config) as info:
            photos = RayPhotos(info, config)
            start = time.perf_counter()  # the first run on a fresh cluster starts the actors: timed apart
            run_triage([folders[small]], settings.model_copy(update={"out": tmp / "cold"}), detector=detector,
                       show_progress=False, photos=photos)
            cold = time.perf_counter() - start
            print(f"cold run (actors started), {small} photos, ray: {cold:.2f} s", file=sys.stderr, flush=True)
            for r in range(rounds):
                for n in (small, large):
                    for mode in ("single", "ray"):
                        out = tmp / f"{mode}-{n}-{r}"
                        start = time.perf_counter()
                        result = run_triage([folders[n]], settings.model_copy(update={"out": out}), detector=detector,
                                            show_progress=False, photos=photos if mode == "ray" else None)
                        times[mode][n].append(time.perf_counter() - start)
                        print(f"round {r + 1}/{rounds}, {n} photos, {mode}: {times[mode][n][-1]:.2f} s", file=sys.stderr, flush=True)
                        if result.tally.ok != n:
                            raise RuntimeError(f"{mode}: triage read {result.tally.ok} of {n} photos")
                        lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
                        records.setdefault(f"{n}", lines)
                        if sorted(lines) != sorted(records[f"{n}"]):
                            raise RuntimeError(f"{mode} run {r} on {n} photos recorded other results than the first run")
                        shutil.rmtree(out, ignore_errors=True)
                        load.append(os.getloadavg()[0])
            ray_plan = plan(info, config, settings).describe()  # what each Ray run used
        modes = {}
        for mode, by_size in times.items():
            t_small, t_large = statistics.median(by_size[small]), statistics.median(by_size[large])
            marginal = (large - small) / (t_large - t_small) if t_large > t_small else float("nan")
            modes[mode] = {"seconds": {str(n): [round(t, 3) for t in ts] for n, ts in by_size.items()},
                           "photos_per_s": {str(small): round(small / t_small, 3), str(large): round(large / t_large, 3)},
                           "marginal_photos_per_s": round(marginal, 3),
                           "startup_s": round(t_small - small / marginal, 3)}
        single, ray = modes["single"], modes["ray"]
        return {
            "benchmark": "ray_triage",
            "photos": {"small": small, "large": large, "size": "4000x3000"},
            "workers": workers, "rounds": rounds, "model": model, "ray_plan": ray_plan,
            "single": single, "ray": {**ray, "cold_run_s": {str(small): round(cold, 3)}},
            "ray_slower_pct": {
                "marginal": round((single["marginal_photos_per_s"] / ray["marginal_photos_per_s"] - 1) * 100, 1),
                str(large): round((single["photos_per_s"][str(large)] / ray["photos_per_s"][str(large)] - 1) * 100, 1),
                str(small): round((single["photos_per_s"][str(small)] / ray["photos_per_s"][str(small)] - 1) * 100, 1)},
            "same_records": True,
            "load_average_1min": {"min": round(min(load), 2), "max": round(max(load), 2)},
            "environment": environment(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=40, help="photos in the small folder")
    parser.add_argument("--large", type=int, default=120, help="photos in the large folder (distinct real sources)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads of the single run = CPUs of the local Ray cluster")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="yolo11n")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    args = parser.parse_args(argv)
    record = run(args.small, args.large, workers=args.workers, rounds=args.rounds, model=args.model)
    for mode in ("single", "ray"):
        m = record[mode]
        print(f"{mode:6s}: {m['photos_per_s']} photos/s by folder size, marginal {m['marginal_photos_per_s']} photos/s, "
              f"start-up {m['startup_s']} s")
    print(f"ray slower by (%): {record['ray_slower_pct']}  (load average {record['load_average_1min']})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False))
        print(f"record: {args.out}")


if __name__ == "__main__":
    main()
