"""The one place that knows how TensorRT versions differ (docs/DESIGN.md §4-§5).

The builder, the runtime and the INT8 calibrator import TensorRT through `import_tensorrt()` and ask
this module what a version can do. Conventions that tests/trt/test_trt_api.py relies on to check every
TensorRT attribute against the real 10.3, recent 10.x and 11.x Python modules:

- the TensorRT module is always held in a variable named `trt`;
- code that only exists on some major versions sits in a function or class decorated with
  `@for_trt(max_major=10)` / `@for_trt(min_major=11)`, or in a branch of
  `if is_strongly_typed_only(trt): <11+> else: <10 and older>`; everything else must work on all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from s2trt.errors import MissingDependencyError
from s2trt.text import first_line

_T = TypeVar("_T")


def for_trt(min_major: int | None = None, max_major: int | None = None) -> Callable[[_T], _T]:
    """Mark a function or class as valid only for these TensorRT major versions (inclusive).

    A marker for the API conformance test, which checks the attributes used inside against those
    versions only; callers choose the right variant with is_strongly_typed_only().
    """
    def mark(obj: _T) -> _T:
        obj.__trt_majors__ = (min_major, max_major)  # type: ignore[attr-defined]
        return obj
    return mark


def import_tensorrt(purpose: str) -> Any:
    """The tensorrt module, or a MissingDependencyError that says how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and (e.name or "").startswith("tensorrt"):
            raise MissingDependencyError(
                f"{purpose} needs TensorRT, whose Python module is not installed: on Jetson it comes "
                "with JetPack (sudo apt install python3-libnvinfer), elsewhere use an NVIDIA TensorRT "
                "container (nvcr.io/nvidia/tensorrt) or pip install tensorrt "
                "--extra-index-url https://pypi.nvidia.com") from None
        reason = first_line(e)
        raise MissingDependencyError(
            f"{purpose} needs TensorRT, but its Python module cannot load the TensorRT libraries "
            f"({reason}): install the libraries of the same version (JetPack, the NVIDIA container, "
            "or pip install tensorrt-cu12-libs from https://pypi.nvidia.com)") from None
    return trt


def trt_version(trt: Any) -> tuple[int, int, int]:
    """(major, minor, patch) of a tensorrt module; '10.7.0.post1' and '10.3.0.26' both parse."""
    return parse_version(str(trt.__version__))


def parse_version(text: str) -> tuple[int, int, int]:
    nums = [int(p) for p in re.findall(r"\d+", text)[:3]] + [0, 0, 0]
    return nums[0], nums[1], nums[2]


def version_str(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


def is_strongly_typed_only(trt: Any) -> bool:
    """TensorRT 11 removed the precision builder flags and implicit INT8 calibration."""
    return trt_version(trt)[0] >= 11


# ---------------------------------------------------------------- network creation and precision

def create_network(trt: Any, builder: Any, strongly_typed: bool) -> Any:
    """A strongly typed network for a graph that carries its own types (and always on 11, where the
    flag is deprecated and ignored: every network is strongly typed); the flag exists since 10.x."""
    if strongly_typed:
        return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    return builder.create_network(0)  # explicit batch is the only mode since TensorRT 10


@for_trt(max_major=10)
def set_precision_flags(trt: Any, config: Any, precision: str, calibrator: Any = None) -> None:
    """TensorRT ≤ 10: precision is a builder choice; FP16 stays on under INT8 for the layers
    that have no INT8 kernel (and for the Detect head that a Q/DQ graph leaves unquantized)."""
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator


@for_trt(max_major=10)
def set_calibration_profile(config: Any, profile: Any) -> None:
    config.set_calibration_profile(profile)


def layer_name_matches(name: str, pattern: str) -> bool:
    """trtexec's layer-name match: equal, or around its one '*'."""
    if "*" not in pattern:
        return name == pattern
    head, tail = pattern.split("*", 1)
    return len(name) >= len(head) + len(tail) and name.startswith(head) and name.endswith(tail)


@for_trt(max_major=10)
def pin_fp32_layers(trt: Any, config: Any, network: Any, patterns: list[str]) -> list[str]:
    """Run the named layers in FP32 with FP32 outputs in a weakly typed network, as trtexec's
    `--precisionConstraints=obey --layerPrecisions=<p>:fp32,... --layerOutputTypes=<p>:fp32,...`
    does (samples/common/sampleEngines.cpp, setLayerPrecisions/setLayerOutputTypes): an exact name
    is pinned as given; a wildcard match skips layers that compute shapes or integers. The Constant
    and Shuffle layers that feed only pinned layers are pinned too. Returns the names of the layers
    pinned."""
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    integer = (trt.DataType.INT32, trt.DataType.INT64, trt.DataType.BOOL, trt.DataType.UINT8)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        exact = layer.name in patterns
        if not exact and not any(layer_name_matches(layer.name, p) for p in patterns if "*" in p):
            continue
        first_in = layer.get_input(0) if layer.num_inputs else None
        out = layer.get_output(0)
        # A constant's output type is the type of its weights.
        skip_precision = not exact and (
            layer.precision in integer or (layer.type == trt.LayerType.CONSTANT and out.dtype in integer)
            or (first_in is not None and first_in.is_shape_tensor)
            or (first_in is not None and first_in.dtype in integer and out.dtype in integer))
        skip_outputs = not exact and (
            layer.precision in (trt.DataType.INT32, trt.DataType.BOOL) or out.is_shape_tensor
            or (layer.type == trt.LayerType.CONSTANT and out.dtype == trt.DataType.INT32))
        if not skip_precision:
            layer.precision = trt.DataType.FLOAT
        if not skip_outputs:
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.DataType.FLOAT)
        if not (skip_precision and skip_outputs):
            pinned.append(layer.name)
    return pinned + _pin_island_feeders(trt, network, set(pinned))


@for_trt(max_major=10)
def _pin_island_feeders(trt: Any, network: Any, pinned: set[str]) -> list[str]:
    """The Constant and Shuffle layers that feed pinned layers only, pinned too (returned by name).

    onnx-tensorrt turns an initializer operand into a Constant layer, and a broadcast into a Shuffle,
    named `(Unnamed Layer* n) [Constant]`: no island pattern names them, and under --fp16 the builder
    would store the island's constants (the anchor grid, the strides) in FP16.
    """
    readers: dict[str, list[str]] = {}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    for layer in layers:
        for k in range(layer.num_inputs):
            tensor = layer.get_input(k)
            if tensor is not None:
                readers.setdefault(tensor.name, []).append(layer.name)
    integer = (trt.DataType.INT32, trt.DataType.INT64, trt.DataType.BOOL, trt.DataType.UINT8)
    added: list[str] = []
    changed = True
    while changed:  # a Constant feeds a Shuffle that feeds the island: pinned in two rounds
        changed = False
        for layer in layers:
            if layer.name in pinned or layer.type not in (trt.LayerType.CONSTANT, trt.LayerType.SHUFFLE):
                continue
            outs = [layer.get_output(j) for j in range(layer.num_outputs)]
            users = [r for tensor in outs for r in readers.get(tensor.name, [])]
            if not users or any(u not in pinned for u in users) \
                    or any(tensor.dtype in integer or tensor.is_shape_tensor for tensor in outs):
                continue
            layer.precision = trt.DataType.FLOAT
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.DataType.FLOAT)
            pinned.add(layer.name)
            added.append(layer.name)
            changed = True
    return added
