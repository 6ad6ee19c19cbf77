"""FP16 graphs for strongly typed TensorRT: FP16 weights and compute, FP32 inputs, outputs and islands.

A strongly typed builder (TensorRT 11; TensorRT 10 with the STRONGLY_TYPED flag) keeps every Cast, so
an FP32 island is only FP32 if its values never pass through FP16 on the way: a Cast(->FP16) ->
Cast(->FP32) pair between two FP32 nodes rounds the tensor to FP16's 11-bit mantissa. Converters that
wrap each kept node in its own Casts (ONNX Runtime's and onnxconverter-common's float16 tools) make
exactly those pairs, so this module assigns one precision per node and inserts one Cast per tensor
and target type, only where an FP16 region meets an FP32 one. (NVIDIA ModelOpt's AutoCast does the
same, but its ONNX extra needs cupy-cuda12x and onnxruntime-gpu on x86_64, and an older onnx.)

What stays FP32, and why:
- the Detect decode (every node after the last convolutions): box centres and sizes are pixels up to
  the image size, where FP16's step is 0.25-0.5 px, and `(2*sigmoid)**2 * anchor` amplifies errors;
- the split attention's weight path (global sum over 3*H*W pixels, which can pass FP16's 65504, its
  MLP and the softmax over the branches); it is a few thousand FLOPs, so FP32 costs nothing. In the
  TensorRT flavour that path is inside the S2SplitAttention node, which accumulates in FP32;
- reductions, softmax, NMS, TopK and index arithmetic wherever they occur (FP32_OPS);
- QuantizeLinear / DequantizeLinear and their scales, as they are: before opset 19 their scales can
  only be FP32, so a DequantizeLinear output that feeds FP16 compute gets a Cast(->FP16) and an FP16
  tensor that feeds a QuantizeLinear a Cast(->FP32).
Ops that only move or select values (Reshape, Concat, Slice, MaxPool, nearest Resize, ...) take the
precision of their inputs, so a Cast sits next to the compute that needs it, never in a chain.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from s2trt.errors import S2Error
from s2trt.text import first_line

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Reductions and softmax are sensitive wherever they occur. Sigmoid is not: the SiLU activations are
# most of the graph.
SENSITIVE_OPS = ("Softmax", "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
                 "LogSoftmax", "CumSum")
# Ops that stay FP32 wherever they occur: index/box arithmetic, ops whose float inputs the ONNX spec
# or TensorRT's parser take as FP32 only, and Constant (its value attribute has a fixed type).
FP32_OPS = frozenset({*SENSITIVE_OPS, "NonMaxSuppression", "TopK", "Range", "RoiAlign", "Constant",
                      "ConstantOfShape", "QuantizeLinear", "DequantizeLinear", "Cast", "CastLike",
                      "RandomUniformLike", "RandomNormalLike", "Einsum"})
# Ops that only move, select or compare values: exact in either precision, so they follow their inputs.
FOLLOW_OPS = frozenset({"Reshape", "Transpose", "Concat", "Slice", "Split", "Squeeze", "Unsqueeze",
                        "Flatten", "Identity", "Gather", "GatherElements", "GatherND", "Tile", "Expand",
                        "MaxPool", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "Shape", "Size",
                        "Pad", "ReduceMax", "ReduceMin", "ArgMax", "ArgMin", "Equal", "Greater", "Less",
                        "GreaterOrEqual", "LessOrEqual", "Max", "Min", "Relu", "Neg", "Abs"})
# Float inputs that keep their type whatever the node's precision (Resize's roi and scales).
FIXED_INPUTS = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
# FP16 tolerance of the parity check, relative to each output group's scale (see parity.py), measured
# with every FP16 tensor rounded as TensorRT stores it (parity.fp16_storage): with the trained demo
# model 8.9e-3 at 320 and 3.4e-2 at 640 — one class score of 25,200 x 5, while the detections are
# the same and their boxes within 0.05 px; random weights give 1e-3 or less. Trained weights have
# larger activations, so FP16's 11-bit mantissa costs more; 5e-2 leaves room for that and still fails
# a broken graph (a wrong op or a lost FP32 island gives errors of order 1).
FP16_TOL = 5e-2


def graph_index(graph: onnx.GraphProto) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(tensor -> the node that writes it, tensor -> the nodes that read it) of an ONNX graph."""
    producer = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def decode_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes between the graph outputs and the last Conv nodes before them (the Detect decode)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        t = stack.pop()
        node = producer.get(t)
        if node is None or node.name in seen or node.op_type == "Conv":
            continue
        seen.add(node.name)
        names.append(node.name)
        stack.extend(node.input)
    return names


def sum_trees(model: onnx.ModelProto) -> list[str]:
    """Add nodes whose values flow only into a sum reduction (directly or through other such Adds).

    That is the split attention's global sum over the branches, found without matching the whole
    block, which a Q/DQ graph's extra nodes can break: its terms are added in FP32 like the sum.
    """
    producer, consumers = graph_index(model.graph)
    keep: list[str] = []
    stack = [n for n in model.graph.node if n.op_type in ("ReduceSum", "ReduceMean")]
    while stack:
        node = stack.pop()
        for t in node.input[:1] if node.op_type != "Add" else node.input:
            p = producer.get(t)
            if p is not None and p.op_type == "Add" and p.name not in keep \
                    and all(c.name == node.name for c in consumers[t]):
                keep.append(p.name)
                stack.append(p)
    return keep


def softmax_paths(model: onnx.ModelProto) -> list[str]:
    """Each softmax fed by a sum reduction, and the nodes between them (the split attention's MLP),
    found by walking back from the softmax to the ReduceSum without crossing a convolution: structure
    that the exact block match of export/surgery.py misses where constants are not folded yet."""
    producer, _ = graph_index(model.graph)
    found: list[str] = []
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        path, stack, reached_sum = {softmax.name: None}, list(softmax.input), False
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in path or node.op_type == "Conv":
                continue
            path[node.name] = None
            if node.op_type in ("ReduceSum", "ReduceMean"):
                reached_sum = True
            elif node.op_type != "Shape":  # a dynamic reshape reads the branches' shape, not values
                stack.extend(node.input)
        if reached_sum:  # a softmax of anything else is left alone
            found += [n for n in path if n not in found]
    return found


def attention_islands(model: onnx.ModelProto) -> set[str]:
    """The split attention's weight path: the branch sum, the global sum, its MLP and the softmax."""
    from s2trt.export.surgery import split_attention_nodes

    return {*split_attention_nodes(model), *sum_trees(model), *softmax_paths(model)}


def fp32_islands(model: onnx.ModelProto) -> set[str]:
    """The nodes every reduced-precision build keeps in FP32: the Detect decode and the split
    attention's sum, MLP and softmax. The FP16 graph, the TensorRT builder's precision pins and the
    INT8 graph's float exclusions (calib/qdq.py) read this one definition, so all keep the same
    islands."""
    return {*decode_nodes(model), *attention_islands(model)}


def to_fp16(model: onnx.ModelProto, keep_fp32: list[str] | None = None) -> onnx.ModelProto:
    """FP16 copy of an FP32 graph; `keep_fp32` adds node names to the ones kept in FP32.

    Graph inputs and outputs stay FP32. The nodes must be in topological order (as exported).
    """
    import onnx

    from s2trt.export.onnx_export import name_nodes

    out = onnx.ModelProto()
    out.CopyFrom(model)
    name_nodes(out)  # the FP32 set is by name: an unnamed node must not stand for all of them
    keep = fp32_islands(out) | set(keep_fp32 or [])
    unknown = set(keep_fp32 or []) - {n.name for n in out.graph.node}
    if unknown:
        raise S2Error(f"FP16 conversion: no node named {', '.join(sorted(unknown))} in the graph")
    try:
        n_casts, n_fp32 = _Converter(out, keep).run()
    except (ValueError, KeyError) as e:  # a graph this pass cannot type: say where
        raise S2Error(f"FP16 conversion failed: {first_line(e, 200)}") from None
    log.debug("FP16: %d nodes kept in FP32, %d Casts at the region borders", n_fp32, n_casts)
    return out


class _Converter:
    """Assigns FP16/FP32 to each float node in graph order, then types tensors and inserts Casts."""

    def __init__(self, model: onnx.ModelProto, keep: set[str]):
        import onnx

        self.model, self.graph, self.keep = model, model.graph, keep
        self.F16, self.F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
        self.types = elem_types(model)
        self.inits = {i.name: i for i in self.graph.initializer}
        self.now: dict[str, int] = {}  # float tensor -> its type in the new graph
        self.casts: dict[tuple[str, int], str] = {}
        self.new_nodes: list[onnx.NodeProto] = []
        self.renamed: dict[str, str] = {}  # an FP16-produced graph output -> its FP16 tensor

    def is_float(self, t: str) -> bool:
        return bool(t) and self.types.get(t) == self.F32

    def precision(self, node: onnx.NodeProto) -> int | None:
        from s2trt.export.plugin_reference import OP_DOMAIN

        floats = [t for t in node.input if self.is_float(t)] + [t for t in node.output if self.is_float(t)]
        if not floats:
            return None
        if node.name in self.keep or node.op_type in FP32_OPS:
            return self.F32
        if node.domain not in ("", "ai.onnx", OP_DOMAIN):  # a custom op whose types we do not know
            return self.F32
        if node.op_type in FOLLOW_OPS:
            made = [self.now.get(t) for t in node.input
                    if self.is_float(t) and t not in self.inits]
            return self.F16 if self.F16 in made else self.F32
        return self.F16

    def run(self) -> tuple[int, int]:
        from onnx import helper

        outputs = {o.name for o in self.graph.output}
        for t in (i.name for i in self.graph.input):
            if self.is_float(t):
                self.now[t] = self.F32
        prec = []
        for node in self.graph.node:  # graph order: a FOLLOW node sees its producers' precision
            p = self.precision(node)
            prec.append(p)
            for t in node.output:
                if p is not None and self.is_float(t):
                    self.now[t] = p
        init_users = self._initializer_users(prec)
        for node, p in zip(list(self.graph.node), prec, strict=True):
            if p is not None:
                for i, t in enumerate(node.input):
                    if not self.is_float(t) or i in FIXED_INPUTS.get(node.op_type, ()):
                        continue
                    node.input[i] = self._as(self.renamed.get(t, t), p, init_users)
                for i, t in enumerate(node.output):
                    if not self.is_float(t):
                        continue
                    if p == self.F16 and t in outputs:
                        node.output[i] = self.renamed[t] = f"{t}/fp16"
                        t = node.output[i]
                    self.now[t] = p
            self.new_nodes.append(node)
        for t, inner in self.renamed.items():
            self.new_nodes.append(helper.make_node("Cast", [inner], [t], name=f"{t}/to_fp32", to=self.F32))
        del self.graph.node[:]
        self.graph.node.extend(self.new_nodes)
        for vi in self.graph.value_info:
            if self.now.get(vi.name) == self.F16:
                vi.type.tensor_type.elem_type = self.F16
        n_fp32 = sum(p == self.F32 for p in prec)
        return len(self.casts) + len(self.renamed), n_fp32

    def _initializer_users(self, prec: list[int | None]) -> dict[str, set[int]]:
        """Float initializer -> the precisions of the nodes that read it (as a converted input)."""
        users: dict[str, set[int]] = {}
        for node, p in zip(self.graph.node, prec, strict=True):
            for i, t in enumerate(node.input):
                if p is not None and t in self.inits and self.is_float(t) \
                        and i not in FIXED_INPUTS.get(node.op_type, ()):
                    users.setdefault(t, set()).add(p)
        return users

    def _as(self, t: str, want: int, init_users: dict[str, set[int]]) -> str:
        """Name of tensor t in type `want`: t itself, an FP16 initializer, or a (shared) Cast."""
        from onnx import helper, numpy_helper

        if t in self.inits:
            if want == self.F32:
                return t
            if init_users.get(t) == {self.F16}:  # only FP16 readers: convert in place, once
                init = self.inits[t]
                if init.data_type == self.F32:
                    init.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(init)), t))
                return t
            name = f"{t}/fp16"
            if name not in self.inits:
                self.inits[name] = numpy_helper.from_array(
                    _to_half(numpy_helper.to_array(self.inits[t])), name)
                self.graph.initializer.append(self.inits[name])
            return name
        have = self.now.get(t, self.F32)
        if have == want:
            return t
        key = (t, want)
        if key not in self.casts:
            suffix = "fp16" if want == self.F16 else "fp32"
            name = f"{t}/to_{suffix}"
            self.new_nodes.append(helper.make_node("Cast", [t], [name], name=name, to=want))
            self.casts[key] = name
            self.now[name] = want
        return self.casts[key]


def _to_half(a: object) -> object:
    import numpy as np

    with np.errstate(over="ignore"):
        return np.asarray(a, np.float32).clip(-65504, 65504).astype(np.float16)


_INT64_OPS = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "NonMaxSuppression"}
_BOOL_OPS = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Not",
             "IsNaN", "IsInf"}


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor. ONNX shape inference stops at an op it does not know (the
    plugin node), and everything after it would have no type: there the types are carried forward
    in graph order (integer ops by their definition, the rest like their first data input)."""
    import onnx

    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)
             if v.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        attrs = {a.name: a for a in node.attribute}
        data = node.input[1:2] if node.op_type == "Where" else node.input
        follow = next((types[i] for i in data if i in types), None)
        for k, out in enumerate(node.output):
            if not out or out in types:
                continue
            if node.op_type in _INT64_OPS or (node.op_type == "TopK" and k == 1):
                types[out] = onnx.TensorProto.INT64
            elif node.op_type in _BOOL_OPS:
                types[out] = onnx.TensorProto.BOOL
            elif node.op_type == "Cast":
                types[out] = attrs["to"].i
            elif node.op_type == "Constant" and "value" in attrs:
                types[out] = attrs["value"].t.data_type
            elif follow is not None:
                types[out] = follow
    return types
