"""ONNX Runtime backend: CPU, CUDA or TensorRT providers; never imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnxruntime as ort

from detect.engine.base import Detector, DetectorConfigError
from detect.engine.postprocess import RawBoxHead
from detect.onnx_session import open_session as _open_session
from detect.verifier.neck import FEATURES_OUTPUT

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """Ultralytics writes names, stride and imgsz into the ONNX metadata."""
    return dict(session.get_modelmeta().custom_metadata_map)


def open_session(path: Path, opts: ort.SessionOptions | None = None,
                 providers: list[str] | None = None) -> ort.InferenceSession:
    """A detector's ONNX Runtime session on `path`; a file ONNX Runtime cannot load (empty, truncated by a copy, not
    ONNX) raises `DetectorConfigError` naming it, where `detect --model broken.onnx` printed ONNX Runtime's traceback."""
    return _open_session(path, opts, providers, error=DetectorConfigError, remedy=(
        "if the file is damaged, copy it again or export it again (`streetwatch models export --model ID --format onnx`)"))


def parse_names(meta: dict[str, str], path: Path) -> dict[int, str]:
    raw = meta.get("names")
    if not raw:
        raise DetectorConfigError(f"{path}: ONNX file has no 'names' metadata (not an Ultralytics export?)")
    return {int(k): str(v) for k, v in ast.literal_eval(raw).items()}


class OnnxDetector(Detector):
    backend = "onnx"

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str,
        device: str = "cpu",
        threads: int | None = None,
        providers: list[str] | None = None,
        rect: bool | None = None,
        **kwargs,
    ) -> None:
        chosen = providers or _PROVIDERS.get(device.split(":")[0])
        if chosen is None:
            raise DetectorConfigError(f"unknown device '{device}' for the onnx backend (use cpu, cuda or tensorrt)")
        available = ort.get_available_providers()
        if chosen[0] not in available:
            raise DetectorConfigError(
                f"device '{device}' needs {chosen[0]}, but this onnxruntime has only {', '.join(available)}"
                " (install onnxruntime-gpu for CUDA/TensorRT)"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.threads = threads
        self.session = open_session(model_path, opts, [p for p in chosen if p in available])
        meta = read_metadata(self.session)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        b, _, h, w = inp.shape
        self.static_batch = b if isinstance(b, int) else None
        dynamic_hw = not (isinstance(h, int) and isinstance(w, int))
        imgsz = kwargs.pop("imgsz", None)
        if not dynamic_hw:
            if imgsz not in (None, h):
                raise DetectorConfigError(f"{model_path}: static input {h}x{w}, but imgsz {imgsz} was asked; export with --imgsz {imgsz} or --dynamic")
            imgsz = h
        if rect and not dynamic_hw:
            raise DetectorConfigError(f"{model_path}: rect inference needs a model exported with --dynamic")
        max_batch = kwargs.pop("max_batch", 8)
        if self.static_batch:
            max_batch = self.static_batch
        super().__init__(
            model_id=model_id,
            model_path=model_path,
            names=parse_names(meta, model_path),
            device=device,
            imgsz=imgsz or int(ast.literal_eval(meta.get("imgsz", "[640, 640]"))[0]),
            rect=dynamic_hw if rect is None else rect,
            max_batch=max_batch,
            stride=int(meta.get("stride", 32)),
            **kwargs,
        )
        self.providers = self.session.get_providers()
        self.head = RawBoxHead.from_metadata(meta)
        outputs = [o.name for o in self.session.get_outputs()]
        self._outputs = [outputs[0]]  # the boxes; the neck map only when asked for
        self._feature_outputs = [outputs[0], FEATURES_OUTPUT] if FEATURES_OUTPUT in outputs else None

    @property
    def has_features(self) -> bool:
        return self._feature_outputs is not None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._run_session(batch, self._outputs)[0]

    def _infer_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._feature_outputs is None:
            raise DetectorConfigError(
                f"{self.model_path}: this ONNX file has no '{FEATURES_OUTPUT}' output for the verifier; "
                "export it again (`streetwatch models export --model ID --format onnx --dynamic`)")
        raw, maps = self._run_session(batch, self._feature_outputs)
        return raw, maps

    def _run_session(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        n = batch.shape[0]
        if self.static_batch and n < self.static_batch:  # pad a short last chunk
            pad = np.zeros((self.static_batch - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        out = self.session.run(outputs, {self.input_name: batch.astype(self.input_dtype, copy=False)})
        return [o[:n].astype(np.float32, copy=False) for o in out]

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers, "threads": self.threads,
                "static_batch": self.static_batch, "raw_box_head": self.head is not None}
