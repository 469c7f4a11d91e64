"""Raw network output -> `sv.Detections` in original pixels; shared by every backend.

Two output layouts exist among Ultralytics detectors: the classic head `(B, 4 + nc, anchors)` with
centre-xywh boxes and per-class scores (YOLOv8/11), which needs NMS; and the end-to-end head
`(B, max_det, 6)` with `x1 y1 x2 y2 score class` (YOLO26/YOLOv10), which does not. NMS is OpenCV's
class-aware `NMSBoxesBatched`, so no torch is needed here.
"""

from __future__ import annotations

import cv2
import numpy as np
import supervision as sv

from detect.engine.letterbox import Letterbox


def postprocess(
    raw: np.ndarray,
    boxes: list[Letterbox],
    names: dict[int, str],
    conf: float,
    iou: float,
    max_det: int = 300,
    classes: set[int] | None = None,
) -> list[sv.Detections]:
    """Decode a batch of raw outputs (see module doc) into one `sv.Detections` per image."""
    raw = np.asarray(raw, dtype=np.float32)
    end_to_end = raw.ndim == 3 and raw.shape[2] == 6 and raw.shape[1] != 6
    results = []
    for i, lb in enumerate(boxes):
        if end_to_end:
            xyxy, scores, cls = _decode_end_to_end(raw[i], conf)
        else:
            xyxy, scores, cls = _decode_classic(raw[i], conf, iou, max_det)
        if classes is not None and len(cls):
            keep = np.isin(cls, list(classes))
            xyxy, scores, cls = xyxy[keep], scores[keep], cls[keep]
        results.append(_to_detections(lb.to_original(xyxy), scores, cls, names))
    return results


def _decode_classic(pred: np.ndarray, conf: float, iou: float, max_det: int):
    pred = pred.T  # (anchors, 4 + nc)
    scores_all = pred[:, 4:]
    cls = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(cls)), cls]
    keep = scores > conf
    pred, scores, cls = pred[keep], scores[keep], cls[keep]
    if not len(scores):
        return np.zeros((0, 4), np.float32), scores, cls
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), cls.tolist(), conf, iou)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_det]
    return xyxy[idx], scores[idx], cls[idx]


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
        data={"class_name": np.array([names.get(int(c), str(c)) for c in cls], dtype=str)},
    )
