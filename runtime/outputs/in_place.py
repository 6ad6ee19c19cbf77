"""Outputs written in place: pipes, character devices, and this process's own stdout and stderr.

Only these are written directly; anything else is a file, written under a temporary name and
renamed. The path is resolved first: a link under /dev (or anywhere) that leads to a regular file
is a file like any other, so a link in /dev/shm to the model is replaced, never written through.
A regular file is written in place only as a descriptor this process holds open for writing,
named as such (/dev/stdout, /dev/fd/N, /proc/self/fd/N): `>> results.jsonl` is appended to.

Every write is checked (a device that fails them, /dev/full, fails the run) and none can hang the
run: a pipe is opened and written without blocking, waiting in short steps, and once a signal
has asked the command to stop (s2trt.cli.STOPPING) a pipe that has no reader, or one that takes
nothing, is given up within GRACE_S.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import stat
import threading
import time
from pathlib import Path

from s2trt.cli import STOPPING
from s2trt.errors import S2Error
from s2trt.publish import private_folder

GRACE_S = 0.5  # after a stop signal: how long a pipe may still take to accept what is left
_STEP_S = 0.05
# This process's own descriptors, as a path names them.
_OWN_FD = re.compile(r"/dev/fd/(\d+)|/proc/(?:self|thread-self|(\d+))/fd/(\d+)")
_STD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _own_descriptor(path: str | Path) -> int | None:
    """The descriptor of this process that `path` names on its way through links, if any."""
    p = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on a chain of links
        if p in _STD:
            return _STD[p]
        m = _OWN_FD.fullmatch(p)
        if m and (m.group(2) is None or int(m.group(2)) == os.getpid()):
            return int(m.group(1) or m.group(3))
        if not os.path.islink(p):
            return None
        p = os.path.abspath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return None


def writes_in_place(path: str | Path) -> bool:
    """'-', a FIFO or a character device (links resolved), or a descriptor of this process open
    for writing (/dev/stdout redirected to a file): written directly. Renaming a temporary file
    onto one of these would replace the pipe, the device node or the link instead of writing into
    it; anything else is a file, written by rename."""
    if str(path) == "-":
        return True
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return True
    if not stat.S_ISREG(st.st_mode):
        return False  # a folder or a block device: the caller refuses it as a file to write
    fd = _own_descriptor(path)
    if fd is None:
        return False
    try:
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        own = os.fstat(fd)
    except OSError:
        return False
    # Open for writing, and the very file the path reaches: a descriptor this process opened to
    # read (its model) is not an output.
    return mode in (os.O_WRONLY, os.O_RDWR) and (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _why(e: OSError) -> str:
    return e.strerror or str(e)


class InPlaceWriter:
    """Bytes written into a pipe, a device or an own descriptor; every failure is an S2Error naming
    `what`, and no wait outlasts a stop signal by more than GRACE_S."""

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = path, what
        self.fd = self._open()

    def _open(self) -> int:
        deadline = None
        while True:
            try:  # append: /dev/stdout redirected with >> must not be truncated
                return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY
                               | os.O_CLOEXEC)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: a FIFO that no reader has opened yet
                    raise S2Error(f"cannot write {self.what}: {_why(e)}") from None
            deadline = self._wait(deadline, "no reader opened it")
            time.sleep(_STEP_S)

    def _wait(self, deadline: float | None, problem: str) -> float | None:
        """Raise once a stop signal's grace has run out; the deadline to carry to the next step."""
        if not STOPPING.is_set():
            return None
        deadline = deadline or time.monotonic() + GRACE_S
        if time.monotonic() > deadline:
            raise S2Error(f"cannot write {self.what}: {problem} (the run was stopped)")
        return deadline

    def write(self, data: bytes) -> None:
        view, deadline = memoryview(data), None
        while view:
            try:
                view = view[os.write(self.fd, view):]
                continue
            except BlockingIOError:  # a pipe that is full: its reader is slow, or gone quiet
                pass
            except OSError as e:  # ENOSPC from /dev/full, EPIPE from a pipe whose reader left
                raise S2Error(f"cannot write {self.what}: {_why(e)}") from None
            deadline = self._wait(deadline, "its reader takes nothing")
            select.select([], [self.fd], [], _STEP_S)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError as e:
            raise S2Error(f"cannot write {self.what}: {_why(e)}") from None


class VideoRelay:
    """A video written in place: OpenCV (which opens its file by name and reports no write error)
    writes into a FIFO in a private folder, and a thread copies that into the target with an
    InPlaceWriter, keeping the first error. Once an error is kept the rest is read and dropped, so
    OpenCV never blocks on it."""

    def __init__(self, path: Path):
        self.path = path
        self.folder = private_folder(path)
        self.fifo = self.folder / f"video{path.suffix}"  # the suffix picks OpenCV's container
        os.mkfifo(self.fifo, 0o600)
        self.error: S2Error | None = None
        self._thread = threading.Thread(target=self._copy, name="s2infer-video-relay", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        with open(self.fifo, "rb", buffering=0) as src:  # waits for OpenCV to open the other end
            out = None
            try:
                out = InPlaceWriter(self.path, f"video {self.path}")
                while chunk := src.read(1 << 16):
                    out.write(chunk)
                out.close()
            except S2Error as e:
                self.error = e
                while src.read(1 << 16):
                    pass
            except OSError as e:
                self.error = S2Error(f"cannot write video {self.path}: {_why(e)}")

    def abandon(self) -> None:
        """OpenCV never opened the FIFO: open it ourselves, so the thread sees its end (a writer's
        open without blocking succeeds once the thread waits in its open as the reader)."""
        for _ in range(200):
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                break
            except OSError:
                time.sleep(0.01)
        self.finish()

    def finish(self) -> None:
        """Wait for the copy (OpenCV has closed its end) and remove the FIFO; raise its error."""
        self._thread.join()
        self.fifo.unlink(missing_ok=True)
        self.folder.rmdir()
        if self.error is not None:
            raise self.error
