"""INT8 Q/DQ ONNX with ONNX Runtime static quantization, placed the way TensorRT wants it (docs/DESIGN.md §5).

TensorRT ≥ 11 builds INT8 only from explicit QuantizeLinear/DequantizeLinear pairs; 10.x accepts them
too. The placement follows TensorRT's Q/DQ recommendations: symmetric INT8 (zero point 0) everywhere,
per-output-channel weight scales on Conv, Q/DQ on the *inputs* of Conv, Add, Concat, MaxPool, Resize
and Slice and never on the output of a Conv (TensorRT fuses Conv + SiLU + the next Q), FP32 biases
(TensorRT has no INT32 bias Q/DQ). Two rules of TensorRT's placement guide and NVIDIA's YOLOv5 QAT
recipe are applied after ONNX Runtime's quantizer: a residual Add quantizes only its skip input, so
the conv branch fuses Conv + SiLU + Add; all inputs of a Concat share one scale, so TensorRT elides
it. The S2Attention shifts stay Slice + Concat with Q/DQ around them, so TensorRT moves INT8 data
through them.

Kept in higher precision by default, found by graph structure (not by node names, which depend on
the exporter): `detect`, the Detect head's last 1x1 convs and the box decode after them, and
`attention`, the split attention's branch sum, global sum, MLP and softmax: the same FP32 islands as
the FP16 graph's (export.fp16.attention_islands), so an INT8+FP16 build keeps what an FP16 build keeps.
`stem` (the convolution that reads the image) is available but not a default.
"""

from __future__ import annotations

import contextlib
import enum
import fnmatch
import io
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2trt.errors import S2Error, missing
from s2trt.export.fp16 import attention_islands
from s2trt.export.graph import (
    QDQ_OPS,
    add_cast,
    is_cast_to,
    is_constant,
    load,
    name_unnamed,
    producer,
    qdq_source,
    replace_input,
    save,
)
from s2trt.text import first_line

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

log = logging.getLogger(__name__)

# Op types that get Q/DQ on their inputs; see the module docstring for why these.
QUANTIZED_OP_TYPES = ("Conv", "Add", "Concat", "MaxPool", "Resize", "Slice")
# Ops whose outputs stay unquantized: the consumer's input Q/DQ covers them where it matters.
NO_OUTPUT_QUANT_OP_TYPES = ("Conv", "Add")
EXCLUDE_GROUPS = ("detect", "attention", "stem")
DEFAULT_EXCLUDE = ("detect", "attention")


class CalibMethod(enum.Enum):
    """How activation ranges are chosen from the calibration statistics.

    The Q/DQ default is percentile: on the demo model it kept mAP50-95 closest to FP32 at every
    checkpoint measured with ONNX Runtime's placement; with TensorRT's (share_concat_scales and
    quantize_residual_skips_only) entropy is 0.15 mAP50-95 point ahead on the final checkpoint, the same
    mAP50 (benchmarks/RESULTS.md); `all` decides per model. TensorRT ≤ 10's calibrators offer
    entropy/minmax only.
    """

    ENTROPY = "entropy"  # KL-divergence threshold over a histogram (TensorRT's EntropyCalibrator2)
    MINMAX = "minmax"  # the absolute maximum seen (TensorRT's MinMaxCalibrator)
    PERCENTILE = "percentile"  # the 99.999th percentile of |x| (no TensorRT ≤ 10 calibrator)

    @classmethod
    def from_name(cls, name: str | CalibMethod) -> CalibMethod:
        if isinstance(name, cls):
            return name
        try:
            return cls(str(name).strip().lower())
        except ValueError:
            raise S2Error(f"unknown calibration method '{name}' (choose from "
                          f"{', '.join(m.value for m in cls)})") from None

    def ort(self) -> Any:
        from onnxruntime.quantization import CalibrationMethod

        return {CalibMethod.ENTROPY: CalibrationMethod.Entropy, CalibMethod.MINMAX: CalibrationMethod.MinMax,
                CalibMethod.PERCENTILE: CalibrationMethod.Percentile}[self]


@dataclass
class Exclusions:
    """Node names kept in float, by where they came from."""

    groups: dict[str, list[str]] = field(default_factory=dict)
    patterns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        seen: dict[str, None] = {}
        for names in (*self.groups.values(), *self.patterns.values()):
            seen.update(dict.fromkeys(names))
        return list(seen)

    def summary(self) -> dict[str, int]:
        return {k: len(v) for k, v in {**self.groups, **self.patterns}.items()}


# ----------------------------------------------------------------------------- graph structure

def find_detect_nodes(model: onnx.ModelProto | gs.Graph) -> list[str]:
    """The Detect convs and everything between them and the graph outputs (decode, optional NMS).

    Walking back from the outputs, every path ends at a convolution: the first ones met are the
    Detect head's 1x1 convs.
    """
    graph = load(model)
    found: dict[str, None] = {}
    convs = 0
    stack = list(graph.outputs)
    seen: set[str] = set()
    while stack:
        node = producer(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        found[node.name] = None
        if node.op == "Conv":
            convs += 1
            continue
        if node.op != "Shape":  # a Shape reads only the dimensions of its input
            stack.extend(node.inputs)
    if not convs:
        raise S2Error("cannot find the Detect head's convolutions behind the model outputs: is this "
                      "a YOLOv5 detection graph? Exclude nodes with --int8-exclude instead")
    return list(found)


def find_stem_nodes(model: onnx.ModelProto | gs.Graph) -> list[str]:
    """The convolutions that read the image itself (YOLOv5's 6x6 stride-2 stem)."""
    graph = load(model)
    inputs = {id(i) for i in graph.inputs}
    return [n.name for n in graph.nodes if n.op == "Conv" and id(n.inputs[0]) in inputs]


def resolve_exclusions(model: onnx.ModelProto | gs.Graph, specs: Sequence[str] | None) -> Exclusions:
    """Turn --int8-exclude values into node names.

    A value is a group (`detect`, `attention`, `stem`: the first conv), `default` (detect and
    attention), `none`, or a shell pattern matched against node names and op types (`/model.0/*`,
    `Sigmoid`). Values may be comma-separated.
    A pattern that matches no node is an error: a typo must not silently quantize a layer.
    """
    tokens = [t.strip() for s in (DEFAULT_EXCLUDE if specs is None else specs) for t in str(s).split(",")]
    tokens = [t for t in tokens if t]
    if "none" in tokens:
        if len(tokens) > 1:
            raise S2Error("--int8-exclude none cannot be combined with other values")
        return Exclusions()
    graph = load(model)
    ex = Exclusions()
    expanded: list[str] = []
    for t in tokens:
        expanded += list(DEFAULT_EXCLUDE) if t == "default" else [t]
    for t in dict.fromkeys(expanded):
        if t == "detect":
            ex.groups[t] = find_detect_nodes(graph)
        elif t == "attention":
            ex.groups[t] = sorted(attention_islands(graph))
            if not ex.groups[t]:
                log.info("no split attention softmax path in this graph: nothing to keep in float")
        elif t == "stem":
            ex.groups[t] = find_stem_nodes(graph)
        else:
            hits = [n.name for n in graph.nodes
                    if fnmatch.fnmatchcase(n.name, t) or fnmatch.fnmatchcase(n.op, t)]
            if not hits:
                raise S2Error(f"--int8-exclude '{t}' matches no node name or op type of the model "
                              f"(groups: {', '.join(EXCLUDE_GROUPS)}, default, none)")
            ex.patterns[t] = hits
    return ex


# --------------------------------------------------------------------------------- quantization

DEFAULT_METHOD = CalibMethod.PERCENTILE
DEFAULT_TRT_METHOD = CalibMethod.ENTROPY  # TensorRT's recommended calibrator for CNNs


def ort_extra_options() -> dict[str, Any]:
    return {
        "ActivationSymmetric": True,  # TensorRT: INT8 activations with zero point 0
        "WeightSymmetric": True,
        "CalibTensorRangeSymmetric": True,
        "QuantizeBias": False,  # TensorRT has no INT32 bias Q/DQ; it folds float biases itself
        # ORT would otherwise inflate weight scales (by 1000x on some channels) so that an INT32 bias
        # could be represented: a bias that stays float needs no such thing.
        "QDQDisableWeightAdjustForInt32Bias": True,
        "OpTypesToExcludeOutputQuantization": list(NO_OUTPUT_QUANT_OP_TYPES),
        "ForceQuantizeNoInputCheck": True,  # Slice/MaxPool/Resize get Q/DQ even after an FP32 producer
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
        # ORT then feeds calibration in chunks of this many batches, merging statistics, so memory
        # holds one chunk's intermediate tensors instead of the whole calibration set's.
        "CalibStridedMinMax": 1,
    }


def _ort_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise missing("onnxruntime", "export", "INT8 quantization") from None
    return quantization


def preprocess_for_quantization(src: Path, dst: Path) -> gs.Graph:
    """ORT's quant_pre_process (shape inference, constant folding), with named nodes: ORT excludes
    nodes by name."""
    import onnx

    q = _ort_quantization()
    try:
        q.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:  # best effort: quantization works without it, a little less tidily
        log.warning("ONNX Runtime's quantization pre-processing failed (%s); quantizing as is",
                    first_line(e))
        dst.write_bytes(src.read_bytes())
    model = onnx.load(str(dst))
    graph = load(model)
    name_unnamed(graph)
    onnx.save(save(graph, like=model), str(dst))
    return graph


def quantize_qdq(onnx_fp32: str | Path, out: str | Path, reader: Any, method: str | CalibMethod,
                 exclude: Sequence[str] | None = None, work_dir: str | Path | None = None
                 ) -> dict[str, Any]:
    """Write the Q/DQ INT8 model of `onnx_fp32` to `out` (atomically); return what was done."""
    import tempfile

    import onnx

    from s2trt.meta import write_bytes_atomic

    q = _ort_quantization()
    m = CalibMethod.from_name(method)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="s2trt-int8-", dir=work_dir) as tmp:
        pre = Path(tmp) / "pre.onnx"
        ex = resolve_exclusions(preprocess_for_quantization(Path(onnx_fp32), pre), exclude)
        log.info("INT8 (%s): kept in float: %s", m.value,
                 ", ".join(f"{k} {v} nodes" for k, v in ex.summary().items()) or "nothing")
        qpath = Path(tmp) / "int8.onnx"
        reader.rewind()
        chatter = io.StringIO()  # ORT prints its histogram progress to stdout
        with contextlib.redirect_stdout(chatter):
            q.quantize_static(str(pre), str(qpath), reader, quant_format=q.QuantFormat.QDQ,
                              op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True,
                              activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                              nodes_to_exclude=ex.nodes, calibrate_method=m.ort(),
                              extra_options=ort_extra_options())
        log.debug("%s", chatter.getvalue().strip())
        ort_model = onnx.load(str(qpath))
        graph = load(ort_model)
        rewired = keep_excluded_inputs_float(graph, ex.nodes)
        skips = quantize_residual_skips_only(graph)
        concats = share_concat_scales(graph)
        qmodel = save(graph, like=ort_model)
        stats = qdq_stats(graph)
        _copy_metadata(onnx.load(str(onnx_fp32), load_external_data=False), qmodel)
        write_bytes_atomic(Path(out), qmodel.SerializeToString())
    return {"method": m.value, "excluded": ex.summary(), "excluded_nodes": len(ex.nodes),
            "excluded_inputs_restored": rewired, "residual_adds_skip_only": skips,
            "concats_one_scale": concats,
            "calib_images": reader.num_images, "quantize_s": round(time.perf_counter() - t0, 1), **stats}


def keep_excluded_inputs_float(graph: gs.Graph, excluded: Iterable[str]) -> int:
    """Point excluded nodes back at the float tensors ORT quantized for a neighbour.

    ORT puts one Q/DQ pair on a tensor and rewires *every* consumer to it, so a Detect conv that
    shares its input with a neck conv would still read INT8-rounded values. Returns how many inputs
    were restored; Q/DQ pairs left without a consumer are removed.
    """
    names = set(excluded)
    restored = 0
    for node in graph.nodes:
        if node.name not in names:
            continue
        for k, t in enumerate(node.inputs):
            pair = qdq_source(t)
            if pair is not None:
                node.inputs[k] = pair[0].inputs[0]
                restored += 1
    graph.cleanup()
    return restored


# ------------------------------------------------------------------------- TensorRT's placement
#
# TensorRT developer guide, "Working with Quantized Types" > "Q/DQ Layer-Placement Recommendations":
# a Conv's output may fuse with a following element-wise Add only when that Add input carries no
# Q/DQ pair ("an extra pair of Q/DQ operators forces the separation of the convolution operator from
# the element-wise addition"), and the Add's *other* (skip) input decides whether the fused output is
# INT8. Concatenation: TensorRT moves a Q backwards through a Concat and elides it only when the
# scales of the Q nodes it meets are equal. NVIDIA's YOLOv5 QAT recipe (NVIDIA-AI-IOT/yolo_deepstream,
# yolov7_qat/quantization/rules.py, find_quantizer_pairs) makes the quantizers of every Concat input
# the Concat output's; ModelOpt's ONNX quantizer likewise removes the Q/DQ of an Add's non-residual
# (conv) input (modelopt.onnx.quantization.qdq_graph.build_non_residual_input_map).

# Pointwise activations TensorRT fuses into the convolution before it.
_CONV_EPILOGUE_OPS = {"Relu", "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu"}


def _conv_output(t: gs.Tensor) -> bool:
    """Whether a tensor is a Conv's output, directly or through its fused activation (SiLU included)."""
    node = producer(t)
    if node is None:
        return False
    if node.op == "Conv":
        return True
    if node.op in _CONV_EPILOGUE_OPS:
        return _conv_output(node.inputs[0])
    if node.op == "Mul" and len(node.inputs) == 2:  # SiLU: x * Sigmoid(x)
        for a, b in (node.inputs, node.inputs[::-1]):
            s = producer(b)
            if s is not None and s.op == "Sigmoid" and s.inputs[0] is a:
                return _conv_output(a)
    return False


def quantize_residual_skips_only(graph: gs.Graph) -> int:
    """Leave the conv branch of each residual Add unquantized so TensorRT fuses Conv + act + Add.

    A residual Add is one with a quantized input computed by a convolution (the branch) and another
    quantized input (the skip). The branch is the conv output that nothing else reads (a Bottleneck's
    cv2); the skip keeps its Q/DQ pair, which it shares with the branch's first conv. Returns how many
    Adds were changed.
    """
    # Readers as ORT left them: an Add rewired here must not change what the next Add sees.
    readers = {name: len(t.outputs) for name, t in graph.tensors().items()}
    changed = 0
    for add in (n for n in graph.nodes if n.op == "Add"):
        pairs = {k: qdq_source(t) for k, t in enumerate(add.inputs)}
        quantized = [k for k, p in pairs.items() if p is not None]
        if len(quantized) < 2:
            continue
        branches = [k for k in quantized if _conv_output(pairs[k][0].inputs[0])]
        if not branches:
            continue  # no conv feeds it: an Add of INT8 tensors, which TensorRT runs as one INT8 layer
        # The skip fans out (to the next block's conv); the branch has only its Q as a reader.
        sole = [k for k in branches if readers[pairs[k][0].inputs[0].name] == 1]
        k = (sole or branches)[-1]
        add.inputs[k] = pairs[k][0].inputs[0]
        changed += 1
    graph.cleanup()
    return changed


def share_concat_scales(graph: gs.Graph) -> int:
    """Give every quantized input of a Concat, and its output's quantizer, one scale and zero point.

    Tensors shared between Concats (a neck feature map concatenated twice) tie those Concats
    together. A group takes the largest scale of its Concat outputs' quantizers (the recipe's choice:
    the output range covers every input), or of its inputs' when no output is quantized. Returns how
    many Concats read quantized inputs.
    """
    import numpy as np
    import onnx_graphsurgeon as gs

    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    quant: dict[str, Any] = {}  # Q name -> Q node
    outputs: set[str] = set()  # Q nodes on Concat outputs
    count = 0
    for cat in (n for n in graph.nodes if n.op == "Concat"):
        members = [p[0] for t in cat.inputs if (p := qdq_source(t)) is not None]
        if not members:
            continue
        count += 1
        out_q = [c for c in cat.outputs[0].outputs if c.op == "QuantizeLinear"]
        outputs.update(q.name for q in out_q)
        members += out_q
        for q in members:
            quant[q.name] = q
            parent[find(q.name)] = find(members[0].name)

    def scale(q: Any) -> float:
        return float(np.asarray(q.inputs[1].values).reshape(-1)[0])

    groups: dict[str, list[Any]] = {}
    for name, q in quant.items():
        groups.setdefault(find(name), []).append(q)
    for k, members in enumerate(groups.values()):
        pick = [q for q in members if q.name in outputs] or members
        s = gs.Constant(f"concat_group{k}_scale", np.array(max(scale(q) for q in pick), np.float32))
        zp = gs.Constant(f"concat_group{k}_zero_point", np.asarray(members[0].inputs[2].values).copy())
        for q in members:
            for node in [q, *q.outputs[0].outputs]:
                if node.op in QDQ_OPS:
                    node.inputs[1], node.inputs[2] = s, zp
    return count


# ------------------------------------------------------------------------ INT8 + FP16 (mixed)

# QuantizeLinear/DequantizeLinear take an FP16 input/scale from opset 19 on; below it a Q/DQ pair in an
# FP16 graph would need a Cast on each side.
QDQ_FP16_OPSET = 19
# Ops that only move or select values: between a DQ and a Q TensorRT runs them on INT8 data.
_MOVE_OPS = {"Concat", "MaxPool", "Resize", "Slice", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
             "Identity"}


def mixed_int8_fp16(qmodel: Any) -> Any:
    """The Q/DQ graph with everything it leaves unquantized in FP16, for strongly typed TensorRT.

    TensorRT 11 builds a Q/DQ graph strongly typed: what is not quantized runs in the type the graph
    gives it, FP32 here, so the Detect convs and everything between Q/DQ pairs would stay FP32. This
    makes those FP16 with the exporter's converter (its FP32 islands: the box decode and the split
    attention's sum, MLP and softmax), and puts the Q/DQ pairs in FP16:
    FP16 scales, so a Q reads and a DQ writes FP16 directly. TensorRT 10.3 NvInfer.h, IQuantizeLayer:
    "For strongly typed networks, input data type must match the scale data type"; IDequantizeLayer:
    "output data type is inferred from scale data type". Inputs and outputs stay FP32.
    """
    from onnx import version_converter

    from s2trt.export.fp16 import to_fp16

    if _default_opset(qmodel) < QDQ_FP16_OPSET:
        qmodel = version_converter.convert_version(qmodel, QDQ_FP16_OPSET)
    mixed = to_fp16(qmodel)
    graph = load(mixed)
    n = qdq_in_fp16(graph)
    log.debug("INT8+FP16: %d Q/DQ nodes in FP16", n)
    return save(graph, like=mixed)


def _default_opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def qdq_in_fp16(graph: gs.Graph) -> int:
    """Remove the Casts an FP16 converter puts around Q/DQ pairs (FP16 → FP32 → Q, DQ → FP32 → FP16)
    by giving those Q/DQ nodes FP16 scales. Returns how many Q/DQ nodes now work in FP16.

    Int8 weights are re-rounded to their FP16 scale, which leaves them unchanged unless a scale is
    below FP16's normal range (1/16384) and loses precision there.
    """
    import numpy as np
    import onnx_graphsurgeon as gs
    from onnx import TensorProto

    F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
    tensors = graph.tensors()
    # Readers as the FP16 pass left them: the decisions below are about its graph, not the one this
    # pass is making.
    before = {name: list(t.outputs) for name, t in tensors.items()}

    def readers(t: gs.Tensor) -> list[gs.Node]:
        return before.get(t.name, [])

    made: dict[str, gs.Constant] = {}

    def half(scale: gs.Constant, weight: gs.Constant | None = None) -> tuple[gs.Constant, gs.Constant | None]:
        key = f"{scale.name}|{weight.name if weight is not None else None}"
        if key not in made:
            s32 = np.asarray(scale.values).astype(np.float32)
            s16 = np.asarray(np.maximum(s32.astype(np.float16), np.float16(2.0 ** -24)))
            made[key] = gs.Constant(f"{scale.name}_fp16", s16)
            if weight is not None:
                w = np.asarray(weight.values).astype(np.float32)
                ratio = s32 / s16.astype(np.float32)
                if ratio.ndim == 1:  # per output channel (axis 0)
                    ratio = ratio.reshape([-1] + [1] * (w.ndim - 1))
                w8 = np.clip(np.rint(w * ratio), -127, 127).astype(np.int8)
                made[f"{key}|weight"] = gs.Constant(f"{weight.name}_fp16scale", w8)
        return made[key], made.get(f"{key}|weight")

    # Data movement that reads only DQs (a Concat of INT8 tensors, MaxPool, Resize, Slice), which
    # the converter left in FP32, moves to FP16 with its pairs when every pair around it can; where
    # it also feeds an FP32 island, one Cast(->FP32) at that border, as in the FP16 graph.
    def is_dq(t: gs.Tensor) -> bool:
        return (p := producer(t)) is not None and p.op == "DequantizeLinear"

    def mover_inputs(n: gs.Node) -> list[gs.Tensor]:
        return list(n.inputs if n.op == "Concat" else n.inputs[:1])

    graph_outputs = {id(o) for o in graph.outputs}
    movers = {n.name: n for n in graph.nodes if n.op in _MOVE_OPS
              and all(is_dq(t) for t in mover_inputs(n))
              and readers(n.outputs[0]) and id(n.outputs[0]) not in graph_outputs}

    def dq_readers_fp16(dq: gs.Node) -> bool:
        after = readers(dq.outputs[0])
        return bool(after) and all(is_cast_to(r, F16) or r.name in movers for r in after)

    # Both halves of a pair have one type (a Q's input and a DQ's output are the scale's type, and
    # TensorRT fuses a pair only as a pair): FP16 where every DQ of the Q feeds FP16 compute or
    # data movement, else FP32 with its Casts left where they are.
    def pair_fp16(q: gs.Node) -> bool:
        after = readers(q.outputs[0])
        return bool(after) and all(r.op == "DequantizeLinear" and dq_readers_fp16(r) for r in after)

    def dq_fp16(dq: gs.Node) -> bool:
        q = producer(dq.inputs[0])
        return pair_fp16(q) if q is not None and q.op == "QuantizeLinear" else dq_readers_fp16(dq)

    while bad := [m for m, n in movers.items()
                  if not all(dq_fp16(producer(t)) for t in mover_inputs(n))
                  or not all(pair_fp16(r) for r in readers(n.outputs[0]) if r.op == "QuantizeLinear")]:
        for m in bad:
            del movers[m]

    rename: dict[str, gs.Tensor] = {}  # a Cast's output -> the FP16 tensor its readers take instead
    half_outputs: set[str] = {n.outputs[0].name for n in movers.values()}
    casts: dict[str, gs.Tensor] = {}  # border Casts made here: FP32 values into FP16 pairs, and back
    count = 0
    for node in list(graph.nodes):
        if node.op == "QuantizeLinear" and not is_constant(node.inputs[0]) and pair_fp16(node):
            src = producer(node.inputs[0])
            if is_cast_to(src, F32):  # FP16 compute -> Cast(->FP32) -> Q: the Cast goes
                node.inputs[0] = src.inputs[0]
            elif src is None or src.name not in movers:  # an FP32 value (the image, an FP32 node)
                t = node.inputs[0]
                name = f"{t.name}/to_fp16"  # the converter's own Cast name
                own = tensors.get(name)
                if own is not None and is_cast_to(producer(own), F16):
                    node.inputs[0] = own
                else:
                    if name not in casts:
                        casts[name] = add_cast(graph, t, F16, name)
                    node.inputs[0] = casts[name]
            node.inputs[1] = half(node.inputs[1])[0]
            count += 1
        elif node.op == "DequantizeLinear" and dq_fp16(node):
            weight = node.inputs[0] if is_constant(node.inputs[0]) else None
            node.inputs[1], w = half(node.inputs[1], weight)
            if w is not None:
                node.inputs[0] = w
            rename.update({r.outputs[0].name: node.outputs[0] for r in readers(node.outputs[0])
                           if r.op == "Cast"})
            half_outputs.add(node.outputs[0].name)
            count += 1
    for mover in movers.values():
        out = mover.outputs[0]
        for reader in readers(out):
            if is_cast_to(reader, F16):
                rename[reader.outputs[0].name] = out
            elif reader.op != "QuantizeLinear":  # an FP32 island reads it
                name = f"{out.name}/to_fp32"
                if name not in casts:
                    casts[name] = add_cast(graph, out, F32, name)
                replace_input(reader, out, casts[name])
    # The activation pairs left in FP32 get their scales rounded to FP16 values too: TensorRT elides a
    # Concat only when the scales it compares are equal, whichever type each pair has.
    for node in graph.nodes:
        if node.op in QDQ_OPS and not is_constant(node.inputs[0]) and is_constant(node.inputs[1]) \
                and node.inputs[1].dtype == np.float32:
            scale = node.inputs[1]
            key = f"{scale.name}|fp32"
            if key not in made:
                s16 = np.asarray(scale.values).astype(np.float16)
                made[key] = gs.Constant(f"{scale.name}_fp16_value", s16.astype(np.float32))
            node.inputs[1] = made[key]
    for node in graph.nodes:
        for k, t in enumerate(node.inputs):
            if t.name in rename:
                node.inputs[k] = rename[t.name]
    io = {id(t) for t in (*graph.inputs, *graph.outputs)}
    for name in half_outputs:  # the tensors that carry a type (value_info) say FP16 now
        if tensors[name].dtype is not None and id(tensors[name]) not in io:
            tensors[name].dtype = np.float16
    return count


def _copy_metadata(src: Any, dst: Any) -> None:
    """Carry the s2trt metadata over, with precision int8 (ORT keeps only its own props)."""
    props = {p.key: p.value for p in src.metadata_props}
    if props:
        props["precision"] = "int8"
    del dst.metadata_props[:]
    for k, v in props.items():
        entry = dst.metadata_props.add()
        entry.key, entry.value = k, v


def qdq_stats(model: onnx.ModelProto | gs.Graph) -> dict[str, int]:
    graph = load(model)
    ops = [n.op for n in graph.nodes]
    convs = [n for n in graph.nodes if n.op == "Conv"]
    int8_convs = sum(1 for c in convs if (p := producer(c.inputs[1])) is not None
                     and p.op == "DequantizeLinear")
    return {"quantize_nodes": ops.count("QuantizeLinear"), "dequantize_nodes": ops.count("DequantizeLinear"),
            "int8_convs": int8_convs, "float_convs": len(convs) - int8_convs}
