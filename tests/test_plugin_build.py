"""Builds plugins/ with CMake + nvcc and checks what comes out.

- the kernels library (CUDA only) is built once per session and must export the C ABI and nothing else;
- the TensorRT glue and the harness are compiled against every header folder named by
  TENSORRT_INCLUDE_DIR / TENSORRT_INCLUDE_DIRS (NVIDIA's public include/ trees, kept outside the repo),
  and the harness drives the plugin on the CPU (and, with a GPU, through enqueue).
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
# One architecture keeps the CI build short; the CMake default (87;90) is checked separately.
TEST_ARCH = "90"
C_ABI = {"s2sa_forward", "s2sa_workspace_size", "s2sa_error_string"}
LOADER_ENTRY_POINTS = {"getCreators", "setLoggerFinder"}


def nvcc_path() -> str | None:
    for candidate in (os.environ.get("CUDACXX"),
                      str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda-13.0")) / "bin" / "nvcc")):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("nvcc")


def toolchain_missing() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake not found"
    if nvcc_path() is None:
        return "nvcc not found (set CUDACXX or CUDA_HOME)"
    return None


@functools.cache
def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="s2trt-plugin-build-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _run(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cmake_configure(name: str, *definitions: str, arch: str | None = TEST_ARCH) -> Path:
    build = _scratch() / name
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    arch_def = [f"-DCMAKE_CUDA_ARCHITECTURES={arch}"] if arch else []
    cmd = ["cmake", "-S", str(PLUGINS), "-B", str(build), *generator,
           f"-DCMAKE_CUDA_COMPILER={nvcc_path()}", *arch_def, *definitions]
    r = _run(cmd)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return build


def cmake_build(name: str, *definitions: str) -> Path:
    build = cmake_configure(name, *definitions)
    r = _run(["cmake", "--build", str(build), "-j2"])
    assert r.returncode == 0, f"build of {name} failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    return build


@functools.cache
def _kernels_build() -> Path:
    return cmake_build("kernels", "-DS2TRT_EMULATION=ON")


def prebuilt() -> Path | None:
    """S2TRT_PLUGIN_BUILD: a CMake build folder made elsewhere (a GPU machine without nvcc)."""
    folder = os.environ.get("S2TRT_PLUGIN_BUILD")
    return Path(folder).resolve() if folder else None


def kernels_build_dir() -> Path:
    """The build folder of the kernels (and of their CPU emulation), built once per session; skips only
    when the toolchain is missing."""
    if prebuilt():
        return prebuilt()
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    return _kernels_build()


def kernels_library() -> Path:
    lib = kernels_build_dir() / "libs2trt_kernels.so"
    assert lib.is_file(), f"{lib.parent} has no {lib.name}"
    return lib


def header_dirs() -> list[str]:
    dirs = [os.environ.get("TENSORRT_INCLUDE_DIR", "")]
    dirs += os.environ.get("TENSORRT_INCLUDE_DIRS", "").split(os.pathsep)
    return list(dict.fromkeys(d for d in dirs if d))


@functools.cache
def _plugin_build(include_dir: str) -> Path:
    index = header_dirs().index(include_dir)
    return cmake_build(f"plugin-{index}", f"-DTENSORRT_INCLUDE_DIR={include_dir}", "-DS2TRT_WERROR=ON")


def plugin_build(include_dir: str | None) -> Path:
    if include_dir is None:
        pytest.skip("TENSORRT_INCLUDE_DIR / TENSORRT_INCLUDE_DIRS not set: no TensorRT headers to compile "
                    "against (see plugins/s2SplitAttention/README.md)")
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    assert (Path(include_dir) / "NvInferRuntime.h").is_file(), f"{include_dir} has no NvInferRuntime.h"
    return _plugin_build(include_dir)


def _header_id(include_dir: str | None) -> str:
    if include_dir is None:
        return "no-headers"
    text = (Path(include_dir) / "NvInferVersion.h").read_text(errors="replace")
    parts = [re.search(rf"#define\s+(?:NV_TENSORRT|TRT)_{key}(?:_ENTERPRISE)?\s+(\d+)", text)
             for key in ("MAJOR", "MINOR", "PATCH")]
    return "trt" + ".".join(m.group(1) for m in parts if m) if all(parts) else Path(include_dir).parent.name


HEADERS = pytest.mark.parametrize("include_dir", header_dirs() or [None],
                                  ids=[_header_id(d) for d in header_dirs()] or ["no-headers"])


def exported_functions(library: Path) -> set[str]:
    r = _run(["nm", "-D", "--defined-only", str(library)])
    assert r.returncode == 0, r.stderr
    return {line.split()[-1] for line in r.stdout.splitlines() if line.split()[1:2] == ["T"]}


def undefined_symbols(library: Path) -> set[str]:
    r = _run(["nm", "-D", "--undefined-only", str(library)])
    assert r.returncode == 0, r.stderr
    return {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}


def test_kernels_library_exports_only_the_c_abi():
    lib = kernels_library()
    assert exported_functions(lib) == C_ABI
    # Without headers CMake builds the kernels alone: the glue needs TensorRT.
    assert not (lib.parent / "libs2trt_plugins.so").exists()


def test_cuda_architectures_default_to_orin_and_h100():
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    build = cmake_configure("default-arch", arch=None)
    cache = (build / "CMakeCache.txt").read_text()
    assert re.search(r"^CMAKE_CUDA_ARCHITECTURES:\w+=87;90$", cache, re.M), "default archs are not 87;90"


@HEADERS
def test_plugin_library_compiles_against_headers(include_dir):
    build = plugin_build(include_dir)
    lib = build / "libs2trt_plugins.so"
    assert exported_functions(lib) == C_ABI | LOADER_ENTRY_POINTS
    # Loadable before TensorRT is: no symbol of libnvinfer is needed.
    assert not {s for s in undefined_symbols(lib) if "nvinfer" in s.lower() or s.startswith("getLogger")}
    assert (build / "s2sa_harness").is_file()


@HEADERS
def test_harness_drives_the_plugin_on_cpu(include_dir):
    build = plugin_build(include_dir)
    r = _run([str(build / "s2sa_harness"), str(build / "libs2trt_plugins.so"), "--no-gpu"], timeout=120)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "FAIL" not in r.stdout
    # Every refused field set and shape was reported through the logger TensorRT would hand over.
    assert r.stdout.count("[plugin log 1]") >= 4


@pytest.mark.gpu
def test_harness_enqueues_on_gpu():
    if prebuilt() and (prebuilt() / "s2sa_harness").is_file():
        build = prebuilt()
    else:
        build = plugin_build(header_dirs()[0] if header_dirs() else None)
    r = _run([str(build / "s2sa_harness"), str(build / "libs2trt_plugins.so")], timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "enqueue matches" in r.stdout and "FAIL" not in r.stdout
