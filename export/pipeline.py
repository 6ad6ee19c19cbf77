"""The export pipeline as small stages over one state object (load -> ONNX -> checks -> flavours -> files).

Each stage is a plain function `stage(state)`, so a feature adds a stage instead of a branch in a long
function (the INT8 export adds its own after `fp32_graph`, reading `state.portable_fp32`).
`Timer` prints one progress line per stage and keeps the timings for the summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2trt.errors import S2Error, UsageError
from s2trt.export import onnx_export, parity
from s2trt.export.nms import NMSConfig
from s2trt.export.outputs import StagedFiles
from s2trt.export.plugin_reference import OP_TYPE
from s2trt.meta import ModelMeta, check_writable, sidecar_path

if TYPE_CHECKING:
    import onnx

    from s2trt.models import LoadedModel

log = logging.getLogger(__name__)

# Batch of the parity input for a dynamic-batch export: 2 exercises the symbolic dimension.
DYNAMIC_PARITY_BATCH = 2


@dataclass
class ExportRequest:
    weights: Path
    cfg: str | None = None
    names: str | None = None  # --names: a data yaml, a one-name-per-line file or "a,b,c"
    imgsz: list[int] = field(default_factory=lambda: [640])
    batch: int | None = 1  # None: dynamic batch
    opset: int = onnx_export.DEFAULT_OPSET
    fp16: bool = False
    nms: NMSConfig | None = None
    plugin: bool = True  # also write the TensorRT flavour with the S2SplitAttention node
    # The portable ONNX path, or a folder for <weights stem>.onnx: one that exists, ends in a slash
    # (kept as typed, since Path drops it) or has no suffix; a missing folder is made at commit time.
    output: str | Path | None = None
    simplify: bool = False
    full_reference: bool = False  # also run the TensorRT flavour whole under onnx.reference (slow)

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def portable_path(self) -> Path:
        name = self.weights.stem + ("-fp16" if self.fp16 else "") + ".onnx"
        if self.output is None:
            return self.weights.with_name(name)
        out = Path(self.output)
        if out.is_dir() or str(self.output).endswith(("/", os.sep)) or (not out.suffix and not out.exists()):
            return out / name
        if out.suffix != ".onnx":
            raise S2Error(f"--output {self.output} must be a folder or a file name ending in .onnx (for a "
                          f"new folder with a dot in its name, end it in a slash: {out}/)")
        return out


def tensorrt_path(portable: Path) -> Path:
    """model.onnx -> model.trt.onnx (its sidecar: model.trt.json)."""
    return portable.with_name(portable.stem + ".trt.onnx")


@dataclass
class Artifact:
    flavour: str
    path: Path
    model: onnx.ModelProto


@dataclass
class ExportState:
    req: ExportRequest
    loaded: LoadedModel | None = None
    imgsz: list[int] = field(default_factory=list)
    stride: int = 32
    x: Any = None  # the parity input (B, 3, h, w)
    x_source: str = ""
    torch_out: list[Any] = field(default_factory=list)  # PyTorch's outputs, in the graph's order
    portable_fp32: onnx.ModelProto | None = None
    portable: onnx.ModelProto | None = None  # at the requested precision, raw output
    tensorrt: onnx.ModelProto | None = None
    blocks: int = 0  # split-attention blocks replaced by the plugin
    parity: list[parity.Parity] = field(default_factory=list)
    nms_report: dict[str, Any] | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Timer:
    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("%s ...", name)
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        log.info("  %.1f s", dt)


def load(state: ExportState) -> None:
    from s2trt.models import load_checkpoint

    req = state.req
    check_writable(req.portable_path().parent)
    loaded = load_checkpoint(req.weights, req.cfg, names=req.names)
    if req.plugin and not loaded.has_s2attention:
        raise S2Error(f"{req.weights.name} has no S2Attention block, so there is nothing for the "
                      f"{OP_TYPE} plugin to replace: rerun with --no-plugin (the TensorRT engine is then "
                      "built from the portable graph)")
    if req.nms and loaded.nm:
        # The kept boxes' mask coefficients would have to follow them through the NMS outputs;
        # s2infer does the same NMS on the host and keeps them together.
        raise UsageError(f"--nms is not supported for segmentation models ({req.weights.name} has "
                         f"{loaded.nm} mask coefficients): export without --nms, s2infer runs NMS")
    state.loaded = loaded
    state.stride = max(loaded.stride)
    state.imgsz = onnx_export.check_imgsz(req.imgsz, state.stride)
    log.info("  %s: %d classes%s, stride %d, %s weights%s", req.weights.name, loaded.nc,
             f", {loaded.nm} mask coefficients" if loaded.nm else "", state.stride,
             "FP16" if loaded.half else "FP32", "" if loaded.has_s2attention else ", no S2Attention block")


def check_parity(state: ExportState, name: str, outs: list[Any], tol: float,
                 refs: list[Any] | None = None) -> None:
    """Compare each graph output with PyTorch's (`refs`, default all of `state.torch_out`; a
    Segment model's prototypes on their own scale) and stop the export at the first failure."""
    assert state.loaded is not None
    nm, refs = state.loaded.nm, state.torch_out if refs is None else refs
    if len(outs) != len(refs):
        raise S2Error(f"{name}: the graph has {len(outs)} outputs, the model {len(refs)}")
    for i, (out, ref) in enumerate(zip(outs, refs, strict=True)):
        label = name if not nm else f"{name}, {('detections', 'prototypes')[i]} (output{i})"
        state.parity.append(parity.compare(label, out, ref, tol, state.x_source, nm=nm if i == 0 else 0))
    parity.require(state.parity)


def fp32_graph(state: ExportState) -> None:
    """The portable FP32 graph, optionally simplified, checked against PyTorch."""
    req, loaded = state.req, state.loaded
    assert loaded is not None
    model = onnx_export.export_portable(loaded, state.imgsz, req.batch, req.opset)
    if req.simplify:
        model = simplify(model)
    batch = req.batch or DYNAMIC_PARITY_BATCH
    state.x, state.x_source = parity.sample_input(state.imgsz, batch, state.stride)
    state.torch_out = parity.run_torch_outputs(loaded.model, state.x)
    outs = parity.run_ort(model, state.x)
    for name, out in zip(onnx_export.output_names(loaded), outs, strict=True):
        onnx_export.set_output_shape(model, name, ["batch" if req.batch is None else req.batch,
                                                   *out.shape[1:]])
    check_parity(state, "portable fp32 (ONNX Runtime) vs PyTorch", outs, parity.FP32_TOL)
    state.portable_fp32 = state.portable = model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxslim
    except ImportError:
        from s2trt.errors import missing

        raise missing("onnxslim", "export", "--simplify") from None
    slim = onnxslim.slim(model)
    onnx_export.check_op_set(slim)
    return slim


def fp16_graph(state: ExportState) -> None:
    from s2trt.export.fp16 import FP16_TOL, to_fp16

    assert state.portable_fp32 is not None
    model = to_fp16(state.portable_fp32)
    check_parity(state, "portable fp16 (ONNX Runtime, FP16 tensors rounded) vs PyTorch",
                 parity.run_ort(parity.fp16_storage(model), state.x), FP16_TOL)
    state.portable = model


def tensorrt_graph(state: ExportState) -> None:
    """Replace the split attention by the plugin node and check the result against PyTorch.

    ONNX Runtime runs the standard ops and the plugin's NumPy reference runs the plugin node (run
    whole under onnx.reference, the graph took half of a 640 export; `full_reference` adds that
    independent check of the standard ops too).
    """
    from s2trt.export.surgery import insert_plugin

    assert state.portable_fp32 is not None and state.loaded is not None
    trt_model, state.blocks = insert_plugin(state.portable_fp32)
    onnx_export.check_op_set(trt_model, allowed_custom=frozenset({OP_TYPE}))
    check_parity(state, f"tensorrt fp32 (ONNX Runtime + {OP_TYPE} reference) vs PyTorch",
                 parity.run_ort_with_plugin(trt_model, state.x), parity.FP32_TOL)
    if state.req.full_reference:
        # onnx.reference is pure NumPy: one image is enough, and it shares no kernel with ORT.
        check_parity(state, f"tensorrt fp32 (onnx.reference + {OP_TYPE} reference) vs PyTorch",
                     parity.run_reference(trt_model, state.x[:1]), parity.FP32_TOL,
                     [o[:1] for o in state.torch_out])
    if state.req.fp16:
        from s2trt.export.fp16 import FP16_TOL, to_fp16

        # onnx.reference's FP16 convolutions take minutes at 640, even behind full_reference.
        trt_model = to_fp16(trt_model)
        check_parity(state, f"tensorrt fp16 (ONNX Runtime + {OP_TYPE} reference, FP16 tensors rounded) "
                     "vs PyTorch", parity.run_ort_with_plugin(parity.fp16_storage(trt_model), state.x),
                     FP16_TOL)
    state.tensorrt = trt_model


def nms_graphs(state: ExportState) -> None:
    """Append in-graph NMS to both flavours; check it against the runtime's host NMS."""
    from s2trt.export.nms import append_nms

    cfg = state.req.nms
    assert cfg is not None and state.portable is not None
    raw = parity.run_ort(state.portable, state.x)[0]
    state.portable = append_nms(state.portable, cfg)
    if state.tensorrt is not None:
        state.tensorrt = append_nms(state.tensorrt, cfg)
    state.nms_report = nms_agreement(parity.run_ort(state.portable, state.x), raw, cfg)
    if not state.nms_report.get("agree", True):
        log.warning("in-graph NMS and host NMS differ on the parity image: %s", state.nms_report)


def nms_agreement(outs: list[Any], raw: Any, cfg: NMSConfig) -> dict[str, Any]:
    """Compare the NMS outputs with the runtime's host NMS on the same raw output."""
    import numpy as np

    try:
        from s2trt.detect.boxes import from_nms_outputs, non_max_suppression
    except ImportError:
        return {"detections": [int(n) for n in np.ravel(outs[0])]}
    got = from_nms_outputs(*outs)
    o = cfg.options
    want = non_max_suppression(raw, o.conf_thres, o.iou_thres, max_det=o.max_det, max_nms=cfg.topk)
    same = all(len(g) == len(w) and np.allclose(g, w, atol=1e-3) for g, w in zip(got, want, strict=True))
    return {"detections": [len(g) for g in got], "host_detections": [len(w) for w in want],
            "agree": bool(same)}


def metadata(state: ExportState, flavour: str) -> ModelMeta:
    assert state.loaded is not None
    req = state.req
    return ModelMeta(names=list(state.loaded.names), imgsz=list(state.imgsz), stride=state.stride,
                     task="segment" if state.loaded.nm else "detect", nm=state.loaded.nm,
                     batch="dynamic" if req.batch is None else req.batch, flavour=flavour,
                     precision=req.precision, nms=req.nms.to_dict() if req.nms else None,
                     plugin=OP_TYPE if flavour == "tensorrt" else None,
                     versions={**onnx_export.versions(), "opset": str(req.opset)})


def write(state: ExportState) -> None:
    """Metadata into both graphs, then all files at once (none on failure)."""
    req = state.req
    portable_path = req.portable_path()
    flavours = [("portable", portable_path, state.portable)]
    if state.tensorrt is not None:
        flavours.append(("tensorrt", tensorrt_path(portable_path), state.tensorrt))
    staged = StagedFiles()
    for flavour, path, model in flavours:
        assert model is not None
        meta = metadata(state, flavour)
        onnx_export.set_metadata(model, meta)
        data = model.SerializeToString()
        onnx_export.check_model(data)
        staged.add(path, data)
        report = {**asdict(meta), "parity": [p.to_dict() for p in state.parity],
                  "source": {"weights": str(req.weights), "cfg": req.cfg,
                             "stored_fp16": bool(state.loaded and state.loaded.half)}}
        if flavour == "tensorrt":
            report["plugin_blocks"] = state.blocks
        if state.nms_report is not None:
            report["nms_check"] = state.nms_report
        staged.add(sidecar_path(path), (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
        state.artifacts.append(Artifact(flavour, path, model))
    state.written = staged.commit()


def run(state: ExportState) -> ExportState:
    """The whole .pt -> ONNX export: every stage, each timed and announced."""
    timer = Timer(state.timings)
    req = state.req
    with timer.stage("loading the checkpoint"):
        load(state)
    with timer.stage(f"exporting to ONNX (opset {req.opset}) and checking it against PyTorch"):
        fp32_graph(state)
    if req.fp16:
        with timer.stage("converting to FP16"):
            fp16_graph(state)
    if req.plugin:
        how = "onnx.reference" if req.full_reference else f"ONNX Runtime + {OP_TYPE} reference"
        with timer.stage(f"TensorRT flavour: {OP_TYPE} node, checked with {how}"):
            tensorrt_graph(state)
    if req.nms:
        with timer.stage("appending in-graph NMS"):
            nms_graphs(state)
    with timer.stage("writing files"):
        write(state)
    return state
