"""`s2trt.Detector`: detection from Python code, on the pipeline s2infer runs.

The Detector opens its model as s2infer does (`runtime/model.py`), `det(...)` runs images through
`Runner` in the calling thread, and `det.stream(...)` drives s2infer's own run (`runtime/run.py`
`Session`: the same sources, reader threads, newest-frame policy, reconnects, batch planning and
end), one batch per step, so stopping the iteration stops the run. The options are checked where
s2infer's are (`runtime/request.py`), so errors are `S2Error`s with s2infer's one-line messages.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS
from s2trt.detect.letterbox import check_frame
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.runtime.backends.base import Backend
from s2trt.runtime.inputs.sources import Frame, Source, SourceKind, open_source
from s2trt.runtime.inputs.streams import MultiSource, SourceStats, open_frames
from s2trt.runtime.model import BackendOptions, ModelRef, open_model, parse_gpu_preprocess
from s2trt.runtime.pipeline import Runner
from s2trt.runtime.request import QUEUE_SIZE, InputOptions, check_count, requested_batch
from s2trt.runtime.results import Result
from s2trt.runtime.run import Session
from s2trt.runtime.stats import Stats
from s2trt.text import redact_credentials

log = logging.getLogger("s2trt.runtime")

PathLike = str | os.PathLike[str]
# What det() takes: a BGR frame, a batch of them (N, h, w, 3), a list of frames, or image paths.
Images = np.ndarray | Sequence[np.ndarray] | PathLike | Sequence[PathLike]
ARRAY_SOURCE = "array"  # the `source` of a frame handed over as an array


class Detector:
    """A YOLOv5-S2 detector: `Detector("model.engine" | "model.onnx" | "best.pt" |
    "triton://host:port[,host:port]", **options)`.

    The options are s2infer's, with underscores: `device` ("auto", "cpu", "cuda", "cuda:N"),
    `conf_thres`, `iou_thres`, `classes`, `agnostic_nms`, `max_det`, `batch` (frames per inference
    batch; default 1, 8 for Triton, one per camera or stream in `stream`), `plugin_lib`, `imgsz`
    (a checkpoint's input size, else checked against the model), `cfg`, `half`, `threads`,
    `triton_model`, `cuda_graphs`, `gpu_preprocess` ("auto", "on", "off"), `trust_engine_plugin`
    (s2infer's --trust-engine-plugin: an engine's plugin library that came with it, beside it with
    the SHA-256 its sidecar records, is loaded; it runs code, so only for an engine from a source
    you trust. False leaves it to $S2TRT_TRUST_ENGINE_PLUGIN, as s2infer does).

    Thread safety: one Detector runs one call at a time. Calls from several threads are safe and
    take turns (a lock); for parallel inference make one Detector per thread. While a `stream` is
    being iterated it holds the Detector: a `det(...)` from the thread iterating it is refused, one
    from another thread waits for the stream to end. Results are immutable and may be handed to any
    thread. Close the Detector (or use it in a `with` block) to release the model.
    """

    def __init__(self, model: PathLike, *, device: str = "auto", conf_thres: float = 0.25,
                 iou_thres: float = 0.45, classes: Iterable[int] | None = None, agnostic_nms: bool = False,
                 max_det: int = 300, batch: int | None = None, plugin_lib: PathLike | None = None,
                 imgsz: int | Sequence[int] | None = None, cfg: str | None = None, half: bool = False,
                 threads: int = 0, triton_model: str = "s2trt_detector", cuda_graphs: bool = True,
                 gpu_preprocess: str = "auto", trust_engine_plugin: bool = False):
        self.options = DetectOptions(conf_thres, iou_thres, None if classes is None else tuple(classes),
                                     agnostic_nms, max_det)
        check_count("--batch", batch)
        backend_options = BackendOptions(
            device=device, plugin_lib=None if plugin_lib is None else os.fspath(plugin_lib), imgsz=_hw(imgsz),
            cfg=cfg, half=half, threads=threads, triton_model=triton_model, cuda_graphs=cuda_graphs,
            gpu_preprocess=parse_gpu_preprocess(gpu_preprocess),
            trust_engine_plugin=bool(trust_engine_plugin))
        self.ref = ModelRef.parse(model)
        self._batch = batch
        self._lock = threading.Lock()
        self._streaming: int | None = None  # the thread iterating a stream, while one runs
        self._backend: Backend | None = open_model(self.ref, backend_options, self.options)

    # --- what the model is ---------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise S2Error("this Detector is closed")
        return self._backend

    @property
    def names(self) -> list[str]:
        """The model's class names, by class id."""
        return list(self.backend.meta.names)

    @property
    def imgsz(self) -> tuple[int, int]:
        """The network input (h, w)."""
        return self.backend.imgsz

    @property
    def batch(self) -> int:
        """Frames per inference batch in `det(...)`."""
        return requested_batch(self._batch, self.ref) or 1

    # --- images ---------------------------------------------------------------------------------

    def __call__(self, images: Images) -> list[Result]:
        """Detect on one BGR uint8 frame (h, w, 3), a batch (N, h, w, 3), a list of frames, or image
        paths (a file, folder or glob, or a list of them): one Result per image, in order. Videos,
        cameras and streams go through `stream()`. Unreadable files in a folder are skipped with a
        warning, as s2infer skips them."""
        frames, specs = _frames_or_specs(images)
        with self._turn():
            backend = self.backend
            out: list[Result] = []
            if frames is not None:
                runner = Runner(backend, frames, None, self.options, self.batch, pipelined=False,
                                results=out.append)
                runner.run()
                if len(out) != len(frames):  # a frame the letterbox could not take
                    raise S2Error(runner.problems[0].removesuffix(", skipped"))
                return out
            for spec in specs:
                source = open_source(spec)
                _refuse_videos(source)
                Runner(backend, source, None, self.options, self.batch, pipelined=len(source.items) > 1,
                       results=out.append).run()
            if not out:
                raise S2Error(f"no image could be read from {' '.join(map(redact_credentials, specs))}")
            return out

    # --- videos, cameras, streams ---------------------------------------------------------------

    def stream(self, sources: PathLike | int | Sequence[PathLike | int], *, vid_stride: int = 1,
               max_pixels: int = DEFAULT_MAX_PIXELS, stream_timeout: float = 10.0,
               reconnect_timeout: float = 60.0, decoder: str = "auto", push_timeout: float | None = None,
               queue_size: int = QUEUE_SIZE) -> Stream:
        """Results of videos, cameras (an int index) and streams (rtsp://, http://, ...), or a
        .streams file, as they come: s2infer's pipeline (several sources batched together, the
        newest frame of each live source, reconnects, drops counted in `Stream.sources`).

        The sources are opened here, so a missing file fails now; frames are read only while the
        Stream is iterated. Stop with `close()`, a `with` block or `break` (the generator is closed
        when it is collected): reader threads end and the batches already inferred are finished.
        The options are s2infer's of the same names."""
        specs = [str(s) if isinstance(s, int) else os.fspath(s) for s in _as_list(sources)]
        if not specs:
            raise S2Error("no source given")
        inputs = InputOptions(vid_stride, max_pixels, stream_timeout, reconnect_timeout, decoder,
                              push_timeout)
        inputs.check()
        check_count("--queue-size", queue_size)
        self.backend  # noqa: B018 - refuses a closed Detector before any source is opened
        return Stream(self, open_frames(specs, inputs), queue_size)

    # --- life -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the model (waiting for a call or stream running in another thread). Idempotent;
        a closed Detector refuses further calls."""
        with self._turn():
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._backend is None else self._backend.name
        return f"Detector({self.ref.where!r}, {state})"

    def _turn(self) -> threading.Lock:
        """The lock to hold for one call; refused in the thread that is iterating a stream, which
        holds it already."""
        if self._streaming == threading.get_ident():
            raise S2Error("this Detector is running a stream in this thread: finish or close the stream "
                          "first, or use a second Detector")
        return self._lock


class Stream:
    """The results of `Detector.stream(...)`, an iterator of Results in the order they are written.

    `stats` holds the run's per-stage timings, `sources` each source's counters (frames, dropped,
    reconnects, status) and `problems` what was skipped. Iterate it from one thread."""

    def __init__(self, detector: Detector, source: Source | MultiSource, queue_size: int):
        self._closed = False
        self.detector, self.source = detector, source
        self._queue_size = queue_size
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._session: Session | None = None
        self._gen: Iterator[Result] | None = None

    @property
    def stats(self) -> Stats:
        return self._session.stats if self._session is not None else Stats()

    @property
    def sources(self) -> list[SourceStats]:
        return list(self.source.stats.values()) if isinstance(self.source, MultiSource) else []

    @property
    def problems(self) -> list[str]:
        return list(self.source.problems)

    def __iter__(self) -> Iterator[Result]:
        return self

    def __next__(self) -> Result:
        if self._gen is None:
            if self._closed:
                raise StopIteration
            self._gen = self._run()
        return next(self._gen)

    def _run(self) -> Iterator[Result]:
        det = self.detector
        with det._turn():
            det._streaming = threading.get_ident()
            try:
                self._session = Session(det.backend, det.ref, self.source, det.options, det._batch,
                                        queue_size=self._queue_size, results=self._results.put)
                steps = self._session.steps()
                try:
                    for _ in steps:
                        yield from self._drain()
                finally:
                    steps.close()  # stopped early: stop the readers, finish what was inferred
                yield from self._drain()
            finally:
                det._streaming = None
                self._end()

    def _drain(self) -> Iterator[Result]:
        while True:
            try:
                yield self._results.get_nowait()
            except queue.Empty:
                return

    def _end(self) -> None:
        self._closed = True
        if isinstance(self.source, MultiSource):  # closed by its Session too, unless never iterated
            self.source.close()

    def close(self) -> None:
        """Stop: reader threads end, the batches already inferred are finished and dropped."""
        if self._gen is not None:
            self._gen.close()
        self._end()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            self.close()


def _as_list(x: Any) -> list[Any]:
    if isinstance(x, (str, int, os.PathLike)):
        return [x]
    return list(x)


def _hw(imgsz: int | Sequence[int] | None) -> tuple[int, int] | None:
    if imgsz is None:
        return None
    size = [imgsz] if isinstance(imgsz, int) else [int(v) for v in imgsz]
    if len(size) not in (1, 2) or min(size) < 1:
        raise S2Error(f"--imgsz {imgsz}: give h or (h, w), positive")
    return size[0], size[-1]


def _frames_or_specs(images: Images) -> tuple[list[Frame] | None, list[str]]:
    """Frames from arrays (checked here: a bad one fails the call), or the path specs to open."""
    if isinstance(images, np.ndarray):
        arrays = [images] if images.ndim == 3 else list(images) if images.ndim == 4 else [images]
    elif isinstance(images, (str, os.PathLike)):
        return None, [os.fspath(images)]
    elif isinstance(images, int):
        raise S2Error(f"camera {images}: cameras and streams go through Detector.stream()")
    else:
        items = list(images)
        if not items:
            raise S2Error("no image given")
        if all(isinstance(i, (str, os.PathLike)) for i in items):
            return None, [os.fspath(i) for i in items]
        arrays = items
    frames = []
    for i, a in enumerate(arrays):
        check_frame(a, i)
        frames.append(Frame(a, ARRAY_SOURCE, i, SourceKind.IMAGE))
    return frames, []


def _refuse_videos(source: Source) -> None:
    for kind, item in source.items:
        if kind != SourceKind.IMAGE:
            raise S2Error(f"{redact_credentials(item)} is a {kind}: videos, cameras and streams go through "
                          "Detector.stream(); det() takes images")

