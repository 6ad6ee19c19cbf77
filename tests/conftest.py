"""Shared test settings: GPU / TensorRT marks that skip with a reason where the hardware is absent."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess

import pytest


@functools.cache
def gpu_reason() -> str | None:
    """None when an NVIDIA GPU is usable, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return "nvidia-smi lists no GPU"
    return None


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module: two OpenMP threads on a shared 2-core machine spin against
    each other (measured 10x slower under load), and the demo-sized models need no more."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _s2trt_logger_restored():
    """CLIs run in-process set up the `s2trt` logger (level, handlers, no propagation); restoring it
    keeps later tests that capture logs independent of the order tests run in."""
    log = logging.getLogger("s2trt")
    saved = (log.level, list(log.handlers), log.propagate)
    yield
    log.setLevel(saved[0])
    log.handlers[:] = saved[1]
    log.propagate = saved[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        for item in items:
            if "tensorrt" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="TensorRT's Python module is not installed"))
    reason = gpu_reason()
    if reason is None:
        return
    require = os.environ.get("S2TRT_REQUIRE_GPU") == "1"
    for item in items:
        if "gpu" in item.keywords:
            if require:
                item.add_marker(pytest.mark.xfail(reason=f"S2TRT_REQUIRE_GPU=1 but {reason}",
                                                  strict=True, run=False))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))
