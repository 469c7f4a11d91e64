"""The environment block every benchmark record carries, so results can be compared honestly."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from datetime import datetime, timezone


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*packages: str) -> dict[str, str | None]:
    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver version (NVML when installed, else /proc), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - no NVML library, no driver, no GPU: all mean "unknown"
        pass
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module\s+(\S+)", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def gpu_details() -> list[dict]:
    """Name, memory and compute capability of each CUDA device torch sees (empty without one)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                    "compute_capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    return out


def environment() -> dict:
    """CPU, cores, OS, Python and library versions, and GPU facts when torch sees one."""
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # 1/5/15-minute load: other work on the machine is the usual cause of noisy figures
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "versions": versions("streetwatch", "onnxruntime", "onnxruntime-gpu", "ultralytics", "torch", "numpy",
                             "opencv-python", "supervision", "onnx", "nvidia-ml-py"),
    }
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    try:
        import torch

        env["torch_cuda_build"] = torch.version.cuda
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
            env["cudnn"] = torch.backends.cudnn.version()
            env["gpus"] = gpu_details()
            env["nvidia_driver"] = nvidia_driver()
    except ImportError:
        pass
    return env
