"""The model a run uses: the backend for an engine, an ONNX file, a checkpoint or Triton servers,
opened and checked against the detection options. s2infer and `s2trt.Detector` both open theirs
here, so they accept and refuse the same models with the same messages.

Each backend is imported only when it is asked for: an engine or ONNX file never imports torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error, UsageError

if TYPE_CHECKING:  # s2infer --help imports this module: no NumPy, no OpenCV at import
    from s2trt.runtime.backends.base import Backend

log = logging.getLogger("s2trt.runtime")

# Triton's default batch: each frame of a batch is its own gRPC request, all sent before waiting on
# any, so this many are in flight for the server's dynamic batcher.
TRITON_BATCH = 8
KINDS = ("engine", "onnx", "weights", "triton")
TRITON_SCHEME = "triton://"
_SUFFIXES = {".engine": "engine", ".plan": "engine", ".trt": "engine", ".onnx": "onnx", ".pt": "weights",
             ".pth": "weights"}


@dataclass(frozen=True)
class ModelRef:
    """Which model: `kind` is one of KINDS; `where` the file, or the Triton servers' host:port list."""

    kind: str
    where: str

    @classmethod
    def parse(cls, model: str | os.PathLike[str]) -> ModelRef:
        """"m.engine" | "m.onnx" | "best.pt" | "triton://host:port[,host:port...]", by suffix or scheme."""
        text = os.fspath(model)
        if text.startswith(TRITON_SCHEME):
            servers = text.removeprefix(TRITON_SCHEME).strip("/")
            if not servers:
                raise S2Error(f"{text}: name the Triton servers, triton://host:port[,host:port...]")
            return cls("triton", servers)
        kind = _SUFFIXES.get(Path(text).suffix.lower())
        if kind is None:
            raise S2Error(f"{text}: cannot tell what kind of model this is: give a TensorRT engine "
                          "(.engine), an ONNX file (.onnx), a YOLOv5 checkpoint (.pt) or "
                          "triton://host:port")
        return cls(kind, text)


@dataclass(frozen=True)
class BackendOptions:
    """How to run the model: s2infer's model options (see `s2infer --help`)."""

    device: str = "auto"
    plugin_lib: str | None = None  # engine: the S2SplitAttention library
    imgsz: tuple[int, int] | None = None  # checkpoint: the input size (default 640); else checked
    cfg: str | None = None  # checkpoint: the model config of a plain state_dict
    half: bool = False  # checkpoint: FP16 on a GPU
    threads: int = 0  # ONNX Runtime / PyTorch CPU threads (0: all cores)
    triton_model: str = "s2trt_detector"
    cuda_graphs: bool = True  # engine
    gpu_preprocess: bool | None = None  # engine: None = when the kernels library is installed
    # engine: also load the plugin library that came with it (beside it, with the SHA-256 its sidecar
    # records); it runs code, so only for an engine from a source the operator trusts. False leaves
    # it to $S2TRT_TRUST_ENGINE_PLUGIN, as s2infer without --trust-engine-plugin does.
    trust_engine_plugin: bool = False


GPU_PREPROCESS = {"auto": None, "on": True, "off": False}  # --gpu-preprocess -> gpu_preprocess


def parse_gpu_preprocess(choice: str) -> bool | None:
    """BackendOptions.gpu_preprocess for --gpu-preprocess auto | on | off."""
    if choice not in GPU_PREPROCESS:
        raise UsageError(f"--gpu-preprocess {choice}: choose auto, on or off")
    return GPU_PREPROCESS[choice]


def open_backend(ref: ModelRef, opts: BackendOptions, detect: DetectOptions) -> Backend:
    """The backend for the model, unchecked (see `open_model`)."""
    if ref.kind == "triton":
        from s2trt.runtime.backends.triton import TritonBackend

        return TritonBackend(ref.where, opts.triton_model, conf_thres=detect.conf_thres,
                             iou_thres=detect.iou_thres, agnostic=detect.agnostic, max_det=detect.max_det)
    if ref.kind == "engine":
        from s2trt.runtime.backends.trt import TrtBackend

        return TrtBackend(ref.where, opts.plugin_lib, opts.device, cuda_graphs=opts.cuda_graphs,
                          gpu_preprocess=opts.gpu_preprocess, trust_engine_plugin=opts.trust_engine_plugin)
    if ref.kind == "onnx":
        from s2trt.runtime.backends.ort import OrtBackend

        return OrtBackend(ref.where, opts.device, opts.threads)
    from s2trt.runtime.backends.pytorch import TorchBackend

    return TorchBackend(ref.where, opts.imgsz or (640, 640), opts.device, opts.cfg, opts.half, opts.threads)


def open_model(ref: ModelRef, opts: BackendOptions, detect: DetectOptions) -> Backend:
    """The backend, checked: the input size asked for, the classes asked for; a warning for the
    options that a graph ending in its own NMS cannot apply. Closed again when a check fails."""
    if opts.half and ref.kind != "weights":
        log.warning("--half does nothing with --%s: the precision of an exported model is fixed at "
                    "export (s2export --fp16 makes an FP16 one)", ref.kind)
    backend = open_backend(ref, opts, detect)
    try:
        _check_imgsz(ref, opts, backend)
        detect.check_classes(backend.meta.names)
        warn_ignored_nms_options(detect, backend.meta.nms)
    except BaseException:
        backend.close()
        raise
    return backend


def _check_imgsz(ref: ModelRef, opts: BackendOptions, backend: Backend) -> None:
    if opts.imgsz is None or ref.kind == "weights":
        return
    if tuple(opts.imgsz) != tuple(backend.imgsz):
        (want_h, want_w), (h, w) = opts.imgsz, backend.imgsz
        raise S2Error(f"--imgsz {want_h} {want_w} does not match the model, whose input is {h}x{w} "
                      f"(fixed at export): drop --imgsz or re-export with --imgsz {want_h} {want_w}")


def warn_ignored_nms_options(detect: DetectOptions, nms: dict | None) -> None:
    """A graph that ends in NMS applied its own thresholds at export; say which options cannot apply."""
    if not nms:
        return
    ignored = []
    if detect.iou_thres != nms.get("iou_thres", detect.iou_thres):
        ignored.append(f"--iou-thres {detect.iou_thres} (exported with {nms['iou_thres']})")
    if detect.agnostic:
        ignored.append("--agnostic-nms (the exported NMS is class-aware)")
    if detect.conf_thres < nms.get("conf_thres", detect.conf_thres):
        ignored.append(f"--conf-thres {detect.conf_thres} below the exported {nms['conf_thres']}")
    if ignored:
        log.warning("the model ends in its own NMS, so these options cannot apply: %s; re-export with "
                    "s2export --nms and the settings you want", "; ".join(ignored))
