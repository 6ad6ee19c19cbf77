"""Where frames come from: images, folders and globs, video files, cameras, RTSP/HTTP streams.

A source yields Frame objects in order. Frames it cannot read are skipped and recorded in `problems`
(reported in the summary); a source from which nothing at all can be opened raises S2Error.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS, check_frame_pixels
from s2trt.detect.image_read import check_gif_video, read_image
from s2trt.detect.media import IMAGE_EXTS, VIDEO_EXTS
from s2trt.detect.opencv_safe import opencv_path
from s2trt.errors import S2Error
from s2trt.text import redact_credentials

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtspt://", "rtspu://", "rtmp://", "rtmps://", "srt://", "http://",
                  "https://", "udp://", "tcp://")
# GStreamer's own schemes: RTSP over TCP only / UDP only. FFmpeg has no such URL: it needs the
# GStreamer path.
GST_ONLY_SCHEMES = ("rtspt://", "rtspu://")
STREAM_TIMEOUT_MS = 10000
MAX_PIXELS_HINT = "raise it with --max-pixels"
MAX_READ_FAILURES = 30  # consecutive undecodable frames before a video is given up as truncated


class SourceKind(str, Enum):
    """What an input is. A str, so that a kind prints, formats and serializes as its word on every
    Python version (JSON Lines, the per-source table) and compares equal to it."""

    IMAGE = "image"
    VIDEO = "video"
    CAMERA = "camera"
    STREAM = "stream"

    def __str__(self) -> str:  # a mixed-in Enum's own is "SourceKind.IMAGE", which 3.12's format() follows
        return self.value

    @property
    def live(self) -> bool:
        """A camera or stream: read newest frame first, reconnected, its frames stamped with the
        wall clock."""
        return self in (SourceKind.CAMERA, SourceKind.STREAM)


Item = tuple[SourceKind, str]  # one input: its kind, and its path, camera index or URL


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8 (h, w, 3)
    source: str  # the file, camera or URL it came from
    index: int  # frame number within that source (0 for an image)
    kind: SourceKind
    fps: float = 0.0
    decode_s: float = 0.0  # time spent reading and decoding it
    last: bool = False  # known to be its source's final frame: that source's outputs can be finished
    pts: float | None = None  # its timestamp in the stream or video, seconds, where the decoder tells
    wall: float = field(default_factory=time.time)  # when it was read (Unix time)
    captured: float = field(default_factory=time.monotonic)  # the same, on the monotonic clock


@dataclass
class Source:
    """An ordered list of inputs, iterated as frames."""

    items: list[Item]
    vid_stride: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images and video frames are refused undecoded
    problems: list[str] = field(default_factory=list)
    total: int | None = None  # frames expected, when every item can tell
    decoder: str = "opencv"  # "opencv", or "sw" / "nv": GStreamer's software or NVIDIA decoders
    decoders: dict[str, str] = field(default_factory=dict)  # each video -> the decoder that read it

    def __iter__(self) -> Iterator[Frame]:
        for kind, item in self.items:
            if kind == SourceKind.IMAGE:
                yield from self._image(item)
            else:
                yield from self._video(kind, item)

    def _image(self, path: str) -> Iterator[Frame]:
        t0 = time.perf_counter()
        try:  # size on disk, format and header checked before it is read whole and decoded
            img = read_image(path, self.max_pixels, MAX_PIXELS_HINT)
        except S2Error as e:
            self._bad(e)
            return
        yield Frame(img, path, 0, SourceKind.IMAGE, decode_s=time.perf_counter() - t0)

    def _bad(self, e: S2Error) -> None:
        """One input that cannot be used: the run's only input fails it, else it is skipped."""
        if len(self.items) == 1:
            raise e
        self.problems.append(f"{e}, skipped")  # one bad file in a folder does not stop the rest
        log.warning("%s, skipped", e)

    def _video(self, kind: SourceKind, item: str) -> Iterator[Frame]:
        try:
            if kind == SourceKind.VIDEO and Path(item).suffix.lower() == ".gif":  # decoded by an image codec
                check_gif_video(item, self.max_pixels, MAX_PIXELS_HINT)
            cap = open_capture(kind, item, decoder=self.decoder)
            _check_frame_size(cap, item, self.max_pixels)
            self.decoders[item] = decoder_name(cap)
        except S2Error as e:
            self._bad(e)
            return
        except OSError as e:
            self._bad(S2Error(f"{item}: cannot read: {e.strerror or e}"))
            return
        try:
            fps = (cap.get(cv2.CAP_PROP_FPS) or 0.0) / self.vid_stride  # the rate of the frames we keep
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == SourceKind.VIDEO else 0
            if kind == SourceKind.VIDEO and not isinstance(cap, cv2.VideoCapture):
                count = _frame_count(item)  # the container's count, to tell a truncated video
            index, read, failed = 0, 0, []
            while True:
                t0 = time.perf_counter()
                if not cap.grab():
                    # Past a bad frame the decoder may recover: retry while the container says
                    # frames remain, and report the gap only if a later frame decodes.
                    if kind != SourceKind.VIDEO or index >= count or len(failed) >= MAX_READ_FAILURES:
                        break
                    failed.append(index)
                    index += 1
                    continue
                for bad in failed:
                    self._skip(item, bad)
                failed = []
                if index % self.vid_stride == 0:
                    ok, img = cap.retrieve()
                    if ok and img is not None and img.size > 0:
                        read += 1
                        yield Frame(_bgr(img), item, index, kind, fps, time.perf_counter() - t0,
                                    pts=frame_pts(cap))
                    else:
                        self._skip(item, index)
                index += 1
            decoded_to = index - len(failed)
            if kind == SourceKind.VIDEO and read == 0:
                self.problems.append(f"{item}: no frame could be decoded (corrupt or not a video)")
                log.warning("%s: no frame could be decoded", item)
            elif kind == SourceKind.VIDEO and 0 < decoded_to < count:
                self.problems.append(f"{item}: the video ends at frame {decoded_to} of {count} "
                                     "(truncated?)")
                log.warning("%s: the video ends at frame %d of %d (truncated?)", item, decoded_to, count)
            elif (why := getattr(cap, "stopped_by_error", lambda: None)()) is not None:
                self.problems.append(f"{why} (at frame {index}); the frames before it have their results")
                log.warning("%s (at frame %d)", why, index)
        finally:
            cap.release()

    def _skip(self, item: str, index: int) -> None:
        self.problems.append(f"{item}: frame {index} could not be decoded, skipped")
        log.warning("%s: frame %d could not be decoded, skipped", item, index)


def _bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def frame_pts(cap) -> float | None:
    """The timestamp of the frame just grabbed, seconds: GStreamer's stream time, or the position
    FFmpeg reports (which stays 0 where it cannot tell, as for some live streams)."""
    if isinstance(cap, cv2.VideoCapture):
        ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1000 if ms >= 0 else None
    return getattr(cap, "pts", None)


def decoder_name(cap) -> str:
    """Which decoder reads the capture, as the per-source table shows it."""
    if isinstance(cap, cv2.VideoCapture):
        return "opencv"
    return getattr(cap, "decoder", None) or "gstreamer"


def _check_frame_size(cap: cv2.VideoCapture, item: str, max_pixels: int) -> None:
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        check_frame_pixels(w, h, max_pixels, item, MAX_PIXELS_HINT)
    except S2Error:
        cap.release()
        raise


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(item: str, message: str) -> None:
    """A warning said once per source, not again at each of its reconnects (each reopens it)."""
    with _warned_lock:
        if item in _warned:
            return
        _warned.add(item)
    log.warning("%s", message)


def _url_can_be_hidden(item: str, shown: str) -> bool:
    """Whether core/argv_secret's library, which keeps the URL off gst-launch-1.0's command line, can
    be built here (not without a compiler, with one that cannot build, or with a $CC that is not
    there); if not, says once for this source that OpenCV reads it instead."""
    from s2trt import argv_secret

    try:
        argv_secret.process_library("the URL")
    except S2Error as e:
        _warn_once(item, f"{shown}: OpenCV reads it, as gst-launch-1.0 cannot be given it off its "
                         f"command line: {e}")
        return False
    return True


def open_capture(kind: SourceKind, item: str, timeout_s: float = STREAM_TIMEOUT_MS / 1000,
                 decoder: str = "opencv", auto: bool = False) -> cv2.VideoCapture:
    """Open a video, camera or network stream with OpenCV's FFmpeg, or (decoder "sw" / "nv") with
    GStreamer (runtime/inputs/gst.py). A stream's open and each read give up after timeout_s, so an
    unreachable host fails fast and a stalled stream returns from grab(). `auto`: the user did not
    ask for GStreamer (--decoder auto), so a URL that GStreamer's child could not keep off its command
    line (core/argv_secret's library cannot be built here) is read by OpenCV instead, with one
    warning per source."""
    if decoder != "opencv" and kind != SourceKind.CAMERA:
        from s2trt.runtime.inputs.gst import GstCapture, hides_url

        shown = redact_credentials(item)
        may_fall_back = auto and hides_url(kind, item) and not item.lower().startswith(GST_ONLY_SCHEMES)
        if not may_fall_back or _url_can_be_hidden(item, shown):
            return GstCapture(kind, item, decoder, timeout_s, shown)
    if item.lower().startswith(GST_ONLY_SCHEMES):
        raise S2Error(f"{redact_credentials(item)}: {item.split(':', 1)[0]}:// is GStreamer's scheme: "
                      "read it with --decoder sw (or nv), or give rtsp:// to OpenCV")
    if kind == SourceKind.CAMERA:
        cap = cv2.VideoCapture(int(item))
        if not cap.isOpened():
            raise S2Error(f"camera {item} could not be opened (is it connected, not used by another "
                          "program, and is the index right?)")
        return cap
    if kind == SourceKind.STREAM:  # an unreachable host must not hang the run: FFmpeg waits 30 s+ otherwise
        ms = max(int(timeout_s * 1000), 1)
        cap = cv2.VideoCapture(item, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        with opencv_path(item) as name:  # a file name that is not UTF-8 would crash OpenCV
            cap = cv2.VideoCapture(name)
    if not cap.isOpened():
        what = "stream" if kind == SourceKind.STREAM else "video"
        raise S2Error(f"cannot open {what} {redact_credentials(item)} (unreachable, unsupported codec or "
                      "not a video)")
    return cap


def live_kind(spec: str) -> SourceKind | None:
    """CAMERA for a camera index, STREAM for a stream URL, None for a file, folder or glob."""
    if re.fullmatch(r"\d+", spec):
        return SourceKind.CAMERA
    if spec.lower().startswith(STREAM_SCHEMES):
        return SourceKind.STREAM
    return None


def open_source(spec: str, vid_stride: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS,
                alone: bool = True, decoder: str = "opencv") -> Source:
    """Parse a source argument the way YOLOv5's detect.py does. `alone`: the run's only source, so a
    lone video that cannot be opened fails here; among others it fails alone when it is read."""
    if vid_stride < 1:
        raise S2Error("--vid-stride must be 1 or more")
    live = live_kind(spec)
    if live is not None:
        return Source([(live, spec)], vid_stride, max_pixels, decoder=decoder)
    if any(c in spec for c in "*?["):
        files = _each_file_once(sorted(glob.glob(spec, recursive=True)))
        if not files:
            raise S2Error(f"no files match {redact_credentials(spec)}")
    elif Path(spec).is_dir():
        files = sorted(str(p) for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
        if not files:
            raise S2Error(f"{spec} holds no images or videos ({', '.join(sorted(IMAGE_EXTS | VIDEO_EXTS))})")
    elif Path(spec).is_file():
        files = [spec]
    else:
        raise S2Error(f"source not found: {redact_credentials(spec)}")
    items = [(SourceKind.IMAGE if Path(f).suffix.lower() in IMAGE_EXTS else SourceKind.VIDEO, f)
             for f in files if Path(f).is_file()]
    if not items:
        raise S2Error(f"{redact_credentials(spec)} matches no files")
    total = _count(items, vid_stride, alone and decoder == "opencv")
    return Source(items, vid_stride, max_pixels, total=total, decoder=decoder)


def _frame_count(path: str) -> int:
    """The frame count a video's container declares, as OpenCV reads it (0 where it cannot tell)."""
    cap = cv2.VideoCapture(path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return max(n, 0)


def _each_file_once(paths: list[str]) -> list[str]:
    """Each file once, under its shortest name, in the order given: a recursive glob follows links
    to folders, so through a `sub -> .` link it finds every file again under sub/, sub/sub/, ... up
    to the kernel's limit on links."""
    seen: set[tuple[int, int]] = set()
    keep = set()
    for p in sorted(paths, key=lambda p: (p.count(os.sep), p)):
        try:
            st = os.stat(p)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            keep.add(p)
    return [p for p in paths if p in keep]


def _count(items: list[Item], vid_stride: int, alone: bool = True) -> int | None:
    """Frames the items will give, when every one can tell (asked of OpenCV, whichever decoder
    reads them); the run's lone video that OpenCV cannot open fails here, before the model is
    loaded (GStreamer's reader says why it cannot when it opens it)."""
    total: int | None = 0
    for kind, path in items:
        if kind == SourceKind.IMAGE:
            total = None if total is None else total + 1
            continue
        try:
            cap = open_capture(kind, path)
        except S2Error:
            if alone and len(items) == 1:
                raise
            total = None
            continue
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        total = None if total is None or n <= 0 else total + -(-n // vid_stride)
    return total
