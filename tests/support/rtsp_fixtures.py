"""A real RTSP server on 127.0.0.1 for the tests: support/rtsp_server.c (GStreamer's RTSP server library)
compiled once per session with gcc, serving live test patterns encoded by x264/x265.

Debian: apt-get install -y gcc pkg-config libgstrtspserver-1.0-dev gstreamer1.0-plugins-ugly
gstreamer1.0-plugins-bad (x264enc, x265enc).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from stream_fixtures import free_port

SOURCE = Path(__file__).with_name("rtsp_server.c")


@functools.cache
def _pkg_flags() -> list[str] | None:
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        return None
    out = subprocess.run(["pkg-config", "--cflags", "--libs", "gstreamer-rtsp-server-1.0"],
                         capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else None


needs_rtsp_server = pytest.mark.skipif(
    _pkg_flags() is None, reason="needs gcc, pkg-config and libgstrtspserver-1.0-dev to build the test "
    "RTSP server (apt-get install -y gcc pkg-config libgstrtspserver-1.0-dev)")


@functools.cache
def server_binary() -> Path:
    folder = tempfile.mkdtemp(prefix="s2trt-rtsp-")
    atexit.register(shutil.rmtree, folder, True)  # built once per test session, removed with it
    out = Path(folder) / "rtsp_server"
    flags = _pkg_flags()
    assert flags is not None
    subprocess.run(["gcc", "-O1", "-Wall", "-o", str(out), str(SOURCE), *flags], check=True, timeout=120)
    return out


def live(codec: str = "h264", size: str = "160x120", fps: int = 25) -> str:
    """A live test pattern in gst-launch syntax, as a camera sends it; its size set by a capsfilter
    named res (which --switch-after changes)."""
    w, h = size.split("x")
    enc = {"h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay",
           "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph265pay"}[codec]
    return (f"videotestsrc is-live=true pattern=ball ! video/x-raw,framerate={fps}/1 ! capsfilter name=res "
            f"caps=video/x-raw,width={w},height={h} ! videoconvert ! {enc} name=pay0 pt=96")


def clip(path: Path, codec: str = "h264") -> str:
    """An encoded file served at its own rate (a camera without the encoder's CPU cost)."""
    parse = {"h264": "h264parse ! rtph264pay", "h265": "h265parse ! rtph265pay"}[codec]
    return f"filesrc location={path} ! qtdemux ! {parse} name=pay0 pt=96"


class RtspServer:
    """Mounts served on 127.0.0.1:port; kill() and start() again for a server restart on the same port."""

    def __init__(self, mounts: dict[str, str], user: str | None = None,
                 switch: tuple[int, str] | None = None):
        self.mounts, self.user, self.switch = mounts, user, switch
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str, scheme: str = "rtsp", auth: str | None = None) -> str:
        return f"{scheme}://{auth + '@' if auth else ''}127.0.0.1:{self.port}{mount}"

    def start(self) -> RtspServer:
        argv = [str(server_binary()), str(self.port)]
        if self.user:
            argv += ["--user", self.user]
        if self.switch:
            argv += ["--switch-after", str(self.switch[0]), self.switch[1]]
        argv += [f"{m}={launch}" for m, launch in self.mounts.items()]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready" once it listens
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"the RTSP server did not start: {self.proc.stderr.read()[-500:]}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
