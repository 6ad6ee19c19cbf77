"""Install TensorRT's Python module from PyPI, build stub libraries for it, and list its API.

Everything lands in a cache ($S2TRT_TEST_CACHE, else ~/.cache/s2trt-test) that later runs reuse;
each item is built in a temporary folder and renamed into place, so an interrupted run leaves
nothing half-made.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# TensorRT version -> the wheel holding its Python module (tensorrt_bindings/tensorrt.so).
WHEELS = {
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",  # JetPack 6
    "10.16.1.11": "tensorrt-cu12-bindings==10.16.1.11",  # newest 10.x on PyPI (Nov 2026)
    "11.4.0.106": "tensorrt-cu13-bindings==11.4.0.106",
}
STUB_LIBS = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser")


class WheelUnavailable(Exception):
    """The wheel could not be downloaded (offline, index unreachable): the only reason to skip."""


def cache_root() -> Path:
    env = os.environ.get("S2TRT_TEST_CACHE")
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = Path(env) if env else xdg / "s2trt-test"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _publish(tmp: Path, final: Path) -> Path:
    """Rename a finished folder into place; a concurrent run that got there first wins."""
    if final.exists() and not (final / ".complete").exists():
        shutil.rmtree(final)
    (tmp / ".complete").touch()
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def install_wheel(version: str) -> Path:
    """A folder with the tensorrt_bindings package of this version (no TensorRT libraries)."""
    final = cache_root() / f"trt-{version}"
    if (final / ".complete").exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".trt-{version}-", dir=final.parent))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
           "--disable-pip-version-check", "--target", str(tmp), WHEELS[version]]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WheelUnavailable(f"pip install {WHEELS[version]} timed out") from None
    if out.returncode != 0 or not list(tmp.glob("tensorrt_bindings/tensorrt*.so")):
        shutil.rmtree(tmp, ignore_errors=True)
        lines = (out.stderr or out.stdout).strip().splitlines()
        raise WheelUnavailable(f"pip install {WHEELS[version]} failed: "
                               f"{lines[-1] if lines else 'no tensorrt.so in the wheel'}")
    return _publish(tmp, final)


def build_stubs(major: int) -> Path:
    """A folder with libnvinfer.so.<major>, libnvinfer_plugin.so.<major>, libnvonnxparser.so.<major>."""
    src = HERE / "stub.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    final = cache_root() / f"stubs-{digest}-{major}"
    if (final / ".complete").exists():
        return final
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the TensorRT API tests need a C compiler (cc or gcc) for the stub libraries")
    tmp = Path(tempfile.mkdtemp(prefix=".stubs-", dir=final.parent))
    for lib in STUB_LIBS:
        soname = f"{lib}.so.{major}"
        subprocess.run([cc, "-shared", "-fPIC", "-O1", f"-Wl,-soname,{soname}", "-o", str(tmp / soname),
                        str(src)], check=True, capture_output=True, text=True)
    return _publish(tmp, final)


def dump_api(version: str) -> dict:
    """Import the real module of `version` against the stubs in a subprocess; its API as JSON."""
    wheel = install_wheel(version)
    stubs = build_stubs(int(version.split(".")[0]))
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(stubs), env.get("LD_LIBRARY_PATH")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(wheel), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, str(HERE / "dump_api.py")], capture_output=True, text=True,
                         env=env, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"TensorRT {version}'s module did not import against the stubs "
                           f"(exit {out.returncode}): {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout)


@functools.cache
def _api_or_reason(version: str) -> dict | str:
    """Cached failures too: an offline run tries each download once, not once per test."""
    try:
        return dump_api(version)
    except WheelUnavailable as e:
        return str(e)


def api_or_skip(version: str) -> dict:
    """The real module's API (dump_api); a skip where the wheel cannot be had, a failure instead
    under S2TRT_REQUIRE_TRT_WHEELS=1."""
    import pytest

    api = _api_or_reason(version)
    if isinstance(api, str):
        if os.environ.get("S2TRT_REQUIRE_TRT_WHEELS") == "1":
            pytest.fail(f"{api} (S2TRT_REQUIRE_TRT_WHEELS=1)")
        pytest.skip(f"{api}: checking against the real TensorRT API needs the wheel from PyPI")
    return api
