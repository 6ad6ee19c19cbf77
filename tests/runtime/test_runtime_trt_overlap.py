"""The overlapped TensorRT backend: two buffer sets, three streams ordered by events, CUDA graphs.

Runs against the fakes of tests/support/fakes.py: FakeCuda keeps CUDA's ordering contract and nothing
more (work runs only when the host waits for it, streams are ordered only by recorded events), so a missing
wait or a host wait in the wrong place changes results or shows in the call log; FakeContext follows
IExecutionContext's tensor-name API and trtexec's capture protocol. The contracts relied on:

- cudaStreamWaitEvent orders a stream after the last cudaEventRecord of that event issued before it;
  a copy from page-locked memory is asynchronous and reads its source when it runs (CUDA runtime API).
- NvInferRuntime.h, IExecutionContext::enqueueV3 (v10.3.0 line 4258, v11.1 line 4633): "Modifying or
  releasing memory that has been registered for the tensors before stream synchronization or the
  event passed to setInputConsumedEvent has been being triggered results in undefined behavior" — so
  a buffer set is written again only after the host waited for the batch that used it (collect).
- trtexec (samples/common/sampleInference.cpp, createEnqueueFunction; v10.3.0 lines 955-990, v11.1
  lines 1335-1365): "Avoid capturing initialization calls by executing the enqueue function at least
  once before starting CUDA graph capture."; it captures with cudaStreamCaptureModeThreadLocal
  (sampleDevice.h, TrtCudaGraph::beginCapture), and "When the stream is capturing, the enqueue call may
  return false if the current CUDA graph capture fails": it then ends the capture, clears the error
  with cudaGetLastError and launches without a graph.
- Several graphs of one execution context, keyed by tensor addresses and shapes, replayed when the
  bindings match and enqueueV3 otherwise: NVIDIA TensorRT-Edge-LLM, cpp/runtime/exec/engineExecutor.h
  (commit 17e065c), EngineExecutor::execute / captureGraph.
"""

from __future__ import annotations

import ctypes
import logging
import re

import numpy as np
import pytest
from fakes import (
    NC,
    DataType,
    FakeCuda,
    FakeCudart,
    FakeEngine,
    FakeLetterbox,
    H,
    N,
    W,
    batch_of,
    expected_output0,
    fake_trt,
    frames,
    make_engine,
    open_fake,
)
from paths import REPO

from s2trt.detect.letterbox import preprocess
from s2trt.errors import S2Error
from s2trt.trt.cuda_mem import CaptureFailed, CudaPythonMemory

SYNCS = ("event_synchronize", "synchronize")


def streams_of(cuda, kind):
    return {c[-1] for c in cuda.calls if c[0] == kind}


def pipelined(backend, batches):
    """What a pipeline does: submit batch n+1, then collect batch n; the call log of each step."""
    cuda, outs, steps, pending = backend.cuda, [], [], None
    for x in [*batches, None]:
        if x is not None:
            start = len(cuda.calls)
            nxt = backend.submit(x)
            steps.append(("submit", cuda.calls[start:]))
        if pending is not None:
            start = len(cuda.calls)
            outs.append(backend.collect(pending)["output0"])
            steps.append(("collect", cuda.calls[start:]))
        pending = nxt if x is not None else None
    return outs, steps


def check_outputs(outs, batches):
    for out, x in zip(outs, batches, strict=True):
        assert out.shape == (len(x), N, 5 + NC)
        np.testing.assert_allclose(out[..., 0], expected_output0(x), rtol=1e-5)


# --------------------------------------------------------------------------------- overlap

def test_batch_n_plus_1_is_copied_in_while_batch_n_runs(tmp_path):
    engine = FakeEngine(profile=(1, 4, 8))
    backend, cuda = open_fake(tmp_path, engine)
    pipelined(backend, [batch_of(3, seed=9)] * 2)  # the graphs of both buffer sets are captured
    runs = list(engine.contexts[0].runs)
    x0, x1 = batch_of(3, seed=0), batch_of(3, seed=1)
    p0, p1 = backend.submit(x0), backend.submit(x1)
    upload, = streams_of(cuda, "h2d")
    download, = streams_of(cuda, "d2h")
    assert len({upload, cuda.stream_handle, download}) == 3  # enqueue runs on cuda.stream_handle
    # Both uploads can finish while no batch has run: the copy of batch 1 does not wait for batch 0.
    cuda.run_stream(upload)
    assert engine.contexts[0].runs == runs
    # ...and into different device buffers, or batch 0 would now see batch 1's pixels.
    out0, out1 = backend.collect(p0)["output0"], backend.collect(p1)["output0"]
    np.testing.assert_allclose(out0[..., 0], expected_output0(x0), rtol=1e-5)
    np.testing.assert_allclose(out1[..., 0], expected_output0(x1), rtol=1e-5)


def test_host_waits_only_where_results_are_read(tmp_path):
    backend, cuda = open_fake(tmp_path, FakeEngine(profile=(1, 4, 8)))
    batches = [batch_of(n, seed=i) for i, n in enumerate([4, 4, 2, 4, 8, 1, 4])]
    outs, steps = pipelined(backend, batches)
    check_outputs(outs, batches)
    download, = streams_of(cuda, "d2h")
    for kind, calls in steps:
        syncs = [c for c in calls if c[0] in SYNCS]
        if kind == "submit":
            # Only a submit that captures a graph (once per buffer set and shape) waits, for the
            # warm-up enqueue on the compute stream, before the capture begins.
            names = [c[0] for c in calls]
            if "begin_capture" in names:
                assert len(syncs) == 1 and names.index("event_synchronize") < names.index("begin_capture")
                assert ("record", syncs[0][1], cuda.stream_handle) in calls
            else:
                assert syncs == []
        else:  # one wait, for the event recorded on the download stream after that batch's copies
            assert len(syncs) == 1 and syncs[0][0] == "event_synchronize"
            assert ("record", syncs[0][1], download) in cuda.calls


def test_a_missing_event_wait_is_caught_by_the_fake(tmp_path, monkeypatch):
    """The fake GPU is strict enough for the tests above to mean something."""
    backend, cuda = open_fake(tmp_path, FakeEngine(profile=(1, 4, 8)))
    monkeypatch.setattr(cuda, "wait", lambda stream, event: None)
    x = batch_of(2)
    out = backend.collect(backend.submit(x))["output0"]
    assert not np.allclose(out[..., 0], expected_output0(x), rtol=1e-5)


def test_buffers_are_allocated_once_and_reused(tmp_path):
    backend, cuda = open_fake(tmp_path, FakeEngine(profile=(1, 4, 8)))
    allocs = [c for c in cuda.calls if c[0] in ("malloc", "host_array")]
    assert len(allocs) == 2 * 2 * 2  # input and output0, two buffer sets, host and device
    batches = [batch_of(n, seed=i) for i, n in enumerate([8, 3, 8, 5, 1, 8])]
    pipelined(backend, batches)
    assert [c for c in cuda.calls if c[0] in ("malloc", "host_array")] == allocs
    assert cuda.pageable == []  # every copy from or to page-locked memory: asynchronous
    inputs = [c[1] for c in cuda.calls if c[0] == "h2d"]
    assert len(set(inputs)) == 2 and inputs[0::2] == [inputs[0]] * 3  # the two sets, alternately


def test_at_most_two_batches_in_flight(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine())
    p0 = backend.submit(batch_of(1))
    backend.submit(batch_of(1))
    with pytest.raises(RuntimeError, match="collect the oldest"):
        backend.submit(batch_of(1))
    backend.collect(p0)
    with pytest.raises(ValueError, match="already collected"):
        backend.collect(p0)
    with pytest.raises(ValueError, match="1 to 8 frames"):
        backend.submit(batch_of(9))


def test_close_waits_for_batches_in_flight(tmp_path):
    engine = FakeEngine()
    backend, cuda = open_fake(tmp_path, engine)
    backend.submit(batch_of(2))
    backend.close()
    assert cuda.closed and cuda.queued_at_close == 0 and engine.contexts[0].runs == [2]
    assert backend.context is None and backend.engine is None


def test_fixed_batch_engine_gets_a_padded_submit(tmp_path):
    engine = FakeEngine(batch=4)
    backend, _ = open_fake(tmp_path, engine)
    x = batch_of(3)
    out = backend.collect(backend.submit(x))["output0"]
    np.testing.assert_allclose(out[..., 0], expected_output0(x), rtol=1e-5)
    assert engine.contexts[0].runs == [4]


@pytest.mark.parametrize("integrated", [False, True], ids=["dGPU", "iGPU"])
def test_what_kernels_touch_is_device_memory_on_every_gpu(tmp_path, integrated):
    """An integrated GPU (Jetson) reads page-locked host memory uncached (CUDA for Tegra, "Memory
    Selection"): the engine input, the outputs TensorRT writes and the frames the letterbox kernel
    reads are device memory there too, and page-locked memory is only the CPU's side of a copy. The
    fake GPU's kernels can address device allocations only, so a kernel given host memory fails."""
    engine = FakeEngine(nms=True)
    lb = FakeLetterbox(engine)
    backend, cuda = open_fake(tmp_path, engine, integrated=integrated, backend_kw={"letterbox": lb})
    batch, x = frames(), batch_of(3)
    on_gpu = backend.collect(backend.submit_frames(batch)[0])  # letterboxed by the kernel
    on_cpu = backend.collect(backend.submit(x))  # letterboxed (here: given) by the CPU, copied in
    want, _ = preprocess(batch, (H, W))
    np.testing.assert_allclose(on_gpu["det_scores"][:, 0], want.reshape(3, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(on_cpu["det_scores"][:, 0], x.reshape(3, -1).mean(1), rtol=1e-5)
    device, pinned = set(cuda.device), set(cuda.pinned)
    for slot in backend._slots:
        gpu_side = [slot.dev_in, *slot.dev_out.values()] + ([slot.staging[1]] if slot.staging else [])
        cpu_side = [slot.host_in, *slot.host_out.values()] + ([slot.staging[0]] if slot.staging else [])
        assert set(gpu_side) <= device  # cudaMalloc
        assert {a.ctypes.data for a in cpu_side} <= pinned  # cudaMallocHost
    assert backend._slots[0].staging is not None  # the letterbox's frames were staged and copied
    assert set(engine.contexts[0].addr.values()) <= device
    assert set(lb.frame_ptrs) <= {p for s in backend._slots if s.staging for p in
                                  range(s.staging[1], s.staging[1] + s.staging[0].nbytes)}
    names = [c[0] for c in cuda.calls]
    assert names.count("h2d") == 2 and names.count("d2h") == 2 * 4  # two batches, four outputs
    assert cuda.pageable == []


# ----------------------------------------------------------------------------- CUDA graphs

def test_static_engine_is_captured_once_per_buffer_set_and_replayed(tmp_path, caplog):
    engine = FakeEngine(batch=4)
    backend, cuda = open_fake(tmp_path, engine)
    batches = [batch_of(4, seed=i) for i in range(6)]
    # The module's own logger: a CLI test run before may have left the "s2trt" logger at -q.
    with caplog.at_level(logging.INFO, logger="s2trt.runtime.backends.trt"):
        outs, _ = pipelined(backend, batches)
    check_outputs(outs, batches)  # each graph reads its own buffer set
    ctx = engine.contexts[0]
    assert ctx.enqueues == [(4, False), (4, True)] * 2  # then only graph launches
    assert [c[0] for c in cuda.calls].count("launch") == 4
    assert ctx.runs == [4] * 6
    assert backend.graph_state == "on" and caplog.text.count("CUDA graph captured") == 2
    assert re.fullmatch(r"CUDA graphs on; host time per enqueue: direct 2 x [\d.]+ ms, graph 4 x [\d.]+ ms",
                        backend.enqueue_summary())


def test_dynamic_engine_gets_a_graph_per_shape(tmp_path):
    engine = FakeEngine(profile=(1, 4, 8))
    backend, cuda = open_fake(tmp_path, engine)
    batches = [batch_of(n, seed=i) for i, n in enumerate([2, 2, 3, 3, 2, 3, 2])]
    outs, _ = pipelined(backend, batches)
    check_outputs(outs, batches)
    captured = [b for b, under_capture in engine.contexts[0].enqueues if under_capture]
    assert captured == [2, 2, 3, 3]  # (set 0, 2), (set 1, 2), (set 0, 3), (set 1, 3); then replays
    assert [c[0] for c in cuda.calls].count("launch") == 3


def test_engine_that_cannot_be_captured_falls_back_once(tmp_path, caplog):
    engine = FakeEngine(batch=2, capturable=False)
    backend, cuda = open_fake(tmp_path, engine)
    batches = [batch_of(2, seed=i) for i in range(5)]
    with caplog.at_level(logging.WARNING):
        outs, _ = pipelined(backend, batches)
    check_outputs(outs, batches)
    names = [c[0] for c in cuda.calls]
    assert names.count("begin_capture") == 1 and names.count("abort_capture") == 1
    assert "end_capture" not in names and "launch" not in names
    assert backend.graph_state.startswith("off (TensorRT could not enqueue under stream capture")
    assert caplog.text.count("CUDA graphs off") == 1
    assert re.fullmatch(r"CUDA graphs off \(.*\); host time per enqueue: direct 5 x [\d.]+ ms",
                        backend.enqueue_summary())


def test_graphs_off_means_batches_are_enqueued_directly(tmp_path, caplog):
    """A capture that fails for a later shape turns graphs off, and the warning says batches are now
    enqueued directly: graphs captured before for other shapes are not launched either, so the
    host-time summary and the log describe what runs."""
    engine = FakeEngine(profile=(1, 4, 8))
    backend, cuda = open_fake(tmp_path, engine)
    pipelined(backend, [batch_of(2, seed=i) for i in range(2)])  # batch 2: both buffer sets captured
    engine.capturable = False  # batch 3 cannot be captured
    launches = [c[0] for c in cuda.calls].count("launch")
    batches = [batch_of(3, seed=5), *(batch_of(2, seed=i) for i in range(6, 9))]
    with caplog.at_level(logging.WARNING):
        outs, _ = pipelined(backend, batches)
    check_outputs(outs, batches)
    assert backend.graph_state.startswith("off (") and caplog.text.count("CUDA graphs off") == 1
    assert [c[0] for c in cuda.calls].count("launch") == launches
    assert [u for _, u in engine.contexts[0].enqueues[-4:]] == [False] * 4


def test_capture_that_cuda_invalidates_falls_back_once(tmp_path, caplog):
    class Invalidating(FakeCuda):
        def end_capture(self, stream):
            self.capturing.pop(stream)
            raise CaptureFailed("cudaStreamEndCapture: operation not permitted when stream is capturing")

    engine = FakeEngine(batch=2)
    engine.cuda = cuda = Invalidating()
    from s2trt.runtime.backends.trt import TrtBackend

    backend = TrtBackend(make_engine(tmp_path), trt=fake_trt(engine), cuda=cuda, gpu_preprocess=False)
    batches = [batch_of(2, seed=i) for i in range(4)]
    with caplog.at_level(logging.WARNING):
        outs, _ = pipelined(backend, batches)
    check_outputs(outs, batches)
    assert [c[0] for c in cuda.calls].count("begin_capture") == 1
    assert caplog.text.count("CUDA graphs off: cudaStreamEndCapture: operation not permitted") == 1


def test_cuda_graphs_can_be_turned_off(tmp_path):
    backend, cuda = open_fake(tmp_path, FakeEngine(batch=2), backend_kw={"cuda_graphs": False})
    pipelined(backend, [batch_of(2, seed=i) for i in range(3)])
    assert "begin_capture" not in [c[0] for c in cuda.calls]


# ------------------------------------------------------------------------ GPU preprocessing

def test_gpu_letterbox_uploads_8_bit_frames_and_matches_cpu(tmp_path):
    engine = FakeEngine(profile=(1, 4, 8))
    lb = FakeLetterbox(engine)
    backend, cuda = open_fake(tmp_path, engine, backend_kw={"letterbox": lb})
    assert backend.preprocess_device == "gpu"
    imgs = [frames(seed=i) for i in range(3)]
    pending, results = None, []
    for batch in imgs:
        p, _ = backend.submit_frames(batch)
        if pending:
            results.append(backend.collect(pending)["output0"])
        pending = p
    results.append(backend.collect(pending)["output0"])
    for batch, out in zip(imgs, results, strict=True):
        want, _ = preprocess(batch, (H, W))
        np.testing.assert_allclose(out[..., 0], expected_output0(want), rtol=1e-5)
    upload, = streams_of(cuda, "h2d")
    assert [c[2] for c in cuda.calls if c[0] == "h2d"] == [sum(f.nbytes for f in b) for b in imgs]
    assert lb.calls == [(3, False, upload)] * 3  # the kernel is ordered before the upload event


def test_gpu_letterbox_failure_falls_back_to_cpu_once(tmp_path, caplog):
    engine = FakeEngine(batch=4, in_dtype=DataType.HALF)
    backend, _ = open_fake(tmp_path, engine, backend_kw={"letterbox": FakeLetterbox(engine, fail=True)})
    batch = frames()
    with caplog.at_level(logging.WARNING):
        out = backend.collect(backend.submit_frames(batch)[0])["output0"]
        backend.collect(backend.submit_frames(batch)[0])
    want, _ = preprocess(batch, (H, W))
    np.testing.assert_allclose(out[..., 0], expected_output0(want.astype(np.float16)), rtol=1e-4)
    assert backend.preprocess_device == "cpu" and caplog.text.count("GPU preprocessing off") == 1


def test_cpu_letterbox_writes_straight_into_pinned_memory(tmp_path):
    backend, cuda = open_fake(tmp_path, FakeEngine(profile=(1, 4, 8)))
    batch = frames()
    pending, infos = backend.submit_frames(batch)
    out = backend.collect(pending)["output0"]
    want, want_infos = preprocess(batch, (H, W))
    np.testing.assert_allclose(out[..., 0], expected_output0(want), rtol=1e-5)
    assert infos == want_infos
    assert [c[2] for c in cuda.calls if c[0] == "h2d"] == [want.nbytes]


def test_kernels_library_missing_means_cpu_or_a_clear_error(tmp_path, monkeypatch, caplog):
    from s2trt.runtime.backends.trt import _open_letterbox

    monkeypatch.setenv("S2TRT_KERNELS_LIB", str(tmp_path / "nope.so"))
    assert _open_letterbox(False) is None
    with caplog.at_level(logging.WARNING):
        assert _open_letterbox(None) is None
    assert "letterboxed on the CPU" in caplog.text
    with pytest.raises(S2Error, match="build it with `cmake"):
        _open_letterbox(True)


def test_integer_input_engine_is_never_letterboxed_on_the_gpu(tmp_path, monkeypatch):
    """The kernel writes FP32 or FP16 only: such an engine does not even look for the library."""
    monkeypatch.setenv("S2TRT_KERNELS_LIB", str(tmp_path / "nope.so"))
    backend, _ = open_fake(tmp_path, FakeEngine(in_dtype=DataType.INT8), backend_kw={"gpu_preprocess": True})
    assert backend.preprocess_device == "cpu"


def test_gpu_letterbox_with_the_kernels_own_source(tmp_path):
    """The real kernel source (CPU emulation of plugins/s2Preprocess) as the device work."""
    from plugin_helpers import kernels_build_dir

    from s2trt.runtime.backends.gpu_letterbox import GpuLetterbox

    path = kernels_build_dir() / "libs2sa_emulation.so"
    if not path.is_file():
        pytest.skip("the kernels were built without -DS2TRT_EMULATION=ON")
    emulated = GpuLetterbox(path, entry="s2pp_emulate_letterbox")
    engine = FakeEngine(profile=(1, 4, 8))

    def on_stream(frames_, out, imgsz, *, stream, **kw):  # a launch: work on the stream
        engine.cuda.issue(stream, lambda: emulated(frames_, out, imgsz, **kw), "letterbox")
        return [None] * len(frames_)

    backend, _ = open_fake(tmp_path, engine, backend_kw={"letterbox": on_stream})
    batch = frames()
    out = backend.collect(backend.submit_frames(batch)[0])["output0"]
    want, _ = preprocess(batch, (H, W))
    # One 8-bit step per pixel (the kernel's contract) moves a mean by at most 1/255.
    np.testing.assert_allclose(out[..., 0], expected_output0(want), atol=1 / 255)


# --------------------------------------------------------------------------- cuda-python

def test_cuda_python_events_graphs_and_pinned_memory():
    rt = FakeCudart(integrated=1)
    mem = CudaPythonMemory(rt)
    assert mem.integrated
    host = mem.host_array((4,), np.float32)
    assert rt.calls[-1] == ("mallochost", 16) and host.ctypes.data == ctypes.addressof(rt.buffers[-1])
    stream, event = mem.new_stream(), mem.new_event()
    mem.record(event, stream)
    mem.wait(mem.stream_handle, event)
    mem.event_synchronize(event)
    mem.begin_capture(stream)
    graph = mem.end_capture(stream)
    mem.launch(graph, stream)
    assert rt.calls[-9:] == [("record", event, stream), ("wait", mem.stream_handle, event, 0),
                             ("event_sync", event), ("begin_capture", stream, 1), ("end_capture", stream),
                             ("instantiate", 7, 0), ("graph_destroy", 7), ("upload", graph, stream),
                             ("launch", graph, stream)]
    mem.close()
    assert ("graph_exec_destroy", graph) in rt.calls and ("event_destroy", event) in rt.calls


def test_cuda_python_invalidated_capture_is_cleared():
    rt = FakeCudart(invalidate_capture=True)
    mem = CudaPythonMemory(rt)
    mem.begin_capture(mem.stream_handle)
    with pytest.raises(CaptureFailed, match="previous error during capture"):
        mem.end_capture(mem.stream_handle)
    assert rt.calls[-1] == ("get_last_error",)  # or the next CUDA call would report it


def test_cuda_python_graph_that_cannot_be_uploaded_is_a_capture_failure():
    """cudaGraphUpload runs once after instantiation, so the first launch does not upload inside the
    steady loop; where it fails the backend enqueues without graphs, and nothing is leaked."""
    rt = FakeCudart(fail_upload=True)
    mem = CudaPythonMemory(rt)
    mem.begin_capture(mem.stream_handle)
    with pytest.raises(CaptureFailed, match="cudaGraphUpload: out of memory"):
        mem.end_capture(mem.stream_handle)
    assert rt.calls[-3:] == [("upload", 77, mem.stream_handle), ("graph_exec_destroy", 77),
                             ("get_last_error",)]
    mem.close()
    assert rt.calls.count(("graph_exec_destroy", 77)) == 1


def test_cuda_python_capture_that_cannot_begin_is_a_capture_failure():
    """A refused cudaStreamBeginCapture means no graphs (the backend enqueues directly), not a
    failed run; its error is cleared like an invalidated capture's."""
    rt = FakeCudart(refuse_capture=True)
    mem = CudaPythonMemory(rt)
    with pytest.raises(CaptureFailed, match="cudaStreamBeginCapture"):
        mem.begin_capture(mem.stream_handle)
    assert rt.calls[-1] == ("get_last_error",)


def test_cuda_python_names_exist_in_cuda_bindings():
    """Every cudart attribute CudaPythonMemory uses, and its positional arity, in the real bindings."""
    import ast
    import inspect

    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) not installed")
    from s2trt.trt import cuda_mem

    tree = ast.parse(inspect.getsource(cuda_mem.CudaPythonMemory))
    used = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "rt"):
            used.setdefault(node.attr, None)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "rt"):
            used[node.func.attr] = len(node.args)
    assert {"cudaStreamBeginCapture", "cudaGraphInstantiateWithFlags", "cudaGraphUpload",
            "cudaMallocHost"} <= used.keys()
    for name, nargs in used.items():
        assert hasattr(runtime, name), name
        fake = getattr(FakeCudart, name, None)
        assert fake is not None, f"FakeCudart lacks {name}"
        if nargs is not None:  # "cudaStreamWaitEvent(stream, event, unsigned int flags)"
            sig = getattr(runtime, name).__doc__.splitlines()[0]
            params = sig[sig.index("(") + 1:sig.rindex(")")]
            assert len([p for p in params.split(",") if p.strip()]) == nargs, (name, sig)
    for enum, member in [("cudaStreamCaptureMode", "cudaStreamCaptureModeThreadLocal"),
                         ("cudaDeviceAttr", "cudaDevAttrIntegrated"),
                         ("cudaError_t", "cudaErrorStreamCaptureInvalidated")]:
        assert int(getattr(getattr(runtime, enum), member)) == getattr(getattr(FakeCudart, enum), member)
    assert (runtime.cudaStreamNonBlocking, runtime.cudaEventDisableTiming) == (
        FakeCudart.cudaStreamNonBlocking, FakeCudart.cudaEventDisableTiming)


# ------------------------------------------------------------------------------ benchmark

def test_gpu_benchmark_mode_runs_every_way_on_fakes(tmp_path, monkeypatch):
    """benchmarks/bench_runtime.py --engine is for a GPU machine; here it runs once on the fakes so
    it cannot break unnoticed before one is lent."""
    import importlib.util

    from s2trt.runtime.backends.trt import TrtBackend

    spec = importlib.util.spec_from_file_location(
        "bench_runtime", REPO / "benchmarks" / "bench_runtime.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("S2TRT_KERNELS_LIB", str(tmp_path / "nope.so"))  # no kernels: CPU letterbox
    path, engines = make_engine(tmp_path), []

    def make_backend(p, **kw):
        engines.append(FakeEngine(batch=4))
        engines[-1].cuda = FakeCuda()
        return TrtBackend(p, trt=fake_trt(engines[-1]), cuda=engines[-1].cuda, **kw)

    results = bench.bench_trt(path, frames(shapes=[(120, 160)] * 10), 4, 1, make_backend)
    assert list(results) == list(bench.TRT_MODES)
    assert all(fps > 0 and cpu >= 0 for fps, cpu, _ in results.values())
    # Per way: 2 warm-up batches, then 10 frames in batches of 4 (the last one padded).
    assert [e.contexts[0].runs for e in engines] == [[4] * 5] * 4
    notes = [note for _, _, note in results.values()]
    assert "CUDA graphs off (not requested)" in notes[0] and "CUDA graphs on" in notes[2]
    assert all(n.startswith("letterbox on the cpu") for n in notes)


@pytest.mark.gpu
def test_cuda_python_memory_on_a_gpu():
    """The same calls on a real GPU (no TensorRT needed): event ordering across streams, a captured
    copy replayed from a graph (it reads its pinned source at each launch), an aborted capture."""
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) not installed")
    from s2trt.trt.cuda_mem import open_cuda

    mem = open_cuda()
    try:
        n = 1 << 20
        src, back = mem.host_array((n,), np.float32), mem.host_array((n,), np.float32)
        src[:] = np.arange(n, dtype=np.float32)
        dev = mem.malloc(src.nbytes)
        upload, uploaded = mem.new_stream(), mem.new_event()
        mem.h2d(dev, src, upload)
        mem.record(uploaded, upload)
        mem.wait(mem.stream_handle, uploaded)
        mem.d2h(back, dev, mem.stream_handle)
        done = mem.new_event()
        mem.record(done, mem.stream_handle)
        mem.event_synchronize(done)
        np.testing.assert_array_equal(back, src)

        mem.begin_capture(mem.stream_handle)
        mem.h2d(dev, src, mem.stream_handle)
        graph = mem.end_capture(mem.stream_handle)
        for value in (3.0, 5.0):
            src[:] = value
            mem.launch(graph, mem.stream_handle)
            mem.d2h(back, dev, mem.stream_handle)
            mem.record(done, mem.stream_handle)
            mem.event_synchronize(done)
            assert (back == value).all()

        mem.begin_capture(upload)
        mem.abort_capture(upload)  # an aborted capture leaves the stream usable
        src[:] = 7.0
        mem.h2d(dev, src, upload)
        mem.d2h(back, dev, upload)
        mem.synchronize()
        assert (back == 7.0).all() and isinstance(mem.integrated, bool)
    finally:
        mem.close()


def test_an_enqueue_failure_is_not_taken_for_a_gpu_letterbox_failure(tmp_path, caplog):
    # enqueueV3 returns false on failure (NvInferRuntime.h 10.3.0 line 4256, IExecutionContext::enqueueV3:
    # "return True if the kernels were enqueued successfully, false otherwise"): the batch's error,
    # raised once; the letterbox kernel worked and stays on.
    engine = FakeEngine(profile=(1, 4, 8))
    backend, _ = open_fake(tmp_path, engine, backend_kw={"letterbox": FakeLetterbox(engine)})
    enqueues = []

    def failing(stream):
        enqueues.append(stream)
        return False

    backend.context.execute_async_v3 = failing
    with caplog.at_level(logging.WARNING), pytest.raises(S2Error, match="TensorRT failed to run"):
        backend.submit_frames(frames())
    assert len(enqueues) == 1
    assert backend.preprocess_device == "gpu" and "GPU preprocessing off" not in caplog.text
