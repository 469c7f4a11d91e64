"""The detector's own neck as the verifier's backbone: pooled neck features as an extra ONNX output.

A YOLOv8/11 detection head reads three neck maps (P3, P4, P5 at strides 8, 16, 32). Averaging P3
over 4x4 and P4 over 2x2 cells and stacking them with P5 gives one stride-32 map that describes
every 32x32 patch of the letterboxed input at three scales. Exposed as a second output of the
detector's own graph, it costs photos and frames no second network run: the verifier pools it over
tiles, zones and boxes.
"""

from __future__ import annotations

import re
from pathlib import Path

FEATURES_OUTPUT = "neck_features"
"""Name of the extra graph output (B, C3 + C4 + C5, H / 32, W / 32)."""

FEATURES_META = "streetwatch_neck_features"
"""Metadata key set on graphs that carry the output: its channel count."""

_HEAD_CONV = re.compile(r"^/model\.(\d+)/cv2\.(\d)/cv2\.\2\.0/conv/Conv$")


def add_neck_features(path: Path) -> bool:
    """Add the pooled neck output to an Ultralytics YOLOv8/11 detection ONNX file in place.

    False (file untouched) when the graph has no such head or already has the output. The
    Detect head's first box-branch convolutions (`/model.N/cv2.i/cv2.i.0/conv/Conv`) read exactly
    P3, P4 and P5, which is how the maps are found without knowing the architecture.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    if any(o.name == FEATURES_OUTPUT for o in graph.output):
        return False
    convs = {}
    for node in graph.node:
        m = _HEAD_CONV.match(node.name)
        if m and node.op_type == "Conv":
            convs[int(m.group(2))] = node.input[0]
    if sorted(convs) != [0, 1, 2]:
        return False
    channels = [_channels(model, convs[i]) for i in range(3)]
    if any(c is None for c in channels):
        return False
    p3, p4, p5 = (convs[i] for i in range(3))
    nodes = [
        helper.make_node("AveragePool", [p3], ["sw_neck_p3"], kernel_shape=[4, 4], strides=[4, 4], name="sw_neck/p3_pool"),
        helper.make_node("AveragePool", [p4], ["sw_neck_p4"], kernel_shape=[2, 2], strides=[2, 2], name="sw_neck/p4_pool"),
        helper.make_node("Concat", ["sw_neck_p3", "sw_neck_p4", p5], [FEATURES_OUTPUT], axis=1, name="sw_neck/concat"),
    ]
    graph.node.extend(nodes)
    elem = graph.output[0].type.tensor_type.elem_type
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    out = helper.make_tensor_value_info(FEATURES_OUTPUT, elem, [batch.dim_param or batch.dim_value or "batch", sum(channels), "h32", "w32"])
    graph.output.append(out)
    model.metadata_props.add(key=FEATURES_META, value=str(sum(channels)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def _channels(model, tensor: str) -> int | None:
    """Channels of an intermediate tensor, from the producing Conv's weight (shape inference-free).

    C2f/C3k2 blocks end in a Conv, and SiLU is Mul(x, Sigmoid(x)): follow the first input back to it. An INT8
    export (`--int8`, QDQ format) puts Quantize/DequantizeLinear pairs between the layers and stores the Conv's
    weight as an int8 initializer behind a DequantizeLinear: follow those too.
    """
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(tensor)
    while node is not None:
        if node.op_type == "Conv" and len(node.input) > 1:
            weight = node.input[1]
            dq = producers.get(weight)
            if dq is not None and dq.op_type == "DequantizeLinear":
                weight = dq.input[0]
            return int(inits[weight].dims[0]) if weight in inits else None
        if node.op_type not in ("Concat", "Mul", "Add", "Sigmoid", "Relu", "SiLU", "QuantizeLinear", "DequantizeLinear"):
            return None
        node = producers.get(node.input[0])
    return None
