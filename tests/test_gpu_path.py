"""The torch GPU path: on-device letterbox, stage profile, compile option; CUDA cases skip without a GPU.

The device letterbox is plain torch, so its geometry and pixels are checked here on CPU tensors
against the OpenCV path; the CUDA-only parts (pinned upload, fp16, CUDA graphs, the bench on a
GPU) run where `torch.cuda.is_available()`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.record import load_record
from detect.engine import DetectorConfigError, load_detector
from detect.engine.compare import match, match_all
from detect.engine.gpu_preprocess import DeviceLetterbox
from detect.engine.letterbox import input_shape, make_batch
from detect.engine.profile import StageProfile
from detect.imageio import read_image
from detect.judgement import Judgement, load_judgement
from detect.taxonomy import load_taxonomy
from detect.verifier.verifier import Verdicts
from streetwatch.cli import app

_no_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")


def needs_cuda(test):
    """Marked `gpu` and skipped, with the reason, where torch sees no CUDA device."""
    return pytest.mark.gpu(_no_cuda(test))


@pytest.fixture(scope="module")
def photos(real_photos) -> list[np.ndarray]:
    return [read_image(p) for p in real_photos]


@pytest.mark.parametrize("rect", [True, False], ids=["rect", "square"])
def test_device_letterbox_matches_the_opencv_path_on_cpu_tensors(photos, rect):
    letterbox = DeviceLetterbox("cpu")
    for im in photos:
        shape = input_shape(im.shape[0], im.shape[1], 640, 32, rect)
        ref, ref_boxes = make_batch([im], shape)
        out, boxes = letterbox([im], shape)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert boxes == ref_boxes  # same geometry: boxes map back identically
        diff = np.abs(out.numpy() - ref)
        # OpenCV resizes in fixed point and rounds to uint8; torch stays in float: < 1 grey level apart
        assert diff.max() < 1 / 255 and diff.mean() < 0.5 / 255


@pytest.mark.slow  # 10 s: torch runs the detector twice on CPU; the default suite's ~15-minute budget
def test_torch_detector_with_device_letterbox_agrees_with_the_host_path(photos, torch_detector):
    device_path = load_detector("yolo11n", backend="torch", device_preprocess=True)
    assert device_path.describe()["device_preprocess"] is True
    ref, test = torch_detector.detect(photos), device_path.detect(photos)
    agreement = match_all(ref, test, iou_threshold=0.5)
    assert agreement.ref_total >= 10 and agreement.recall >= 0.9 and agreement.precision >= 0.9
    # Differences are confined to boxes at the edge of the confidence/NMS thresholds.
    for r, t in zip(ref, test, strict=True):
        sure = r[r.confidence >= 0.5]
        assert match(sure, t, iou_threshold=0.9).matched == len(sure)


def test_stage_profile_splits_the_detect_loop(onnx_detector, photos):
    onnx_detector.profile = profile = StageProfile()
    try:
        onnx_detector.detect(photos[:3])
    finally:
        onnx_detector.profile = None
    assert profile.images == 3 and profile.batches >= 1
    assert all(profile.seconds[s] > 0 for s in ("preprocess", "infer", "postprocess"))
    assert 0 < profile.outside_model_fraction() < 1


def test_compile_mode_is_checked():
    with pytest.raises(DetectorConfigError, match="unknown compile mode 'turbo'"):
        load_detector("yolo11n", backend="torch", compile_mode="turbo")
    with pytest.raises(DetectorConfigError, match="options of the torch backend"):
        load_detector("yolo11n", backend="onnx", compile_mode="default")


@needs_cuda
def test_cuda_fp16_with_pinned_upload_agrees_with_cpu_fp32(photos, torch_detector):
    gpu = load_detector("yolo11n", backend="torch", device="cuda")
    assert gpu.half and gpu.device_preprocess  # the CUDA defaults
    assert load_detector("yolo11n", backend="torch", device="cuda", half=False).half is False
    test = gpu.detect(photos)
    assert gpu._device_letterbox._staging.is_pinned()
    agreement = match_all(torch_detector.detect(photos), test, iou_threshold=0.5)
    assert agreement.recall >= 0.9 and agreement.precision >= 0.9, agreement.as_dict()


def _verdicts(detector, judgement: Judgement, images: list[np.ndarray]) -> list[Verdicts]:
    """Each photo's verdicts from the verifier reading this detector's neck map."""
    seen = detector.detect_with_features(images)
    return [judgement.objects(image, dets, fmap)[1] for image, (dets, fmap) in zip(images, seen, strict=True)]


@needs_cuda
def test_promoted_verifier_on_cuda_fp16_judges_as_on_the_cpu(photos, onnx_detector):
    """The heads were trained on the CPU ONNX run's neck map; fp16 on the GPU may move a photo's
    probability by a few hundredths, and flip no verdict that is not such a close call."""
    judgement = load_judgement(None, load_taxonomy())
    assert judgement.verifier is not None, "no promoted verifier (models/verifiers/promoted.yaml)"
    gpu = load_detector("yolo11n", backend="torch", device="cuda", features=True)
    assert gpu.half and gpu.has_features
    judgement.check(gpu)
    for ref, test in zip(_verdicts(onnx_detector, judgement, photos), _verdicts(gpu, judgement, photos), strict=True):
        assert ref.image.keys() == test.image.keys() and ref.image
        for type_id, p in ref.image.items():
            assert abs(p - test.image[type_id]) < 0.05, (type_id, p, test.image[type_id])
            if abs(p - ref.thresholds[type_id]) >= 0.05:
                assert ref.found(type_id) == test.found(type_id), (type_id, p, test.image[type_id])


@needs_cuda
def test_cuda_graphs_through_torch_compile_agree_with_eager(photos):
    eager = load_detector("yolo11n", backend="torch", device="cuda", rect=False)
    graphs = load_detector("yolo11n", backend="torch", device="cuda", rect=False, compile_mode="reduce-overhead")
    agreement = match_all(eager.detect(photos), graphs.detect(photos), iou_threshold=0.5)
    assert agreement.recall >= 0.95 and agreement.precision >= 0.95, agreement.as_dict()


@needs_cuda
def test_bench_on_cuda_measures_fp16_with_the_stage_split(tmp_path, bus_jpg, zidane_jpg):
    images = tmp_path / "images"
    images.mkdir()
    for f in (bus_jpg, zidane_jpg):
        (images / f.name).symlink_to(f)
    out = tmp_path / "gpu.json"
    result = CliRunner().invoke(app, ["bench", "--backend", "torch", "--device", "cuda", "--precision", "fp32,fp16",
                                      "--batch", "1,2", "--imgsz", "640", "--count", "5", "--images", str(images),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = load_record(out)
    assert record.environment["gpu"] and record.environment["cuda"]
    for v in record.variants():
        assert v.status == "ok", (v.key, v.reason)
        assert v.extra["detector"]["device_preprocess"] is True
        assert v.extra["detector"]["half"] is (v.params["precision"] == "fp16")
        assert 0 < v.outside_model_fraction < 1 and v.accuracy.reference == "torch/cpu/fp32/640"
        assert v.accuracy.recall >= 0.9, v.accuracy
