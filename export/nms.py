"""In-graph NMS in standard ONNX ops (docs/DESIGN.md §3): TopK pre-filter -> NonMaxSuppression ->
padded outputs.

Outputs, the layout TensorRT's EfficientNMS users know: `num_dets` (B, 1) int32, `det_boxes` (B, K, 4)
x1y1x2y2 in input pixels, `det_scores` (B, K), `det_classes` (B, K) int32, K = max_det; entries past
num_dets are 0 (classes -1). Semantics follow the runtime's host NMS: score = objectness x best class
score, kept when > conf_thres, class-aware greedy NMS at iou_thres, at most max_det per image.

Class awareness uses NonMaxSuppression's multi-class form (scores (B, nc, K), each box scored only
under its best class) rather than YOLOv5's coordinate offsets: offsets of class x 7680 put boxes at
coordinates where float32's step is 1/16 px, which moves IoUs near the threshold. TensorRT maps the
op to its INMSLayer; the TopK pre-filter bounds what that layer considers (it silently keeps only the
top 5,000 boxes per image), so TensorRT and ONNX Runtime start from the same boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from s2trt.detect.boxes import NMS_OUTPUTS
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.export.graph import add_node, load, save

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

# TensorRT's TopK layer takes K <= 3840: NvInfer.h, ITopKLayer::setK ("Currently only values up to
# 3840 are supported") and INetworkDefinition::addTopK ("only values of K up to 3840"), the same in
# 10.3, 10.16 and 11.1. The pre-filter's K is the largest TopK K this module emits.
TRT_TOPK_MAX = 3840


@dataclass(frozen=True)
class NMSConfig:
    """The detection options the graph applies (checked by `DetectOptions`), and its TopK pre-filter.

    The exported NMS is class-aware over every class: a class filter or class-agnostic NMS stays the
    runtime's to apply, so options carrying either are refused rather than silently dropped."""

    options: DetectOptions = field(default_factory=DetectOptions)
    topk: int = 1000  # candidates per image handed to NonMaxSuppression

    def __post_init__(self) -> None:
        if self.options.classes is not None or self.options.agnostic:
            raise S2Error("the in-graph NMS keeps every class, class-aware: filter classes or run "
                          "class-agnostic NMS at inference (s2infer --classes / --agnostic-nms)")
        if not 1 <= self.topk <= TRT_TOPK_MAX:
            raise S2Error(f"--topk {self.topk}: TensorRT's TopK layer takes K <= {TRT_TOPK_MAX}; use "
                          f"1..{TRT_TOPK_MAX}")

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        return {"conf_thres": o.conf_thres, "iou_thres": o.iou_thres, "max_det": o.max_det,
                "topk": self.topk, "outputs": list(NMS_OUTPUTS)}


class _Builder:
    """Adds nodes and constants to a graph, with unique names under a prefix."""

    def __init__(self, graph: gs.Graph):
        self.graph, self.opset, self.n = graph, graph.opset, 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"/nms/{hint}_{self.n}"

    def const(self, value: Any, dtype: Any, hint: str = "c") -> gs.Constant:
        import onnx_graphsurgeon as gs

        return gs.Constant(self.name(hint), np.asarray(value, dtype=dtype))

    def op(self, op_type: str, inputs: list[gs.Tensor], n_out: int = 1, out: list[str] | None = None,
           **attrs: Any) -> Any:
        node_name = self.name(op_type)
        outs = add_node(self.graph, op_type, inputs, out or [f"{node_name}_out{i}" for i in range(n_out)],
                        name=node_name, attrs=attrs)
        return outs[0] if len(outs) == 1 else outs

    def reduce(self, op_type: str, x: gs.Tensor, axis: int, keepdims: int) -> gs.Tensor:
        # ReduceSum takes axes as an input since opset 13, ReduceMax only since opset 18.
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.const([axis], np.int64, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=[axis], keepdims=keepdims)


def _static_dims(raw: gs.Tensor) -> tuple[int, int]:
    """(N, 5 + nc) of the raw output: both must be fixed by the export size."""
    dims = [d if isinstance(d, int) else None for d in raw.shape or []]
    if len(dims) != 3 or dims[1] is None or dims[2] is None or dims[2] < 6:
        raise S2Error(f"in-graph NMS needs a (B, N, 5 + nc) output with fixed N and nc, got {dims}")
    return dims[1], dims[2]


def append_nms(model: onnx.ModelProto, cfg: NMSConfig, raw: str = "output0") -> onnx.ModelProto:
    """A copy of `model` whose outputs are the four NMS tensors instead of `raw`."""
    from onnx import TensorProto

    graph = load(model)
    raw_t = next(t for t in graph.outputs if t.name == raw)
    n, no = _static_dims(raw_t)
    nc = no - 5
    opts = cfg.options
    k1, k2 = min(cfg.topk, n), min(opts.max_det, cfg.topk, n)
    b = _Builder(graph)
    i64, f32 = np.int64, np.float32

    def part(start: int, end: int) -> gs.Tensor:
        return b.op("Slice", [raw_t, b.const([start], i64), b.const([end], i64), b.const([2], i64)])

    xywh, obj, cls = part(0, 4), part(4, 5), part(5, no)
    cls_scores = b.op("Mul", [cls, obj])
    score = b.reduce("ReduceMax", cls_scores, 2, 0)
    label = b.op("ArgMax", [cls_scores], axis=2, keepdims=0)
    to_xyxy = [[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]]
    boxes = b.op("MatMul", [xywh, b.const(to_xyxy, f32, "xywh2xyxy")])

    top_s, top_i = b.op("TopK", [score, b.const([k1], i64, "topk")], n_out=2, axis=1)
    top_boxes = _gather_rows(b, boxes, top_i, 4)
    top_label = b.op("GatherElements", [label, top_i], axis=1)

    one_hot = b.op("Cast", [b.op("Equal", [b.op("Unsqueeze", [top_label, b.const([1], i64)]),
                                           b.const(np.arange(nc).reshape(1, nc, 1), i64, "classes")])],
                   to=TensorProto.FLOAT)
    nms_scores = b.op("Mul", [one_hot, b.op("Unsqueeze", [top_s, b.const([1], i64)])])
    selected = b.op("NonMaxSuppression", [top_boxes, nms_scores, b.const([opts.max_det], i64, "max_out"),
                                          b.const([opts.iou_thres], f32, "iou"),
                                          b.const([opts.conf_thres], f32, "score_thres")],
                    center_point_box=0)

    # Selected (batch, class, index) rows -> a 0/1 mask over the (B, k1) candidates without a
    # scatter (ScatterND is what this project keeps out of its graphs): keep = onehot(batch)^T @
    # onehot(index), O(S * (B + k1)) memory for S selections, where comparing flat positions
    # would take S * B * k1 (1.6 GB at batch 16).
    def one_hot(column: int, size: gs.Tensor) -> gs.Tensor:
        sel = b.op("Gather", [selected, b.const(column, i64)], axis=1)
        ids = b.op("Range", [b.const(0, i64), size, b.const(1, i64)])
        return b.op("Cast", [b.op("Equal", [b.op("Unsqueeze", [sel, b.const([1], i64)]),
                                            b.op("Unsqueeze", [ids, b.const([0], i64)])])],
                    to=TensorProto.FLOAT)

    batch = b.op("Gather", [b.op("Shape", [raw_t]), b.const(0, i64)], axis=0)
    keep = b.op("MatMul", [b.op("Transpose", [one_hot(0, batch)], perm=[1, 0]),
                           one_hot(2, b.const(k1, i64, "k1"))])

    # Kept candidates keep their score, the others drop to -2; a second TopK orders the kept ones.
    ranked = b.op("Add", [b.op("Mul", [top_s, keep]),
                          b.op("Mul", [b.op("Sub", [keep, b.const(1, f32)]), b.const(2, f32)])])
    det_s, det_i = b.op("TopK", [ranked, b.const([k2], i64, "max_det")], n_out=2, axis=1)
    count = b.op("Min", [b.reduce("ReduceSum", keep, 1, 1), b.const(k2, f32)])
    valid = b.op("Cast", [b.op("Less", [b.const(np.arange(k2, dtype=f32)[None], f32), count])],
                 to=TensorProto.FLOAT)

    pad = opts.max_det - k2  # fewer candidates than max_det: pad the outputs to the promised size

    def padded(x: gs.Tensor, rank: int, value: float, out: str, dtype: int) -> gs.Tensor:
        if pad:
            pads = [0, 0, *([0] * (rank - 2)), 0, pad, *([0] * (rank - 2))]
            x = b.op("Pad", [x, b.const(pads, i64, "pads"), b.const(value, f32)], mode="constant")
        return b.op("Cast", [x], out=[out], to=dtype)

    det_boxes = b.op("Mul", [_gather_rows(b, top_boxes, det_i, 4),
                             b.op("Unsqueeze", [valid, b.const([2], i64)])])
    labels = b.op("Cast", [b.op("GatherElements", [top_label, det_i], axis=1)], to=TensorProto.FLOAT)
    det_cls = b.op("Add", [b.op("Mul", [labels, valid]), b.op("Sub", [valid, b.const(1, f32)])])
    outputs = [b.op("Cast", [count], out=["num_dets"], to=TensorProto.INT32),
               padded(det_boxes, 3, 0.0, "det_boxes", TensorProto.FLOAT),
               padded(b.op("Relu", [det_s]), 2, 0.0, "det_scores", TensorProto.FLOAT),
               padded(det_cls, 2, -1.0, "det_classes", TensorProto.INT32)]

    bdim = raw_t.shape[0]
    shapes = [[bdim, 1], [bdim, opts.max_det, 4], [bdim, opts.max_det], [bdim, opts.max_det]]
    for t, dtype, shape in zip(outputs, (np.int32, np.float32, np.float32, np.int32), shapes, strict=True):
        t.dtype, t.shape = dtype, shape
    graph.outputs = outputs
    return save(graph, like=model)


def _gather_rows(b: _Builder, x: gs.Tensor, idx: gs.Tensor, width: int) -> gs.Tensor:
    """x[b, idx[b, j], :] for x (B, N, width) and idx (B, K)."""
    tiled = b.op("Tile", [b.op("Unsqueeze", [idx, b.const([2], np.int64)]),
                          b.const([1, 1, width], np.int64)])
    return b.op("GatherElements", [x, tiled], axis=1)


def nms_graph(n: int, nc: int, cfg: NMSConfig, opset: int = 17) -> onnx.ModelProto:
    """A standalone graph `output0 (B, n, 5 + nc)` -> the NMS outputs, to test NMS on raw outputs."""
    import onnx_graphsurgeon as gs

    raw_in = gs.Variable("raw_in", np.float32, ["batch", n, 5 + nc])
    raw = gs.Variable("output0", np.float32, ["batch", n, 5 + nc])
    graph = gs.Graph(inputs=[raw_in], outputs=[raw], name="nms", opset=opset)
    add_node(graph, "Identity", [raw_in], [raw])
    return append_nms(save(graph), cfg)
