"""CUDA and TensorRT stand-ins for the tests, one of each (tests/trt/test_fakes.py checks every one's
signatures against the interface it stands for, so a fake cannot drift from it).

- `FakeCuda`: s2trt.trt.cuda_mem.CudaMemory, keeping CUDA's ordering contract and nothing more;
- `FakeCudart`: the functions of cuda-python's `cuda.bindings.runtime` that CudaPythonMemory calls;
- `FakeLetterbox`: runtime.backends.gpu_letterbox.GpuLetterbox's call;
- `FakeEngine`, `FakeContext`, `fake_trt`: the TensorRT runtime API the TensorRT backend uses, whose
  "network" is a known function of its input (`expected_output0`);
- `FakeTRT` and its builder objects: the TensorRT builder API export/engine.py and s2trt.trt use, per
  major version, with the layer information IEngineInspector reports for what it built.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import types
from types import SimpleNamespace

import numpy as np

from s2trt.detect.letterbox import letterbox_geometry, preprocess
from s2trt.errors import S2Error
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.trt import TrtBackend
from s2trt.trt.versions import for_trt

H, W, N, NC = 64, 96, 7, 3  # the fake engine's input height and width, rows and classes of output0


# ------------------------------------------------------------------------------------- CUDA

class FakeCuda:
    """A GPU that keeps CUDA's ordering contract and nothing more.

    Work issued on a stream runs in issue order, but only when the host waits for it
    (`event_synchronize`, `synchronize`) and only as far as that wait needs. Streams are ordered by
    nothing but `wait(stream, event)`, which waits for the last `record` of the event issued before
    the wait (cudaStreamWaitEvent, CUDA runtime API): a missing wait runs work too early or too late
    and the result comes out wrong. A copy reads its source when it runs, not when it is issued, as
    cudaMemcpyAsync from page-locked memory does.
    Device pointers are addresses of NumPy buffers, so device work can be plain NumPy (or the CPU
    emulation of a CUDA kernel). Every host call is logged in `calls`.

    A copy from pageable memory is staged by CUDA before cudaMemcpyAsync returns (host to device) or
    completes before it returns (device to host); the fake does the same and lists such copies in
    `pageable`, which the overlapped backend must never make. `device` says which GPU is current
    (cudaSetDevice) when memory is allocated: `device_of` records it per allocation.
    """

    name = "fake"

    def __init__(self, integrated=False, device=lambda: 0):
        self.integrated, self.closed, self._current = integrated, False, device
        self.device_of: dict[int, int] = {}
        self.pageable: list[tuple] = []
        self.device: dict[int, np.ndarray] = {}  # base address -> bytes the GPU can address
        self.pinned: dict[int, np.ndarray] = {}  # base address -> page-locked host bytes
        self.queues: dict[int, collections.deque] = {}
        self.recorded: collections.Counter = collections.Counter()  # event -> records issued
        self.done: collections.Counter = collections.Counter()  # event -> records completed
        self.record_stream: dict[tuple[int, int], int] = {}
        self.capturing: dict[int, list] = {}
        self.graphs: dict[int, list] = {}
        self.calls: list[tuple] = []
        self._ids = itertools.count(1001)
        self.stream_handle = self.new_stream()

    # --- memory
    def _register(self, table, arr):
        raw = arr.reshape(-1).view(np.uint8)
        table[raw.ctypes.data] = raw
        return raw.ctypes.data

    def _find(self, table, ptr, nbytes):
        for base, raw in table.items():
            if base <= ptr and ptr + nbytes <= base + raw.size:
                return raw[ptr - base:ptr - base + nbytes]
        raise AssertionError(f"{nbytes} bytes at {ptr:#x} are not in one allocation of this kind")

    def bytes_at(self, ptr, nbytes):
        """Device memory as kernels see it: device allocations only, so a kernel given host memory fails."""
        return self._find(self.device, ptr, nbytes)

    def malloc(self, nbytes):
        self.calls.append(("malloc", nbytes))
        ptr = self._register(self.device, np.full(nbytes, 0xAB, np.uint8))  # garbage, as cudaMalloc's
        self.device_of[ptr] = self._current()
        return ptr

    def host_array(self, shape, dtype):
        self.calls.append(("host_array", shape))
        arr = np.full(shape, 77, dtype)  # garbage, as pinned memory would hold
        self._register(self.pinned, arr)
        return arr

    def _pinned_bytes(self, arr):
        """The page-locked bytes of `arr`, or None for pageable memory."""
        assert arr.flags.c_contiguous
        try:
            return self._find(self.pinned, arr.ctypes.data, arr.nbytes)
        except AssertionError:
            return None

    # --- streams and events
    def new_stream(self):
        handle = next(self._ids)
        self.queues[handle] = collections.deque()
        return handle

    def new_event(self):
        return next(self._ids)

    def issue(self, stream, fn, what):
        """Device work on a stream (what a kernel launch or TensorRT's enqueue does)."""
        if stream in self.capturing:
            self.capturing[stream].append(fn)
        else:
            self.queues[stream].append(("run", fn, what))

    def h2d(self, dst, src, stream=None):
        self.calls.append(("h2d", dst, src.nbytes, stream))
        stream = self.stream_handle if stream is None else stream
        host = self._pinned_bytes(src)
        if host is None:
            self.pageable.append(("h2d", dst, src.nbytes))
            host = src.reshape(-1).view(np.uint8).copy()
        self.bytes_at(dst, src.nbytes)
        self.issue(stream, lambda: self.bytes_at(dst, host.size).__setitem__(slice(None), host), "h2d")

    def d2h(self, dst, src, stream=None):
        self.calls.append(("d2h", src, dst.nbytes, stream))
        stream = self.stream_handle if stream is None else stream
        host = self._pinned_bytes(dst)
        if host is None:
            self.pageable.append(("d2h", src, dst.nbytes))
            self.run_stream(stream)
            dst.reshape(-1).view(np.uint8)[:] = self.bytes_at(src, dst.nbytes)
            return
        self.issue(stream, lambda: host.__setitem__(slice(None), self.bytes_at(src, host.size)), "d2h")

    def record(self, event, stream):
        assert stream not in self.capturing
        self.calls.append(("record", event, stream))
        self.recorded[event] += 1
        self.record_stream[(event, self.recorded[event])] = stream
        self.queues[stream].append(("record", event, self.recorded[event]))

    def wait(self, stream, event):
        assert stream not in self.capturing
        self.calls.append(("wait", stream, event))
        if self.recorded[event]:  # waiting for an event never recorded is a no-op in CUDA
            self.queues[stream].append(("wait", event, self.recorded[event]))

    def _complete(self, event, gen):
        while self.done[event] < gen:
            self._step(self.record_stream[(event, gen)])

    def _step(self, stream):
        kind, a, b = self.queues[stream][0]
        if kind == "wait":
            self._complete(a, b)
        self.queues[stream].popleft()
        if kind == "run":
            a()
        elif kind == "record":
            self.done[a] = max(self.done[a], b)

    def run_stream(self, stream):
        """Runs a stream's work (and what it waits for) without the host waiting: a test's probe."""
        while self.queues[stream]:
            self._step(stream)

    def event_synchronize(self, event):
        assert not self.capturing, "host synchronisation during a stream capture"
        self.calls.append(("event_synchronize", event))
        self._complete(event, self.recorded[event])

    def synchronize(self):
        assert not self.capturing
        self.calls.append(("synchronize",))
        for stream in self.queues:
            self.run_stream(stream)

    # --- graphs
    def begin_capture(self, stream):
        assert stream not in self.capturing and stream != 0  # capture needs a non-default stream
        self.calls.append(("begin_capture", stream))
        self.capturing[stream] = []

    def end_capture(self, stream):
        self.calls.append(("end_capture", stream))
        handle = next(self._ids)
        self.graphs[handle] = self.capturing.pop(stream)
        return handle

    def abort_capture(self, stream):
        self.calls.append(("abort_capture", stream))
        self.capturing.pop(stream)

    def launch(self, graph, stream):
        self.calls.append(("launch", graph, stream))
        self.issue(stream, lambda: [fn() for fn in self.graphs[graph]], "graph")

    def close(self):
        self.closed = True
        self.queued_at_close = sum(len(q) for q in self.queues.values())  # freed under running work


class FakeCudart:
    """cuda-python's calling convention: every call returns (error, *results); names, parameters and
    constants as in cuda.bindings.runtime (tests/trt/test_fakes.py checks them against the real module)."""

    class cudaError_t:
        cudaSuccess, cudaErrorMemoryAllocation, cudaErrorStreamCaptureInvalidated = 0, 2, 901
        cudaErrorStreamCaptureUnsupported = 900

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaDeviceAttr:
        cudaDevAttrIntegrated = 18

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking, cudaEventDisableTiming = 1, 2

    def __init__(self, fail_malloc=False, integrated=0, invalidate_capture=False, refuse_capture=False,
                 fail_upload=False):
        self.fail_malloc, self.integrated, self.invalidate = fail_malloc, integrated, invalidate_capture
        self.refuse_capture, self.fail_upload = refuse_capture, fail_upload
        self.calls, self.buffers, self._next = [], [], 99

    def _id(self):
        self._next += 1
        return self._next - 1

    def cudaGetDevice(self):
        return 0, 0

    def cudaDeviceGetAttribute(self, attr, device):
        assert attr == self.cudaDeviceAttr.cudaDevAttrIntegrated and device == 0
        return 0, self.integrated

    def cudaStreamCreateWithFlags(self, flags):
        assert flags == self.cudaStreamNonBlocking
        return 0, self._id()

    def cudaEventCreateWithFlags(self, flags):
        assert flags == self.cudaEventDisableTiming
        return 0, self._id()

    def cudaMalloc(self, size):
        return (2, 0) if self.fail_malloc else (0, 1 << 20)

    def _host(self, n, what):
        import ctypes

        buf = (ctypes.c_byte * n)()
        self.buffers.append(buf)
        self.calls.append((what, n))
        return 0, ctypes.addressof(buf)

    def cudaMallocHost(self, size):
        return self._host(size, "mallochost")

    def cudaGetErrorString(self, error):
        text = b"out of memory" if error == 2 else b"operation failed due to a previous error during capture"
        return 0, text

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.calls.append(("memcpy", dst, src, count, kind, stream))
        return (0,)

    def _log(self, name, *args):
        self.calls.append((name, *args))
        return (0,)

    def cudaEventRecord(self, event, stream):
        return self._log("record", event, stream)

    def cudaStreamWaitEvent(self, stream, event, flags):
        return self._log("wait", stream, event, flags)

    def cudaEventSynchronize(self, event):
        return self._log("event_sync", event)

    def cudaStreamBeginCapture(self, stream, mode):
        self._log("begin_capture", stream, mode)
        return (self.cudaError_t.cudaErrorStreamCaptureUnsupported,) if self.refuse_capture else (0,)

    def cudaStreamEndCapture(self, stream):
        self.calls.append(("end_capture", stream))
        return (self.cudaError_t.cudaErrorStreamCaptureInvalidated, None) if self.invalidate else (0, 7)

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        self.calls.append(("instantiate", graph, flags))
        return 0, 70 + graph

    def cudaGraphUpload(self, graphExec, stream):
        self._log("upload", graphExec, stream)
        return (self.cudaError_t.cudaErrorMemoryAllocation,) if self.fail_upload else (0,)

    def cudaGraphLaunch(self, graphExec, stream):
        return self._log("launch", graphExec, stream)

    def cudaGetLastError(self):
        return self._log("get_last_error")

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaGraphDestroy(self, graph):
        return self._log("graph_destroy", graph)

    def cudaGraphExecDestroy(self, graphExec):
        return self._log("graph_exec_destroy", graphExec)

    def cudaEventDestroy(self, event):
        return self._log("event_destroy", event)

    def cudaFree(self, devPtr):
        return self._log("free", devPtr)

    def cudaFreeHost(self, ptr):
        return self._log("freehost", ptr)

    def cudaStreamDestroy(self, stream):
        return self._log("destroy", stream)


class FakeLetterbox:
    """runtime.backends.gpu_letterbox.GpuLetterbox's call contract: uint8 BGR frames at device pointers ->
    the (n, 3, h, w) input at `out`, written by work on `stream`; LetterboxInfo per frame back."""

    def __init__(self, engine, fail=False):
        self.engine, self.fail, self.calls, self.frame_ptrs = engine, fail, [], []

    @property
    def cuda(self):
        return self.engine.cuda

    def __call__(self, frames, out, imgsz, *, half=False, stream=None, stride=32, pad_value=114,
                 scaleup=True):
        if self.fail:
            raise S2Error("libs2trt_kernels.so has no code for this GPU")
        self.calls.append((len(frames), half, stream))
        self.frame_ptrs.extend(f.ptr for f in frames)
        dtype = np.float16 if half else np.float32

        def kernel():
            images = [self.cuda.bytes_at(f.ptr, f.height * f.width * 3).reshape(f.height, f.width, 3)
                      for f in frames]
            x, _ = preprocess(images, imgsz, stride=stride, pad_value=pad_value, scaleup=scaleup)
            dst = self.cuda.bytes_at(out, x.size * np.dtype(dtype).itemsize)
            dst[:] = x.astype(dtype).view(np.uint8).ravel()

        self.cuda.issue(stream, kernel, "letterbox")
        return [letterbox_geometry((f.height, f.width), imgsz, False, scaleup, stride) for f in frames]


def frames(seed=0, shapes=((50, 70), (64, 96), (31, 200))):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


# --------------------------------------------------------------------------- TensorRT runtime

class DataType:
    FLOAT, HALF, INT32, INT8, BOOL = "f32", "f16", "i32", "i8", "bool"
    BF16 = "bf16"  # a type the runtime does not handle


class TensorIOMode:
    INPUT, OUTPUT = "in", "out"


class Logger:
    WARNING = 2

    def __init__(self, level):
        self.level = level


class FakeEngine:
    """images (b, 3, H, W) -> output0 (b, N, 5 + NC) where row r of item b holds mean(images[b]) + r,
    or the four NMS outputs (one box per item whose score is that mean)."""

    def __init__(self, batch=None, profile=(1, 4, 8), nms=False, in_dtype=DataType.FLOAT, capturable=True):
        self.fixed, self.profile, self.nms, self.capturable = batch, profile, nms, capturable
        self.cuda = None  # the FakeCuda its contexts run on
        b = batch if batch else -1
        self.io = [("images", TensorIOMode.INPUT, (b, 3, H, W), in_dtype)]
        if nms:
            self.io += [("num_dets", TensorIOMode.OUTPUT, (b, 1), DataType.INT32),
                        ("det_boxes", TensorIOMode.OUTPUT, (b, 5, 4), DataType.FLOAT),
                        ("det_scores", TensorIOMode.OUTPUT, (b, 5), DataType.FLOAT),
                        ("det_classes", TensorIOMode.OUTPUT, (b, 5), DataType.INT32)]
        else:
            self.io += [("output0", TensorIOMode.OUTPUT, (b, N, 5 + NC), DataType.FLOAT)]
        self.num_io_tensors = len(self.io)
        self.contexts = []

    def _t(self, name):
        return next(t for t in self.io if t[0] == name)

    def get_tensor_name(self, index):
        return self.io[index][0]

    def get_tensor_mode(self, name):
        return self._t(name)[1]

    def get_tensor_shape(self, name):
        return self._t(name)[2]

    def get_tensor_dtype(self, name):
        return self._t(name)[3]

    def get_tensor_profile_shape(self, name, profile_index):
        assert name == "images" and profile_index == 0 and self.fixed is None
        return [(p, 3, H, W) for p in self.profile]

    def create_execution_context(self):
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


class FakeContext:
    """IExecutionContext: enqueue reads the addresses and shapes set before it (the work it issues
    uses them when it runs), as the tensor-name API of TensorRT 10/11 does."""

    def __init__(self, engine):
        self.e, self.addr, self.shapes_set, self.runs = engine, {}, [], []
        self.batch = engine.fixed
        self.enqueues = []  # (batch, under capture) per call
        self._warm = None  # shape and addresses of the last enqueue outside a capture
        self._direct_issued = self._direct_ran = 0  # enqueues outside a capture, issued and run

    def set_input_shape(self, name, shape):
        shape = tuple(shape)
        self.shapes_set.append(shape)
        lo, _, hi = self.e.profile
        if not lo <= shape[0] <= hi or shape[1:] != (3, H, W):
            return False
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name):
        shape = self.e._t(name)[2]
        return (self.batch, *shape[1:])

    def set_tensor_address(self, name, memory):
        self.addr[name] = memory

    def execute_async_v3(self, stream_handle):
        stream = stream_handle
        cuda, b = self.e.cuda, self.batch
        # NvInferRuntime.h (10.3 and 11.1, IExecutionContext::enqueueV3): "Using default stream may
        # lead to performance issues due to additional cudaDeviceSynchronize() calls".
        assert stream != 0
        # setTensorAddress: "Before calling enqueueV3(), each input must have a non-null address and
        # each output must have a non-null address or an IOutputAllocator to set it later."
        assert all(self.addr.get(t[0]) for t in self.e.io)
        state, capturing = (b, dict(self.addr)), stream in cuda.capturing
        if capturing:
            # trtexec: "Avoid capturing initialization calls by executing the enqueue function at
            # least once before starting CUDA graph capture." (samples/common/sampleInference.cpp,
            # createEnqueueFunction: v10.3.0 line 961, v11.1 line 1338).
            assert self._warm == state, "capture without an enqueue of the same shape and addresses"
            # ...and that enqueue has finished: trtexec synchronises the stream before beginning the
            # capture (sampleInference.cpp v10.3.0 line 968), as TensorRT-Edge-LLM does
            # (cpp/runtime/exec/engineExecutor.cpp, captureGraph: "Warmup", cudaStreamSynchronize).
            assert self._direct_ran == self._direct_issued, "capture while the warm-up enqueue is queued"
            if not self.e.capturable:
                return False  # "the enqueue call may return false if the current CUDA graph capture fails"
        else:
            self._warm = state
        self.enqueues.append((b, capturing))
        addr = dict(self.addr)
        if capturing:
            cuda.issue(stream, lambda: self._run(b, addr), "enqueue")
        else:
            self._direct_issued += 1
            cuda.issue(stream, lambda: (self._run(b, addr), self._count_direct()), "enqueue")
        return True

    def _count_direct(self):
        self._direct_ran += 1

    def _run(self, b, addr):
        cuda = self.e.cuda
        dt = np.dtype(np.float16 if self.e._t("images")[3] == DataType.HALF else np.float32)
        x = cuda.bytes_at(addr["images"], b * 3 * H * W * dt.itemsize).view(dt)
        means = x.reshape(b, -1).astype(np.float64).mean(1)
        self.runs.append(b)
        if self.e.nms:
            outs = {"num_dets": np.ones((b, 1), np.int32),
                    "det_boxes": np.tile(np.array([1, 2, 30, 40], np.float32), (b, 5, 1)),
                    "det_scores": np.repeat(means[:, None], 5, 1).astype(np.float32),
                    "det_classes": np.full((b, 5), 2, np.int32)}
        else:
            outs = {"output0": (means[:, None, None] + np.arange(N)[None, :, None]
                                + np.zeros((1, 1, 5 + NC))).astype(np.float32)}
        for name, arr in outs.items():
            cuda.bytes_at(addr[name], arr.nbytes)[:] = np.frombuffer(arr.tobytes(), np.uint8)


def fake_trt(engine, version="10.3.0"):
    class Runtime:
        def __init__(self, logger):
            assert logger.level == Logger.WARNING

        def deserialize_cuda_engine(self, serialized_engine):
            return engine if serialized_engine == b"engine" else None

    return types.SimpleNamespace(__version__=version, DataType=DataType, TensorIOMode=TensorIOMode,
                                 Logger=Logger, Runtime=Runtime)


def make_engine(tmp_path, sidecar=True, imgsz=(H, W), blob=b"engine", **extra):
    """An engine file the fake runtime deserializes (its bytes are `blob`), with the sidecar that
    s2export writes beside one (the model's metadata as export/engine.py records it)."""
    path = tmp_path / "m.engine"
    path.write_bytes(blob)
    if sidecar:
        data = dataclasses.asdict(ModelMeta(names=["a", "b", "c"], imgsz=list(imgsz)))
        data.update({"tensorrt_version": "10.3.0", "gpu": None, "compute_capability": None, **extra})
        (tmp_path / "m.engine.json").write_text(json.dumps(data))
    return path


def open_fake(tmp_path, engine, version="10.3.0", integrated=False, backend_kw=None, **kw):
    cuda = engine.cuda = FakeCuda(integrated)
    backend = TrtBackend(make_engine(tmp_path, **kw), trt=fake_trt(engine, version), cuda=cuda,
                         **{"gpu_preprocess": False, **(backend_kw or {})})
    return backend, cuda


def batch_of(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 3, H, W)).astype(np.float32)


def expected_output0(x):
    means = x.reshape(len(x), -1).astype(np.float64).mean(1)
    return means[:, None] + np.arange(N)[None, :]


# --------------------------------------------------------------------------- TensorRT builder

class FakeTensor(SimpleNamespace):
    pass


INTEGER = ("int32", "int64", "bool", "uint8")


class FakeLayer:
    """A layer of a weakly typed network: its precision is what TensorRT infers (FLOAT for float
    layers) until set; `pinned` and `output_types` record what the builder asked for. It reads the
    outputs of the layers named in `inputs` (else one tensor no layer writes)."""

    def __init__(self, name: str, type_: str, dtype: str, inputs: tuple[str, ...] = ()) -> None:
        self.name, self.type, self.num_outputs = name, type_, 1
        self.dtype = dtype
        self._out = FakeTensor(name=f"{name}:out", dtype=dtype, is_shape_tensor=dtype in INTEGER)
        self._ins = [FakeTensor(name=f"{i}:out", dtype="float", is_shape_tensor=False) for i in inputs] or [
            FakeTensor(name=f"{name}:in", dtype="float", is_shape_tensor=False)]
        self.num_inputs = len(self._ins)
        self.precision = dtype if dtype in INTEGER else "float"
        self.pinned: str | None = None
        self.output_types: dict[int, str] = {}

    def get_output(self, index: int) -> FakeTensor:
        return self._out

    def get_input(self, index: int) -> FakeTensor:
        return self._ins[index]

    @for_trt(max_major=10)  # TensorRT 11 types every layer from its inputs
    def set_output_type(self, index: int, dtype: str) -> None:
        self.output_types[index] = dtype

    def __setattr__(self, key: str, value: object) -> None:
        if key == "precision" and "precision" in self.__dict__:
            self.__dict__["pinned"] = value
        super().__setattr__(key, value)


# The FP32 graph of _write_island_onnx as onnx-tensorrt parses it: a layer per node named after it,
# further layers of a node `<node>_<n>`; /m/Mul_1 is a node of its own, outside the decode island.


ISLAND_LAYERS = [("/m/Mul_1", "EW", "float"), ("conv", "CONV", "float"), ("/m/Sigmoid", "ACT", "float"),
                 ("/m/Sigmoid_5", "SHUFFLE", "float"), ("/m/Shape", "SHAPE", "int64"),
                 ("/m/Mul", "EW", "float"), ("/m/Reshape", "SHUFFLE", "float"),
                 ("/m/Reshape_7", "CONSTANT", "int32")]


PINNED = ["/m/Sigmoid", "/m/Sigmoid_5", "/m/Mul", "/m/Reshape"]


def parsed_layers(graph: str) -> list[FakeLayer]:
    if graph == "fp32":
        return [FakeLayer(n, t, d) for n, t, d in ISLAND_LAYERS]
    if graph == "fp16":
        return [FakeLayer("conv", "CONV", "half")]
    return [FakeLayer("q", "Q", "int8"), FakeLayer("dq", "DQ", "half"), FakeLayer("conv", "CONV", "half")]


class FakeNetwork:
    def __init__(self, flags: int, shape: tuple, layers: list[FakeLayer]) -> None:
        self.flags, self._input, self._layers = flags, FakeTensor(name="images", shape=shape), layers
        self.num_inputs, self.num_layers = 1, len(layers)

    def get_input(self, index: int) -> FakeTensor:
        return self._input

    def get_layer(self, index: int) -> FakeLayer:
        return self._layers[index]


class FakeBuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.pools: dict[str, int] = {}
        self.profiles: list = []
        self.int8_calibrator = None
        self.calibration_profile = None
        self.cache = None
        self.profiling_verbosity = None

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool: str, pool_size: int) -> None:
        self.pools[pool] = pool_size

    def add_optimization_profile(self, profile: dict) -> None:
        self.profiles.append(profile)

    @for_trt(max_major=10)
    def set_calibration_profile(self, profile: dict) -> None:
        self.calibration_profile = profile

    def create_timing_cache(self, serialized_timing_cache: bytes) -> SimpleNamespace:
        return SimpleNamespace(serialize=lambda: b"cache:" + bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: SimpleNamespace, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> SimpleNamespace:
        return self.cache


# IEngineInspector's "Format/Datatype" text for the type a layer runs in (TensorRT 10.3's wording).


FORMATS = {"float": "Row major linear FP32", "half": "Channel major FP16 format where channel % 8 == 0",
           "int8": "Thirty-two wide channel vectorized row major Int8 format",
           "int32": "Row major linear Int32", "int64": "Row major linear Int64"}


PARAMETER_TYPES = {"CONV": "Convolution", "EW": "ElementWise", "ACT": "Activation", "SHUFFLE": "Shuffle",
                   "SHAPE": "Shape", "CONSTANT": "Constant", "Q": "Quantize", "DQ": "Dequantize"}


class InspectedEngine:
    """ICudaEngine as check_engine_precision reads it: the inspector reports each layer of the built
    network in the type the fake builder ran it in. A weakly typed build runs a pinned layer in FP32,
    an integer one as it is, and the rest in the lowest precision its flags allow (INT8 only for
    convolutions); a strongly typed one runs every layer in the graph's type. Formats of a dynamic
    engine are "N/A" until an execution context with shapes is given, as TensorRT reports them."""

    def __init__(self, trt: FakeTRT) -> None:
        self.trt, self.num_io_tensors, self.layers = trt, 1, list(trt.network._layers)
        self.contexts: list[SimpleNamespace] = []

    def get_tensor_name(self, index: int) -> str:
        return "images"

    def get_tensor_mode(self, name: str) -> str:
        return "input"

    def get_tensor_shape(self, name: str) -> tuple:
        return self.trt.shape

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> tuple:
        return self.trt.config.profiles[profile_index][name]

    def create_execution_context(self) -> SimpleNamespace:
        ctx = SimpleNamespace(shapes={})
        ctx.set_input_shape = lambda name, shape: ctx.shapes.__setitem__(name, tuple(shape)) or True
        self.contexts.append(ctx)
        return ctx

    def _runs_in(self, layer: FakeLayer) -> str:
        flags = self.trt.config.flags
        if self.trt.network.flags or layer.dtype in INTEGER or layer.pinned == "float":
            return layer.dtype if layer.pinned != "float" else "float"
        if "INT8" in flags and layer.type == "CONV":
            return "int8"
        return "half" if "FP16" in flags else "float"

    def create_engine_inspector(self) -> SimpleNamespace:
        inspector = SimpleNamespace(execution_context=None)

        def get_engine_information(format: str) -> str:
            assert format == "json" and self.trt.config.profiling_verbosity == "detailed"
            ctx = inspector.execution_context
            known = -1 not in self.trt.shape or (ctx is not None and "images" in ctx.shapes)
            layers = []
            for layer in self.layers:
                text = FORMATS[self._runs_in(layer)] if known else "N/A due to dynamic shapes"
                tensor = {"Name": "t", "Location": "Device", "Format/Datatype": text}
                layers.append({"Name": layer.name, "LayerType": "Layer",
                               "ParameterType": PARAMETER_TYPES.get(layer.type, layer.type),
                               "Inputs": [tensor], "Outputs": [tensor]})
            return json.dumps({"Layers": layers, "Bindings": ["images", "output0"]})

        inspector.get_engine_information = get_engine_information
        return inspector


class FakeTRT:
    """What export/engine.py and s2trt.trt touch, per major version."""

    def __init__(self, version: str, shape: tuple = (-1, 3, 64, 64), graph: str = "fp32",
                 parse_errors: tuple[str, ...] = (), creators: tuple = ()) -> None:
        self.__version__ = version
        v11 = version.startswith("11.")
        flags = ["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"] + (
            [] if v11 else ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"])
        self.BuilderFlag = SimpleNamespace(**{f: f for f in flags})
        # NvInfer.h v10.3.0 line 9620 "kSTRONGLY_TYPED = 1"; v11.1 line 11471 "kSTRONGLY_TYPED
        # TRT_DEPRECATED_ENUM = 0" (there bit 1 is kPREFER_JIT_PYTHON_PLUGINS).
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0 if v11 else 1)
        self.LayerType = SimpleNamespace(QUANTIZE="Q", DEQUANTIZE="DQ", CONVOLUTION="CONV",
                                         CONSTANT="CONSTANT", SHUFFLE="SHUFFLE")
        self.ProfilingVerbosity = SimpleNamespace(DETAILED="detailed")
        self.LayerInformationFormat = SimpleNamespace(JSON="json")
        self.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
        self.DataType = SimpleNamespace(FLOAT="float", HALF="half", INT32="int32", INT64="int64", BOOL="bool",
                                        UINT8="uint8")
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.Logger = lambda severity: SimpleNamespace(severity=severity)
        self.Logger.VERBOSE, self.Logger.WARNING = "verbose", "warning"
        self.shape, self.graph, self.parse_errors = shape, graph, parse_errors
        self.creators, self.loaded_libraries = list(creators), []
        if not v11:  # TensorRT 11 removed implicit INT8 calibration
            class IInt8Calibrator:
                def __init__(self) -> None:
                    self.base_initialised = True

            self.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (IInt8Calibrator,), {})
            self.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (IInt8Calibrator,), {})
        self.network: FakeNetwork | None = None
        self.config: FakeBuilderConfig | None = None

    def Builder(self, logger: object) -> SimpleNamespace:
        def create_network(flags: int) -> FakeNetwork:
            self.network = FakeNetwork(flags, self.shape, parsed_layers(self.graph))
            return self.network

        def create_builder_config() -> FakeBuilderConfig:
            self.config = FakeBuilderConfig()
            return self.config

        return SimpleNamespace(create_network=create_network, create_builder_config=create_builder_config,
                               create_optimization_profile=FakeProfile,
                               build_serialized_network=lambda network, config: b"fake engine")

    def Runtime(self, logger: object) -> SimpleNamespace:
        def deserialize_cuda_engine(serialized_engine: bytes) -> InspectedEngine | None:
            # Whatever the (fake) build serialized.
            self.engine = InspectedEngine(self) if serialized_engine else None
            return self.engine

        return SimpleNamespace(deserialize_cuda_engine=deserialize_cuda_engine)

    def OnnxParser(self, network: FakeNetwork, logger: object) -> SimpleNamespace:
        errors = self.parse_errors
        return SimpleNamespace(parse_from_file=lambda model: not errors, num_errors=len(errors),
                               get_error=lambda index: errors[index])

    def get_plugin_registry(self) -> SimpleNamespace:
        def get_creator(type: str, version: str, plugin_namespace: str) -> object:
            return next((c for c in self.creators if c == (type, version, plugin_namespace)), None)

        def load_library(plugin_path: str) -> None:
            self.loaded_libraries.append(plugin_path)

        return SimpleNamespace(get_creator=get_creator, load_library=load_library)


class FakeProfile(dict):
    def set_shape(self, input: str, min: tuple, opt: tuple, max: tuple) -> None:
        self[input] = (min, opt, max)
