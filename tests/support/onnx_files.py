"""A minimal ONNX file with s2trt metadata, for the engine and calibration tests (ONNX is optional
there: without it the tests that need a file skip)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2trt.meta import ModelMeta


def write_onnx(path: Path, meta: ModelMeta) -> Path:
    """A real ONNX file carrying s2trt metadata (the graph itself is never parsed by the fake)."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["images"], ["output0"])], "g",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [onnx.helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, ["batch", 3, 64, 64])])
    model = onnx.helper.make_model(graph)
    onnx.helper.set_model_props(model, meta.to_props())
    onnx.save(model, str(path))
    return path
