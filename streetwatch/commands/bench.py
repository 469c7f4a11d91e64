"""`streetwatch bench`: throughput, latency and accuracy per backend/device/precision/batch/image size."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from streetwatch.commands.common import fail, setup_logging, writable_or_fail


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str, option: str) -> list[int]:
    try:
        return [int(v) for v in _list(value)]
    except ValueError:
        fail(f"{option} {value!r}: expected comma-separated whole numbers, e.g. 1,8,32")


def bench(
    suite: Annotated[str, typer.Option("--suite", help="model, triage, cctv or all (comma-separated).")] = "model",
    model: Annotated[str, typer.Option("--model", help="Model id from `streetwatch models list`, or a .pt/.onnx file "
                                                       "(benchmarks name their model; not the promoted one).")] = "yolo11n",
    backend: Annotated[str, typer.Option("--backend", help="Comma-separated: onnx, torch.")] = "onnx,torch",
    device: Annotated[str, typer.Option("--device", help="Comma-separated: cpu, cuda[:N], tensorrt (onnx).")] = "cpu",
    precision: Annotated[str, typer.Option("--precision", help="Comma-separated: fp32, fp16 (GPU), int8 (onnx; exported per run and image size, calibrated on the benchmark images).")] = "fp32",
    batch: Annotated[str, typer.Option("--batch", help="Comma-separated batch sizes.")] = "1,8",
    imgsz: Annotated[str, typer.Option("--imgsz", help="Comma-separated input sizes (multiples of 32).")] = "640",
    duration: Annotated[float, typer.Option("--duration", help="Timed seconds per variant (unless --count).")] = 10.0,
    count: Annotated[int | None, typer.Option("--count", min=1, help="Exact number of timed calls per variant; makes the triage and CCTV suites a short smoke run.")] = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls before measuring.")] = 3,
    images: Annotated[list[Path] | None, typer.Option("--images", help="Image folder or file (repeatable). Default: ultralytics' bus.jpg and zidane.jpg plus ../shared/datasets/real-sample when present.")] = None,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Benchmark images used at most.")] = 16,
    input_shape: Annotated[str, typer.Option("--input", help="square (real batches at imgsz x imgsz) or rect (production CPU shape; mixed aspect ratios split batches).")] = "square",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for the backends (default: each library's own; 1 is steadier on a busy machine).")] = None,
    torch_compile: Annotated[str | None, typer.Option("--torch-compile", help="torch backend: default, reduce-overhead (CUDA graphs) or max-autotune.")] = None,
    device_preprocess: Annotated[bool | None, typer.Option("--device-preprocess/--host-preprocess", help="torch backend: letterbox on the device or on the CPU (default: device on CUDA).")] = None,
    min_agreement: Annotated[float, typer.Option("--min-agreement", min=0.0, max=1.0, help="Flag variants whose recall or precision vs the fp32 reference is below this.")] = 0.9,
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON record here (refused if the file exists, unless --overwrite).")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="Write the Markdown table (and comparison) here.")] = None,
    compare_to: Annotated[Path | None, typer.Option("--compare", help="Earlier JSON record: print ratios and flag regressions.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, help="Noise threshold for --compare (0.10 = 10%).")] = 0.10,
    fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", help="Exit 1 when --compare finds a regression.")] = False,
    from_record: Annotated[Path | None, typer.Option("--from", help="Do not run: report on this earlier JSON record (with --markdown / --compare).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an --out or --markdown file that exists.")] = False,
) -> None:
    """Benchmark the detector, the photo-triage job and the CCTV service on real images.

    Every model variant is warmed up, checked for accuracy against the fp32 CPU reference of its
    backend (recall/precision at IoU 0.5; a fast variant that disagrees is flagged) and timed with
    device synchronisation. Triage variants report photos/s on 12 MP photos, the per-stage split and
    the agreement with a plain YOLO predict loop. Variants that cannot run here are recorded as
    skipped with the reason.
    """
    setup_logging()
    from benchmarks.record import load_record
    from benchmarks.report import compare, compare_markdown, environment_differences, markdown
    from detect.config_io import ConfigError

    for option, path in (("--out", out), ("--markdown", markdown_out)):
        writable_or_fail(path, option, overwrite=overwrite, example="bench.json")
    try:
        record = load_record(from_record) if from_record else _run(
            suite, model, backend, device, precision, batch, imgsz, duration, count, warmup, images, max_images,
            input_shape, threads, torch_compile, device_preprocess, min_agreement)
        old = load_record(compare_to) if compare_to else None
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if out:
        record.save(out)
    text = markdown(record)
    typer.echo(text)
    regressions = 0
    if old is not None:
        changes = compare(record, old, threshold=threshold)
        table = compare_markdown(changes, environment_differences(record, old), threshold)
        typer.echo(table)
        text += "\n" + table
        regressions = sum(c.verdict == "regression" for c in changes)
    if markdown_out:
        markdown_out.parent.mkdir(parents=True, exist_ok=True)
        markdown_out.write_text(text, encoding="utf-8")
    if out:
        typer.echo(f"record: {out}")
    if regressions and fail_on_regression:
        raise typer.Exit(1)


def _run(suite, model, backend, device, precision, batch, imgsz, duration, count, warmup, images, max_images,
         input_shape, threads, torch_compile, device_preprocess, min_agreement):
    from benchmarks.context import BenchConfig
    from benchmarks.harness import default_images, run
    from benchmarks.suites import SUITES
    from detect.config_io import validate_model
    from detect.imageio import expand_inputs  # here, not at the top: it loads OpenCV, which every other command would pay for

    suites = list(SUITES) if suite.strip() == "all" else _list(suite)
    config = validate_model(BenchConfig, {
        "suites": suites, "model": model, "backends": _list(backend), "devices": _list(device),
        "precisions": _list(precision), "batches": _ints(batch, "--batch"), "imgsz": _ints(imgsz, "--imgsz"),
        "duration_s": duration, "count": count, "warmup": warmup, "input": input_shape, "threads": threads,
        "torch_compile": torch_compile, "device_preprocess": device_preprocess, "min_agreement": min_agreement,
        "max_images": max_images,
    }, "streetwatch bench")
    files = expand_inputs(images) if images else default_images(max_images)
    if not files:
        raise ValueError("no benchmark images: give --images DIR" if images is None
                         else "no image files in " + ", ".join(map(str, images)))
    command = _command_line(config, images)
    return run(config, files, command=command, log_line=lambda line: typer.echo(line, err=True))


def _command_line(config, images: list[Path] | None) -> str:
    """An equivalent command line, recorded so a result can be reproduced."""
    c = config
    args = ["streetwatch", "bench", "--suite", ",".join(c.suites), "--model", c.model, "--backend", ",".join(c.backends),
            "--device", ",".join(c.devices), "--precision", ",".join(c.precisions),
            "--batch", ",".join(map(str, c.batches)), "--imgsz", ",".join(map(str, c.imgsz)),
            *(["--count", str(c.count)] if c.count else ["--duration", f"{c.duration_s:g}"]),
            "--warmup", str(c.warmup), "--input", c.input, "--max-images", str(c.max_images)]
    for p in images or []:
        args += ["--images", str(p)]
    if c.threads:
        args += ["--threads", str(c.threads)]
    if c.torch_compile:
        args += ["--torch-compile", c.torch_compile]
    if c.device_preprocess is not None:
        args.append("--device-preprocess" if c.device_preprocess else "--host-preprocess")
    if c.min_agreement != 0.9:
        args += ["--min-agreement", f"{c.min_agreement:g}"]
    return shlex.join(args)
