"""Stream credentials never reach gst-launch-1.0's command line (runtime/inputs/gst.py with
core/argv_secret.py): what any local user can read of the decoding child and of its own children in
/proc, while real credentialed streams (an RTSP server asking for a password, SRT with a passphrase
in the URL's query) decode with --decoder sw."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from gst_fixtures import needs_gst
from rtsp_fixtures import RtspServer, live, needs_rtsp_server
from stream_fixtures import free_port

from s2trt import argv_secret
from s2trt.errors import S2Error
from s2trt.runtime.inputs import sources
from s2trt.runtime.inputs.gst import GstCapture, gst_launch, hides_url, launch_args
from s2trt.runtime.inputs.streams import LiveOptions, MultiSource

# Long first reads: the first child rebuilds a private plugin registry (below) before its first frame.
OPTS = LiveOptions(read_timeout_s=30.0, reconnect_timeout_s=40.0, backoff_s=0.1, max_backoff_s=0.4)
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (apt-get install gcc)")


def _processes() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses
                out[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    return out


class ChildWatch:
    """Polls, in the background, the command line and environment of every decoding gst-launch-1.0
    this process starts and of all their descendants, as another user would poll the process list."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, bytes, bytes]] = set()  # (pid, cmdline, environ) as each was seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            parents = _processes()
            todo = [p for p, pp in parents.items() if pp == os.getpid()]
            while todo:
                pid = todo.pop()
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    env = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue  # gone meanwhile
                if parents[pid] != os.getpid() or b"gdppay" in cmd:  # a decoding child, or below one
                    self.seen.add((pid, cmd, env))
                    todo += [p for p, pp in parents.items() if pp == pid]

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def leaked(self, secret: str) -> list[bytes]:
        return [cmd for _, cmd, env in self.seen if secret.encode() in cmd or secret.encode() in env]

    def programs(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """(cmdline, environ) of what ran, by program name."""
        out: dict[str, list[tuple[bytes, bytes]]] = {}
        for _, cmd, env in self.seen:
            out.setdefault(Path(cmd.split(b"\0")[0].decode()).name, []).append((cmd, env))
        return out


def _frames(url: str, n: int) -> list:
    ms = MultiSource([url], live=OPTS, decoder="sw")
    got = []
    for f in ms:
        got.append(f)
        if len(got) >= n:
            break
    ms.close()
    return got


P = argv_secret.PLACEHOLDER


@pytest.mark.parametrize("url, arg", [
    ("rtsp://alice:s3cret@cam/live", f"location={P}"),
    ("rtspt://cam/live?token=s3cret", f"location={P}"),  # a token in the query
    ("srt://127.0.0.1:9000?passphrase=s3cret-s3cret", f"uri={P}"),
    ("https://cam/live.m3u8#sig=s3cret", f"uri={P}"),
    ("rtsp://cam/live", "location=rtsp://cam/live"),  # nothing secret: named on the command line, as before
    ("udp://@239.0.0.1:1234", "uri=udp://@239.0.0.1:1234"),  # FFmpeg's multicast form: no user
    # Any query goes around, even what logs show: a server may take a secret under any name.
    ("rtsp://cam/cam/realmonitor?channel=1&subtype=0", f"location={P}"),
    ("srt://h:8890?streamid=read:cam1:alice:s3cret", f"uri={P}"),  # MediaMTX's SRT login
    ("rtsp://cam/x?pw=s3cret", f"location={P}"), ("rtsp://cam/x?pin=s3cret", f"location={P}"),
    ("https://cdn/a.m3u8?hdnts=exp=1~hmac=s3cret", f"uri={P}"), ("rtmp://h/live/x?md5=s3cret", f"uri={P}"),
    ("rtsp://cam/x?channel=1;token=s3cret", f"location={P}"), ("rtsp://cam/x?=s3cret", f"location={P}"),
    ("rtsp://cam/x?s3cret", f"location={P}"), ("rtsp://cam/x;s3cret", f"location={P}"),
    ("rtsp://u:p/s3cret@cam/x", f"location={P}"),  # an unescaped / in a password
    ("rtsp://:s3cret@cam/live", f"location={P}"),  # a password without a user
    ("tcp://user:s3cret@127.0.0.1:5000", "host=127.0.0.1"),  # the child gets the host and the port only
])
def test_which_urls_go_around_the_command_line(url, arg):
    args = launch_args("stream", url, "sw", 5)
    assert arg in args and hides_url("stream", url) is (P in arg)
    assert not any("s3cret" in a for a in args)


@needs_gst
def test_without_a_compiler_a_credentialed_stream_is_one_line_and_no_leak(monkeypatch):
    assert gst_launch()  # found before `which` finds nothing below
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(argv_secret.shutil, "which", lambda name: None)
    monkeypatch.setattr(argv_secret, "_built", None)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(S2Error, match=r"C compiler \(cc\) here: install gcc, or use --decoder opencv") as e:
        GstCapture("stream", "rtsp://alice:s3cret@127.0.0.1:9/cam", "sw", timeout_s=1)
    assert "s3cret" not in str(e.value) and "\n" not in str(e.value)
    assert len(os.listdir("/proc/self/fd")) == fds  # both pipes closed


@needs_gst
@needs_rtsp_server
def test_without_a_compiler_auto_reads_a_credentialed_stream_with_opencv(monkeypatch, caplog):
    """--decoder auto never asked for GStreamer: a stream whose credentials it could not keep off the
    child's command line is read in-process by OpenCV, with one warning; an explicit --decoder sw
    still refuses in one line."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(argv_secret.shutil, "which", lambda name: None)
    monkeypatch.setattr(argv_secret, "_built", None)
    with RtspServer({"/cam": live()}, user="alice:s3cret") as server:
        url = server.url("/cam", "rtsp", "alice:s3cret")
        with ChildWatch() as watch:
            ms = MultiSource([url], live=OPTS, decoder="sw", decoder_auto=True)
            try:
                got = [f for f, _ in zip(ms, range(5), strict=False)]
            finally:
                ms.close()
        with pytest.raises(S2Error, match=r"C compiler \(cc\) here"):
            GstCapture("stream", url, "sw", timeout_s=5)
    assert len(got) == 5 and all(f.image.shape == (120, 160, 3) for f in got)
    assert ms.stats[url].decoder == "opencv"
    assert "gst-launch-1.0" not in watch.programs()
    warned = [r.getMessage() for r in caplog.records if "OpenCV reads it" in r.getMessage()]
    assert len(warned) == 1 and "needs a C compiler (cc) here" in warned[0] and "s3cret" not in warned[0]


@needs_gst
def test_the_gst_only_schemes_without_a_compiler_advise_rtsp_for_opencv(monkeypatch):
    # OpenCV refuses rtspt:// and rtspu:// by name: "use --decoder opencv" alone would fail too.
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(argv_secret.shutil, "which", lambda name: None)
    monkeypatch.setattr(argv_secret, "_built", None)
    for scheme in ("rtspt", "rtspu"):
        with pytest.raises(S2Error, match=r"install gcc, or give it as rtsp:// to --decoder opencv, "
                           r"which reads it in-process$"):
            GstCapture("stream", f"{scheme}://alice:s3cret@127.0.0.1:9/cam", "sw", timeout_s=1)


def _cannot_build(how: str, tmp_path: Path) -> str:
    """A $CC under which the library cannot be built, though a compiler may be installed."""
    if how == "missing wrapper":
        return "no-such-ccache gcc"
    if how == "failing compiler":  # as gcc without libc6-dev: it runs, and fails
        return shutil.which("false") or "false"
    broken = tmp_path / "cc"  # found, but cannot start
    broken.write_text("#!/no/such/interpreter\n")
    broken.chmod(0o755)
    return str(broken)


@pytest.mark.parametrize("how", ["missing wrapper", "failing compiler", "unstartable compiler"])
def test_auto_falls_back_to_opencv_whenever_the_library_cannot_be_built(monkeypatch, caplog, tmp_path, how):
    """Not only without any compiler: the fallback is OpenCV's own open (its message), warned once per
    source however often it is reopened (each reconnect reopens it)."""
    monkeypatch.setenv("CC", _cannot_build(how, tmp_path))
    monkeypatch.setattr(argv_secret, "_built", None)
    monkeypatch.setattr(sources, "_warned", set())
    url = "rtsp://alice:s3cret@127.0.0.1:9/cam?channel=1"
    for _ in range(3):
        with pytest.raises(S2Error) as e:
            sources.open_capture("stream", url, timeout_s=1, decoder="sw", auto=True)
        assert str(e.value).startswith("cannot open stream rtsp://127.0.0.1:9/cam?channel=1 (unreachable")
    warned = [r.getMessage() for r in caplog.records if "OpenCV reads it" in r.getMessage()]
    assert len(warned) == 1 and "s3cret" not in warned[0] and "\n" not in warned[0], warned
    assert warned[0].startswith("rtsp://127.0.0.1:9/cam?channel=1: OpenCV reads it, as gst-launch-1.0 cannot")
    with pytest.raises(S2Error, match=r"could not build|needs a C compiler"):  # an explicit sw still refuses
        sources.open_capture("stream", url, timeout_s=1, decoder="sw")


@needs_gst
def test_a_library_the_child_cannot_preload_is_named_not_a_gstreamer_error(tmp_path, monkeypatch):
    # As a noexec temporary folder or a cleaner makes it: ld.so skips the library, the child runs
    # with the placeholder.
    lib = tmp_path / "gone" / argv_secret.LIBRARY_NAME
    monkeypatch.setattr(argv_secret, "process_library", lambda *a: lib)
    with pytest.raises(S2Error) as e:
        GstCapture("stream", "rtsp://alice:s3cret@127.0.0.1:9/cam", "sw", timeout_s=10)
    msg = str(e.value)
    assert msg.startswith(f"the child program never got the URL rtsp://127.0.0.1:9/cam: the system could not "
                          f"load {lib} into it (")
    assert msg.endswith("set TMPDIR to a folder of yours that allows running programs")
    assert "s3cret" not in msg and "\n" not in msg


@needs_gst
@needs_rtsp_server
@needs_cc
def test_an_rtsp_password_stays_off_the_childs_command_line(tmp_path, monkeypatch):
    with RtspServer({"/cam": live()}, user="alice:s3cret") as server:
        url = server.url("/cam", "rtspt", "alice:s3cret")
        # A fresh registry: gst-launch-1.0 starts gst-plugin-scanner, a child of its own, which
        # inherits the preload and must find nothing either.
        monkeypatch.setenv("GST_REGISTRY", str(tmp_path / "registry.bin"))
        with ChildWatch() as watch:
            got = _frames(url, 10)
    assert len(got) == 10 and all(f.image.shape == (120, 160, 3) and f.image.std() > 10 for f in got)
    assert watch.leaked("s3cret") == []
    ran = watch.programs()
    placeholder = f"location={P}".encode()
    assert any(placeholder in cmd.split(b"\0") for cmd, _ in ran["gst-launch-1.0"]), ran.keys()
    assert "gst-plugin-scanner" in ran, ran.keys()
    # The child's own children inherit the preload but not the pipe's name: nothing left to read.
    assert all(argv_secret.FILE_ENV.encode() not in env for _, env in ran["gst-plugin-scanner"])


@needs_gst
@needs_cc
def test_an_srt_passphrase_in_the_query_stays_off_the_childs_command_line():
    port, secret = free_port(), "correct-horse-battery"
    sender = subprocess.Popen(
        [shutil.which("gst-launch-1.0"), "-q", "videotestsrc", "is-live=true", "!",
         "video/x-raw,width=160,height=120,framerate=25/1", "!", "x264enc", "tune=zerolatency",
         "speed-preset=ultrafast", "key-int-max=10", "!", "mpegtsmux", "!", "srtsink",
         f"uri=srt://:{port}?passphrase={secret}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ChildWatch() as watch:
            got = _frames(f"srt://127.0.0.1:{port}?passphrase={secret}", 10)
        # The passphrase is really used: a wrong one gets no frame.
        with pytest.raises(S2Error):
            GstCapture("stream", f"srt://127.0.0.1:{port}?passphrase=wrong-passphrase", "sw", timeout_s=5)
    finally:
        sender.kill()
        sender.wait(timeout=10)
    assert len(got) == 10 and got[0].image.shape == (120, 160, 3)
    assert watch.leaked(secret) == []
    placeholder = f"uri={P}".encode()
    assert any(placeholder in cmd.split(b"\0") for cmd, _ in watch.programs()["gst-launch-1.0"])
