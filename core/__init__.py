"""s2trt: YOLOv5 + S2Attention detectors, exported to ONNX and TensorRT.

The Python API, imported on first use so that `import s2trt` stays light (no NumPy, OpenCV, torch
or onnxruntime until a name below is touched):

- `s2trt.Detector`: detection on images (`det(frame)`), videos, cameras and streams
  (`det.stream(...)`), with s2infer's pipeline and options (s2trt.runtime.api);
- `s2trt.export_model`: s2export from Python, returning the files written and the parity figures
  (s2trt.export.api).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it. These two imports run from the bottom layer to the faces on top;
# tests/test_layers.py exempts exactly them.
_LAZY = {
    "Detector": "s2trt.runtime.api",
    "Result": "s2trt.runtime.results",
    "Stream": "s2trt.runtime.api",
    "export_model": "s2trt.export.api",
    "ExportResult": "s2trt.export.api",
}

__all__ = ["Detector", "ExportResult", "Result", "Stream", "__version__", "export_model"]

if TYPE_CHECKING:
    from s2trt.export.api import ExportResult, export_model
    from s2trt.runtime.api import Detector, Stream
    from s2trt.runtime.results import Result


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 's2trt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
