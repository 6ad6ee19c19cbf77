"""GStreamer decoding for videos and streams: `gst-launch-1.0` in a child process, frames over a pipe.

Why a child process and not Python bindings: PyPI's OpenCV wheels are built without GStreamer, the
virtualenv's Python cannot import Debian's `python3-gi`, and a PyGObject recent enough for Python
3.11+ wheels builds only against a newer GLib/gobject-introspection than bookworm's (an old pinned one
needs the GLib, cairo and introspection development packages in every image). `gst-launch-1.0` is
in every GStreamer install, DeepStream's and L4T's included, and needs nothing in the venv. The child
also isolates the decoder: a crash or a network source that hangs ends that child, which the stall
timer kills and the reconnect policy restarts, never s2infer.

The frames come back framed by the GStreamer Data Protocol (`gdppay`, gstreamer1.0-plugins-bad): a
62-byte header per packet, then caps (the frame size, which may change mid-stream), events (the
segment, to turn buffer timestamps into stream time) and buffers (one I420 frame each, with its PTS).
So a camera that changes resolution is read correctly, and every frame carries its stream timestamp.

The decoder is picked by `decodebin` among the installed ones, steered through plugin ranks
(`GST_PLUGIN_FEATURE_RANK`): NVIDIA's (`nvv4l2decoder` on Jetson, `nvh264dec`/`nvh265dec` on x86
GPUs) for `--decoder nv`, the software ones (`avdec_h264`, `avdec_h265`, ...) for `--decoder sw`. The
decoder that ran is read from gst-launch's verbose caps log and reported. Copies: the decoder's
I420 output (brought from NVMM memory by `nvvideoconvert`/`nvvidconv` where NVIDIA's decoder
runs) crosses the pipe once, at half the bytes of BGR, and OpenCV converts it to BGR as its own
FFmpeg capture does (BT.601): GStreamer's `videoconvert` to BGR would cost as much CPU as the
decode itself (benchmarks/RESULTS.md, "GStreamer decode").

A stream URL that may hold a secret (a user or password, any query, a fragment: more than what
s2trt.text.redact_credentials recognises by name and hides in logs and results) never stands on
the child's command line, which every local user can read in /proc/PID/cmdline: the child gets a
placeholder there, and the URL through a pipe and a small preloaded library (core/argv_secret.py)
that swaps it in before gst-launch-1.0 parses its arguments.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from s2trt import argv_secret
from s2trt.errors import S2Error
from s2trt.runtime.inputs.sources import SourceKind
from s2trt.text import has_credentials, redact_credentials

log = logging.getLogger(__name__)

DECODERS = ("auto", "nv", "sw", "opencv")
APT_PACKAGES = ("gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
                "gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-rtsp")
# NVIDIA's decoders: L4T/DeepStream's V4L2 one, and the nvcodec plugin's on x86 GPUs.
NV_DECODERS = ("nvv4l2decoder", "nvh264dec", "nvh265dec", "nvav1dec", "nvvp9dec", "nvvp8dec",
               "nvmpeg2videodec", "nvmpeg4videodec", "nvjpegdec", "nvh264sldec", "nvh265sldec")
# Converters out of NVIDIA's NVMM memory into system memory (DeepStream's, then L4T's).
NV_CONVERTERS = ("nvvideoconvert", "nvvidconv")

_HEADER = struct.Struct(">BBBxHIQQQQHQ")  # GDP 1.0, big-endian; then padding and two CRCs to 62 bytes
_HEADER_LEN = 62
_BUFFER, _CAPS = 1, 2
_NONE = 0xFFFFFFFFFFFFFFFF  # GST_CLOCK_TIME_NONE
_MAX_PACKET = 1 << 30  # no frame is larger: a corrupt header must not make us allocate terabytes
_LOG_LINES = 40


@functools.cache
def gst_launch() -> str | None:
    return shutil.which("gst-launch-1.0")


@functools.cache
def has_element(name: str) -> bool:
    """Whether GStreamer has this element (asked once per name: gst-inspect takes ~50 ms)."""
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return False
    try:
        done = subprocess.run([inspect, "--exists", name], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def nv_decoders() -> list[str]:
    return [d for d in NV_DECODERS if has_element(d)]


def resolve_decoder(choice: str) -> str:
    """The decode path `--decoder` names: "nv", "sw" or "opencv". `auto` takes NVIDIA's decoders
    through GStreamer where they exist, else OpenCV's FFmpeg (whose results runs so far gave)."""
    if choice not in DECODERS:
        raise S2Error(f"--decoder {choice}: choose one of {', '.join(DECODERS)}")
    if choice == "opencv":
        return choice
    have_gst = gst_launch() is not None and has_element("gdppay")
    if choice == "auto":
        return "nv" if have_gst and nv_decoders() else "opencv"
    if not have_gst:
        raise S2Error(f"--decoder {choice} needs GStreamer's gst-launch-1.0 and gdppay (Debian/Ubuntu: "
                      f"apt-get install {APT_PACKAGES})")
    if choice == "nv" and not nv_decoders():
        raise S2Error("--decoder nv: GStreamer has no NVIDIA decoder here (nvv4l2decoder on Jetson, "
                      "nvh264dec/nvh265dec from gstreamer1.0-plugins-bad on an x86 GPU with its driver)")
    return choice


def _ranks(mode: str) -> str:
    """GST_PLUGIN_FEATURE_RANK for the mode: NVIDIA's decoders first, or never."""
    rank = "MAX" if mode == "nv" else "NONE"
    return ",".join(f"{d}:{rank}" for d in NV_DECODERS)


def hides_url(kind: SourceKind, item: str) -> bool:
    """Whether the item is a URL that goes to the child through argv_secret, not its command line:
    any URL with a user or password, a query, a fragment or path parameters (; ), whether or not
    logs show them (s2trt.text.redact_credentials recognises secrets by name; a server may take one
    under any name, such as MediaMTX's streamid=read:path:user:pass). tcp:// gives the child its host
    and port alone."""
    if kind == SourceKind.VIDEO or urlsplit(item).scheme.lower() == "tcp":
        return False
    rest = item.partition("://")[2]
    rest = rest[1:] if rest.startswith("@") else rest  # FFmpeg's udp://@group:port names no user
    return any(c in rest for c in "@?#;") or has_credentials(item)


def _source_args(kind: SourceKind, item: str, timeout_s: float) -> list[str]:
    """The gst-launch elements that read the item, up to and including the decoder."""
    if kind == SourceKind.VIDEO:
        return ["uridecodebin", f"uri={Path(item).resolve().as_uri()}", "name=dec"]
    url = urlsplit(item)
    scheme = url.scheme.lower()
    location = argv_secret.PLACEHOLDER if hides_url(kind, item) else item
    us = str(max(int(timeout_s * 1e6), 1))
    if scheme in ("rtsp", "rtsps", "rtspt", "rtspu"):
        # rtspt:// is RTSP interleaved over TCP, rtspu:// over UDP (rtspsrc's own schemes); rtsp://
        # tries UDP, then TCP. Audio is left out by the caps filter before decodebin.
        return ["rtspsrc", f"location={location}", "latency=200", f"tcp-timeout={us}", f"timeout={us}",
                "!", "application/x-rtp,media=video", "!", "decodebin", "name=dec"]
    if scheme == "tcp":  # FFmpeg's tcp://host:port, as a client
        if url.port is None:
            raise S2Error(f"{item}: a tcp:// stream needs a port")
        return ["tcpclientsrc", f"host={url.hostname}", f"port={url.port}", "!", "decodebin", "name=dec"]
    return ["uridecodebin", f"uri={location}", "name=dec"]


def launch_args(kind: SourceKind, item: str, mode: str, fd: int, timeout_s: float = 10.0) -> list[str]:
    """The gst-launch-1.0 command that decodes the item into GDP-framed I420 frames on file
    descriptor fd. A URL that hides_url() holds stands there as argv_secret's placeholder."""
    gst = gst_launch()
    if gst is None:
        raise S2Error(f"GStreamer's gst-launch-1.0 is not installed (apt-get install {APT_PACKAGES})")
    convert = ["videoconvert"]  # a no-op for the usual 4:2:0 8-bit streams, which decode to I420
    if mode == "nv":
        nvconv = next((c for c in NV_CONVERTERS if has_element(c)), None)
        if nvconv is not None:  # out of NVMM memory into system memory, in one step
            convert = [nvconv]
    return [gst, "-v", "--no-position", *_source_args(kind, item, timeout_s), "!", "queue",
            "max-size-buffers=2", "!", *convert, "!", "video/x-raw,format=I420", "!", "gdppay", "!",
            "fdsink", f"fd={fd}", "sync=false"]


def _up4(n: int) -> int:
    return (n + 3) & ~3


def i420_to_bgr(data: bytes | bytearray, w: int, h: int) -> np.ndarray | None:
    """A GStreamer I420 frame (planes in its default layout: rows padded to 4 bytes, odd sizes
    rounded up to even) as BGR, converted by OpenCV as its FFmpeg capture converts (BT.601); None if
    the buffer is short."""
    h2, w2 = h + h % 2, w + w % 2
    ys, cs, ch = _up4(w), _up4(w2 // 2), h2 // 2
    need = ys * h2 + 2 * cs * ch
    if len(data) < need:
        return None
    buf = np.frombuffer(data, np.uint8, need)
    if ys == w2 and cs == w2 // 2:  # already packed (1920, 1280, 640 wide...): no copy before the conversion
        packed = buf.reshape(h2 * 3 // 2, w2)
    else:
        y = buf[:ys * h2].reshape(h2, ys)[:, :w2]
        u = buf[ys * h2:ys * h2 + cs * ch].reshape(ch, cs)[:, :w2 // 2]
        v = buf[ys * h2 + cs * ch:].reshape(ch, cs)[:, :w2 // 2]
        packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h2 * 3 // 2, w2)
    bgr = cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_I420)
    return bgr if (h2, w2) == (h, w) else np.ascontiguousarray(bgr[:h, :w])


@dataclass
class Caps:
    width: int = 0
    height: int = 0
    fps: float = 0.0


def parse_caps(text: str) -> Caps:
    def num(key: str) -> int:
        m = re.search(rf"\b{key}=\(int\)(\d+)", text)
        return int(m.group(1)) if m else 0

    m = re.search(r"\bframerate=\(fraction\)(\d+)/(\d+)", text)
    fps = int(m.group(1)) / int(m.group(2)) if m and int(m.group(2)) else 0.0
    return Caps(num("width"), num("height"), fps)


# A decoder's output pad in the verbose log: ".../avdec_h264:avdec_h264-0.GstPad:src: caps = video/x-raw"
_ELEMENT = re.compile(r"/(?:[A-Za-z0-9_]+):([A-Za-z0-9_]+?)-?\d+\.GstPad:src: caps = video/x-raw")
_ERROR = re.compile(r"^ERROR: (?:from element \S+: )?(.*)$")
# GStreamer's words for "data came, but no decoder here makes frames of it".
_NOT_DECODED = ("decod", "codec", "missing a plug-in", "not-negotiated", "not negotiated",
                "no suitable plugins", "determine type of stream", "text file", "stream format")


class GstCapture:
    """A running gst-launch-1.0 that decodes one video or stream: what LiveReader and Source need of
    cv2.VideoCapture (grab / retrieve / get / release), plus the stream timestamp of each frame
    (`pts`, seconds of stream time, or None) and the decoder that ran (`decoder`)."""

    def __init__(self, kind: SourceKind, item: str, mode: str, timeout_s: float = 10.0, shown_as: str = ""):
        self.kind, self.item, self.mode, self.timeout_s = kind, item, mode, timeout_s
        self.shown = shown_as or redact_credentials(item)
        self.caps = Caps()
        self._decoder: str | None = None
        self._decoder_seen = threading.Event()  # set when the log names it, or ends
        self.pts: float | None = None
        self._frame: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self._seg_start, self._seg_time = 0, 0
        self._origin: float | None = None
        self._log: deque[str] = deque(maxlen=_LOG_LINES)
        self.eof = False
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # a larger pipe: fewer wake-ups per 6 MB frame
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        # The user's own GST_PLUGIN_FEATURE_RANK comes last: where it names a decoder, it wins.
        ranks = ",".join(filter(None, [_ranks(mode), os.environ.get("GST_PLUGIN_FEATURE_RANK")]))
        env = dict(os.environ, GST_PLUGIN_FEATURE_RANK=ranks)
        pass_fds = [write_fd]
        try:
            args = launch_args(kind, item, mode, write_fd, timeout_s)
            if hides_url(kind, item):
                # OpenCV refuses GStreamer's own rtspt:// and rtspu:// by name: it reads rtsp://.
                gst_only = urlsplit(item).scheme.lower() in ("rtspt", "rtspu")
                instead = ("give it as rtsp:// to --decoder opencv, which reads it in-process" if gst_only
                           else "use --decoder opencv, which reads it in-process")
                library = argv_secret.process_library(f"the credentials of {self.shown}", instead)
                env, secret_fd = argv_secret.piped_environment(env, library, item, f"the URL {self.shown}")
                pass_fds.append(secret_fd)
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         pass_fds=pass_fds, env=env, start_new_session=True)
        except OSError as e:
            os.close(read_fd)
            raise S2Error(f"cannot start gst-launch-1.0: {e.strerror or e}") from None
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            for fd in pass_fds:
                os.close(fd)
        self.fd = read_fd
        self._logger = threading.Thread(target=self._drain_log, daemon=True, name="s2infer-gst-log")
        self._logger.start()
        # Opened means one frame decoded: an address that answers with something undecodable fails
        # here, with GStreamer's reason, as an unreachable one does.
        if not self.grab():
            stalled = self.proc.poll() is None
            self.release()
            raise S2Error(self.failure(stalled))
        self._pending, self._frame = self._frame, None

    def _drain_log(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if "caps = video/x-raw" in line and self._decoder is None:
                m = _ELEMENT.search(line)
                if m and "/GstDecodeBin:" in line and "GstCapsFilter" not in line:
                    self._decoder = m.group(1)
                    self._decoder_seen.set()
            if not line.startswith("/Gst"):
                self._log.append(line)
        self._decoder_seen.set()

    @property
    def decoder(self) -> str | None:
        """The decoder element that runs (avdec_h264, nvv4l2decoder, ...), None if unknown. The log
        that names it comes on its own pipe: a frame may arrive first, so wait for it a little."""
        self._decoder_seen.wait(timeout=5.0)
        return self._decoder

    def failure(self, stalled: bool = False) -> str:
        """Why the child gave no (more) frames, in one line, from GStreamer's own error; `stalled`:
        it was still running, silent, when we gave up on it."""
        self._logger.join(timeout=1)
        lines = list(self._log)
        errors = [m.group(1) for ln in lines if (m := _ERROR.match(ln))]
        # The debug text under each error: "../file.c(N): func (): /GstPipeline:…:" then the message.
        details = [d for i, ln in enumerate(lines) if ln.startswith("Additional debug info")
                   for d in lines[i + 1:i + 3]]
        what = "stream" if self.kind == SourceKind.STREAM else "video"
        # ld.so's word that the library did not load comes first: the child then ran with the
        # placeholder, and GStreamer's own error is about that, not about the source.
        for ln in lines:
            if (why := argv_secret.preload_failure(ln, f"the URL {self.shown}")) is not None:
                return why
        if not errors:
            if stalled:
                return f"{self.shown}: no frame within {self.timeout_s:g} s (unreachable or stalled {what})"
            return f"cannot open {what} {self.shown} (GStreamer gave no frame and no reason)"
        reason = redact_credentials(errors[0].rstrip("."))
        # Element paths and source file names (…/GstURIDecodeBin:dec/…) are no reason: left out.
        text = re.sub(r"(?:\.\./|/Gst)\S*", " ", " ".join([reason, *details])).lower()
        if any(k in text for k in _NOT_DECODED):
            if self.kind == SourceKind.STREAM:
                return f"{self.shown}: connects, but its video cannot be decoded here: {reason}"
            return f"{self.shown}: cannot be decoded: {reason}"
        return f"cannot open {what} {self.shown}: {reason}"

    def stopped_by_error(self) -> str | None:
        """After the last frame: why GStreamer stopped, if an error and not the end of the video
        stopped it (a decoder that gave up halfway); None for a clean end."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return self.failure() if code != 0 else None

    def grab(self) -> bool:
        if self._pending is not None:
            self._frame, self._pending = self._pending, None
            return True
        if self.eof:
            return False
        deadline = time.monotonic() + self.timeout_s
        while True:
            head = self._read(_HEADER_LEN, deadline)
            if head is None:
                return False
            _, _, _, ptype, size, pts, _, _, _, _, _ = _HEADER.unpack_from(head)
            if size > _MAX_PACKET:
                log.warning("%s: corrupt frame header from gst-launch-1.0", self.shown)
                return self._end()
            payload = self._read(size, deadline) if size else bytearray()
            if payload is None:
                return False
            if ptype == _BUFFER:
                if self._set_frame(payload, pts):
                    return True
            elif ptype == _CAPS:
                self.caps = parse_caps(payload.decode("utf-8", "replace"))
            elif payload.startswith(b"GstEventSegment"):
                self._segment(payload.decode("utf-8", "replace"))

    def _set_frame(self, payload: bytearray, pts: int) -> bool:
        w, h = self.caps.width, self.caps.height
        img = i420_to_bgr(payload, w, h) if w and h else None
        if img is None:
            return False
        self._frame = img
        if pts == _NONE:
            self.pts = None
            return True
        t = (max(pts - self._seg_start, 0) + self._seg_time) / 1e9
        if self.kind == SourceKind.VIDEO:
            # A file's times count from its first frame, as FFmpeg's do (an MPEG-TS starts at 0.7 s
            # or wherever its muxer began): both decoders give one file the same timestamps.
            if self._origin is None:
                self._origin = t
            t -= self._origin
        self.pts = t
        return True

    def _segment(self, text: str) -> None:
        def field(key: str) -> int:
            m = re.search(rf"\b{key}=\(guint64\)(\d+)", text)
            return int(m.group(1)) if m else 0

        self._seg_start, self._seg_time = field("start"), field("time")

    def _read(self, n: int, deadline: float) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None  # stalled: the caller reopens
            try:
                k = os.readv(self.fd, [view[got:]])
            except OSError:
                k = 0
            if k == 0:
                self._end()
                return None
            got += k
        return buf

    def _end(self) -> bool:
        self.eof = True
        return False

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        img, self._frame = self._frame, None
        return img is not None, img

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return self.caps.fps
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.caps.width)
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.caps.height)
        if prop == cv2.CAP_PROP_POS_MSEC:
            return (self.pts or 0.0) * 1000
        return 0.0

    def release(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: nothing else is signalled
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.eof = True
