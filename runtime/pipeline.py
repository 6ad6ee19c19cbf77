"""read → letterbox → infer → NMS → sinks, with the stages overlapping in threads.

Three workers joined by bounded queues: a reader thread reads frames (decoding video) and
letterboxes, the calling thread runs the backend, a writer thread does NMS, drawing and encoding.
One worker per stage and FIFO queues keep frames in order; the bounds keep memory flat however
long the video. The backend runs in the calling thread (pycuda binds its CUDA context to the thread
that made it), so Ctrl-C lands there: the reader is stopped, the writer finishes the batches
already inferred, and the caller closes the sinks.

A backend that can overlap (TensorRT: `submit` / `collect`) gets batch n+1 submitted before batch n
is collected, so the GPU computes n+1 while the writer post-processes n; one batch is pending at a
time, and on an error or Ctrl-C it is still collected, so that its frames get their results. When
the backend letterboxes on the GPU, the reader thread passes the frames undecorated and the
calling thread hands them to `submit_frames`.

`Runner.steps()` is the same loop one batch at a time: runtime/run.py's `Session` drives it, to the
end for s2infer and a step at a time for `s2trt.Detector.stream()`, which yields the results that
each step produced, so that stopping the iteration stops the run as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np

from s2trt.detect.letterbox import LetterboxInfo, check_frame, preprocess
from s2trt.detect.masks import detections, to_frames
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.runtime.backends.base import Backend, OverlappedBackend
from s2trt.runtime.inputs.sources import Frame, Source, SourceKind
from s2trt.runtime.inputs.streams import MultiSource
from s2trt.runtime.outputs.sinks import Sinks
from s2trt.runtime.results import Result
from s2trt.runtime.stats import Stats
from s2trt.text import first_line, redact_credentials

log = logging.getLogger(__name__)

_END = object()  # end of a queue's stream
# What a frame the letterbox cannot take raises: its own problem, reported and skipped.
_FRAME_ERRORS = (S2Error, cv2.error, ValueError, MemoryError)
_POLL_S = 0.1


@dataclass
class Batch:
    frames: list[Frame]
    x: np.ndarray | None = None
    infos: list[LetterboxInfo] | None = None
    outputs: dict[str, np.ndarray] | None = None
    handle: Any = None  # an overlapping backend's submitted batch
    submit_s: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)  # per frame, by stage


class Runner:
    """One run of a backend over a source into sinks; `run()` returns the stats.

    `results`, when given, is called with each frame's `Result` in the writer's thread, after the
    sinks (which may be None: results only)."""

    def __init__(self, backend: Backend, frames: Iterable[Frame], sinks: Sinks | None,
                 opts: DetectOptions, batch: int = 1, pipelined: bool = True, queue_size: int = 4,
                 on_frames: Callable[[int], None] | None = None,
                 results: Callable[[Result], None] | None = None):
        self.backend, self.frames, self.sinks, self.opts = backend, frames, sinks, opts
        self.batch, self.pipelined, self.queue_size = max(batch, 1), pipelined, max(queue_size, 1)
        self.on_frames = on_frames
        self.results = results
        self._on_result = getattr(frames, "result", None)
        self.stats = Stats()
        # Frames skipped here are reported with the source's own problems, in one list.
        self.problems: list[str] = getattr(frames, "problems", None)
        if self.problems is None:
            self.problems = []
        self._letterbox = backend.meta.preprocess_kwargs()
        # Overlap needs the stage threads, and batches the backend takes in one submit.
        self.overlap = (self.pipelined and isinstance(backend, OverlappedBackend)
                        and self.batch <= backend.max_batch)
        self.gpu_letterbox = self.overlap and cast(OverlappedBackend, backend).preprocess_device == "gpu"
        self._pending: Batch | None = None

    # The stages, each timed.
    def _batches(self) -> Iterator[Batch]:
        for group in self._groups():
            for f in group:
                self.stats.add("decode", f.decode_s)
            if b := self._prep(group):
                yield b

    def _groups(self) -> Iterator[list[Frame]]:
        """The frames in batches: several sources batch their own, as nvstreammux does (full, or at
        a push timeout, one frame per live source: MultiSource.batches); one source fills each."""
        mux = getattr(self.frames, "batches", None)
        if mux is not None:
            yield from mux(self.batch)
            return
        group: list[Frame] = []
        try:
            for f in self.frames:
                group.append(f)
                if len(group) == self.batch:
                    yield group
                    group = []
        except Exception:  # frames read before a source error still get their results
            if group:
                yield group
            raise
        if group:
            yield group

    def _prep(self, frames: list[Frame]) -> Batch | None:
        if self.gpu_letterbox:  # letterboxed by submit_frames, in the calling thread
            return Batch(frames)
        t0 = time.perf_counter()
        try:
            x, infos = preprocess([f.image for f in frames], self.backend.imgsz, **self._letterbox)
        except _FRAME_ERRORS:  # one bad frame must not take the others (and the run) with it
            frames, x, infos = self._prep_each(frames)
        if not frames:
            return None
        dt = time.perf_counter() - t0
        self.stats.add("preprocess", dt, len(frames))
        return Batch(frames, x, infos, seconds={"preprocess": dt / len(frames)})

    def _prep_each(self, frames: list[Frame]) -> tuple[list[Frame], np.ndarray, list[LetterboxInfo]]:
        kept, xs, infos = [], [], []
        for f in frames:
            try:
                x, info = preprocess([f.image], self.backend.imgsz, **self._letterbox)
            except _FRAME_ERRORS as e:
                where = redact_credentials(f.source)
                what = where if f.kind == SourceKind.IMAGE else f"{where}: frame {f.index}"
                msg = f"{what}: {first_line(e)}, skipped"
                self.problems.append(msg)
                log.warning("%s", msg)
                continue
            kept.append(f)
            xs.append(x)
            infos += info
        return kept, np.concatenate(xs) if xs else np.empty((0,)), infos

    def _infer(self, b: Batch) -> Batch:
        t0 = time.perf_counter()
        b.outputs = self.backend.infer(b.x)
        dt = time.perf_counter() - t0
        self.stats.add("infer", dt, len(b.frames))
        b.seconds["infer"] = dt / len(b.frames)
        b.x = None  # the input is no longer needed: do not hold it in the writer's queue
        return b

    def _submit(self, b: Batch) -> bool:
        """Start batch b on an overlapping backend; False if none of its frames could be taken."""
        t0 = time.perf_counter()
        if b.x is None:
            # Frames are checked here so that only a bad frame takes the CPU path: an error of the
            # backend itself (enqueue, CUDA) is the run's, and must not be retried frame by frame.
            try:
                for i, f in enumerate(b.frames):
                    check_frame(f.image, i)
            except _FRAME_ERRORS:  # a bad frame: the batch on the CPU, that frame skipped alone
                b.frames, b.x, b.infos = self._prep_each(b.frames)
                if not b.frames:
                    return False
            else:
                b.handle, b.infos = self.backend.submit_frames([f.image for f in b.frames],
                                                               **self._letterbox)
        if b.handle is None:
            b.handle = self.backend.submit(b.x)
        b.x = None
        b.submit_s = time.perf_counter() - t0
        return True

    def _collect(self, b: Batch) -> Batch:
        t0 = time.perf_counter()
        b.outputs = self.backend.collect(b.handle)
        b.handle = None
        # The host's time in submit and collect: with the overlap, not the GPU's time per batch.
        dt = b.submit_s + time.perf_counter() - t0
        self.stats.add("infer", dt, len(b.frames))
        b.seconds["infer"] = dt / len(b.frames)
        return b

    def _dispatch(self, b: Batch, q_out: queue.Queue) -> None:
        """Infer b, or submit it and hand the writer the batch submitted before it."""
        if not self.overlap:
            q_out.put(self._infer(b))
            return
        if not self._submit(b):
            return
        previous, self._pending = self._pending, b
        if previous is not None:
            q_out.put(self._collect(previous))

    def _flush(self, q_out: queue.Queue) -> None:
        """Hand the writer the batch the GPU still holds, if any."""
        if self._pending is not None:
            q_out.put(self._collect(self._pending))
            self._pending = None

    def _write(self, b: Batch) -> None:
        t0 = time.perf_counter()
        # Boxes back to the frame, and a segmentation model's masks beside them.
        dets, masks = to_frames(detections(b.outputs, self.opts), b.outputs, b.infos, self.backend.imgsz)
        dt = time.perf_counter() - t0
        self.stats.add("postprocess", dt, len(b.frames))
        b.seconds["postprocess"] = dt / len(b.frames)
        t0 = time.perf_counter()
        for frame, d, m, info in zip(b.frames, dets, masks, b.infos, strict=True):
            if self.sinks is not None:  # masks only where there are: a detection sink takes two
                self.sinks.write(frame, d) if m is None else self.sinks.write(frame, d, m)
            if self._on_result is not None:  # several sources: their table counts results written
                self._on_result(frame)
            if self.results is not None:
                timing = {"decode": frame.decode_s * 1e3, **{k: v * 1e3 for k, v in b.seconds.items()}}
                self.results(Result(frame, d, self.backend.meta.names, info, timing, m))
        self.stats.add("write", time.perf_counter() - t0, len(b.frames))
        self.stats.frames += len(b.frames)
        self.stats.detections += sum(len(d) for d in dets)
        if self.on_frames is not None:
            self.on_frames(len(b.frames))

    def run(self) -> Stats:
        for _ in self.steps():
            pass
        return self.stats

    def steps(self) -> Iterator[None]:
        """The run, one step at a time: each step infers one batch (or, pipelined, waits for the
        next one at most a poll interval). Closing the iterator early stops the run: the batches
        already inferred are still written and the stage threads are joined."""
        t0 = time.perf_counter()
        try:
            if self.pipelined:
                yield from self._run_threads()
            else:
                for b in self._batches():
                    self._write(self._infer(b))
                    yield
        finally:
            self.stats.wall_s = time.perf_counter() - t0

    def _run_threads(self) -> Iterator[None]:
        q_in: queue.Queue[Any] = queue.Queue(self.queue_size)
        q_out: queue.Queue[Any] = queue.Queue(self.queue_size)
        stop = threading.Event()
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                for b in self._batches():
                    if not _put(q_in, b, stop):
                        return
                _put(q_in, _END, stop)
            except BaseException as e:  # queued after the frames read before it, raised by the caller
                _put(q_in, e, stop)

        def writer() -> None:
            try:
                while (b := q_out.get()) is not _END:
                    if not errors:
                        self._write(b)
            except BaseException as e:
                errors.append(e)
                stop.set()
                while q_out.get() is not _END:  # keep draining so the caller never blocks on put
                    pass

        threads = [threading.Thread(target=reader, name="s2infer-read", daemon=True),
                   threading.Thread(target=writer, name="s2infer-write", daemon=True)]
        for t in threads:
            t.start()
        source_error = None
        try:
            while not errors:
                try:
                    b = q_in.get(timeout=_POLL_S)
                except queue.Empty:
                    # A stalled stream must not hold the batch already on the GPU until its next frame.
                    self._flush(q_out)
                    yield
                    continue
                if b is _END:
                    break
                if isinstance(b, BaseException):
                    source_error = b
                    break
                self._dispatch(b, q_out)
                yield
            self._flush(q_out)
        finally:
            with contextlib.suppress(Exception):  # failed or interrupted: the GPU has this batch, keep it
                self._flush(q_out)
            self._pending = None
            stop.set()  # the reader stops at its next frame
            q_out.put(_END)  # the writer finishes what was inferred, then ends
            threads[1].join()
            threads[0].join(timeout=5)
        if errors:
            raise errors[0]
        if source_error is not None:
            raise source_error


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put unless stopped; False when the consumer asked to stop."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def plan_batch(batch: int | None, backend: Backend, source: Source | MultiSource, sequential: bool) -> int:
    """The batch size: `batch`, or by default one frame of each camera and stream per batch (as
    nvstreammux is set up), within what the model takes. Above an engine's maximum, say what that
    costs."""
    if batch is None:
        live = sum(1 for kind, _ in source.items if kind.live)
        batch = max(1, min(live, backend.max_batch))
    if isinstance(backend, OverlappedBackend) and batch > backend.max_batch and not sequential:
        log.warning("--batch %d is above the engine's maximum batch %d: each batch runs in pieces, "
                    "one at a time, which turns off the overlapped submit/collect (two batches in "
                    "flight) and the GPU letterbox; use --batch %d or build the engine for more",
                    batch, backend.max_batch, backend.max_batch)
    return batch
