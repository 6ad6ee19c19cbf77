"""Several sources in one run: `.streams` files, a reader per source, and the live-source policy.

Every source gets its own reader thread, and `MultiSource` interleaves them round-robin into one
iterator of frames, which the pipeline batches as it batches a single source: frames of all sources
share the engine's batch. Files and live sources are read differently on purpose:

- a file (image, folder, glob, video) fills a small bounded queue and waits while it is full, so no
  frame of a file is ever lost however slow inference is;
- a live source (camera index, rtsp/rtmp/http/udp/tcp/srt URL) keeps only its newest frame: when
  inference falls behind, the older frame is replaced and counted as dropped (reported per source,
  never silently). A stream that stalls (no frame for `read_timeout_s`) or closes is reopened with
  exponential backoff; one that gives no frame for `reconnect_timeout_s` ends alone while the other
  sources go on. One that connects but whose video cannot be decoded ends at once, saying so.

`MultiSource.batches` groups the frames as DeepStream's nvstreammux does: a batch is pushed when it
is full or a push timeout after its first frame (default: one frame interval of the fastest live
source), with at most one frame of each live source, so a fast camera never fills a slow one's
slots and a slow camera never holds a fast one's frames. Among several sources, one that cannot be
opened at the start (a missing path, an unreachable URL, a camera that is not there) is reported and
ended alone while the others run; the run fails only when none can be read.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS, check_frame_pixels
from s2trt.errors import S2Error
from s2trt.runtime.inputs.gst import resolve_decoder
from s2trt.runtime.inputs.sources import (
    MAX_PIXELS_HINT,
    Frame,
    Item,
    Source,
    SourceKind,
    _bgr,
    decoder_name,
    frame_pts,
    live_kind,
    open_capture,
    open_source,
)
from s2trt.runtime.outputs.sinks import output_name
from s2trt.runtime.request import InputOptions
from s2trt.runtime.stats import StageTimes
from s2trt.text import redact_credentials

log = logging.getLogger(__name__)

STREAMS_SUFFIX = ".streams"
FILE_QUEUE = 4  # decoded frames a file reader may hold ahead of inference (bounds memory)
_POLL_S = 0.1
DEFAULT_FPS = 25.0  # a live source's rate until it tells its own: the push timeout is one interval
MIN_PUSH_S, MAX_PUSH_S = 0.005, 1.0


@dataclass
class LiveOptions:
    """How live sources are read. The defaults suit cameras on a LAN; tests shorten them."""

    read_timeout_s: float = 10.0  # no frame for this long: the stream is stalled, reopen it
    reconnect_timeout_s: float = 60.0  # no frame for this long, reopening included: the source ends
    backoff_s: float = 0.5  # first wait before reopening, doubled after each failed try...
    max_backoff_s: float = 8.0  # ...up to this

    def check(self) -> None:
        if self.read_timeout_s <= 0 or self.reconnect_timeout_s <= 0:
            raise S2Error("--stream-timeout and --reconnect-timeout must be above 0 seconds")


class Capture(Protocol):
    """What a live reader needs of cv2.VideoCapture (tests give fakes with the same contract)."""

    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


Opener = Callable[[SourceKind, str, float], Capture]


@dataclass
class SourceStats:
    """One source's counters, shown in the end-of-run table (the images of a folder or glob share
    one row, named after it)."""

    source: str
    kind: SourceKind | None  # None: a source that could not be opened at all
    frames: int = 0  # given to inference (after the run: written, see MultiSource.close)
    dropped: int = 0  # read from a live source, then replaced by a newer frame before inference
    reconnects: int = 0  # times a lost live source came back
    status: str = "waiting"  # waiting | running | ended | skipped | lost | failed | undecodable | stopped
    started: float | None = None
    ended: float | None = None
    decoder: str = ""  # the decoder that read it: "opencv" or the GStreamer element (avdec_h264, ...)
    written: int = 0  # frames whose results were written (counted by MultiSource.result)
    latency: StageTimes = field(default_factory=StageTimes)  # capture to result, milliseconds

    def begin(self) -> None:
        if self.started is None:
            self.status, self.started = "running", time.monotonic()

    def end(self, status: str) -> None:
        if self.ended is None:
            self.status, self.ended = status, time.monotonic()

    @property
    def fps(self) -> float:
        if self.started is None:
            return 0.0
        span = (self.ended or time.monotonic()) - self.started
        return self.frames / span if span > 0 else 0.0

    def latency_ms(self) -> tuple[str, str]:
        """(p50, p95) of capture-to-result latency, formatted; "-" before any result."""
        if not self.latency.sample:
            return "-", "-"
        a = np.asarray(self.latency.sample)
        return f"{np.percentile(a, 50):.0f}", f"{np.percentile(a, 95):.0f}"


def format_table(stats: Sequence[SourceStats]) -> str:
    """One line per source; latency is from a frame's capture (read from the decoder) to its results
    written, p50/p95 over the frames written ("-" before any)."""
    names = [redact_credentials(s.source) for s in stats]
    width = max([len("source"), *map(len, names)])
    width = min(width, 60)
    dw = max([len("decoder"), *(len(s.decoder) for s in stats)])
    lines = [f"{'source':<{width}}{'frames':>8}{'FPS':>8}{'dropped':>9}{'reconnects':>12}"
             f"{'p50 ms':>9}{'p95 ms':>9}  {'decoder':<{dw}}  status"]
    for s, name in zip(stats, names, strict=True):
        name = name if len(name) <= width else "…" + name[-(width - 1):]
        p50, p95 = s.latency_ms()
        lines.append(f"{name:<{width}}{s.frames:>8}{s.fps:>8.1f}{s.dropped:>9}{s.reconnects:>12}"
                     f"{p50:>9}{p95:>9}  {s.decoder or '-':<{dw}}  {s.status}")
    return "\n".join(lines)


# --- what the command line names ---------------------------------------------------------------

def read_streams_file(path: str | Path) -> list[str]:
    """The sources a `.streams` file lists: one per line, as Ultralytics reads them. Blank lines and
    lines starting with '#' are skipped; a line is taken whole, so a path may hold spaces. Relative
    paths are relative to the working folder, as in Ultralytics."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise S2Error(f"{path}: no such .streams file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise S2Error(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    specs = [ln.strip() for ln in text.splitlines()]
    specs = [s for s in specs if s and not s.startswith("#")]
    if not specs:
        raise S2Error(f"{path} lists no sources (one file, camera index or URL per line)")
    nested = [s for s in specs if s.lower().endswith(STREAMS_SUFFIX)]
    if nested:
        raise S2Error(f"{path}: lists another .streams file ({nested[0]}); list the sources themselves")
    return specs


def expand_specs(specs: Sequence[str]) -> list[str]:
    """Positional sources with each `.streams` file replaced by the sources it lists."""
    out: list[str] = []
    for spec in specs:
        out += read_streams_file(spec) if spec.lower().endswith(STREAMS_SUFFIX) else [spec]
    seen: dict[str, str] = {}
    for spec in out:
        # Its frames could not be told apart in the outputs, which name a stream without its
        # credentials: the same stream with other credentials is the same source.
        shown = redact_credentials(spec)
        if shown in seen:
            hidden = " (the two differ only in what is hidden of them)" if seen[shown] != spec else ""
            raise S2Error(f"source {shown} is given twice{hidden}")
        seen[shown] = spec
    return out


def is_multi(specs: Sequence[str]) -> bool:
    """Whether these positional sources need the multi-source reader: several of them, a .streams
    file, or a live source (which gets the newest-frame policy even alone)."""
    return len(specs) > 1 or any(s.lower().endswith(STREAMS_SUFFIX) or live_kind(s) is not None
                                 for s in specs)


def open_frames(specs: Sequence[str], opts: InputOptions,
                report_s: float | None = None) -> Source | MultiSource:
    """The frames of the sources as a run reads them: one source on its own, several (or any camera
    or stream) through MultiSource's reader threads, newest-frame policy and reconnects; `report_s`:
    log the per-source table this often. A MultiSource must be closed when the run ends."""
    decoder = resolve_decoder(opts.decoder)
    if is_multi(specs):
        return MultiSource(specs, opts.vid_stride, opts.max_pixels,
                           LiveOptions(opts.stream_timeout, opts.reconnect_timeout), report_s=report_s,
                           decoder=decoder, push_timeout_s=opts.push_timeout,
                           decoder_auto=opts.decoder == "auto")
    return open_source(specs[0], opts.vid_stride, opts.max_pixels, decoder=decoder)


def output_names(items: Sequence[Item]) -> dict[str, str]:
    """Each source's file name in the run folder: named after the source, and when two sources would
    share a name (cam/a.mp4 and backup/a.mp4), the later ones get _2, _3, ... Compared without case,
    so the names also stay apart on a case-insensitive file system."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for kind, item in items:
        if item in names:
            continue
        base = output_name(kind, item)
        stem, dot, ext = base.rpartition(".")
        if not dot:
            stem, ext = base, ""
        name, n = base, 2
        while name.lower() in taken:
            name = f"{stem}_{n}.{ext}" if dot else f"{stem}_{n}"
            n += 1
        taken.add(name.lower())
        names[item] = name
    return names


# --- readers -----------------------------------------------------------------------------------

class _Reader:
    """A thread that reads one source; the consumer calls take() without blocking."""

    def __init__(self, wake: threading.Event, stop: threading.Event):
        self.wake, self.stop = wake, stop
        self.done = False  # set by the thread once it will give no more frames
        self.thread = threading.Thread(target=self._main, daemon=True, name=f"s2infer-{type(self).__name__}")

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        try:
            self._run()
        finally:
            self.done = True
            self.wake.set()

    def _run(self) -> None:
        raise NotImplementedError

    def take(self) -> Frame | None:
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """No frame is waiting and none will come."""
        raise NotImplementedError


class FileReader(_Reader):
    """Reads a file source (one or many images and videos) into a bounded queue: never drops."""

    def __init__(self, source: Source, stats: dict[str, SourceStats], key: dict[str, str],
                 wake: threading.Event, stop: threading.Event):
        super().__init__(wake, stop)
        self.source, self.stats, self.key = source, stats, key
        self.q: queue.Queue[Frame] = queue.Queue(FILE_QUEUE)
        self.current: str | None = None  # the stats row being read

    def _run(self) -> None:
        # One frame is held back until the next is read, so that a file's final frame goes out
        # marked `last` and its video can be finished while the other sources go on.
        pending: Frame | None = None
        try:
            for f in self.source:
                if pending is not None:
                    pending.last = f.source != pending.source
                    if not self._put(pending):
                        return
                pending = f
                if self.key[f.source] != self.current:  # a folder's next video: the last is read
                    self._end_current("ended")
                    self.current = self.key[f.source]
                    self.stats[self.current].begin()
                    self.stats[self.current].decoder = self.source.decoders.get(f.source, "")
            if pending is not None:
                pending.last = True
                if not self._put(pending):
                    return
            self._end_current("ended")
            for _, item in self.source.items:  # unreadable: reported with the problems
                self.stats[self.key[item]].end("skipped")
        except Exception as e:  # this source alone fails (a decoder error too); the others go on
            msg = str(e) if isinstance(e, S2Error) else (f"{self.current or self.source.items[0][1]}: "
                                                         f"{type(e).__name__}: {e}")
            self.source.problems.append(f"{msg}, this source ended")
            log.warning("%s, this source ended", msg)
            if pending is not None:  # read before the error: it still gets its results
                pending.last = True
                self._put(pending)
            self._end_current("failed")

    def _put(self, f: Frame) -> bool:
        """Queue a frame, waiting while the queue is full; False if the run stopped meanwhile."""
        while True:
            try:
                self.q.put(f, timeout=_POLL_S)
                self.wake.set()
                return True
            except queue.Full:
                if self.stop.is_set():
                    self._end_current("stopped")
                    return False

    def _end_current(self, status: str) -> None:
        if self.current is None and status == "failed":  # failed before its first frame
            self.current = self.key[self.source.items[0][1]]
        if self.current is not None:
            self.stats[self.current].end(status)

    def take(self) -> Frame | None:
        try:
            return self.q.get_nowait()
        except queue.Empty:
            return None

    @property
    def finished(self) -> bool:
        return self.done and self.q.empty()


class LiveReader(_Reader):
    """Reads a camera or network stream, keeping only the newest frame (older ones are counted as
    dropped), and reopens it with backoff when it stalls or closes."""

    def __init__(self, kind: SourceKind, item: str, st: SourceStats, opts: LiveOptions, problems: list[str],
                 wake: threading.Event, stop: threading.Event, vid_stride: int = 1,
                 max_pixels: int = DEFAULT_MAX_PIXELS, opener: Opener = open_capture, alone: bool = False):
        super().__init__(wake, stop)
        self.kind, self.item, self.st, self.opts, self.alone = kind, item, st, opts, alone
        self.shown = redact_credentials(item)  # in messages: the URL without its credentials
        self.problems, self.vid_stride, self.max_pixels, self.opener = (problems, vid_stride,
                                                                         max_pixels, opener)
        self.lock = threading.Lock()
        self.slot: Frame | None = None
        self.read = 0  # frames read from the source so far, over every connection
        self.index = 0  # the number the next kept frame gets (dropped ones leave gaps in the JSONL)
        self.first_error: S2Error | None = None  # why the first open failed, if it did
        self.lost = False  # the connection gave frames, then went: the next frame is a reconnect
        self.fps = 0.0  # the rate of the frames kept, once the stream tells it
        self.connections = 0

    def _run(self) -> None:
        self.st.begin()
        last_frame = time.monotonic()
        delay = self.opts.backoff_s
        opened = False  # once opened, a failure to reopen is a drop to ride out, not a wrong address
        why = ""
        while not self.stop.is_set():
            try:
                cap = self.opener(self.kind, self.item, self.opts.read_timeout_s)
            except S2Error as e:
                # The first open: a wrong URL or camera index is said at once. A stream whose video
                # cannot be decoded (the decoder said so) will not decode on the next try either.
                undecodable = "cannot be decoded" in str(e)
                if not opened or undecodable:
                    status = "undecodable" if undecodable else "failed"
                    self.first_error = e if not opened else None
                    if self.alone and not opened:  # the run's error says it, once
                        self.st.end(status)
                    else:
                        self._fail(str(e), status)
                    return
                why = f"reopening failed: {e}"
            else:
                opened = True
                self.connections += 1
                self.st.decoder = decoder_name(cap)
                try:
                    got = self._read(cap)
                finally:
                    cap.release()
                if got < 0 or self.stop.is_set():
                    return
                if got:
                    self.lost = True
                    last_frame, delay = time.monotonic(), self.opts.backoff_s
                why = "the stream stalled or closed"
            waited = time.monotonic() - last_frame
            if waited >= self.opts.reconnect_timeout_s:
                if opened and self.index == 0:  # it answers, but not one frame ever came out
                    self._fail(f"{self.shown}: connects ({self.connections} time(s)), but no frame "
                               f"could be decoded in {waited:.0f} s: a codec this decoder cannot read? "
                               "(--decoder sw says GStreamer's reason)", status="undecodable")
                    return
                self._fail(f"{self.shown}: no frame for {waited:.0f} s ({why}), gave up after "
                           f"{self.st.reconnects} reconnect(s)", status="lost")
                return
            wait = min(delay, self.opts.reconnect_timeout_s - waited)  # a last try at the deadline
            log.warning("%s: %s; reconnecting in %.1f s", self.shown, why, wait)
            if self.stop.wait(wait):
                break
            delay = min(delay * 2, self.opts.max_backoff_s)
        self.st.end("stopped")

    def _read(self, cap: Capture) -> int:
        """Read until the stream stalls, closes or the run stops; the frames kept, -1 if refused."""
        fps = (cap.get(cv2.CAP_PROP_FPS) or 0.0) / self.vid_stride
        if fps > 1000:  # FFmpeg reports a stream's timebase, not its rate, when it cannot tell
            fps = 0.0
        self.fps = fps
        kept = 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            if not cap.grab():
                break
            self.read += 1
            if (self.read - 1) % self.vid_stride:
                continue
            ok, img = cap.retrieve()
            if not ok or img is None or img.size == 0:
                continue
            h, w = img.shape[:2]
            try:
                check_frame_pixels(w, h, self.max_pixels, self.shown, MAX_PIXELS_HINT)
            except S2Error as e:
                self._fail(str(e))
                return -1
            if self.lost:
                self.lost = False
                self.st.reconnects += 1
                log.warning("%s: reconnected", self.shown)
            frame = Frame(_bgr(img), self.item, self.index, self.kind, fps, time.perf_counter() - t0,
                          pts=frame_pts(cap))
            self.index += 1
            kept += 1
            with self.lock:
                if self.slot is not None:
                    self.st.dropped += 1
                self.slot = frame
            self.wake.set()
        return kept

    def _fail(self, msg: str, status: str = "failed") -> None:
        self.problems.append(f"{msg}, this source ended")
        log.warning("%s, this source ended", msg)
        self.st.end(status)  # the table stays one line per source; the message is in the problems

    def take(self) -> Frame | None:
        with self.lock:
            f, self.slot = self.slot, None
        return f

    @property
    def finished(self) -> bool:
        return self.done and self.slot is None


# --- the scheduler -----------------------------------------------------------------------------

class MultiSource:
    """Frames of several sources, interleaved one per source per round; iterated like a Source.

    Has the attributes the pipeline and s2infer read from a Source: `items` (every input, for the
    output names and the overwrite checks), `problems` and `total` (None as soon as one source is
    live)."""

    def __init__(self, specs: Sequence[str], vid_stride: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS,
                 live: LiveOptions | None = None, report_s: float | None = None,
                 opener: Opener | None = None, decoder: str = "opencv",
                 push_timeout_s: float | None = None, decoder_auto: bool = False):
        self.live = live or LiveOptions()
        self.live.check()
        self.vid_stride, self.max_pixels, self.report_s = vid_stride, max_pixels, report_s
        self.decoder, self.push_timeout_s = decoder, push_timeout_s
        self.opener = opener or partial(open_capture, decoder=decoder, auto=decoder_auto)
        self.problems: list[str] = []
        self.lanes: list[Source | Item] = []  # a file source, or a camera's or stream's item
        self.items: list[Item] = []
        self.stats: dict[str, SourceStats] = {}
        self._key: dict[str, str] = {}  # each input -> its row in stats
        self._rng = random.Random(0)
        self._results = False  # result() was called: the table counts frames written
        expanded = expand_specs(specs)
        missing: list[S2Error] = []
        for spec in expanded:
            # Files are checked before the model loads; a video that cannot be opened among other
            # sources is left to its reader, which reports it and ends that source alone.
            try:
                src = open_source(spec, vid_stride, max_pixels, alone=len(expanded) == 1, decoder=decoder)
            except S2Error as e:
                # Among several: a path that is not there is one source that cannot be opened, as
                # an unreachable URL is: reported, and the others run (README "Several sources").
                if len(expanded) == 1:
                    raise
                missing.append(e)
                self.problems.append(f"{e}, this source ended")
                log.warning("%s, this source ended", e)
                self.stats[spec] = SourceStats(spec, None)
                self.stats[spec].end("failed")
                continue
            if src.items[0][0].live:
                self.lanes.append(src.items[0])
            else:
                src.problems = self.problems  # one list for the run's report
                self.lanes.append(src)
            self.items += src.items
            # One row per video, camera and stream; the images of one argument share its row. Made
            # here, before the reader threads start, so that the dict never changes while read.
            for k, item in src.items:
                self._key[item] = spec if k == SourceKind.IMAGE else item
                self.stats.setdefault(self._key[item], SourceStats(self._key[item], k))
        if len(missing) == len(expanded):
            raise missing[0]
        dup = _first_duplicate(item for _, item in self.items)
        if dup is not None:  # a folder and a file in it, say: their frames could not be told apart
            raise S2Error(f"{redact_credentials(dup)} is given twice (directly and through a folder, glob "
                          "or .streams)")
        totals = [lane.total for lane in self.lanes if isinstance(lane, Source)]
        live = any(not isinstance(lane, Source) for lane in self.lanes)
        self.total = None if live or None in totals else sum(totals)
        self._stop = threading.Event()
        self._readers: list[_Reader] = []

    def _make_readers(self, wake: threading.Event) -> list[_Reader]:
        readers: list[_Reader] = []
        for lane in self.lanes:
            if isinstance(lane, Source):
                readers.append(FileReader(lane, self.stats, self._key, wake, self._stop))
            else:
                kind, item = lane
                readers.append(LiveReader(kind, item, self.stats[item], self.live, self.problems, wake,
                                          self._stop, self.vid_stride, self.max_pixels, self.opener,
                                          alone=len(self.lanes) == 1))
        return readers

    def __iter__(self) -> Iterator[Frame]:
        """The frames one by one, one per source per round."""
        for batch in self.batches(1):
            yield from batch

    def push_timeout(self) -> float:
        """The default push timeout: one frame interval of the fastest live source (as nvstreammux's
        batched-push-timeout is set), 1/25 s until the sources tell their rates."""
        rates = [r.fps for r in self._readers if isinstance(r, LiveReader) and r.fps > 0]
        return min(max(1.0 / max(rates, default=DEFAULT_FPS), MIN_PUSH_S), MAX_PUSH_S)

    def batches(self, size: int, push_timeout_s: float | None = None) -> Iterator[list[Frame]]:
        """The frames in batches of up to `size`, as nvstreammux forms them: a batch is pushed when
        full, or when `push_timeout_s` (default: the one this MultiSource was made with, else
        push_timeout()) has passed since its first frame, or
        when no source can add to it (every live source has its frame in it and no file has one
        waiting). At most one frame of each live source per batch; a file adds one frame per round
        while there is room. Sources are scanned round-robin. Without live sources a batch waits
        until it is full, so files are batched exactly as a single source's frames are."""
        if self._readers:
            raise RuntimeError("a MultiSource is iterated once")
        size = max(size, 1)
        wake = threading.Event()
        self._readers = self._make_readers(wake)
        for r in self._readers:
            r.start()
        active = list(self._readers)
        any_live = any(isinstance(r, LiveReader) for r in active)
        next_report = time.monotonic() + (self.report_s or 0)
        delivered = 0
        group: list[Frame] = []
        in_group: set[int] = set()  # the live readers that have a frame in the group
        deadline = 0.0
        try:
            while active:
                wake.clear()  # before the scan: a frame that lands during it wakes the wait below
                took = False
                for r in list(active):
                    if id(r) in in_group:
                        continue
                    f = r.take()
                    if f is None:
                        if r.finished:
                            active.remove(r)
                        continue
                    took = True
                    delivered += 1
                    self.stats[self._key[f.source]].frames += 1
                    if not group:
                        timeout = push_timeout_s or self.push_timeout_s or self.push_timeout()
                        deadline = time.monotonic() + timeout
                    group.append(f)
                    if isinstance(r, LiveReader):
                        in_group.add(id(r))
                    if len(group) == size:
                        yield group
                        group, in_group = [], set()
                if self.report_s and time.monotonic() >= next_report:
                    next_report = time.monotonic() + self.report_s
                    log.info("per source so far:\n%s", self.table())
                if group and (not active or (any_live and (time.monotonic() >= deadline
                                                            or self._nothing_can_join(active, in_group)))):
                    yield group
                    group, in_group = [], set()
                    continue
                if not took and active:
                    wait = _POLL_S if not (group and any_live) else min(_POLL_S, deadline - time.monotonic())
                    wake.wait(max(wait, 0.0))
            if group:
                yield group
        finally:
            self._shutdown()
        errors = [r.first_error for r in self._readers if isinstance(r, LiveReader) and r.first_error]
        if not delivered and errors and len(errors) == len(self._readers):
            raise errors[0]  # nothing could be opened at all: fail as a single source would

    @staticmethod
    def _nothing_can_join(active: list[_Reader], in_group: set[int]) -> bool:
        """Every live source has given its frame to the batch and no file has one waiting."""
        for r in active:
            if isinstance(r, LiveReader):
                if id(r) not in in_group:
                    return False
            elif not r.q.empty():  # type: ignore[attr-defined]
                return False
        return True

    def result(self, frame: Frame) -> None:
        """The frame's results were written: count it and its capture-to-result latency."""
        st = self.stats[self._key[frame.source]]
        st.written += 1
        st.latency.add((time.monotonic() - frame.captured) * 1000, self._rng)
        self._results = True

    def close(self) -> None:
        """Stop every reader and settle the counts: once results were reported (result()), a
        source's frames are those written."""
        self._shutdown()
        for st in self.stats.values():
            if self._results and st.frames > st.written:
                # Taken from the source but never written (an interrupt, a failed batch): not
                # counted as frames; a live source's count as dropped, so that frames plus dropped
                # is still every frame read.
                if st.kind is not None and st.kind.live:
                    st.dropped += st.frames - st.written
                st.frames = st.written

    def _shutdown(self) -> None:
        """Stop every reader (a live one stuck in a read returns within its read timeout; the
        threads are daemons, so the process never waits on them)."""
        self._stop.set()
        for r in self._readers:
            if r.thread.is_alive():
                r.thread.join(timeout=_POLL_S * 5)
        for st in self.stats.values():
            st.end("stopped")

    def table(self) -> str:
        return format_table(list(self.stats.values()))


def _first_duplicate(items: Iterator[str]) -> str | None:
    seen: set[str] = set()
    for item in items:
        # Spelled apart but the same path (./a.mp4, a.mp4): the same outputs. Links are not followed:
        # two names for one file are two sources, told apart by name.
        key = os.path.abspath(item) if live_kind(item) is None else item
        if key in seen:
            return item
        seen.add(key)
    return None
