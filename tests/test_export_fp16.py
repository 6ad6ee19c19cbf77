"""FP16 graphs: FP16 weights and compute, FP32 I/O, sensitive parts FP32, parity within FP16_TOL."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from test_export_graph import loaded_model

from s2trt.export import onnx_export, parity
from s2trt.export.fp16 import FP16_TOL, decode_nodes, to_fp16
from s2trt.export.plugin_reference import OP_TYPE
from s2trt.export.surgery import insert_plugin

F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
IMGSZ = [160, 160]


@pytest.fixture(scope="module")
def case():
    lm = loaded_model("yolov5n-s2", seed=1)
    fp32 = onnx_export.export_portable(lm, IMGSZ, batch=None)
    x, _ = parity.sample_input(IMGSZ, 2)
    with torch.no_grad():
        ref = lm.model(torch.from_numpy(x)).numpy()
    return fp32, to_fp16(fp32), x, ref


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}


def test_io_stays_fp32_and_weights_become_fp16(case):
    _, fp16, _, _ = case
    assert fp16.graph.input[0].type.tensor_type.elem_type == F32
    assert fp16.graph.output[0].type.tensor_type.elem_type == F32
    conv_weights = {n.input[1] for n in fp16.graph.node if n.op_type == "Conv"}
    dtypes = {i.data_type for i in fp16.graph.initializer if i.name in conv_weights}
    assert dtypes == {F16}


def test_sensitive_nodes_compute_in_fp32(case):
    fp32, fp16, _, _ = case
    types = _types(fp16)
    by_op = {}
    for n in fp16.graph.node:
        by_op.setdefault(n.op_type, []).append(types.get(n.output[0]))
    assert set(by_op["Softmax"]) == {F32} and set(by_op["ReduceSum"]) == {F32}
    assert set(by_op["MatMul"]) == {F32} and set(by_op["Erf"]) == {F32}
    # The Detect decode (Sigmoid, grid add, anchor Pow) after the last convolutions stays FP32 ...
    decode = set(decode_nodes(fp32))
    assert decode and all(types.get(n.output[0]) != F16 for n in fp16.graph.node if n.name in decode)
    assert any(types.get(n.output[0]) == F32 for n in fp16.graph.node if n.op_type == "Pow")
    # ... while the backbone convolutions run in FP16.
    convs = [types.get(n.output[0]) for n in fp16.graph.node if n.op_type == "Conv"]
    assert convs.count(F16) >= len(convs) - 3


def test_fp16_parity_within_the_stated_tolerance(case):
    _, fp16, x, ref = case
    p = parity.compare("fp16", parity.run_ort(fp16, x)[0], ref, FP16_TOL, "t")
    assert p.ok, p.line()
    assert p.rel > 1e-5  # it really ran in FP16


def test_fp16_tensorrt_flavour_matches_pytorch(case):
    fp32, _, x, ref = case
    trt16 = to_fp16(insert_plugin(fp32)[0])
    node = next(n for n in trt16.graph.node if n.op_type == OP_TYPE)
    assert _types(trt16)[node.input[0]] == F16  # the plugin gets FP16 branches (it accumulates in FP32)
    # Under onnx.reference (slow in FP16, so one small image) and the faster ORT + NumPy evaluation.
    out = parity.run_reference(trt16, x[:1])[0]
    assert parity.compare("ref", out, ref[:1], FP16_TOL, "t").ok
    fast = parity.run_ort_with_plugin(trt16, x)[0]
    assert parity.compare("fast", fast, ref, FP16_TOL, "t").ok
    np.testing.assert_allclose(fast[:1, :, 4:], out[:, :, 4:], rtol=0, atol=5e-3)


def test_fp16_parity_of_the_trained_demo_model_at_640():
    """Trained weights have larger activations than random ones: the tolerance must hold for them,
    and an FP16 export must not change what is detected."""
    from pathlib import Path

    from s2trt.models import load_checkpoint
    from s2trt.runtime.postprocess import non_max_suppression

    demo = Path(__file__).resolve().parents[1] / "demo" / "assets" / "demo.pt"
    lm = load_checkpoint(demo)
    fp16 = to_fp16(onnx_export.export_portable(lm, [640, 640], batch=1))
    x, _ = parity.sample_input([640, 640], 1)
    ref = parity.run_torch(lm.model, x)
    out = parity.run_ort(fp16, x)[0]
    p = parity.compare("fp16", out, ref, FP16_TOL, "demo")
    assert p.ok, p.line()
    a, b = non_max_suppression(out)[0], non_max_suppression(ref)[0]
    assert len(a) == len(b) > 0 and (a[:, 5] == b[:, 5]).all()
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1.0)  # boxes within a pixel at 640
