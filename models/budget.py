"""The memory a checkpoint's pickle may claim, counted before each allocation happens.

A pickle is a program: a few bytes can ask NumPy for a 1.5 GB scalar, chain `_codecs.encode` into
gigabytes, copy one stored dict into a million objects or describe a 277 M-parameter model with
zero-stride tensors over one stored float. The loader (models/checkpoint.py) hands the unpickler
only the callables made here; each states what it will allocate and `Budget.charge` refuses once
the total passes what a file of that size may claim. What the opcodes themselves build (dicts,
lists, strings, the memo) is bounded before unpickling by `scan_pickle`.

The rule, in numbers: a file of N bytes may claim 32·N + 16 MiB while it is unpickled; tensor
storages must be present in the file (zip: the record's size, legacy format: the bytes of the
file); a tensor's claim is its expanded size, so zero or overlapping strides count every element
they describe; the FP32 model its weights fill may take 8·N + 16 MiB.
"""

from __future__ import annotations

import math
import pickletools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from s2trt.errors import S2Error
from s2trt.models.limits import brief

# A file of N bytes may claim PER_BYTE * N + SLACK bytes. The charges are upper bounds: YOLOv5's
# own checkpoints, shrunk to a few hundred KB with all their modules (tests/data/yolov5), claim
# up to 30 N, full-size ones far less; a refused 1 MB file stays well below the 250 MB that
# torch's import itself takes.
PER_BYTE = 32
SLACK = 16 << 20
# The model a checkpoint's weights fill, in FP32: train.py stores them in FP16, twice (model, ema).
MODEL_PER_BYTE = 8
MAX_DIMS = 16  # a tensor's or array's rank; YOLOv5 stores at most 6 (v5.0's anchor_grid)
# A size, stride or offset is an int64 in torch and NumPy; a pickle's LONG4 can hold a
# million-digit int whose products alone take seconds.
MAX_DIM = (1 << 63) - 1

# What one object costs CPython at most, beyond its payload (64-bit, generous): an element of a
# dict or set with its share of the table, a memo entry, any other object.
ENTRY = 128
OBJECT = 256
MODULE = 4096  # what nn.Module.__init__ makes: its dict and a dozen ordered dicts


# What a call's size is read from (a tensor or array is Sized too, and len() of a 0-d one fails).
_CONTAINERS = (list, tuple, dict, set, frozenset, str, bytes, bytearray)


class Budget:
    """What one checkpoint file may claim; `charge` before every allocation."""

    def __init__(self, path: Path, file_size: int, records: dict[str, int] | None = None):
        self.path, self.file_size = path, file_size
        self.limit = PER_BYTE * file_size + SLACK
        self.spent = 0
        # zip: the bytes stored per storage key; None: the legacy stream, whose storages follow
        # the pickle in the same file
        self.records = records
        self.stored: dict[Any, int] = {}  # storage key -> bytes
        self.stored_total = 0
        self.resolved: dict[tuple[str, str], Any] = {}  # one object per global and load

    def charge(self, nbytes: int, what: str) -> None:
        self.spent += nbytes
        if self.spent > self.limit:
            raise S2Error(
                f"{self.path}: {what} claims {nbytes} bytes, more than is left of what a "
                f"{self.file_size}-byte checkpoint may allocate ({self.limit} bytes); refusing to "
                "allocate it (a memory bomb?)")

    def charge_args(self, what: str, args: tuple, per_item: int = ENTRY) -> None:
        """A call's result holds at most its arguments' elements: charged per element."""
        items = sum(len(a) for a in args if isinstance(a, _CONTAINERS))
        self.charge(OBJECT + per_item * items, what)

    def check_array(self, shape: Any, dtype: Any) -> None:
        import numpy as np

        dims = shape if isinstance(shape, tuple) else (shape,)
        if len(dims) > MAX_DIMS or not all(type(d) is int and 0 <= d <= MAX_DIM for d in dims):
            raise S2Error(f"{self.path}: a NumPy array in the checkpoint has the shape {brief(shape)}")
        nbytes = math.prod(dims) * np.dtype(dtype).itemsize
        if nbytes > self.limit:
            raise S2Error(f"{self.path}: a NumPy array in the checkpoint claims {nbytes} bytes, larger "
                          f"than a {self.file_size}-byte file may allocate; refusing to allocate it")
        self.charge(nbytes + OBJECT, "a NumPy array")

    def check_storage(self, saved_id: Any) -> None:
        """A storage torch is about to allocate: its bytes must be stored in the file."""
        import torch

        # zip: ('storage', type, key, location, numel); legacy: the same and view metadata
        ok = isinstance(saved_id, tuple) and len(saved_id) in (5, 6)
        numel = saved_id[4] if ok else None
        if type(numel) is not int or not 0 <= numel <= self.file_size:
            raise S2Error(f"{self.path}: a tensor storage in the checkpoint claims {brief(numel)} "
                          f"elements, more than the {self.file_size}-byte file holds")
        kind, key = saved_id[1], saved_id[2]
        dtype = torch.uint8 if kind is torch.UntypedStorage else getattr(kind, "dtype", None)
        if not isinstance(dtype, torch.dtype) or not isinstance(key, (str, int)):
            raise S2Error(f"{self.path}: a tensor storage in the checkpoint has the type "
                          f"{brief(kind)} and key {brief(key)}")
        nbytes = numel * torch._utils._element_size(dtype)
        if key in self.stored:  # torch reuses a loaded storage: nothing new is allocated
            return
        if self.records is not None:
            present = self.records.get(str(key))
            if present is None or nbytes != present:  # torch.save stores exactly the storage
                raise S2Error(f"{self.path}: a tensor storage in the checkpoint claims {nbytes} bytes "
                              f"but its record holds {brief(present)}")
        elif self.stored_total + nbytes > self.file_size:
            raise S2Error(f"{self.path}: a tensor storage in the checkpoint claims {numel} elements "
                          f"({nbytes} bytes), more than the {self.file_size}-byte file holds")
        self.stored[key] = nbytes
        self.stored_total += nbytes

    def check_tensor(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        """A view of a loaded storage: inside it, and charged at the size it describes."""
        import torch

        if not isinstance(storage, torch.storage.TypedStorage):
            raise S2Error(f"{self.path}: a tensor in the checkpoint is built on a "
                          f"{type(storage).__name__}, not on a stored storage")
        size, stride = _dims(size), _dims(stride)
        if (size is None or stride is None or len(size) != len(stride) or type(offset) is not int
                or not 0 <= offset <= MAX_DIM):
            raise S2Error(f"{self.path}: a tensor in the checkpoint has the size {brief(size)}, "
                          f"stride {brief(stride)} and offset {brief(offset)}")
        numel = math.prod(size)
        end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1 if numel else 0
        if end > storage._size():
            raise S2Error(f"{self.path}: a tensor in the checkpoint reaches element {end} of a "
                          f"storage of {storage._size()}")
        self.charge(numel * storage._element_size() + OBJECT,
                    f"a tensor of size {brief(tuple(size))} and stride {brief(tuple(stride))}")


def _dims(x: Any) -> list[int] | None:
    if not isinstance(x, (tuple, list)) or len(x) > MAX_DIMS:
        return None
    return list(x) if all(type(d) is int and 0 <= d <= MAX_DIM for d in x) else None


class Checked:
    """A callable the unpickler may call. It has no __dict__ and refuses __setstate__: a BUILD
    cannot copy a stored dict into it, nor change what it calls."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable[..., Any], name: str):
        self._fn, self._name = fn, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise S2Error(f"the checkpoint's pickle sets the state of {self._name}; a function has none")

    def __repr__(self) -> str:
        return self._name


def ordered_dict_class(budget: Budget) -> type:
    """OrderedDict whose BUILD (a state_dict's `_metadata`) is charged before it is copied."""

    class OrderedDictState(OrderedDict):
        def __setstate__(self, state: Any) -> None:
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise S2Error(f"{budget.path}: an OrderedDict in the checkpoint has the state "
                              f"{brief(state)}")
            budget.charge(ENTRY * len(state), "an OrderedDict's attributes")
            self.__dict__.update(state)

    OrderedDictState.__name__ = OrderedDictState.__qualname__ = "OrderedDict"
    return OrderedDictState


def text_codec(budget: Budget) -> Callable[..., bytes]:
    """`_codecs.encode` as protocol-2 pickles use it: bytes written as a latin-1 string. Other
    codecs are refused: 'hex', 'base64' or 'unicode_escape' grow their input, chained 20 times a
    kilobyte becomes gigabytes."""
    import codecs

    def encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise S2Error(f"{budget.path}: the checkpoint's pickle calls _codecs.encode on a "
                          f"{type(obj).__name__} with {brief(encoding)}; pickles write bytes as "
                          "encode(<str>, 'latin1')")
        budget.charge(len(obj) + OBJECT, "a bytes object")
        return codecs.encode(obj, "latin1")

    return encode


def path_parts(budget: Budget) -> Callable[..., str]:
    """A pickled pathlib path, as text: its parts are strings (a path from another OS must not
    fail to build); refs to one stored string cannot multiply it."""

    def join(*parts: Any) -> str:
        if not all(isinstance(p, str) for p in parts):
            raise S2Error(f"{budget.path}: a path in the checkpoint has the parts {brief(parts)}")
        budget.charge(sum(map(len, parts)) * 4 + OBJECT, "a path")
        return "/".join(parts)

    return join


def numpy_scalar(budget: Budget) -> Callable[..., Any]:
    """numpy's scalar(dtype, data): without data it allocates and zeroes the dtype's itemsize
    (then copies it): `dtype('V1500000000')` alone is 3 GB."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core

    def scalar(dtype: Any, *data: Any) -> Any:
        if not isinstance(dtype, np.dtype):
            raise S2Error(f"{budget.path}: a NumPy scalar in the checkpoint has the type {brief(dtype)}")
        if dtype.hasobject:
            budget.charge(OBJECT, "a NumPy scalar")
        elif len(data) != 1 or not isinstance(data[0], bytes) or len(data[0]) != dtype.itemsize:
            raise S2Error(f"{budget.path}: a NumPy scalar of {dtype.itemsize} bytes in the "
                          "checkpoint does not come with its bytes")
        else:
            budget.charge(2 * dtype.itemsize + OBJECT, "a NumPy scalar")
        return core.multiarray.scalar(dtype, *data)

    return scalar


def tensor_rebuilders(budget: Budget) -> dict[str, Callable[..., Any]]:
    """torch._utils' rebuild functions with each tensor checked against its storage first, and
    its backward hooks (never serialized by torch, which stores an empty dict) refused."""
    import torch

    def no_hooks(hooks: Any) -> None:
        if hooks is not None and (not isinstance(hooks, dict) or hooks):
            raise S2Error(f"{budget.path}: a tensor in the checkpoint carries backward hooks "
                          f"{brief(hooks)}")

    def rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, *metadata: Any) -> Any:
        budget.check_tensor(storage, offset, size, stride)
        no_hooks(hooks)
        return torch._utils._rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride),
                                               bool(requires_grad), OrderedDict(), *metadata)

    def parameter(data: Any, requires_grad: Any, hooks: Any, *state: Any) -> Any:
        if not isinstance(data, torch.Tensor):
            raise S2Error(f"{budget.path}: a parameter in the checkpoint holds a "
                          f"{type(data).__name__}, not a tensor")
        no_hooks(hooks)
        if state:
            budget.charge_args("a parameter's attributes", state)
            return torch._utils._rebuild_parameter_with_state(data, bool(requires_grad),
                                                              OrderedDict(), *state)
        budget.charge(OBJECT, "a parameter")
        return torch._utils._rebuild_parameter(data, bool(requires_grad), OrderedDict())

    return {"_rebuild_tensor_v2": rebuild_tensor, "_rebuild_parameter": parameter,
            "_rebuild_parameter_with_state": parameter}


# --- what the opcodes build -------------------------------------------------------------------

# Opcodes that make a new object of their own (not a reference to one): its fixed cost.
_NEW = {"EMPTY_DICT": OBJECT, "EMPTY_LIST": OBJECT, "EMPTY_SET": OBJECT, "DICT": OBJECT,
        "LIST": OBJECT, "TUPLE": 64, "TUPLE1": 64, "TUPLE2": 64, "TUPLE3": 64, "FROZENSET": OBJECT,
        "BININT": 32, "BININT2": 32, "INT": 32, "LONG": 32, "BINFLOAT": 32, "FLOAT": 32,
        "LONG1": 32, "LONG4": 32, "BYTEARRAY8": 64, "BINUNICODE": 64, "SHORT_BINUNICODE": 64,
        "BINUNICODE8": 64, "UNICODE": 64, "BINBYTES": 64, "SHORT_BINBYTES": 64, "BINBYTES8": 64,
        "BINSTRING": 64, "SHORT_BINSTRING": 64, "STRING": 64}
# What each element costs the container a marked opcode fills: a list or tuple slot, or a dict
# or set entry with its share of the table.
_PER_ELEMENT = {"APPENDS": 16, "LIST": 16, "TUPLE": 8, "OBJ": 8, "INST": 8, "SETITEMS": ENTRY,
                "DICT": ENTRY, "ADDITEMS": ENTRY, "FROZENSET": ENTRY}
_UNMARKED = {"APPEND": 16, "SETITEM": 2 * ENTRY}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}


def scan_pickle(ops: Iterator[tuple[Any, Any, Any]], budget: Budget) -> None:
    """Charge what unpickling these opcodes builds, before it runs.

    Stack depths are followed as pickletools.dis does, so that an APPENDS or SETITEMS knows how
    many elements it adds. What REDUCE, NEWOBJ and BUILD call is charged when it is called. The C
    unpickler sizes its memo by the largest index a PUT names (twice it, zeroed): one LONG_BINPUT
    of 10^8 is 1.6 GB, so that index is charged too.
    """
    spent, depth, marks, memo = 0, 0, [], 0
    for op, arg, _pos in ops:
        name = op.name
        spent += _NEW.get(name, 0) + _UNMARKED.get(name, 0)
        if isinstance(arg, (str, bytes, bytearray)):
            spent += 2 * len(arg)
        if name in _MEMO_PUT:
            memo = max(memo, int(arg) + 1)
        elif name == "MEMOIZE":
            memo += 1
        elif name == "FRAME" and arg > budget.file_size:
            raise S2Error(f"{budget.path}: the checkpoint's pickle announces a frame of {arg} "
                          f"bytes in a {budget.file_size}-byte file")
        before, after = op.stack_before, op.stack_after
        if name == "MARK":
            marks.append(depth)
        elif pickletools.markobject in before:
            if not marks:
                raise S2Error(f"{budget.path} is not a readable PyTorch checkpoint ({name} "
                              "without a MARK)")
            top = marks.pop()
            spent += _PER_ELEMENT.get(name, 0) * max(depth - top, 0)
            depth = top - before.index(pickletools.markobject) + len(after)
        else:
            depth += len(after) - len(before)
        if spent > 1 << 20:  # charged in steps, so that a bomb stops early
            budget.charge(spent, "what the checkpoint's pickle opcodes build")
            spent = 0
    budget.charge(spent + 16 * memo, "what the checkpoint's pickle opcodes build")
