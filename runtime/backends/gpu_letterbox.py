"""The network input made on the GPU: letterbox, BGR->RGB, 1/255, NCHW (docs/DESIGN.md §3) by the
kernels library.

The CPU uploads each frame as it was decoded (uint8, any size) and this module launches
`s2pp_letterbox` of libs2trt_kernels.so (plugins/s2Preprocess/) over the batch, which writes the engine's
input tensor in FP32 or FP16 in place: no resize and no float conversion on the CPU, 1 byte per pixel
over the bus instead of 4 per network pixel. The result matches `s2trt.detect.letterbox.preprocess` within
one 8-bit step per pixel, and the box mapping (`LetterboxInfo`) comes from the same Python geometry.

Nothing here allocates or copies device memory: callers (the TensorRT backend) own the buffers and the
stream and pass raw device pointers, so this module works with cuda-python, pycuda, cupy or torch alike.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from s2trt.detect.letterbox import LetterboxInfo, _as_hw, letterbox_geometry
from s2trt.errors import S2Error

KERNELS_LIB_NAME = "libs2trt_kernels.so"
KERNELS_ENV = "S2TRT_KERNELS_LIB"
KERNELS_BUILD_CMD = "cmake -S plugins -B plugins/build && cmake --build plugins/build"

DTYPE_FLOAT32 = 0  # s2PreprocessKernel.h: S2PP_DTYPE_*
DTYPE_FLOAT16 = 1
_INVALID_VALUE = 1  # cudaErrorInvalidValue
# cudaError_t values meaning "the library has no code for this GPU" (s2sa_is_missing_code).
_MISSING_CODE = {98, 200, 209, 218, 221, 222, 223}


class DeviceFrame(NamedTuple):
    """One uint8 BGR HWC frame in device memory."""

    ptr: int
    height: int
    width: int
    pitch: int = 0  # bytes from one row to the next; 0: 3 * width (a contiguous frame)


def default_kernels_library() -> Path | None:
    """$S2TRT_KERNELS_LIB (even when missing, so the error names it), else the CMake build output,
    else a library installed next to the package."""
    env = os.environ.get(KERNELS_ENV)
    if env:
        return Path(env).expanduser()
    from s2trt.trt.plugin_lib import shipped_plugin_library

    return shipped_plugin_library(KERNELS_LIB_NAME)


class GpuLetterbox:
    """`s2pp_letterbox` of the kernels library, called through ctypes.

    `entry` names the function to call: `s2pp_letterbox` (a stream-ordered launch on the GPU) or, in
    the tests, `s2pp_emulate_letterbox` of libs2sa_emulation.so, which runs the same kernel source on
    the CPU over host pointers.
    """

    def __init__(self, library: str | Path | None = None, *, entry: str = "s2pp_letterbox") -> None:
        path = Path(library).expanduser() if library else default_kernels_library()
        if path is None or not path.is_file():
            where = (f"{path} does not exist" if path
                     else f"no ${KERNELS_ENV}, no plugins/build/{KERNELS_LIB_NAME}")
            raise S2Error(f"the s2trt kernels library is needed for GPU preprocessing ({where}): "
                          f"build it with `{KERNELS_BUILD_CMD}`")
        try:
            lib = ctypes.CDLL(str(path))
            run = getattr(lib, entry)
            geometry = lib.s2pp_letterbox_geometry
        except (OSError, AttributeError) as e:
            raise S2Error(f"{path} is not a usable s2trt kernels library ({e}): rebuild it with "
                          f"`{KERNELS_BUILD_CMD}`") from None
        c_int_p = ctypes.POINTER(ctypes.c_int)
        run.restype = ctypes.c_int
        run.argtypes = ([ctypes.POINTER(ctypes.c_void_p), c_int_p, c_int_p, c_int_p, ctypes.c_int,
                         ctypes.c_void_p] + [ctypes.c_int] * 5 + [ctypes.c_void_p])
        geometry.restype = ctypes.c_int
        geometry.argtypes = [ctypes.c_int] * 5 + [c_int_p]
        self.path = path
        self._lib = lib
        self._run = run
        self._geometry = geometry

    def geometry(self, orig_hw: tuple[int, int], imgsz: int | Sequence[int], scaleup: bool = True
                 ) -> tuple[int, int, int, int]:
        """(resized h, resized w, top, left) as the kernel places a frame of orig_hw."""
        h, w = _as_hw(imgsz)
        g = (ctypes.c_int * 4)()
        status = self._geometry(int(orig_hw[0]), int(orig_hw[1]), h, w, int(scaleup), g)
        if status != 0:
            raise S2Error(f"a frame of {orig_hw[0]}x{orig_hw[1]} cannot be letterboxed to {h}x{w}: "
                          "sizes must be positive")
        return g[0], g[1], g[2], g[3]

    def __call__(self, frames: Sequence[DeviceFrame], out: int, imgsz: int | Sequence[int], *,
                 half: bool = False, stream: int | None = None, stride: int = 32, pad_value: int = 114,
                 scaleup: bool = True) -> list[LetterboxInfo]:
        """Letterboxes `frames` into the (len(frames), 3, h, w) tensor at device pointer `out` (FP16
        when `half`), ordered on `stream`; returns one LetterboxInfo per frame, as `preprocess` does."""
        h, w = _as_hw(imgsz)
        if h % stride or w % stride:
            raise S2Error(f"image size {h}x{w} is not a multiple of the model stride {stride}")
        n = len(frames)
        infos = []
        for i, f in enumerate(frames):
            if f.height <= 0 or f.width <= 0:
                raise S2Error(f"frame {i} is empty (shape ({f.height}, {f.width}, 3))")
            if f.pitch and f.pitch < 3 * f.width:
                raise S2Error(f"frame {i}: row pitch {f.pitch} is shorter than a row ({3 * f.width} bytes)")
            r, _, (dw, dh) = letterbox_geometry((f.height, f.width), (h, w), False, scaleup, stride)
            infos.append(LetterboxInfo(r, (dw, dh), (f.height, f.width)))
        if n == 0:
            return infos
        status = self._run((ctypes.c_void_p * n)(*(f.ptr for f in frames)),
                           (ctypes.c_int * n)(*(f.height for f in frames)),
                           (ctypes.c_int * n)(*(f.width for f in frames)),
                           (ctypes.c_int * n)(*(f.pitch for f in frames)),
                           n, out, h, w, DTYPE_FLOAT16 if half else DTYPE_FLOAT32, pad_value, int(scaleup),
                           stream or None)
        if status != 0:
            text = self._lib.s2sa_error_string
            text.restype = ctypes.c_char_p
            text.argtypes = [ctypes.c_int]
            why = text(status).decode(errors="replace")
            if status in _MISSING_CODE:
                raise S2Error(f"{self.path.name} has no code for this GPU ({why}): rebuild it with "
                              f"-DCMAKE_CUDA_ARCHITECTURES=<your GPU's compute capability, e.g. 87>")
            if status == _INVALID_VALUE:
                raise S2Error(f"GPU preprocessing refused its arguments ({why}): pad value {pad_value}, "
                              f"input {h}x{w}, {n} frame(s)")
            raise S2Error(f"GPU preprocessing failed: {why}")
        return infos
