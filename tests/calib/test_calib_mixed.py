"""INT8+FP16 for strongly typed TensorRT: Q/DQ where quantized, FP16 elsewhere, FP32 islands.

TensorRT types a Q/DQ pair by its scale: 10.3 NvInfer.h, IQuantizeLayer (line 5345): "For strongly
typed networks, input data type must match the scale data type"; IDequantizeLayer (line 5476): "output
data type is inferred from scale data type"; 11.1 NvInfer.h line 5367: an FP16 scale "must match the
input data type". ONNX's QuantizeLinear/DequantizeLinear take FP16 inputs and scales from opset 19.
So FP16 compute around a pair needs FP16 scales there, not Casts (a strongly typed builder keeps
every Cast, and a DQ -> Cast -> Conv is not the DQ -> Conv pattern TensorRT fuses into an INT8 conv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from calib_helpers import concat_quantizers, export_random_model, readers, write_images

from s2trt.calib.data import Preprocessing, open_reader
from s2trt.calib.qdq import find_detect_nodes, mixed_int8_fp16, quantize_qdq
from s2trt.export.fp16 import fp32_islands

IMGSZ = 160

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, onnx.ModelProto]:
    d = tmp_path_factory.mktemp("mixed")
    export_random_model(d / "fp32.onnx", IMGSZ)
    write_images(d / "calib", 4)
    reader = open_reader(d / "calib", Preprocessing((IMGSZ, IMGSZ)), size=4, batch=1, progress=False)
    quantize_qdq(d / "fp32.onnx", d / "int8.onnx", reader, "minmax")
    mixed = mixed_int8_fp16(onnx.load(str(d / "int8.onnx")))
    onnx.save(mixed, str(d / "mixed.onnx"))
    return d, d / "int8.onnx", onnx.load(str(d / "mixed.onnx"))


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in
             (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_qdq_pairs_are_fp16_without_casts(graphs) -> None:
    _, _, m = graphs
    onnx.checker.check_model(m, full_check=True)
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 19
    types = _types(m)
    prod = {o: n for n in m.graph.node for o in n.output}
    after = readers(m)
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert len(qs) > 50 and len(dqs) > 100
    inputs = {i.name for i in m.graph.input}
    for q in qs:  # TensorRT's rule: the input's type is the scale's
        src = prod.get(q.input[0])
        # A Cast feeds a Q only where the value is FP32 to begin with: the image.
        assert src is None or src.op_type != "Cast" or src.input[0] in inputs, q.name
        assert types[q.input[0]] == types[q.input[1]], q.name
        # Both halves of a pair have one scale type (a Q -> DQ of two types is legal per the header
        # but never made by TensorRT's own tools, and likely left unfused).
        assert {types[d.input[1]] for d in after[q.output[0]]} == {types[q.input[1]]}, q.name
    for dq in dqs:
        assert types[dq.input[1]] == types[dq.output[0]], dq.name
        assert all(r.op_type != "Cast" for r in after[dq.output[0]]), dq.name
        # Every pair that feeds a convolution is FP16: the INT8 conv writes FP16 for FP16 compute.
        if any(r.op_type == "Conv" for r in after[dq.output[0]]):
            assert types[dq.output[0]] == F16, dq.name
    # Every pair is FP16: the shifts' data movement too, with one Cast(->FP32) where a shifted
    # branch enters the attention's FP32 sum.
    assert all(types[dq.output[0]] == F16 for dq in dqs)


def test_unquantized_compute_is_fp16_and_islands_fp32(graphs) -> None:
    _, _, m = graphs
    types = _types(m)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    detect = set(find_detect_nodes(m))
    weights_dq = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    float_convs = [c for c in convs if c.input[1] not in weights_dq]
    assert {c.name for c in float_convs} <= detect and len(float_convs) == 3
    for c in convs:  # INT8 or not, every convolution computes in FP16
        assert types[c.output[0]] == F16, c.name
    for op in ("Softmax", "ReduceSum"):  # the attention's global sum and softmax
        nodes = [n for n in m.graph.node if n.op_type == op]
        assert nodes and all(types[n.output[0]] == F32 for n in nodes), op
    assert all(o.type.tensor_type.elem_type == F32 for o in m.graph.output)
    assert all(i.type.tensor_type.elem_type == F32 for i in m.graph.input)
    prod = {o: n for n in m.graph.node for o in n.output}
    for cast in (n for n in m.graph.node if n.op_type == "Cast"):  # only region borders, no round trip
        src = prod.get(cast.input[0])
        assert src is None or src.op_type != "Cast", cast.name
    # The decode after the Detect convs is FP32: every Reshape the Detect convs feed gets FP32.
    for c in float_convs:
        nxt = [n for n in m.graph.node if c.output[0] in n.input]
        assert [n.op_type for n in nxt] == ["Cast"], c.name


def test_int8_and_fp16_keep_the_same_fp32_islands(graphs) -> None:
    """One island definition (export.fp16.fp32_islands): the nodes the INT8 graph leaves in float
    and the nodes its FP16 conversion keeps in FP32 are the FP16 graph's islands, the attention's
    global sum included."""
    d, int8, m = graphs
    islands = fp32_islands(onnx.load(str(d / "fp32.onnx")))
    q = onnx.load(str(int8))
    prod = {o: n for n in q.graph.node for o in n.output}
    in_q = [n for n in q.graph.node if n.name in islands]
    assert {n.op_type for n in in_q} >= {"Add", "ReduceSum", "MatMul", "Softmax"}
    for node in in_q:  # nothing quantized feeds an island node
        assert all(prod[t].op_type != "DequantizeLinear" for t in node.input if t in prod), node.name
    types = _types(m)
    for node in (n for n in m.graph.node if n.name in islands):
        assert all(types[t] == F32 for t in node.output if types.get(t) in (F16, F32)), node.name


def test_mixed_output_tracks_the_int8_graph(graphs) -> None:
    d, int8, _ = graphs
    x = open_reader(d / "calib", Preprocessing((IMGSZ, IMGSZ)), size=4, batch=1,
                    progress=False).load_batch(0)
    a = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    opts = ort.SessionOptions()
    # ORT's extended optimizations fuse DQ -> Concat -> Q into QLinearConcat, which has no FP16 kernel.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    b = ort.InferenceSession(str(d / "mixed.onnx"), opts,
                             providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert b.dtype == np.float32 and b.shape == a.shape
    # FP16 between the INT8 layers moves boxes by a small fraction of their size on average.
    assert np.abs(a[..., :4] - b[..., :4]).mean() < 0.01 * np.abs(a[..., :4]).mean()
    assert np.abs(a[..., 4:] - b[..., 4:]).mean() < 0.01


def test_concats_still_compare_equal_scales(graphs) -> None:
    """Item 4's Concat rule survives the FP16 conversion: TensorRT compares the scales of the Q/DQ
    pairs around a Concat for equality, whether a pair is FP16 or stays FP32 (at an FP32 island)."""
    _, _, m = graphs
    per_concat = concat_quantizers(m)
    assert len(per_concat) == 23
    for name, params in per_concat.items():
        assert len(params) == 1, (name, params)
