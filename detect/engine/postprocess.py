"""Raw network output -> `sv.Detections` in original pixels; shared by every backend.

Three output layouts exist among the detectors this engine runs:

- the classic Ultralytics head `(B, 4 + nc, anchors)` with centre-xywh boxes and per-class scores
  (YOLOv8/11 as Ultralytics exports them), which needs NMS;
- the end-to-end head `(B, max_det, 6)` with `x1 y1 x2 y2 score class` (YOLO26/YOLOv10), no NMS;
- the raw-box head `(B, 4 * bins + nc, anchors)` of the engine variant `streetwatch models export`
  writes beside the standard export for YOLOv8/11 (`<id>-rawbox.onnx`, `RawBoxHead`): the same
  network with the box decoding (DFL softmax over `bins` distance bins, anchor maths) cut off the
  graph and done here, only for the few anchors whose class score passes `conf`. The softmax over
  every anchor was 6 % of yolo11n's CPU time.

NMS is OpenCV's class-aware `NMSBoxesBatched`, so no torch is needed here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import supervision as sv

from detect import fields
from detect.engine.letterbox import Letterbox

#: ONNX metadata keys of a raw-box head (written by `detect.export`, read by the ONNX backend).
RAW_HEAD_BINS = "streetwatch_box_bins"
RAW_HEAD_STRIDES = "streetwatch_box_strides"
#: The `task` metadata and the output name of a raw-box export: a task Ultralytics does not know, so it
#: refuses the file instead of decoding raw logits as boxes; an output name that says what it holds.
RAW_BOX_TASK = "streetwatch-raw-box"
RAW_BOX_OUTPUT = "streetwatch_raw_boxes"


@dataclass(frozen=True)
class RawBoxHead:
    """How to finish a raw-box head's decoding: distance bins per box side and the feature strides."""

    bins: int
    strides: tuple[int, ...]

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> RawBoxHead | None:
        if RAW_HEAD_BINS not in meta:
            return None
        return cls(int(meta[RAW_HEAD_BINS]), tuple(int(s) for s in ast.literal_eval(meta[RAW_HEAD_STRIDES])))

    def metadata(self) -> dict[str, str]:
        return {RAW_HEAD_BINS: str(self.bins), RAW_HEAD_STRIDES: str(list(self.strides))}


def postprocess(
    raw: np.ndarray,
    boxes: list[Letterbox],
    names: dict[int, str],
    conf: float,
    iou: float,
    max_det: int = 300,
    classes: set[int] | None = None,
    *,
    head: RawBoxHead | None = None,
    input_shape: tuple[int, int] | None = None,
) -> list[sv.Detections]:
    """Decode a batch of raw outputs (see module doc) into one `sv.Detections` per image.

    A raw-box `head` needs the network `input_shape` (h, w) the batch was run at.
    """
    raw = np.asarray(raw, dtype=np.float32)
    end_to_end = head is None and raw.ndim == 3 and raw.shape[2] == 6 and raw.shape[1] != 6
    if head is not None and input_shape is None:
        raise ValueError("a raw-box head needs the network input shape")
    results = []
    for i, lb in enumerate(boxes):
        if end_to_end:
            xyxy, scores, cls = _decode_end_to_end(raw[i], conf)
        else:
            xyxy, scores, cls = _decode_with_nms(raw[i], conf, iou, max_det, head, input_shape)
        if classes is not None and len(cls):
            keep = np.isin(cls, list(classes))
            xyxy, scores, cls = xyxy[keep], scores[keep], cls[keep]
        results.append(_to_detections(lb.to_original(xyxy), scores, cls, names))
    return results


def _decode_with_nms(pred: np.ndarray, conf: float, iou: float, max_det: int, head: RawBoxHead | None,
                     input_shape: tuple[int, int] | None):
    """Classic or raw-box head output (channels, anchors) -> NMS-ed xyxy, scores, classes."""
    box_channels = 4 if head is None else 4 * head.bins
    if head is not None:
        points, strides = _anchors(input_shape, head.strides)
        if pred.shape[1] != len(points):
            raise ValueError(f"raw-box head: {pred.shape[1]} anchors in the output, but input {input_shape} with "
                             f"strides {head.strides} has {len(points)}")
    scores_all = pred[box_channels:]  # (nc, anchors)
    cls = scores_all.argmax(axis=0)
    scores = scores_all[cls, np.arange(len(cls))]
    keep = np.flatnonzero(scores > conf)
    scores, cls = scores[keep], cls[keep]
    if not len(scores):
        return np.zeros((0, 4), np.float32), scores, cls
    if head is None:
        cx, cy, w, h = pred[:4, keep]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    else:
        xyxy = _raw_boxes(pred[:box_channels, keep], head.bins, points[keep], strides[keep, None])
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), cls.tolist(), conf, iou)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_det]
    return xyxy[idx], scores[idx], cls[idx]


def _raw_boxes(logits: np.ndarray, bins: int, points: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """DFL decoding as Ultralytics does it in the graph: per side, the expected bin under a softmax,
    as distances from the anchor `points`, times their `strides` -> xyxy in network pixels."""
    logits = logits.reshape(4, bins, -1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    dist = (e * np.arange(bins, dtype=np.float32)[None, :, None]).sum(axis=1) / e.sum(axis=1)  # (4, n)
    return np.concatenate([points - dist[:2].T, points + dist[2:].T], axis=1) * strides


@lru_cache(maxsize=16)
def _anchors(input_shape: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (in feature-cell units) and their strides, in the head's anchor order."""
    h, w = input_shape
    points, scale = [], []
    for s in strides:
        fh, fw = -(-h // s), -(-w // s)
        gy, gx = np.meshgrid(np.arange(fh, dtype=np.float32) + 0.5, np.arange(fw, dtype=np.float32) + 0.5, indexing="ij")
        points.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        scale.append(np.full(fh * fw, s, dtype=np.float32))
    return np.concatenate(points), np.concatenate(scale)


def _decode_end_to_end(pred: np.ndarray, conf: float):
    keep = pred[:, 4] > conf
    pred = pred[keep]
    return pred[:, :4], pred[:, 4], pred[:, 5].astype(np.int64)


def _to_detections(xyxy: np.ndarray, scores: np.ndarray, cls: np.ndarray, names: dict[int, str]) -> sv.Detections:
    cls = cls.astype(int)
    return sv.Detections(
        xyxy=xyxy.astype(np.float32).reshape(-1, 4),
        confidence=scores.astype(np.float32),
        class_id=cls,
        data={fields.CLASS_NAME: np.array([names.get(int(c), str(c)) for c in cls], dtype=str)},
    )
