"""Write checkpoints in the exact pickle format of YOLOv5's train.py, without the yolov5 repo.

Throw-away modules named `models.common` and `models.yolo` are created in a temp dir;
every module of an s2trt model is re-classed to the same-named class there, so the pickle names
`models.yolo.DetectionModel`, `models.common.C3`, ... exactly as a real checkpoint does. The modules
are removed from sys.modules afterwards, so loading cannot fall back on them.

The layout follows checkpoints that the real train.py of yolov5 tags v6.0 and v7.0 wrote (with an
S2Attention added to their models/common.py; torch 2.13, NumPy 1.23 and 2.2): the top-level keys of each
release, `hyp` a plain dict, v6.0's float64 `class_weights` (a DoubleStorage), the best_fitness
and optimizer NumPy values, and what strip_optimizer() sets to None.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

_COMMON = """
from s2trt.models import common as _c, s2attention as _s
class Conv(_c.Conv): pass
class Bottleneck(_c.Bottleneck): pass
class C3(_c.C3): pass
class SPPF(_c.SPPF): pass
class Concat(_c.Concat): pass
class S2Attention(_s.S2Attention): pass
class SplitAttention(_s.SplitAttention): pass
"""
_YOLO = """
from s2trt.models import yolo as _y
class Detect(_y.Detect): pass
class DetectionModel(_y.DetectionModel): pass
Model = DetectionModel
"""


@contextlib.contextmanager
def _fake_yolov5(root: Path, release: str):
    pkg = root / f"fake_yolov5_{release.replace('.', '_')}"
    (pkg / "models").mkdir(parents=True, exist_ok=True)
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "common.py").write_text(textwrap.dedent(_COMMON))
    yolo = _YOLO if release != "v6.0" else _YOLO.replace(
        "class DetectionModel(_y.DetectionModel): pass\nModel = DetectionModel",
        "class Model(_y.DetectionModel): pass")
    (pkg / "models" / "yolo.py").write_text(textwrap.dedent(yolo))
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("models", "utils")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(pkg))
    try:
        yield tuple(importlib.import_module(m) for m in ("models.common", "models.yolo"))
    finally:
        sys.path.remove(str(pkg))
        for k in [k for k in sys.modules if k.split(".")[0] in ("models", "utils")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _reclass(model: torch.nn.Module, common: Any, yolo: Any) -> None:
    for m in model.modules():
        name = type(m).__name__
        if type(m).__module__.startswith("s2trt.models"):
            target = getattr(common, name, None) or getattr(yolo, name, None)
            if name == "DetectionModel":
                target = getattr(yolo, "DetectionModel", None) or yolo.Model
            m.__class__ = target


def build_model(cfg: str | dict = "yolov5s-s2", nc: int = 80, seed: int = 0,
                width_multiple: float | None = None) -> torch.nn.Module:
    """An s2trt DetectionModel with random, non-trivial weights (BN statistics included)."""
    from s2trt.models import DetectionModel, load_config

    d = load_config(cfg) if isinstance(cfg, str) else dict(cfg)
    if width_multiple is not None:
        d["width_multiple"] = width_multiple
    torch.manual_seed(seed)
    model = DetectionModel(d, nc=nc)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def make_yolov5_checkpoint(tmp_path: Path, cfg: str | dict = "yolov5s-s2", nc: int = 80,
                           half: bool = True, release: str = "v7.0", stripped: bool = False,
                           width_multiple: float | None = None, seed: int = 0,
                           yaml: dict | None = None) -> Path:
    """Write `<tmp_path>/<cfg>-<release>.pt` as YOLOv5's train.py (or strip_optimizer) would.

    Returns the path; the model that was pickled is kept in `make_yolov5_checkpoint.last_model`
    (FP32, eval) for output comparisons. `yaml` replaces the config stored in the pickle.
    """
    model = build_model(cfg, nc, seed, width_multiple)
    reference = build_model(cfg, nc, seed, width_multiple)
    reference.load_state_dict(model.state_dict())
    make_yolov5_checkpoint.last_model = reference.eval()

    names: Any = [f"class{i}" for i in range(nc)]
    if release != "v6.0":
        names = dict(enumerate(names))  # v7.0 stores a dict
    tmp_path = Path(tmp_path)
    stem = f"{cfg if isinstance(cfg, str) else 'custom'}-{release}{'-stripped' if stripped else ''}"
    out = tmp_path / f"{stem}.pt"
    with _fake_yolov5(tmp_path, release) as (common, yolo):
        _reclass(model, common, yolo)
        model.names = names
        model.nc = nc
        if yaml is not None:  # what the pickle claims the architecture is
            model.yaml = yaml
        model.yaml_file = f"{cfg}.yaml" if isinstance(cfg, str) else "custom.yaml"
        model.inplace = True
        model.hyp = {"lr0": 0.01, "box": 0.05, "anchor_t": 4.0}
        # v6.0 keeps labels_to_class_weights' float64 tensor (pickled as a DoubleStorage).
        model.class_weights = torch.ones(nc, dtype=torch.float64 if release == "v6.0" else torch.float32)
        det = model.model[-1]
        # Grid caches as the release left them; the loader must never reuse them.
        det.grid = [torch.full((1, 3, 2, 2, 2), 7.0)] * det.nl
        det.anchor_grid = [torch.full((1, 3, 2, 2, 2), 9.0)] * det.nl
        det.inplace = True
        if half:
            model.half()
        ema = None
        if not stripped:
            # train.py saves the EMA weights (what users deploy) beside the raw training weights,
            # which differ: the loader must take `ema`, and the reference model holds its weights.
            ema = model.eval()
            model = copy.deepcopy(model)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.25)
            model.train()
        else:  # strip_optimizer(): the EMA model, frozen
            for p in model.parameters():
                p.requires_grad = False
        opt_state = None if stripped else {
            "state": {0: {"momentum_buffer": torch.zeros(3)}},
            "param_groups": [{"lr": 0.01, "momentum": np.float64(0.937), "initial_lr": 0.01,
                              "params": [0]}],
        }
        best_fitness = None if stripped and release != "v6.0" else np.array([0.61])
        ckpt = {
            "epoch": -1 if stripped else 41,
            "best_fitness": best_fitness,
            "model": model,
            "ema": ema,
            "updates": None if stripped else 1234,
            "optimizer": opt_state,
        }
        if release == "v6.0":
            ckpt["wandb_id"] = None
            if stripped:
                ckpt["training_results"] = None
        else:
            ckpt.update({
                "opt": {"imgsz": 640, "epochs": 300, "save_dir": "runs/train/exp", "cfg": "s2.yaml",
                        "hyp": dict(model.hyp)},
                "git": {"remote": None, "branch": None, "commit": None},
                "date": "2026-11-25T12:00:00",
            })
        torch.save(ckpt, out)
    return out
