"""Detector engine: one `Detector` interface, ONNX Runtime and Ultralytics/PyTorch backends.

`load_detector` is the only constructor the rest of the project uses. The ONNX backend runs a
registered export of the model (exporting it on first use when the torch extra is installed): the
engine-only raw-box variant when there is one (`<id>-rawbox.onnx`, faster), else the standard export.
"""

from __future__ import annotations

import logging
from pathlib import Path

from detect.engine.base import Detector, DetectorConfigError
from detect.engine.postprocess import RAW_HEAD_BINS
from detect.registry import (RAW_BOX_SUFFIX, ModelNotFoundError, default_model, find_export, get_card, path_model_id,
                             resolve_weights)

__all__ = ["BACKENDS", "Detector", "DetectorConfigError", "ModelNotFoundError", "load_detector"]

BACKENDS = ("onnx", "torch")
log = logging.getLogger(__name__)


def load_detector(
    model: str | Path | None = None,
    backend: str = "onnx",
    device: str = "cpu",
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    imgsz: int = 640,
    max_det: int = 300,
    classes: set[int] | None = None,
    threads: int | None = None,
    rect: bool | None = None,
    max_batch: int = 8,
    dynamic: bool = True,
    half: bool | None = None,
    int8: bool = False,
    providers: list[str] | None = None,
    device_preprocess: bool | None = None,
    compile_mode: str | None = None,
    features: bool = False,
) -> Detector:
    """Build a detector for a model id or weight file.

    `model`: registry id (`streetwatch models list`) or a .pt/.onnx path; None: the promoted model
    (`streetwatch models promote`), else yolo11n. `backend`: onnx | torch.
    `device`: cpu | cuda[:N] (| tensorrt for onnx). `rect`: stride-aligned rectangles instead of
    the square input (default: whenever the model accepts any shape). For onnx with a .pt model,
    `dynamic`, `half`, `int8` pick which registered export to run. Dynamic (any image size) is the
    default because rectangle inputs save about a third of the CPU time on 4:3 and 16:9 pictures.
    `half` for torch: None = fp16 on CUDA and fp32 on the CPU; False forces fp32 on CUDA.
    Torch only: `device_preprocess` letterboxes on the device (default: on CUDA), `compile_mode`
    runs the network through `torch.compile` ("reduce-overhead" = CUDA graphs).
    `features`: the verifier will read the detector's neck (`detect_with_features`); an ONNX export
    made before the neck output existed is exported again once (needs the torch extra).
    """
    model = default_model() if model is None else model
    if imgsz <= 0 or imgsz % 32:
        raise DetectorConfigError(f"imgsz must be a positive multiple of 32, got {imgsz}")
    common = dict(conf=conf, iou=iou, max_det=max_det, classes=classes, max_batch=max_batch, imgsz=imgsz)
    if backend == "torch":
        from detect.engine.torch_backend import TorchDetector

        weights, card = resolve_weights(model)
        if weights.suffix == ".onnx":
            raise DetectorConfigError(f"{weights}: the torch backend needs a .pt checkpoint, not ONNX")
        model_id = card.id if card else path_model_id(weights)  # as the ONNX backend's export of it says (neck_id)
        return TorchDetector(weights, model_id=model_id, device=device, threads=threads, rect=rect,
                             half=half, device_preprocess=device_preprocess, compile_mode=compile_mode,
                             **common)
    if backend == "onnx":
        from detect.engine.onnx_backend import OnnxDetector

        if device_preprocess or compile_mode:
            raise DetectorConfigError("device_preprocess and compile_mode are options of the torch backend")

        path, model_id = _onnx_file(model, imgsz, dynamic, bool(half), int8)
        detector = OnnxDetector(path, model_id=model_id, device=device, threads=threads, providers=providers,
                                rect=rect, **common)
        if features and not detector.has_features and _exported(model):
            if int8:  # an INT8 export needs its calibration images: say how, never swap in the fp32 graph unasked
                raise DetectorConfigError(
                    f"{path.name} has no neck output for the verifier (an INT8 export made before they carried one): export "
                    f"it again with `streetwatch models export --model {model} --imgsz {imgsz}{' --dynamic' if dynamic else ''} "
                    f"--int8 --calib DIR`, or judge without the verifier (--verifier none)")
            log.warning("%s has no neck output for the verifier: exporting %s again once", path.name, model)
            from detect.export import export_onnx

            path, card = export_onnx(str(model), imgsz=imgsz, dynamic=dynamic, half=bool(half)).for_engine()
            detector = OnnxDetector(path, model_id=card.id, device=device, threads=threads, providers=providers,
                                    rect=rect, **common)
        if detector.head is not None and not path.stem.endswith(RAW_BOX_SUFFIX):
            log.warning("%s has a raw-box head under a standard export's name (made by an older streetwatch): it runs "
                        "here, but Ultralytics and other ONNX tools cannot run it; export the model again "
                        "(`streetwatch models export`) to get a standard file and its -rawbox variant", path)
        return detector
    raise DetectorConfigError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")


def _exported(model: str | Path) -> bool:
    """The ONNX backend runs an export of this model, which can be made again: a .pt path (named by its content,
    `path_model_id`) or an id whose card is not ONNX; not an .onnx file or an ONNX card, which are run as they are."""
    suffix = Path(str(model)).suffix
    return suffix == ".pt" or (suffix != ".onnx" and get_card(str(model)).format != "onnx")


def _cut_under_standard_name(path: Path) -> bool:
    """An export an older streetwatch cut (raw-box head) but named like a standard one. Needs `onnx` (the
    exporter's extra) to read the metadata cheaply; without it the question does not arise (no re-export)."""
    try:
        import onnx
    except ImportError:
        return False
    meta = {p.key for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return RAW_HEAD_BINS in meta


def _onnx_file(model: str | Path, imgsz: int, dynamic: bool, half: bool, int8: bool) -> tuple[Path, str]:
    """The ONNX file for a model: given directly, registered as ONNX, or an export of a .pt model (a .pt path's export
    is found by the file's content, `path_model_id`, so the same file is exported once)."""
    p = Path(model)
    if p.suffix == ".onnx":
        if not p.is_file():
            raise ModelNotFoundError(f"model file not found: {p}")
        return p, p.stem
    legacy: tuple[Path, str] | None = None
    if p.suffix == ".pt":
        base_id = path_model_id(resolve_weights(p)[0])
    else:
        card = get_card(str(model))
        if card.format == "onnx":
            path, _ = resolve_weights(card.id)
            return path, card.id
        base_id = card.id
    for raw_box in (True, False):  # the engine's faster variant first, else the standard export
        found = find_export(base_id, imgsz, dynamic, half, int8, raw_box=raw_box)
        if found and (raw_box or int8 or not _cut_under_standard_name(found[0])):
            return found[0], found[1].id
        if found:
            legacy = found[0], found[1].id
    if int8:
        raise ModelNotFoundError(
            f"no INT8 export of '{model}' at imgsz {imgsz}: run `streetwatch models export --model {model} "
            f"--format onnx --imgsz {imgsz} --int8 --calib DIR` first"
        )
    try:
        from detect.export import export_onnx

        if legacy:
            log.warning("%s has a raw-box head under a standard export's name (an older streetwatch made it): exporting "
                        "%s again, as a standard file and its -rawbox variant", legacy[0], model)
        else:
            log.warning("no ONNX export of %s at imgsz %d yet: exporting it once (needs the torch extra)", model, imgsz)
        path, card = export_onnx(str(model), imgsz=imgsz, dynamic=dynamic, half=half).for_engine()
    except ImportError as exc:
        if legacy:
            return legacy  # runs here all the same (the load warns that other tools cannot run it)
        raise ModelNotFoundError(
            f"no ONNX export of '{model}' at imgsz {imgsz} and this install cannot export ({exc}). Run "
            f"`streetwatch models export --model {model} --format onnx --imgsz {imgsz}` where the torch extra "
            "is installed and copy the .onnx file and models/registry/ here"
        ) from None
    return path, card.id
