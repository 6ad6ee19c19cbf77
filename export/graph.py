"""Graph edits, one way: onnx-graphsurgeon, and the few lookups the FP16, Q/DQ and plugin passes share.

Every pass that changes a graph (export/fp16.py, export/surgery.py, export/nms.py, calib/qdq.py,
and export/parity.py's evaluation graphs) imports it with `load`, edits tensors and nodes in place
(a node's inputs and outputs are live lists: replacing one rewires both ends), adds nodes with
`add_node`, and writes it with `save`, where graphsurgeon's cleanup drops what no output needs and
toposort orders what was added. A pass that removes nodes mid-way (the Q/DQ passes, whose next step
counts a tensor's readers) calls `graph.cleanup()` itself. NVIDIA's ModelOpt inserts and moves Q/DQ
nodes the same way; ONNX Runtime's quantizer edits the protobuf with its own sweeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def load(model: onnx.ModelProto | gs.Graph) -> gs.Graph:
    """The graphsurgeon graph of a model (a graph is passed through, so one import serves many walks)."""
    import onnx_graphsurgeon as gs

    return model if isinstance(model, gs.Graph) else gs.import_onnx(model)


def save(graph: gs.Graph, like: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The model of an edited graph: unused nodes and initializers dropped, nodes in topological order,
    and the model fields graphsurgeon does not carry (metadata, doc string) taken from `like`, the
    model the graph was loaded from (None for a graph built from nothing)."""
    import onnx_graphsurgeon as gs

    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    if like is not None:
        out.metadata_props.extend(like.metadata_props)
        out.doc_string, out.domain, out.model_version = like.doc_string, like.domain, like.model_version
    return out


def producer(t: gs.Tensor) -> gs.Node | None:
    """The node that writes tensor t; None for graph inputs and initializers."""
    return t.inputs[0] if len(t.inputs) == 1 else None


def constant(t: gs.Tensor) -> np.ndarray | None:
    """The value of an initializer, None for a computed tensor."""
    import numpy as np
    import onnx_graphsurgeon as gs

    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def is_constant(t: gs.Tensor) -> bool:
    import onnx_graphsurgeon as gs

    return isinstance(t, gs.Constant)


def is_cast_to(node: gs.Node | None, elem_type: int) -> bool:
    """Whether node is a Cast to the ONNX element type `elem_type` (TensorProto.FLOAT16, ...)."""
    return node is not None and node.op == "Cast" and node.attrs.get("to") == elem_type


def qdq_source(t: gs.Tensor) -> tuple[gs.Node, gs.Node] | None:
    """(Q, DQ) when t is the DequantizeLinear output of a quantized activation (not a weight)."""
    dq = producer(t)
    if dq is None or dq.op != "DequantizeLinear":
        return None
    q = producer(dq.inputs[0])
    if q is None or q.op != "QuantizeLinear" or is_constant(q.inputs[0]):
        return None
    return q, dq


def replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    """Make node read `new` wherever it reads `old`."""
    for k, t in enumerate(node.inputs):
        if t is old:
            node.inputs[k] = new


def add_node(graph: gs.Graph, op: str, inputs: Sequence[gs.Tensor], outputs: Sequence[gs.Tensor | str],
             name: str = "", attrs: dict[str, Any] | None = None, domain: str | None = None
             ) -> list[gs.Tensor]:
    """A new node of `op` reading `inputs` and writing `outputs`, tensors or the names of new ones; its
    output tensors. Names are kept as given and an unnamed node stays unnamed: `graph.layer` would
    number a string output's name and name the node, and it walks every tensor of the graph per call.
    An output tensor must have no producer yet (replace it in its old node's outputs first)."""
    import onnx_graphsurgeon as gs

    outs = [gs.Variable(t) if isinstance(t, str) else t for t in outputs]
    node = gs.Node(op, name=name, attrs=attrs, inputs=list(inputs), outputs=outs, domain=domain)
    graph.nodes.append(node)
    return list(node.outputs)


def add_cast(graph: gs.Graph, t: gs.Tensor, elem_type: int, name: str) -> gs.Variable:
    """A new Cast node named `name` from t to `elem_type`; its output tensor, also named `name`."""
    return add_node(graph, "Cast", [t], [name], name=name, attrs={"to": elem_type})[0]


def name_unnamed(graph: gs.Graph) -> None:
    """Give each unnamed node, and each node whose name an earlier node has, a unique name
    `<op>_<index>`: passes and tools select nodes by name, so a name must stand for one node."""
    used = {n.name for n in graph.nodes if n.name}
    seen: set[str] = set()
    for k, n in enumerate(graph.nodes):
        if n.name and n.name not in seen:
            seen.add(n.name)
            continue
        name = f"{n.op}_{k}"
        while name in used:
            name += "_"
        n.name = name
        used.add(name)
        seen.add(name)

