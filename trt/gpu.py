"""The CUDA device: its name and compute capability (for engine sidecars), and making it current
before TensorRT creates its context."""

from __future__ import annotations

import logging
from typing import Any

from s2trt.errors import MissingDependencyError, S2Error

log = logging.getLogger(__name__)


def gpu_info(device: int = 0) -> tuple[str | None, str | None]:
    """(GPU name, compute capability like "8.7") via cuda-python or pycuda; None where unknown."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, props = cudart.cudaGetDeviceProperties(device)
        if err == cudart.cudaError_t.cudaSuccess:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
            return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    except Exception as e:  # a driver problem must not hide the engine's own error
        log.debug("cuda-python device query failed: %s", e)
    try:
        import pycuda.driver as drv

        drv.init()
        dev = drv.Device(device)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except ImportError:
        pass
    except Exception as e:
        log.debug("pycuda device query failed: %s", e)
    return None, None


def select_device(device: int) -> None:
    """Make `device` current before TensorRT creates its CUDA context."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
    except ImportError:
        if device != 0:
            raise MissingDependencyError("--device needs the Python package 'cuda-python', which is "
                                         "not installed: pip install 's2trt[gpu]'") from None
        return
    (err,) = cudart.cudaSetDevice(device)
    if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
        raise S2Error(insufficient_driver_message(cudart, device))
    if err != cudart.cudaError_t.cudaSuccess:
        raise S2Error(f"cannot use CUDA device {device} ({err}): check --device and nvidia-smi")


def cuda_version(v: int) -> str:
    """CUDA's 1000 * major + 10 * minor (cudaDriverGetVersion, cudaRuntimeGetVersion) as "12.6"."""
    return f"{v // 1000}.{v % 1000 // 10}"


def insufficient_driver_message(cudart: Any, device: int) -> str:
    """What to install when cuda-python's CUDA runtime is newer than the driver can serve.

    pip cannot see the driver, so the `gpu` extra (cuda-python 12.x) is the one that runs on every
    driver from R525 on, JetPack 6 included; `gpu-cu13` needs CUDA 13's R580 (docs/DESIGN.md §5).
    """
    _, runtime = cudart.cudaRuntimeGetVersion()
    _, driver = cudart.cudaDriverGetVersion()
    head = f"cannot use CUDA device {device}: cuda-python's CUDA runtime is {cuda_version(runtime)}"
    if not driver:
        return f"{head} and no NVIDIA driver was found: install the NVIDIA driver (nvidia-smi lists the GPUs)"
    head += f", newer than this NVIDIA driver's CUDA {cuda_version(driver)}"
    if driver >= 12000:
        return (f"{head}: install the cuda-python that matches the driver, pip install 's2trt[gpu]' "
                "(cuda-python 12.x, any driver from R525 on, JetPack 6 included); 's2trt[gpu-cu13]' "
                "needs an R580 or newer driver")
    return f"{head}: update the NVIDIA driver to R525 or newer, then pip install 's2trt[gpu]'"
