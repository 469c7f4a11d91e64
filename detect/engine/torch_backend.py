"""Ultralytics/PyTorch backend: the reference, and the GPU path (fp16 on CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detect.engine.base import Detector, DetectorConfigError
from detect.runtime_env import prepare_ultralytics_env


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
        **kwargs,
    ) -> None:
        prepare_ultralytics_env()
        import torch
        from ultralytics import YOLO

        if device != "cpu" and not device.startswith("cuda"):
            raise DetectorConfigError(f"unknown device '{device}' for the torch backend (use cpu or cuda[:N])")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise DetectorConfigError("device 'cuda' asked for, but torch sees no CUDA GPU")
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
        names = {int(k): str(v) for k, v in yolo.names.items()}
        super().__init__(
            model_id=model_id,
            model_path=model_path,
            names=names,
            device=device,
            rect=True if rect is None else rect,
            stride=stride,
            **kwargs,
        )

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.half() if self.half else x
        with torch.inference_mode():
            out = self.net(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "half": self.half, "threads": self.threads}
