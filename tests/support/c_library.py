"""A shared library compiled from a few lines of C, for tests that need the dynamic loader to load a
real file (a plugin library's constructor running is the proof that it was loaded)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def c_library(factory: pytest.TempPathFactory, name: str, source: str) -> Path:
    """lib<name>.so built from `source` in a fresh temporary folder; the test skips without a compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a test shared library")
    d = factory.mktemp(name)
    (d / f"{name}.c").write_text(source)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / f"lib{name}.so"), str(d / f"{name}.c")], check=True)
    return d / f"lib{name}.so"
