"""ONNX Runtime backend (`s2infer --onnx`): CUDA execution provider when present, else the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from s2trt.errors import S2Error, missing
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.base import BatchedBackend, BatchSpec, check_meta_imgsz, output_layout
from s2trt.text import first_line

log = logging.getLogger(__name__)

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def choose_providers(available: list[str], device: str) -> list[str]:
    """Execution providers for --device: 'auto' prefers CUDA, 'cpu' forces the CPU, 'cuda' requires it."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.startswith("cuda"):
        raise S2Error("--device cuda asked for, but this onnxruntime has no CUDA execution provider "
                      f"(it has {', '.join(available)}): pip install onnxruntime-gpu")
    return ["CPUExecutionProvider"]


class OrtBackend(BatchedBackend):
    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0, spin: bool = False):
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing("onnxruntime", "ort", "s2infer --onnx") from None
        path = Path(path)
        if not path.is_file():
            raise S2Error(f"ONNX model not found: {path}")
        providers = choose_providers(ort.get_available_providers(), device)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # ORT's own warnings (e.g. unused initializers) are not the user's
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:
            # ORT's idle workers busy-wait for the next run by default; that steals the cores the
            # decode and encode threads need (measured 2-3x slower on a shared 2-core machine).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # ORT raises its own types for a corrupt or unsupported graph
            reason = first_line(e, 300)
            raise S2Error(f"cannot load {path} with onnxruntime ({reason})") from None
        self.meta = ModelMeta.from_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise S2Error(f"{path} has inputs {[(i.name, i.shape) for i in inputs]}; an s2trt model "
                          "has one input 'images' (batch, 3, h, w)")
        inp = inputs[0]
        self.input_name = inp.name
        self.input_dtype = _NP_TYPES.get(inp.type)
        if self.input_dtype is None:
            raise S2Error(f"{path}: input type {inp.type} is not supported (float or float16)")
        check_meta_imgsz(self.meta, inp.shape, str(path))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.layout = output_layout(self.output_names, str(path))
        b = inp.shape[0]
        self.spec = BatchSpec(b, b) if isinstance(b, int) and b > 0 else BatchSpec(1, 64)
        used = self.session.get_providers()[0]
        self.name = f"onnxruntime {ort.__version__} ({used})"
        log.info("%s: %s, input %s %s, batch %s, outputs %s", path.name, self.name, inp.name,
                 inp.shape, b if self.spec.fixed else "dynamic", self.layout)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.input_dtype is not np.float32:
            batch = batch.astype(self.input_dtype)
        outs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outs, strict=True))
