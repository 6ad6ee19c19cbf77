"""Real live streams on 127.0.0.1 for the live-source tests: ffmpeg serving MPEG-TS.

`TsServer` plays a short clip in a loop at its own frame rate (-re), as a camera would, over
`tcp://127.0.0.1:PORT` (ffmpeg listens; a kill closes the connection) or `udp://127.0.0.1:PORT`
(ffmpeg sends; a kill leaves the reader with a silent socket: a stall). Needs the ffmpeg program
(Debian: apt-get install -y ffmpeg).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg program "
                                  "(apt-get install -y ffmpeg) to serve live streams")


def make_clip(path: Path, seconds: float = 2.0, size: str = "160x120", fps: int = 25) -> Path:
    """A test-pattern MPEG-TS clip with a keyframe every 5 frames, so a reader that joins or
    rejoins mid-stream decodes within a fifth of a second."""
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate={fps}", "-t", str(seconds), "-c:v", "mpeg2video",
                    "-g", "5", "-q:v", "5", "-f", "mpegts", str(path)], check=True, timeout=60)
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TsServer:
    """One clip served live and looped; kill() and start() again to drop and bring back the stream."""

    def __init__(self, clip: Path, proto: str = "tcp"):
        self.clip, self.proto = clip, proto
        self.port = free_port(socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        self.url = f"{proto}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> TsServer:
        out = f"{self.url}?listen=1" if self.proto == "tcp" else f"{self.url}?pkt_size=1316"
        log = self.clip.with_suffix(f".{self.port}.log")
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                 str(self.clip), "-c", "copy", "-f", "mpegts", out],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        if self.proto == "tcp":  # a reader connecting before the listen socket exists is refused
            deadline = time.monotonic() + 10
            while not self._listening():
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"ffmpeg did not start listening on {self.url} (exit "
                                       f"{self.proc.poll()}): {log.read_text()[-500:]}")
                time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        # /proc/net/tcp lists sockets in LISTEN (state 0A) without connecting (which would take
        # ffmpeg's only accept).
        want = f":{self.port:04X} "
        text = Path("/proc/net/tcp").read_text()
        return any(want in ln and ln.split()[3] == "0A" for ln in text.splitlines()[1:])

    def kill(self) -> None:
        """Gone at once, as a camera losing power: SIGKILL, no trailer, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> TsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_for(cond, what: str, timeout: float = 20.0) -> None:
    """Poll cond() until it holds, failing the test with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
