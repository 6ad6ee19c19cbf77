"""The pipeline over an overlapping backend: batch n+1 submitted before batch n is collected, raw
frames handed to the GPU letterbox, and the batch in flight still written on Ctrl-C.

Runs the TensorRT backend on the fakes of tests/support/fakes.py (FakeCuda keeps CUDA's ordering
contract: work runs only when the host waits for it, so the call log shows where the host waited).
The contract relied on is TrtBackend.submit / collect's (runtime/backends/trt.py): at most two
batches in flight, submit and collect from one thread.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import FakeEngine, FakeLetterbox, open_fake

from s2trt.detect.letterbox import LetterboxInfo
from s2trt.errors import S2Error
from s2trt.runtime.inputs.sources import Frame, SourceKind
from s2trt.runtime.pipeline import DetectOptions, Runner


class InfoLetterbox(FakeLetterbox):
    """FakeLetterbox returning LetterboxInfo per frame, as runtime.backends.gpu_letterbox.GpuLetterbox
    does."""

    def __call__(self, frames, out, imgsz, **kw):
        geometry = super().__call__(frames, out, imgsz, **kw)
        return [LetterboxInfo(r, pad, (f.height, f.width)) for (r, _, pad), f in zip(geometry, frames,
                                                                                     strict=True)]


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(50, 70), (64, 96), (31, 200), (80, 60)]
    return [Frame(rng.integers(0, 256, (*shapes[i % 4], 3), dtype=np.uint8), "mem", i, SourceKind.VIDEO)
            for i in range(n)]


class ListSink:
    def __init__(self):
        self.got = []

    def write(self, frame, dets):
        self.got.append((frame.index, dets.round(3).tolist()))


def run(backend, fr, batch=4, pipelined=True):
    sink = ListSink()
    runner = Runner(backend, fr, sink, DetectOptions(conf_thres=0.0), batch=batch, pipelined=pipelined)
    runner.run()
    return sink.got, runner


def test_batch_n_plus_1_is_submitted_before_batch_n_is_waited_for(tmp_path):
    backend, cuda = open_fake(tmp_path, FakeEngine(profile=(1, 4, 8)))
    want, seq = run(backend, frames(10), pipelined=False)
    assert not seq.overlap
    start = len(cuda.calls)
    got, runner = run(backend, frames(10))
    assert runner.overlap and got == want  # same results, same order
    calls = [c[0] for c in cuda.calls[start:] if c[0] in ("h2d", "event_synchronize")]
    # Three batches (4 + 4 + 2): batch n+1 is uploaded before the host waits for batch n. (The new
    # shape of the last batch adds a wait of its own, before its CUDA graph is captured.)
    h2d = [i for i, c in enumerate(calls) if c == "h2d"]
    waits = [i for i, c in enumerate(calls) if c == "event_synchronize"]
    assert len(h2d) == 3 and h2d[1] < waits[0] and h2d[2] < waits[1]


def test_gpu_letterbox_gets_the_raw_frames_and_matches_the_cpu_path(tmp_path):
    engine = FakeEngine(profile=(1, 4, 8))
    cpu_backend, _ = open_fake(tmp_path, engine)
    want, _ = run(cpu_backend, frames(7, seed=3))
    lb = InfoLetterbox(engine)
    backend, _ = open_fake(tmp_path, engine, backend_kw={"letterbox": lb})
    got, runner = run(backend, frames(7, seed=3))
    assert runner.gpu_letterbox and [n for n, _, _ in lb.calls] == [4, 3]
    assert "preprocess" not in runner.stats.table()  # no letterbox on the CPU
    assert got == want


def test_a_frame_the_gpu_letterbox_refuses_is_skipped_alone(tmp_path):
    engine = FakeEngine(profile=(1, 4, 8))
    backend, _ = open_fake(tmp_path, engine, backend_kw={"letterbox": InfoLetterbox(engine)})
    fr = frames(6)
    fr[2] = Frame(np.zeros((0, 5, 3), np.uint8), "mem", 2, SourceKind.VIDEO)
    got, runner = run(backend, fr)
    assert [i for i, _ in got] == [0, 1, 3, 4, 5]
    assert any("frame 2" in p for p in runner.problems)


def test_ctrl_c_still_writes_the_batch_in_flight(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(profile=(1, 4, 8)))
    submit, calls = backend.submit, []

    def interrupted_third(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return submit(x)

    backend.submit = interrupted_third
    sink = ListSink()
    runner = Runner(backend, frames(16), sink, DetectOptions(conf_thres=0.0), batch=4)
    assert runner.overlap
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    # Batch 1 was collected when batch 2 was submitted; batch 2 was on the GPU at the interrupt.
    assert [i for i, _ in sink.got] == list(range(8))


def test_batches_larger_than_one_submit_take_the_splitting_path(tmp_path):
    backend, _ = open_fake(tmp_path, FakeEngine(profile=(1, 4, 4)))
    got, runner = run(backend, frames(9), batch=6)
    assert not runner.overlap and [i for i, _ in got] == list(range(9))


def test_a_stalled_stream_still_gets_the_batch_already_submitted(tmp_path):
    """A live stream that stops sending must not hold the last submitted batch's results until the
    next frame (or the reconnect timeout): the caller collects it as soon as the input runs dry."""
    backend, _ = open_fake(tmp_path, FakeEngine(profile=(1, 4, 8)))
    written = threading.Event()
    waited: list[bool] = []

    class SignallingSink(ListSink):
        def write(self, frame, dets):
            super().write(frame, dets)
            if len(self.got) == 4:
                written.set()

    def stalling():
        fr = frames(8)
        yield from fr[:4]
        waited.append(written.wait(timeout=5))  # the stream stalls until batch 1 is written
        yield from fr[4:]

    sink = SignallingSink()
    runner = Runner(backend, stalling(), sink, DetectOptions(conf_thres=0.0), batch=4)
    assert runner.overlap
    runner.run()
    assert waited == [True]
    assert [i for i, _ in sink.got] == list(range(8))


def test_a_backend_error_is_the_runs_not_a_bad_frame_retried_on_the_cpu(tmp_path):
    engine = FakeEngine(profile=(1, 4, 8))
    backend, _ = open_fake(tmp_path, engine, backend_kw={"letterbox": InfoLetterbox(engine)})
    enqueues = []

    def failing(stream):
        enqueues.append(stream)
        return False  # enqueueV3's failure (see test_runtime_trt_overlap)

    backend.context.execute_async_v3 = failing
    sink = ListSink()
    runner = Runner(backend, frames(4), sink, DetectOptions(conf_thres=0.0), batch=4)
    assert runner.gpu_letterbox
    with pytest.raises(S2Error, match="TensorRT failed to run"):
        runner.run()
    assert len(enqueues) == 1 and not runner.problems and not sink.got
