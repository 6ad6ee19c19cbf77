"""TensorRT flavour: the split-attention subgraph becomes one S2SplitAttention node, checked under
onnx.reference with the plugin's NumPy implementation, in any width; graphs without it are refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from export_helpers import loaded_model

from s2trt.export import onnx_export, parity
from s2trt.export.plugin_reference import OP_DOMAIN, OP_TYPE
from s2trt.export.surgery import NoMatchError, find_split_attention, insert_plugin, split_attention_nodes


def _attrs(model: onnx.ModelProto) -> dict:
    node = next(n for n in model.graph.node if n.op_type == OP_TYPE)
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def n_case():
    lm = loaded_model("yolov5n-s2")
    return lm, onnx_export.export_portable(lm, [160, 128], batch=None)


def test_plugin_graph_matches_portable_under_onnx_reference(n_case):
    lm, portable = n_case
    trt, blocks = insert_plugin(portable)
    assert blocks == 1
    ops = onnx_export.op_counts(trt)
    assert ops[OP_TYPE] == 1
    assert not {"Softmax", "ReduceSum", "Erf", "MatMul"} & set(ops)
    assert any(o.domain == OP_DOMAIN for o in trt.opset_import)
    onnx.checker.check_model(trt)

    x, _ = parity.sample_input([160, 128], 2)
    out = parity.run_reference(trt, x)[0]
    ref = parity.run_ort(portable, x)[0]
    assert parity.compare("ref", out, ref, parity.FP32_TOL, "t").ok
    with torch.no_grad():
        assert parity.compare("torch", out, lm.model(torch.from_numpy(x)).numpy(), parity.FP32_TOL, "t").ok
    # The faster ONNX Runtime + NumPy-plugin evaluation used at export agrees with onnx.reference.
    np.testing.assert_allclose(parity.run_ort_with_plugin(trt, x)[0], out, rtol=0, atol=1e-3)


def test_attributes_are_the_module_weights_in_plugin_layout(n_case):
    lm, portable = n_case
    attrs = _attrs(insert_plugin(portable)[0])
    sa = lm.model.model[24].split_attention
    c = sa.mlp1.weight.shape[0]
    assert attrs["channels"] == c == 256  # 1024 x width 0.25
    # What TensorRT's ONNX parser looks the creator up by (the domain is not used for that).
    assert attrs["plugin_namespace"] == b"s2trt" and attrs["plugin_version"] == b"1"
    np.testing.assert_array_equal(np.float32(attrs["mlp1_weight"]), sa.mlp1.weight.detach().numpy().ravel())
    np.testing.assert_array_equal(np.float32(attrs["mlp2_weight"]), sa.mlp2.weight.detach().numpy().ravel())


@pytest.mark.parametrize("width", [0.25, 0.5, 0.75])
def test_matcher_finds_the_block_in_any_width(width):
    lm = loaded_model("yolov5s-s2", width_multiple=width, nc=3)
    portable = onnx_export.export_portable(lm, [64, 96], batch=1)
    trt, blocks = insert_plugin(portable)
    c = lm.model.model[24].split_attention.channel
    assert blocks == 1 and _attrs(trt)["channels"] == c == int(1024 * width)
    x, _ = parity.sample_input([64, 96], 1)
    p = parity.compare("w", parity.run_reference(trt, x)[0], parity.run_ort(portable, x)[0],
                       parity.FP32_TOL, "t")
    assert p.ok, p.line()


def test_matcher_survives_onnxslim_rewrites(n_case):
    import onnxslim

    _, portable = n_case
    slim = onnxslim.slim(portable)
    assert insert_plugin(slim)[1] == 1


def test_plain_yolov5s_is_refused_with_a_clear_message():
    lm = loaded_model("yolov5s", nc=3, width_multiple=0.25)
    portable = onnx_export.export_portable(lm, [64, 64], batch=1)  # the portable flavour still exports
    with pytest.raises(NoMatchError, match=r"no split-attention subgraph.*--no-plugin"):
        insert_plugin(portable)


def _mutated(portable: onnx.ModelProto, edit) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(portable.SerializeToString())
    edit(model)
    return model


def test_tanh_gelu_is_not_mistaken_for_the_exact_one(n_case):
    _, portable = n_case

    def tanh(model):
        next(n for n in model.graph.node if n.op_type == "Erf").op_type = "Tanh"

    with pytest.raises(NoMatchError, match="exact"):
        insert_plugin(_mutated(portable, tanh))


def test_inner_tensor_used_elsewhere_is_refused(n_case):
    _, portable = n_case

    def expose_softmax(model):
        sm = next(n for n in model.graph.node if n.op_type == "Softmax")
        model.graph.output.append(onnx.helper.make_tensor_value_info(sm.output[0], onnx.TensorProto.FLOAT,
                                                                     None))

    with pytest.raises(NoMatchError, match="graph output"):
        insert_plugin(_mutated(portable, expose_softmax))


def test_weight_path_nodes_are_listed_for_fp16(n_case):
    import onnx_graphsurgeon as gs

    _, portable = n_case
    names = set(split_attention_nodes(portable))
    ops = {n.op_type for n in portable.graph.node if n.name in names}
    assert {"ReduceSum", "MatMul", "Erf", "Softmax"} <= ops and "Conv" not in ops
    matches, _ = find_split_attention(gs.import_onnx(portable))
    assert len(matches) == 1 and len(matches[0].inputs) == 3


@pytest.mark.parametrize(("opset", "activation"), [(18, "Erf"), (20, "Gelu")])
def test_matcher_follows_the_opset(opset, activation):
    """Opset 20 writes GELU as one Gelu op instead of the Erf expansion; both are found."""
    lm = loaded_model("yolov5n-s2", nc=2)
    portable = onnx_export.export_portable(lm, [64, 64], batch=1, opset=opset)
    assert activation in onnx_export.op_counts(portable)
    trt, blocks = insert_plugin(portable)
    x, _ = parity.sample_input([64, 64], 1)
    p = parity.compare("o", parity.run_reference(trt, x)[0], parity.run_ort(portable, x)[0],
                       parity.FP32_TOL, "t")
    assert blocks == 1 and p.ok, p.line()


def test_channel_major_logits_are_refused():
    """Softmax over axis 1 of (B, C, 3) is another computation: the plugin's layout is (B, 3, C)."""
    from onnx import numpy_helper

    lm = loaded_model("yolov5n-s2", nc=2)
    portable = onnx_export.export_portable(lm, [64, 64], batch=1)
    sm = next(n for n in portable.graph.node if n.op_type == "Softmax")
    reshape = next(n for n in portable.graph.node if sm.input[0] in n.output)
    init = next(i for i in portable.graph.initializer if i.name == reshape.input[1])
    b, three, c = numpy_helper.to_array(init).tolist()
    assert three == 3
    init.CopyFrom(numpy_helper.from_array(np.array([b, c, 3], np.int64), init.name))
    kept = [v for v in portable.graph.value_info if v.name != reshape.output[0]]
    del portable.graph.value_info[:]
    portable.graph.value_info.extend(kept)
    with pytest.raises(NoMatchError, match="reshaped to"):
        insert_plugin(portable)
