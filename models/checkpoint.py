"""Load YOLOv5 checkpoints without the yolov5 repo and without running code from the pickle.

A `train.py` checkpoint pickles whole modules of the yolov5 repo (`models.yolo.DetectionModel`,
`models.common.C3`, ...). The unpickler below resolves only an allow-list of globals: the torch and
NumPy types that tensors and arrays need, `torch.nn` modules, and yolov5 class names, which become
inert stand-ins that only hold their pickled state. From that state we take the yaml, the class
names and the state dict, build this project's own model and load the weights into it: nothing of
the pickled objects' behaviour is reused (v6.0 and v7.0 cache Detect grids differently).

A checkpoint is also a resource claim: a few bytes of pickle can ask NumPy or torch for gigabytes,
a zip entry can inflate a thousandfold, a config can describe a model of any size. Every size is
checked before it is allocated: against the file's size (data must be stored in it, and what the
pickle may build is budgeted: models/budget.py), against YOLOv5's own ranges (models/limits.py),
and the weights' shapes against the model the config describes, planned on the meta device
(models/yolo.py plan_model).
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import tarfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error
from s2trt.meta import MAX_NAME
from s2trt.models.budget import (
    MODEL_PER_BYTE,
    MODULE,
    OBJECT,
    SLACK,
    Budget,
    Checked,
    numpy_scalar,
    ordered_dict_class,
    path_parts,
    scan_pickle,
    tensor_rebuilders,
    text_codec,
)
from s2trt.models.limits import brief
from s2trt.text import first_line

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


def _standin_class(module: str, name: str, budget: Budget) -> type:
    import torch

    def new(cls: type, *a: Any, **k: Any) -> Any:
        budget.charge(OBJECT, f"a {module}.{name}")
        return object.__new__(cls)

    def init(self: Any, *a: Any, **k: Any) -> None:  # a REDUCE calls it; a NEWOBJ does not
        budget.charge(MODULE, f"a {module}.{name}")
        torch.nn.Module.__init__(self)

    def setstate(self: Any, state: Any) -> None:
        # BUILD copies the stored dict into the instance: one stored dict may be built into
        # every module the pickle makes, so each copy is charged.
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise S2Error(f"{budget.path}: a {module}.{name} in the checkpoint has the state "
                          f"{brief(state)}")
        budget.charge_args(f"the attributes of a {module}.{name}", (state,))
        budget.charge(MODULE, f"a {module}.{name}")  # Module.__setstate__ adds the hook dicts
        torch.nn.Module.__setstate__(self, state)

    # An nn.Module so that its pickled _modules/_parameters/_buffers give a state_dict(); the
    # item and list hooks let pickled dict or list subclasses fill it without failing.
    return type(name, (torch.nn.Module,), {
        "__module__": f"s2trt.standin.{module}",
        "_s2trt_origin": (module, name),
        "__new__": new,
        "__init__": init,
        "__setstate__": setstate,
        "__setitem__": lambda self, k, v: self.__dict__.setdefault("_items", {}).__setitem__(k, v),
        "extend": lambda self, v: self.__dict__.setdefault("_list", []).extend(v),
        "append": lambda self, v: self.__dict__.setdefault("_list", []).append(v),
        "forward": None,
    })


# v7.0's Segment.__init__ stores `self.detect = Detect.forward`, which pickles as
# getattr(models.yolo.Detect, 'forward'): in every seg checkpoint (docs/DESIGN.md §1).
_HEAD_METHODS = {(("models.yolo", "Detect"), "forward"), (("models.yolo", "Segment"), "forward")}


@dataclass(frozen=True, slots=True)  # no __dict__: a BUILD cannot copy a stored dict into it
class HeadMethod:
    """What getattr(<YOLOv5 head class>, 'forward') unpickles to: a name, never called."""

    cls: str
    name: str


def _head_method(obj: Any, name: Any, *default: Any) -> HeadMethod:
    """The one getattr a YOLOv5 pickle makes; any other is refused before it is evaluated."""
    origin = obj.__dict__.get("_s2trt_origin") if isinstance(obj, type) else None
    if default or (origin, name) not in _HEAD_METHODS:
        what = ".".join(origin) if origin else type(obj).__name__
        raise UnsafeCheckpointError(
            f"the checkpoint's pickle calls getattr({what}, {brief(name)}); s2trt's allow-list "
            "admits only getattr(<YOLOv5 Detect/Segment class>, 'forward'); refusing to load it "
            "(it may run code)")
    return HeadMethod(origin[1], name)


def _resolve(module: str, name: str, budget: Budget) -> Any:
    """What a pickle's global names, made once per load (a pickle may name a global a million
    times: each would be a new class)."""
    if module == "__builtin__":
        module = "builtins"
    key = (module, name)
    if key not in budget.resolved:
        budget.charge(MODULE, f"the global {module}.{name}")
        budget.resolved[key] = _resolve_new(module, name, budget)
    return budget.resolved[key]


def _metered(fn: Any, what: str, budget: Budget) -> Checked:
    def call(*args: Any, **kwargs: Any) -> Any:
        budget.charge_args(what, (*args, *kwargs.values()))
        return fn(*args, **kwargs)

    return Checked(call, what)


def _resolve_new(module: str, name: str, budget: Budget) -> Any:
    import importlib

    import numpy as np
    import torch

    qualname = f"{module}.{name}"
    if module == "builtins" and name == "getattr":
        return Checked(_head_method, "getattr")
    if (module, name) in _ALLOWED:
        if module == "pathlib":  # a path from another OS must not fail to build
            return Checked(path_parts(budget), qualname)
        if module == "_codecs":
            return Checked(text_codec(budget), qualname)
        if module == "torch._utils":
            return Checked(tensor_rebuilders(budget)[name], qualname)
        if (module, name) == ("collections", "OrderedDict"):
            return _metered(ordered_dict_class(budget), qualname, budget)
        obj = getattr(importlib.import_module(module), name)
        return obj if isinstance(obj, torch.dtype) else _metered(obj, qualname, budget)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY:
        return _numpy_helper(name, budget)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return _numpy_helper(name, budget)
    if module.startswith("numpy.dtypes") and name.endswith("DType"):
        return getattr(np.dtypes, name)
    if module.startswith("torch.nn.modules.") and _NAME.match(name):
        obj = getattr(importlib.import_module(module), name, None)
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            # A stand-in, not the class: a REDUCE could otherwise call e.g. Linear(2**17, 2**17)
            # and allocate tens of GB; protocol-2 pickles of real modules never call constructors.
            return _standin_class(module, name, budget)
    if _STANDIN_MODULE.match(module) and _NAME.match(name):
        return _standin_class(module, name, budget)
    raise UnsafeCheckpointError(
        f"the checkpoint's pickle refers to '{qualname}', which is not on s2trt's allow-list "
        "of YOLOv5 / torch / NumPy types; refusing to load it (it may run code)")


def _numpy_helper(name: str, budget: Budget) -> Any:
    """NumPy's pickle helpers, with every allocation checked against the budget."""
    import numpy as np

    if name == "scalar":
        return Checked(numpy_scalar(budget), "numpy scalar")
    if name == "dtype":
        return _metered(np.dtype, "numpy.dtype", budget)
    key = ("s2trt", "ndarray")  # _reconstruct checks that it rebuilds this very class
    if key not in budget.resolved:
        class ndarray(np.ndarray):  # the name the pickle asked for
            """Arrays made by the pickle; BUILD (__setstate__) may resize them, so it is checked."""

            def __new__(cls, shape: Any, dtype: Any = float, *a: Any, **k: Any) -> Any:
                budget.check_array(shape, dtype)
                return np.ndarray.__new__(cls, shape, dtype, *a, **k)

            def __setstate__(self, state: Any) -> None:
                if isinstance(state, tuple) and len(state) == 5:
                    budget.check_array(state[1], state[2])
                elif isinstance(state, tuple) and len(state) == 4:
                    budget.check_array(state[0], state[1])
                else:
                    raise S2Error(f"{budget.path}: a NumPy array in the checkpoint has the state "
                                  f"{brief(state)}")
                np.ndarray.__setstate__(self, state)

        budget.resolved[key] = ndarray
    ndarray = budget.resolved[key]
    if name == "ndarray":
        return ndarray

    def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not ndarray:
            raise S2Error(f"{budget.path}: the checkpoint rebuilds a NumPy array of type "
                          f"{brief(subtype)}; only plain arrays are accepted")
        return ndarray(shape, dtype)

    return Checked(_reconstruct, "numpy _reconstruct")


def _module_record(saved_id: Any, budget: Budget) -> type | None:
    """The class of a module record, None for any other persistent id.

    torch's stream format (torch < 1.6, and torch 1.x or 2.x with
    `_use_new_zipfile_serialization=False`) records each nn.Module class it pickles as
    ('module', <class>, <source file>, <source>). torch.load would compare that source with the
    class's own and may write a .patch file; the class must be a stand-in that this pickle's own
    global resolved, and it is returned as it is: the source is never read.
    """
    if not (isinstance(saved_id, tuple) and saved_id and type(saved_id[0]) is str
            and saved_id[0] == "module"):
        return None
    cls = saved_id[1] if len(saved_id) == 4 else None
    origin = cls.__dict__.get("_s2trt_origin") if isinstance(cls, type) else None
    if (origin is None or budget.resolved.get(origin) is not cls
            or not all(x is None or isinstance(x, str) for x in saved_id[2:])):
        raise UnsafeCheckpointError(
            f"the checkpoint's module record {brief(saved_id)} does not name a YOLOv5 or torch.nn "
            "module class with its source; refusing to load it")
    return cls


def _pickle_module(budget: Budget) -> Any:
    """What torch.load needs from a pickle module: an allow-listing Unpickler under a budget."""

    class Unpickler(pickle.Unpickler):
        def __init__(self, file: Any, **kw: Any):
            super().__init__(file, **kw)
            start = file.tell()
            end = file.seek(0, io.SEEK_END)
            file.seek(start)
            self._file = _Bounded(file, end)

        def load(self) -> Any:
            # what the opcodes build is charged first: the C unpickler cannot be metered per opcode
            self._file.scan(budget)
            return super().load()

        def find_class(self, module: str, name: str) -> Any:
            return _resolve(module, name, budget)

        # torch.load assigns its storage loader here after construction; it is wrapped so that
        # a storage's size is checked before torch allocates it (the legacy format allocates
        # first and reads the data later).
        @property
        def persistent_load(self) -> Any:  # type: ignore[override]
            return pickle.Unpickler.persistent_load.__get__(self)

        @persistent_load.setter
        def persistent_load(self, load: Any) -> None:
            def checked(saved_id: Any) -> Any:
                cls = _module_record(saved_id, budget)
                if cls is not None:
                    return cls
                budget.check_storage(saved_id)
                return load(saved_id)

            pickle.Unpickler.persistent_load.__set__(self, checked)

    def load(f: Any, **kw: Any) -> Any:
        return Unpickler(f, **kw).load()

    return type("s2trt_safe_pickle", (), {
        "Unpickler": Unpickler, "UnpicklingError": pickle.UnpicklingError,
        "load": staticmethod(load), "__name__": "s2trt_safe_pickle"})


# A zip entry may inflate to this multiple of the whole file: torch.save stores entries
# uncompressed, and weights deflate by a few percent at best.
MAX_INFLATION = 4
_ZIP_MAGIC = b"PK\x03\x04"


def _budget(path: Path, file_size: int) -> Budget:
    """The file's budget. zip: entry sizes from the directory before torch reads a record (it
    allocates the stated size), and each storage's record size for the storage checks; the
    legacy stream: a plain pickle stream, its storages budgeted against the file's size."""
    with open(path, "rb") as f:
        head = f.read(tarfile.BLOCKSIZE)
    if head[:4] != _ZIP_MAGIC:
        _refuse_tar(path, head)
        return Budget(path, file_size)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            # Python's zipfile and torch's reader may pick different entries of one name
            if len(set(names)) != len(names):
                raise S2Error(f"{path}: its zip archive names an entry twice; refusing to guess "
                              "which one torch would read")
            _check_inflation(path, file_size, infos)
            prefix = names[0].split("/")[0] + "/" if names else ""  # torch's archive name
            records = {n[len(prefix) + 5:]: i.file_size for n, i in zip(names, infos, strict=True)
                       if n.startswith(prefix + "data/")}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise S2Error(f"{path} is not a readable PyTorch checkpoint (broken zip: "
                      f"{str(e)[:200]})") from None
    return Budget(path, file_size, records)


def _check_inflation(path: Path, file_size: int, infos: list[zipfile.ZipInfo]) -> None:
    total = sum(i.file_size for i in infos)
    if total > MAX_INFLATION * file_size + (1 << 20):
        raise S2Error(f"{path}: its zip entries inflate to {total} bytes from a {file_size}-byte "
                      "file, far more than a checkpoint does; refusing to unpack it (a zip bomb?)")
    if any(i.filename.endswith("/constants.pkl") or i.filename == "constants.pkl" for i in infos):
        raise S2Error(f"{path} is a TorchScript archive, not a YOLOv5 checkpoint: pass the .pt "
                      "that train.py wrote")


def _refuse_tar(path: Path, head: bytes) -> None:
    """torch.load reads any file that is not a zip as a tar first (its first format): it unpacks
    members to a temporary folder and allocates storages at sizes read from them, so a 20 KB
    file with a sparse member costs gigabytes of disk and memory. No YOLOv5 release wrote it; a
    file whose first block is a valid tar header (the test torch's tarfile makes) is refused."""
    try:
        tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return
    raise S2Error(f"{path} is in PyTorch's first (tar) checkpoint format, which no YOLOv5 release "
                  "wrote; s2trt does not read it (re-save it with a current torch.save)")


class _Bounded:
    """A file's read() that never asks for more than the file holds: a pickle's length field
    would otherwise make the buffered reader allocate the length it states."""

    def __init__(self, f: Any, size: int):
        self.f, self.size = f, size

    def scan(self, budget: Budget) -> None:
        """Charge the opcodes of the pickle that starts here, then come back here."""
        start = self.f.tell()
        try:
            scan_pickle(pickletools.genops(self), budget)
        except (ValueError, EOFError, OverflowError) as e:  # a truncated or foreign file
            raise S2Error(f"{budget.path} is not a readable PyTorch checkpoint "
                          f"({first_line(e)[:200]})") from None
        self.f.seek(start)

    def read(self, n: int = -1) -> bytes:
        left = max(self.size - self.f.tell(), 0)
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.f.readline()

    def tell(self) -> int:
        return self.f.tell()


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
    def nm(self) -> int:
        """Mask coefficients per detection (a v7.0 Segment head), 0 for Detect."""
        return int(self.model.model[-1].nm)

    @property
    def has_s2attention(self) -> bool:
        return any(layer[2] == "S2Attention" for layer in self.cfg["head"] + self.cfg["backbone"])


def read_pickle(path: str | Path) -> Any:
    """torch.load with the allow-list and a memory budget; every failure becomes one S2Error."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise S2Error(f"checkpoint not found: {path}")
    budget = _budget(path, path.stat().st_size)
    try:
        return torch.load(path, map_location="cpu", pickle_module=_pickle_module(budget),
                          weights_only=False)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except S2Error:
        raise
    except Exception as e:  # zip, pickle and storage errors of a truncated or foreign file
        reason = first_line(e)
        raise S2Error(f"{path} is not a readable PyTorch checkpoint ({reason[:200]})") from None


def _names(raw: Any, nc: int, source: Any) -> list[str]:
    """Class names as YOLOv5 stores them (a list, or a dict keyed by index); numbers if absent."""
    if raw is None:
        return [str(i) for i in range(nc)]
    if isinstance(raw, Mapping):
        keys = list(raw)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) \
                or sorted(keys) != list(range(len(keys))):
            raise S2Error(f"{source}: class names keyed by {brief(keys)}, not by 0..n-1")
        raw = [raw[k] for k in range(len(keys))]
    if not isinstance(raw, (list, tuple)) or not all(
            isinstance(n, (str, int)) and not isinstance(n, bool) and len(str(n)) <= MAX_NAME
            for n in raw):
        raise S2Error(f"{source}: class names {brief(raw)} are not a list of names")
    if len(raw) != nc:
        log.warning("%s: %d class names for %d classes; using numbers instead", source, len(raw), nc)
        return [str(i) for i in range(nc)]
    return [str(n) for n in raw]


_MAX_DEPTH = 32  # nesting of modules (YOLOv5: DetectionModel.model.N.m.K.cv1.conv, 7)
_MAX_TENSORS = 100_000


def _is_state_dict(obj: Any) -> bool:
    import torch

    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def _module_state(root: Any, path: Any) -> OrderedDict[str, Any]:
    """The state dict of a pickled module, read from its stored dicts.

    nn.Module.state_dict() is not called: it would run hooks and recurse through whatever the
    pickle stored, so a stand-in's `_modules`, `_parameters` and `_buffers` are walked as data.
    """
    import torch

    out: OrderedDict[str, Any] = OrderedDict()

    def bad(what: str) -> S2Error:
        return S2Error(f"{path}: malformed YOLOv5 checkpoint ({what})")

    def table(d: dict, key: str, prefix: str) -> dict:
        # `or {}` would ask a stored tensor for its truth value: a RuntimeError, not this one line.
        t = d.get(key)
        t = {} if t is None else t
        if not isinstance(t, dict) or not all(isinstance(k, str) and k for k in t):
            raise bad(f"{prefix or 'the model'}'s {key} is {brief(t)}")
        return t

    def visit(m: Any, prefix: str, depth: int) -> None:
        d = getattr(m, "__dict__", None)
        if not isinstance(m, torch.nn.Module) or not isinstance(d, dict):
            raise bad(f"{prefix or 'the model'} is a {type(m).__name__}, not a module")
        if depth > _MAX_DEPTH or len(out) > _MAX_TENSORS:
            raise bad(f"modules nested deeper than {_MAX_DEPTH} or more than {_MAX_TENSORS} tensors")
        skip = d.get("_non_persistent_buffers_set")
        skip = set() if skip is None else skip
        if not isinstance(skip, (set, frozenset)):
            raise bad(f"{prefix}_non_persistent_buffers_set is {brief(skip)}")
        tensors = list(table(d, "_parameters", prefix).items())
        tensors += [(k, v) for k, v in table(d, "_buffers", prefix).items() if k not in skip]
        for k, v in tensors:
            if v is None:
                continue
            if not isinstance(v, torch.Tensor):
                raise bad(f"{prefix}{k} is a {type(v).__name__}, not a tensor")
            out[prefix + k] = v
        for k, child in table(d, "_modules", prefix).items():
            if child is not None:
                visit(child, f"{prefix}{k}.", depth + 1)

    visit(root, "", 0)
    return out


def _info(ckpt: Mapping) -> dict[str, Any]:
    """Provenance for logs: epoch, date and git, when they are plain values."""
    info: dict[str, Any] = {}
    for k in ("epoch", "date", "git"):
        v = ckpt.get(k)
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            info[k] = v if not isinstance(v, str) else v[:200]
        elif isinstance(v, dict) and all(isinstance(x, str) for x in (*v, *v.values())):
            info[k] = {a[:100]: b[:200] for a, b in list(v.items())[:10]}
    return info


def load_checkpoint(path: str | Path, cfg: str | Path | dict | None = None,
                    names: str | Path | list[str] | None = None) -> LoadedModel:
    """Rebuild the model of a YOLOv5 checkpoint (train.py, stripped, or a state_dict + cfg).

    `names` gives the class names where the checkpoint has none (a plain state_dict) or replaces
    its own: a YOLOv5 data yaml, a text file with one name per line, a comma-separated list or a
    list (s2trt.meta.read_names); their number must be the model's class count.

    The checkpoint is data from anywhere: its pickle is allow-listed and budgeted (read_pickle),
    its config checked against YOLOv5's ranges and its weights' shapes against the model the
    config describes before that model is allocated.
    """
    import torch

    from s2trt.meta import read_names
    from s2trt.models.limits import check_config
    from s2trt.models.releases import identify
    from s2trt.models.yolo import DetectionModel, load_config, plan_model

    given = read_names(names) if names is not None else None  # a typo fails before the load
    obj = read_pickle(path)
    names_raw, info, keys, model_class = None, {}, None, None
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        info = _info(obj)
        keys = [k for k in obj if isinstance(k, str)]
        names_raw = obj.get("names")
        key = next((k for k in ("ema", "model", "state_dict") if obj.get(k) is not None), None)
        if key is None:
            keys = [k if isinstance(k, str) else brief(k) for k in list(obj)[:10]]
            raise S2Error(f"{path} holds no model: expected a YOLOv5 checkpoint with a 'model' "
                          f"or 'ema' entry, found keys {sorted(keys)}")
        info["key"] = key
        obj = obj[key]

    if _is_state_dict(obj):
        if cfg is None:
            raise S2Error(f"{path} is a plain state_dict: pass the model config with --cfg "
                          "(e.g. --cfg yolov5s-s2)")
        if not all(isinstance(k, str) for k in obj):
            raise S2Error(f"{path}: malformed state_dict (keys that are not names)")
        state, source, model_yaml = OrderedDict(obj), "state_dict", None
    elif isinstance(obj, torch.nn.Module):
        state, source = _module_state(obj, path), "yolov5"
        model_class = type(obj).__name__
        model_yaml = obj.__dict__.get("yaml")
        names_raw = obj.__dict__.get("names", names_raw)
    else:
        raise S2Error(f"{path} does not contain a YOLOv5 model (found {type(obj).__name__})")

    _check_expanded(state, path)
    release = identify(keys, model_class, state)
    info["release"] = release.tag
    if model_class in release.unsupported:
        raise S2Error(f"{path} holds a YOLOv5 {release.tag} {model_class}, "
                      f"{release.unsupported[model_class]}; s2trt exports detection and "
                      "segmentation models")
    if cfg is not None:
        model_yaml = load_config(cfg) if not isinstance(cfg, dict) else dict(cfg)
    if model_yaml is None:
        raise S2Error(f"{path} carries no model config (yaml): pass it with --cfg")
    where = f"{cfg if cfg is not None and not isinstance(cfg, dict) else path}: model config"
    model_yaml = check_config(model_yaml, where)
    if names_raw is None:
        names_raw = model_yaml.get("names")
    model_yaml = {k: model_yaml[k] for k in _CONFIG_KEYS if k in model_yaml}
    model_yaml["nc"] = _nc_from_state(state, model_yaml)
    if given is not None:
        if len(given) != model_yaml["nc"]:
            raise S2Error(f"{len(given)} class names given for a model of {model_yaml['nc']} "
                          f"classes ({path}): pass exactly one name per class")
        if names_raw is not None:
            log.info("class names from %s replace the checkpoint's", brief(names))
        names_raw = given
    try:
        plan = plan_model(model_yaml, release=release)
    except S2Error as e:
        raise S2Error(f"{where.rsplit(': ', 1)[0]}: {e}") from None
    detect = len(model_yaml["backbone"]) + len(model_yaml["head"]) - 1
    for migrate in release.migrations:
        state = migrate(state, detect, plan.stride)
    _check_fits(plan.shapes, state, path)
    try:
        model = DetectionModel(model_yaml, plan=plan, release=release)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RuntimeError) as e:
        raise S2Error(f"{path}: malformed YOLOv5 checkpoint, its model cannot be rebuilt "
                      f"({type(e).__name__}: {str(e)[:200]})") from None
    half = any(v.dtype.is_floating_point and v.dtype.itemsize == 2 for v in state.values())
    model.float().eval()
    nc = model_yaml["nc"]
    names = _names(names_raw, nc, path)
    model.names = names
    stride = [int(s) for s in model.stride.tolist()]
    log.debug("loaded %s: %d classes, stride %s, fp16=%s", path, nc, stride, half)
    return LoadedModel(model, names, stride, model_yaml, source, half, info)


# What a rebuilt model's config keeps: the keys that check_config vouched for.
_CONFIG_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head", "ch",
                "activation")


def _nc_from_state(state: Mapping, model_yaml: dict) -> int:
    """The class count the weights were trained with, read from the Detect conv's shape."""
    from s2trt.models.parse import outputs_per_anchor

    detect = len(model_yaml["backbone"]) + len(model_yaml["head"]) - 1
    w = state.get(f"model.{detect}.m.0.weight")
    anchors = model_yaml["anchors"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
    extra = outputs_per_anchor(model_yaml) - model_yaml["nc"]  # 5, plus Segment's masks
    if w is None or w.dim() != 4 or w.shape[0] % na or w.shape[0] // na <= extra:
        return int(model_yaml["nc"])
    return w.shape[0] // na - extra


def _check_expanded(state: Mapping, path: Path | str) -> None:
    """The FP32 model these weights fill, against what the file may claim, before it is built.

    A tensor is a view: zero or overlapping strides (or a BUILD that re-strides it, or one tensor
    under many names) describe any number of elements over a few stored bytes, and the model
    allocates every one of them. A 226 KB file described a 277 M-parameter model this way.
    """
    numel = sum(v.numel() for v in state.values())
    size = Path(path).stat().st_size
    limit = MODEL_PER_BYTE * size + SLACK
    if 4 * numel > limit:
        raise S2Error(f"{path}: its weights describe {numel} elements ({4 * numel} bytes in FP32), "
                      f"more than a {size}-byte checkpoint may claim ({limit} bytes): zero or "
                      "overlapping strides? refusing to build the model")


def _check_fits(own: Mapping[str, tuple[int, ...]], state: Mapping, path: Any) -> None:
    """The weights against the shapes of the model the config describes, before it is built."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {v}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != v]
    kinds = [k for k in own if k in state and not k.endswith("num_batches_tracked")
             and not state[k].is_floating_point()]
    if missing or unexpected or shapes or kinds:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "")
            if unexpected else "",
            f"shape {'; '.join(shapes[:2])}" if shapes else "",
            f"not floating point: {', '.join(kinds[:3])}" if kinds else ""]))
        raise S2Error(f"{path}: the weights do not fit the model config ({detail[:600]}); is it a "
                      "checkpoint of this architecture? pass the right one with --cfg")
