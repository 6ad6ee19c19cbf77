"""Hand a secret to tritonserver without putting it on its command line (serve/argv_secret.c).

Triton reads its restricted-protocol key only from its arguments, and /proc/PID/cmdline is readable
by every local user. The server is started with `PLACEHOLDER` in the argument instead, the key in a
file only this user can read, and a small library preloaded into it that swaps the key in before
Triton parses its arguments. The library is compiled here, at start, with the system's C compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from s2trt.errors import S2Error

PLACEHOLDER = "@S2TRT_SECRET@"  # must match argv_secret.c
FILE_ENV = "S2TRT_SECRET_FILE"
MAX_SECRET = 1024
SOURCE = Path(__file__).with_name("argv_secret.c")


def check_secret(secret: str, what: str) -> None:
    """A value a client can send as a header: visible ASCII only (no space, no line break)."""
    if not 1 <= len(secret) <= MAX_SECRET or not all(33 <= ord(c) <= 126 for c in secret):
        raise S2Error(f"{what} must be 1 to {MAX_SECRET} visible ASCII characters (no spaces)")


def build_library(dest: Path) -> Path:
    """Compile the preload library into `dest` (a folder of this user's)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise S2Error("an admin key ($S2TRT_ADMIN_KEY) needs a C compiler (cc) here, to hand the key to "
                      "tritonserver without its command line, which other users can read: install gcc, "
                      "or unset the key (the admin protocols are then off)")
    lib = dest / "libs2trt_argv_secret.so"
    done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SOURCE)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise S2Error(f"{cc} could not build {SOURCE.name}: {(done.stderr or done.stdout).strip()[:300]}")
    return lib


def write_secret(path: Path, secret: str) -> None:
    """The key in a new file that only this user can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)


def environment(env: dict[str, str], library: Path, secret_file: Path) -> dict[str, str]:
    """`env` with the library preloaded (before any preload already asked for) and the key's file."""
    preload = [str(library), *filter(None, env.get("LD_PRELOAD", "").split(":"))]
    return {**env, "LD_PRELOAD": ":".join(preload), FILE_ENV: str(secret_file)}
