"""Device memory, pinned host memory, streams, events and CUDA graphs for the TensorRT backend.

Two implementations of one small interface: cuda-python (NVIDIA's official bindings, the `gpu` extra)
and pycuda, for users who already have it. Both are imported only when an engine is run.

Handles (device pointers, streams, events, graphs) are plain ints, so the backend can be tested with
a fake that follows the same ordering contract: work issued on a stream runs in issue order,
`wait(stream, event)` orders a stream after the last `record` of that event issued before the wait,
and the host blocks only in `event_synchronize` / `synchronize`.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

from s2trt.errors import S2Error


class CaptureFailed(Exception):
    """A stream capture that cannot become a CUDA graph; the capture has been ended and cleared."""


class CudaMemory(Protocol):
    name: str
    integrated: bool  # the GPU shares the host's DRAM (Jetson); it still reads pinned memory uncached
    stream_handle: int  # the stream created with the memory; more with new_stream()

    def malloc(self, nbytes: int) -> int: ...

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...

    def new_stream(self) -> int: ...

    def new_event(self) -> int: ...

    def h2d(self, dst: int, src: np.ndarray, stream: int | None = None) -> None: ...

    def d2h(self, dst: np.ndarray, src: int, stream: int | None = None) -> None: ...

    def record(self, event: int, stream: int) -> None: ...

    def wait(self, stream: int, event: int) -> None: ...

    def event_synchronize(self, event: int) -> None: ...

    def begin_capture(self, stream: int) -> None: ...

    def end_capture(self, stream: int) -> int: ...

    def abort_capture(self, stream: int) -> None: ...

    def launch(self, graph: int, stream: int) -> None: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class CudaPythonMemory:
    """cuda-python's runtime API (`cuda.bindings.runtime`, or `cuda.cudart` before cuda-python 12.6)."""

    def __init__(self, cudart: Any):
        self.rt = cudart
        self.name = "cuda-python"
        self._device: list[int] = []
        self._host: list[int] = []
        self._streams: list[Any] = []
        self._events: list[Any] = []
        self._graphs: list[Any] = []
        self._by_handle: dict[int, Any] = {}
        device = self._call(cudart.cudaGetDevice(), "cudaGetDevice")
        self.integrated = bool(self._call(cudart.cudaDeviceGetAttribute(
            cudart.cudaDeviceAttr.cudaDevAttrIntegrated, device), "cudaDeviceGetAttribute"))
        self.stream_handle = self.new_stream()

    def _call(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise S2Error(f"CUDA error in {what}: {self._error_text(err)}")
        return None if not rest else rest[0] if len(rest) == 1 else rest

    def _keep(self, obj: Any, pool: list[Any]) -> int:
        """cuda-python wraps streams/events/graphs in objects; the backend holds their int handles."""
        pool.append(obj)
        self._by_handle[int(obj)] = obj
        return int(obj)

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._call(self.rt.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes} bytes)"))
        self._device.append(ptr)
        return ptr

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = int(self._call(self.rt.cudaMallocHost(nbytes), f"pinned host allocation ({nbytes} bytes)"))
        self._host.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def new_stream(self) -> int:
        # Non-blocking: no implicit synchronisation with the legacy default stream that other
        # libraries in the process may use (TensorRT warns against the default stream itself).
        stream = self._call(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking),
                            "cudaStreamCreateWithFlags")
        return self._keep(stream, self._streams)

    def new_event(self) -> int:
        event = self._call(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDisableTiming),
                           "cudaEventCreateWithFlags")
        return self._keep(event, self._events)

    def _s(self, stream: int | None) -> Any:
        return self._by_handle[self.stream_handle if stream is None else stream]

    def h2d(self, dst: int, src: np.ndarray, stream: int | None = None) -> None:
        self._call(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._s(stream)),
                   "cudaMemcpyAsync host to device")

    def d2h(self, dst: np.ndarray, src: int, stream: int | None = None) -> None:
        self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._s(stream)),
                   "cudaMemcpyAsync device to host")

    def record(self, event: int, stream: int) -> None:
        self._call(self.rt.cudaEventRecord(self._by_handle[event], self._s(stream)), "cudaEventRecord")

    def wait(self, stream: int, event: int) -> None:
        self._call(self.rt.cudaStreamWaitEvent(self._s(stream), self._by_handle[event], 0),
                   "cudaStreamWaitEvent")

    def event_synchronize(self, event: int) -> None:
        self._call(self.rt.cudaEventSynchronize(self._by_handle[event]), "cudaEventSynchronize")

    def begin_capture(self, stream: int) -> None:
        # Thread-local, as trtexec captures (samples/common/sampleDevice.h, TrtCudaGraph::beginCapture):
        # other threads' CUDA calls (decoders, another backend) do not invalidate this capture.
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        err, *_ = self.rt.cudaStreamBeginCapture(self._s(stream), mode)
        if err != self.rt.cudaError_t.cudaSuccess:
            self.rt.cudaGetLastError()
            raise CaptureFailed(f"cudaStreamBeginCapture: {self._error_text(err)}")

    def end_capture(self, stream: int) -> int:
        """The instantiated graph of the capture; CaptureFailed (error cleared) when there is none."""
        err, graph = self.rt.cudaStreamEndCapture(self._s(stream))
        if err != self.rt.cudaError_t.cudaSuccess or graph is None or int(graph) == 0:
            self.rt.cudaGetLastError()  # an invalidated capture leaves an error for the next call
            raise CaptureFailed(f"cudaStreamEndCapture: {self._error_text(err)}")
        err, graph_exec = self.rt.cudaGraphInstantiateWithFlags(graph, 0)
        self.rt.cudaGraphDestroy(graph)  # the executable graph holds what it needs
        if err != self.rt.cudaError_t.cudaSuccess:
            self.rt.cudaGetLastError()
            raise CaptureFailed(f"cudaGraphInstantiateWithFlags: {self._error_text(err)}")
        # Uploaded now, once, on the stream that replays it: otherwise the first cudaGraphLaunch
        # does the upload inside the steady loop (CUDA runtime API, cudaGraphUpload).
        (err,) = self.rt.cudaGraphUpload(graph_exec, self._s(stream))
        if err != self.rt.cudaError_t.cudaSuccess:
            self.rt.cudaGraphExecDestroy(graph_exec)
            self.rt.cudaGetLastError()
            raise CaptureFailed(f"cudaGraphUpload: {self._error_text(err)}")
        return self._keep(graph_exec, self._graphs)

    def abort_capture(self, stream: int) -> None:
        """Ends a capture whose work failed to enqueue; whatever it recorded is dropped."""
        err, graph = self.rt.cudaStreamEndCapture(self._s(stream))
        if err == self.rt.cudaError_t.cudaSuccess and graph is not None and int(graph) != 0:
            self.rt.cudaGraphDestroy(graph)
        self.rt.cudaGetLastError()

    def _error_text(self, err: Any) -> str:
        _, msg = self.rt.cudaGetErrorString(err)
        return msg.decode() if isinstance(msg, bytes) else str(msg)

    def launch(self, graph: int, stream: int) -> None:
        self._call(self.rt.cudaGraphLaunch(self._by_handle[graph], self._s(stream)), "cudaGraphLaunch")

    def synchronize(self) -> None:
        for stream in self._streams:
            self._call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for g in self._graphs:
            self.rt.cudaGraphExecDestroy(g)
        for ptr in self._device:
            self.rt.cudaFree(ptr)
        for ptr in self._host:
            self.rt.cudaFreeHost(ptr)
        for e in self._events:
            self.rt.cudaEventDestroy(e)
        for s in self._streams:
            self.rt.cudaStreamDestroy(s)
        self._device, self._host, self._events, self._streams, self._graphs = [], [], [], [], []
        self._by_handle = {}


class PyCudaMemory:
    """pycuda (its autoinit creates and holds the CUDA context on the first device).

    CUDA graphs are captured through cuda-python only: begin_capture says so and the backend enqueues
    without a graph.
    """

    def __init__(self, driver: Any):
        self.cuda = driver
        self.name = "pycuda"
        self._allocs: list[Any] = []
        self._objs: dict[int, Any] = {}
        self._events: list[Any] = []
        device = driver.Context.get_device()
        self.integrated = bool(device.get_attribute(driver.device_attribute.INTEGRATED))
        self.stream_handle = self.new_stream()

    def _keep(self, obj: Any, handle: int) -> int:
        self._objs[handle] = obj
        return handle

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(max(nbytes, 1))
        self._allocs.append(alloc)
        return int(alloc)

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def new_stream(self) -> int:
        stream = self.cuda.Stream()
        return self._keep(stream, int(stream.handle))  # TensorRT takes the CUstream value

    def new_event(self) -> int:
        # Events are only named by this object, so a counter (kept apart from stream handles) names them.
        self._events.append(self.cuda.Event(self.cuda.event_flags.DISABLE_TIMING))
        return -len(self._events)

    def _s(self, stream: int | None) -> Any:
        return self._objs[self.stream_handle if stream is None else stream]

    def h2d(self, dst: int, src: np.ndarray, stream: int | None = None) -> None:
        self.cuda.memcpy_htod_async(dst, src, self._s(stream))

    def d2h(self, dst: np.ndarray, src: int, stream: int | None = None) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self._s(stream))

    def record(self, event: int, stream: int) -> None:
        self._events[-event - 1].record(self._s(stream))

    def wait(self, stream: int, event: int) -> None:
        self._s(stream).wait_for_event(self._events[-event - 1])

    def event_synchronize(self, event: int) -> None:
        self._events[-event - 1].synchronize()

    def begin_capture(self, stream: int) -> None:
        raise CaptureFailed("CUDA graphs are captured through cuda-python only (pip install cuda-python)")

    def end_capture(self, stream: int) -> int:
        raise CaptureFailed("no capture under pycuda")

    def abort_capture(self, stream: int) -> None:
        pass

    def launch(self, graph: int, stream: int) -> None:
        raise CaptureFailed("no CUDA graphs under pycuda")

    def synchronize(self) -> None:
        for stream in self._objs.values():
            stream.synchronize()

    def close(self) -> None:
        for a in self._allocs:
            a.free()
        self._allocs, self._objs, self._events = [], {}, []


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
