"""FP16 graphs: FP16 weights and compute, FP32 I/O, contiguous FP32 islands, parity within FP16_TOL.

The island contract comes from TensorRT's strongly typed mode, which keeps every Cast of the graph:
"TensorRT ... will not automatically insert or remove casts" and "the types of tensors ... are
inferred from the types of network inputs and the operator specifications" (TensorRT developer guide,
"Strongly Typed Networks"; NetworkDefinitionCreationFlag::kSTRONGLY_TYPED in NvInfer.h of 10.3,
10.16 and 11.1). A Cast(->FP16) -> Cast(->FP32) pair between two FP32 nodes therefore rounds the
tensor to FP16 on the GPU exactly as in the graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from export_helpers import F16, F32, cast_to, island_violations, loaded_model, tensor_types
from onnx import helper
from paths import DEMO_ASSETS
from yolov5_fake import make_yolov5_checkpoint

from s2trt.export import onnx_export, parity
from s2trt.export.cli import main
from s2trt.export.fp16 import FP16_TOL, decode_nodes, to_fp16
from s2trt.export.plugin_reference import OP_TYPE
from s2trt.export.surgery import insert_plugin

IMGSZ = [160, 160]


@pytest.fixture(scope="module")
def case():
    lm = loaded_model("yolov5n-s2", seed=1)
    fp32 = onnx_export.export_portable(lm, IMGSZ, batch=None)
    x, _ = parity.sample_input(IMGSZ, 2)
    with torch.no_grad():
        ref = lm.model(torch.from_numpy(x)).numpy()
    return fp32, to_fp16(fp32), x, ref


def attention_violations(model: onnx.ModelProto) -> list[str]:
    """The split attention's global sum, MLP and softmax in FP32 without a Cast between them."""
    types = tensor_types(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    plugins = [n for n in model.graph.node if n.op_type == OP_TYPE]
    if plugins:  # the plugin does the sum, MLP and softmax in FP32 itself
        return []
    bad = []
    sm = next(n for n in model.graph.node if n.op_type == "Softmax")
    node, seen = sm, []
    while node.op_type != "ReduceSum":
        seen.append(node)
        node = producer[node.input[0]]
    seen.append(node)
    add = producer[node.input[0]]  # the sum of the three branches
    seen.append(add)
    for n in seen:
        if n.op_type == "Cast" or types.get(n.output[0]) != F32:
            bad.append(f"{n.name} ({n.op_type}) on the attention weight path is not FP32")
    return bad


@pytest.fixture(scope="module")
def exported_fp16(tmp_path_factory):
    """The FP16 files s2export writes: static and dynamic batch, with and without in-graph NMS."""
    tmp = tmp_path_factory.mktemp("fp16")
    ckpt = make_yolov5_checkpoint(tmp, cfg="yolov5n-s2", nc=3, half=True)
    files = {}
    for tag, extra in (("static", []), ("dynamic-nms", ["--dynamic", "--nms"])):
        out = tmp / tag
        out.mkdir()
        assert main([str(ckpt), "--imgsz", "96", "--fp16", "--onnx-only", "-o", str(out), "-q",
                     *extra]) == 0
        files[f"portable {tag}"] = onnx.load(str(out / f"{ckpt.stem}-fp16.onnx"))
        files[f"tensorrt {tag}"] = onnx.load(str(out / f"{ckpt.stem}-fp16.trt.onnx"))
    return files


@pytest.mark.parametrize("flavour", ["portable static", "tensorrt static", "portable dynamic-nms",
                                     "tensorrt dynamic-nms"])
def test_every_fp16_flavour_has_contiguous_fp32_islands(exported_fp16, flavour):
    model = exported_fp16[flavour]
    assert island_violations(model) == []
    assert attention_violations(model) == []
    types = tensor_types(model)
    convs = [types[n.output[0]] for n in model.graph.node if n.op_type == "Conv"]
    assert convs and convs.count(F16) >= len(convs) - 3  # the backbone really is FP16
    for out in model.graph.output:  # outputs as the FP32 graph has them (NMS: int32 counts/classes)
        assert out.type.tensor_type.elem_type in (F32, onnx.TensorProto.INT32)


def test_io_stays_fp32_and_weights_become_fp16(case):
    _, fp16, _, _ = case
    assert fp16.graph.input[0].type.tensor_type.elem_type == F32
    assert fp16.graph.output[0].type.tensor_type.elem_type == F32
    conv_weights = {n.input[1] for n in fp16.graph.node if n.op_type == "Conv"}
    dtypes = {i.data_type for i in fp16.graph.initializer if i.name in conv_weights}
    assert dtypes == {F16}


def test_sensitive_nodes_compute_in_fp32(case):
    fp32, fp16, _, _ = case
    types = tensor_types(fp16)
    by_op = {}
    for n in fp16.graph.node:
        by_op.setdefault(n.op_type, []).append(types.get(n.output[0]))
    assert set(by_op["Softmax"]) == {F32} and set(by_op["ReduceSum"]) == {F32}
    assert set(by_op["MatMul"]) == {F32} and set(by_op["Erf"]) == {F32}
    decode = set(decode_nodes(fp32))
    assert decode and all(types.get(n.output[0]) != F16 for n in fp16.graph.node if n.name in decode)
    # One Cast per region border: 3 Detect heads in, 3 attention branches in, 3 branch weights out.
    assert sum(n.op_type == "Cast" for n in fp16.graph.node) <= 12


def test_box_values_are_not_rounded_to_fp16(case):
    """The decode runs in FP32: box values are not all FP16-representable (they were when the
    output passed through FP16), and boxes stay within 0.05 px of the FP32 graph."""
    fp32, fp16, x, _ = case
    want = parity.run_ort(fp32, x)[0]
    got = parity.run_ort(parity.fp16_storage(fp16), x)[0]
    boxes = got[..., :4]
    assert np.mean(boxes.astype(np.float16).astype(np.float32) == boxes) < 0.5
    assert np.abs(boxes - want[..., :4]).max() <= 0.05


def test_fp16_storage_rounds_every_fp16_tensor():
    """ONNX Runtime's CPU runs FP16 Convs in FP32 and drops the Casts it adds around them; the
    emulation graph must round each FP16 tensor the way TensorRT stores it."""
    x = np.array([[[[1.0001]], [[3.14159]]]], np.float32)
    w = onnx.numpy_helper.from_array(np.eye(2, dtype=np.float16).reshape(2, 2, 1, 1), "w")
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=F16), helper.make_node("Conv", ["h", "w"], ["c"]),
         helper.make_node("Cast", ["c"], ["y"], to=F32)], "g",
        [helper.make_tensor_value_info("x", F32, [1, 2, 1, 1])],
        [helper.make_tensor_value_info("y", F32, [1, 2, 1, 1])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    got = parity.run_ort(parity.fp16_storage(model), x)[0]
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32))


def test_qdq_nodes_and_scales_stay_as_they_are():
    """calib's mixed INT8+FP16 graph: Q/DQ and their FP32 scales untouched (opset 17 allows no
    other scale type: QuantizeLinear-13 / DequantizeLinear-13 in the ONNX operator spec), DQ outputs
    cast once for the FP16 compute, results close to the FP32 graph."""
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.02), "s"), numpy_helper.from_array(np.int8(0), "z"),
             numpy_helper.from_array(rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.float32(0.01), "ws"),
             numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "z"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s1"]),
             helper.make_node("Conv", ["s1", "w2"], ["y"])]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", F32, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", F32, [1, 4, 8, 8])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out = to_fp16(model)
    onnx.checker.check_model(out, full_check=True)
    scales = {i.name: i.data_type for i in out.graph.initializer}
    assert scales["s"] == F32 and scales["ws"] == F32 and scales["wq"] == onnx.TensorProto.INT8
    assert [n.op_type for n in out.graph.node].count("DequantizeLinear") == 2
    casts = [n for n in out.graph.node if n.op_type == "Cast"]
    assert sorted(n.input[0] for n in casts if cast_to(n) == F16) == ["wd", "xd"]
    assert island_violations_basic(out) == []
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(parity.run_ort(parity.fp16_storage(out), x)[0], parity.run_ort(model, x)[0],
                               atol=2e-2, rtol=2e-2)


def test_a_sum_that_feeds_a_reduction_is_added_in_fp32():
    """In a Q/DQ graph the attention block no longer matches as a whole; its global sum still must
    not add FP16 terms (3*H*W of them can pass FP16's 65504): the Add feeding the ReduceSum and the
    reduction are FP32, with no Cast between them."""
    from onnx import numpy_helper

    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Conv", ["a", "w"], ["b"]),
             helper.make_node("QuantizeLinear", ["a", "s", "z"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["ad"]),
             helper.make_node("Add", ["ad", "b"], ["sum"]),
             helper.make_node("ReduceSum", ["sum", "axes"], ["y"], keepdims=0)]
    g = helper.make_graph(nodes, "sum", [helper.make_tensor_value_info("x", F32, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", F32, [1, 4])], inits)
    out = to_fp16(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    types = tensor_types(out)
    producer = {o: n for n in out.graph.node for o in n.output}
    reduce = next(n for n in out.graph.node if n.op_type == "ReduceSum")
    assert producer[reduce.input[0]].op_type == "Add" and types[reduce.input[0]] == F32
    assert types["b"] == F16  # the convolutions stay FP16


def island_violations_basic(model: onnx.ModelProto) -> list[str]:
    """Cast chains and FP16 graph I/O only (for graphs without a Detect head)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    bad = [f"{n.name} casts a Cast" for n in model.graph.node if n.op_type == "Cast"
           and producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "Cast"]
    return bad + [v.name for v in [*model.graph.input, *model.graph.output]
                  if v.type.tensor_type.elem_type == F16]


def test_fp16_parity_within_the_stated_tolerance(case):
    _, fp16, x, ref = case
    p = parity.compare("fp16", parity.run_ort(parity.fp16_storage(fp16), x)[0], ref, FP16_TOL, "t")
    assert p.ok, p.line()
    assert p.rel > 1e-5  # it really ran in FP16


def test_fp16_tensorrt_flavour_matches_pytorch(case):
    fp32, _, x, ref = case
    trt16 = to_fp16(insert_plugin(fp32)[0])
    node = next(n for n in trt16.graph.node if n.op_type == OP_TYPE)
    assert tensor_types(trt16)[node.input[0]] == F16  # the plugin gets FP16 branches (it accumulates in FP32)
    # Under onnx.reference (slow in FP16, so one small image) and the faster ORT + NumPy evaluation.
    out = parity.run_reference(trt16, x[:1])[0]
    assert parity.compare("ref", out, ref[:1], FP16_TOL, "t").ok
    fast = parity.run_ort_with_plugin(parity.fp16_storage(trt16), x)[0]
    assert parity.compare("fast", fast, ref, FP16_TOL, "t").ok
    np.testing.assert_allclose(fast[:1, :, 4:], out[:, :, 4:], rtol=0, atol=5e-3)


def test_fp16_parity_of_the_trained_demo_model_at_640():
    """Trained weights have larger activations than random ones: the tolerance must hold for them,
    and an FP16 export must not change what is detected."""

    from s2trt.detect.boxes import non_max_suppression
    from s2trt.models import load_checkpoint

    demo = DEMO_ASSETS / "demo.pt"
    lm = load_checkpoint(demo)
    fp16 = to_fp16(onnx_export.export_portable(lm, [640, 640], batch=1))
    assert island_violations(fp16) == []
    x, _ = parity.sample_input([640, 640], 1)
    ref = parity.run_torch(lm.model, x)
    out = parity.run_ort(parity.fp16_storage(fp16), x)[0]
    p = parity.compare("fp16", out, ref, FP16_TOL, "demo")
    assert p.ok, p.line()
    a, b = non_max_suppression(out)[0], non_max_suppression(ref)[0]
    assert len(a) == len(b) > 0 and (a[:, 5] == b[:, 5]).all()
    # The decode in FP32 keeps detected boxes within 0.1 px at 640 (0.05 measured; 0.18 when the
    # decode's inputs were rounded to FP16 at each node).
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=0.1)
