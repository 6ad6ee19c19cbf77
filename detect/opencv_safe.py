"""Text and file names OpenCV can be given without crashing.

OpenCV's Python bindings convert every str to UTF-8 and crash the process (SIGSEGV) on a lone
surrogate, which is how Python spells a file-name byte that is not UTF-8 (`$'\\xff.mp4'` is
'\\udcff.mp4', os.fsdecode) and how a pickle or a forged file can spell a class name. So a label or
a window title is reduced to what OpenCV's Hershey fonts draw (printable ASCII, '?' for the rest),
and a file whose name is not UTF-8 is given to OpenCV as this process's descriptor of it
(/proc/self/fd/N), which names the same file in plain ASCII; the file itself keeps its bytes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def drawable(text: str) -> str:
    """What putText and imshow may be given: printable ASCII, '?' for anything else (OpenCV's
    fonts draw nothing else either)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def opencv_path(path: str | Path, *, new: bool = False) -> Iterator[str]:
    """A name OpenCV can open `path` by, valid while the block runs (open it inside: OpenCV keeps
    its own handle after that). `path` itself when it is UTF-8; else /proc/self/fd/N of the file
    (`new`: of its folder, plus its own name, for a file OpenCV is to create, whose name must be
    UTF-8)."""
    text = str(path)
    if _utf8(text):
        yield text
        return
    p = Path(path)
    if new:
        if not _utf8(p.name):
            raise ValueError(f"{p.name!r}: a new file's own name must be UTF-8")
        fd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        name = f"/proc/self/fd/{fd}/{p.name}"
    else:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        name = f"/proc/self/fd/{fd}"
    try:
        yield name
    finally:
        os.close(fd)
