"""The threaded pipeline with a fake backend: order, error propagation, Ctrl-C, no leftover threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from s2trt.errors import S2Error
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.base import BatchedBackend, BatchSpec
from s2trt.runtime.inputs.sources import Frame, SourceKind
from s2trt.runtime.pipeline import DetectOptions, Runner
from s2trt.runtime.stats import RESERVOIR, Stats


class EchoBackend(BatchedBackend):
    """One box per image whose score encodes the frame's pixel value: results identify their frame."""

    def __init__(self, interrupt_at=None, max_batch=4):
        self.meta = ModelMeta(names=["x"], imgsz=[64, 64])
        self.spec = BatchSpec(1, max_batch)
        self.name = "echo"
        self.calls, self.interrupt_at = 0, interrupt_at

    def _run(self, batch):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        out = np.zeros((len(batch), 1, 6), np.float32)
        out[:, 0, :4] = [32, 32, 10, 10]
        out[:, 0, 4] = 1.0
        out[:, 0, 5] = batch[:, 0, 32, 32]  # class score = the frame's value / 255
        return {"output0": out}


class ListSink:
    def __init__(self, fail_at=None):
        self.got, self.fail_at = [], fail_at

    def write(self, frame, dets):
        if len(self.got) == self.fail_at:
            raise S2Error("disk full")
        self.got.append((frame.index, float(dets[0, 4]) if len(dets) else None))


def frames(n):
    for i in range(n):
        yield Frame(np.full((48, 64, 3), 10 + i, np.uint8), "mem", i, SourceKind.VIDEO)


@pytest.mark.parametrize("pipelined", [True, False])
@pytest.mark.parametrize("batch", [1, 3, 7])
def test_every_frame_once_in_order_with_its_own_result(pipelined, batch):
    sink = ListSink()
    before = threading.active_count()
    stats = Runner(EchoBackend(), frames(23), sink, DetectOptions(0.01), batch=batch,
                   pipelined=pipelined, queue_size=2).run()
    assert [i for i, _ in sink.got] == list(range(23))
    np.testing.assert_allclose([s for _, s in sink.got], [(10 + i) / 255 for i in range(23)], rtol=1e-5)
    assert stats.frames == 23 and threading.active_count() == before
    assert set(stats.table()) == {"decode", "preprocess", "infer", "postprocess", "write"}


def test_writer_error_stops_the_run():
    sink = ListSink(fail_at=5)
    before = threading.active_count()
    with pytest.raises(S2Error, match="disk full"):
        Runner(EchoBackend(), frames(200), sink, DetectOptions(0.01), queue_size=2).run()
    assert len(sink.got) == 5 and threading.active_count() == before


@pytest.mark.parametrize("pipelined", [True, False])
def test_source_error_reaches_the_caller_after_the_frames_before_it(pipelined):
    def broken():
        yield from frames(5)
        raise S2Error("stream lost")

    sink = ListSink()
    with pytest.raises(S2Error, match="stream lost"):
        Runner(EchoBackend(), broken(), sink, DetectOptions(0.01), batch=3, pipelined=pipelined).run()
    assert [i for i, _ in sink.got] == [0, 1, 2, 3, 4]


def test_interrupt_finishes_inferred_batches_and_stops_reading():
    sink = ListSink()
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        Runner(EchoBackend(interrupt_at=4), frames(1000), sink, DetectOptions(0.01), batch=2).run()
    assert [i for i, _ in sink.got] == list(range(6))  # the 3 batches inferred before Ctrl-C
    assert threading.active_count() == before


def test_stats_memory_is_bounded_and_percentiles_sane():
    s = Stats()
    for i in range(RESERVOIR * 2):
        s.add("infer", (i % 100) / 1000)
    t = s.table()["infer"]
    assert len(s.ms["infer"].sample) == RESERVOIR
    assert t["mean"] == pytest.approx(49.5) and 40 <= t["p50"] <= 60 and 90 <= t["p95"] <= 99


class TinyFrames(list):
    problems: list[str]


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_frame_the_letterbox_cannot_take_is_skipped_alone(pipelined):
    good = [Frame(np.full((48, 64, 3), 10 + i, np.uint8), f"im{i}.png", 0, SourceKind.IMAGE)
            for i in range(4)]
    thin = Frame(np.full((1, 5000, 3), 50, np.uint8), "thin.png", 0, SourceKind.IMAGE)
    empty = Frame(np.zeros((0, 7, 3), np.uint8), "empty.png", 0, SourceKind.IMAGE)
    src = TinyFrames([good[0], thin, empty, good[1], good[2], good[3]])
    src.problems = []
    got = []

    class SourceSink:
        def write(self, frame, dets):
            got.append((frame.source, round(float(dets[0, 4]) * 255)))

    runner = Runner(EchoBackend(), src, SourceSink(), DetectOptions(0.01), batch=3, pipelined=pipelined)
    stats = runner.run()
    assert stats.frames == 5
    # Each frame its own result (the thin frame's one row misses the centre pixel: padding, 114).
    assert got == [("im0.png", 10), ("thin.png", 114), ("im1.png", 11), ("im2.png", 12),
                   ("im3.png", 13)]
    assert src.problems == ["empty.png: frame 0 is empty (shape (0, 7, 3)), skipped"]
    assert runner.problems is src.problems
