"""CCTV memory over hours: does one camera's `streetwatch watch` process keep a flat RSS?

Runs `streetwatch watch` as a process on one camera with the promoted verifier and a scene as a
city configures it (a no-parking kerb, a no-vending pavement and a frontage strip: zones the
verifier judges on every frame; `--ocr` adds a no-posting wall read every 10 s), and samples its
RSS (/proc/<pid>/status) and frames analysed (its /metrics) every `--every` seconds to a CSV.

Footage, cached in `--folder`: six real street photos (street-scenes' Shanghai, Taipei and Hong
Kong streets) as 8-minute 720p segments at 2 frames/s, in each a bus parked 6 minutes in the
no-parking zone (a case opens and clears) and passers-by (cut from Ultralytics' photos) appearing
every 9 s for 6-30 s (new tracks all the time); the 48-minute sequence repeated `--loops` times.
Judged with --replay (1 frame/s of camera time, as fast as it decodes: hours of camera time in
minutes); `--live` instead plays a 20-s cut of it live, reopened at each end like a stream that
drops every 20 s.

    python -m benchmarks.cctv_memory --seconds 1500 --out /tmp/mem.csv          # replay, ~1.7 h of camera time
    python -m benchmarks.cctv_memory --seconds 1200 --ocr --out /tmp/mem-ocr.csv
    python -m benchmarks.cctv_memory --seconds 1740 --live --out /tmp/mem-live.csv

The summary (RSS at start-up, after `--warmup`, at the end, its maximum, and the slope after
warm-up per hour of wall time and per 1,000 frames) is printed as JSON. Other processes on the
machine change the frames per hour, not the trend; say what ran beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

from benchmarks.environment import environment
from benchmarks.media import BUS_BOX, PARKING_ZONE, REPO, Sprite, cut, shared_datasets, street_view, write_clip, write_scene

SEGMENT_S = 480
PHOTOS = ["mpig__CrowdedMarketAlley.jpg", "lindsay__IMG_1892.jpg", "mpig__OutdoorMarketUnderOverpass.jpg",
          "mpig__TaipeiStreetWithTraditionalSigns.jpg", "rida__02.jpg", "lindsay__IMG_1842.jpg"]
ZONES = [{"id": "curb", "kind": "no_parking", "polygon": PARKING_ZONE},
         {"id": "pavement", "kind": "no_vending", "polygon": [[0.0, 0.55], [1.0, 0.55], [1.0, 0.75], [0.0, 0.75]]},
         {"id": "shops", "kind": "frontage", "polygon": [[0.0, 0.3], [1.0, 0.3], [1.0, 0.55], [0.0, 0.55]]}]
WALL = {"id": "wall", "kind": "no_posting", "polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 0.3], [0.0, 0.3]]}


def footage(folder: Path, loops: int) -> tuple[Path, Path]:
    """(the looped sequence, the 20-s live cut), written once into `folder`."""
    from ultralytics.utils import ASSETS

    streets = shared_datasets() / "street-scenes" / "images" / "cn2"
    people = [cut(ASSETS / "zidane.jpg", b) for b in [(747, 40, 1142, 712), (123, 193, 714, 719)]] + \
             [cut(ASSETS / "bus.jpg", b) for b in [(50, 400, 245, 905), (220, 405, 345, 860), (670, 380, 810, 875)]]
    bus = cut(ASSETS / "bus.jpg", BUS_BOX)
    rng = np.random.default_rng(45)
    parts = []
    for i, name in enumerate(PHOTOS):
        sprites = [Sprite(bus, x=0.5, bottom=0.95, height=0.55, start_s=20, end_s=380)]
        for t in np.arange(2.0, SEGMENT_S - 10, 9.0):
            sprites.append(Sprite(people[rng.integers(len(people))], x=float(rng.uniform(0.05, 0.95)),
                                  bottom=float(rng.uniform(0.55, 0.8)), height=float(rng.uniform(0.2, 0.35)),
                                  start_s=float(t), end_s=float(t + rng.uniform(6, 30))))
        part = folder / f"seg{i:02d}.mp4"
        if not part.is_file():
            write_clip(part, street_view(streets / name, (1280, 720)), sprites, SEGMENT_S, fps=2)
        parts.append(part)
    looped, live = folder / f"loop{loops}.mp4", folder / "clip20.mp4"
    if not looped.is_file():
        listing = folder / "list.txt"
        listing.write_text("".join(f"file '{p}'\n" for _ in range(loops) for p in parts))
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(looped)],
                       check=True)
    if not live.is_file():  # the bus arrives 5 s into the cut and stays to its end
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "15", "-t", "20", "-i", str(parts[0]), "-c", "copy", str(live)], check=True)
    return looped, live


def configure(run: Path, video: Path, ocr: bool, live: bool) -> Path:
    """The cameras file, scene and settings of one run (its own case store and evidence folder)."""
    run.mkdir(parents=True, exist_ok=True)
    reference = street_view(shared_datasets() / "street-scenes" / "images" / "cn2" / PHOTOS[0], (1280, 720)) if ocr else None
    write_scene(run / "cam-01.yaml", "cam-01", zones=ZONES + ([WALL] if ocr else []), reference=reference)
    camera = {"id": "cam-01", "url": str(video), "scene": "cam-01.yaml", "analysis_fps": 1,
              **({} if live else {"start_time": "2025-03-14T08:00:00"}), **({"ocr_interval_s": 10} if ocr else {})}
    (run / "cameras.yaml").write_text(yaml.safe_dump({"cameras": [camera]}))
    (run / "settings.yaml").write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{run}/cases.db"},
                                                       "evidence_store": {"local_root": str(run / "evidence"),
                                                                          "spool_dir": str(run / "spool")}}))
    return run / "cameras.yaml"


def _rss_mb(pid: int) -> float | None:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return None


def _frames(port: int) -> int | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    found = re.search(r'streetwatch_cctv_frames_analysed_total\{camera="cam-01"\} (\S+)', body)
    return int(float(found.group(1))) if found else None


def sample(cameras: Path, live: bool, seconds: float, every: float, port: int, out: Path) -> list[tuple[float, float, int]]:
    """Run `watch` for `seconds`, (t, RSS MB, frames analysed) every `every` s (also to `out`); SIGINT at the end."""
    run = cameras.parent
    cmd = [sys.executable, "-m", "streetwatch.cli", "watch", "--cameras", str(cameras), "--no-state", "--config",
           str(run / "settings.yaml"), "--metrics-port", str(port), "--events", str(run / "events.jsonl"), *([] if live else ["--replay"])]
    env = {**os.environ, "STREETWATCH_EVIDENCE_KEY": os.environ.get("STREETWATCH_EVIDENCE_KEY", "cctv-memory-bench-key-0123456789")}
    rows: list[tuple[float, float, int]] = []
    with open(run / "watch.log", "wb") as log, open(out, "w") as csv:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        csv.write("t_s,rss_mb,frames_analysed\n")
        try:
            while proc.poll() is None and (t := time.monotonic() - started) < seconds:
                rss, frames = _rss_mb(proc.pid), _frames(port)
                if rss is not None and frames is not None:
                    rows.append((round(t, 1), round(rss, 1), frames))
                    csv.write(f"{t:.1f},{rss:.1f},{frames}\n")
                    csv.flush()
                time.sleep(every)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(300)
    return rows


def summary(rows: list[tuple[float, float, int]], warmup_s: float) -> dict:
    """RSS at the first sample, after warm-up, at the end and its maximum; least-squares slope after warm-up."""
    t, rss, frames = (np.array(c, dtype=float) for c in zip(*rows))
    after = t >= warmup_s
    if after.sum() < 3:
        raise SystemExit(f"fewer than 3 samples after the {warmup_s:.0f} s warm-up: run longer")
    return {"wall_s": t[-1], "frames_analysed": int(frames[-1]), "rss_mb": {
        "first": rss[0], "after_warmup": rss[after][0], "end": rss[-1], "max": rss.max()},
        "slope_mb_per_h": round(float(np.polyfit(t[after], rss[after], 1)[0]) * 3600, 1),
        "slope_mb_per_1000_frames": round(float(np.polyfit(frames[after], rss[after], 1)[0]) * 1000, 2) if np.ptp(frames[after]) else None,
        "environment": environment()}  # versions (ONNX Runtime, numpy: the allocations) and the load beside the run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1500, help="wall seconds to run the camera")
    p.add_argument("--warmup", type=float, default=300, help="seconds before the slope is measured")
    p.add_argument("--every", type=float, default=10, help="seconds between samples")
    p.add_argument("--ocr", action="store_true", help="add a no-posting wall read by OCR every 10 s")
    p.add_argument("--live", action="store_true", help="a 20-s clip played live and reopened at each end, not a replay")
    p.add_argument("--loops", type=int, default=4, help="times the 48-minute sequence is repeated (replay)")
    p.add_argument("--folder", type=Path, default=Path("/tmp/sw-cctv-memory"), help="footage cache and run folders")
    p.add_argument("--port", type=int, default=9545, help="the watch process's metrics port")
    p.add_argument("--out", type=Path, required=True, help="CSV of the samples")
    args = p.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    looped, live = footage(args.folder, args.loops)
    run = args.folder / f"run-{os.getpid()}"
    rows = sample(configure(run, live if args.live else looped, args.ocr, args.live), args.live, args.seconds, args.every, args.port, args.out)
    print(json.dumps({"mode": "live" if args.live else "replay", "ocr": args.ocr, **summary(rows, args.warmup)}))


if __name__ == "__main__":
    main()
