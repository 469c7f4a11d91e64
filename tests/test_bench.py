"""`streetwatch bench` on the CPU: a tiny real run, its JSON and Markdown, skips with reasons, --compare."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import onnxruntime
import pytest
from typer.testing import CliRunner

from benchmarks.record import Accuracy, BenchRecord, VariantResult, load_record
from benchmarks.suites.model import flag
from detect.registry import resolve_weights
from detect.digests import sha256_file
from streetwatch.cli import app

runner = CliRunner()


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _bench(tmp: Path, suites: str, bus_jpg: Path, zidane_jpg: Path):
    """`bench --suite <suites>`: onnx + torch, cpu + cuda, fp32 + fp16, batch 1, 640, 3 timed calls on bus.jpg and
    zidane.jpg; the CLI's result, the JSON record and the Markdown."""
    images = tmp / "images"
    images.mkdir()
    for f in (bus_jpg, zidane_jpg):
        (images / f.name).symlink_to(f)
    out, md = tmp / "run.json", tmp / "run.md"
    result = runner.invoke(app, ["bench", "--suite", suites, "--backend", "onnx,torch", "--device", "cpu,cuda",
                                 "--precision", "fp32,fp16", "--batch", "1", "--imgsz", "640", "--count", "3",
                                 "--warmup", "1", "--images", str(images), "--out", str(out), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    return result, out, md


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, bus_jpg, zidane_jpg):
    """The model suite (9 s here); the triage and CCTV suites' smoke runs (30 s more) are the slow test below."""
    return _bench(tmp_path_factory.mktemp("bench"), "model", bus_jpg, zidane_jpg)


def _variant(record: BenchRecord, key: str) -> VariantResult:
    return next(v for v in record.variants() if v.key == key)


def test_tiny_run_record_validates_and_holds_real_measurements(tiny_run):
    _, out, _ = tiny_run
    raw = json.loads(out.read_text())
    jsonschema.validate(raw, BenchRecord.model_json_schema(by_alias=True))
    assert raw["schema"] == "streetwatch-bench/1"
    assert set(raw) >= {"created", "command", "config", "environment", "model", "images", "suites"}
    env = raw["environment"]
    assert isinstance(env["cpu"], str) and isinstance(env["cpu_count"], int) and env["versions"]["onnxruntime"]
    weights = resolve_weights("yolo11n")[0]
    assert raw["model"] == {"id": "yolo11n", "file": weights.name, "sha256": sha256_file(weights)}
    assert [(i["name"], i["width"], i["height"]) for i in raw["images"]] == [("bus.jpg", 810, 1080),
                                                                             ("zidane.jpg", 1280, 720)]
    record = load_record(out)
    for key, suffix in (("onnx/cpu/fp32/b1/640", ".onnx"), ("torch/cpu/fp32/b1/640", ".pt")):
        v = _variant(record, key)
        assert v.status == "ok" and v.iterations == 3 and v.items == 3, key
        lat = v.latency_ms
        assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
        assert v.throughput > 0 and v.seconds > 0
        assert set(v.stages_ms) == {"preprocess", "infer", "postprocess"} and all(t > 0 for t in v.stages_ms.values())
        assert 0 < v.outside_model_fraction < 1
        assert v.model.file.endswith(suffix)
        # The reference found the bus and the people in both photos; batch 1 agrees with it exactly.
        a = v.accuracy
        assert a.reference == key.replace("/b1", "") and a.ref_boxes >= 8
        assert a.recall == 1.0 and a.precision == 1.0 and not v.flags
    assert _variant(record, "onnx/cpu/fp32/b1/640").model.sha256 == sha256_file(
        next(p for p in resolve_weights("yolo11n")[0].parent.glob("yolo11n-640-dyn-rawbox.onnx")))  # the engine's variant


def test_variants_that_cannot_run_here_are_skipped_with_the_reason(tiny_run):
    _, out, _ = tiny_run
    record = load_record(out)
    for backend in ("onnx", "torch"):
        v = _variant(record, f"{backend}/cpu/fp16/b1/640")
        assert v.status == "skipped" and "fp16 needs a GPU" in v.reason
    onnx_cuda = _variant(record, "onnx/cuda/fp32/b1/640")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():  # onnxruntime-gpu installed
        assert onnx_cuda.status == "ok" or "did not load" in onnx_cuda.reason
    else:
        assert onnx_cuda.status == "skipped" and "CUDAExecutionProvider not available" in onnx_cuda.reason
    torch_cuda = _variant(record, "torch/cuda/fp32/b1/640")
    if _cuda():
        assert torch_cuda.status == "ok"
    else:
        assert torch_cuda.status == "skipped" and "torch.cuda.is_available() is False" in torch_cuda.reason


@pytest.mark.slow  # 40 s: the triage suite and the CCTV service over live-played cameras, each per backend
def test_the_triage_and_cctv_suites_smoke_run_on_the_cpu_and_skip_the_gpu(tmp_path, bus_jpg, zidane_jpg):
    _, out, md = _bench(tmp_path, "triage,cctv", bus_jpg, zidane_jpg)
    record = load_record(out)
    assert "| onnx | cpu | 640 | 1280x960 |" in md.read_text() and "photos/s" in md.read_text()
    # The triage suite runs a smoke run (--count given: two small photos, one round) per backend on the CPU.
    triage = {v.key: v for v in record.suites["triage"].results}
    for backend in ("onnx", "torch"):
        v = triage[f"{backend}-cpu-640"]
        assert v.status == "ok" and v.unit == "photos/s" and v.flags == ["smoke"], v
        assert v.items == 2 and v.iterations == 1 and v.throughput > 0 and v.seconds > 0
        assert set(v.stages_ms) == {"read", "decode", "infer", "verify", "ocr", "rules", "evidence"}
        assert all(v.stages_ms[s] > 0 for s in ("read", "decode", "infer", "rules"))
        assert v.stages_ms["verify"] > 0  # the promoted verifier judged both photos (findings, and so evidence, are its call)
        assert v.extra["baseline_photos_per_s"] > 0 and v.extra["speedup_vs_baseline"] > 0
        # Triage finds the people and the bus the baseline loop finds.
        assert v.accuracy.ref_boxes >= 8 and v.accuracy.recall >= 0.9 and v.extra["agreement_iou50"]["matched"] >= 8
        if not _cuda():
            assert triage[f"{backend}-cuda-640"].status == "skipped"
    # The CCTV suite runs a smoke step (--count given) per backend on the CPU and skips the GPU where there is none.
    cctv = {v.key: v for v in record.suites["cctv"].results}
    for backend in ("onnx", "torch"):
        for mode in ("keyframes", "full"):
            v = cctv[f"{backend}-cpu-640-{mode}"]
            assert v.status == "ok" and v.unit == "cameras" and v.flags == ["smoke"], v
            assert v.extra["steps"][0]["frames_analysed"] >= 1 and v.stages_ms["decode"] > 0 and v.stages_ms["inference"] > 0
        if not _cuda():
            assert cctv[f"{backend}-cuda-640-keyframes"].status == "skipped"


def test_markdown_table_lists_measured_and_skipped_variants(tiny_run):
    result, _, md = tiny_run
    text = md.read_text()
    assert "| backend | device | precision | batch | imgsz | p50 ms/call |" in text
    assert "| onnx | cpu | fp32 | 1 | 640 |" in text and "| torch | cpu | fp32 | 1 | 640 |" in text
    assert "fp16 needs a GPU" in text and "`onnx/cpu/fp16/b1/640`" in text
    assert "| onnx | cpu | fp32 | 1 | 640 |" in result.stdout


def test_compare_flags_a_synthetic_regression(tiny_run, tmp_path):
    _, out, _ = tiny_run
    old = json.loads(out.read_text())
    for v in old["suites"]["model"]["results"]:
        if v["key"] == "onnx/cpu/fp32/b1/640":  # the old run was twice as fast
            v["throughput"] *= 2
            v["latency_ms"] = {k: x / 2 for k, x in v["latency_ms"].items()}
    old["config"]["input"] = "rect"  # and it measured another input shape: said above the table
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    md = tmp_path / "cmp.md"
    result = runner.invoke(app, ["bench", "--from", str(out), "--compare", str(old_path), "--threshold", "0.1",
                                 "--markdown", str(md), "--fail-on-regression"])
    assert result.exit_code == 1, result.output
    rows = {line.split("|")[2].strip(): line for line in md.read_text().splitlines() if line.startswith("| model |")}
    assert "| regression | 0.50× | 2.00× |" in rows["`onnx/cpu/fp32/b1/640`"]
    assert "slower beyond 10%" in rows["`onnx/cpu/fp32/b1/640`"]
    assert "| same | 1.00× | 1.00× |" in rows["`torch/cpu/fp32/b1/640`"]
    assert "1 regression." in result.stdout
    assert "- config input: rect -> square" in md.read_text()


def test_compare_flags_an_accuracy_drop_and_passes_an_identical_record(tiny_run, tmp_path):
    _, out, _ = tiny_run
    same = runner.invoke(app, ["bench", "--from", str(out), "--compare", str(out), "--fail-on-regression"])
    assert same.exit_code == 0 and "0 regressions." in same.stdout
    new = json.loads(out.read_text())
    for v in new["suites"]["model"]["results"]:
        if v["key"] == "torch/cpu/fp32/b1/640":
            v["accuracy"]["recall"] = 0.8
            v["flags"] = ["inaccurate"]
    new_path = tmp_path / "new.json"
    new_path.write_text(json.dumps(new))
    result = runner.invoke(app, ["bench", "--from", str(new_path), "--compare", str(out), "--fail-on-regression"])
    assert result.exit_code == 1
    row = next(line for line in result.stdout.splitlines() if "`torch/cpu/fp32/b1/640`" in line)
    assert "regression" in row and "recall down 0.200" in row and "new flags: inaccurate" in row


def test_damaged_compare_file_is_refused_with_file_and_field(tiny_run, tmp_path):
    _, out, _ = tiny_run
    bad = json.loads(out.read_text())
    bad["suites"]["model"]["status"] = "maybe"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = runner.invoke(app, ["bench", "--from", str(out), "--compare", str(path)])
    assert result.exit_code == 2
    assert f"{path}: suites.model.status:" in result.output


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp8"], "streetwatch bench: precisions.0: Input should be 'fp32', 'fp16' or 'int8'"),
    (["--imgsz", "640,300"], "streetwatch bench: imgsz.1: Input should be a multiple of 32"),
    (["--suite", "speed"], "unknown suite 'speed' (choose from model, triage, cctv)"),
    (["--device", "npu"], "unknown device 'npu'"),
    (["--batch", "1,x"], "--batch '1,x': expected comma-separated whole numbers"),
])
def test_bad_options_are_refused_before_running(args, message):
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_no_readable_image_is_a_clear_error(tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a picture")
    result = runner.invoke(app, ["bench", "--images", str(fake), "--count", "1"])
    assert result.exit_code == 2
    assert "no readable benchmark images" in result.output


@pytest.mark.parametrize("option", ["--out", "--markdown"])
def test_an_output_that_is_a_folder_is_refused_before_running(tmp_path, option):
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a picture")
    result = runner.invoke(app, ["bench", "--images", str(fake), "--count", "1", option, str(tmp_path)])
    assert result.exit_code == 2
    assert f"{option} {tmp_path}: is a folder" in result.output
    under_a_file = runner.invoke(app, ["bench", "--images", str(fake), "--count", "1", option, str(fake / "r.json")])
    assert under_a_file.exit_code == 2
    assert f"{fake} exists and is not a folder" in under_a_file.output


def test_an_existing_output_is_kept_unless_overwrite_is_given(tmp_path, tiny_run):
    """An earlier record under the --out name (one in benchmarks/results/, the one --compare reads) was replaced
    without a word; it is refused before running, and --overwrite replaces it."""
    _, record, _ = tiny_run
    earlier = tmp_path / "earlier.json"
    earlier.write_text("{}")
    kept = runner.invoke(app, ["bench", "--from", str(record), "--out", str(earlier), "--markdown", str(tmp_path / "t.md")])
    assert kept.exit_code == 2 and f"--out {earlier}: exists" in kept.output and "--overwrite" in kept.output
    assert earlier.read_text() == "{}" and not (tmp_path / "t.md").exists()
    replaced = runner.invoke(app, ["bench", "--from", str(record), "--out", str(earlier), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert load_record(earlier).variants()


def _result(precision: str, throughput: float, recall: float) -> VariantResult:
    params = {"backend": "onnx", "device": "cpu", "precision": precision, "batch": 1, "imgsz": 320}
    acc = Accuracy(reference="onnx/cpu/fp32/320", ref_boxes=20, test_boxes=20, matched=int(20 * recall),
                   recall=recall, precision=recall, min_iou=0.9, max_conf_diff=0.1)
    return VariantResult(suite="model", key=f"onnx/cpu/{precision}/b1/320", params=params, status="ok",
                         throughput=throughput, accuracy=acc)


def test_fast_but_wrong_needs_both_disagreement_and_speed():
    fp32, fast_wrong = _result("fp32", 10.0, 1.0), _result("int8", 20.0, 0.5)
    flag([fp32, fast_wrong], floor=0.9)
    assert fp32.flags == [] and fast_wrong.flags == ["inaccurate", "fast-but-wrong"]
    slow_wrong, fast_right = _result("int8", 5.0, 0.5), _result("int8", 20.0, 0.95)
    flag([_result("fp32", 10.0, 1.0), slow_wrong, fast_right], floor=0.9)
    assert slow_wrong.flags == ["inaccurate"] and fast_right.flags == []


@pytest.mark.slow
def test_int8_variant_is_exported_calibrated_on_the_benchmark_images(real_photos, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for f in real_photos[:4]:
        (images / f.name).symlink_to(f)
    out = tmp_path / "int8.json"
    result = runner.invoke(app, ["bench", "--backend", "onnx", "--precision", "fp32,int8", "--imgsz", "320",
                                 "--batch", "1", "--count", "2", "--warmup", "1", "--images", str(images),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = load_record(out)
    v = _variant(record, "onnx/cpu/int8/b1/320")
    assert v.status == "ok" and v.model.file == "yolo11n-320-dyn-int8-rawbox.onnx"  # the engine's variant of the INT8 export
    assert v.extra["int8_export"] == "calibrated on the 4 benchmark images"
    # exported into the run's scratch folder, which is gone afterwards; models/ is left alone
    assert "sw-bench-" in v.extra["detector"]["weights"] and not Path(v.extra["detector"]["weights"]).exists()
    a = v.accuracy
    assert a.reference == "onnx/cpu/fp32/320" and a.ref_boxes > 0 and 0 < a.recall <= 1
    assert _variant(record, "onnx/cpu/fp32/b1/320").accuracy.recall == 1.0


def test_wheelhouse_lists_the_tested_closure_without_the_pytorch_stack(tmp_path):
    """The dry run of the carry script: what would be fetched for an offline GPU machine."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench-wheelhouse.sh"
    out = tmp_path / "wh"
    run = subprocess.run(["bash", str(script), "download", str(out), "--onnxruntime-gpu", "--dry-run"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 0, run.stderr
    assert "--only-binary=:all:" in run.stdout and "--python-version 3.11" in run.stdout
    pins = dict(line.split("==") for line in (out / "pins.txt").read_text().split())
    for name in ("ultralytics", "onnxruntime", "supervision", "opencv-python", "pytest"):
        assert pins[name] == md.version(name), name
    assert pins["onnxruntime-gpu"] == pins["onnxruntime"]
    assert not [n for n in pins if n in ("torch", "torchvision", "triton") or n.startswith("nvidia-")]
    requirements = (out / "requirements.txt").read_text().split()
    assert "ultralytics>=8.3" in requirements and not [r for r in requirements if r.startswith("torch")]
    assert not list(out.glob("*.whl"))  # a dry run downloads nothing


def test_thread_cold_start_times_first_and_second_calls_in_fresh_threads(tmp_path):
    """`benchmarks.thread_cold_start` (the open question of triage on a GPU) runs and records both modes;
    on the CPU neither pays a cold start of its own beyond noise, so only the record is checked here."""
    from benchmarks.thread_cold_start import main

    out = tmp_path / "threads.json"
    main(["--threads", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["device"] == "cpu" and record["detector"]["backend"] == "torch"
    for mode in ("calling_thread", "detector_thread"):
        pairs = record[mode]["pairs_ms"]
        assert len(pairs) == 2 and all(a > 0 and b > 0 for a, b in pairs)
        assert record[mode]["first_call_ms"] > 0 and record[mode]["second_call_ms"] > 0
