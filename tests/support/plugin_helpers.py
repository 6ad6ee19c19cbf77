"""The plugin tests' shared pieces: building plugins/ with CMake + nvcc once per session (or using a
build made elsewhere), and running the S2SplitAttention kernel on device memory against the references."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from paths import REPO
from reference import split_attention as ref_split_attention

from s2trt.export import plugin_reference

PLUGINS = REPO / "plugins"
# One architecture keeps the builds of the glue short; the kernels library is built with the CMake
# default (the shipped configuration: 6 cubins + PTX, about 11 s more on two cores).
TEST_ARCH = "90"

CUDA_SUCCESS = 0
DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
# FP32: only FP32 summation error (sums of up to 3*H*W terms, dot products of C terms).
# FP16: inputs are exact in FP16, the output is rounded once: 1 ulp is at most 2^-10 relative.
TOL = {np.dtype(np.float32): {"rtol": 1e-5, "atol": 3e-5}, np.dtype(np.float16): {"rtol": 2e-3, "atol": 2e-4}}


def nvcc_path() -> str | None:
    for candidate in (os.environ.get("CUDACXX"),
                      str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda-13.0")) / "bin" / "nvcc")):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("nvcc")


def toolchain_missing() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake not found"
    if nvcc_path() is None:
        return "nvcc not found (set CUDACXX or CUDA_HOME)"
    return None


@functools.cache
def scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="s2trt-plugin-build-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def run_tool(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cmake_configure(name: str, *definitions: str, arch: str | None = TEST_ARCH) -> Path:
    build = scratch_dir() / name
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    arch_def = [f"-DCMAKE_CUDA_ARCHITECTURES={arch}"] if arch else []
    cmd = ["cmake", "-S", str(PLUGINS), "-B", str(build), *generator,
           f"-DCMAKE_CUDA_COMPILER={nvcc_path()}", *arch_def, *definitions]
    r = run_tool(cmd)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return build


def cmake_build(name: str, *definitions: str, arch: str | None = TEST_ARCH) -> Path:
    build = cmake_configure(name, *definitions, arch=arch)
    r = run_tool(["cmake", "--build", str(build), "-j2"])
    assert r.returncode == 0, f"build of {name} failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    return build


@functools.cache
def _kernels_build() -> Path:
    return cmake_build("kernels", "-DS2TRT_EMULATION=ON", arch=None)


def prebuilt() -> Path | None:
    """S2TRT_PLUGIN_BUILD: a CMake build folder made elsewhere (a GPU machine without nvcc)."""
    folder = os.environ.get("S2TRT_PLUGIN_BUILD")
    return Path(folder).resolve() if folder else None


def kernels_build_dir() -> Path:
    """The build folder of the kernels (and of their CPU emulation), built once per session; skips only
    when the toolchain is missing."""
    if prebuilt():
        return prebuilt()
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    return _kernels_build()


def kernels_library() -> Path:
    lib = kernels_build_dir() / "libs2trt_kernels.so"
    assert lib.is_file(), f"{lib.parent} has no {lib.name}"
    return lib


def make_problem(b: int, c: int, h: int, w: int, dtype, seed: int = 0, logit_scale: float = 2.0):
    """Inputs exactly representable in `dtype`; weights scaled so that the hidden layer is O(1) and the
    logits O(logit_scale), i.e. the softmax is neither uniform nor one-hot."""
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((b, c, h, w)).astype(dtype) for _ in range(3)]
    w1 = (rng.standard_normal((c, c)) / np.sqrt(c * 3 * h * w)).astype(np.float32)
    w2 = (rng.standard_normal((3 * c, c)) * logit_scale / np.sqrt(c)).astype(np.float32)
    return xs, w1, w2


class Device:
    """Just enough of torch or cupy to hold arrays on the GPU and hand raw pointers to the kernel."""

    def __init__(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
                # A real stream, as TensorRT gives: the kernel uses programmatic launch only on one.
                self._stream = torch.cuda.Stream()
                return
        except ImportError:
            pass
        self.torch = None
        try:
            import cupy
        except ImportError:
            pytest.skip("needs torch with CUDA or cupy for device memory")
        self.cp = cupy
        self._stream = cupy.cuda.Stream(non_blocking=True)

    def put(self, a: np.ndarray):
        a = np.ascontiguousarray(a)
        return self.torch.from_numpy(a).cuda() if self.torch else self.cp.asarray(a)

    def get(self, a) -> np.ndarray:
        return a.cpu().numpy() if self.torch else self.cp.asnumpy(a)

    def ptr(self, a) -> int:
        return a.data_ptr() if self.torch else a.data.ptr

    def stream(self) -> int:
        return self._stream.cuda_stream if self.torch else self._stream.ptr

    def sync(self) -> None:
        if self.torch:
            self.torch.cuda.synchronize()
        else:
            self.cp.cuda.Device().synchronize()


def run_kernel(lib, dev: Device, xs, w1, w2, misalign: bool = False) -> np.ndarray:
    """One s2sa_forward on the device. misalign=True shifts every tensor by one element, which must
    select the element-wise path whatever H*W is."""
    b, c, h, w = xs[0].shape
    shift = 1 if misalign else 0

    def put_flat(a: np.ndarray):
        flat = np.zeros(a.size + shift, a.dtype)
        flat[shift:] = a.ravel()
        return dev.put(flat)

    d_x = [put_flat(x) for x in xs]
    d_out = put_flat(np.full(xs[0].shape, np.nan, xs[0].dtype))
    d_w1, d_w2 = dev.put(w1.ravel()), dev.put(w2.ravel())
    ws = lib.s2sa_workspace_size(b, c)
    d_ws = dev.put(np.zeros(max(ws, 1), np.uint8))
    off = shift * xs[0].dtype.itemsize
    dev.sync()  # the copies above ran on the default stream; the kernel runs on another
    status = lib.s2sa_forward(*(dev.ptr(t) + off for t in d_x), dev.ptr(d_out) + off, dev.ptr(d_w1),
                              dev.ptr(d_w2), b, c, h, w, DTYPE_CODE[xs[0].dtype], dev.ptr(d_ws), ws,
                              dev.stream())
    assert status == CUDA_SUCCESS, lib.s2sa_error_string(status).decode()
    dev.sync()
    return dev.get(d_out)[shift:].reshape(xs[0].shape)


def check_against_references(out: np.ndarray, xs, w1, w2, tol: dict | None = None) -> None:
    dtype = xs[0].dtype
    tol = tol or TOL[dtype]
    assert out.dtype == dtype and np.isfinite(out).all()
    want = ref_split_attention(*xs, w1, w2)
    np.testing.assert_allclose(out.astype(np.float64), want, **tol)
    op = plugin_reference.split_attention(*xs, xs[0].shape[1], w1.ravel(), w2.ravel())
    np.testing.assert_allclose(out.astype(np.float32), op.astype(np.float32), **tol)
