"""Photo triage suite: photos/s, the read/decode/infer/ocr/rules/evidence split, and the baseline.

Runs `benchmarks.triage_throughput` (the whole `run_triage` job, decode included, against a plain
`YOLO(weights).predict(path)` loop on the same photos) for each backend x device of the run, at
the first image size, on the run's benchmark images upscaled to 12 MP phone photos. One
`VariantResult` per backend x device: `throughput` in photos/s (median round), `stages_ms` the
milliseconds per photo in each triage stage (summed over the parallel workers, so they add up to
more than the wall time per photo), `accuracy` the agreement with the baseline loop's boxes, and
`extra` the baseline rate, the speed-up, the agreement and its parts, CPU per photo and load.
A run with `count` set is a smoke run (two photos at 1280x960, one round): it proves the suite
works, it does not measure throughput. Combinations that cannot run here are skipped with the
reason, as in the model suite.
"""

from __future__ import annotations

from benchmarks.context import BenchContext
from benchmarks.record import Accuracy, VariantResult

SMOKE_SIZE = (1280, 960)


def run(ctx: BenchContext) -> list[VariantResult]:
    from benchmarks.suites.model import skip_reason
    from benchmarks.triage_throughput import DEFAULT_SIZE
    from benchmarks.triage_throughput import run as throughput

    cfg = ctx.config
    smoke = cfg.count is not None
    files, size, rounds = (ctx.files[:2], SMOKE_SIZE, 1) if smoke else (ctx.files, DEFAULT_SIZE, 3)
    results: list[VariantResult] = []
    for backend in cfg.backends:
        for device in cfg.devices:
            key = f"{backend}-{device}-{cfg.imgsz[0]}"
            params = {"backend": backend, "device": device, "imgsz": cfg.imgsz[0], "photo_size": f"{size[0]}x{size[1]}"}
            reason = skip_reason(cfg.model, backend, device, "fp32")
            if reason:
                results.append(VariantResult(suite="triage", key=key, params=params, status="skipped", reason=reason, unit="photos/s"))
                continue
            ctx.log(f"triage {key}: {len(files)} photos of {params['photo_size']}, {rounds} round(s)")
            try:
                record = throughput(len(files), model=cfg.model, backend=backend, device=device, imgsz=cfg.imgsz[0], conf=cfg.conf,
                                    rounds=rounds, size=size, sources=files)
            except Exception as exc:  # noqa: BLE001 - one backend's failure is recorded, the others still run
                results.append(VariantResult(suite="triage", key=key, params=params, status="error",
                                             reason=f"{type(exc).__name__}: {exc}", unit="photos/s"))
                continue
            triage, baseline = record["triage"], record["baseline"]
            results.append(VariantResult(
                suite="triage", key=key, params=params, status="ok", iterations=rounds, items=record["photos"] * rounds,
                seconds=round(sum(triage["seconds"]), 3), throughput=triage["photos_per_s"], unit="photos/s",
                stages_ms=triage["stage_ms_per_photo"],
                accuracy=Accuracy(reference="baseline YOLO(weights).predict(path)", iou=0.5, **record["agreement_iou50"]),
                flags=["smoke"] if smoke else [],
                extra={"baseline_photos_per_s": baseline["photos_per_s"], "speedup_vs_baseline": record["speedup"],
                       "agreement_iou50": record["agreement_iou50"], "agreement_iou50_parts": record["agreement_iou50_parts"],
                       "cpu_ms_per_photo": {"triage": triage["cpu_ms_per_photo"], "baseline": baseline["cpu_ms_per_photo"]},
                       "workers": triage["workers"], "rounds_s": {"triage": triage["seconds"], "baseline": baseline["seconds"]},
                       "load_average_1min": record["load_average_1min"], "weights_sha256": record["weights_sha256"]}))
    return results
