"""YOLOv5 v6.0 Detect head, DetectionModel and parse_model, built from a yaml dict."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from s2trt.errors import S2Error
from s2trt.models import limits
from s2trt.models.common import C3, SPPF, Bottleneck, Concat, Conv
from s2trt.models.limits import brief, check_anchors, check_config, is_int, is_real
from s2trt.models.s2attention import S2Attention
from s2trt.text import first_line

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"

# Module names a yaml may use. A name is looked up here, never eval()'d.
MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv, "Bottleneck": Bottleneck, "C3": C3, "SPPF": SPPF, "Concat": Concat,
    "S2Attention": S2Attention, "nn.Upsample": nn.Upsample, "Upsample": nn.Upsample,
    "nn.BatchNorm2d": nn.BatchNorm2d,
}


class Detect(nn.Module):
    """Three 1x1 convs, and in eval mode YOLOv5's box decode: (B, N, 5 + nc) in input pixels."""

    def __init__(self, nc: int = 80, anchors: Any = (), ch: tuple[int, ...] = ()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.stride = torch.zeros(self.nl)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        out = []
        for i in range(self.nl):
            p = self.m[i](x[i])
            bs, _, ny, nx = p.shape
            p = p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.training:
                out.append(p)
                continue
            grid, anchor_grid = self._grid(i, nx, ny, p)
            y = p.sigmoid()
            xy = (y[..., 0:2] * 2 + grid) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no))
        return out if self.training else torch.cat(out, 1)

    def _grid(self, i: int, nx: int, ny: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Cell offsets (v7.0 convention: xy - 0.5) and anchors in pixels, built per call.

        Never cached from a checkpoint: v6.0 and v7.0 cached grids under different conventions.
        """
        d, t = like.device, like.dtype
        yv, xv = torch.meshgrid(torch.arange(ny, device=d, dtype=t),
                                torch.arange(nx, device=d, dtype=t), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2) - 0.5
        anchor_grid = (self.anchors[i].to(d, t) * self.stride[i]).view(1, self.na, 1, 1, 2)
        return grid, anchor_grid


def make_divisible(x: float, divisor: int = 8) -> int:
    return math.ceil(x / divisor) * divisor


def _arg(a: Any, nc: int, anchors: Any) -> Any:
    if not isinstance(a, str):
        return a
    return {"None": None, "True": True, "False": False, "nc": nc, "anchors": anchors}.get(a, a)


def _check_layer_args(i: int, m: type[nn.Module], args: list[Any], c2: Any) -> None:
    """The computed sizes of one layer against YOLOv5's ranges, before it is built."""
    where = f"model config layer {i}"
    if m in (Conv, Bottleneck, SPPF, C3) and not (is_int(c2) and 1 <= c2 <= limits.MAX_CHANNELS):
        raise S2Error(f"{where}: {brief(c2)} output channels after width_multiple; YOLOv5 "
                      f"layers have 1..{limits.MAX_CHANNELS}")
    if m in (Conv, SPPF) and len(args) > 2:
        k = args[2]
        if not (is_int(k) and 1 <= k <= limits.MAX_KERNEL):
            raise S2Error(f"{where}: kernel {brief(k)} is outside 1..{limits.MAX_KERNEL}")
    if m is Conv and len(args) > 3 and not (is_int(args[3]) and 1 <= args[3] <= limits.MAX_CONV_STRIDE):
        raise S2Error(f"{where}: stride {brief(args[3])} is outside 1..{limits.MAX_CONV_STRIDE}")
    if m is nn.Upsample:
        size, scale = [*args, None, None][:2]
        if size is not None or not (is_real(scale) and 1 <= scale <= limits.MAX_UPSAMPLE):
            raise S2Error(f"{where}: Upsample takes [None, scale] with a scale in "
                          f"1..{limits.MAX_UPSAMPLE} (got {brief(args)})")


def parse_model(d: dict[str, Any], ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Build the layer list of a checked YOLOv5 yaml dict (limits.check_config); ch[0] is the
    number of input channels."""
    anchors, nc = d["anchors"], d["nc"]
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        if name == "Detect":
            m: type[nn.Module] = Detect
        elif name in MODULES:
            m = MODULES[name]
        else:
            raise S2Error(f"model config layer {i} uses module {brief(name)}, which s2trt does not "
                          f"implement (known: {', '.join([*sorted(MODULES), 'Detect'])})")
        args = [_arg(a, nc, anchors) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if n > limits.MAX_REPEATS:
            raise S2Error(f"model config layer {i}: {n} repeats after depth_multiple; YOLOv5 "
                          f"layers have 1..{limits.MAX_REPEATS}")
        if m in (Conv, Bottleneck, SPPF, C3):
            c1, c2 = ch[f], args[0]
            if c2 != no and is_real(c2):
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, n)
                n = 1
        elif m is nn.BatchNorm2d:
            args = [ch[f]]
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is Detect:
            if len(args) != 2:
                raise S2Error(f"model config layer {i}: Detect takes [nc, anchors]")
            check_anchors(args[1], f"model config layer {i}")
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):  # anchors given as a count: values come from weights
                args[1] = [list(range(args[1] * 2))] * len(f)
            if len(args[1]) != len(args[2]):
                raise S2Error(f"model config layer {i}: Detect reads {len(args[2])} layers but "
                              f"has anchors for {len(args[1])}")
        elif m is S2Attention:
            # The yaml's argument is the width before width_multiple; the block maps its
            # input channels to the same number, so it is sized from the input.
            c2 = ch[f]
            args = [c2]
        else:
            c2 = ch[f]
        _check_layer_args(i, m, args, c2)
        if n > 1 and (m in (Detect, Concat) or (m in (Conv, Bottleneck, SPPF) and args[0] != c2)):
            # n copies run in a chain, so each must take what the one before gives
            raise S2Error(f"model config layer {i}: {name} cannot be repeated {n} times "
                          + ("" if m in (Detect, Concat) else f"from {args[0]} to {c2} channels"))
        m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        m_.i, m_.f, m_.type = i, f, name
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


def _run(layers: nn.Sequential, save: list[int], x: torch.Tensor) -> Any:
    y: list[torch.Tensor | None] = []
    for m in layers:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in save else None)
    return x


@dataclass
class ModelPlan:
    """What a config builds, found on the meta device: no memory is allocated for it."""

    stride: list[float]
    shapes: dict[str, tuple[int, ...]]  # state-dict key -> shape, as DetectionModel has them

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())


def _out_size(m: nn.Module, h: Any, i: int) -> int:
    """One layer's output height (or width) for input size h, from its construction arguments:
    the sizes of a config are known without running it, so no activation is ever allocated."""
    if isinstance(m, nn.Sequential) and not isinstance(m, C3):  # n repeats of one module
        for sub in m:
            h = _out_size(sub, h, i)
        return h
    if isinstance(m, Concat):
        if len(set(h)) != 1:
            raise S2Error(f"model config layer {i}: Concat of inputs of different sizes {h}")
        return h[0]
    if isinstance(m, Conv):
        c = m.conv
        return (h + 2 * c.padding[0] - c.kernel_size[0]) // c.stride[0] + 1
    if isinstance(m, SPPF):
        if m.m.kernel_size % 2 == 0:
            raise S2Error(f"model config layer {i}: SPPF needs an odd kernel, not {m.m.kernel_size}")
        return h
    if isinstance(m, nn.Upsample):
        return math.floor(h * m.scale_factor)
    return h  # Bottleneck, C3, S2Attention, BatchNorm2d keep the size (stride-1, padded convs)


def plan_model(cfg: dict[str, Any], ch: int = 3) -> ModelPlan:
    """Check a config against YOLOv5's ranges and count its parameters before building it."""
    d = check_config(cfg)
    ch = d.get("ch", ch)
    try:
        with torch.device("meta"):
            layers = parse_model(d, [ch])[0]
    except (TypeError, ValueError, LookupError, RuntimeError, ArithmeticError) as e:
        raise S2Error(f"model config cannot be built ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    detect = layers[-1]
    if not isinstance(detect, Detect):
        raise S2Error("model config must end in a Detect layer")
    shapes = {f"model.{k}": tuple(v.shape) for k, v in layers.state_dict().items()}
    numel = sum(math.prod(s) for s in shapes.values())
    if numel > limits.MAX_PARAMS:
        raise S2Error(f"the model config describes {numel / 1e6:.0f} M parameters, more than "
                      f"s2trt's limit of {limits.MAX_PARAMS / 1e6:.0f} M (YOLOv5x6: 141 M): "
                      "check its channels, depth_multiple and width_multiple")
    s = 256  # YOLOv5's probe size: every output of P3..P8 has whole cells
    sizes: list[int] = []
    for m in layers[:-1]:
        h = sizes[-1] if sizes else s
        if m.f != -1:
            h = sizes[m.f] if isinstance(m.f, int) else [h if j == -1 else sizes[j] for j in m.f]
        sizes.append(_out_size(m, h, m.i))
        if not 1 <= sizes[-1] <= s * limits.MAX_UPSAMPLE:
            raise S2Error(f"model config layer {m.i}: a {s}x{s} input becomes {sizes[-1]} pixels "
                          "high here; check its kernels, strides and Upsample scales")
    outs = [sizes[j] for j in detect.f]
    if not all(s % h == 0 for h in outs):
        raise S2Error(f"model config: Detect inputs of {outs} pixels for a {s}-pixel input give "
                      "fractional strides")
    return ModelPlan([s / h for h in outs], shapes)


class DetectionModel(nn.Module):
    """A YOLOv5 model from a yaml dict or file; state-dict keys are `model.<i>.<...>`."""

    def __init__(self, cfg: dict[str, Any] | str | Path = "yolov5s-s2.yaml", ch: int = 3,
                 nc: int | None = None, plan: ModelPlan | None = None):
        """`plan`: plan_model's result for this very config, when the caller has it already."""
        super().__init__()
        d = dict(cfg) if isinstance(cfg, dict) else load_config(cfg)
        d["ch"] = d.get("ch", ch)
        if nc is not None:
            d["nc"] = nc
        plan = plan or plan_model(d)
        self.yaml = d
        self.model, self.save = parse_model(check_config(d), [d["ch"]])
        self.names = [str(i) for i in range(self.yaml["nc"])]
        m = self.model[-1]
        m.stride = torch.tensor(plan.stride)
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        self._initialize()

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> Any:
        return _run(self.model, self.save, x)

    def _initialize(self) -> None:
        """YOLOv5's init: BN eps/momentum and Detect biases from prior object/class rates."""
        for mod in self.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.eps, mod.momentum = 1e-3, 0.03
        m = self.detect
        with torch.no_grad():
            for mi, s in zip(m.m, m.stride, strict=True):
                b = mi.bias.view(m.na, -1)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (m.nc - 0.99999))


def config_path(name: str | Path) -> Path:
    """A bundled config by name ('yolov5s-s2' or 'yolov5s-s2.yaml'), or a path to a yaml file."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if cand.is_file():
            return cand
    bundled = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise S2Error(f"model config '{name}' not found (bundled: {bundled})")


def load_config(name: str | Path) -> dict[str, Any]:
    path = config_path(name)
    try:
        size = path.stat().st_size
        if size > limits.MAX_CONFIG_BYTES:
            raise S2Error(f"{path} is {size} bytes; a YOLOv5 model config is a few KB (limit "
                          f"{limits.MAX_CONFIG_BYTES >> 20} MB)")
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as e:
        reason = first_line(e, 200)
        raise S2Error(f"cannot read model config {path}: {reason}") from None
    missing = [k for k in ("nc", "anchors", "backbone", "head") if not isinstance(d, dict) or k not in d]
    if missing:
        raise S2Error(f"{path} is not a YOLOv5 model config (missing {', '.join(missing)})")
    return d


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every Conv's BatchNorm into its convolution, as YOLOv5's fuse() does for export."""
    for m in model.modules():
        if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
            conv, bn = m.conv, m.bn
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, groups=conv.groups, bias=True).to(conv.weight.device)
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_(bn.bias - bn.running_mean * scale)
            m.conv, m.bn = fused, nn.Identity()
    return model
