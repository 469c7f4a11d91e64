"""CCTV suite: cameras sustained at 1 frame/s with lag < 2 s, and the decode/inference CPU split.

Runs `benchmarks.cctv_capacity` (the whole CCTV service over live-played 720p H.264 cameras) for
each backend x device of the run, at the first image size, with key-frame-only and full decoding.
One `VariantResult` per decode mode: `throughput` is the number of cameras sustained (`unit`
"cameras"), `stages_ms` the CPU milliseconds per analysed frame for decoding and for inference at
that camera count, `extra` the lag percentiles, load average and every step of the ramp.
`duration_s` of the run is the measured seconds per step (the standalone script defaults to 30).
A run with `count` set is a smoke run (one camera, one second per mode, a short clip): it proves
the suite works, it does not measure capacity. Combinations that cannot run here (no GPU) are
skipped with the reason, as in the model suite.
"""

from __future__ import annotations

from benchmarks.context import BenchContext
from benchmarks.record import VariantResult

RAMP = [4, 8, 12, 16, 20, 24, 32]


def run(ctx: BenchContext) -> list[VariantResult]:
    from benchmarks.cctv_capacity import run as capacity

    from benchmarks.suites.model import skip_reason

    cfg = ctx.config
    smoke = cfg.count is not None
    ramp, seconds, warmup_s, clip_s = ([1], 1.0, 1.0, 12) if smoke else (RAMP, cfg.duration_s, 5.0, 90)
    results: list[VariantResult] = []
    for backend in cfg.backends:
        for device in cfg.devices:
            key = f"{backend}-{device}-{cfg.imgsz[0]}"
            params = {"backend": backend, "device": device, "imgsz": cfg.imgsz[0], "analysis_fps": 1}
            reason = skip_reason(cfg.model, backend, device, "fp32")
            if reason:
                results += [VariantResult(suite="cctv", key=f"{key}-{mode}", params={**params, "decode": mode}, status="skipped",
                                          reason=reason, unit="cameras") for mode in ("keyframes", "full")]
                continue
            try:
                record = capacity(ramp, seconds=seconds, warmup_s=warmup_s, backend=backend, device=device, model=cfg.model,
                                  imgsz=cfg.imgsz[0], workdir=ctx.workdir() / "cctv", log=ctx.log, clip_s=clip_s)
            except Exception as exc:  # noqa: BLE001 - one backend's failure is recorded, the others still run
                for mode in ("keyframes", "full"):
                    results.append(VariantResult(suite="cctv", key=f"{key}-{mode}", params={**params, "decode": mode},
                                                 status="error", reason=f"{type(exc).__name__}: {exc}", unit="cameras"))
                continue
            for mode, cameras in record["capacity"].items():
                steps = [s for s in record["steps"] if s["mode"] == mode]
                best = next((s for s in steps if s["cameras"] == cameras), steps[0])
                results.append(VariantResult(
                    suite="cctv", key=f"{key}-{mode}", params={**params, "decode": mode}, status="ok",
                    iterations=len(steps), items=sum(s["frames_analysed"] for s in steps),
                    seconds=sum(s["seconds"] for s in steps), throughput=float(cameras), unit="cameras",
                    stages_ms={"decode": best["ms_per_frame"]["decode"], "inference": best["ms_per_frame"]["inference"]},
                    flags=["smoke"] if smoke else [],
                    extra={"lag_s": best["lag_s"], "cpu_cores_used": best["cpu_cores_used"], "criteria": record["criteria"],
                           "stream": record["stream"], "load_average": record["load_average"], "steps": steps}))
    return results
