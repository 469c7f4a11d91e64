"""Photo triage throughput vs a plain `YOLO(weights).predict(path)` loop, on 12-megapixel JPEGs.

Inspectors' phones produce 12 MP photos; what triage costs per photo is mostly decoding them.
This makes a folder of real 12 MP JPEGs (real street photos upscaled to 4000x3000, each with
its own EXIF capture time, in a temporary folder that is deleted afterwards), then in one
process times:

- baseline: `YOLO(weights).predict(str(path), imgsz, conf)` for each file, one after another;
- triage: `run_triage` on the folder (listing, hashing, reduced-resolution decode, EXIF, ONNX
  inference in parallel worker streams, photo rules, thumbnails, results.jsonl, grouping,
  report.html, cases.csv; not the case-store evidence bundles, which are built afterwards for
  positive groups only),

with the same model, image size and confidence. It reports both rates in photos per second, their
ratio, the CPU time per photo of each, and the agreement of the detections
(`detect.engine.compare.match_all`, IoU 0.5, boxes in full-resolution pixels). The agreement is
split into its causes with the same ONNX detector on full-resolution decodes: the engine alone
(vs the baseline), the reduced decode alone, and both loops against an anti-aliased reference
(full decode, INTER_AREA downscale to the network size). Models are loaded before the clocks start.

    python -m benchmarks.triage_throughput [--photos 40] [--out FILE]

`run(...) -> dict` is the entry point for the benchmark harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks.environment import environment
from detect.runtime_env import prepare_ultralytics_env

DEFAULT_SIZE = (4000, 3000)


def source_photos(limit: int) -> list[Path]:
    """Real street photos: ultralytics' bus.jpg and zidane.jpg, then the real-sample sets in turn."""
    import importlib.util

    assets = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets"
    shared = Path(os.environ.get("STREETWATCH_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    sets = [sorted((shared / "datasets" / "real-sample" / s / "images").glob("*.jpg")) for s in ("street-garbage", "facades-ads")]
    picks = [assets / "bus.jpg", assets / "zidane.jpg"]
    for pair in zip(*sets):  # alternate the two sets so any prefix mixes both
        picks += pair
    return picks[:limit]


def make_12mp(sources: list[Path], folder: Path, size: tuple[int, int] = DEFAULT_SIZE, quality: int = 92) -> list[Path]:
    """Upscale each photo to 12 MP (landscape or portrait like the original) with phone-like EXIF."""
    import cv2
    import piexif

    from detect.imageio import read_image

    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 5, 20, 9, 0, 0)
    out = []
    for i, src in enumerate(sources):
        image = read_image(src)  # any format the benchmark harness accepts, EXIF-oriented
        w, h = size if image.shape[1] >= image.shape[0] else size[::-1]
        big = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, quality])
        stamp = (start + timedelta(minutes=7 * i)).strftime("%Y:%m:%d %H:%M:%S").encode()
        exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"bench", piexif.ImageIFD.Orientation: 1},
                            "Exif": {piexif.ExifIFD.DateTimeOriginal: stamp}})
        path = folder / f"IMG_{i:05d}.jpg"
        piexif.insert(exif, buf.tobytes(), str(path))
        out.append(path)
    return out


def _detections_from_records(results: Path, files: list[Path], names: dict[int, str]):
    import supervision as sv

    from pipelines.triage.journal import read_records

    ids = {n: i for i, n in names.items()}
    by_source = {}
    for r in read_records(results):
        boxes = [b for b in r.detections if b.class_name in ids]  # the detector's boxes (not OCR lines, verifier regions)
        by_source[r.source] = sv.Detections(
            xyxy=np.array([b.xyxy for b in boxes], dtype=float).reshape(-1, 4),
            confidence=np.array([b.conf for b in boxes], dtype=float),
            class_id=np.array([ids[b.class_name] for b in boxes], dtype=int),
        )
    return [by_source.get(str(f), sv.Detections.empty()) for f in files]


def _full_resolution_references(detector, files: list[Path], imgsz: int):
    """The ONNX detector on full decodes: as the baseline feeds it (bilinear letterbox from 12 MP), and
    after an anti-aliased INTER_AREA downscale to the network size (boxes in full-resolution pixels)."""
    import cv2

    from detect.imageio import read_image

    full, area = [], []
    for f in files:
        image = read_image(f)
        h, w = image.shape[:2]
        k = imgsz / max(h, w)
        full.append(detector.detect([image])[0])
        dets = detector.detect([cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)])[0]
        if len(dets):
            dets.xyxy = dets.xyxy / k
        area.append(dets)
    return full, area


def run(
    photos: int = 40,
    *,
    model: str = "yolo11n",
    backend: str = "onnx",
    device: str = "cpu",
    imgsz: int = 640,
    conf: float = 0.25,
    workers: int | None = None,
    rounds: int = 3,
    size: tuple[int, int] = DEFAULT_SIZE,
    sources: list[Path] | None = None,
    triage_model: str | None = None,
    verifier: str | None = None,
    compare_verifier: bool = True,
    ocr: str = "auto",
) -> dict:
    """Make `photos` 12 MP JPEGs, time the baseline loop and triage on them, return the record.

    `triage_model` runs triage with another export of the model (e.g. its INT8 ONNX file) while
    the baseline keeps `model`; the record says so. Default: the same model on both sides.
    `device` runs both sides there (tensorrt: triage through that ONNX Runtime provider, the baseline on CUDA).
    `verifier`: the triage's verifier (default the promoted one; "none" = detector classes alone). With
    `compare_verifier`, each round also runs triage with `--verifier none` on the same detector, and the
    record says how much CPU per photo the verifier (its heads, evidence and the OCR it gates) adds.
    """
    prepare_ultralytics_env()
    import supervision as sv
    from ultralytics import YOLO

    from detect.engine.compare import match_all
    from detect.registry import resolve_weights
    from detect.digests import sha256_file
    from pipelines.triage import TriageSettings, run_triage
    from pipelines.triage.run import triage_detector

    weights, _ = resolve_weights(model)
    tmp = Path(tempfile.mkdtemp(prefix="triage-bench-"))
    yolo = YOLO(str(weights), task="detect")
    base_device = device.replace("tensorrt", "cuda")
    settings = TriageSettings(out=tmp / "triage", model=triage_model or model, backend=backend, device=device, conf=conf, imgsz=imgsz,
                              cases=False, verifier=verifier, ocr=ocr,
                              **({"workers": workers} if workers else {}))
    plain_settings = settings.model_copy(update={"verifier": "none"})
    compare_verifier = compare_verifier and (verifier is None or verifier.lower() != "none")
    detector = triage_detector(settings)
    try:
        files = make_12mp(sources or source_photos(photos), tmp / "photos", size)
        megapixels = round(float(np.mean([size[0] * size[1] for _ in files])) / 1e6, 1)
        for f in files:  # same page-cache state for both loops
            f.read_bytes()
        for f in files[:2]:  # warm-up, both orientations (bus.jpg is portrait)
            yolo.predict(str(f), imgsz=imgsz, conf=conf, device=base_device, verbose=False)
        for shape in ((size[1], size[0], 3), (size[0], size[1], 3)):  # first use of an input shape is slow in ORT
            detector.detect([np.zeros((shape[0] // 4, shape[1] // 4, 3), np.uint8)])

        base_times, triage_times, base_cpu, triage_cpu, stage_ms = [], [], [], [], []
        plain_times, plain_cpu, findings = [], [], {}
        base_out = []
        load_before = os.getloadavg()[0]
        for r in range(rounds):
            start, cpu = time.perf_counter(), time.process_time()
            outs = [sv.Detections.from_ultralytics(yolo.predict(str(f), imgsz=imgsz, conf=conf, device=base_device, verbose=False)[0]) for f in files]
            base_times.append(time.perf_counter() - start)
            base_cpu.append(time.process_time() - cpu)
            base_out = base_out or outs

            settings = settings.model_copy(update={"out": tmp / f"triage-{r}"})
            start, cpu = time.perf_counter(), time.process_time()
            result = run_triage([tmp / "photos"], settings, detector=detector, show_progress=False)
            triage_times.append(time.perf_counter() - start)
            triage_cpu.append(time.process_time() - cpu)
            if result.tally.ok != len(files):
                raise RuntimeError(f"triage read {result.tally.ok} of {len(files)} photos")
            stage_ms.append(result.stats.stage_ms())
            if compare_verifier:
                plain = plain_settings.model_copy(update={"out": tmp / f"plain-{r}"})
                start, cpu = time.perf_counter(), time.process_time()
                run_triage([tmp / "photos"], plain, detector=detector, show_progress=False)
                plain_times.append(time.perf_counter() - start)
                plain_cpu.append(time.process_time() - cpu)
        for name, folder in (("verifier", "triage-0"), ("detector_classes_only", "plain-0")):
            path = tmp / folder / "results.jsonl"
            if path.is_file():
                found = [f["type"] for line in path.read_text().splitlines() for f in json.loads(line).get("findings", [])]
                findings[name] = {t: found.count(t) for t in sorted(set(found))}

        ours = _detections_from_records(tmp / "triage-0" / "results.jsonl", files, detector.names)
        agreement = match_all(base_out, ours, iou_threshold=0.5)
        full, area = _full_resolution_references(detector, files, imgsz)
        parts = {  # where the disagreement comes from
            "onnx_full_decode_vs_baseline": match_all(base_out, full),  # the engine alone
            "triage_vs_onnx_full_decode": match_all(full, ours),  # the reduced decode alone
            "baseline_vs_area_downscale": match_all(area, base_out),  # against an anti-aliased reference
            "triage_vs_area_downscale": match_all(area, ours),
        }
        base_rate = len(files) / statistics.median(base_times)
        triage_rate = len(files) / statistics.median(triage_times)
        return {
            "benchmark": "triage_throughput",
            "photos": len(files),
            "photo_size": f"{size[0]}x{size[1]}",
            "megapixels": megapixels,
            "rounds": rounds,
            "ocr": ocr,
            "model": model,
            "weights": weights.name,
            "weights_sha256": sha256_file(weights),
            "triage": {"backend": backend, "device": device, "onnx_model": detector.describe()["model"], "workers": settings.workers,
                       "threads_per_worker": detector.describe().get("threads"),
                       "imgsz": imgsz, "conf": conf, "seconds": [round(t, 3) for t in triage_times],
                       "photos_per_s": round(triage_rate, 3),
                       "cpu_ms_per_photo": round(statistics.median(triage_cpu) / len(files) * 1000, 1),
                       "stage_ms_per_photo": {k: round(statistics.median(r[k] for r in stage_ms), 3) for k in stage_ms[0]}},
            "baseline": {"loop": "YOLO(weights).predict(path)", "device": base_device, "imgsz": imgsz, "conf": conf,
                         "seconds": [round(t, 3) for t in base_times], "photos_per_s": round(base_rate, 3),
                         "cpu_ms_per_photo": round(statistics.median(base_cpu) / len(files) * 1000, 1)},
            "speedup": round(triage_rate / base_rate, 3),
            **({"without_verifier": {
                "photos_per_s": round(len(files) / statistics.median(plain_times), 3),
                "cpu_ms_per_photo": round(statistics.median(plain_cpu) / len(files) * 1000, 1),
                "speedup": round(len(files) / statistics.median(plain_times) / base_rate, 3),
                "verifier_cpu_added_pct": round(100 * (statistics.median(triage_cpu) / statistics.median(plain_cpu) - 1), 1),
                "findings": findings}} if plain_times else {}),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "agreement_iou50": agreement.as_dict(),
            "agreement_iou50_parts": {name: a.as_dict() for name, a in parts.items()},
            "environment": environment(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40, help="number of 12 MP photos to make (distinct real sources)")
    parser.add_argument("--model", default="yolo11n")
    parser.add_argument("--triage-model", default=None,
                        help="another export of --model for triage only (e.g. an INT8 .onnx); default: the same model")
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or tensorrt (both loops run there; see run())")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=None, help="triage workers (default: one per core, at most 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/triage rounds; medians are reported")
    parser.add_argument("--verifier", default=None, help="triage's verifier (default: the promoted one; none: detector classes alone)")
    parser.add_argument("--no-verifier-comparison", action="store_true", help="skip the extra triage run with --verifier none per round")
    parser.add_argument("--ocr", default="auto", choices=["auto", "all", "off"],
                        help="triage's OCR (auto: the verifier's gated tiles; off: the verifier's own cost alone)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    args = parser.parse_args(argv)
    record = run(args.photos, triage_model=args.triage_model, model=args.model, backend=args.backend, device=args.device, imgsz=args.imgsz, conf=args.conf,
                 workers=args.workers, rounds=args.rounds, verifier=args.verifier, compare_verifier=not args.no_verifier_comparison,
                 ocr=args.ocr)
    t, b, a = record["triage"], record["baseline"], record["agreement_iou50"]
    print(f"{record['photos']} photos of {record['photo_size']} ({record['megapixels']} MP), {args.model} @ {args.imgsz}, "
          f"conf {args.conf}, {record['environment']['cpu']}")
    print(f"  baseline YOLO().predict loop : {b['photos_per_s']:6.2f} photos/s")
    print(f"  streetwatch triage           : {t['photos_per_s']:6.2f} photos/s  ({args.backend}, {t['workers']} workers)")
    print(f"  speed-up                     : {record['speedup']:.2f}x  (CPU per photo: baseline {b['cpu_ms_per_photo']} ms, "
          f"triage {t['cpu_ms_per_photo']} ms; load average {record['load_average_1min']})")
    if "without_verifier" in record:
        w = record["without_verifier"]
        print(f"  triage, --verifier none      : {w['photos_per_s']:6.2f} photos/s ({w['speedup']:.2f}x); the verifier adds "
              f"{w['verifier_cpu_added_pct']}% CPU per photo (verify {t['stage_ms_per_photo'].get('verify')} ms, "
              f"ocr {t['stage_ms_per_photo'].get('ocr')} ms per photo); findings {w['findings']}")
    print(f"  agreement (IoU .5)           : recall {a['recall']:.3f} precision {a['precision']:.3f} "
          f"({a['matched']}/{a['ref_boxes']} baseline boxes, {a['test_boxes']} triage boxes)")
    for name, part in record["agreement_iou50_parts"].items():
        print(f"    {name:32s}: recall {part['recall']:.3f} precision {part['precision']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False))
        print(f"  record                       : {args.out}")


if __name__ == "__main__":
    main()
