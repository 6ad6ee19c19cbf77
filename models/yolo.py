"""YOLOv5's heads (Detect, v7.0's Segment) and the model built from a yaml dict (its
models/yolo.py); the layers come from models/parse.py's registry."""

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
from s2trt.models.common import Conv, Proto
from s2trt.models.limits import check_config
from s2trt.models.releases import LATEST, Release
from s2trt.text import first_line

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"


class Detect(nn.Module):
    """1x1 convs per level, and in eval mode YOLOv5's box decode: (B, N, no) in input pixels."""

    def __init__(self, nc: int = 80, anchors: Any = (), ch: tuple[int, ...] = ()):
        super().__init__()
        self.nc = nc
        self.nm = 0  # mask coefficients after the class scores (Segment)
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
            y = self._activate(p)
            xy = (y[..., 0:2] * 2 + grid) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no))
        return out if self.training else torch.cat(out, 1)

    def _activate(self, p: torch.Tensor) -> torch.Tensor:
        return p.sigmoid()

    def _grid(self, i: int, nx: int, ny: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Cell offsets (v7.0 convention: xy - 0.5) and anchors in pixels, built per call.

        Never cached from a checkpoint: releases cached grids under different conventions
        (models/releases.py).
        """
        d, t = like.device, like.dtype
        yv, xv = torch.meshgrid(torch.arange(ny, device=d, dtype=t),
                                torch.arange(nx, device=d, dtype=t), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2) - 0.5
        anchor_grid = (self.anchors[i].to(d, t) * self.stride[i]).view(1, self.na, 1, 1, 2)
        return grid, anchor_grid


class Segment(Detect):
    """v7.0's head: Detect with nm raw mask coefficients per box, and Proto's masks at half the first
    level's stride (4; 2 for a P2 head).

    Eval output: (detections (B, N, 5 + nc + nm), prototypes (B, nm, H/4, W/4); H/2 for P2).
    """

    def __init__(self, nc: int = 80, anchors: Any = (), nm: int = 32, npr: int = 256,
                 ch: tuple[int, ...] = ()):
        super().__init__(nc, anchors, ch)
        self.nm = nm
        self.npr = npr
        self.no = 5 + nc + nm
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.proto = Proto(ch[0], npr, nm)

    def forward(self, x: list[torch.Tensor]) -> tuple[Any, torch.Tensor]:
        p = self.proto(x[0])
        return super().forward(x), p

    def _activate(self, p: torch.Tensor) -> torch.Tensor:
        # The mask coefficients stay linear: predict.py multiplies them with the prototypes.
        k = self.nc + 5
        return torch.cat((p[..., :k].sigmoid(), p[..., k:]), -1)


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


def plan_model(cfg: dict[str, Any], ch: int = 3, release: Release = LATEST) -> ModelPlan:
    """Check a config against YOLOv5's ranges and count its parameters before building it."""
    from s2trt.models.parse import out_size, parse_model  # parse.py builds the heads above

    d = check_config(cfg)
    ch = d.get("ch", ch)
    try:
        with torch.device("meta"):
            layers = parse_model(d, [ch], release)[0]
    except (TypeError, ValueError, LookupError, RuntimeError, ArithmeticError) as e:
        raise S2Error(f"model config cannot be built ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    detect = layers[-1]
    if not isinstance(detect, Detect):
        raise S2Error("model config must end in a Detect or Segment layer")
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
        sizes.append(out_size(m, h, m.i))
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
                 nc: int | None = None, plan: ModelPlan | None = None,
                 release: Release = LATEST):
        """`plan`: plan_model's result for this very config, when the caller has it already;
        `release`: the YOLOv5 release whose blocks to build (a checkpoint's, models/releases.py)."""
        from s2trt.models.parse import parse_model  # parse.py builds the heads above

        super().__init__()
        d = dict(cfg) if isinstance(cfg, dict) else load_config(cfg)
        d["ch"] = d.get("ch", ch)
        if nc is not None:
            d["nc"] = nc
        plan = plan or plan_model(d, release=release)
        self.yaml = d
        self.release = release.tag
        self.model, self.save = parse_model(check_config(d), [d["ch"]], release)
        self.names = [str(i) for i in range(self.yaml["nc"])]
        m = self.model[-1]
        m.stride = torch.tensor(plan.stride)
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        self._initialize()

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def forward(self, x: torch.Tensor) -> Any:
        """Eval: detections (B, N, no), with Segment a pair (detections, prototypes)."""
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
                b[:, 5:5 + m.nc] += math.log(0.6 / (m.nc - 0.99999))


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
