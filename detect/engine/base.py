"""The `Detector` interface: batched images in, one `sv.Detections` per image out.

Backends differ only in how a preprocessed batch becomes raw network output (`_infer`);
letterboxing and decoding are shared (`letterbox.py`, `postprocess.py`), which is what makes the
ONNX and PyTorch backends give the same boxes on the same image.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import supervision as sv

from detect.engine.letterbox import Letterbox, check_image, input_shape, make_batch
from detect.engine.postprocess import RawBoxHead, postprocess
from detect.engine.profile import StageProfile
from detect.verifier.pooling import FeatureMap

NECK_STRIDE = 32
"""Stride of the pooled neck map (`detect.verifier.neck`)."""


class DetectorConfigError(ValueError):
    """Unknown backend, device or model option; the message says what is accepted."""


class Detector(ABC):
    """Common settings and the batched detect loop."""

    backend: str = ""
    #: Set to a `StageProfile` to collect per-stage times (benchmarks); None costs nothing.
    profile: StageProfile | None = None
    #: Set by backends whose model ends before the box decoding (see `postprocess.py`).
    head: RawBoxHead | None = None

    def __init__(
        self,
        *,
        model_id: str,
        model_path: Path,
        names: dict[int, str],
        device: str,
        imgsz: int,
        conf: float,
        iou: float,
        max_det: int,
        classes: set[int] | None,
        rect: bool,
        max_batch: int,
        stride: int = 32,
    ) -> None:
        if not 0.0 <= conf <= 1.0:
            raise DetectorConfigError(f"conf must be in [0, 1], got {conf}")
        if not 0.0 < iou <= 1.0:
            raise DetectorConfigError(f"iou must be in (0, 1], got {iou}")
        if imgsz <= 0 or imgsz % stride:
            raise DetectorConfigError(f"imgsz must be a positive multiple of {stride}, got {imgsz}")
        self.model_id = model_id
        self.model_path = model_path
        self.names = names
        self.device = device
        self.imgsz = imgsz
        self.conf = conf
        self.iou = iou
        self.max_det = max_det
        self.classes = classes
        self.rect = rect
        self.max_batch = max(1, max_batch)
        self.stride = stride

    def detect(self, images: list[np.ndarray]) -> list[sv.Detections]:
        """Detect objects in BGR uint8 images; boxes come back in each image's own pixels.

        With rectangle inputs, images are batched by their input shape, so an image's result never
        depends on which other images share its call.
        """
        return [d for d, _ in self._run(images, features=False)]

    def detect_with_features(self, images: list[np.ndarray]) -> list[tuple[sv.Detections, FeatureMap]]:
        """`detect`, plus the network's pooled neck map of each image (the verifier's features,
        `detect.verifier`): the same single network run, so judging the scene costs no second one."""
        return self._run(images, features=True)  # type: ignore[return-value]

    @property
    def has_features(self) -> bool:
        """Whether `detect_with_features` works with this model (see `detect.verifier.neck`)."""
        return False

    def _run(self, images: list[np.ndarray], features: bool) -> list[tuple[sv.Detections, FeatureMap | None]]:
        results: list[tuple[sv.Detections, FeatureMap | None] | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            check_image(im, i)
            groups.setdefault(input_shape(im.shape[0], im.shape[1], self.imgsz, self.stride, self.rect), []).append(i)
        for shape, idx in groups.items():
            for start in range(0, len(idx), self.max_batch):
                part = idx[start : start + self.max_batch]
                with self._stage("preprocess"):
                    batch, boxes = self._prepare([images[i] for i in part], shape)
                with self._stage("infer"):
                    raw, maps = self._infer_features(batch) if features else (self._infer(batch), None)
                with self._stage("postprocess"):
                    dets = postprocess(raw, boxes, self.names, self.conf, self.iou, self.max_det, self.classes,
                                       head=self.head, input_shape=shape)
                if self.profile is not None:
                    self.profile.batches += 1
                    self.profile.images += len(part)
                for k, (i, d) in enumerate(zip(part, dets, strict=True)):
                    results[i] = (d, feature_map(maps[k], boxes[k]) if maps is not None else None)
        return results  # type: ignore[return-value]

    def _prepare(self, images: list[np.ndarray], shape: tuple[int, int]):
        """Letterboxed input batch for `_infer` plus the mappings back; backends may do it on their device."""
        return make_batch(images, shape)

    @abstractmethod
    def _infer(self, batch) -> np.ndarray:
        """float32 NCHW RGB [0, 1] batch (what `_prepare` made) -> raw output in a layout `postprocess` reads."""

    def _infer_features(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """`_infer` plus the (B, C, H/32, W/32) pooled neck map; backends that can, override."""
        raise DetectorConfigError(f"{self.model_path}: this model gives no neck features for the verifier")

    def synchronize(self) -> None:
        """Wait until work queued on the device has finished (no-op for host execution)."""

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if self.profile is None:
            yield
            return
        self.synchronize()
        start = time.perf_counter()
        yield
        self.synchronize()
        self.profile.add(name, time.perf_counter() - start)

    def describe(self) -> dict:
        """Settings for logs, manifests and benchmark records."""
        return {
            "model": self.model_id,
            "weights": str(self.model_path),
            "backend": self.backend,
            "device": self.device,
            "imgsz": self.imgsz,
            "rect": self.rect,
            "conf": self.conf,
            "iou": self.iou,
            "max_batch": self.max_batch,
        }


def feature_map(data: np.ndarray, lb: Letterbox) -> FeatureMap:
    """A letterboxed image's neck map, with where the image lies on it (padding offsets the cells)."""
    return FeatureMap(np.asarray(data, dtype=np.float32), sx=lb.orig_w * lb.scale / NECK_STRIDE,
                      sy=lb.orig_h * lb.scale / NECK_STRIDE, ox=lb.pad_x / NECK_STRIDE, oy=lb.pad_y / NECK_STRIDE)
