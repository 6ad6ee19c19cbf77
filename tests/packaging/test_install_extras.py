"""The `gpu` extras resolve to the cuda-python that the targets' drivers run, and a driver too old for
the installed one gets a message that names what to install.

cuda-python 13.x reports CUDA 13 and needs an R580+ driver; JetPack 6 (CUDA 12.6) and servers on
R535-R570 need 12.x, which runs on every driver from R525 on (docs/DESIGN.md §5). The resolution is
pip's own (`--dry-run --report`, metadata from the index) for the requirements pyproject.toml lists,
on Python 3.10 as JetPack 6 has it: no version is written twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import urllib.request

import pytest
from paths import REPO

from s2trt.errors import S2Error
from s2trt.trt import gpu

ARCHS = ("aarch64", "x86_64")
# glibc 2.35: Ubuntu 22.04, under JetPack 6 and NGC's TensorRT 24.08 image. pip does not widen an
# explicit --platform to older manylinux tags, so each is listed (onnxruntime's are 2_27/2_28).
GLIBC = (2, 35)
PYPI = "https://pypi.org/simple"


def extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def index_url() -> str:
    """The index pip asks (PIP_INDEX_URL or pip's configuration), PyPI by default."""
    r = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                       capture_output=True, text=True, timeout=60)
    return os.environ.get("PIP_INDEX_URL") or (r.stdout.strip() if r.returncode == 0 else "") or PYPI


def resolve(requirements: list[str], arch: str) -> dict[str, tuple[str, str]]:
    """{name: (version, wheel file)} that pip would install for Python 3.10 on `arch`; skips where the
    index cannot be reached (a failure under CI=true, tests/conftest.py)."""
    url = index_url().rstrip("/") + "/cuda-python/"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20).close()
    except OSError as e:  # pip itself only says "no matching distribution" when offline
        pytest.skip(f"the package index is unreachable ({url}): {e}")
    platforms = [f"--platform=manylinux_2_{minor}_{arch}" for minor in range(17, GLIBC[1] + 1)]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
           "--ignore-installed", "--only-binary=:all:", *platforms, "--python-version", "3.10", *requirements]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"pip could not resolve {requirements} for {arch}:\n{r.stderr[-3000:]}"
    report = json.loads(r.stdout)
    return {i["metadata"]["name"].lower(): (i["metadata"]["version"],
                                            i["download_info"]["url"].rsplit("/", 1)[-1])
            for i in report["install"]}


@pytest.mark.pypi
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("extra", "major"), [("gpu", "12"), ("gpu-cu13", "13")])
def test_gpu_extras_resolve_to_one_cuda_major_on_both_targets(extra: str, major: str, arch: str) -> None:
    """With the base dependencies, `ort` and `engine`, as the Jetson image installs them: cuda-python
    and its cuda-bindings (the compiled part) of one CUDA major, as cp310 wheels for the architecture."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    got = resolve([*project["dependencies"], *extras()["ort"], *extras()["engine"], *extras()[extra]], arch)
    for name in ("cuda-python", "cuda-bindings"):
        version = got[name][0]
        assert version.split(".")[0] == major, f"{extra} on {arch}: {name} {version}"
    assert "cp310" in got["cuda-bindings"][1] and arch in got["cuda-bindings"][1], got["cuda-bindings"]
    assert all(arch in wheel or wheel.endswith("-none-any.whl") for _, wheel in got.values()), got


def test_the_two_gpu_extras_exclude_each_other() -> None:
    """pip would otherwise install whichever it meets last; the README names one extra per driver."""
    from packaging.requirements import Requirement

    (cu12,), (cu13,) = (map(Requirement, extras()[name]) for name in ("gpu", "gpu-cu13"))
    assert cu12.name == cu13.name == "cuda-python"
    assert not any(v in cu12.specifier and v in cu13.specifier
                   for v in ("12.0.0", "12.6.2", "12.9.0", "12.99", "13.0.0", "13.5.0", "14.0"))
    assert "12.0.0" in cu12.specifier and "12.9.4" in cu12.specifier and "13.0.0" not in cu12.specifier
    assert "13.0.0" in cu13.specifier and "13.5.0" in cu13.specifier and "14.0.0" not in cu13.specifier


@pytest.fixture
def cudart(monkeypatch: pytest.MonkeyPatch):
    """The real cuda-bindings runtime module (its enums and names), with the three calls select_device
    makes replaced: no GPU or driver is touched."""
    runtime = pytest.importorskip("cuda.bindings.runtime")
    versions = {"runtime": 13050, "driver": 12060}
    monkeypatch.setattr(runtime, "cudaSetDevice",
                        lambda device: (runtime.cudaError_t.cudaErrorInsufficientDriver,))
    monkeypatch.setattr(runtime, "cudaRuntimeGetVersion",
                        lambda: (runtime.cudaError_t.cudaSuccess, versions["runtime"]))
    monkeypatch.setattr(runtime, "cudaDriverGetVersion",
                        lambda: (runtime.cudaError_t.cudaSuccess, versions["driver"]))
    return versions


def test_the_calls_replaced_exist_in_the_real_module() -> None:
    runtime = pytest.importorskip("cuda.bindings.runtime")
    for name in ("cudaSetDevice", "cudaRuntimeGetVersion", "cudaDriverGetVersion"):
        assert callable(getattr(runtime, name)), name
    assert int(runtime.cudaError_t.cudaErrorInsufficientDriver) == 35  # driver_types.h


@pytest.mark.parametrize(("runtime", "driver", "says"), [
    # JetPack 6 / R560 with cuda-python 13: the 12.x extra is the fix, not --device.
    (13050, 12060, ("CUDA runtime is 13.5, newer than this NVIDIA driver's CUDA 12.6",
                    "pip install 's2trt[gpu]'", "cuda-python 12.x", "JetPack 6", "R580")),
    # Older than CUDA 12 (R470 = CUDA 11.4): no cuda-python of ours runs, the driver must move.
    (12090, 11040, ("CUDA runtime is 12.9, newer than this NVIDIA driver's CUDA 11.4",
                    "update the NVIDIA driver to R525 or newer")),
    (12090, 0, ("no NVIDIA driver was found", "install the NVIDIA driver")),
])
def test_insufficient_driver_names_what_to_install(cudart, runtime: int, driver: int, says: tuple) -> None:
    cudart.update(runtime=runtime, driver=driver)
    with pytest.raises(S2Error) as e:
        gpu.select_device(1)
    message = str(e.value)
    assert message.startswith("cannot use CUDA device 1: ") and "\n" not in message
    for part in says:
        assert part in message, (part, message)
    assert "check --device" not in message
