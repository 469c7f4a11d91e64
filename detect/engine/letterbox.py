"""Letterbox preprocessing shared by every backend, so their detections can be compared 1:1.

Same geometry as Ultralytics' `LetterBox` (scale to fit, centre pad with grey 114, stride-aligned
rectangles when the model accepts them), in NumPy/OpenCV so the ONNX path never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How one original image maps into the network input: net = orig * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float
    orig_w: int
    orig_h: int

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from network pixels back to original pixels, clipped to the image."""
        out = xyxy.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.orig_w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.orig_h)
        return out


def input_shape(orig_h: int, orig_w: int, imgsz: int, stride: int, rect: bool) -> tuple[int, int]:
    """Network input (h, w): the square `imgsz`, or the smallest stride-aligned rectangle."""
    if not rect:
        return imgsz, imgsz
    r = min(imgsz / orig_h, imgsz / orig_w)
    h = round(orig_h * r)
    w = round(orig_w * r)
    return math.ceil(h / stride) * stride, math.ceil(w / stride) * stride


def fit(orig_h: int, orig_w: int, shape: tuple[int, int]) -> tuple[Letterbox, int, int]:
    """Geometry of fitting an image into `shape` (h, w): the mapping and the resized (w, h).

    The one definition of the letterbox geometry, shared by the OpenCV path below and the
    on-device path (`gpu_preprocess.py`), so both map boxes back identically.
    """
    th, tw = shape
    r = min(th / orig_h, tw / orig_w)
    nw, nh = round(orig_w * r), round(orig_h * r)
    left, top = round((tw - nw) / 2 - 0.1), round((th - nh) / 2 - 0.1)
    return Letterbox(scale=r, pad_x=left, pad_y=top, orig_w=orig_w, orig_h=orig_h), nw, nh


def letterbox(image: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize `image` (HxWx3) to fit `shape` (h, w) keeping aspect ratio, pad the rest."""
    h0, w0 = image.shape[:2]
    lb, nw, nh = fit(h0, w0, shape)
    if (nw, nh) != (w0, h0):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = int(lb.pad_y), int(lb.pad_x)
    bottom, right = shape[0] - nh - top, shape[1] - nw - left
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return padded, lb


def make_batch(images: list[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, list[Letterbox]]:
    """BGR uint8 images -> float32 NCHW RGB batch in [0, 1] of input `shape` (h, w), plus mappings."""
    batch = np.empty((len(images), 3, shape[0], shape[1]), dtype=np.float32)
    boxes = []
    for i, im in enumerate(images):
        padded, lb = letterbox(im, shape)
        for c in range(3):  # BGR HWC uint8 -> RGB CHW float, one plane at a time straight into the batch
            np.multiply(padded[:, :, 2 - c], np.float32(1 / 255), out=batch[i, c], dtype=np.float32)
        boxes.append(lb)
    return batch, boxes


def check_image(im: np.ndarray, index: int) -> None:
    """Refuse anything that is not a non-empty BGR uint8 picture, naming its position."""
    if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
        desc = f"{getattr(im, 'shape', None)} {getattr(im, 'dtype', type(im).__name__)}"
        raise ValueError(f"image {index}: expected a BGR uint8 array of shape (H, W, 3), got {desc}")
    if im.shape[0] == 0 or im.shape[1] == 0:
        raise ValueError(f"image {index}: empty image {im.shape}")
