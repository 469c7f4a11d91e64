"""Ultralytics/PyTorch backend: the reference, and the GPU path.

On CUDA: fp16 by default, letterboxing on the device (`gpu_preprocess.py`: uint8 upload from
pinned memory), and optionally `torch.compile` (mode "reduce-overhead" records CUDA graphs, which
removes most per-layer launch cost for small models at small batches). Decoding and NMS stay in the
shared `postprocess.py`, so boxes agree with the ONNX backend.

The network runs as one TorchScript call per input shape (`GraphCache`, the detector's `graphs`),
not module by module from Python: PyTorch releases the GIL around every operator, and with other
Python threads busy (triage's readers, the CCTV readers) taking it back costs up to the
interpreter's 5 ms switch interval each time. `python -m benchmarks.gil_contention` (2-core CPU,
yolo11n at 320): 28 ms alone, 4.3 s beside three busy Python threads when eager, 0.22 s traced.

And it runs on one long-lived thread of the detector's own (`_run`), whoever calls: cuDNN keeps its
execution plans per thread (pytorch/pytorch#191617), so the first forward in a new thread plans every
convolution again. Triage's worker threads are new in every run; on an H200 its `infer` stage took
0.8-1 s per photo (1.3 photos/s against 12 for a plain predict loop; benchmarks/README.md, "On a GPU"),
which this is meant to remove (not yet measured on a GPU).
"""

from __future__ import annotations

import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from detect.engine.base import Detector, DetectorConfigError
from detect.runtime_env import import_yolo

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class GraphCache:
    """The network traced once per input shape and dtype (TorchScript), so a forward pass is one call
    that releases the GIL once. Traced graphs are shape-specific (the Detect head's anchors become
    constants), hence one per shape, the oldest dropped past `size`; each holds its own copy of the
    weights (~11 MB for yolo11n in fp32; a traced module instead of a function took more, not less).
    `eager`: run the network as given instead (a torch.compile'd one has graphs of its own, and a torch
    that cannot trace falls back to it). Outputs: the raw head output, then the Detect head's inputs P3,
    P4, P5 when `head` is given (the verifier's neck map)."""

    def __init__(self, net, torch, head=None, *, eager: bool = False, size: int = 8) -> None:
        self.net, self.torch, self.size, self.eager = net, torch, size, eager
        self.with_neck = head is not None
        self._graphs: dict[tuple, object] = {}
        self._neck: list | None = None
        if head is not None:
            head.register_forward_pre_hook(lambda _m, args: setattr(self, "_neck", list(args[0])))

    @property
    def traced(self) -> dict[tuple, object]:
        """The traced graphs held now, by (input shape, dtype, device): for tests and benchmarks to see which ran."""
        return dict(self._graphs)

    def __call__(self, x) -> tuple:
        if self.eager:
            return self._outputs(x)
        key = (tuple(x.shape), x.dtype, x.device)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._trace(x)
            if graph is None:
                return self._outputs(x)
            self._graphs[key] = graph
            while len(self._graphs) > self.size:
                self._graphs.pop(next(iter(self._graphs)))
        with self.torch.jit.optimized_execution(False):  # the eager kernels, no fusion: same numbers as eager
            return graph(x)

    def _trace(self, x):
        """The traced graph, or None (and eager from now on) where this torch cannot trace the network."""
        torch = self.torch
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), torch.jit.optimized_execution(False):
                # recent torch marks jit.trace deprecated (it works); the Detect head's shape check is meant to be baked in
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                return torch.jit.trace(self._outputs, x.clone(), check_trace=False)
        except (AttributeError, RuntimeError) as exc:
            log.warning("torch backend: tracing the network failed (%s); running it eagerly, which is slow "
                        "beside other busy Python threads", exc)
            self.eager = True
            return None

    def _outputs(self, x) -> tuple:
        out = self.net(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return (out, *self._neck) if self.with_neck and self._neck is not None else (out,)


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
        self._has_neck = head is not None and len(getattr(head, "f", [])) == 3  # P3, P4, P5 (detect.verifier.neck)
        self.graphs = GraphCache(self.net, torch, head if self._has_neck else None, eager=bool(compile_mode))
        self._runner_ident: int | None = None
        self._runner = ThreadPoolExecutor(1, thread_name_prefix=f"torch-{model_id}", initializer=self._mark_runner)
        super().__init__(
            model_id=model_id,
            model_path=model_path,
            names=names,
            device=device,
            rect=True if rect is None else rect,
            stride=stride,
            **kwargs,
        )

    def _run(self, images: list[np.ndarray], features: bool):
        """The base `_run` on this detector's own thread (see the module docstring), which also makes
        calls from several threads safe: they queue there."""
        if threading.get_ident() == self._runner_ident:
            return super()._run(images, features)
        return self._runner.submit(super()._run, images, features).result()

    def _mark_runner(self) -> None:
        self._runner_ident = threading.get_ident()

    def _prepare(self, images: list[np.ndarray], shape: tuple[int, int]):
        if self._device_letterbox is None:
            return super()._prepare(images, shape)
        return self._device_letterbox(images, shape)

    def _infer(self, batch) -> np.ndarray:
        torch = self.torch
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.half() if self.half else x
        with torch.inference_mode():
            out, *neck = self.graphs(x)
        self._neck = neck or None
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
