"""Graph edits, one way: onnx-graphsurgeon, and the few lookups the FP16, Q/DQ and plugin passes share.

Every pass that changes a graph (export/fp16.py, export/surgery.py, calib/qdq.py) imports it with
`load`, edits tensors and nodes in place (a node's inputs and outputs are live lists: replacing one
rewires both ends), and writes it with `save`, where graphsurgeon's cleanup drops what no output
needs and toposort orders what was added. A pass that removes nodes mid-way (the Q/DQ passes, whose
next step counts a tensor's readers) calls `graph.cleanup()` itself. NVIDIA's ModelOpt inserts and
moves Q/DQ nodes the same way; ONNX Runtime's quantizer edits the protobuf with its own sweeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def load(model: onnx.ModelProto | gs.Graph) -> gs.Graph:
    """The graphsurgeon graph of a model (a graph is passed through, so one import serves many walks)."""
    import onnx_graphsurgeon as gs

    return model if isinstance(model, gs.Graph) else gs.import_onnx(model)


def save(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """The model of an edited graph: unused nodes and initializers dropped, nodes in topological order,
    and the model fields graphsurgeon does not carry (metadata, doc string) taken from `like`."""
    import onnx_graphsurgeon as gs

    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
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


def add_cast(graph: gs.Graph, t: gs.Tensor, elem_type: int, name: str) -> gs.Variable:
    """A new Cast node named `name` from t to `elem_type`; its output tensor, also named `name`
    (a tensor, not a string: `graph.layer` would number a string output's name)."""
    import onnx_graphsurgeon as gs

    return graph.layer(op="Cast", name=name, inputs=[t], outputs=[gs.Variable(name)],
                       attrs={"to": elem_type})[0]


def name_unnamed(graph: gs.Graph) -> None:
    """Give each unnamed node a unique name `<op>_<index>`: passes and tools select nodes by name."""
    used = {n.name for n in graph.nodes if n.name}
    for k, n in enumerate(graph.nodes):
        if not n.name:
            name = f"{n.op}_{k}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)

