"""The module registry and YOLOv5's parse_model, driven by it.

Every module a YOLOv5 yaml may name is registered once, here: its class, how its output channels
and constructor arguments follow from the yaml (channel rule), how it changes the spatial size
(size rule) and which of its arguments are checked against YOLOv5's ranges before it is built.
Building, planning (models/yolo.py plan_model) and checking a config are lookups in this table.
A name is looked up, never eval()'d.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from s2trt.errors import S2Error
from s2trt.models import common as c
from s2trt.models import limits
from s2trt.models.limits import brief, check_anchors, is_int, is_real
from s2trt.models.releases import LATEST, Release
from s2trt.models.s2attention import S2Attention
from s2trt.models.yolo import Detect, Segment


def make_divisible(x: float, divisor: int = 8) -> int:
    return math.ceil(x / divisor) * divisor


@dataclass
class Layer:
    """One yaml layer while it is parsed: what the rules read and rewrite."""

    i: int
    f: Any
    n: int
    args: list[Any]
    ch: list[int]
    gw: float
    no: int  # Detect's outputs (na * (nc + 5)); a layer that asks for exactly this is not scaled

    @property
    def where(self) -> str:
        return f"model config layer {self.i}"


# --- channel rules: (layer) -> (constructor args, output channels, repeats left outside) -------

def _scaled(inside: bool = False) -> Callable[[Layer], tuple[list, Any, int]]:
    """c1 from the input, c2 from args[0] times width_multiple; `inside`: the block repeats its
    own inner module n times (C3 and its kin), so n becomes its third argument."""

    def rule(lay: Layer) -> tuple[list, Any, int]:
        c1, c2 = lay.ch[lay.f], lay.args[0]
        if c2 != lay.no and is_real(c2):
            c2 = make_divisible(c2 * lay.gw, 8)
        args = [c1, c2, *lay.args[1:]]
        if inside:
            args.insert(2, lay.n)
            return args, c2, 1
        return args, c2, lay.n

    return rule


def _same(lay: Layer) -> tuple[list, Any, int]:
    return lay.args, lay.ch[lay.f], lay.n


def _batchnorm(lay: Layer) -> tuple[list, Any, int]:
    return [lay.ch[lay.f]], lay.ch[lay.f], lay.n


def _s2attention(lay: Layer) -> tuple[list, Any, int]:
    # The yaml's argument is the width before width_multiple; the block maps its input channels
    # to the same number, so it is sized from the input (docs/DESIGN.md §1).
    return [lay.ch[lay.f]], lay.ch[lay.f], lay.n


def _concat(lay: Layer) -> tuple[list, Any, int]:
    return lay.args, sum(lay.ch[x] for x in lay.f), lay.n


def _contract(lay: Layer) -> tuple[list, Any, int]:
    return lay.args, lay.ch[lay.f] * lay.args[0] ** 2, lay.n


def _expand(lay: Layer) -> tuple[list, Any, int]:
    return lay.args, lay.ch[lay.f] // lay.args[0] ** 2, lay.n


def _head(nargs: int) -> Callable[[Layer], tuple[list, Any, int]]:
    """Detect [nc, anchors] / Segment [nc, anchors, nm, npr]: the input channels go last."""

    def rule(lay: Layer) -> tuple[list, Any, int]:
        args = list(lay.args)
        if len(args) != nargs:
            usage = "Detect takes [nc, anchors]" if nargs == 2 else \
                "Segment takes [nc, anchors, masks, prototypes]"
            raise S2Error(f"{lay.where}: {usage}")
        check_anchors(args[1], lay.where)
        f = lay.f if isinstance(lay.f, list) else [lay.f]
        args.append([lay.ch[x] for x in f])
        if isinstance(args[1], int):  # anchors given as a count: values come from the weights
            args[1] = [list(range(args[1] * 2))] * len(f)
        if len(args[1]) != len(f):
            raise S2Error(f"{lay.where}: {'Detect' if nargs == 2 else 'Segment'} reads {len(f)} "
                          f"layers but has anchors for {len(args[1])}")
        if nargs == 4:
            for k, what in ((2, "mask"), (3, "prototype")):
                if not (is_int(args[k]) and 1 <= args[k] <= limits.MAX_CHANNELS):
                    raise S2Error(f"{lay.where}: {brief(args[k])} {what} channels; YOLOv5 uses "
                                  f"1..{limits.MAX_CHANNELS}")
            args[3] = make_divisible(args[3] * lay.gw, 8)
        return args, None, lay.n

    return rule


# --- size rules: (built module, input height or heights, layer index) -> output height --------

def _keep(m: nn.Module, h: Any, i: int) -> Any:
    return h


def _conv_out(conv: nn.Conv2d | nn.MaxPool2d, h: int) -> int:
    k, s, p, d = (v[0] if isinstance(v, tuple) else v
                  for v in (conv.kernel_size, conv.stride, conv.padding, conv.dilation))
    return (h + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_size(*path: str) -> Callable[[nn.Module, Any, int], Any]:
    """The size through the convolutions at these attribute paths, in order."""

    def rule(m: nn.Module, h: Any, i: int) -> Any:
        for p in path:
            h = _conv_out(m.get_submodule(p), h)
        return h

    return rule


def _focus(m: nn.Module, h: Any, i: int) -> Any:
    if h % 2:
        raise S2Error(f"model config layer {i}: Focus needs an even input size, not {h}")
    return _conv_out(m.conv.conv, h // 2)


def _ghost_bottleneck(m: nn.Module, h: Any, i: int) -> Any:
    dw = m.conv[1]
    return _conv_out(dw.conv, h) if isinstance(dw, c.Conv) else h


def _odd_pools(m: nn.Module, h: Any, i: int) -> Any:
    pools = [m.m] if isinstance(m.m, nn.MaxPool2d) else list(m.m)
    if any(p.kernel_size % 2 == 0 for p in pools):
        raise S2Error(f"model config layer {i}: {type(m).__name__} needs odd kernels, not "
                      f"{[p.kernel_size for p in pools]}")
    return h


def _upsample(m: nn.Module, h: Any, i: int) -> Any:
    return math.floor(h * m.scale_factor)


def _maxpool(m: nn.Module, h: Any, i: int) -> Any:
    return _conv_out(m, h)


def _zeropad(m: nn.Module, h: Any, i: int) -> Any:
    return h + m.padding[2] + m.padding[3]  # (left, right, top, bottom)


def _contract_size(m: nn.Module, h: Any, i: int) -> Any:
    if h % m.gain:
        raise S2Error(f"model config layer {i}: Contract by {m.gain} of a {h}-pixel input")
    return h // m.gain


def _expand_size(m: nn.Module, h: Any, i: int) -> Any:
    return h * m.gain


def _transposed(m: nn.Module, h: Any, i: int) -> Any:
    return ((h - 1) * m.stride[0] - 2 * m.padding[0] + m.dilation[0] * (m.kernel_size[0] - 1)
            + m.output_padding[0] + 1)


def _concat_size(m: nn.Module, h: Any, i: int) -> Any:
    if len(set(h)) != 1:
        raise S2Error(f"model config layer {i}: Concat of inputs of different sizes {h}")
    return h[0]


# --- argument checks: (constructor args, output channels, where) ------------------------------

def _in_range(v: Any, hi: int, what: str, where: str, lo: int = 1) -> None:
    values = v if isinstance(v, (list, tuple)) else [v]
    if not values or not all(is_int(x) and lo <= x <= hi for x in values):
        raise S2Error(f"{where}: {what} {brief(v)} is outside {lo}..{hi}")


def _conv_args(k: int = 2, s: int | None = 3) -> Callable[[list, Any, str], None]:
    def check(args: list, c2: Any, where: str) -> None:
        if len(args) > k:
            _in_range(args[k], limits.MAX_KERNEL, "kernel", where)
        if s is not None and len(args) > s:
            _in_range(args[s], limits.MAX_CONV_STRIDE, "stride", where)

    return check


def _no_check(args: list, c2: Any, where: str) -> None:
    return None


def _pool_args(args: list, c2: Any, where: str) -> None:
    _in_range(args[0] if args else None, limits.MAX_KERNEL, "kernel", where)
    if len(args) > 1 and args[1] is not None:
        _in_range(args[1], limits.MAX_CONV_STRIDE, "stride", where)
    if len(args) > 2:
        _in_range(args[2], limits.MAX_KERNEL, "padding", where, lo=0)


def _pad_args(args: list, c2: Any, where: str) -> None:
    pad = args[0] if len(args) == 1 else None
    if not (isinstance(pad, list) and len(pad) == 4):
        raise S2Error(f"{where}: nn.ZeroPad2d takes [[left, right, top, bottom]] (got {brief(args)})")
    _in_range(pad, limits.MAX_KERNEL, "padding", where, lo=0)


def _gain_args(args: list, c2: Any, where: str) -> None:
    _in_range(args[0] if len(args) == 1 else None, limits.MAX_CONV_STRIDE, "gain", where)


def _upsample_args(args: list, c2: Any, where: str) -> None:
    size, scale = [*args, None, None][:2]
    if size is not None or not (is_real(scale) and 1 <= scale <= limits.MAX_UPSAMPLE):
        raise S2Error(f"{where}: Upsample takes [None, scale] with a scale in "
                      f"1..{limits.MAX_UPSAMPLE} (got {brief(args)})")


@dataclass(frozen=True)
class Spec:
    """One module a yaml may name."""

    cls: type[nn.Module]
    channels: Callable[[Layer], tuple[list, Any, int]]
    size: Callable[[nn.Module, Any, int], Any] = _keep
    check: Callable[[list, Any, str], None] = _no_check
    repeatable: bool = True  # n copies may run in a chain (when channels allow)


_CONV = _conv_args()
MODULES: dict[str, Spec] = {
    "Conv": Spec(c.Conv, _scaled(), _conv_size("conv"), _CONV),
    "DWConv": Spec(c.DWConv, _scaled(), _conv_size("conv"), _CONV),
    "GhostConv": Spec(c.GhostConv, _scaled(), _conv_size("cv1.conv"), _CONV),
    "CrossConv": Spec(c.CrossConv, _scaled(), _conv_size("cv1.conv", "cv2.conv"), _CONV),
    "Focus": Spec(c.Focus, _scaled(), _focus, _CONV),
    "Bottleneck": Spec(c.Bottleneck, _scaled()),
    "GhostBottleneck": Spec(c.GhostBottleneck, _scaled(), _ghost_bottleneck, _conv_args(2, 3)),
    "SPP": Spec(c.SPP, _scaled(), _odd_pools, _conv_args(2, None)),
    "SPPF": Spec(c.SPPF, _scaled(), _odd_pools, _conv_args(2, None)),
    "BottleneckCSP": Spec(c.BottleneckCSP, _scaled(inside=True)),
    "C3": Spec(c.C3, _scaled(inside=True)),
    "C3x": Spec(c.C3x, _scaled(inside=True)),
    "C3TR": Spec(c.C3TR, _scaled(inside=True)),
    "C3Ghost": Spec(c.C3Ghost, _scaled(inside=True)),
    "C3SPP": Spec(c.C3SPP, _scaled(), _keep, _conv_args(2, None)),
    "nn.ConvTranspose2d": Spec(nn.ConvTranspose2d, _scaled(), _transposed, _CONV),
    "DWConvTranspose2d": Spec(c.DWConvTranspose2d, _scaled(), _transposed, _CONV),
    "Concat": Spec(c.Concat, _concat, _concat_size, repeatable=False),
    "Contract": Spec(c.Contract, _contract, _contract_size, _gain_args, repeatable=False),
    "Expand": Spec(c.Expand, _expand, _expand_size, _gain_args, repeatable=False),
    "S2Attention": Spec(S2Attention, _s2attention),
    "nn.BatchNorm2d": Spec(nn.BatchNorm2d, _batchnorm),
    "nn.Upsample": Spec(nn.Upsample, _same, _upsample, _upsample_args),
    "nn.MaxPool2d": Spec(nn.MaxPool2d, _same, _maxpool, _pool_args),
    "nn.ZeroPad2d": Spec(nn.ZeroPad2d, _same, _zeropad, _pad_args),
    "nn.Identity": Spec(nn.Identity, _same),
    "Detect": Spec(Detect, _head(2), repeatable=False),
    "Segment": Spec(Segment, _head(4), repeatable=False),
}
# Spellings yolov5's eval() also accepted for the same classes.
for _alias, _name in (("Upsample", "nn.Upsample"), ("BatchNorm2d", "nn.BatchNorm2d"),
                      ("MaxPool2d", "nn.MaxPool2d"), ("ZeroPad2d", "nn.ZeroPad2d")):
    MODULES[_alias] = MODULES[_name]
SPEC_OF: dict[type[nn.Module], Spec] = {s.cls: s for s in MODULES.values()}
HEADS = frozenset(name for name, s in MODULES.items() if issubclass(s.cls, Detect))


def _arg(a: Any, nc: int, anchors: Any) -> Any:
    if not isinstance(a, str):
        return a
    return {"None": None, "True": True, "False": False, "nc": nc, "anchors": anchors}.get(a, a)


def outputs_per_anchor(d: dict[str, Any]) -> int:
    """Detect's values per anchor (5 + nc, plus Segment's mask coefficients)."""
    name, args = (d["backbone"] + d["head"])[-1][2:]
    nm = args[2] if name == "Segment" and len(args) > 2 and is_int(args[2]) else 0
    return 5 + d["nc"] + nm


def parse_model(d: dict[str, Any], ch: list[int], release: Release = LATEST
                ) -> tuple[nn.Sequential, list[int]]:
    """Build the layer list of a checked YOLOv5 yaml dict (limits.check_config); ch[0] is the
    number of input channels; `release` says how its blocks are built (models/releases.py)."""
    anchors, nc = d["anchors"], d["nc"]
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    layers, save = [], []
    with c.block_style(release.style(d.get("activation"))):
        for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
            spec = MODULES.get(name)
            if spec is None or (spec.cls in (Detect, Segment) and name not in release.heads):
                known = sorted(k for k in MODULES if k not in HEADS or k in release.heads)
                raise S2Error(f"model config layer {i} uses module {brief(name)}, which s2trt "
                              f"does not implement for YOLOv5 {release.tag} (known: "
                              f"{', '.join(known)})")
            n = max(round(n * gd), 1) if n > 1 else n
            if n > limits.MAX_REPEATS:
                raise S2Error(f"model config layer {i}: {n} repeats after depth_multiple; YOLOv5 "
                              f"layers have 1..{limits.MAX_REPEATS}")
            lay = Layer(i, f, n, [_arg(a, nc, anchors) for a in args], ch, gw, na * (nc + 5))
            args, c2, n = spec.channels(lay)
            if spec.channels is not _same and c2 is not None and not (
                    is_int(c2) and 1 <= c2 <= limits.MAX_CHANNELS):
                raise S2Error(f"{lay.where}: {brief(c2)} output channels after width_multiple; "
                              f"YOLOv5 layers have 1..{limits.MAX_CHANNELS}")
            spec.check(args, c2, lay.where)
            keeps_channels = spec.channels in (_same, _batchnorm, _s2attention)
            if n > 1 and (not spec.repeatable or (not keeps_channels and args[0] != c2)):
                # n copies run in a chain, so each must take what the one before gives
                raise S2Error(f"{lay.where}: {name} cannot be repeated {n} times"
                              + (f" from {args[0]} to {c2} channels" if spec.repeatable else ""))
            m_ = nn.Sequential(*(spec.cls(*args) for _ in range(n))) if n > 1 else spec.cls(*args)
            m_.i, m_.f, m_.type = i, f, name
            save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
            layers.append(m_)
            if i == 0:
                ch = []
            ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


def out_size(m: nn.Module, h: Any, i: int) -> Any:
    """One layer's output height (or width) for input size h, from its construction arguments:
    the sizes of a config are known without running it, so no activation is ever allocated."""
    spec = SPEC_OF.get(type(m))
    if spec is None and isinstance(m, nn.Sequential):  # n repeats of one module
        for sub in m:
            h = out_size(sub, h, i)
        return h
    return spec.size(m, h, i) if spec is not None else h
