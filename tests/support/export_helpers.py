"""Helpers the export tests share: a built model and an FP16 graph's island check."""

from __future__ import annotations

import onnx
from onnx import helper
from yolov5_fake import build_model

from s2trt.export.plugin_reference import OP_TYPE
from s2trt.models import LoadedModel

F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
# Ops that only move or select values: a Cast pair through them is still a round trip.
MOVES = {"Reshape", "Transpose", "Concat", "Slice", "Split", "Squeeze", "Unsqueeze", "Flatten",
         "Identity", "Gather", "GatherElements", "Tile", "MaxPool", "Resize", "Pad"}


def loaded_model(cfg: str = "yolov5n-s2", width_multiple: float | None = None, nc: int = 80,
                 seed: int = 0) -> LoadedModel:
    model = build_model(cfg, nc=nc, seed=seed, width_multiple=width_multiple)
    stride = [int(s) for s in model.stride.tolist()]
    return LoadedModel(model, [f"c{i}" for i in range(nc)], stride, model.yaml, "test", False)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:  # the plugin node has no shape inference: its output is its inputs' type
        if n.op_type == OP_TYPE:
            types[n.output[0]] = types[n.input[0]]
    return types


def cast_to(node: onnx.NodeProto) -> int:
    return helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))


def island_violations(model: onnx.ModelProto) -> list[str]:
    """Everything that breaks the FP16 contract of a strongly typed graph, as readable lines."""
    types = tensor_types(model)
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    bad = []
    for v in [*model.graph.input, *model.graph.output]:
        if v.type.tensor_type.elem_type == F16:
            bad.append(f"graph input/output {v.name} is FP16")

    def source(t: str) -> onnx.NodeProto | None:
        """The first node upstream of t that is not a pure move (a Cast counts as a source)."""
        node = producer.get(t)
        while node is not None and node.op_type in MOVES:
            node = producer.get(node.input[0])
        return node

    for n in nodes:
        if n.op_type != "Cast":
            continue
        src = source(n.input[0])
        if src is not None and src.op_type == "Cast" and types.get(src.input[0]) in (F16, F32) \
                and types.get(n.input[0]) in (F16, F32) and cast_to(n) == types.get(src.input[0]):
            bad.append(f"round trip {src.name} -> {n.name}")

    # The tail: nodes with no Conv or plugin node downstream (the Detect decode, and NMS when
    # appended). It must be one FP32 region: FP32 tensors only, Casts from FP16 only at its entry.
    downstream_conv: set[str] = set()
    for n in reversed(nodes):
        outs = [c for t in n.output for c in consumers.get(t, [])]
        if any(c.op_type in ("Conv", OP_TYPE) or c.name in downstream_conv for c in outs):
            downstream_conv.add(n.name)
    tail = [n for n in nodes if n.name not in downstream_conv and n.op_type not in ("Conv", OP_TYPE)]
    tail_names = {n.name for n in tail}
    if not any(n.op_type == "Pow" for n in tail):
        bad.append("the tail has no decode (Pow) in it")
    for n in tail:
        for t in n.output:
            if types.get(t) == F16:
                bad.append(f"tail node {n.name} ({n.op_type}) computes in FP16")
        if n.op_type == "Cast" and types.get(n.input[0]) == F16 and producer[n.input[0]].name in tail_names:
            bad.append(f"Cast {n.name} inside the FP32 tail")
    return bad
