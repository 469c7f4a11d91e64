"""Model suite: the detector alone, per backend x device x precision x image size x batch size.

For each variant: warm-up calls, then one profiled pass over every benchmark image (its detections
feed the accuracy check and its stage times the preprocess/infer/postprocess split), then the timed
loop (fixed count or duration, device-synchronised). What is timed is `Detector.detect` on decoded
images: letterbox, network, decoding and NMS, not file decoding (that belongs to triage).

Accuracy: each variant's detections are matched to the fp32 detections of the same backend on
the CPU at the same image size (class-aware, IoU 0.5). The CPU fp32 run is the reference because
it is available everywhere and is the configuration the parity tests pin down; a GPU or reduced
precision variant that disagrees with it is flagged `inaccurate`, and `fast-but-wrong` when it also
beats its own fp32 throughput.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import supervision as sv

from benchmarks.context import BenchContext
from benchmarks.measure import timed_calls
from benchmarks.record import Accuracy, ModelFile, VariantResult
from detect.engine import Detector, DetectorConfigError, ModelNotFoundError, load_detector
from detect.engine.compare import match_all
from detect.engine.profile import StageProfile
from detect.digests import sha256_file

log = logging.getLogger(__name__)


def run(ctx: BenchContext) -> list[VariantResult]:
    cfg = ctx.config
    torch_threads = cfg.threads or (_torch_start_threads() if "torch" in cfg.backends else None)
    threads = {"onnx": cfg.threads, "torch": torch_threads}
    refs = _References(ctx, threads)
    results: list[VariantResult] = []
    for backend in cfg.backends:
        for device in cfg.devices:
            for precision in cfg.precisions:
                for imgsz in cfg.imgsz:
                    results += _run_detector(ctx, refs, backend, device, precision, imgsz, threads[backend])
    flag(results, cfg.min_agreement)
    return results


def _torch_start_threads() -> int | None:
    """torch's thread count now, before any export: every torch variant runs with it.

    Ultralytics' exporter (an ONNX export on first use, an INT8 export) resets torch to
    cpu_count - 1 threads as a side effect; without pinning, torch figures would depend on
    whether an export happened earlier in the same run.
    """
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def variant_key(backend: str, device: str, precision: str, imgsz: int, batch: int | None = None) -> str:
    return f"{backend}/{device}/{precision}" + (f"/b{batch}" if batch is not None else "") + f"/{imgsz}"


def _run_detector(ctx: BenchContext, refs: _References, backend: str, device: str, precision: str,
                  imgsz: int, threads: int | None) -> list[VariantResult]:
    """All batch sizes of one detector configuration (the detector is built once)."""
    cfg = ctx.config

    def result(batch: int, status: str, reason: str | None = None, **fields) -> VariantResult:
        params = {"backend": backend, "device": device, "precision": precision, "batch": batch, "imgsz": imgsz,
                  "input": cfg.input}
        return VariantResult(suite="model", key=variant_key(backend, device, precision, imgsz, batch),
                             params=params, status=status, reason=reason, **fields)

    reason = skip_reason(cfg.model, backend, device, precision)
    if reason:
        ctx.log(f"skip  {variant_key(backend, device, precision, imgsz)}: {reason}")
        return [result(b, "skipped", reason) for b in cfg.batches]
    try:
        detector, extra = build_detector(ctx, backend, device, precision, imgsz, threads)
    except (DetectorConfigError, ModelNotFoundError, ImportError) as exc:
        ctx.log(f"skip  {variant_key(backend, device, precision, imgsz)}: {exc}")
        return [result(b, "skipped", str(exc)) for b in cfg.batches]
    except Exception as exc:  # noqa: BLE001 - an export or runtime failure is this variant's, not the run's
        log.exception("building %s failed", variant_key(backend, device, precision, imgsz))
        return [result(b, "error", f"{type(exc).__name__}: {exc}") for b in cfg.batches]

    out = []
    try:
        model = _model_file(detector)
        reference = refs.get(backend, imgsz)
        for batch in cfg.batches:
            try:
                fields = measure(detector, ctx, batch, reference)
                out.append(result(batch, "ok", model=model, extra={**fields.pop("extra"), **extra}, **fields))
                r = out[-1]
                ctx.log(f"ok    {r.key}: p50 {r.latency_ms.p50:.1f} ms, {r.throughput:.1f} images/s"
                        + (f", recall {r.accuracy.recall:.3f}" if r.accuracy else ""))
            except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory at a large batch
                log.exception("measuring %s failed", variant_key(backend, device, precision, imgsz, batch))
                out.append(result(batch, "error", f"{type(exc).__name__}: {exc}", model=model))
                _free_device_memory()
    finally:
        del detector
        _free_device_memory()
    return out


def skip_reason(model: str, backend: str, device: str, precision: str) -> str | None:
    """Why a combination cannot run here, decided before loading or exporting anything."""
    if backend == "torch" and precision == "int8":
        return "int8 runs through ONNX Runtime (static QDQ export); the torch backend has fp32 and fp16"
    if precision == "fp16" and device == "cpu":
        return "fp16 needs a GPU: the CPU backends have no fast fp16 kernels"
    if Path(model).suffix == ".onnx" and precision != "fp32":
        return f"{model} is a fixed ONNX file; precision variants need a .pt model or a registry id"
    if device == "cpu":
        return None
    if backend == "torch":
        if device == "tensorrt":
            return "tensorrt is an ONNX Runtime provider; use --backend onnx for it"
        try:
            import torch
        except ImportError as exc:
            return f"the torch backend needs PyTorch ({exc})"
        if not torch.cuda.is_available():
            return "no CUDA GPU visible to torch (torch.cuda.is_available() is False)"
        return None
    import onnxruntime as ort

    provider = "TensorrtExecutionProvider" if device == "tensorrt" else "CUDAExecutionProvider"
    if provider not in ort.get_available_providers():
        return (f"{provider} not available in this onnxruntime ({', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu")
    return None


def build_detector(ctx: BenchContext, backend: str, device: str, precision: str, imgsz: int,
                   threads: int | None) -> tuple[Detector, dict]:
    """Load (exporting once when needed) the detector of a variant; also says how its model was made."""
    cfg = ctx.config
    extra: dict = {}
    kwargs = dict(backend=backend, device=device, conf=cfg.conf, iou=cfg.iou, imgsz=imgsz, threads=threads,
                  rect=cfg.input == "rect", max_batch=max(cfg.batches))
    model = cfg.model
    if backend == "torch":
        kwargs.update(half=precision == "fp16", device_preprocess=cfg.device_preprocess, compile_mode=cfg.torch_compile)
    elif precision == "int8":
        model, extra["int8_export"] = _int8_export(ctx, imgsz)
    else:
        kwargs.update(dynamic=True, half=precision == "fp16")
    if backend == "onnx" and device != "cpu":
        _preload_cuda_libraries()
    detector = load_detector(model, **kwargs)
    providers = getattr(detector, "providers", None)
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(device.split(":")[0])
    if providers is not None and wanted and providers[0] != wanted:
        raise DetectorConfigError(f"{wanted} is listed but did not load (session fell back to {', '.join(providers)})")
    return detector, extra


def _preload_cuda_libraries() -> None:
    """Let onnxruntime-gpu find CUDA/cuDNN in the nvidia-* wheels that came with PyTorch.

    Without it the CUDA provider may fail to load on machines whose CUDA libraries live only in
    site-packages; build_detector then records the variant as skipped (fallback to CPU).
    """
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - best effort; the provider check reports the outcome
            log.warning("onnxruntime.preload_dlls failed: %s", exc)


def _int8_export(ctx: BenchContext, imgsz: int) -> tuple[str, str]:
    """A dynamic INT8 export calibrated on the benchmark images: (file for load_detector, how it was made).

    Exported into the run's scratch folder (registered there, not in models/), so the accuracy
    check measures the quantisation of these images and the product's registered models stay
    untouched. Without the torch extra (no exporter) a registered INT8 export is used instead.
    """
    key = ("int8", imgsz)
    if key not in ctx.cache:
        try:
            from detect.export import export_onnx

            ctx.log(f"export INT8 {ctx.config.model} @ {imgsz}, calibrated on the {len(ctx.files)} benchmark images")
            with _models_dir(ctx.workdir() / "models"):
                path, _ = export_onnx(ctx.config.model, imgsz=imgsz, dynamic=True, int8=True,
                                      calib=ctx.calibration_dir(), calib_max=len(ctx.files)).for_engine()
            ctx.cache[key] = (str(path), f"calibrated on the {len(ctx.files)} benchmark images")
        except ImportError as exc:
            from detect.registry import find_export, get_card

            model_id = get_card(ctx.config.model).id
            found = find_export(model_id, imgsz, True, False, True, raw_box=True) or find_export(model_id, imgsz, True, False, True)
            if found is None:
                raise ModelNotFoundError(f"no INT8 export at imgsz {imgsz} and no exporter here ({exc})") from None
            ctx.cache[key] = (str(found[0]), f"registered export {found[1].id} (calibrated elsewhere: {exc})")
    return ctx.cache[key]


@contextmanager
def _models_dir(first: Path) -> Iterator[None]:
    """Make `first` the registry directory exports are written to, for the duration of the block."""
    old = os.environ.get("STREETWATCH_MODELS")
    os.environ["STREETWATCH_MODELS"] = os.pathsep.join([str(first), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            del os.environ["STREETWATCH_MODELS"]
        else:
            os.environ["STREETWATCH_MODELS"] = old


def measure(detector: Detector, ctx: BenchContext, batch: int,
            reference: tuple[str, list[sv.Detections]] | str) -> dict:
    """Warm-up, one profiled pass over all images (accuracy + stage split), then the timed loop."""
    cfg, images = ctx.config, ctx.images
    n = len(images)
    detector.max_batch = batch

    def call(i: int) -> int:
        return len(detector.detect([images[(i * batch + k) % n] for k in range(batch)]))

    for i in range(cfg.warmup):
        call(i)
    detector.profile = profile = StageProfile()
    try:
        outputs = [d for s in range(0, n, batch) for d in detector.detect(images[s : s + batch])]
    finally:
        detector.profile = None
    timing = timed_calls(call, count=cfg.count, duration_s=cfg.duration_s, sync=detector.synchronize)
    latency = timing.latency_ms()

    fields: dict = {
        "iterations": len(timing.latencies),
        "items": timing.items,
        "seconds": round(timing.seconds, 4),
        "latency_ms": latency,
        "throughput": round(timing.throughput, 3),
        "stages_ms": {k: round(v, 3) for k, v in profile.ms_per_image().items()},
        "outside_model_fraction": _round(profile.outside_model_fraction()),
        "extra": {"ms_per_image_p50": round(latency.p50 / batch, 3),
                  "network_batch_mean": round(profile.images / max(profile.batches, 1), 2),
                  "detector": detector.describe()},
    }
    if isinstance(reference, str):
        fields["extra"]["accuracy_skipped"] = reference
    else:
        ref_key, ref_dets = reference
        fields["accuracy"] = Accuracy(reference=ref_key, iou=0.5, **match_all(ref_dets, outputs, 0.5).as_dict())
    return fields


def flag(results: list[VariantResult], floor: float) -> None:
    """Mark variants that disagree with their reference, and those that are also faster than fp32."""
    fp32 = {_sibling(r): r.throughput for r in results if r.status == "ok" and r.params["precision"] == "fp32"}
    for r in results:
        a = r.accuracy
        if r.status != "ok" or a is None or (a.recall >= floor and a.precision >= floor):
            continue
        r.flags.append("inaccurate")
        base = fp32.get(_sibling(r))
        if r.params["precision"] != "fp32" and base is not None and (r.throughput or 0) > base:
            r.flags.append("fast-but-wrong")


def _sibling(r: VariantResult) -> tuple:
    p = r.params
    return p["backend"], p["device"], p["batch"], p["imgsz"]


class _References:
    """fp32 CPU detections per (backend, imgsz), computed once and shared by all variants."""

    def __init__(self, ctx: BenchContext, threads: dict[str, int | None]) -> None:
        self.ctx = ctx
        self.threads = threads
        self.cache: dict[tuple[str, int], tuple[str, list[sv.Detections]] | str] = {}

    def get(self, backend: str, imgsz: int) -> tuple[str, list[sv.Detections]] | str:
        """(reference key, detections per image), or the reason no reference could be made."""
        if (backend, imgsz) not in self.cache:
            key = variant_key(backend, "cpu", "fp32", imgsz)
            cfg = self.ctx.config
            try:
                det = load_detector(cfg.model, backend=backend, device="cpu", conf=cfg.conf, iou=cfg.iou, imgsz=imgsz,
                                    threads=self.threads[backend], rect=cfg.input == "rect", max_batch=1)
                self.cache[backend, imgsz] = (key, det.detect(self.ctx.images))
                del det
            except Exception as exc:  # noqa: BLE001 - without a reference the variants still get timed
                self.cache[backend, imgsz] = f"no reference {key}: {type(exc).__name__}: {exc}"
        return self.cache[backend, imgsz]


_digests: dict[Path, str] = {}


def _model_file(detector: Detector) -> ModelFile:
    path = Path(detector.model_path)
    if path not in _digests:
        _digests[path] = sha256_file(path)
    return ModelFile(id=detector.model_id, file=path.name, sha256=_digests[path])


def _free_device_memory() -> None:
    """Give cached GPU memory back (after an out-of-memory error, or when a detector is done)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
