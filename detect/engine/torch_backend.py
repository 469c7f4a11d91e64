"""Ultralytics/PyTorch backend: the reference, and the GPU path.

On CUDA: fp16 by default, letterboxing on the device (`gpu_preprocess.py`: uint8 upload from
pinned memory), and optionally `torch.compile` (mode "reduce-overhead" records CUDA graphs, which
removes most per-layer launch cost for small models at small batches). Decoding and NMS stay in the
shared `postprocess.py`, so boxes agree with the ONNX backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detect.engine.base import Detector, DetectorConfigError
from detect.runtime_env import import_yolo

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class TorchDetector(Detector):
    backend = "torch"

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str,
        device: str = "cpu",
        half: bool | None = None,
        threads: int | None = None,
        rect: bool | None = None,
        device_preprocess: bool | None = None,
        compile_mode: str | None = None,
        **kwargs,
    ) -> None:
        YOLO = import_yolo()
        import torch

        if device != "cpu" and not device.startswith("cuda"):
            raise DetectorConfigError(f"unknown device '{device}' for the torch backend (use cpu or cuda[:N])")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise DetectorConfigError("device 'cuda' asked for, but torch sees no CUDA GPU")
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise DetectorConfigError(f"unknown compile mode '{compile_mode}' (choose from {', '.join(COMPILE_MODES)})")
        if threads:
            torch.set_num_threads(threads)
        self.threads = threads
        self.torch = torch
        yolo = YOLO(str(model_path), task="detect")
        net = yolo.model
        stride = int(max(getattr(net, "stride", [32])))
        net = net.fuse() if hasattr(net, "fuse") else net
        self.half = device.startswith("cuda") if half is None else half
        if self.half and not device.startswith("cuda"):
            raise DetectorConfigError("fp16 (half) needs a CUDA device for the torch backend")
        self.net = net.to(device).eval()
        self.net = self.net.half() if self.half else self.net.float()
        self.compile_mode = compile_mode
        if compile_mode:
            self.net = torch.compile(self.net, mode=compile_mode)
        self.device_preprocess = device.startswith("cuda") if device_preprocess is None else device_preprocess
        self._device_letterbox = None
        if self.device_preprocess:
            from detect.engine.gpu_preprocess import DeviceLetterbox

            self._device_letterbox = DeviceLetterbox(device, torch.float16 if self.half else torch.float32)
        names = {int(k): str(v) for k, v in yolo.names.items()}
        self._neck: list | None = None
        head = net.model[-1] if hasattr(net, "model") else None
        self._has_neck = head is not None and len(getattr(head, "f", [])) == 3
        if self._has_neck:  # the Detect head's inputs are P3, P4, P5 (see detect.verifier.neck)
            head.register_forward_pre_hook(lambda _m, args: setattr(self, "_neck", list(args[0])))
        super().__init__(
            model_id=model_id,
            model_path=model_path,
            names=names,
            device=device,
            rect=True if rect is None else rect,
            stride=stride,
            **kwargs,
        )

    def _prepare(self, images: list[np.ndarray], shape: tuple[int, int]):
        if self._device_letterbox is None:
            return super()._prepare(images, shape)
        return self._device_letterbox(images, shape)

    def _infer(self, batch) -> np.ndarray:
        torch = self.torch
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.half() if self.half else x
        with torch.inference_mode():
            out = self.net(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float().cpu().numpy()

    @property
    def has_features(self) -> bool:
        return self._has_neck

    def _infer_features(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """The same pooled neck map the ONNX export adds as an output (`detect.verifier.neck`)."""
        if not self._has_neck:
            return super()._infer_features(batch)
        raw = self._infer(batch)
        F = self.torch.nn.functional
        p3, p4, p5 = self._neck  # type: ignore[misc]
        with self.torch.inference_mode():
            maps = self.torch.cat([F.avg_pool2d(p3, 4), F.avg_pool2d(p4, 2), p5], 1)
        return raw, maps.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize(self.device)

    def describe(self) -> dict:
        return {**super().describe(), "half": self.half, "threads": self.threads,
                "device_preprocess": self.device_preprocess, "compile": self.compile_mode}
