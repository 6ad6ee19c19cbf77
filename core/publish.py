"""Outputs written under an exclusively created temporary name, then published by rename.

A predictable temporary name in a folder others can write is an attack surface: a link planted
there in advance (`.out.partial.jsonl -> ../model.onnx`) is followed by open() and the model is
overwritten. Every temporary file here is created with O_CREAT|O_EXCL|O_NOFOLLOW under a random
name (tempfile), so the open makes a new file or fails; writers that open by name themselves
(OpenCV's video writer) get a fresh folder of their own (mode 0700) to write in. Publishing is a
rename within the file system: it replaces a link at the target, never what the link points to.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from s2trt.errors import S2Error, UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; published outputs get the permissions a plain open() would give.
FILE_MODE = 0o666 & ~_umask()


# The files this process reads (its model, sources, names, config, lists), by (device, inode), with
# what to call them: no output is published onto one, whatever name or link leads there.
_inputs: dict[tuple[int, int], tuple[Path, str]] = {}


def guard_inputs(paths: Iterable[tuple[str | Path, str]]) -> None:
    """Record input files as (path, what it is, e.g. "the model"): from now on this process
    publishes no output onto them. Paths that are no regular file (missing, a folder, a device) are
    left out: there is nothing of theirs to overwrite."""
    for path, what in paths:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode):
            _inputs.setdefault((st.st_dev, st.st_ino), (Path(path), what))


def forget_inputs() -> None:
    """End the guard: what run_main does when a command ends (a process may run several)."""
    _inputs.clear()


def input_at(path: str | Path, follow: bool = True) -> tuple[Path, str] | None:
    """The guarded input that `path` is (its inode; through links unless follow is False), or None."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (OSError, ValueError):
        return None
    return _inputs.get((st.st_dev, st.st_ino))


def refuse_input(path: str | Path, flag: str, follow: bool = True) -> None:
    """UsageError (exit 2) when the output `path` is a guarded input."""
    hit = input_at(path, follow)
    if hit is not None:
        raise UsageError(f"{flag} {path} would overwrite {hit[1]} {hit[0]}: choose another output")


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def exclusive_temp(path: str | Path) -> tuple[int, Path]:
    """A new file beside `path`, open for writing: (its descriptor, its name). The name is random,
    hidden and keeps `path`'s suffix (OpenCV picks a format from it):
    `.<stem>.<random>.partial<suffix>`. The descriptor carries the published permissions."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}",
                                   dir=path.parent)
    except OSError as e:
        raise S2Error(f"cannot write to {path.parent}: {_why(e)}") from None
    try:
        os.fchmod(fd, FILE_MODE)  # on the descriptor: a name swapped meanwhile is not followed
    except OSError:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, Path(tmp)


def private_folder(path: str | Path) -> Path:
    """A new folder beside `path` that only this user can enter (mode 0700, random name
    `.<stem>.<random>.partial`), for a writer that opens its file by name: nobody else can plant a
    link in it; its owner removes it when the file inside is published or discarded."""
    path = Path(path)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=".partial", dir=path.parent))
    except OSError as e:
        raise S2Error(f"cannot write to {path.parent}: {_why(e)}") from None


def publish(tmp: Path, path: str | Path) -> None:
    """Rename the finished temporary file onto `path` (atomic within a file system; a link at
    `path` is replaced, not followed). A guarded input at `path` is refused (the temporary file is
    left to its writer to remove)."""
    refuse_input(path, "the output", follow=False)
    os.replace(tmp, path)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to an exclusive temporary file in the same folder, then rename: no half-written
    outputs, and nothing written through a planted link."""
    path = Path(path)
    fd, tmp = exclusive_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
