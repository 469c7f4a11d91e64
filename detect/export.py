"""Exporter: Ultralytics checkpoints -> registered ONNX models (fp32, fp16, static QDQ INT8).

Every export writes two files, each with its card in the registry (lineage and digest):

- the **standard export** `<id>.onnx` (e.g. `yolo11n-640-dyn.onnx`): Ultralytics' own exporter's
  graph (names, stride and imgsz in the ONNX metadata), which `YOLO("<id>.onnx")` and any other
  ONNX tool run as they run any Ultralytics export;
- for YOLOv8/11 heads, the **engine variant** `<id>-rawbox.onnx`: the same graph with the box
  decoding (DFL softmax, anchor maths) cut off (`cut_box_decoding`); `RawBoxHead` in
  `detect/engine/postprocess.py` finishes it for the anchors that pass the threshold (the same
  boxes, ~6 % less CPU per image). Its metadata says so (`task: streetwatch-raw-box`, the bins and
  strides, a description naming the standard file), so Ultralytics refuses it with an error
  instead of returning hundreds of wrong boxes; streetwatch's engine prefers it.

The graph the engine runs (the variant, else the standard file: a head without DFL decoding, such as
YOLO26's, has no variant) also outputs the verifier's pooled neck features (`detect.verifier.neck`);
Ultralytics runs a standard file with that extra output as before.

INT8 uses ONNX Runtime's static quantiser with real calibration images fed through our own
letterbox, and reports how far INT8 drifts from fp32 on those images; the engine variant of an
INT8 export is cut from the quantised standard graph (the decoding stays float in both).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect.digests import sha256_file
from detect.engine.letterbox import make_batch
from detect.engine.postprocess import RAW_BOX_OUTPUT, RAW_BOX_TASK, RawBoxHead
from detect.imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from detect.registry import ModelCard, export_id, id_taken, path_model_id, registry_dir, resolve_weights, save_card
from detect.verifier.neck import add_neck_features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedModel:
    """What one export registered: the standard file any ONNX tool runs, and the engine's raw-box variant
    (None when the head has no DFL decoding to cut, e.g. end-to-end YOLO26/YOLOv10 heads)."""

    path: Path
    card: ModelCard
    engine_path: Path | None = None
    engine_card: ModelCard | None = None

    def for_engine(self) -> tuple[Path, ModelCard]:
        """The file (and card) streetwatch's ONNX backend runs: the raw-box variant when there is one."""
        if self.engine_path is not None and self.engine_card is not None:
            return self.engine_path, self.engine_card
        return self.path, self.card


def export_onnx(
    model: str,
    *,
    imgsz: int = 640,
    dynamic: bool = False,
    half: bool = False,
    int8: bool = False,
    calib: Path | None = None,
    calib_max: int = 64,
) -> ExportedModel:
    """Export `model` (id or .pt path) to ONNX, register the standard export and the engine variant.

    A path's export is named by its content (`path_model_id`: best-3fa2c1d0-640-dyn), so runs' many best.pt files
    each keep their own."""
    if imgsz <= 0 or imgsz % 32:
        raise ValueError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    if int8 and calib is None:
        raise ValueError("--int8 needs --calib DIR with real calibration images")
    if int8 and half:
        raise ValueError("choose one of --int8 and --half")
    weights, base_card = resolve_weights(model)
    base_id = base_card.id if base_card else path_model_id(weights)
    new_id = export_id(base_id, imgsz, dynamic, half, int8)
    ensure_export_ids_free(base_id, [new_id, export_id(base_id, imgsz, dynamic, half, int8, raw_box=True)])
    out_dir = registry_dir().parent
    target = out_dir / f"{new_id}.onnx"

    fp32_path, head = _ultralytics_export(weights, imgsz=imgsz, dynamic=dynamic, half=half)
    metrics: dict = {}
    if int8:
        images = calibration_images(calib, calib_max)
        _quantize_static(fp32_path, target, images, imgsz)
        metrics["int8_vs_fp32"] = int8_agreement(fp32_path, target, images, imgsz, base_id)
    else:
        shutil.move(fp32_path, target)
    shutil.rmtree(fp32_path.parent, ignore_errors=True)

    engine_id = export_id(base_id, imgsz, dynamic, half, int8, raw_box=True)
    engine_path = _raw_box_variant(target, head, out_dir / f"{engine_id}.onnx") if head is not None else None
    # The verifier's features ride on the graph the engine runs (detect.verifier.neck): the variant, else the standard
    # file itself (a head without DFL decoding to cut, such as YOLO26's, whose export had none, so every load for the
    # verifier exported it again). An extra output leaves the standard graph runnable in Ultralytics.
    neck = add_neck_features(engine_path or target)
    neck_note = "; pooled neck features output for the verifier" if neck else ""
    common = dict(format="onnx", source=f"exported from {base_id} ({weights.name})",
                  license=base_card.license if base_card else "AGPL-3.0", imgsz=imgsz, classes=_onnx_names(target),
                  exported_from=base_id, dynamic=dynamic, half=half, int8=int8, metrics=metrics)
    notes = f"weights sha256 {sha256_file(weights)}"
    card = ModelCard(id=new_id, files=[target.name], sha256={target.name: sha256_file(target)},
                     notes=notes + "; standard Ultralytics graph (runs in Ultralytics and other ONNX tools)"
                     + ("" if engine_path else neck_note), **common)
    save_card(card)
    if engine_path is None:
        return ExportedModel(target, card)
    engine_card = ModelCard(id=engine_id, files=[engine_path.name], sha256={engine_path.name: sha256_file(engine_path)},
                            raw_box_head=True, notes=notes + f"; raw-box head: box decoding cut off, only streetwatch's "
                            f"engine runs it (standard export: {target.name})" + neck_note, **common)
    save_card(engine_card)
    return ExportedModel(target, card, engine_path, engine_card)


def _raw_box_variant(target: Path, head: RawBoxHead, engine_path: Path) -> Path | None:
    """The engine's raw-box variant of the standard export `target`, written to `engine_path`; None (nothing written)
    when the head is not the YOLOv8/11 pattern `cut_box_decoding` cuts."""
    shutil.copyfile(target, engine_path)
    if cut_box_decoding(engine_path, head, standard=target.name):
        return engine_path
    log.warning("%s: the head is not the YOLOv8/11 pattern; only the standard export is registered", target)
    engine_path.unlink()
    return None


def ensure_export_ids_free(base_id: str, ids: list[str]) -> None:
    """Refuse, before any export work, ids another model answers to (`id_taken`): the export's card would replace a
    fine-tune's card named like an export (yolo11n-640) or shadow a shipped one, and `--model ID` would then load the
    export. An earlier export of the same model under that id is this export's own, and is refreshed."""
    for wanted in ids:
        taken = id_taken(wanted, replaceable=lambda card: card.format == "onnx" and card.exported_from == base_id, promoted_ok=True)
        if taken:
            raise ValueError(f"the export of {base_id} at these settings is named {wanted}, but {taken}: nothing exported; "
                             "export with other settings, or give that model another id (a copy of these weights "
                             "under another file name is still this model: a path is named by its content)")


def _ultralytics_export(weights: Path, *, imgsz: int, dynamic: bool, half: bool) -> tuple[Path, RawBoxHead | None]:
    """Run Ultralytics' ONNX exporter on a private copy (the weights may sit on a read-only share).

    Also returns the DFL head's bins and strides (None for end-to-end heads, which decode no DFL)."""
    from detect.runtime_env import import_yolo

    YOLO = import_yolo()
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


def cut_box_decoding(path: Path, head: RawBoxHead, standard: str | None = None) -> bool:
    """Rewrite an Ultralytics YOLOv8/11 ONNX file in place so that it outputs `(B, 4 * bins + nc,
    anchors)`: the box logits before the DFL softmax next to the class scores; False (file
    untouched) when the graph is not that head's pattern (or was cut already).

    The pattern: the output is Concat(decoded boxes, Sigmoid(class logits)), and the decoded boxes
    come from the one `/dfl/` Softmax over Transpose(Reshape(box logits)). Works on fp32, fp16 and
    QDQ INT8 graphs (the quantiser leaves the head's decoding in float). The result is marked as
    engine-only (`mark_engine_only`); `standard` names the file other tools should run instead.
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
    tensor = graph.output[0].type.tensor_type
    dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]  # (batch, 4 + nc, anchors)
    if len(dims) != 3 or not isinstance(dims[1], int):
        return False
    prefix = final.name.rsplit("/", 1)[0] + "/"  # inside the head's namespace, so INT8 keeps it in float
    graph.node.append(helper.make_node("Concat", [reshape.input[0], scores], [RAW_BOX_OUTPUT], axis=1, name=prefix + "raw_box_concat"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(RAW_BOX_OUTPUT, tensor.elem_type, [dims[0], dims[1] - 4 + 4 * head.bins, dims[2]]))
    weights = {t.name for t in graph.initializer}
    cut = onnx.utils.Extractor(model).extract_model([i.name for i in graph.input if i.name not in weights], [RAW_BOX_OUTPUT])
    for prop in model.metadata_props:
        cut.metadata_props.add(key=prop.key, value=prop.value)
    mark_engine_only(cut, head, standard)
    onnx.checker.check_model(cut)
    onnx.save(cut, str(path))
    return True


def mark_engine_only(model, head: RawBoxHead, standard: str | None) -> None:
    """Say in the file what it is: the head's bins and strides (read by our ONNX backend), a `task`
    Ultralytics does not know (so `YOLO(file).predict` stops with "does not support 'predict' mode
    for 'streetwatch-raw-box' task" instead of decoding raw logits into wrong boxes), and a
    description and doc string naming the standard file for every other tool."""
    meta = {p.key: p.value for p in model.metadata_props}
    instead = f"run the standard export {standard}" if standard else "run a standard Ultralytics export"
    why = (f"streetwatch raw-box variant: the box decoding is cut off this graph ({RAW_BOX_OUTPUT} holds box "
           f"logits, not boxes) and only streetwatch's ONNX engine finishes it; elsewhere {instead}")
    meta.update(head.metadata(), task=RAW_BOX_TASK, description=f"{why}. {meta.get('description', '')}".strip())
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = why


def calibration_images(folder: Path, limit: int) -> list[np.ndarray]:
    """Up to `limit` readable images from `folder` (recursive), spread evenly over its sorted files: every k-th first,
    then the rest in order for any that cannot be read. The first `limit` in sorted order were one subfolder's:
    street-scenes' first 64 are all Chinese-street photos (`cn2/`), none of the travel photos or the sticker gallery a
    city's exports were then judged on. Sorted, so an export is repeatable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--calib {folder}: not a directory")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    step = max(len(paths) // max(limit, 1), 1)
    images = []
    for path in paths[::step] + [p for i, p in enumerate(paths) if i % step]:
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
    """Keep the detection head's box decoding (DFL softmax and its 1x1 conv, concat, sigmoid, anchor maths)
    in float.

    Quantising those few ops costs most of the INT8 accuracy loss while saving almost no time; the
    convolutions of the head's branches, where the time goes, are still quantised. It also makes the
    standard INT8 export and its raw-box variant (whose decoding the engine does in float) agree.
    """
    head = max((int(m.group(1)) for n in graph.node if (m := re.match(r"/model\.(\d+)/", n.name))), default=None)
    if head is None:
        return []
    prefix = f"/model.{head}/"
    return [n.name for n in graph.node if n.name.startswith(prefix) and (n.op_type != "Conv" or "/dfl/" in n.name)]


def _copy_metadata(src: Path, dst: Path) -> None:
    import onnx

    meta = onnx.load(str(src), load_external_data=False).metadata_props
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for p in meta:
        model.metadata_props.add(key=p.key, value=p.value)
    onnx.save(model, str(dst))


def _onnx_names(path: Path) -> list[str]:
    from detect.engine.onnx_backend import open_session, parse_names, read_metadata

    sess = open_session(path)
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
