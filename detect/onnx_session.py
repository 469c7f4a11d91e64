"""ONNX Runtime sessions on files the project names: the detector's exports and the verifier's EfficientNet-Lite0.

Here, below `detect.engine` and `detect.verifier`, because the engine imports the verifier's neck and pooling: a
verifier backbone opening its session through the engine would be an import cycle.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile

_LOAD_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile)
"""What ONNX Runtime raises for a file it cannot load (its pybind errors share no base but Exception)."""


def open_session(path: Path, opts: ort.SessionOptions | None = None, providers: list[str] | None = None, *,
                 error: type[Exception], remedy: str) -> ort.InferenceSession:
    """An ONNX Runtime session on `path`; a file ONNX Runtime cannot load (empty, truncated by a copy, not ONNX)
    raises `error` (the caller's own, which its commands answer with one line) naming it, the reason and `remedy`,
    where ONNX Runtime's traceback said neither which file nor what to do."""
    try:
        return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    except _LOAD_ERRORS as exc:
        reason = str(exc).split(" failed:", 1)[-1].strip() or type(exc).__name__
        raise error(f"{path}: ONNX Runtime cannot load this model ({reason}); {remedy}") from None
