"""Hand a secret to a child program without putting it on its command line (core/argv_secret.c).

Some programs take a secret only from their arguments: tritonserver its restricted-protocol key
(s2serve), gst-launch-1.0 a stream URL with its credentials (s2infer --decoder sw|nv). And
/proc/PID/cmdline, which `ps` shows, is readable by every local user. The child is started with
`PLACEHOLDER` in the argument instead, and a small library preloaded into it swaps the secret in
before the program parses its arguments. The secret comes from a file named by $S2TRT_SECRET_FILE:
one only this user can read (s2serve's key file), or a pipe the child inherits (`/proc/self/fd/N`),
so that it is never on disk. The library drops that variable once read, so the child's own children
(which inherit LD_PRELOAD) read nothing. A process's environment, unlike its command line, is
readable by its own user only (/proc/PID/environ is mode 0400). The library is compiled with the
system's C compiler.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

from s2trt.errors import S2Error

PLACEHOLDER = "@S2TRT_SECRET@"  # must match argv_secret.c
FILE_ENV = "S2TRT_SECRET_FILE"
MAX_SECRET = 4096  # bytes, must match argv_secret.c; a pipe holds at least a page without a reader
MAX_HEADER = 1024
SOURCE = Path(__file__).with_name("argv_secret.c")
LIBRARY_NAME = "libs2trt_argv_secret.so"

_built: Path | None = None
_build_lock = threading.Lock()


def check_secret(secret: str, what: str) -> None:
    """A value a client can send as a header: visible ASCII only (no space, no line break)."""
    if not 1 <= len(secret) <= MAX_HEADER or not all(33 <= ord(c) <= 126 for c in secret):
        raise S2Error(f"{what} must be 1 to {MAX_HEADER} visible ASCII characters (no spaces)")


def compiler() -> list[str] | None:
    """The command that runs the C compiler that builds the library ($CC, split as a shell would:
    `ccache gcc`; else cc, gcc or clang on PATH), or None where its program is not there."""
    cc = shlex.split(os.environ.get("CC", ""))
    if cc:
        return cc if shutil.which(cc[0]) else None
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return [found] if found else None


def build_library(dest: Path, what: str = "the secret", instead: str = "") -> Path:
    """Compile the preload library into `dest` (a folder of this user's). `what` the secret is and
    `instead`, what the user may do without a compiler, are for the error that says none is here."""
    cc = compiler()
    if not cc:
        raise S2Error(f"keeping {what} off the child's command line, which other users can read, needs a "
                      f"C compiler (cc) here: install gcc{f', or {instead}' if instead else ''}")
    lib = dest / LIBRARY_NAME
    try:
        done = subprocess.run([*cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SOURCE)],
                              capture_output=True, text=True)
    except OSError as e:  # found, but cannot run (a noexec mount, a broken wrapper)
        raise S2Error(f"{shlex.join(cc)} could not build {SOURCE.name}: {e.strerror or e}") from None
    if done.returncode != 0:
        raise S2Error(f"{shlex.join(cc)} could not build {SOURCE.name}: "
                      f"{' '.join((done.stderr or done.stdout).split())[:300]}")
    return lib


def _still_ours(lib: Path) -> bool:
    """Whether the library built earlier is still the one we built: a temporary-file cleaner may
    have removed its folder, and another local user may then have made one of that name, with a
    library of theirs that our child would load with the secret piped in. So its folder must be a
    real folder (no link) of ours that no one else may write into or list, the library a regular
    file of ours."""
    try:
        folder, st = os.lstat(lib.parent), os.lstat(lib)
    except OSError:
        return False
    me = os.geteuid()
    return (stat.S_ISDIR(folder.st_mode) and folder.st_uid == me and folder.st_mode & 0o077 == 0
            and stat.S_ISREG(st.st_mode) and st.st_uid == me)


def process_library(what: str = "the secret", instead: str = "") -> Path:
    """The library, built once per process into a private temporary folder removed at exit (the
    children that preloaded it keep it mapped), and again should it be gone or no longer ours
    meanwhile: a temporary-file cleaner under a run of days (a 24/7 camera reconnects) would leave
    each new child without it, or its folder's name free for another user to take."""
    global _built
    with _build_lock:  # streams open from several threads at once
        if _built is None or not _still_ours(_built):
            dest = Path(tempfile.mkdtemp(prefix="s2trt-argv-secret-"))  # mode 0700
            try:
                _built = build_library(dest, what, instead)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
            atexit.register(shutil.rmtree, dest, True)
        return _built


# What ld.so prints, and then runs the program without the library (so with the placeholder):
# "ERROR: ld.so: object '/tmp/…/lib.so' from LD_PRELOAD cannot be preloaded (reason): ignored."
_NOT_PRELOADED = re.compile(r"object '(.*)' from LD_PRELOAD cannot be preloaded \((.*)\)")


def preload_failure(line: str, what: str = "the secret") -> str | None:
    """For a line of the child's output where ld.so says it could not preload our library: why the
    child never got `what`, in one line; None for any other line."""
    m = _NOT_PRELOADED.search(line)
    if m is None or Path(m.group(1)).name != LIBRARY_NAME:
        return None
    lib = Path(m.group(1))
    return (f"the child program never got {what}: the system could not load {lib} into it ({m.group(2)}); "
            f"if {lib.parent.parent} is mounted noexec, set TMPDIR to a folder of yours that allows "
            "running programs")


def write_secret(path: Path, secret: str) -> None:
    """The key in a new file that only this user can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)


def environment(env: dict[str, str], library: Path, secret_file: Path) -> dict[str, str]:
    """`env` with the library preloaded (before any preload already asked for) and the key's file."""
    preload = [str(library), *filter(None, env.get("LD_PRELOAD", "").split(":"))]
    return {**env, "LD_PRELOAD": ":".join(preload), FILE_ENV: str(secret_file)}


def piped_environment(env: dict[str, str], library: Path, secret: str,
                      what: str = "the secret") -> tuple[dict[str, str], int]:
    """`env` for a child that reads `secret` from a pipe, and the pipe's read end: hand it to the child
    (subprocess's pass_fds), then close it here. Nothing is written to disk; each child reads its own
    copy once."""
    data = secret.encode()
    if not 1 <= len(data) <= MAX_SECRET or b"\0" in data:
        raise S2Error(f"{what} must be 1 to {MAX_SECRET} bytes without a NUL to be kept off the child's "
                      "command line")
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as w:  # fits in the pipe's buffer: no reader needed yet
        w.write(data)
    return environment(env, library, Path(f"/proc/self/fd/{read_fd}")), read_fd
