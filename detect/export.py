"""Exporter: Ultralytics checkpoints -> registered ONNX models (fp32, fp16, static QDQ INT8).

Uses Ultralytics' own exporter for the graph (names, stride and imgsz land in the ONNX metadata,
which the ONNX backend reads), then ONNX Runtime's static quantiser for INT8 with real
calibration images fed through our own letterbox, and reports how far INT8 drifts from fp32 on
those images. Every export gets a card in the registry with its lineage and digest.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from detect.engine.letterbox import make_batch
from detect.imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from detect.registry import ModelCard, export_id, registry_dir, resolve_weights, save_card
from detect.digests import sha256_file

log = logging.getLogger(__name__)


def export_onnx(
    model: str,
    *,
    imgsz: int = 640,
    dynamic: bool = False,
    half: bool = False,
    int8: bool = False,
    calib: Path | None = None,
    calib_max: int = 64,
) -> tuple[Path, ModelCard]:
    """Export `model` (id or .pt path) to ONNX, register it, and return (file, card)."""
    if imgsz <= 0 or imgsz % 32:
        raise ValueError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    if int8 and calib is None:
        raise ValueError("--int8 needs --calib DIR with real calibration images")
    if int8 and half:
        raise ValueError("choose one of --int8 and --half")
    weights, base_card = resolve_weights(model)
    base_id = base_card.id if base_card else weights.stem
    new_id = export_id(base_id, imgsz, dynamic, half, int8)
    out_dir = registry_dir().parent
    target = out_dir / f"{new_id}.onnx"

    fp32_path = _ultralytics_export(weights, imgsz=imgsz, dynamic=dynamic, half=half)
    metrics: dict = {}
    if int8:
        images = calibration_images(calib, calib_max)
        _quantize_static(fp32_path, target, images, imgsz)
        metrics["int8_vs_fp32"] = int8_agreement(fp32_path, target, images, imgsz, base_id)
    else:
        shutil.move(fp32_path, target)
    shutil.rmtree(fp32_path.parent, ignore_errors=True)

    card = ModelCard(
        id=new_id,
        format="onnx",
        files=[target.name],
        source=f"exported from {base_id} ({weights.name})",
        license=base_card.license if base_card else "AGPL-3.0",
        imgsz=imgsz,
        classes=_onnx_names(target),
        sha256={target.name: sha256_file(target)},
        exported_from=base_id,
        dynamic=dynamic,
        half=half,
        int8=int8,
        metrics=metrics,
        notes=f"weights sha256 {sha256_file(weights)}",
    )
    save_card(card)
    return target, card


def _ultralytics_export(weights: Path, *, imgsz: int, dynamic: bool, half: bool) -> Path:
    """Run Ultralytics' ONNX exporter on a private copy (the weights may sit on a read-only share)."""
    from detect.runtime_env import prepare_ultralytics_env

    prepare_ultralytics_env()
    from ultralytics import YOLO

    work = Path(tempfile.mkdtemp(prefix="sw-export-"))
    local = work / weights.name
    shutil.copyfile(weights, local)
    out = YOLO(str(local), task="detect").export(
        format="onnx", imgsz=imgsz, dynamic=dynamic, simplify=True, device="0" if half else "cpu",
        **({"half": True} if half else {}),
        verbose=False,
    )
    return Path(out)


def calibration_images(folder: Path, limit: int) -> list[np.ndarray]:
    """Up to `limit` readable images from `folder` (recursive, sorted for repeatability)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--calib {folder}: not a directory")
    images = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            images.append(read_image(path))
        except ImageReadError as exc:
            log.warning("calibration: skipping %s", exc)
        if len(images) >= limit:
            break
    if not images:
        raise ValueError(f"--calib {folder}: no readable images")
    return images


def _quantize_static(fp32: Path, target: Path, images: list[np.ndarray], imgsz: int) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, input_name: str) -> None:
            self._it = iter(images)
            self.input_name = input_name

        def get_next(self):
            im = next(self._it, None)
            if im is None:
                return None
            batch, _ = make_batch([im], (imgsz, imgsz))
            return {self.input_name: batch}

    import onnx

    pre = fp32.with_name(fp32.stem + "-pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    graph = onnx.load(str(pre)).graph
    input_name = graph.input[0].name
    quantize_static(
        str(pre),
        str(target),
        Reader(input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=_head_decode_nodes(graph),
    )
    _copy_metadata(fp32, target)


def _head_decode_nodes(graph) -> list[str]:
    """Keep the detection head's box decoding (DFL, concat, sigmoid, anchor maths) in float.

    Quantising those few element-wise ops costs most of the INT8 accuracy loss while saving
    almost no time; the convolutions, where the time goes, are still quantised.
    """
    head = max((int(m.group(1)) for n in graph.node if (m := re.match(r"/model\.(\d+)/", n.name))), default=None)
    if head is None:
        return []
    prefix = f"/model.{head}/"
    return [n.name for n in graph.node if n.name.startswith(prefix) and n.op_type != "Conv"]


def _copy_metadata(src: Path, dst: Path) -> None:
    import onnx

    meta = onnx.load(str(src), load_external_data=False).metadata_props
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for p in meta:
        model.metadata_props.add(key=p.key, value=p.value)
    onnx.save(model, str(dst))


def _onnx_names(path: Path) -> list[str]:
    import onnxruntime as ort

    from detect.engine.onnx_backend import parse_names, read_metadata

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = parse_names(read_metadata(sess), path)
    return [names[i] for i in sorted(names)]


def int8_agreement(fp32: Path, int8: Path, images: list[np.ndarray], imgsz: int, model_id: str) -> dict:
    """How well INT8 detections match fp32 on the calibration images (IoU 0.5, same class)."""
    from detect.engine.compare import match_all
    from detect.engine.onnx_backend import OnnxDetector

    common = dict(model_id=model_id, conf=0.25, iou=0.7, max_det=300, classes=None, imgsz=imgsz)
    ref = OnnxDetector(fp32, **common).detect(images)
    test = OnnxDetector(int8, **common).detect(images)
    return {"images": len(images), **match_all(ref, test).as_dict()}
