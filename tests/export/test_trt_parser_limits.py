"""Every exported flavour against the documented limits of TensorRT's ONNX parser and layers.

One table (CONTRACTS): each row is a limit of an op we emit, the source that documents it, and a
check over a graph. Each row runs on every flavour s2export writes: FP32 / FP16 / INT8 (Q/DQ, and
the INT8+FP16 mixed graph) x static / dynamic batch x with / without in-graph NMS, portable and
TensorRT flavours, plus the in-graph NMS at the --topk cap on a 640 (25,200-box) output.

Sources (read for 10.3 .. 11.x):
- NvInfer.h of TensorRT 10.3.0, 10.16 and 11.1 (line numbers below are 10.3.0 / 10.16 / 11.1);
- onnx-tensorrt docs/operators.md: the 10.1-GA branch ("TensorRT 10.0 supports operators in the
  inclusive range of opset 9 to opset 20") and the 10.15 release ("... opset 9 to opset 24");
  the parser has no TensorRT-11 operators.md, so 10.x's is the bound for 11 as well.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from calib_helpers import write_images
from onnx import TensorProto, helper, numpy_helper
from yolov5_fake import make_yolov5_checkpoint

from s2trt.errors import S2Error
from s2trt.export.cli import main
from s2trt.export.nms import TRT_TOPK_MAX, NMSConfig, nms_graph
from s2trt.export.plugin_reference import OP_DOMAIN, OP_TYPE

IMGSZ = "96"

# Ops that docs/operators.md (10.1-GA and 10.15) marks "Y": the ones s2trt's graphs may contain.
PARSER_OPS = frozenset({
    "Add", "ArgMax", "Cast", "Concat", "Constant", "Conv", "DequantizeLinear", "Div", "Equal", "Erf",
    "Gather", "GatherElements", "Identity", "Less", "MatMul", "MaxPool", "Min", "Mul",
    "NonMaxSuppression", "Pad", "Pow", "QuantizeLinear", "Range", "ReduceMax", "ReduceSum", "Relu",
    "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Squeeze", "Sub", "Tile",
    "TopK", "Transpose", "Unsqueeze"})
# Element types in operators.md's "TensorRT supports the following ONNX data types" (10.x), minus
# DOUBLE (cast down with clamping) and the quantized types, which are INT8 behind Q/DQ only.
PARSER_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.INT64,
                TensorProto.INT8, TensorProto.BOOL}
# INMSLayer: "only the K highest scoring boxes in each batch item will be considered for selection.
# The value of K is 2000 for SM 5.3 and 6.2 devices, and 5000 otherwise" (NvInfer.h 10.3.0 l. 5975,
# 10.16 l. 6392, 11.1 l. 6230). SM 5.3 / 6.2 (Jetson Nano / TX2) have no TensorRT 10.
INMS_MAX_CANDIDATES = 5000


class Graph:
    """A model with what the checks need: initializers, inferred types and shapes, producers."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:  # a Constant node is weights to the parser, like an initializer
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        inferred = onnx.shape_inference.infer_shapes(model)
        g = inferred.graph
        self.vi = {v.name: v.type.tensor_type for v in [*g.value_info, *g.input, *g.output]}
        self.nodes = list(model.graph.node)

    def of(self, *ops: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.op_type in ops]

    def dims(self, t: str) -> list[int | None]:
        tt = self.vi.get(t)
        return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt else []

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        a = next((a for a in node.attribute if a.name == name), None)
        v = default if a is None else helper.get_attribute_value(a)
        return v.decode() if isinstance(v, bytes) else v


def topk_k(g: Graph) -> list[str]:
    # NvInfer.h ITopKLayer::setK: "Currently only values up to 3840 are supported" (l. 3546 / 3659 /
    # 3448); the K input: "Values larger than 3840 will result in a runtime error" (l. 3602 / 3715 /
    # 3504); addTopK: "only values of K up to 3840" (l. 6672 / 8458, 8493 / 8595, 8630).
    # operators.md TopK: "`K` input must be less than 3840" (its wording; the layer takes 3840).
    bad = []
    for n in g.of("TopK"):
        k = g.inits.get(n.input[1])
        if k is None:
            bad.append(f"{n.name}: K is not an initializer")
        elif int(k.reshape(-1)[0]) > TRT_TOPK_MAX:
            bad.append(f"{n.name}: K {int(k.reshape(-1)[0])} > {TRT_TOPK_MAX}")
    return bad


def topk_sorted(g: Graph) -> list[str]:
    # operators.md TopK: "`sorted` must be 1".
    return [n.name for n in g.of("TopK") if g.attr(n, "sorted", 1) != 1]


def nms_inputs(g: Graph) -> list[str]:
    # operators.md NonMaxSuppression: FP32, FP16. NvInfer.h INMSLayer (l. 5934-5976 / 6347-6393 /
    # 6185-6231): Boxes kFLOAT or kHALF [batch, boxes, 4]; Scores the same type, one score per box
    # and class; IoUThreshold "in the range [0.0f, 1.0f]"; kCORNER_PAIRS = center_point_box 0 here.
    # Thresholds and the per-class maximum as initializers, as the 8.x operators.md required.
    bad = []
    for n in g.of("NonMaxSuppression"):
        boxes, scores = n.input[0], n.input[1]
        types = {g.vi[t].elem_type for t in (boxes, scores)}
        if len(types) != 1 or types - {TensorProto.FLOAT, TensorProto.FLOAT16}:
            bad.append(f"{n.name}: boxes/scores types {types}")
        bdims, sdims = g.dims(boxes), g.dims(scores)
        if len(bdims) != 3 or bdims[2] != 4 or len(sdims) != 3 or sdims[2] != bdims[1] \
                or (bdims[0] is not None and sdims[0] is not None and bdims[0] != sdims[0]):
            bad.append(f"{n.name}: boxes {bdims}, scores {sdims}")
        # With a symbolic batch, shape inference may leave the count open: the boxes are then the
        # ones a TopK pre-filter picked, at most its K.
        ks = [int(g.inits[t.input[1]].reshape(-1)[0]) for t in g.of("TopK") if t.input[1] in g.inits]
        count = bdims[1] if len(bdims) == 3 and bdims[1] is not None else max(ks, default=None)
        if count is None or count > INMS_MAX_CANDIDATES:
            bad.append(f"{n.name}: {count} candidates per image, INMSLayer considers "
                       f"{INMS_MAX_CANDIDATES}")
        if any(t not in g.inits for t in n.input[2:5]):
            bad.append(f"{n.name}: max boxes / IoU / score threshold not initializers")
        elif not 0.0 <= float(g.inits[n.input[3]].reshape(-1)[0]) <= 1.0:
            bad.append(f"{n.name}: IoU threshold outside [0, 1]")
        if g.attr(n, "center_point_box", 0) != 0:
            bad.append(f"{n.name}: center_point_box")
    return bad


def axes_constant(g: Graph) -> list[str]:
    # operators.md (10.1-GA): Slice, Squeeze, ReduceMax, ReduceSum, Pad: "`axes` must be an
    # initializer"; Unsqueeze: "`axes` must be a constant tensor".
    where = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "ReduceMax": 1, "ReduceSum": 1, "Pad": 3}
    return [f"{n.name} ({n.op_type})" for n in g.of(*where) if len(n.input) > where[n.op_type]
            and n.input[where[n.op_type]] and n.input[where[n.op_type]] not in g.inits]


def element_types(g: Graph) -> list[str]:
    # operators.md (10.x): "TensorRT supports the following ONNX data types: DOUBLE, FLOAT32, FLOAT16,
    # BFLOAT16, INT32, INT64, FP8, INT8, INT4, UINT8, and BOOL"; DOUBLE is cast down with clamping,
    # "INT8 ... treated as Quantized Types ... available only through quantization".
    bad = [f"{name}: type {tt.elem_type}" for name, tt in g.vi.items()
           if tt.elem_type and tt.elem_type not in PARSER_TYPES]
    bad += [f"{name}: initializer type {a.dtype}" for name, a in g.inits.items()
            if a.dtype not in (np.float32, np.float16, np.int32, np.int64, np.int8, np.bool_)]
    q_inputs = {t for n in g.of("DequantizeLinear") for t in n.input[::2]} | {
        n.input[2] for n in g.of("QuantizeLinear") if len(n.input) > 2}
    bad += [f"{name}: INT8 outside Q/DQ" for name, a in g.inits.items()
            if a.dtype == np.int8 and name not in q_inputs]
    return bad


def int64_values(g: Graph) -> list[str]:
    # TensorRT 10.3's TopK and INMSLayer produce INT32 indices (addTopK has no indicesType before
    # 10.16; INMSLayer: "SelectedIndices ... of type kINT32"), and the 8.x-era parser cast INT64 down
    # "clamping values to +-INT_MAX": every INT64 constant we emit fits INT32, so either path is
    # exact. Slice's starts/ends may say INT64_MAX ("to the end"), which the ONNX spec clamps anyway.
    slice_bounds = {t for n in g.of("Slice") for t in n.input[1:3]}
    return [name for name, a in g.inits.items() if a.dtype == np.int64 and a.size
            and name not in slice_bounds and np.abs(a).max() > np.iinfo(np.int32).max]


def opset_range(g: Graph) -> list[str]:
    # operators.md: "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"
    # (10.1-GA), "TensorRT 10.15 ... opset 9 to opset 24"; s2trt exports opset 17 or newer.
    used = {n.domain or "" for n in g.nodes}
    versions = {o.domain: o.version for o in g.model.opset_import}
    bad = [] if 17 <= versions.get("", versions.get("ai.onnx", 0)) <= 20 else [f"opset {versions}"]
    return bad + [f"nodes in domain {d}" for d in used - {"", "ai.onnx", OP_DOMAIN}]


def ops_supported(g: Graph) -> list[str]:
    # operators.md (10.1-GA, 10.15): every op "Y"; the plugin node is found by op type + its
    # plugin_version / plugin_namespace attributes (onnx-tensorrt 10.1-GA onnxOpImporters.cpp l. 6442,
    # the fallback plugin importer).
    bad = [f"{n.name}: {n.op_type}" for n in g.nodes if n.op_type not in PARSER_OPS
           and n.op_type != OP_TYPE]
    for n in g.of(OP_TYPE):
        if g.attr(n, "plugin_namespace") != "s2trt" or g.attr(n, "plugin_version") != "1":
            bad.append(f"{n.name}: plugin attributes")
    return bad


def qdq_zero_points(g: Graph) -> list[str]:
    # operators.md: DequantizeLinear "`x_zero_point` must be zero", QuantizeLinear "`y_zero_point`
    # must be 0" (types FP32, FP16); scales FP32 before opset 19 (QuantizeLinear-13 /
    # DequantizeLinear-13 take float scales only), FP32 or FP16 from opset 19.
    opset = next(o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx"))
    scale_types = (np.float32, np.float16) if opset >= 19 else (np.float32,)
    bad = []
    for n in g.of("QuantizeLinear", "DequantizeLinear"):
        zp = g.inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros(1)
        if zp is None or np.any(zp != 0):
            bad.append(f"{n.name}: zero point")
        if n.input[1] not in g.inits or g.inits[n.input[1]].dtype not in scale_types:
            bad.append(f"{n.name}: scale")
    return bad


def resize_modes(g: Graph) -> list[str]:
    # operators.md Resize: modes nearest, linear; coordinate transformation half_pixel,
    # pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners; nearest modes floor,
    # ceil, round_prefer_floor, round_prefer_ceil; no antialiasing.
    bad = []
    for n in g.of("Resize"):
        if g.attr(n, "mode", "nearest") not in ("nearest", "linear") \
                or g.attr(n, "coordinate_transformation_mode", "half_pixel") not in (
                    "half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                    "align_corners") \
                or g.attr(n, "nearest_mode", "round_prefer_floor") not in (
                    "floor", "ceil", "round_prefer_floor", "round_prefer_ceil") \
                or g.attr(n, "antialias", 0):
            bad.append(n.name)
    return bad


def maxpool_2d(g: Graph) -> list[str]:
    # operators.md MaxPool: "2D or 3D pooling only. `Indices` output tensor unsupported. `dilations`
    # must be empty or all ones".
    return [n.name for n in g.of("MaxPool") if len(g.attr(n, "kernel_shape", [])) not in (2, 3)
            or len(n.output) > 1 or any(d != 1 for d in g.attr(n, "dilations", []))]


CONTRACTS: dict[str, Callable[[Graph], list[str]]] = {
    "TopK K <= 3840 (NvInfer.h ITopKLayer)": topk_k,
    "TopK sorted (operators.md)": topk_sorted,
    "NonMaxSuppression inputs (operators.md, INMSLayer)": nms_inputs,
    "axes are initializers (operators.md)": axes_constant,
    "element types (operators.md)": element_types,
    "INT64 constants fit INT32 (INMSLayer, addTopK 10.3)": int64_values,
    "opset 17..20 (operators.md)": opset_range,
    "ops the parser supports (operators.md)": ops_supported,
    "Q/DQ zero points and scales (operators.md)": qdq_zero_points,
    "Resize modes (operators.md)": resize_modes,
    "MaxPool 2D, no indices (operators.md)": maxpool_2d,
}

EXPORTS = {  # covers each of precision, batch and NMS with each other's values
    "fp32 static": [],
    "fp32 dynamic nms": ["--dynamic", "--nms"],
    "fp16 static nms": ["--fp16", "--nms"],
    "fp16 dynamic": ["--fp16", "--dynamic"],
    "int8 dynamic nms": ["--dynamic", "--nms", "--int8", "--calib-size", "4", "--no-int8-report"],
}
FLAVOURS = [f"{e} {f}" for e in EXPORTS for f in ("portable", "tensorrt")] + [
    "int8 dynamic nms int8", "int8 dynamic nms int8+fp16", "nms at the topk cap, 640"]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Graph]:
    tmp = tmp_path_factory.mktemp("limits")
    ckpt = make_yolov5_checkpoint(tmp, cfg="yolov5n-s2", nc=3, half=True)
    calib = tmp / "calib"
    write_images(calib, 4)
    out: dict[str, Graph] = {}
    for name, extra in EXPORTS.items():
        folder = tmp / name.replace(" ", "-")
        folder.mkdir()
        if "--int8" in extra:
            extra = [*extra, "--calib", str(calib)]
        assert main([str(ckpt), "--imgsz", IMGSZ, "--onnx-only", "-o", str(folder), "-q", *extra]) == 0
        stem = ckpt.stem + ("-fp16" if "--fp16" in extra else "")
        out[f"{name} portable"] = Graph(onnx.load(str(folder / f"{stem}.onnx")))
        out[f"{name} tensorrt"] = Graph(onnx.load(str(folder / f"{stem}.trt.onnx")))
        if "--int8" in extra:
            out[f"{name} int8"] = Graph(onnx.load(str(folder / f"{stem}-int8.onnx")))
            mixed = folder / f"{stem}-int8-fp16.onnx"
            if mixed.is_file():
                out[f"{name} int8+fp16"] = Graph(onnx.load(str(mixed)))
    out["nms at the topk cap, 640"] = Graph(nms_graph(25200, 80, NMSConfig(topk=TRT_TOPK_MAX)))
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("contract", list(CONTRACTS))
def test_every_flavour_within_the_documented_limits(graphs, contract, flavour):
    if flavour not in graphs:
        pytest.skip(f"{flavour}: not written by this export (calib's INT8+FP16 graph)")
    assert CONTRACTS[contract](graphs[flavour]) == []


def test_the_table_sees_what_it_checks(graphs):
    """Each row has something to check somewhere, and the cap row really holds a K of 3840."""
    ops = {n.op_type for g in graphs.values() for n in g.nodes}
    assert {"TopK", "NonMaxSuppression", "Slice", "Resize", "MaxPool", "QuantizeLinear",
            "DequantizeLinear", OP_TYPE} <= ops
    cap = graphs["nms at the topk cap, 640"]
    ks = [int(cap.inits[n.input[1]].reshape(-1)[0]) for n in cap.of("TopK")]
    assert max(ks) == TRT_TOPK_MAX


def test_the_checks_catch_what_they_pin():
    """A graph over the limits fails the rows (so the table is not vacuous)."""
    model = nms_graph(7000, 2, NMSConfig(topk=1000))
    k = next(i for i in model.graph.initializer if i.name.startswith("/nms/topk"))
    k.CopyFrom(numpy_helper.from_array(np.array([6000], np.int64), k.name))
    g = Graph(model)
    assert topk_k(g) and nms_inputs(g)  # K 6000 > 3840, and 6000 candidates > INMSLayer's 5000
    assert not topk_k(Graph(nms_graph(6000, 2, NMSConfig(topk=TRT_TOPK_MAX))))


def test_topk_over_the_layer_limit_is_refused_by_the_api():
    with pytest.raises(S2Error, match="3840"):
        NMSConfig(topk=TRT_TOPK_MAX + 1)


def test_default_topk_export_is_within_every_row():
    """The default --topk 1000 on a 640 output (25,200 boxes): the shipped default holds."""
    g = Graph(nms_graph(25200, 80, NMSConfig()))
    assert all(check(g) == [] for check in CONTRACTS.values())
