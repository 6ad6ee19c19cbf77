"""The portable ONNX graph: op set, parity with PyTorch, dynamic batch, metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import loaded_model

from s2trt.errors import S2Error
from s2trt.export import onnx_export, parity
from s2trt.meta import ModelMeta
from s2trt.models import LoadedModel

IMGSZ = [160, 192]  # not square: catches h/w mix-ups in the shifts and the grid


@pytest.fixture(scope="module")
def n_model() -> LoadedModel:
    return loaded_model()


@pytest.fixture(scope="module")
def dynamic_graph(n_model):
    return onnx_export.export_portable(n_model, IMGSZ, batch=None)


def test_graph_has_no_scatter_or_indexing_chains(dynamic_graph):
    ops = onnx_export.op_counts(dynamic_graph)
    assert not set(ops) & onnx_export.FORBIDDEN_OPS, ops
    # The shifts are Slice + Concat: 2 shifts x 4 quarters x 2 slices, plus the 3-way channel split.
    assert ops["Slice"] >= 16 and ops["Concat"] >= 8
    # Only the batch dimension is computed at run time; H, W and the Detect grid are folded.
    assert ops.get("Shape", 0) <= 4 and "Range" not in ops
    assert all(n.domain in ("", "ai.onnx") for n in dynamic_graph.graph.node)


def test_check_op_set_refuses_scatternd(dynamic_graph):
    import onnx

    bad = onnx.ModelProto.FromString(dynamic_graph.SerializeToString())
    bad.graph.node[0].op_type = "ScatterND"
    with pytest.raises(S2Error, match="ScatterND"):
        onnx_export.check_op_set(bad)


@pytest.mark.parametrize("batch", [1, 4])
def test_dynamic_batch_matches_pytorch(n_model, dynamic_graph, batch):
    x, _ = parity.sample_input(IMGSZ, batch)
    out = parity.run_ort(dynamic_graph, x)[0]
    with torch.no_grad():
        ref = n_model.model(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (batch, 3 * (20 * 24 + 10 * 12 + 5 * 6), 85)
    p = parity.compare("ort", out, ref, parity.FP32_TOL, "t")
    assert p.ok, p.line()
    # Items of a batch are independent: item 0 alone gives the same answer.
    alone = parity.run_ort(dynamic_graph, x[:1])[0]
    np.testing.assert_allclose(out[:1], alone, rtol=0, atol=1e-4)


def test_fixed_batch_graph_has_that_batch(n_model):
    model = onnx_export.export_portable(n_model, [128, 128], batch=2)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 128, 128]
    x, _ = parity.sample_input([128, 128], 2)
    assert parity.run_ort(model, x)[0].shape[0] == 2


def test_compare_scales_boxes_and_scores_separately():
    ref = np.zeros((1, 2, 7), np.float32)
    ref[..., :4], ref[..., 4:] = 600.0, 0.5
    out = ref.copy()
    out[0, 0, 0] += 0.03  # 5e-5 of the box scale: fine
    assert parity.compare("t", out, ref, 1e-4, "s").ok
    out[0, 0, 5] += 0.001  # 2e-3 of the score scale: a real error that a box scale would hide
    assert not parity.compare("t", out, ref, 1e-4, "s").ok
    out[0, 0, 5] = np.nan
    assert not parity.compare("t", out, ref, 1e-4, "s").ok


@pytest.mark.parametrize("imgsz", [[100], [160, 170], [0]])
def test_imgsz_must_be_a_multiple_of_the_stride(imgsz):
    with pytest.raises(S2Error, match="multiple of the model stride 32"):
        onnx_export.check_imgsz(imgsz, 32)


def test_imgsz_one_or_two_values():
    assert onnx_export.check_imgsz([320], 32) == [320, 320]
    assert onnx_export.check_imgsz([320, 640], 32) == [320, 640]
    with pytest.raises(S2Error, match="one or two"):
        onnx_export.check_imgsz([320, 320, 320], 32)


def test_opset_below_17_is_refused(n_model):
    with pytest.raises(S2Error, match="opset 16 is too old"):
        onnx_export.torch_to_onnx(n_model, [64, 64], 1, opset=16)


def test_metadata_round_trips(dynamic_graph):
    import onnx

    model = onnx.ModelProto.FromString(dynamic_graph.SerializeToString())
    meta = ModelMeta(names=["a", "b"], imgsz=IMGSZ, batch="dynamic", versions=onnx_export.versions())
    onnx_export.set_metadata(model, meta)
    props = {p.key: p.value for p in model.metadata_props}
    back = ModelMeta.from_props(props)
    assert back.names == ["a", "b"] and back.imgsz == IMGSZ and back.batch == "dynamic"
    assert "torch" in back.versions and "onnx" in back.versions


def test_reference_run_shows_users_no_overflow_warning():
    """onnx.reference's Sigmoid overflows on large negative logits (to the right answer); the export's
    --full-reference check must not print that RuntimeWarning to users."""
    import warnings

    import onnx
    from onnx import TensorProto, helper

    from s2trt.export.parity import run_reference

    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (y,) = run_reference(model, np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32))
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]])


def test_folding_leaves_every_node_a_name_of_its_own():
    """The FP16 converter's block list names nodes: an unnamed or repeated name would be ambiguous."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"], name="n"),
             helper.make_node("Neg", ["b"], ["y"], name="n")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    folded = onnx_export.fold_constants(model)
    assert [n.name for n in folded.graph.node] == ["Neg_0", "n", "Neg_2"]
    out = parity.run_ort(folded, np.array([[-1.0, 2.0]], np.float32))[0]
    np.testing.assert_array_equal(out, [[-1.0, 0.0]])
