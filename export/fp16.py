"""FP16 graphs for strongly typed TensorRT (weights and compute FP16, inputs and outputs FP32).

The conversion is ONNX Runtime's float16 tool (a maintained fork of onnxconverter-common's). What
stays FP32, and why:
- the Detect decode (every node after the last convolutions): box centres and sizes are pixels up to
  the image size, where FP16's step is 0.25-0.5 px, and `(2*sigmoid)**2 * anchor` amplifies errors;
- the split attention's weight path (global sum over 3*H*W pixels, which can pass FP16's 65504, its
  MLP and the softmax over the branches); it is a few thousand FLOPs, so FP32 costs nothing.
In the TensorRT flavour that path is inside the S2SplitAttention node, which accumulates in FP32.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from s2trt.errors import S2Error

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Reductions and softmax are sensitive wherever they occur; added to ONNX Runtime's default list
# (NonMaxSuppression, TopK, Range, ...). Sigmoid is not: the SiLU activations are most of the graph.
SENSITIVE_OPS = ("Softmax", "ReduceSum", "ReduceMean")
# FP16 tolerance of the parity check, relative to each output group's scale (see parity.py).
# Measured with random weights: 9e-4 (yolov5s-s2, 640) and 1.6e-3 (yolov5n-s2, 160); with the trained
# demo model 6.4e-3 at 320 and 1.2e-2 at 640 — one class score of 25,200 x 5, 0.894 vs 0.906, while
# the 99.9th percentile is 1.2e-3 and the detections are the same. Trained weights have larger
# activations, so FP16's 11-bit mantissa costs more; 3e-2 leaves room for that and still fails a broken
# graph (a wrong op or a lost FP32 island gives errors of order 1).
FP16_TOL = 3e-2


def decode_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes between the graph outputs and the last Conv nodes before them (the Detect decode)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        t = stack.pop()
        node = producer.get(t)
        if node is None or node.name in seen or node.op_type == "Conv":
            continue
        seen.add(node.name)
        names.append(node.name)
        stack.extend(node.input)
    return names


def to_fp16(model: onnx.ModelProto, keep_fp32: list[str] | None = None) -> onnx.ModelProto:
    """FP16 copy of an FP32 graph; `keep_fp32` adds node names to the ones kept in FP32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from s2trt.export.surgery import split_attention_nodes

    blocked = sorted({*decode_nodes(model), *split_attention_nodes(model), *(keep_fp32 or [])})
    log.debug("FP16: keeping %d nodes in FP32", len(blocked))
    try:
        out = convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=False,
            op_block_list=[*DEFAULT_OP_BLOCK_LIST, *SENSITIVE_OPS], node_block_list=blocked)
    except Exception as e:  # the converter's own errors are bugs for us, but say where
        raise S2Error(f"FP16 conversion failed: {str(e).splitlines()[0][:200]}") from None
    out = _toposort(out)
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    return out


def _toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter appends its Cast nodes at the end; onnx.reference and TensorRT want graph order."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.toposort()
    return gs.export_onnx(graph)
