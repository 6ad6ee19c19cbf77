"""A run's life: the sources opened, the outputs planned and checked, the model opened, the pipeline
run, everything closed, the summary. s2infer's whole run is `run(RunRequest)`; `Session` is the part
s2infer and `Detector.stream()` share, from the planned batch to the end that stops the sources'
readers and finishes the outputs, so the two start, stop and publish alike.

The heavy modules (OpenCV, NumPy, the backends) are imported by the functions that need them:
`run` limits OpenCV's decoders before anything imports cv2, and s2infer imports this module to parse.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from s2trt.cli import sigterm_as_interrupt
from s2trt.detect.image_limits import limit_decoder_pixels
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.runtime.model import ModelRef
from s2trt.runtime.request import QUEUE_SIZE, RunRequest, requested_batch

if TYPE_CHECKING:
    from s2trt.runtime.backends.base import Backend
    from s2trt.runtime.inputs.sources import Item, Source
    from s2trt.runtime.inputs.streams import MultiSource
    from s2trt.runtime.outputs.sinks import Sinks
    from s2trt.runtime.pipeline import Runner
    from s2trt.runtime.results import Result
    from s2trt.runtime.stats import Stats

log = logging.getLogger("s2trt.runtime")

REPORT_S = 10.0  # verbose: the per-source table this often while sources are live


class Session:
    """A model's run over open sources: the batch planned (`batch`: as asked, Triton's default, else
    one frame of each camera and stream), the pipeline, and the end. Driven to the end by `run`, or a
    step at a time by `steps` (closing it early stops the run: the batches already inferred are
    written). At the end a MultiSource's readers are stopped and the sinks, if any, finished:
    published when every frame before the end has its results (`finished`), discarded otherwise."""

    def __init__(self, backend: Backend, model: ModelRef, source: Source | MultiSource, detect: DetectOptions,
                 batch: int | None = None, *, sinks: Sinks | None = None, sequential: bool = False,
                 queue_size: int = QUEUE_SIZE, results: Callable[[Result], None] | None = None):
        from s2trt.runtime.pipeline import plan_batch

        self.backend, self.source, self.sinks, self.detect = backend, source, sinks, detect
        self.sequential, self.queue_size, self.results = sequential, queue_size, results
        self.batch = plan_batch(requested_batch(batch, model), backend, source, sequential)
        self.runner: Runner | None = None
        self.finished = False  # ran to the end, or stopped where every frame before has its results

    @property
    def stats(self) -> Stats:
        from s2trt.runtime.stats import Stats

        return self.runner.stats if self.runner is not None else Stats()

    def run(self, on_frames: Callable[[int], None] | None = None) -> Stats:
        steps = self.steps(on_frames)
        try:
            for _ in steps:
                pass
        finally:
            steps.close()  # interrupted between two steps: the run still ends here, not when collected
        return self.stats

    def steps(self, on_frames: Callable[[int], None] | None = None) -> Iterator[None]:
        """The run, one batch at a time; `on_frames(n)` after each n frames' results are written."""
        from s2trt.runtime.pipeline import Runner

        self.runner = Runner(self.backend, self.source, self.sinks, self.detect, self.batch,
                             not self.sequential, self.queue_size, on_frames, self.results)
        try:
            yield from self.runner.steps()
            self.finished = True
        except (KeyboardInterrupt, GeneratorExit):  # stopped: the batches inferred were written
            self.finished = True
            raise
        except S2Error as e:  # e.g. every Triton server gone: the frames before it all have results
            self.finished = getattr(e, "outputs_complete", False)
            raise
        finally:
            self.close()

    def close(self) -> None:
        from s2trt.runtime.inputs.streams import MultiSource

        if isinstance(self.source, MultiSource):
            self.source.close()  # its reader threads, before the outputs are finished
        if self.sinks is not None:
            try:
                self.sinks.close(publish=self.finished)  # a failed run publishes nothing half-written
            except BaseException:
                self.finished = False
                raise


def run(req: RunRequest) -> int:
    """s2infer's run: 0 when done (unreadable files and frames skipped and reported). Raises S2Error
    when nothing could be done or an output could not be written, KeyboardInterrupt (Terminated for
    SIGTERM and SIGHUP) when stopped, the outputs so far complete."""
    limit_decoder_pixels(req.inputs.max_pixels)  # before anything imports cv2: OpenCV reads it once
    with sigterm_as_interrupt():
        return _run(req)


def _run(req: RunRequest) -> int:
    from tqdm import tqdm

    from s2trt.runtime.backends.base import OverlappedBackend
    from s2trt.runtime.inputs.streams import MultiSource, open_frames
    from s2trt.runtime.model import open_model
    from s2trt.runtime.outputs.plan import check_outputs, open_sinks, plan_outputs
    from s2trt.text import redact_credentials

    _quiet_opencv(req.verbose)
    source = open_frames(req.sources, req.inputs, REPORT_S if req.verbose else None)
    multi = isinstance(source, MultiSource)
    plan = plan_outputs(req.outputs, source.items)
    check_outputs(req.outputs, plan, source.items, read_files(req, source.items))
    backend = open_model(req.model, req.backend, req.detect)
    try:
        names = backend.meta.names
        session = Session(backend, req.model, source, req.detect, req.batch,
                          sinks=open_sinks(req.outputs, plan, names, concurrent=multi),
                          sequential=req.sequential, queue_size=req.queue_size)
        h, w = backend.imgsz
        log.info("s2infer: %s, input %dx%d, batch %d, %d classes, %s, decoder %s", backend.name, h, w,
                 session.batch, len(names), "sequential" if req.sequential else "pipelined", source.decoder)
        bar = tqdm(total=source.total, unit="frame", desc="s2infer", disable=req.quiet or None,
                   dynamic_ncols=True, leave=False)
        try:
            stats = session.run(bar.update)
        finally:
            bar.close()
            if session.finished and session.sinks is not None and session.runner is not None:
                if multi:
                    log.info("per source:\n%s", source.table())
                _report(session.stats, source.problems + session.sinks.problems, session.sinks.saved,
                        req.detect.conf_thres)
                if isinstance(backend, OverlappedBackend):
                    log.debug("%s; letterbox on the %s; batches %s", backend.enqueue_summary(),
                              "GPU" if session.runner.gpu_letterbox else "CPU",
                              "overlapped" if session.runner.overlap else "one at a time")
    finally:
        backend.close()
    if stats.frames == 0:
        raise S2Error(f"no frame could be read from {' '.join(map(redact_credentials, req.sources))}")
    return 0


def read_files(req: RunRequest, items: Sequence[Item]) -> list[tuple[Path, str]]:
    """Every file the run reads, with what it is to the run: no output may replace one."""
    from s2trt.meta import sidecar_path
    from s2trt.runtime.inputs.streams import STREAMS_SUFFIX

    files = [(Path(p), "the input") for kind, p in items if not kind.live]
    files += [(Path(s), "the source list") for s in req.sources if s.endswith(STREAMS_SUFFIX)]
    if req.model.kind != "triton":
        model = Path(req.model.where)
        files += [(model, "the model"), (sidecar_path(model), "the model's sidecar")]
    backend = req.backend
    for extra, what in ((backend.plugin_lib, "the plugin library"), (backend.cfg, "the model config")):
        if extra and Path(extra).is_file():
            files.append((Path(extra), what))
    return files


def _quiet_opencv(verbose: bool) -> None:
    """Our one line says what went wrong; FFmpeg's and OpenCV's own logging would say it again."""
    if verbose:
        return
    # Read by OpenCV's FFmpeg backend when it is first used; -8 is AV_LOG_QUIET.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _report(stats: Stats, problems: list[str], saved: list[Path], conf_thres: float) -> None:
    log.info("%s", stats.summary())
    if stats.frames and not stats.detections:
        log.warning("no detections in %d frame(s) above --conf-thres %g", stats.frames, conf_thres)
    if problems:
        log.warning("%d problem(s):\n  %s", len(problems), "\n  ".join(problems[:20]))
    if saved:
        folders = sorted({str(p.parent) for p in saved})
        log.info("results saved to %s", ", ".join(folders))
