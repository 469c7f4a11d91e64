"""Letterbox on the torch device: upload uint8 pixels, resize, pad and normalise there.

On a GPU the NumPy/OpenCV letterbox (resize, BGR->RGB, float conversion of every pixel on the CPU,
then a float32 upload four times the size of the pixels) can cost more than a small network.
Here the CPU only copies the decoded uint8 pixels into one pinned staging buffer; a single
asynchronous copy moves them to the device, where the resize, padding, channel flip, scaling and
fp16 cast run next to the model. The geometry is `letterbox.fit`, so boxes map back exactly as on
the CPU path; pixel values differ from OpenCV's fixed-point bilinear resize by rounding only
(parity test in tests/test_gpu_path.py). It runs on any torch device, which is how machines
without a GPU test it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from detect.engine.letterbox import PAD_VALUE, Letterbox, fit


class DeviceLetterbox:
    """Callable `(images, shape) -> (NCHW RGB [0, 1] tensor on device, mappings)`; keeps its staging buffer."""

    def __init__(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.pinned = self.device.type == "cuda"
        self._staging: torch.Tensor | None = None
        self._copy_done: torch.cuda.Event | None = None

    def __call__(self, images: list[np.ndarray], shape: tuple[int, int]) -> tuple[torch.Tensor, list[Letterbox]]:
        th, tw = shape
        out = torch.full((len(images), 3, th, tw), PAD_VALUE / 255, dtype=self.dtype, device=self.device)
        boxes = []
        for i, pixels in enumerate(self._upload(images)):
            h0, w0 = pixels.shape[:2]
            lb, nw, nh = fit(h0, w0, shape)
            # BGR HWC uint8 -> RGB 1CHW float in [0, 255]
            x = pixels.permute(2, 0, 1).flip(0).unsqueeze(0).float()
            if (nw, nh) != (w0, h0):
                x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
            top, left = int(lb.pad_y), int(lb.pad_x)
            out[i, :, top : top + nh, left : left + nw] = x[0].div_(255)
            boxes.append(lb)
        return out, boxes

    def _upload(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        """Each image as a HWC uint8 tensor on the device: one pinned buffer, one async copy."""
        if not self.pinned:
            return [torch.from_numpy(np.ascontiguousarray(im)).to(self.device) for im in images]
        total = sum(im.size for im in images)
        if self._copy_done is not None:
            self._copy_done.synchronize()  # the previous copy may still be reading the staging buffer
        if self._staging is None or self._staging.numel() < total:
            self._staging = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        host = self._staging.numpy()
        offsets = [0]
        for im in images:
            host[offsets[-1] : offsets[-1] + im.size] = im.reshape(-1)
            offsets.append(offsets[-1] + im.size)
        flat = self._staging[:total].to(self.device, non_blocking=True)
        self._copy_done = torch.cuda.Event()
        self._copy_done.record(torch.cuda.current_stream(self.device))
        return [flat[a:b].view(im.shape) for a, b, im in zip(offsets, offsets[1:], images, strict=False)]
