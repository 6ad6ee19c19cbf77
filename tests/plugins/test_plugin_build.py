"""Builds plugins/ with CMake + nvcc and checks what comes out.

- the kernels library (CUDA only) is built once per session and must export the C ABI and nothing else;
- the TensorRT glue and the harness are compiled against every header folder named by
  TENSORRT_INCLUDE_DIR / TENSORRT_INCLUDE_DIRS (NVIDIA's public include/ trees, kept outside the repo),
  and the harness drives the plugin on the CPU (and, with a GPU, through enqueue).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from pathlib import Path

import pytest
from plugin_helpers import (
    PLUGINS,
    cmake_build,
    cmake_configure,
    kernels_library,
    nvcc_path,
    prebuilt,
    run_tool,
    scratch_dir,
    toolchain_missing,
)

# CMakeLists.txt's default: SASS for Turing to Hopper, and compute_90 PTX that newer GPUs JIT-compile.
DEFAULT_ARCHS = ["75-real", "80-real", "86-real", "87-real", "89-real", "90"]
C_ABI = {"s2sa_forward", "s2sa_workspace_size", "s2sa_error_string", "s2sa_check_device",
         "s2sa_cuda_architectures"}
# The preprocessing kernel lives in the kernels library only (the runtime calls it, TensorRT does not).
PREPROCESS_ABI = {"s2pp_letterbox", "s2pp_letterbox_geometry"}
LOADER_ENTRY_POINTS = {"getCreators", "setLoggerFinder"}


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
    version_header = Path(include_dir) / "NvInferVersion.h"
    if not version_header.is_file():
        # Named after its folder; plugin_build then fails on it with the reason instead of collection.
        return Path(include_dir).parent.name
    text = version_header.read_text(errors="replace")
    parts = [re.search(rf"#define\s+(?:NV_TENSORRT|TRT)_{key}(?:_ENTERPRISE)?\s+(\d+)", text)
             for key in ("MAJOR", "MINOR", "PATCH")]
    return "trt" + ".".join(m.group(1) for m in parts if m) if all(parts) else Path(include_dir).parent.name


HEADERS = pytest.mark.parametrize("include_dir", header_dirs() or [None],
                                  ids=[_header_id(d) for d in header_dirs()] or ["no-headers"])


def exported_functions(library: Path) -> set[str]:
    r = run_tool(["nm", "-D", "--defined-only", str(library)])
    assert r.returncode == 0, r.stderr
    return {line.split()[-1] for line in r.stdout.splitlines() if line.split()[1:2] == ["T"]}


def undefined_symbols(library: Path) -> set[str]:
    r = run_tool(["nm", "-D", "--undefined-only", str(library)])
    assert r.returncode == 0, r.stderr
    return {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}


def test_kernels_library_exports_only_the_c_abi():
    lib = kernels_library()
    assert exported_functions(lib) == C_ABI | PREPROCESS_ABI
    # Without headers CMake builds the kernels alone: the glue needs TensorRT.
    assert not (lib.parent / "libs2trt_plugins.so").exists()


def test_cuda_architectures_default_to_the_gpus_users_have():
    """Turing (T4) to Hopper as cubins and compute_90 PTX for newer GPUs: CUDA 13 still compiles all six
    (`nvcc --list-gpu-code`), and CMake hands nvcc one --generate-code per architecture."""
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    listed = run_tool([nvcc_path(), "--list-gpu-code"]).stdout.split()
    assert {f"sm_{a[:2]}" for a in DEFAULT_ARCHS} <= set(listed), listed
    build = cmake_configure("default-arch", arch=None)
    cache = (build / "CMakeCache.txt").read_text()
    assert re.search(rf"^CMAKE_CUDA_ARCHITECTURES:\w+={';'.join(DEFAULT_ARCHS)}$", cache, re.M), \
        "default archs are not " + ";".join(DEFAULT_ARCHS)
    flags = "".join(f.read_text() for f in build.rglob("*") if f.name in ("build.ninja", "flags.make"))
    generated = set(re.findall(r"--generate-code=arch=compute_(\d+),code=\[([^\]]+)\]", flags))
    want = {(a[:2], f"sm_{a[:2]}") for a in DEFAULT_ARCHS[:-1]} | {("90", "compute_90,sm_90")}
    assert generated == want


def test_kernels_library_names_the_architectures_it_was_built_for():
    """The list that the error for a GPU without code quotes is the one CMake compiled."""
    if prebuilt():
        pytest.skip("S2TRT_PLUGIN_BUILD: built elsewhere, with whatever architectures were chosen there")
    lib = ctypes.CDLL(str(kernels_library()))
    lib.s2sa_cuda_architectures.restype = ctypes.c_char_p
    assert lib.s2sa_cuda_architectures().decode() == ",".join(DEFAULT_ARCHS)


def test_a_missing_device_is_not_mistaken_for_missing_code():
    """Without a GPU (or driver) s2sa_check_device reports that, and it is not a "rebuild for your
    architecture" status: the plugin is then still created (the harness's --no-gpu run relies on it)."""
    lib = ctypes.CDLL(str(kernels_library()))
    status = lib.s2sa_check_device()
    if status == 0:
        pytest.skip("a GPU the library has code for is present")
    # s2sa_is_missing_code's list (s2SplitAttentionKernel.h); here typically cudaErrorInsufficientDriver (35)
    # or cudaErrorNoDevice (100).
    assert status not in (98, 200, 209, 218, 221, 222, 223), status


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
    r = run_tool([str(build / "s2sa_harness"), str(build / "libs2trt_plugins.so"), "--no-gpu"], timeout=120)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "FAIL" not in r.stdout
    # Every refused field set and shape was reported through the logger TensorRT would hand over.
    assert r.stdout.count("[plugin log 1]") >= 4


# Kernels launched with programmatic dependent launch, and the parameter each reads that the previous
# launch writes while this one already runs. ld.global.nc (what `const __restrict__` lets nvcc emit) goes
# through the read-only cache, which PTX allows only for memory that stays constant for the kernel's
# whole lifetime (PTX ISA, "ld.global.nc"); these buffers do not.
PDL_PRODUCED_PARAMS = {"hiddenKernel": 0, "attendKernel": 4}  # `a`, `hid`


def ptx_kernels(ptx: str) -> dict[str, list[str]]:
    """Mangled kernel name -> its instruction lines."""
    kernels: dict[str, list[str]] = {}
    for m in re.finditer(r"\.entry (\w+)\((.*?)\n\{(.*?)\n\}", ptx, re.S):
        kernels[m.group(1)] = [ln.strip() for ln in m.group(3).splitlines() if ln.strip()]
    return kernels


def params_behind(body: list[str], operand: str) -> set[int]:
    """Indices of the kernel parameters a register's value derives from (through every definition)."""
    defs: dict[str, set[str]] = {}
    for line in body:
        if not re.match(r"[a-z]", line) or line.startswith(("st.", "bra", "ret", "bar")):
            continue
        parts = line.rstrip(";").split(None, 1)
        if len(parts) < 2:
            continue
        dest, _, rest = parts[1].partition(",")
        for reg in re.findall(r"%\w+", dest):
            defs.setdefault(reg, set()).update(re.findall(r"%\w+|_param_\d+", rest))
    found: set[int] = set()
    todo, seen = re.findall(r"%\w+|_param_\d+", operand), set()
    while todo:
        tok = todo.pop()
        if tok in seen:
            continue
        seen.add(tok)
        if tok.startswith("_param_"):
            found.add(int(tok.removeprefix("_param_")))
        else:
            todo.extend(defs.get(tok, ()))
    return found


def test_buffers_written_under_programmatic_launch_are_not_read_through_the_readonly_cache():
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    out = scratch_dir() / "kernel_sm90.ptx"
    r = run_tool([nvcc_path(), "-std=c++17", "-ptx", "-arch=sm_90", f"-I{PLUGINS / 's2SplitAttention'}",
              str(PLUGINS / "s2SplitAttention" / "s2SplitAttentionKernel.cu"), "-o", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    kernels = ptx_kernels(out.read_text())
    waiting = {name for name, body in kernels.items() if any("griddepcontrol.wait" in ln for ln in body)}
    assert {k for k in PDL_PRODUCED_PARAMS for name in waiting if k in name} == set(PDL_PRODUCED_PARAMS)
    assert all(any(k in name for k in PDL_PRODUCED_PARAMS) for name in waiting), waiting
    for name in waiting:
        param = next(v for k, v in PDL_PRODUCED_PARAMS.items() if k in name)
        body = kernels[name]
        loads = [(ln, params_behind(body, ln.rsplit("[", 1)[1])) for ln in body if ln.startswith("ld.global")]
        assert any(param in src for _, src in loads), f"{name}: no load of parameter {param} found"
        cached = [ln for ln, src in loads if ln.startswith("ld.global.nc") and param in src]
        assert not cached, f"{name} reads parameter {param} through the read-only cache: {cached[:3]}"


def reachable_functions(library: Path, roots: str) -> set[str]:
    """Names of the functions of `library` reachable from those whose demangled name starts with
    `roots`, through direct calls and tail jumps (PLT stubs resolved to the library's own functions)."""
    r = run_tool(["objdump", "-d", "-C", "--no-show-raw-insn", str(library)], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    head = re.compile(r"^[0-9a-f]+ <(.+)>:$")
    branch = re.compile(r"\s(?:call|jmp)\s+[0-9a-f]+ <(.+?)(?:\+0x[0-9a-f]+)?>$")
    graph: dict[str, set[str]] = {}
    current = None
    for line in r.stdout.splitlines():
        if m := head.match(line):
            current = m.group(1)
            graph.setdefault(current, set())
        elif current and (m := branch.search(line)):
            target = m.group(1).removesuffix("@plt")
            if target != current:
                graph[current].add(target)
    todo = [name for name in graph if name.startswith(roots)]
    assert todo, f"no function {roots}... in {library.name}"
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


# The CUDA runtime entry points enqueue may reach. TensorRT may run IPluginV3OneRuntime::enqueue inside a
# CUDA graph capture (developer guide, "CUDA Graphs": enqueueV3 between cudaStreamBeginCapture and
# cudaStreamEndCapture), where cudaMalloc, synchronous cudaMemcpy and stream synchronization are refused
# and break the capture; NVIDIA's answer in NVIDIA/TensorRT#802: "move out all the cudaMalloc,
# cudaMemcpyAsync, cudaMemset" from enqueue. The weights go up in onShapeChange, which IBuilder calls
# before timing and IExecutionContext before the first enqueueV3 after a shape change
# (IPluginV3OneRuntime::onShapeChange in NvInferRuntime.h: 10.3 line 1031, 10.16 line 1132, 11.1 line
# 1113), and in attachToContext (context creation).
ENQUEUE_RUNTIME_CALLS = {
    "cudaLaunchKernelExC",     # the three launches
    "cudaGetDevice",           # which device's cached compute capability applies
    "cudaDeviceGetAttribute",  # first forward on a device only (cached; test_plugin_emulation checks)
    "cudaPeekAtLastError", "cudaGetLastError",  # clearing only an error of our own
    "cudaGetErrorString",      # the logged message
    # Programmatic launch inside a capture only where runtime and driver can record it (CUDA 12.3+).
    "cudaStreamIsCapturing", "cudaRuntimeGetVersion", "cudaDriverGetVersion",
}


@HEADERS
def test_enqueue_reaches_no_allocation_copy_or_sync(include_dir):
    build = plugin_build(include_dir)
    reached = reachable_functions(build / "libs2trt_plugins.so",
                                  "s2trt::plugin::S2SplitAttentionPlugin::enqueue(")
    runtime_calls = {name for name in reached if re.fullmatch(r"cuda[A-Z]\w*", name)}
    assert runtime_calls <= ENQUEUE_RUNTIME_CALLS, runtime_calls - ENQUEUE_RUNTIME_CALLS
    assert "cudaLaunchKernelExC" in runtime_calls  # the walk does reach the kernels' host code
    # The capture state is asked before a programmatic launch (test_plugin_emulation checks the decision).
    assert "cudaStreamIsCapturing" in runtime_calls
    assert not {name for name in reached if "DeviceWeights::" in name}


@pytest.mark.gpu
def test_harness_enqueues_on_gpu():
    if prebuilt() and (prebuilt() / "s2sa_harness").is_file():
        build = prebuilt()
    else:
        build = plugin_build(header_dirs()[0] if header_dirs() else None)
    r = run_tool([str(build / "s2sa_harness"), str(build / "libs2trt_plugins.so")], timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "enqueue matches" in r.stdout and "FAIL" not in r.stdout
    # A plugin that only went through onShapeChange (as the builder's timing does) enqueues inside a
    # CUDA graph capture: nothing in enqueue allocates or copies.
    assert "captured enqueue of a never-attached plugin matches" in r.stdout


@pytest.mark.gpu
def test_plugin_without_code_for_the_gpu_is_refused_at_creation():
    """A library built for an architecture the GPU cannot run (sm_75 cubin, no PTX, on sm_80+) refuses
    the plugin at createPlugin with the fix in one logged error, instead of -1 at the first enqueue."""
    include_dir = header_dirs()[0] if header_dirs() else None
    if include_dir is None:
        pytest.skip("TENSORRT_INCLUDE_DIR / TENSORRT_INCLUDE_DIRS not set")
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    build = cmake_build("plugin-sm75-only", f"-DTENSORRT_INCLUDE_DIR={include_dir}", arch="75-real")
    lib = ctypes.CDLL(str(build / "libs2trt_kernels.so"))
    status = lib.s2sa_check_device()
    if status == 0:
        pytest.skip("this GPU is sm_75: the sm_75-only build has code for it")
    assert status in (98, 209)  # cudaErrorInvalidDeviceFunction, cudaErrorNoKernelImageForDevice
    r = run_tool([str(build / "s2sa_harness"), str(build / "libs2trt_plugins.so")], timeout=300)
    assert r.returncode != 0
    assert "has no code for GPU" in r.stdout and "built for CUDA architectures 75-real" in r.stdout
    assert "-DCMAKE_CUDA_ARCHITECTURES=" in r.stdout
