"""TensorRT flavour: replace each split-attention subgraph by one `s2trt::S2SplitAttention` node.

The subgraph is found by its structure, not by node names or channel counts, so it is found in any
width and after any renaming (onnxslim, another exporter):

    x1, x2, x3 --Add tree--> ReduceSum(H, W) -> MatMul(W1) -> exact GELU (Erf) -> MatMul(W2)
      -> Reshape(B, 3, C) -> Softmax(axis 1) -> [Unsqueeze] -> pick branch k (Gather / Slice)
      -> Mul with x_k -> Add tree -> out

The weights come from the two MatMul (or Gemm) initializers. Anything that does not fit refuses with
an S2Error: exporting the TensorRT flavour without the plugin node would be a silent slowdown at best.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from s2trt.errors import S2Error
from s2trt.export.graph import add_node, constant, is_constant, load, save
from s2trt.export.plugin_reference import (
    OP_DOMAIN,
    OP_TYPE,
    OP_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

log = logging.getLogger(__name__)

_GELU_OPS = {"Div", "Mul", "Add", "Erf", "Gelu"}
_VIEW_OPS = {"Unsqueeze", "Reshape", "Squeeze"}


class NoMatchError(S2Error):
    """The graph has no split-attention subgraph the plugin can replace."""


@dataclass
class Match:
    """One split-attention subgraph: inputs in branch order, its output, weights (out, in)."""

    inputs: list[Any]  # gs.Variable x1, x2, x3
    output: Any  # gs.Variable
    mlp1_weight: np.ndarray  # (C, C)
    mlp2_weight: np.ndarray  # (3C, C)
    nodes: list[Any] = field(default_factory=list)  # every node the plugin replaces
    weight_nodes: list[Any] = field(default_factory=list)  # sum, MLP, softmax: FP16 keeps them FP32

    @property
    def channels(self) -> int:
        return int(self.mlp1_weight.shape[0])


class _Miss(Exception):
    """This Softmax is not the one we look for (internal: tried candidates, reported at the end)."""


def _producer(t: Any, op: str | set[str] | None = None) -> Any:
    if len(t.inputs) != 1:
        raise _Miss(f"{t.name} has no producing node")
    node = t.inputs[0]
    if op is not None and node.op not in ({op} if isinstance(op, str) else op):
        raise _Miss(f"{t.name} comes from {node.op}, expected {op}")
    return node


def _add_leaves(t: Any, nodes: list[Any], stop: set[int] | None = None) -> list[Any]:
    """The tensors summed by a tree of Add nodes ending in t, left to right."""
    if t.inputs and t.inputs[0].op == "Add" and not any(map(is_constant, t.inputs[0].inputs)):
        node = t.inputs[0]
        if stop is None or id(node) not in stop:
            nodes.append(node)
            return [leaf for i in node.inputs for leaf in _add_leaves(i, nodes, stop)]
    return [t]


def _linear_weight(node: Any) -> np.ndarray:
    """(out, in) weight of a bias-free MatMul / Gemm with an initializer operand."""
    if node.op == "MatMul":
        w = constant(node.inputs[1])
        if w is None or w.ndim != 2:
            raise _Miss(f"{node.name}: MatMul without a 2-D initializer weight")
        return w.T
    if node.op == "Gemm":
        w = constant(node.inputs[1])
        if w is None or len(node.inputs) > 2 or node.attrs.get("alpha", 1.0) != 1.0 \
                or node.attrs.get("transA", 0):
            raise _Miss(f"{node.name}: Gemm with a bias, a scale or no initializer weight")
        return w if node.attrs.get("transB", 0) else w.T
    raise _Miss(f"{node.name} is {node.op}, expected MatMul")


def _gelu_chain(out: Any, start: Any) -> list[Any]:
    """Nodes of an exact GELU from tensor `start` to tensor `out` (Gelu op or its Erf expansion)."""
    nodes, stack, seen = [], [out], set()
    while stack:
        t = stack.pop()
        if t is start or is_constant(t) or id(t) in seen:
            continue
        seen.add(id(t))
        node = _producer(t)
        nodes.append(node)
        if len(nodes) > 12:
            raise _Miss("more than a GELU between the two MatMuls")
        stack.extend(node.inputs)
    ops = {n.op for n in nodes}
    if ops - _GELU_OPS or not ({"Erf", "Gelu"} & ops) or any(
            n.op == "Gelu" and n.attrs.get("approximate", "none") != "none" for n in nodes):
        raise _Miss(f"the activation between the MatMuls ({', '.join(sorted(ops))}) is not the exact "
                    "(erf) GELU that the plugin implements")
    return nodes


def _branch_index(node: Any) -> int:
    """k of a node that picks branch k of (B, 3, C, ...) along axis 1."""
    if node.op == "Gather" and node.attrs.get("axis", 0) == 1:
        k = constant(node.inputs[1])
        if k is not None and k.size == 1:
            return int(k.reshape(-1)[0])
    if node.op == "Slice":
        vals = [constant(t) for t in node.inputs[1:4]]
        if all(v is not None and v.size == 1 for v in vals):
            start, end, axis = (int(v.reshape(-1)[0]) for v in vals)
            if axis == 1 and end == start + 1:
                return start
    raise _Miss(f"{node.name} ({node.op}) does not pick one branch along axis 1")


def _match_softmax(sm: Any) -> Match:
    if sm.attrs.get("axis", -1) != 1:
        raise _Miss("Softmax is not over axis 1")
    reshape = _producer(sm.inputs[0], "Reshape")
    mm2 = _producer(reshape.inputs[0], {"MatMul", "Gemm"})
    w2 = _linear_weight(mm2)
    act_out = mm2.inputs[0]
    gelu_nodes = None
    mm1 = None
    # Walk back through the activation to the first MatMul.
    for cand in _ancestors(act_out, depth=8):
        if cand.op in ("MatMul", "Gemm"):
            mm1 = cand
            gelu_nodes = _gelu_chain(act_out, cand.outputs[0])
            break
    if mm1 is None or gelu_nodes is None:
        raise _Miss("no MatMul before the activation")
    w1 = _linear_weight(mm1)
    c = w1.shape[0]
    if w1.shape != (c, c) or w2.shape != (3 * c, c):
        raise _Miss(f"weights {w1.shape} and {w2.shape} are not (C, C) and (3C, C)")
    _check_branch_reshape(reshape, c)
    red = _producer(mm1.inputs[0], "ReduceSum")
    axes = constant(red.inputs[1]) if len(red.inputs) > 1 else np.asarray(red.attrs.get("axes", []))
    if axes is None or sorted(int(a) % 4 for a in axes.reshape(-1)) != [2, 3] \
            or red.attrs.get("keepdims", 1) != 0:
        raise _Miss("ReduceSum is not a sum over H and W")
    sum_nodes: list[Any] = []
    summed = _add_leaves(red.inputs[0], sum_nodes)
    if len(summed) != 3:
        raise _Miss(f"the global sum adds {len(summed)} tensors, expected 3")

    # Forward from the softmax: views, then one picker per branch, each into Mul with x_k.
    view_nodes, t = [], sm.outputs[0]
    while len(t.outputs) == 1 and t.outputs[0].op in _VIEW_OPS:
        view_nodes.append(t.outputs[0])
        t = t.outputs[0].outputs[0]
    branches: dict[int, Any] = {}
    pick_nodes, mul_nodes = [], []
    for picker in t.outputs:
        k = _branch_index(picker)
        p_out = picker.outputs[0]
        while len(p_out.outputs) == 1 and p_out.outputs[0].op in _VIEW_OPS:
            pick_nodes.append(p_out.outputs[0])
            p_out = p_out.outputs[0].outputs[0]
        if len(p_out.outputs) != 1 or p_out.outputs[0].op != "Mul":
            raise _Miss("a branch weight is not multiplied with its branch")
        mul = p_out.outputs[0]
        others = [i for i in mul.inputs if i is not p_out]
        if len(others) != 1 or k in branches:
            raise _Miss("branch weights do not pair one-to-one with branches")
        branches[k] = others[0]
        pick_nodes.append(picker)
        mul_nodes.append(mul)
    if sorted(branches) != [0, 1, 2]:
        raise _Miss(f"found branch weights {sorted(branches)}, expected 0, 1, 2")
    xs = [branches[k] for k in range(3)]
    if {id(x) for x in xs} != {id(x) for x in summed}:
        raise _Miss("the weighted branches are not the ones summed for the attention")

    out = _weighted_sum_output(mul_nodes)
    out_nodes: list[Any] = []
    leaves = _add_leaves(out, out_nodes)
    if sorted(id(v) for v in leaves) != sorted(id(m.outputs[0]) for m in mul_nodes):
        raise _Miss("the weighted branches are not summed into one output")
    weight_nodes = [*sum_nodes, red, mm1, *gelu_nodes, mm2, reshape, sm]
    nodes = [*weight_nodes, *view_nodes, *pick_nodes, *mul_nodes, *out_nodes]
    match = Match(xs, out, w1.astype(np.float32), w2.astype(np.float32), nodes, weight_nodes)
    _check_closed(match)
    return match


def _check_branch_reshape(reshape: Any, c: int) -> None:
    """The softmax input must be (B, 3, C): branch-major, as the plugin's mlp2 rows are."""
    shape = reshape.outputs[0].shape
    target = constant(reshape.inputs[1])
    dims = list(shape)[1:] if shape is not None and len(shape) == 3 else \
        (target.reshape(-1).tolist()[1:] if target is not None and target.size == 3 else None)
    if dims != [3, c]:
        raise _Miss(f"the attention logits are reshaped to {dims}, expected (B, 3, {c})")


def _ancestors(t: Any, depth: int) -> list[Any]:
    """Producers of t and their producers (breadth first, nearest first)."""
    out, frontier = [], [t]
    for _ in range(depth):
        nxt = []
        for v in frontier:
            for node in v.inputs:
                out.append(node)
                nxt.extend(i for i in node.inputs if not is_constant(i))
        frontier = nxt
    return out


def _weighted_sum_output(muls: list[Any]) -> Any:
    """The tensor of the Add tree that consumes all three Mul outputs."""
    t = muls[0].outputs[0]
    while len(t.outputs) == 1 and t.outputs[0].op == "Add":
        t = t.outputs[0].outputs[0]
        leaves: list[Any] = []
        if len(_add_leaves(t, leaves)) == len(muls):
            return t
    raise _Miss("the weighted branches are not summed")


def _check_closed(m: Match) -> None:
    """Every tensor made inside the match, except its output, must be used only inside it."""
    inside = {id(n) for n in m.nodes}
    for node in m.nodes:
        for t in node.outputs:
            if t is m.output:
                continue
            if any(id(c) not in inside for c in t.outputs):
                raise _Miss(f"{t.name} is also used outside the split attention")


def find_split_attention(graph: Any) -> tuple[list[Match], list[str]]:
    """All split-attention subgraphs of a gs.Graph, and why the other Softmax nodes did not match."""
    matches, misses = [], []
    graph_outputs = {id(t) for t in graph.outputs}
    for node in [n for n in graph.nodes if n.op == "Softmax"]:
        try:
            m = _match_softmax(node)
        except _Miss as e:
            misses.append(f"{node.name}: {e}")
            continue
        if any(id(t) in graph_outputs for n in m.nodes for t in n.outputs if t is not m.output):
            misses.append(f"{node.name}: an inner tensor is a graph output")
            continue
        matches.append(m)
    return matches, misses


def _require_matches(graph: Any) -> list[Match]:
    matches, misses = find_split_attention(graph)
    if not matches:
        why = f" ({'; '.join(misses[:3])})" if misses else " (the graph has no Softmax)"
        raise NoMatchError(
            "no split-attention subgraph found in the ONNX graph, so the TensorRT flavour cannot use "
            f"the {OP_TYPE} plugin{why}; is this a YOLOv5-S2 model? Use --no-plugin to build the "
            "engine from the portable graph")
    return matches


def split_attention_nodes(model: onnx.ModelProto | gs.Graph) -> list[str]:
    """Names of the attention-weight nodes (sum, MLP, softmax) of every block in the graph."""
    matches, _ = find_split_attention(load(model))
    return [n.name for m in matches for n in m.weight_nodes]


def insert_plugin(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The TensorRT flavour of a portable graph, and how many blocks were replaced."""
    import onnx

    graph = load(model)
    matches = _require_matches(graph)
    for i, m in enumerate(matches):
        for node in m.nodes:
            node.outputs.clear()
        # TensorRT's parser finds the creator by op type + these two attributes, not the domain.
        attrs = {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION,
                 "channels": m.channels,
                 "mlp1_weight": m.mlp1_weight.reshape(-1).tolist(),
                 "mlp2_weight": m.mlp2_weight.reshape(-1).tolist()}
        add_node(graph, OP_TYPE, list(m.inputs), [m.output], name=f"{OP_TYPE}_{i}", attrs=attrs,
                 domain=OP_DOMAIN)
        log.debug("replaced split attention with %d channels by %s", m.channels, OP_TYPE)
    out = save(graph, like=model)
    if not any(o.domain == OP_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(OP_DOMAIN, OP_VERSION))
    return out, len(matches)
