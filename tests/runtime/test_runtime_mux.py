"""Batching several sources as nvstreammux does (full, or at a push timeout; one frame per live source
per batch), the table's counts after an interrupt, what a stream that never decodes and a source
that is not there say, and the command-line plumbing (--batch default, --imgsz before a source)."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest
from runtime_support import tiny_models, write_video

from s2trt.errors import S2Error
from s2trt.runtime.inputs.sources import SourceKind
from s2trt.runtime.inputs.streams import LiveOptions, MultiSource

FAST = LiveOptions(read_timeout_s=0.5, reconnect_timeout_s=0.3, backoff_s=0.05, max_backoff_s=0.1)


class Camera:
    """A live camera at `fps` giving `n` frames, each filled with its own number (paced by the clock
    from its start, as a real camera's are)."""

    def __init__(self, fps: float, n: int):
        self.fps, self.n, self.i, self.t0 = fps, n, 0, None

    def grab(self):
        if self.i >= self.n:
            return False
        self.t0 = self.t0 or time.monotonic()
        wait = self.t0 + self.i / self.fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.i += 1
        return True

    def retrieve(self):
        return True, np.full((8, 8, 3), (self.i - 1) % 256, np.uint8)

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


def cameras(rates: dict[str, tuple[float, int]]):
    def opener(kind, item, timeout_s):
        if item not in opener.opened:
            opener.opened.add(item)
            return Camera(*rates[item])
        raise S2Error(f"cannot open stream {item}")

    opener.opened = set()
    return opener


def _batches(ms: MultiSource, size: int, push_timeout_s: float | None = None):
    """Each batch with the time it was pushed."""
    out = []
    for b in ms.batches(size, push_timeout_s):
        out.append((time.monotonic(), b))
    return out


def test_two_fast_and_six_slow_cameras_never_wait_for_a_full_batch():
    # The case: 2 cameras at 25 FPS, 6 at 1 FPS, batch 8. A full-batch muxer holds the
    # oldest frame ~120 ms and lets one fast camera take 4 slots.
    rates = {f"rtsp://fast/{i}": (25.0, 50) for i in range(2)}
    rates |= {f"rtsp://slow/{i}": (1.0, 2) for i in range(6)}
    ms = MultiSource(list(rates), live=FAST, opener=cameras(rates))
    got = _batches(ms, 8)
    for pushed, b in got:
        sources = [f.source for f in b]
        assert len(sources) == len(set(sources)), sources  # one frame per live source per batch
        # Pushed within the push timeout (one interval of the fastest camera, 40 ms) of its oldest
        # frame's capture, plus the scheduler's slack on a shared 2-core machine.
        assert pushed - min(f.captured for f in b) < 0.04 + 0.06
    fast = [f for _, b in got for f in b if "fast" in f.source]
    assert len(fast) + sum(ms.stats[s].dropped for s in rates if "fast" in s) == 100
    assert ms.push_timeout() == pytest.approx(0.04)


def test_one_slow_camera_is_pushed_at_once_not_after_four_frames():
    # One 5 FPS camera at batch 4: nothing else can join its batch, so it goes at once (a full-
    # batch muxer waits 600 ms for the fourth frame).
    ms = MultiSource(["rtsp://cam/a"], live=FAST, opener=cameras({"rtsp://cam/a": (5.0, 6)}))
    got = _batches(ms, 4, push_timeout_s=5.0)
    assert [len(b) for _, b in got] == [1] * 6
    assert max(pushed - b[0].captured for pushed, b in got) < 0.05


def test_a_file_fills_the_room_the_cameras_leave_and_files_alone_fill_every_batch(tmp_path):
    video = write_video(tmp_path / "v.mp4", 40, 48, 64)
    ms = MultiSource([str(video), "rtsp://cam/a"], live=FAST,
                     opener=cameras({"rtsp://cam/a": (25.0, 20)}))
    got = [b for _, b in _batches(ms, 4, push_timeout_s=1.0)]
    assert all(sum(f.source == "rtsp://cam/a" for f in b) <= 1 for b in got)
    assert [f.index for b in got for f in b if f.source == str(video)] == list(range(40))
    assert max(len(b) for b in got) == 4  # the file's frames share the cameras' batches
    # Without live sources nothing times out: every batch but the last is full, as with one source.
    other = write_video(tmp_path / "b.mp4", 7, 48, 64)
    sizes = [len(b) for _, b in _batches(MultiSource([str(video), str(other)]), 4, push_timeout_s=1e-9)]
    assert sizes == [4] * 11 + [3]


def test_the_table_counts_what_was_written_after_an_interrupt(tmp_path):
    from s2trt.runtime.backends.ort import OrtBackend
    from s2trt.runtime.pipeline import DetectOptions, Runner

    written = []

    class StopAfter:
        def write(self, frame, dets):
            if len(written) == 12:  # Ctrl-C with batches still queued behind this one
                raise KeyboardInterrupt
            written.append(frame.source)

    video = write_video(tmp_path / "v.mp4", 200, 48, 64)
    ms = MultiSource([str(video), "rtsp://cam/a"], live=FAST,
                     opener=cameras({"rtsp://cam/a": (200.0, 400)}))
    runner = Runner(OrtBackend(tiny_models()["onnx"], device="cpu"), ms, StopAfter(), DetectOptions(),
                    batch=2, queue_size=4)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    ms.close()
    for key in ms.stats:
        st = ms.stats[key]
        assert st.frames == written.count(key)  # frames in flight at the interrupt are not counted
        assert st.latency.count == st.frames and st.latency_ms()[0] != "-"
    cam, read = ms.stats["rtsp://cam/a"], ms._readers[1].read
    # Every frame read is written or dropped (but the one left in the reader's slot at the stop).
    assert read - 1 <= cam.frames + cam.dropped <= read and cam.dropped > 0
    assert "p95 ms" in ms.table()


def test_imgsz_never_takes_the_source_after_it():
    from s2trt.runtime.cli import parse

    base = ["--onnx", "m.onnx"]
    a = parse([*base, "--imgsz", "320", "tcp://127.0.0.1:5000"])
    assert a.imgsz == [320] and a.source == ["tcp://127.0.0.1:5000"]
    a = parse([*base, "--imgsz", "320", "640", "video.mp4"])
    assert a.imgsz == [320, 640] and a.source == ["video.mp4"]
    a = parse([*base, "--imgsz", "320", "0"])  # camera 0: no model input is 0 wide
    assert a.imgsz == [320] and a.source == ["0"]
    a = parse(["video.mp4", *base, "--imgsz=256"])
    assert a.imgsz == [256]


class _Engine:
    """What _plan_batch reads of a TensorRT backend: an overlapped one with a batch maximum."""

    max_batch = 4
    preprocess_device = "gpu"

    def submit(self, batch): ...
    def collect(self, pending): ...
    def submit_frames(self, frames, **kw): ...
    def enqueue_summary(self): ...
    def infer(self, batch): ...
    def close(self): ...
    imgsz = (64, 64)
    meta = None
    name = "engine"


def test_batch_defaults_to_the_live_sources_within_the_engine_and_above_it_warns(caplog):
    from s2trt.runtime.backends.base import OverlappedBackend
    from s2trt.runtime.pipeline import plan_batch

    assert isinstance(_Engine(), OverlappedBackend)

    class Src:
        items = ([(SourceKind.STREAM, f"rtsp://cam/{i}") for i in range(6)]
                 + [(SourceKind.VIDEO, "a.mp4"), (SourceKind.CAMERA, "0")])

    assert plan_batch(None, _Engine(), Src(), False) == 4  # 7 live sources, the engine takes 4
    Src.items = Src.items[:2]
    assert plan_batch(None, _Engine(), Src(), False) == 2
    Src.items = [(SourceKind.VIDEO, "a.mp4")]
    assert plan_batch(None, _Engine(), Src(), False) == 1
    with caplog.at_level(logging.WARNING):
        assert plan_batch(8, _Engine(), Src(), False) == 8
    assert "above the engine's maximum batch 4" in caplog.text and "GPU letterbox" in caplog.text
    assert "overlapped" in caplog.text


def test_push_timeout_must_be_positive(capsys):
    from s2trt.runtime.cli import parse

    with pytest.raises(SystemExit) as e:
        parse(["--onnx", "m.onnx", "0", "--push-timeout", "0"])
    assert e.value.code == 2 and "--push-timeout must be above 0" in capsys.readouterr().err


def test_a_missing_path_and_an_unreachable_url_follow_one_rule(tmp_path):
    video = write_video(tmp_path / "v.mp4", 5, 48, 64)
    lst = tmp_path / "cams.streams"
    lst.write_text(f"{video}\n{tmp_path / 'gone.mp4'}\nrtsp://127.0.0.1:9/none\n")

    def refuse(kind, item, timeout_s):
        raise S2Error(f"cannot open stream {item}")

    ms = MultiSource([str(lst)], live=FAST, opener=refuse)
    assert [f.index for f in ms] == list(range(5))
    assert ms.stats[str(tmp_path / "gone.mp4")].status == "failed"
    assert ms.stats["rtsp://127.0.0.1:9/none"].status == "failed"
    assert sum("this source ended" in p for p in ms.problems) == 2
    lst.write_text(f"{tmp_path / 'gone.mp4'}\n{tmp_path / 'gone2.mp4'}\n")
    with pytest.raises(S2Error, match="source not found"):  # none can be read: the run fails
        MultiSource([str(lst)])


def test_batches_are_taken_once():
    ms = MultiSource(["rtsp://cam/a"], live=FAST, opener=cameras({"rtsp://cam/a": (50.0, 3)}))
    assert sum(len(b) for b in ms.batches(2)) >= 1
    with pytest.raises(RuntimeError, match="iterated once"):
        next(iter(ms.batches(2)))


def test_a_stream_that_answers_but_never_decodes_is_undecodable_not_lost():
    class Silent(Camera):  # opens (FFmpeg probed it), then no frame ever decodes
        def grab(self):
            return False

    others = cameras({"rtsp://cam/b": (25.0, 5)})

    def opener(kind, item, timeout_s):
        return Silent(25.0, 0) if item == "rtsp://cam/a" else others(kind, item, timeout_s)

    ms = MultiSource(["rtsp://cam/a", "rtsp://cam/b"], live=FAST, opener=opener)
    assert {f.source for f in ms} == {"rtsp://cam/b"}
    assert ms.stats["rtsp://cam/a"].status == "undecodable" and ms.stats["rtsp://cam/b"].status == "lost"
    assert any("connects" in p and "no frame could be decoded" in p for p in ms.problems)
