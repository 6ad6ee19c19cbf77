"""YOLOv5's own ranges, checked on a model config before anything is built from it.

A config comes from a user's yaml or from inside a checkpoint's pickle, so it is untrusted data: a
`depth_multiple` of 1e5 alone asks for 300,000 Bottlenecks, an anchor count of 1e9 for a Python list
of two billion ints. The bounds are generous multiples of what the YOLOv5 family uses (n6..x6: depth
0.33-1.33, width 0.25-1.25, at most 1,280 channels, 9 repeats, 34 layers, 4 outputs of 3 anchors,
140 M parameters); the parameter count itself is checked once the config is known to be sane,
on a model built on PyTorch's meta device (shapes, no memory).
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

from s2trt.errors import S2Error

MAX_MULTIPLE = 4.0  # depth_multiple and width_multiple, exclusive of 0
MAX_REPEATS = 64  # a layer's `number`, before and after depth_multiple
MAX_LAYERS = 256
MAX_CHANNELS = 4096  # a layer's output channels after width_multiple
MAX_KERNEL = 15
MAX_CONV_STRIDE = 8
MAX_UPSAMPLE = 8
MAX_INPUT_CHANNELS = 64
MAX_CLASSES = 100_000
MAX_LEVELS = 8  # Detect outputs (P3..P10)
MAX_ANCHORS = 16  # anchors per output
MAX_PARAMS = 300_000_000  # about twice YOLOv5x6; 1.2 GB in FP32
MAX_CONFIG_BYTES = 1 << 20  # a yaml file; YOLOv5's are ~2 KB

# Arguments are numbers, names, None or short lists (Concat's sources, Detect's anchors).
_MAX_ARGS = 8
_MAX_NODES = 1024

_brief = reprlib.Repr()
_brief.maxlevel, _brief.maxlist, _brief.maxtuple, _brief.maxdict = 2, 4, 4, 4
_brief.maxstring, _brief.maxother, _brief.maxlong = 40, 40, 40


def brief(x: Any) -> str:
    """A bounded repr of untrusted data for an error message (no deep or shared structures)."""
    return _brief.repr(x)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    return (is_int(x) or isinstance(x, float)) and math.isfinite(x)


def _scalar_tree(x: Any, budget: list[int], depth: int = 0) -> bool:
    """Numbers, bools, None, short strings and small nested lists; False for anything else."""
    budget[0] -= 1
    if budget[0] < 0 or depth > 3:
        return False
    if x is None or isinstance(x, bool) or (is_int(x) and abs(x) < 2**31) or is_real(x):
        return True
    if isinstance(x, str):
        return len(x) <= 64
    if isinstance(x, list) and len(x) <= 64:
        return all(_scalar_tree(v, budget, depth + 1) for v in x)
    return False


def _need(ok: bool, source: str, what: str) -> None:
    if not ok:
        raise S2Error(f"{source}: {what}")


def check_anchors(anchors: Any, source: str) -> None:
    if is_int(anchors):
        _need(1 <= anchors <= MAX_ANCHORS, source,
              f"anchors {anchors} is outside 1..{MAX_ANCHORS} anchors per output")
        return
    _need(isinstance(anchors, list) and 1 <= len(anchors) <= MAX_LEVELS, source,
          f"anchors must be a list of 1..{MAX_LEVELS} lists of w,h pairs or a count (got "
          f"{brief(anchors)})")
    for level in anchors:
        _need(isinstance(level, list) and 2 <= len(level) <= 2 * MAX_ANCHORS and len(level) % 2 == 0
              and len(level) == len(anchors[0]), source,
              f"anchors {brief(level)}: every output needs the same number (1..{MAX_ANCHORS}) "
              "of w,h pairs")
        _need(all(is_real(v) and 0 < v <= 1e5 for v in level), source,
              f"anchors {brief(level)}: sizes must be positive numbers up to 100000 pixels")


def check_config(d: Any, source: str = "model config") -> dict[str, Any]:
    """Types and YOLOv5's ranges of a config dict; returns a shallow copy to build from."""
    _need(isinstance(d, dict), source, f"a model config is a mapping, not {type(d).__name__}")
    missing = [k for k in ("nc", "anchors", "backbone", "head") if k not in d]
    _need(not missing, source, f"not a YOLOv5 model config (missing {', '.join(missing)})")
    d = dict(d)
    nc = d["nc"]
    _need(is_int(nc) and 1 <= nc <= MAX_CLASSES, source,
          f"nc {brief(nc)} is not a class count in 1..{MAX_CLASSES}")
    for key in ("depth_multiple", "width_multiple"):
        v = d.setdefault(key, 1.0)
        _need(is_real(v) and 0 < v <= MAX_MULTIPLE, source,
              f"{key} {brief(v)} is outside YOLOv5's range (0, {MAX_MULTIPLE:g}]")
    ch = d.get("ch", 3)
    _need(is_int(ch) and 1 <= ch <= MAX_INPUT_CHANNELS, source,
          f"ch {brief(ch)} is not an input channel count in 1..{MAX_INPUT_CHANNELS}")
    act = d.get("activation")
    _need(act is None or (isinstance(act, str) and len(act) <= 64), source,
          f"activation {brief(act)} is not a short module expression such as nn.SiLU()")
    check_anchors(d["anchors"], source)
    layers = []
    for part in ("backbone", "head"):
        _need(isinstance(d[part], list), source, f"{part} must be a list of layers")
        layers += d[part]
    _need(1 <= len(layers) <= MAX_LAYERS, source,
          f"{len(layers)} layers; a YOLOv5 config has 1..{MAX_LAYERS}")
    for i, layer in enumerate(layers):
        _check_layer(i, layer, source)
    return d


def _check_layer(i: int, layer: Any, source: str) -> None:
    where = f"{source} layer {i}"
    _need(isinstance(layer, list) and len(layer) == 4, where,
          f"a layer is [from, number, module, args], not {brief(layer)}")
    f, n, name, args = layer
    sources = f if isinstance(f, list) else [f]
    _need(1 <= len(sources) <= MAX_LEVELS and all(is_int(x) for x in sources), where,
          f"'from' {brief(f)} must be a layer index or a short list of them")
    lowest = -1 if i == 0 else -i  # layer 0 reads the image; others any earlier layer
    _need(all(lowest <= x <= max(i - 1, -1) and (i > 0 or x == -1) for x in sources), where,
          f"'from' {brief(f)} does not name an earlier layer")
    _need(is_int(n) and 1 <= n <= MAX_REPEATS, where,
          f"number {brief(n)} is outside 1..{MAX_REPEATS} repeats")
    _need(isinstance(name, str) and len(name) <= 64, where, f"module {brief(name)} is not a name")
    _need(isinstance(args, list) and len(args) <= _MAX_ARGS
          and _scalar_tree(args, [_MAX_NODES]), where,
          f"args {brief(args)} must be a short list of numbers, names and lists")
