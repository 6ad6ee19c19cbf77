"""Load YOLOv5 checkpoints without the yolov5 repo and without running code from the pickle.

A `train.py` checkpoint pickles whole modules of the yolov5 repo (`models.yolo.DetectionModel`,
`models.common.C3`, ...). The unpickler below resolves only an allow-list of globals: the torch and
NumPy types that tensors and arrays need, `torch.nn` modules, and yolov5 class names, which become
inert stand-ins that only hold their pickled state. From that state we take the yaml, the class
names and the state dict, build this project's own model and load the weights into it: nothing of
the pickled objects' behaviour is reused (v6.0 and v7.0 cache Detect grids differently).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error

log = logging.getLogger(__name__)


class UnsafeCheckpointError(S2Error, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing from it was called."""


# Namespaces of the yolov5 repo (and of this project) whose classes become stand-ins.
_STANDIN_MODULE = re.compile(r"^(models|utils|s2trt\.models)(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Plain-data helpers that tensors, arrays and protocol-2 pickles reference.
_ALLOWED = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("__builtin__", "set"), ("__builtin__", "frozenset"), ("__builtin__", "slice"),
    ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
    ("torch", "float16"), ("torch", "float32"), ("torch", "bfloat16"),
    ("torch.nn.parameter", "Parameter"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
}
_NUMPY = {"_reconstruct", "scalar", "ndarray", "dtype"}


def _standin_class(module: str, name: str) -> type:
    import torch

    # An nn.Module so that its pickled _modules/_parameters/_buffers give a state_dict(); the
    # item and list hooks let pickled dict or list subclasses fill it without failing.
    return type(name, (torch.nn.Module,), {
        "__module__": f"s2trt.standin.{module}",
        "__init__": lambda self, *a, **k: torch.nn.Module.__init__(self),
        "__setitem__": lambda self, k, v: self.__dict__.setdefault("_items", {}).__setitem__(k, v),
        "extend": lambda self, v: self.__dict__.setdefault("_list", []).extend(v),
        "append": lambda self, v: self.__dict__.setdefault("_list", []).append(v),
        "forward": None,
    })


def _resolve(module: str, name: str) -> Any:
    import importlib

    import numpy as np
    import torch

    if (module, name) in _ALLOWED:
        if module == "__builtin__":
            module = "builtins"
        if module == "pathlib":  # a path from another OS must not fail to build
            return pathlib_standin
        return getattr(importlib.import_module(module), name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY:
        core = getattr(np, "_core", None) or np.core
        return getattr(core.multiarray, name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module.startswith("numpy.dtypes") and name.endswith("DType"):
        return getattr(np.dtypes, name)
    if module.startswith("torch.nn.modules.") and _NAME.match(name):
        obj = getattr(importlib.import_module(module), name, None)
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            # A stand-in, not the class: a REDUCE could otherwise call e.g. Linear(2**17, 2**17)
            # and allocate tens of GB; protocol-2 pickles of real modules never call constructors.
            return _standin_class(module, name)
    if _STANDIN_MODULE.match(module) and _NAME.match(name):
        return _standin_class(module, name)
    raise UnsafeCheckpointError(
        f"the checkpoint's pickle refers to '{module}.{name}', which is not on s2trt's allow-list "
        "of YOLOv5 / torch / NumPy types; refusing to load it (it may run code)")


def pathlib_standin(*parts: Any) -> str:
    return "/".join(str(p) for p in parts)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _resolve(module, name)


class _SafePickleModule:
    """What torch.load needs from a pickle module, with the allow-listing Unpickler."""

    Unpickler = _SafeUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(f: Any, **kw: Any) -> Any:
        return _SafeUnpickler(f, **kw).load()


@dataclass
class LoadedModel:
    """A checkpoint rebuilt as s2trt's DetectionModel (eval mode, FP32, on the CPU)."""

    model: Any
    names: list[str]
    stride: list[int]
    cfg: dict[str, Any]
    source: str  # 'yolov5' (a pickled model) or 'state_dict'
    half: bool  # the weights were stored in FP16
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def has_s2attention(self) -> bool:
        return any(layer[2] == "S2Attention" for layer in self.cfg["head"] + self.cfg["backbone"])


def read_pickle(path: str | Path) -> Any:
    """torch.load with the allow-list; every failure becomes one S2Error line."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise S2Error(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", pickle_module=_SafePickleModule,
                          weights_only=False)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except Exception as e:  # zip, pickle and storage errors of a truncated or foreign file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise S2Error(f"{path} is not a readable PyTorch checkpoint ({reason[:200]})") from None


def _names(raw: Any, nc: int) -> list[str]:
    if isinstance(raw, Mapping):
        try:
            raw = [raw[k] for k in sorted(raw, key=int)]
        except (TypeError, ValueError):
            raw = list(raw.values())
    if isinstance(raw, (list, tuple)) and len(raw) == nc:
        return [str(n) for n in raw]
    return [str(i) for i in range(nc)]


def _is_state_dict(obj: Any) -> bool:
    import torch

    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def load_checkpoint(path: str | Path, cfg: str | Path | dict | None = None) -> LoadedModel:
    """Rebuild the model of a YOLOv5 checkpoint (train.py, stripped, or a state_dict + cfg)."""
    from s2trt.models.yolo import DetectionModel, load_config

    obj = read_pickle(path)
    names_raw, info = None, {}
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        info = {k: obj[k] for k in ("epoch", "date", "git") if k in obj and obj[k] is not None}
        names_raw = obj.get("names")
        key = next((k for k in ("ema", "model", "state_dict") if obj.get(k) is not None), None)
        if key is None:
            raise S2Error(f"{path} holds no model: expected a YOLOv5 checkpoint with a 'model' "
                          f"or 'ema' entry, found keys {sorted(map(str, obj))[:10]}")
        info["key"] = key
        obj = obj[key]

    if _is_state_dict(obj):
        if cfg is None:
            raise S2Error(f"{path} is a plain state_dict: pass the model config with --cfg "
                          "(e.g. --cfg yolov5s-s2)")
        state, source, model_yaml = obj, "state_dict", None
    elif hasattr(obj, "state_dict") and callable(obj.state_dict):
        state, source = obj.state_dict(), "yolov5"
        model_yaml = obj.__dict__.get("yaml")
        names_raw = obj.__dict__.get("names", names_raw)
    else:
        raise S2Error(f"{path} does not contain a YOLOv5 model (found {type(obj).__name__})")

    if cfg is not None:
        model_yaml = load_config(cfg) if not isinstance(cfg, dict) else dict(cfg)
    if not isinstance(model_yaml, dict):
        raise S2Error(f"{path} carries no model config (yaml): pass it with --cfg")

    try:
        nc = _nc_from_state(state, model_yaml)
        model_yaml = {**model_yaml, "nc": nc}
        model = DetectionModel(model_yaml)
        _load_state(model, state, path)
    except S2Error:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RuntimeError) as e:
        raise S2Error(f"{path}: malformed YOLOv5 checkpoint, its model cannot be rebuilt "
                      f"({type(e).__name__}: {e})") from None
    half = any(v.dtype.is_floating_point and v.dtype.itemsize == 2 for v in state.values())
    model.float().eval()
    names = _names(names_raw if names_raw is not None else model_yaml.get("names"), nc)
    model.names = names
    stride = [int(s) for s in model.stride.tolist()]
    log.debug("loaded %s: %d classes, stride %s, fp16=%s", path, nc, stride, half)
    return LoadedModel(model, names, stride, model_yaml, source, half, info)


def _nc_from_state(state: Mapping, model_yaml: dict) -> int:
    """The class count the weights were trained with, read from the Detect conv's shape."""
    detect = len(model_yaml["backbone"]) + len(model_yaml["head"]) - 1
    w = state.get(f"model.{detect}.m.0.weight")
    anchors = model_yaml["anchors"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
    if w is None or w.shape[0] % na:
        return int(model_yaml["nc"])
    return w.shape[0] // na - 5


def _load_state(model: Any, state: Mapping, path: Any) -> None:
    # v5.x pickled Detect.anchor_grid as a buffer; it is derived, so it is rebuilt, not loaded.
    state = OrderedDict((k, v) for k, v in state.items() if not k.endswith(".anchor_grid"))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "")
            if unexpected else "",
            f"shape {'; '.join(shapes[:2])}" if shapes else ""]))
        raise S2Error(f"{path}: the weights do not fit the model config ({detail}); is it a "
                      "checkpoint of this architecture? pass the right one with --cfg")
    model.load_state_dict(state, strict=True)
