"""Q/DQ quantization: TensorRT's conventions, the default float islands, and the shifts left intact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from calib_helpers import concat_quantizers, export_random_model, readers, write_images

from s2trt.calib.data import Preprocessing, open_reader
from s2trt.calib.qdq import (
    CalibMethod,
    find_detect_nodes,
    quantize_qdq,
    resolve_exclusions,
)
from s2trt.errors import S2Error
from s2trt.export.fp16 import attention_islands

IMGSZ = 160

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
numpy_helper = onnx.numpy_helper


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("qdq")
    export_random_model(d / "fp32.onnx", IMGSZ)
    write_images(d / "calib", 8)
    return d


def _reader(work: Path):
    return open_reader(work / "calib", Preprocessing((IMGSZ, IMGSZ)), size=8, batch=1, progress=False)


@pytest.fixture(scope="module")
def quantized(work: Path) -> tuple[dict, onnx.ModelProto, onnx.ModelProto]:
    summary = quantize_qdq(work / "fp32.onnx", work / "int8.onnx", _reader(work), "minmax")
    return summary, onnx.load(str(work / "fp32.onnx")), onnx.load(str(work / "int8.onnx"))


def _producers(model: onnx.ModelProto) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def _inits(model: onnx.ModelProto) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_qdq_is_symmetric_int8(quantized) -> None:
    _, _, q = quantized
    inits = _inits(q)
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert Counter(n.op_type for n in qdq)["QuantizeLinear"] > 50
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name  # TensorRT: zero point 0
    # No INT32 bias: TensorRT has no bias Q/DQ, the biases stay float.
    assert not any(a.dtype == np.int32 for a in inits.values())


def test_conv_weights_per_output_channel(quantized) -> None:
    summary, _, q = quantized
    inits, prod = _inits(q), _producers(q)
    int8_convs = 0
    for conv in (n for n in q.graph.node if n.op_type == "Conv"):
        dq = prod.get(conv.input[1])
        if dq is None:
            continue
        int8_convs += 1
        w, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = {a.name: a.i for a in dq.attribute}.get("axis", 1)
        assert w.dtype == np.int8 and axis == 0 and scale.shape == (w.shape[0],)
        # Symmetric per channel: each channel's largest weight maps to ±127.
        np.testing.assert_array_equal(np.abs(w.reshape(len(w), -1)).max(1), 127)
    assert int8_convs == summary["int8_convs"] == 59  # 62 convs minus the three Detect convs


def test_excluded_nodes_read_float_tensors(quantized) -> None:
    summary, fp32, q = quantized
    excluded = set(find_detect_nodes(fp32)) | attention_islands(fp32)
    prod = _producers(q)
    for node in q.graph.node:
        if node.name in excluded:
            sources = [prod[i].op_type for i in node.input if i in prod]
            assert "DequantizeLinear" not in sources, node.name
    ops = Counter(n.op_type for n in q.graph.node if n.name in excluded)
    assert ops["Conv"] == 3 and ops["Softmax"] == 1 and ops["ReduceSum"] == 1 and ops["MatMul"] == 2
    # The global sum over the branches (two Adds into the ReduceSum) is float, as in the FP16 graph.
    reduce_sum = next(n for n in q.graph.node if n.op_type == "ReduceSum")
    branch_sum = prod[reduce_sum.input[0]]
    assert branch_sum.op_type == "Add" and prod[branch_sum.input[0]].op_type == "Add"
    assert {branch_sum.name, prod[branch_sum.input[0]].name} <= excluded
    # Counted on the pre-processed graph, where ORT has folded the constants of the decode.
    assert set(summary["excluded"]) == {"detect", "attention"}
    assert 0 < summary["excluded"]["detect"] <= len(find_detect_nodes(fp32))


def test_shifts_stay_slice_concat_with_qdq_around(quantized) -> None:
    _, fp32, q = quantized
    ops = [n.op_type for n in q.graph.node]
    assert "ScatterND" not in ops
    prefix = "/model.24/"
    block = lambda m, op: [n for n in m.graph.node if n.name.startswith(prefix) and n.op_type == op]  # noqa: E731
    assert len(block(q, "Slice")) == len(block(fp32, "Slice")) > 0
    assert len(block(q, "Concat")) == len(block(fp32, "Concat")) > 0
    prod = _producers(q)
    # The shifts read the dequantized mlp1 output and their concatenations are quantized again.
    first = [s for s in block(q, "Slice") if prod[s.input[0]].op_type == "DequantizeLinear"]
    assert first
    consumers = {i: n for n in q.graph.node for i in n.input}
    outer = [c for c in block(q, "Concat") if consumers.get(c.output[0]) is not None
             and consumers[c.output[0]].op_type == "QuantizeLinear"]
    assert len(outer) >= 2


def test_int8_output_tracks_fp32(work: Path, quantized) -> None:
    import onnxruntime as ort

    x = _reader(work).load_batch(0)
    a = ort.InferenceSession(str(work / "fp32.onnx")).run(None, {"images": x})[0]
    b = ort.InferenceSession(str(work / "int8.onnx")).run(None, {"images": x})[0]
    # Boxes in pixels: INT8 moves them by a small fraction of a pixel-scale quantity on average.
    assert np.abs(a[..., :4] - b[..., :4]).mean() < 0.01 * np.abs(a[..., :4]).mean()
    assert np.abs(a[..., 4:] - b[..., 4:]).max() < 0.05


def test_metadata_is_carried_with_int8_precision(quantized) -> None:
    _, _, q = quantized
    props = {p.key: p.value for p in q.metadata_props}
    assert props["producer"] == "s2trt" and props["precision"] == "int8"


def _unused(model: onnx.ModelProto) -> tuple[set[str], set[str]]:
    """(nodes no graph output depends on, initializers no node reads) of an ONNX graph."""
    producer = {o: n for n in model.graph.node for o in n.output}
    needed: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            stack.extend(node.input)
    read = {t for n in model.graph.node for t in n.input}
    return ({n.name for n in model.graph.node} - needed,
            {i.name for i in model.graph.initializer} - read)


@pytest.mark.parametrize("graph", ["int8", "int8+fp16", "fp16"])
def test_passes_leave_no_unused_node_or_initializer(work: Path, quantized, graph: str) -> None:
    """The Q/DQ rewiring and the FP16 passes orphan Q/DQ pairs, Casts and scales; what no output
    needs must be gone (a dead Q/DQ pair would still join a Concat's scale group)."""
    from s2trt.calib.qdq import mixed_int8_fp16
    from s2trt.export.fp16 import to_fp16

    _, fp32, q = quantized
    model = q if graph == "int8" else mixed_int8_fp16(q) if graph == "int8+fp16" else to_fp16(fp32)
    assert _unused(model) == (set(), set())
    onnx.checker.check_model(model)


def test_detect_found_by_structure_not_names(work: Path) -> None:
    m = onnx.load(str(work / "fp32.onnx"))
    for k, n in enumerate(m.graph.node):
        n.name = f"n{k}"
    convs = [n for n in m.graph.node if n.name in set(find_detect_nodes(m)) and n.op_type == "Conv"]
    # The three convs whose outputs reach output0 without passing another conv.
    assert len(convs) == 3 and all(c.input[1].startswith("model.25.m.") for c in convs)
    attention = {n.op_type for n in m.graph.node if n.name in attention_islands(m)}
    assert {"ReduceSum", "MatMul", "Erf", "Softmax", "Mul"} <= attention


def test_exclusion_specs(work: Path) -> None:
    m = onnx.load(str(work / "fp32.onnx"))
    assert resolve_exclusions(m, ["none"]).nodes == []
    both = resolve_exclusions(m, None)
    assert set(both.groups) == {"detect", "attention"}
    assert set(resolve_exclusions(m, ["default"]).nodes) == set(both.nodes)
    pat = resolve_exclusions(m, ["detect,/model.0/*", "Sigmoid"])
    assert "/model.0/conv/Conv" in pat.patterns["/model.0/*"]
    assert all(n.op_type == "Sigmoid" for n in m.graph.node if n.name in pat.patterns["Sigmoid"])
    assert resolve_exclusions(m, ["stem"]).nodes == ["/model.0/conv/Conv"]
    with pytest.raises(S2Error, match="matches no node"):
        resolve_exclusions(m, ["/model.99/*"])
    with pytest.raises(S2Error, match="cannot be combined"):
        resolve_exclusions(m, ["none", "detect"])


def test_exclude_none_quantizes_the_detect_convs(work: Path) -> None:
    summary = quantize_qdq(work / "fp32.onnx", work / "all.onnx", _reader(work), "percentile", ["none"])
    assert summary["float_convs"] == 0 and summary["excluded_nodes"] == 0


def test_method_factory() -> None:
    assert CalibMethod.from_name("MinMax") is CalibMethod.MINMAX
    assert CalibMethod.from_name(" entropy ") is CalibMethod.ENTROPY
    with pytest.raises(S2Error, match="choose from entropy, minmax, percentile"):
        CalibMethod.from_name("kl")


def test_finders_stop_at_shape_reads_on_a_dynamic_graph(tmp_path: Path) -> None:
    """With a dynamic batch the reshapes read Shape(branch): the walk must not follow into the shifts."""
    m = onnx.load(str(export_random_model(tmp_path / "dyn.onnx", IMGSZ, dynamic=True)))
    ops = {n.name: n.op_type for n in m.graph.node}
    attention = attention_islands(m)
    assert "Softmax" in {ops[n] for n in attention}
    assert not [n for n in attention if ops[n] in ("Slice", "Conv")]
    assert sum(ops[n] == "Conv" for n in find_detect_nodes(m)) == 3


# TensorRT's placement rules (developer guide, "Working with Quantized Types" > "Q/DQ Layer-Placement
# Recommendations"; NVIDIA's YOLOv5 QAT recipe: NVIDIA-AI-IOT/yolo_deepstream
# yolov7_qat/quantization/rules.py and quantize.py).

def _dq_source(model: onnx.ModelProto, tensor: str):
    """The (Q, DQ) pair a tensor is read through, or None for a float tensor."""
    prod, inits = _producers(model), _inits(model)
    dq = prod.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
        return None
    return prod[dq.input[0]], dq


def _from_conv(model: onnx.ModelProto, tensor: str) -> bool:
    """Computed by a Conv, through its SiLU (x * Sigmoid(x)), looking through a Q/DQ pair."""
    prod = _producers(model)
    pair = _dq_source(model, tensor)
    node = prod.get(pair[0].input[0] if pair else tensor)
    if node is not None and node.op_type == "Mul":
        sig = [prod.get(i) for i in node.input]
        node = next((prod.get(s.input[0]) for s in sig if s is not None and s.op_type == "Sigmoid"), node)
    return node is not None and node.op_type == "Conv"


def test_every_concat_reads_its_inputs_at_one_scale(quantized) -> None:
    """TensorRT elides a Concat of INT8 tensors (moving the Q after it backwards) only when every
    Q it meets has the same scale (developer guide, Q/DQ placement: "scales of Q1 and Q2 are compared
    for equality"); the YOLOv5 recipe gives every Concat input the Concat output's quantizer."""
    _, _, q = quantized
    per_concat = concat_quantizers(q)
    # Every Concat of the backbone, neck and shifts reads INT8 (the Detect decode's stay float).
    assert len(per_concat) == 23
    for name, params in per_concat.items():
        assert len(params) == 1, (name, params)


def test_residual_adds_quantize_only_the_skip(quantized) -> None:
    """A Q/DQ pair on the conv branch of an Add "forces the separation of the convolution operator
    from the element-wise addition" (developer guide, Q/DQ placement, suboptimal fusion figure); the
    skip input's Q/DQ is what lets the fused Conv+Add write INT8. The recipe quantizes the Bottleneck
    skip with cv1's input quantizer: here the very same Q/DQ pair."""
    _, _, q = quantized
    after = readers(q)
    residual = [n for n in q.graph.node if n.op_type == "Add"
                and any(_from_conv(q, t) for t in n.input) and len(n.input) == 2
                and all(_from_conv(q, t) or _dq_source(q, t) for t in n.input)]
    assert len(residual) == 7  # yolov5n's backbone Bottlenecks: 1 + 2 + 3 + 1
    for add in residual:
        pairs = [_dq_source(q, t) for t in add.input]
        assert sum(p is not None for p in pairs) == 1, add.name
        skip = next(t for t, p in zip(add.input, pairs, strict=True) if p is not None)
        branch = next(t for t, p in zip(add.input, pairs, strict=True) if p is None)
        assert _from_conv(q, branch) and [r.name for r in after[branch]] == [add.name]
        # The skip's dequantized tensor also feeds the next convolution (Bottleneck cv1).
        assert any(r.op_type == "Conv" for r in after[skip]), add.name
