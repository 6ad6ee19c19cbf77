"""Tensors in and out of Triton's Python backend through DLPack, never through its NumPy bridge.

The backend stub's NumPy bridge (`Tensor.as_numpy`, `Tensor(name, array)`, and the BYTES decoder) is
compiled against NumPy 1's C structures: under NumPy 2 it reads strides of 0 and sends empty
outputs, silently. DLPack is a stable C ABI, so it works under both; that is also why encoded
images travel as uint8 vectors rather than BYTES.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

_CAPSULE_NOISE = "PyCapsule_GetPointer called with incorrect name"
_hook_installed = False


def quiet_capsule_deleter() -> None:
    """Drop the one harmless error NumPy reports for each output tensor handed to the stub.

    The stub marks a consumed capsule 'used_dlpack', a name NumPy's capsule deleter does not know, so
    the deleter reports an unraisable ValueError; the stub has already released the tensor itself.
    Other unraisable errors still reach the previous hook.
    """
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, ValueError) and _CAPSULE_NOISE in str(unraisable.exc_value):
            return
        previous(unraisable)

    sys.unraisablehook = hook


def as_array(tensor: Any) -> np.ndarray | None:
    """A pb_utils.Tensor (or None for an absent optional input) as a NumPy array."""
    return None if tensor is None else np.from_dlpack(tensor)


def to_tensor(pb_utils: Any, name: str, array: np.ndarray) -> Any:
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array).__dlpack__())
