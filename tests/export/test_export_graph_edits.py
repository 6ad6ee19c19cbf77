"""export/graph.py, the one way graphs are edited: nodes added under exactly the names given, and every
node left with a name of its own."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from s2trt.export.graph import add_node, name_unnamed, save


def relu_chain(names: list[str]) -> gs.Graph:
    x = gs.Variable("x", np.float32, [2])
    graph = gs.Graph(inputs=[x], opset=17)
    t = x
    for k, name in enumerate(names):
        t = add_node(graph, "Relu", [t], [f"t{k}"], name=name)[0]
    t.dtype = np.float32
    graph.outputs = [t]
    return graph


def test_add_node_keeps_the_names_given_and_runs():
    graph = relu_chain(["first", ""])
    scale = gs.Constant("scale", np.array([3.0, 4.0], np.float32))
    y = add_node(graph, "Mul", [graph.outputs[0], scale], ["y"], name="mul", attrs={})[0]
    y.dtype = np.float32
    graph.outputs = [y]
    model = save(graph)
    assert [(n.name, list(n.output)) for n in model.graph.node] == [("first", ["t0"]), ("", ["t1"]),
                                                                     ("mul", ["y"])]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(["y"], {"x": np.array([-1.0, 2.0], np.float32)})[0]
    np.testing.assert_array_equal(out, [0.0, 8.0])


def test_name_unnamed_gives_every_node_a_name_of_its_own():
    # Unnamed nodes and a repeated name get <op>_<index>; one that is already taken gets a suffix.
    graph = relu_chain(["", "a", "a", "Relu_4", ""])
    name_unnamed(graph)
    assert [n.name for n in graph.nodes] == ["Relu_0", "a", "Relu_2", "Relu_4", "Relu_4_"]


def test_name_unnamed_leaves_unique_names_alone():
    graph = relu_chain(["p", "q", "r"])
    name_unnamed(graph)
    assert [n.name for n in graph.nodes] == ["p", "q", "r"]
