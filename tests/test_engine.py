"""Detector engine on real photos: expected objects, backend parity, batching, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from detect.engine import DetectorConfigError, load_detector
from detect.engine.compare import match, match_all
from detect.engine.letterbox import input_shape, make_batch
from detect.imageio import read_image


def _names(dets) -> list[str]:
    return sorted(dets.data["class_name"].tolist())


def test_onnx_finds_the_bus_and_four_people(onnx_detector, bus_jpg):
    dets = onnx_detector.detect([read_image(bus_jpg)])[0]
    assert _names(dets) == ["bus", "person", "person", "person", "person"]
    bus = dets[dets.data["class_name"] == "bus"]
    x1, y1, x2, y2 = bus.xyxy[0]
    # The bus spans the picture's width in its middle band (810x1080 photo).
    assert x1 < 30 and x2 > 780 and 200 < y1 < 260 and 700 < y2 < 760
    assert float(bus.confidence[0]) > 0.9


@pytest.mark.parametrize("rect", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["rect", "square"])  # square: 19 s, the suite's budget
def test_onnx_and_torch_agree_on_real_photos(real_photos, torch_detector, rect):
    images = [read_image(p) for p in real_photos]
    onnx = load_detector("yolo11n", backend="onnx", dynamic=rect, rect=rect)
    torch_ref = load_detector("yolo11n", backend="torch", rect=rect)
    ref, test = torch_ref.detect(images), onnx.detect(images)
    assert sum(len(d) for d in ref) >= 10, "the photos should hold plenty of objects"
    for path, r, t in zip(real_photos, ref, test, strict=True):
        assert _names(r) == _names(t), path.name
        agreement = match(r, t, iou_threshold=0.9)
        assert agreement.matched == len(r) == len(t), f"{path.name}: {agreement.as_dict()}"
        assert agreement.max_conf_diff <= 0.05, f"{path.name}: {agreement.as_dict()}"


def test_torch_runs_one_traced_graph_per_input_shape_with_the_eager_numbers(real_photos, torch_detector):
    """The torch backend's forward is one TorchScript call (one GIL release, not one per operator:
    see detect/engine/torch_backend.py); it must give exactly what the eager network gives, neck included."""
    import torch

    graphs = torch_detector.graphs
    images = [read_image(p) for p in real_photos]
    for image in images:
        torch_detector.detect_with_features([image])
    shapes = {input_shape(*im.shape[:2], 640, 32, True) for im in images}
    assert {key[0][2:] for key in graphs.traced} >= shapes and not graphs.eager
    assert all(isinstance(g, torch.jit.ScriptFunction) for g in graphs.traced.values())
    batch, _ = make_batch([images[0]], input_shape(*images[0].shape[:2], 640, 32, True))
    x = torch.from_numpy(batch)
    with torch.inference_mode():
        traced = graphs(x)
        eager = graphs._outputs(x)
    assert len(traced) == len(eager) == 4  # raw head output, P3, P4, P5
    for a, b in zip(traced, eager, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


def test_torch_runs_every_call_on_its_own_thread(real_photos, torch_detector, monkeypatch):
    """cuDNN plans convolutions per thread, so a forward in a new thread re-plans them all (~1 s for
    yolo11n on an H200): calls from any thread run on the detector's one long-lived thread."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    images = [read_image(p) for p in real_photos[:4]]
    expected = torch_detector.detect(images)
    seen: set[int] = set()
    prepare = torch_detector._prepare
    monkeypatch.setattr(torch_detector, "_prepare", lambda ims, shape: seen.add(threading.get_ident()) or prepare(ims, shape))
    with ThreadPoolExecutor(4) as pool:  # new threads, as triage's workers are in each run
        callers = list(pool.map(lambda im: (threading.get_ident(), torch_detector.detect([im])[0]), images))
    assert len(seen) == 1 and seen.isdisjoint({ident for ident, _ in callers} | {threading.get_ident()})
    for (_, got), want in zip(callers, expected, strict=True):
        assert np.array_equal(got.xyxy, want.xyxy) and np.array_equal(got.class_id, want.class_id)


def test_result_does_not_depend_on_batch_company(onnx_detector, real_photos):
    images = [read_image(p) for p in real_photos]
    together = onnx_detector.detect(images)
    alone = [onnx_detector.detect([im])[0] for im in images]
    agreement = match_all(alone, together, iou_threshold=0.99)
    assert agreement.recall == 1.0 and agreement.precision == 1.0
    assert agreement.max_conf_diff < 1e-4


def test_static_batch_model_pads_short_batches(real_photos, tmp_path):
    detector = load_detector("yolo11n", backend="onnx", dynamic=False)
    assert detector.static_batch == 1 and detector.rect is False
    images = [read_image(p) for p in real_photos[:3]]
    assert [len(d) for d in detector.detect(images)] == [len(detector.detect([im])[0]) for im in images]


def test_empty_input_and_wrong_arrays():
    detector = load_detector("yolo11n", backend="onnx")
    assert detector.detect([]) == []
    with pytest.raises(ValueError, match="image 0: expected a BGR uint8"):
        detector.detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="image 1: expected a BGR uint8"):
        detector.detect([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.float32)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "tflite"}, "unknown backend 'tflite'"),
        ({"backend": "onnx", "device": "cuda"}, "needs CUDAExecutionProvider"),
        ({"backend": "onnx", "device": "npu"}, "unknown device 'npu'"),
        ({"backend": "torch", "device": "npu"}, "unknown device 'npu'"),
        ({"backend": "onnx", "imgsz": 100}, "multiple of 32"),
        ({"backend": "onnx", "conf": 1.5}, "conf must be in"),
    ],
)
def test_bad_detector_options_are_refused_clearly(kwargs, message):
    with pytest.raises(DetectorConfigError, match=message):
        load_detector("yolo11n", **kwargs)


def test_raw_box_head_export_gives_the_same_boxes_as_the_full_graph(real_photos, tmp_path):
    """Cutting the DFL box decoding off the graph (done by every export) changes no detection:
    Ultralytics' own ONNX graph and the cut copy, through the same engine, on real photos."""
    import shutil

    import onnxruntime as ort

    from detect.engine.onnx_backend import OnnxDetector
    from detect.export import _ultralytics_export, cut_box_decoding
    from detect.registry import resolve_weights

    exported, head = _ultralytics_export(resolve_weights("yolo11n")[0], imgsz=320, dynamic=True, half=False)
    full, cut = tmp_path / "full.onnx", tmp_path / "cut.onnx"
    shutil.copyfile(exported, full)
    shutil.copyfile(exported, cut)
    shutil.rmtree(exported.parent, ignore_errors=True)
    assert head is not None and head.bins == 16 and head.strides == (8, 16, 32)
    assert cut_box_decoding(cut, head)
    assert not cut_box_decoding(cut, head), "a cut graph no longer has the pattern and is left alone"
    assert ort.InferenceSession(str(cut), providers=["CPUExecutionProvider"]).get_outputs()[0].shape[1] == 4 * 16 + 80

    common = dict(model_id="yolo11n", conf=0.25, iou=0.7, max_det=300, classes=None)
    images = [read_image(p) for p in real_photos]
    reference, raw = OnnxDetector(full, **common), OnnxDetector(cut, **common)
    assert reference.head is None and raw.head == head
    ref, test = reference.detect(images), raw.detect(images)
    assert sum(len(d) for d in ref) >= 10
    agreement = match_all(ref, test, iou_threshold=0.999)
    assert agreement.recall == agreement.precision == 1.0 and agreement.max_conf_diff < 1e-5, agreement.as_dict()
