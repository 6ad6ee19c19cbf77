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
from s2trt.export.graph import add_cast, add_node, is_constant, load, name_unnamed, producer, save
from s2trt.text import first_line

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

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


def decode_nodes(model: onnx.ModelProto | gs.Graph) -> list[str]:
    """Nodes between the graph outputs and the last Conv nodes before them (the Detect decode)."""
    graph = load(model)
    names, stack, seen = [], list(graph.outputs), set()
    while stack:
        node = producer(stack.pop())
        if node is None or node.name in seen or node.op == "Conv":
            continue
        seen.add(node.name)
        names.append(node.name)
        stack.extend(node.inputs)
    return names


def sum_trees(model: onnx.ModelProto | gs.Graph) -> list[str]:
    """Add nodes whose values flow only into a sum reduction (directly or through other such Adds).

    That is the split attention's global sum over the branches, found without matching the whole
    block, which a Q/DQ graph's extra nodes can break: its terms are added in FP32 like the sum.
    """
    graph = load(model)
    keep: list[str] = []
    stack = [n for n in graph.nodes if n.op in ("ReduceSum", "ReduceMean")]
    while stack:
        node = stack.pop()
        for t in node.inputs[:1] if node.op != "Add" else node.inputs:
            p = producer(t)
            if p is not None and p.op == "Add" and p.name not in keep \
                    and all(c.name == node.name for c in t.outputs):
                keep.append(p.name)
                stack.append(p)
    return keep


def softmax_paths(model: onnx.ModelProto | gs.Graph) -> list[str]:
    """Each softmax fed by a sum reduction, and the nodes between them (the split attention's MLP),
    found by walking back from the softmax to the ReduceSum without crossing a convolution: structure
    that the exact block match of export/surgery.py misses where constants are not folded yet."""
    graph = load(model)
    found: list[str] = []
    for softmax in (n for n in graph.nodes if n.op == "Softmax"):
        path, stack, reached_sum = {softmax.name: None}, list(softmax.inputs), False
        while stack:
            node = producer(stack.pop())
            if node is None or node.name in path or node.op == "Conv":
                continue
            path[node.name] = None
            if node.op in ("ReduceSum", "ReduceMean"):
                reached_sum = True
            elif node.op != "Shape":  # a dynamic reshape reads the branches' shape, not values
                stack.extend(node.inputs)
        if reached_sum:  # a softmax of anything else is left alone
            found += [n for n in path if n not in found]
    return found


def attention_islands(model: onnx.ModelProto | gs.Graph) -> set[str]:
    """The split attention's weight path: the branch sum, the global sum, its MLP and the softmax."""
    from s2trt.export.surgery import split_attention_nodes

    graph = load(model)
    return {*split_attention_nodes(graph), *sum_trees(graph), *softmax_paths(graph)}


def fp32_islands(model: onnx.ModelProto | gs.Graph) -> set[str]:
    """The nodes every reduced-precision build keeps in FP32: the Detect decode and the split
    attention's sum, MLP and softmax. The FP16 graph, the TensorRT builder's precision pins and the
    INT8 graph's float exclusions (calib/qdq.py) read this one definition, so all keep the same
    islands."""
    graph = load(model)
    return {*decode_nodes(graph), *attention_islands(graph)}


def to_fp16(model: onnx.ModelProto, keep_fp32: list[str] | None = None) -> onnx.ModelProto:
    """FP16 copy of an FP32 graph; `keep_fp32` adds node names to the ones kept in FP32.

    Graph inputs and outputs stay FP32. The nodes must be in topological order (as exported).
    """
    graph = load(model)
    name_unnamed(graph)  # the FP32 set is by name: an unnamed node must not stand for all of them
    keep = fp32_islands(graph) | set(keep_fp32 or [])
    unknown = set(keep_fp32 or []) - {n.name for n in graph.nodes}
    if unknown:
        raise S2Error(f"FP16 conversion: no node named {', '.join(sorted(unknown))} in the graph")
    try:
        n_casts, n_fp32 = _Converter(graph, elem_types(model), keep).run()
    except (ValueError, KeyError) as e:  # a graph this pass cannot type: say where
        raise S2Error(f"FP16 conversion failed: {first_line(e, 200)}") from None
    log.debug("FP16: %d nodes kept in FP32, %d Casts at the region borders", n_fp32, n_casts)
    return save(graph, like=model)


class _Converter:
    """Assigns FP16/FP32 to each float node in graph order, then types tensors and inserts Casts.

    Tensors are tracked by name: `types` (the element types of the FP32 graph) knows only the
    original ones, so the Casts and FP16 copies made here are never converted again."""

    def __init__(self, graph: gs.Graph, types: dict[str, int], keep: set[str]):
        import onnx

        self.graph, self.types, self.keep = graph, types, keep
        self.F16, self.F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
        self.inits = {t.name: t for t in graph.tensors().values() if is_constant(t)}
        self.now: dict[str, int] = {}  # float tensor -> its type in the new graph
        self.casts: dict[tuple[str, int], Any] = {}
        self.renamed: dict[str, Any] = {}  # an FP16-produced graph output -> its FP16 tensor

    def is_float(self, t: gs.Tensor) -> bool:
        return bool(t.name) and self.types.get(t.name) == self.F32

    def precision(self, node: gs.Node) -> int | None:
        from s2trt.export.plugin_reference import OP_DOMAIN

        floats = [t for t in (*node.inputs, *node.outputs) if self.is_float(t)]
        if not floats:
            return None
        if node.name in self.keep or node.op in FP32_OPS:
            return self.F32
        if (node.domain or "") not in ("", "ai.onnx", OP_DOMAIN):  # a custom op whose types we do not know
            return self.F32
        if node.op in FOLLOW_OPS:
            made = [self.now.get(t.name) for t in node.inputs
                    if self.is_float(t) and t.name not in self.inits]
            return self.F16 if self.F16 in made else self.F32
        return self.F16

    def run(self) -> tuple[int, int]:
        import numpy as np
        import onnx_graphsurgeon as gs

        outputs = {o.name: o for o in self.graph.outputs}
        for t in self.graph.inputs:
            if self.is_float(t):
                self.now[t.name] = self.F32
        nodes = list(self.graph.nodes)
        prec = []
        for node in nodes:  # graph order: a FOLLOW node sees its producers' precision
            p = self.precision(node)
            prec.append(p)
            for t in node.outputs:
                if p is not None and self.is_float(t):
                    self.now[t.name] = p
        init_users = self._initializer_users(nodes, prec)
        for node, p in zip(nodes, prec, strict=True):
            if p is None:
                continue
            for i, t in enumerate(list(node.inputs)):
                if not self.is_float(t) or i in FIXED_INPUTS.get(node.op, ()):
                    continue
                node.inputs[i] = self._as(self.renamed.get(t.name, t), p, init_users)
            for i, t in enumerate(list(node.outputs)):
                if not self.is_float(t):
                    continue
                if p == self.F16 and t.name in outputs:
                    node.outputs[i] = self.renamed[t.name] = gs.Variable(f"{t.name}/fp16")
                    t = node.outputs[i]
                self.now[t.name] = p
        for name, inner in self.renamed.items():
            add_node(self.graph, "Cast", [inner], [outputs[name]], name=f"{name}/to_fp32",
                     attrs={"to": self.F32})
        io = {id(t) for t in (*self.graph.inputs, *self.graph.outputs)}
        for t in self.graph.tensors().values():  # the inner tensors that carry a type (value_info)
            if not is_constant(t) and t.dtype is not None and id(t) not in io \
                    and self.now.get(t.name) == self.F16:
                t.dtype = np.float16
        n_fp32 = sum(p == self.F32 for p in prec)
        return len(self.casts) + len(self.renamed), n_fp32

    def _initializer_users(self, nodes: list[gs.Node], prec: list[int | None]) -> dict[str, set[int]]:
        """Float initializer -> the precisions of the nodes that read it (as a converted input)."""
        users: dict[str, set[int]] = {}
        for node, p in zip(nodes, prec, strict=True):
            for i, t in enumerate(node.inputs):
                if p is not None and t.name in self.inits and self.is_float(t) \
                        and i not in FIXED_INPUTS.get(node.op, ()):
                    users.setdefault(t.name, set()).add(p)
        return users

    def _as(self, t: gs.Tensor, want: int, init_users: dict[str, set[int]]) -> gs.Tensor:
        """Tensor t in type `want`: t itself, an FP16 initializer, or a (shared) Cast."""
        import numpy as np
        import onnx_graphsurgeon as gs

        if t.name in self.inits:
            if want == self.F32:
                return t
            if init_users.get(t.name) == {self.F16}:  # only FP16 readers: convert in place, once
                if t.values.dtype == np.float32:
                    t.values = _to_half(t.values)
                return t
            name = f"{t.name}/fp16"
            if name not in self.inits:
                self.inits[name] = gs.Constant(name, _to_half(t.values))
            return self.inits[name]
        have = self.now.get(t.name, self.F32)
        if have == want:
            return t
        key = (t.name, want)
        if key not in self.casts:
            suffix = "fp16" if want == self.F16 else "fp32"
            self.casts[key] = add_cast(self.graph, t, want, f"{t.name}/to_{suffix}")
            self.now[self.casts[key].name] = want
        return self.casts[key]


def _to_half(a: object) -> object:
    import numpy as np

    with np.errstate(over="ignore"):
        return np.asarray(np.asarray(a, np.float32).clip(-65504, 65504).astype(np.float16))


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
