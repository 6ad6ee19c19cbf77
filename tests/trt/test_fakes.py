"""Every fake of tests/support/fakes.py against the interface it stands for, so a fake cannot drift from it.

- FakeCuda against the CudaMemory protocol (s2trt.trt.cuda_mem), as both real implementations are;
- FakeCudart against cuda-python's real `cuda.bindings.runtime`: names, parameters, constants;
- the TensorRT fakes against the real TensorRT Python modules 10.3, 10.16 and 11.4 imported over stub
  libraries (tests/support/trt_stub): every method a fake offers exists on the class it stands for with the
  same parameter names (a fake may leave out trailing optional ones), every enum member exists.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fakes import (
    DataType,
    FakeBuilderConfig,
    FakeContext,
    FakeCuda,
    FakeCudart,
    FakeEngine,
    FakeLayer,
    FakeLetterbox,
    FakeNetwork,
    FakeProfile,
    FakeTRT,
    InspectedEngine,
    Logger,
    TensorIOMode,
    fake_trt,
)
from trt_stub import provision

from s2trt.runtime.backends.gpu_letterbox import GpuLetterbox
from s2trt.trt.cuda_mem import CudaMemory, CudaPythonMemory, PyCudaMemory

# What the tests read from FakeCuda beyond CudaMemory: the GPU's side of its memory and queues.
CUDA_PROBES = {"issue", "run_stream", "bytes_at"}


def _public_methods(cls: type) -> dict[str, Any]:
    return {name: value for name, value in vars(cls).items()
            if not name.startswith("_") and callable(value) and not isinstance(value, type)}


def _params(fn: Any) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter after self."""
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


# --------------------------------------------------------------------------------- CudaMemory

@pytest.mark.parametrize("impl", [FakeCuda, CudaPythonMemory, PyCudaMemory])
def test_cuda_memory_implementations_match_the_protocol(impl: type) -> None:
    protocol = _public_methods(CudaMemory)
    methods = {n: getattr(impl, n) for n in dir(impl) if not n.startswith("_") and callable(getattr(impl, n))}
    assert protocol.keys() <= methods.keys(), protocol.keys() - methods.keys()
    for name, fn in protocol.items():
        assert _params(methods[name]) == _params(fn), name
    extra = methods.keys() - protocol.keys()
    assert extra == (CUDA_PROBES if impl is FakeCuda else set()), extra


def test_fake_cuda_has_the_protocols_attributes() -> None:
    cuda = FakeCuda()
    for name in CudaMemory.__annotations__:
        assert hasattr(cuda, name), name


def test_fake_cuda_copies_as_cuda_does() -> None:
    """From page-locked memory a copy reads its source when it runs; from pageable memory CUDA
    stages the source before cudaMemcpyAsync returns, and a copy into pageable memory is done when it
    returns (CUDA runtime API, "API synchronization behavior")."""
    cuda = FakeCuda()
    dev = cuda.malloc(16)
    pinned, pageable = cuda.host_array((4,), np.float32), np.zeros(4, np.float32)
    pinned[:], pageable[:] = 1, 2
    cuda.h2d(dev, pinned)
    pinned[:] = 3  # before the copy ran: the copy sees it
    cuda.synchronize()
    assert (cuda.bytes_at(dev, 16).view(np.float32) == 3).all()
    cuda.h2d(dev, pageable)
    pageable[:] = 4  # after cudaMemcpyAsync returned: the copy does not see it
    cuda.synchronize()
    assert (cuda.bytes_at(dev, 16).view(np.float32) == 2).all()
    back = np.zeros(4, np.float32)
    cuda.d2h(back, dev)
    assert (back == 2).all() and [c[0] for c in cuda.pageable] == ["h2d", "d2h"]


def test_fake_letterbox_takes_gpu_letterboxs_call() -> None:
    call = inspect.signature(GpuLetterbox.__call__).parameters
    fake = inspect.signature(FakeLetterbox.__call__).parameters
    assert [(p.name, p.kind, p.default) for p in fake.values()] == [
        (p.name, p.kind, p.default) for p in call.values()]


# ------------------------------------------------------------------------------------ cudart

def _cudart_params(doc: str) -> list[str]:
    """Parameter names from cuda-bindings' first doc line: "cudaMemcpyAsync(dst, src, size_t count,
    kind: cudaMemcpyKind, stream)" -> dst, src, count, kind, stream."""
    first = doc.splitlines()[0]
    inside = first[first.index("(") + 1:first.rindex(")")]
    return [p.split(":")[0].split()[-1] for p in inside.split(",") if p.strip()]


def test_fake_cudart_matches_cuda_bindings() -> None:
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) not installed")
    functions = {n: f for n, f in _public_methods(FakeCudart).items() if n.startswith("cuda")}
    assert len(functions) >= 20
    for name, fn in functions.items():
        assert hasattr(runtime, name), name
        assert [p[0] for p in _params(fn)] == _cudart_params(getattr(runtime, name).__doc__), name
    for enum in ("cudaError_t", "cudaMemcpyKind", "cudaDeviceAttr", "cudaStreamCaptureMode"):
        members = {k: v for k, v in vars(getattr(FakeCudart, enum)).items() if not k.startswith("_")}
        assert members
        for member, value in members.items():
            assert int(getattr(getattr(runtime, enum), member)) == value, (enum, member)
    for constant in ("cudaStreamNonBlocking", "cudaEventDisableTiming"):
        assert getattr(runtime, constant) == getattr(FakeCudart, constant), constant


# ---------------------------------------------------------------------------------- TensorRT

# Fake class -> the TensorRT class it stands for.
TRT_CLASSES = {FakeEngine: "ICudaEngine", InspectedEngine: "ICudaEngine", FakeContext: "IExecutionContext",
               FakeBuilderConfig: "IBuilderConfig", FakeNetwork: "INetworkDefinition", FakeLayer: "ILayer",
               FakeProfile: "IOptimizationProfile"}
# FakeTRT's own state, which the tests read; everything else on it stands for the module's API.
FAKE_TRT_STATE = {"shape", "graph", "parse_errors", "creators", "loaded_libraries", "network", "config",
                  "engine"}


def _check_callable(api: dict, path: str, fn: Any, problems: list[str]) -> None:
    lo, hi = getattr(fn, "__trt_majors__", (None, None))  # a fake method marked @for_trt
    major = int(api["version"].split(".")[0])
    if (lo is not None and major < lo) or (hi is not None and major > hi):
        return
    if path not in api["paths"]:
        problems.append(f"{path} does not exist")
        return
    real = api["params"].get(path)
    try:
        names = [p[0] for p in _params(fn)]
    except (TypeError, ValueError):  # a builtin (list.append) has no signature to compare
        return
    if real is not None and names != real[:len(names)]:
        problems.append(f"{path}{tuple(names)}: the real one takes {tuple(real)}")


def _check_members(api: dict, prefix: str, namespace: Any, problems: list[str]) -> None:
    for member in (k for k in vars(namespace) if not k.startswith("_")):
        value = getattr(namespace, member)
        if callable(value) and not isinstance(value, type):
            _check_callable(api, f"{prefix}.{member}", value, problems)
        elif f"{prefix}.{member}" not in api["paths"]:
            problems.append(f"{prefix}.{member} does not exist")


@pytest.fixture(params=list(provision.WHEELS), ids=lambda v: f"trt{v}")
def trt_api(request: pytest.FixtureRequest) -> dict:
    return provision.api_or_skip(request.param)


def test_tensorrt_fakes_match_the_real_modules(trt_api: dict) -> None:
    problems: list[str] = []
    for fake, real in TRT_CLASSES.items():
        for name, fn in _public_methods(fake).items():
            _check_callable(trt_api, f"{real}.{name}", fn, problems)
    # The builder-side module fake, at this version (11 has no precision flags or INT8 calibrators).
    trt = FakeTRT(trt_api["version"])
    for name in (k for k in vars(trt) if not k.startswith("_") and k not in FAKE_TRT_STATE):
        if name not in trt_api["paths"]:
            problems.append(f"{name} does not exist")
        elif isinstance(getattr(trt, name), SimpleNamespace):
            _check_members(trt_api, name, getattr(trt, name), problems)
    for member in ("VERBOSE", "WARNING"):
        if f"Logger.{member}" not in trt_api["paths"]:
            problems.append(f"Logger.{member} does not exist")
    built = {"Builder": trt.Builder(None), "Runtime": trt.Runtime(None),
             "OnnxParser": trt.OnnxParser(None, None), "IPluginRegistry": trt.get_plugin_registry()}
    for real, namespace in built.items():
        _check_members(trt_api, real, namespace, problems)
    trt.Builder(None).create_network(0)
    trt.Builder(None).create_builder_config()
    _check_members(trt_api, "EngineInspector", InspectedEngine(trt).create_engine_inspector(), problems)
    # The runtime-side module fake.
    module = fake_trt(None, trt_api["version"])
    for name, cls in (("DataType", DataType), ("TensorIOMode", TensorIOMode), ("Logger", Logger)):
        _check_members(trt_api, name, cls, problems)
    _check_members(trt_api, "Runtime", module.Runtime, problems)
    assert not problems, f"TensorRT {trt_api['version']}:\n" + "\n".join(problems)
