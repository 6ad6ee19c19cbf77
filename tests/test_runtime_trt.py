"""The TensorRT backend against a fake TensorRT module and fake CUDA memory.

No TensorRT library or GPU exists on CI: these fakes implement the slice of the TensorRT 10/11 Python
API the backend uses (tensor-name I/O, profiles, set_input_shape, execute_async_v3) with NumPy, so
buffer planning, batching, shape checks and error messages are tested for real. The fake engine's
"network" is a known function of its input, so a wrong buffer, offset or order changes the result.
"""

from __future__ import annotations

import collections
import itertools
import json
import types

import numpy as np
import pytest

from s2trt.detect.boxes import postprocess
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.trt import TrtBackend, cuda_index, describe_engine, numpy_dtype

H, W, N, NC = 64, 96, 7, 3


class DataType:
    FLOAT, HALF, INT32, INT8, BOOL = "f32", "f16", "i32", "i8", "bool"
    BF16 = "bf16"  # a type the runtime does not handle


class TensorIOMode:
    INPUT, OUTPUT = "in", "out"


class Logger:
    WARNING = 2

    def __init__(self, level):
        self.level = level


class FakeCuda:
    """A GPU that keeps CUDA's ordering contract and nothing more.

    Work issued on a stream runs in issue order, but only when the host waits for it
    (`event_synchronize`, `synchronize`) and only as far as that wait needs. Streams are ordered by
    nothing but `wait(stream, event)`, which waits for the last `record` of the event issued before
    the wait (cudaStreamWaitEvent, CUDA runtime API): a missing wait runs work too early or too late
    and the result comes out wrong. A copy reads its source when it runs, not when it is issued, as
    cudaMemcpyAsync from page-locked memory does, and copies take page-locked memory only.
    Device pointers are addresses of NumPy buffers, so device work can be plain NumPy (or the CPU
    emulation of a CUDA kernel). Every host call is logged in `calls`.
    """

    def __init__(self, integrated=False):
        self.integrated, self.closed = integrated, False
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
        return self._register(self.device, np.full(nbytes, 0xAB, np.uint8))  # garbage, as cudaMalloc's

    def host_array(self, shape, dtype):
        self.calls.append(("host_array", shape))
        arr = np.full(shape, 77, dtype)  # garbage, as pinned memory would hold
        self._register(self.pinned, arr)
        return arr

    def _host_bytes(self, arr):
        assert arr.flags.c_contiguous
        return self._find(self.pinned, arr.ctypes.data, arr.nbytes)  # pageable memory would fail here

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
        host = self._host_bytes(src)
        self.bytes_at(dst, src.nbytes)
        self.issue(stream, lambda: self.bytes_at(dst, host.size).__setitem__(slice(None), host), "h2d")

    def d2h(self, dst, src, stream=None):
        self.calls.append(("d2h", src, dst.nbytes, stream))
        stream = self.stream_handle if stream is None else stream
        host = self._host_bytes(dst)
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

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_mode(self, name):
        return self._t(name)[1]

    def get_tensor_shape(self, name):
        return self._t(name)[2]

    def get_tensor_dtype(self, name):
        return self._t(name)[3]

    def get_tensor_profile_shape(self, name, index):
        assert name == "images" and index == 0 and self.fixed is None
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

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream):
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

        def deserialize_cuda_engine(self, blob):
            return engine if blob == b"engine" else None

    return types.SimpleNamespace(__version__=version, DataType=DataType, TensorIOMode=TensorIOMode,
                                 Logger=Logger, Runtime=Runtime)


def make_engine(tmp_path, sidecar=True, imgsz=(H, W), blob=b"engine", **extra):
    path = tmp_path / "m.engine"
    path.write_bytes(blob)
    if sidecar:
        meta = ModelMeta(names=["a", "b", "c"], imgsz=list(imgsz)).to_props()
        data = {k: json.loads(v) if k not in ("producer", "flavour", "precision") else v
                for k, v in meta.items()}
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


@pytest.mark.parametrize("n", [1, 3, 8, 11])
def test_dynamic_batch_runs_in_order_and_splits_at_profile_max(tmp_path, n):
    engine = FakeEngine(profile=(1, 4, 8))
    backend, cuda = open_fake(tmp_path, engine)
    assert backend.spec.min == 1 and backend.max_batch == 8
    x = batch_of(n)
    out = backend.infer(x)["output0"]
    assert out.shape == (n, N, 5 + NC)
    np.testing.assert_allclose(out[..., 0], expected_output0(x), rtol=1e-5)
    ctx = engine.contexts[0]
    assert ctx.runs == ([8, n - 8] if n > 8 else [n])
    assert ctx.shapes_set[0] == (8, 3, H, W)  # buffers planned for the profile's max
    backend.close()
    assert cuda.closed


def test_fixed_batch_pads_partial_batch_and_drops_padding(tmp_path):
    engine = FakeEngine(batch=4)
    backend, _ = open_fake(tmp_path, engine)
    assert backend.spec.fixed and backend.max_batch == 4
    x = batch_of(6)
    out = backend.infer(x)["output0"]
    assert out.shape[0] == 6
    np.testing.assert_allclose(out[..., 0], expected_output0(x), rtol=1e-5)
    assert engine.contexts[0].runs == [4, 4] and engine.contexts[0].shapes_set == []


def test_outputs_are_copies_not_views_of_reused_buffers(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine())
    first = backend.infer(batch_of(2, seed=1))["output0"]
    keep = first.copy()
    backend.infer(batch_of(2, seed=2))
    np.testing.assert_array_equal(first, keep)


def test_fp16_input_engine_gets_converted_input(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(in_dtype=DataType.HALF))
    x = batch_of(2)
    out = backend.infer(x)["output0"]
    np.testing.assert_allclose(out[..., 0], expected_output0(x.astype(np.float16)), rtol=1e-4)


def test_nms_engine_outputs_decode_to_detections(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(nms=True))
    assert backend.layout == "nms"
    x = batch_of(3)
    dets = postprocess(backend.infer(x), DetectOptions(conf_thres=0.1))
    means = x.reshape(3, -1).mean(1)
    assert [d.shape for d in dets] == [(1, 6)] * 3
    np.testing.assert_allclose([d[0, 4] for d in dets], means, rtol=1e-5)
    np.testing.assert_array_equal(dets[0][0], np.array([1, 2, 30, 40, means[0], 2], np.float32))
    assert [len(d) for d in postprocess(backend.infer(x), DetectOptions(0.9))] == [0, 0, 0]  # means are ~0.5


def test_imgsz_outside_the_profile_names_the_profile(tmp_path):
    with pytest.raises(S2Error, match=r"profile min 1x3x64x96, opt 4x3x64x96, max 8x3x64x96") as e:
        open_fake(tmp_path, FakeEngine(), imgsz=(640, 640))
    assert "--imgsz 64 96" in str(e.value)


def test_wrong_input_size_at_run_time_is_one_clear_error(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine())
    with pytest.raises(S2Error, match=r"takes \(batch, 3, 64, 96\)"):
        backend.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_refused_input_shape_reports_the_profile(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(profile=(1, 2, 4)))
    backend.engine.contexts[0].e.profile = (2, 2, 4)  # the engine now refuses batch 1
    with pytest.raises(S2Error, match=r"refused input shape 1x3x64x96 .*profile min 1x3x64x96"):
        backend.infer(batch_of(1))


def test_engine_that_does_not_deserialize(tmp_path):
    cuda = FakeCuda()
    with pytest.raises(S2Error, match=r"could not load .*rebuild it here with: s2export"):
        TrtBackend(make_engine(tmp_path, blob=b"garbage"), trt=fake_trt(FakeEngine()), cuda=cuda)
    assert cuda.closed  # the stream and buffers made before the failure are released


def test_engine_from_another_tensorrt_version_is_refused(tmp_path):
    with pytest.raises(S2Error, match=r"built with TensorRT 10\.3\.0.*this is TensorRT 11\.0\.0"):
        open_fake(tmp_path, FakeEngine(), version="11.0.0")


def test_engine_without_sidecar_uses_class_ids(tmp_path, caplog):
    backend, _ = open_fake(tmp_path, FakeEngine(), sidecar=False)
    assert backend.meta.names == ["0", "1", "2"] and tuple(backend.imgsz) == (H, W)
    assert "no sidecar" in caplog.text


def test_non_s2trt_engine_outputs(tmp_path):
    engine = FakeEngine()
    engine.io[1] = ("logits", TensorIOMode.OUTPUT, (-1, 1000), DataType.FLOAT)
    with pytest.raises(S2Error, match="has outputs \\['logits'\\]"):
        open_fake(tmp_path, engine)


def test_describe_engine_and_dtypes():
    trt = fake_trt(None)
    infos = describe_engine(FakeEngine(nms=True), trt)
    assert [(t.name, t.is_input, t.dtype) for t in infos] == [
        ("images", True, np.float32), ("num_dets", False, np.int32), ("det_boxes", False, np.float32),
        ("det_scores", False, np.float32), ("det_classes", False, np.int32)]
    assert infos[0].profile == ((1, 3, H, W), (4, 3, H, W), (8, 3, H, W))
    with pytest.raises(S2Error, match="tensor type bf16"):
        numpy_dtype(trt, DataType.BF16)


def test_cuda_index():
    assert cuda_index("auto") == 0 and cuda_index("cuda") == 0 and cuda_index("cuda:1") == 1
    assert cuda_index("2") == 2
    with pytest.raises(S2Error, match="GPU only"):
        cuda_index("cpu")
    with pytest.raises(S2Error, match="expected auto"):
        cuda_index("tpu")


def test_missing_engine_file(tmp_path):
    with pytest.raises(S2Error, match="engine not found"):
        TrtBackend(tmp_path / "nope.engine", trt=fake_trt(None), cuda=FakeCuda())


class FakeCudart:
    """cuda-python's calling convention: every call returns (error, *results); names and arguments
    as in cuda.bindings.runtime (test_runtime_trt_overlap checks them against the real module)."""

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

    def cudaMalloc(self, n):
        return (2, 0) if self.fail_malloc else (0, 1 << 20)

    def _host(self, n, what):
        import ctypes

        buf = (ctypes.c_byte * n)()
        self.buffers.append(buf)
        self.calls.append((what, n))
        return 0, ctypes.addressof(buf)

    def cudaMallocHost(self, n):
        return self._host(n, "mallochost")

    def cudaGetErrorString(self, err):
        return 0, b"out of memory" if err == 2 else b"operation failed due to a previous error during capture"

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self.calls.append(("memcpy", dst, src, n, kind, stream))
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

    def cudaGraphUpload(self, graph_exec, stream):
        self._log("upload", graph_exec, stream)
        return (self.cudaError_t.cudaErrorMemoryAllocation,) if self.fail_upload else (0,)

    def cudaGraphLaunch(self, graph_exec, stream):
        return self._log("launch", graph_exec, stream)

    def cudaGetLastError(self):
        return self._log("get_last_error")

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaGraphDestroy(self, g):
        return self._log("graph_destroy", g)

    def cudaGraphExecDestroy(self, g):
        return self._log("graph_exec_destroy", g)

    def cudaEventDestroy(self, e):
        return self._log("event_destroy", e)

    def cudaFree(self, p):
        return self._log("free", p)

    def cudaFreeHost(self, p):
        return self._log("freehost", p)

    def cudaStreamDestroy(self, s):
        return self._log("destroy", s)


def test_cuda_python_memory_calls_and_errors():
    from s2trt.trt.cuda_mem import CudaPythonMemory

    rt = FakeCudart()
    mem = CudaPythonMemory(rt)
    host = mem.host_array((2, 3), np.float32)
    host[:] = 5  # writable pinned memory of the right size
    assert host.shape == (2, 3) and host.dtype == np.float32
    dev = mem.malloc(24)
    mem.h2d(dev, host)
    mem.d2h(host, dev)
    assert rt.calls[1] == ("memcpy", dev, host.ctypes.data, 24, 1, 99)
    assert rt.calls[2] == ("memcpy", host.ctypes.data, dev, 24, 2, 99)
    assert mem.stream_handle == 99
    mem.close()
    assert [c[0] for c in rt.calls[3:]] == ["free", "freehost", "destroy"]
    with pytest.raises(S2Error, match=r"CUDA error in cudaMalloc\(64 bytes\): out of memory"):
        CudaPythonMemory(FakeCudart(fail_malloc=True)).malloc(64)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_real_engine_matches_onnxruntime(tmp_path):
    """On a GPU machine with TensorRT: a dynamic-batch engine of the tiny model vs ONNX Runtime."""
    pytest.importorskip("tensorrt", reason="TensorRT's Python module is not installed")
    from test_runtime_support import IMGSZ, scene, tiny_models

    from s2trt.detect.letterbox import preprocess
    from s2trt.export.engine import EngineOptions, build_engine
    from s2trt.runtime.backends.ort import OrtBackend

    onnx_path = tiny_models()["onnx"]
    engine = tmp_path / "tiny.engine"
    build_engine(onnx_path, engine, EngineOptions(min_shape=(1, 3, *IMGSZ), opt_shape=(2, 3, *IMGSZ),
                                                  max_shape=(4, 3, *IMGSZ), use_plugin=False))
    trt_backend = TrtBackend(engine)
    assert (trt_backend.spec.min, trt_backend.spec.max) == (1, 4)
    x, _ = preprocess([scene(i * 11) for i in range(5)], IMGSZ)  # 4 + 1: both profile ends
    got = trt_backend.infer(x)["output0"]
    want = OrtBackend(onnx_path, device="cpu").infer(x)["output0"]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)  # TF32 convolutions on Ampere+
    trt_backend.close()
