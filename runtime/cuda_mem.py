"""Device memory, pinned host memory and one stream for the TensorRT backend.

Two implementations of one small interface: cuda-python (NVIDIA's official bindings, the `gpu` extra)
and pycuda, for users who already have it. Both are imported only when an engine is run.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

from s2trt.errors import S2Error


class CudaMemory(Protocol):
    name: str

    def malloc(self, nbytes: int) -> int: ...

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...

    def h2d(self, dst: int, src: np.ndarray) -> None: ...

    def d2h(self, dst: np.ndarray, src: int) -> None: ...

    @property
    def stream_handle(self) -> int: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class CudaPythonMemory:
    """cuda-python's runtime API (`cuda.bindings.runtime`, or `cuda.cudart` before cuda-python 12.6)."""

    def __init__(self, cudart: Any):
        self.rt = cudart
        self.name = "cuda-python"
        self._device: list[int] = []
        self._host: list[int] = []
        self._stream = self._call(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _call(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            _, msg = self.rt.cudaGetErrorString(err)
            text = msg.decode() if isinstance(msg, bytes) else str(msg)
            raise S2Error(f"CUDA error in {what}: {text}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._call(self.rt.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes} bytes)"))
        self._device.append(ptr)
        return ptr

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = int(self._call(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes} bytes)"))
        self._host.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self._call(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                   "cudaMemcpyAsync host to device")

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
                   "cudaMemcpyAsync device to host")

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        self._call(self.rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr in self._device:
            self.rt.cudaFree(ptr)
        for ptr in self._host:
            self.rt.cudaFreeHost(ptr)
        self._device, self._host = [], []
        if self._stream is not None:
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None


class PyCudaMemory:
    """pycuda (its autoinit creates and holds the CUDA context on the first device)."""

    def __init__(self, driver: Any):
        self.cuda = driver
        self.name = "pycuda"
        self._allocs: list[Any] = []
        self._stream = driver.Stream()

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(max(nbytes, 1))
        self._allocs.append(alloc)
        return int(alloc)

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(dst, src, self._stream)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self._stream)

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        for a in self._allocs:
            a.free()
        self._allocs = []


def open_cuda() -> CudaMemory:
    """cuda-python when installed, else pycuda, else an error naming the extra to install."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            cudart = None
    if cudart is not None:
        return CudaPythonMemory(cudart)
    try:
        import pycuda.autoinit  # noqa: F401  (creates the context)
        import pycuda.driver as driver
    except ImportError:
        raise S2Error("s2infer --engine needs CUDA memory from the Python package 'cuda-python' "
                      "(or pycuda), which is not installed: pip install 's2trt[gpu]'") from None
    return PyCudaMemory(driver)
