"""The CUDA device: its name and compute capability (for engine sidecars), and making it current
before TensorRT creates its context."""

from __future__ import annotations

import logging

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
    if err != cudart.cudaError_t.cudaSuccess:
        raise S2Error(f"cannot use CUDA device {device} ({err}): check --device and nvidia-smi")
