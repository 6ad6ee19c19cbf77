"""PyTorch -> portable ONNX: trace, fold the shape arithmetic away, check the op set, attach metadata.

The TorchScript exporter writes every `x.shape[i]` as Shape/Gather arithmetic and the Detect grid as
Range/Expand chains, even where the export size fixes the value. `fold_constants` evaluates those
(shape inference + onnx-graphsurgeon constant folding, repeated until nothing changes), so the graph
that leaves this module has only the batch dimension symbolic and no helper chains for TensorRT to
trip over.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from s2trt.errors import S2Error
from s2trt.text import first_line

if TYPE_CHECKING:
    import onnx

    from s2trt.meta import ModelMeta
    from s2trt.models import LoadedModel

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "output0"
# A Segment model's second output: its mask prototypes (B, nm, H/4, W/4; H/2, W/2 for a P2 head), as
# yolov5's own export names it.
PROTO_NAME = "output1"
DEFAULT_OPSET = 17
MIN_OPSET = 17  # Slice/Concat/Softmax semantics and NonMaxSuppression as TensorRT 10 parses them

# Ops that mean in-place indexing leaked into the graph (docs/DESIGN.md §1), or helper chains that the
# folding should have removed. None belongs in an exported s2trt graph.
FORBIDDEN_OPS = frozenset({"ScatterND", "ScatterElements", "Scatter", "Where", "Expand",
                           "ConstantOfShape", "Loop", "If", "NonZero"})


def check_imgsz(imgsz: Sequence[int], stride: int) -> list[int]:
    """[h, w] from one or two ints, each a positive multiple of the model stride."""
    if len(imgsz) not in (1, 2):
        raise S2Error(f"--imgsz takes one or two sizes (h w), got {len(imgsz)}")
    hw = [int(imgsz[0]), int(imgsz[-1])]
    if any(v <= 0 or v % stride for v in hw):
        raise S2Error(f"image size {hw[0]}x{hw[1]} is not a multiple of the model stride {stride}: "
                      f"use e.g. --imgsz {max(stride, round(hw[0] / stride) * stride)}")
    return hw


def versions() -> dict[str, str]:
    """Versions of the tools that made the graph, for the metadata (support questions start here)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("s2trt", "torch", "onnx", "onnxruntime", "onnx-graphsurgeon"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def output_names(loaded: LoadedModel) -> list[str]:
    """The graph outputs: detections, and for a Segment model its prototypes after them."""
    return [OUTPUT_NAME, PROTO_NAME] if loaded.nm else [OUTPUT_NAME]


def torch_to_onnx(loaded: LoadedModel, imgsz: Sequence[int], batch: int | None,
                  opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace the model (BatchNorm folded into the convs) to ONNX; batch None = dynamic batch."""
    import onnx
    import torch

    from s2trt.models.yolo import fuse_conv_bn

    if opset < MIN_OPSET:
        raise S2Error(f"--opset {opset} is too old: s2trt exports opset {MIN_OPSET} or newer")
    model = fuse_conv_bn(copy.deepcopy(loaded.model)).eval()
    x = torch.zeros(batch or 1, 3, *imgsz)
    outputs = output_names(loaded)
    dynamic = {t: {0: "batch"} for t in (INPUT_NAME, *outputs)} if batch is None else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in favour of dynamo, which is slower and needs
        # onnxscript; this one traces the model into plain Slice/Concat graphs in about a second.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), buf, opset_version=opset, dynamo=False,
                              input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes=dynamic, do_constant_folding=True)
        except Exception as e:  # an opset the installed torch cannot write, mostly
            raise S2Error(f"torch.onnx.export failed at opset {opset}: {first_line(e, 200)}"
                          ) from None
    return onnx.load_from_string(buf.getvalue())


def fold_constants(model: onnx.ModelProto, max_rounds: int = 8) -> onnx.ModelProto:
    """Fold shape arithmetic and constant subgraphs until the graph stops shrinking; every node named."""
    import onnx
    import onnxruntime

    from s2trt.export.graph import load, name_unnamed, save

    onnxruntime.set_default_logger_severity(3)  # its optimizer's notes on the folded subgraphs
    for _ in range(max_rounds):
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        graph = load(model)
        before = len(graph.nodes)
        graph.fold_constants(error_ok=False).cleanup(remove_unused_graph_inputs=False).toposort()
        if len(graph.nodes) == before:
            break
        model = save(graph, like=model)
    name_unnamed(graph)  # the FP16 converter's block list and error messages refer to nodes by name
    return onnx.shape_inference.infer_shapes(save(graph, like=model))


def set_output_shape(model: onnx.ModelProto, name: str, shape: Sequence[int | str]) -> None:
    """Write the measured output shape into the graph (the tracer leaves N symbolic)."""
    out = next(o for o in model.graph.output if o.name == name)
    dims = out.type.tensor_type.shape.dim
    del dims[:]
    for d in shape:
        dim = dims.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


def check_op_set(model: onnx.ModelProto, allowed_custom: frozenset[str] = frozenset()) -> None:
    """Refuse graphs with in-place-indexing remnants or unexpected custom-domain nodes."""
    bad = sorted({n.op_type for n in model.graph.node if n.op_type in FORBIDDEN_OPS})
    if bad:
        raise S2Error(f"the exported graph contains {', '.join(bad)}: the model writes into tensors "
                      "in place or has data-dependent shapes, which s2trt does not export")
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                     if n.domain not in ("", "ai.onnx") and n.op_type not in allowed_custom})
    if custom:
        raise S2Error(f"the exported graph contains custom ops {', '.join(custom)}")


def check_model(model: onnx.ModelProto | bytes) -> None:
    """onnx.checker on a model or its serialization (pass the bytes when you have them: a 640
    graph is 38 MB, and each serialization costs a few tenths of a second)."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as e:
        raise S2Error(f"onnx.checker rejects the exported graph: {first_line(e, 300)}"
                      ) from None


def set_metadata(model: onnx.ModelProto, meta: ModelMeta, extra: dict[str, Any] | None = None) -> None:
    """Replace the graph's metadata_props with the s2trt contract (docs/DESIGN.md §3)."""
    import json

    props = meta.to_props()
    for k, v in (extra or {}).items():
        props[k] = v if isinstance(v, str) else json.dumps(v)
    del model.metadata_props[:]
    for k, v in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name, model.producer_version = "s2trt", meta.versions.get("s2trt", "")


def export_portable(loaded: LoadedModel, imgsz: Sequence[int], batch: int | None,
                    opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The portable graph: standard ops only, checked, shape arithmetic folded."""
    model = fold_constants(torch_to_onnx(loaded, imgsz, batch, opset))
    check_op_set(model)
    check_model(model)
    log.debug("portable graph ops: %s", dict(op_counts(model)))
    return model
