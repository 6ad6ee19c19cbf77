"""TensorRT backend (`s2infer --engine`): TensorRT 10/11 tensor-name API, pinned memory, one stream.

Version differences stay in s2trt.runtime.trt_compat; this module uses only API present in both 10.3
(JetPack 6) and 11.x. `trt` is always the module object so the API conformance test can check it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2trt.errors import S2Error
from s2trt.meta import ModelMeta
from s2trt.runtime.backend import BatchedBackend, BatchSpec, output_layout
from s2trt.text import printable

log = logging.getLogger(__name__)

# TensorRT DataType member -> NumPy type; looked up by name so a member missing in one version is skipped.
_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT8": np.int8,
           "UINT8": np.uint8, "BOOL": np.bool_, "INT64": np.int64}

Shape = tuple[int, ...]


@dataclass
class TensorInfo:
    name: str
    is_input: bool
    shape: Shape  # as the engine declares it; -1 for a dimension chosen at run time
    dtype: Any  # NumPy type
    profile: tuple[Shape, Shape, Shape] | None = None  # (min, opt, max) of a dynamic input

    def profile_text(self) -> str:
        if self.profile is None:
            return f"fixed shape {fmt(self.shape)}"
        lo, opt, hi = self.profile
        return f"profile min {fmt(lo)}, opt {fmt(opt)}, max {fmt(hi)}"


def fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def numpy_dtype(trt: Any, dt: Any) -> Any:
    for name, np_type in _DTYPES.items():
        if getattr(trt.DataType, name, None) == dt:
            return np_type
    raise S2Error(f"the engine uses tensor type {dt}, which s2infer does not handle")


def describe_engine(engine: Any, trt: Any) -> list[TensorInfo]:
    """Every I/O tensor of a deserialized engine, with the profile of dynamic inputs (profile 0)."""
    infos = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        profile = None
        if is_input and -1 in shape:
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            profile = (tuple(int(d) for d in lo), tuple(int(d) for d in opt), tuple(int(d) for d in hi))
        infos.append(TensorInfo(name, is_input, shape, numpy_dtype(trt, engine.get_tensor_dtype(name)),
                                profile))
    return infos


def plan_input(info: TensorInfo, imgsz: tuple[int, int], source: str) -> BatchSpec:
    """The batch range of the engine's input, after checking that imgsz fits it."""
    if len(info.shape) != 4 or info.shape[1] not in (3, -1):
        raise S2Error(f"{source}: input '{info.name}' has shape {fmt(info.shape)}; an s2trt engine "
                      "takes (batch, 3, h, w)")
    h, w = imgsz
    lo, hi = (info.profile[0], info.profile[2]) if info.profile else (info.shape, info.shape)
    if not (lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3]):
        raise S2Error(f"{source}: image size {h}x{w} does not fit the engine ({info.profile_text()}); "
                      f"run with --imgsz {hi[2]} {hi[3]} or rebuild the engine for {h}x{w}")
    return BatchSpec(int(lo[0]), int(hi[0]))


class TrtBackend(BatchedBackend):
    def __init__(self, path: str | Path, plugin_lib: str | None = None, device: str = "auto", *,
                 trt: Any = None, cuda: Any = None):
        from s2trt.runtime import trt_compat

        path = Path(path)
        if not path.is_file():
            raise S2Error(f"TensorRT engine not found: {path}")
        if trt is None:
            trt = trt_compat.import_tensorrt("s2infer --engine")
        self.trt = trt
        gpu = cuda_index(device)
        if cuda is None:
            trt_compat.select_device(gpu)
        sidecar = trt_compat.read_engine_sidecar(path)
        trt_compat.check_engine_compatible(path, sidecar, trt, gpu)
        needs_plugin = bool((sidecar or {}).get("plugin"))
        if plugin_lib or needs_plugin:
            lib = trt_compat.engine_plugin_library(path, sidecar, plugin_lib)
            if lib is None:
                built_with = Path((sidecar or {}).get("plugin_library") or trt_compat.PLUGIN_LIB_NAME).name
                raise S2Error(
                    f"{printable(path.name)} needs the {trt_compat.PLUGIN_NAME} plugin library: give "
                    f"--plugin-lib or ${trt_compat.PLUGIN_ENV}, put the library it was built with "
                    f"({printable(built_with)}) next to the engine, or build it with "
                    f"`{trt_compat.PLUGIN_BUILD_CMD}`")
            # load_library registers the creators the library lists in getCreators(); a plain
            # dlopen registers nothing, and deserializing would fail with "plugin not found".
            trt_compat.ensure_plugin(trt, lib, needs_plugin)

        # CUDA before TensorRT: pycuda's autoinit makes its own context, and the engine must be
        # deserialized into the context its buffers and stream belong to.
        self.cuda = cuda if cuda is not None else _open_cuda()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                version = trt_compat.version_str(trt_compat.trt_version(trt))
                fix = trt_compat.rebuild_command(sidecar) if sidecar else "s2export <model.pt>"
                raise S2Error(f"TensorRT {version} could not load {path} (see its message above): an engine "
                              "runs only on the TensorRT version and GPU that built it, with its plugin "
                              f"library loaded; rebuild it here with: {fix}")
            self.tensors = describe_engine(self.engine, trt)
            inputs = [t for t in self.tensors if t.is_input]
            if len(inputs) != 1:
                raise S2Error(f"{path} has {len(inputs)} inputs; an s2trt engine has one ('images')")
            self.input = inputs[0]
            self.outputs = [t for t in self.tensors if not t.is_input]
            self.layout = output_layout([t.name for t in self.outputs], str(path))
            self.meta = self._meta(sidecar, path)
            self.spec = plan_input(self.input, self.imgsz, str(path))
            self.name = f"tensorrt {trt_compat.version_str(trt_compat.trt_version(trt))}"
            log.info("%s: %s, input %s %s, outputs %s", path.name, self.name, self.input.name,
                     self.input.profile_text(), self.layout)

            self.context = self.engine.create_execution_context()
            self._allocate()
        except BaseException:
            self.close()
            raise

    def _meta(self, sidecar: dict | None, path: Path) -> ModelMeta:
        if sidecar is not None:
            return ModelMeta.from_dict(sidecar, str(path))
        shape = self.input.profile[2] if self.input.profile else self.input.shape
        out0 = next((t for t in self.outputs if t.name == "output0"), None)
        nc = out0.shape[-1] - 5 if out0 is not None and out0.shape[-1] > 5 else 0
        log.warning("%s has no sidecar %s.json: class names unknown, boxes labelled by class id",
                    path, path.name)
        return ModelMeta(names=[str(i) for i in range(nc)], imgsz=[shape[2], shape[3]])

    def _allocate(self) -> None:
        """Buffers for the largest batch, set once: every run then only copies and enqueues."""
        h, w = self.imgsz
        self._max_shape = (self.spec.max, 3, h, w)
        if self.input.profile is not None:
            self._set_input_shape(self._max_shape)
        self._dev: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        for t in self.tensors:
            shape = self._max_shape if t.is_input else tuple(self.context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise S2Error(f"the engine's output '{t.name}' has no fixed size ({fmt(shape)}) at "
                              f"batch {self.spec.max}: data-dependent outputs are not supported")
            count = int(np.prod(shape))
            self._host[t.name] = self.cuda.host_array((count,), t.dtype)
            self._dev[t.name] = self.cuda.malloc(count * np.dtype(t.dtype).itemsize)
            self.context.set_tensor_address(t.name, self._dev[t.name])

    def _set_input_shape(self, shape: Shape) -> None:
        if not self.context.set_input_shape(self.input.name, shape):
            raise S2Error(f"TensorRT refused input shape {fmt(shape)} for '{self.input.name}' "
                          f"({self.input.profile_text()})")

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        n = batch.shape[0]
        if self.input.profile is not None:
            self._set_input_shape(batch.shape)
        host_in = self._host[self.input.name][:batch.size].reshape(batch.shape)
        np.copyto(host_in, batch, casting="same_kind")
        self.cuda.h2d(self._dev[self.input.name], host_in)
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise S2Error(f"TensorRT failed to run a batch of {n} (see its message above)")
        views = {}
        for t in self.outputs:
            shape = tuple(self.context.get_tensor_shape(t.name))
            views[t.name] = self._host[t.name][:int(np.prod(shape))].reshape(shape)
            self.cuda.d2h(views[t.name], self._dev[t.name])
        self.cuda.synchronize()
        # Copies: the pinned buffers are reused by the next batch while this one is post-processed.
        return {k: v.copy() for k, v in views.items()}

    def close(self) -> None:
        if getattr(self, "cuda", None) is not None:
            self.cuda.close()
            self.cuda = None
        self.context = self.engine = None


def cuda_index(device: str) -> int:
    """'auto' | 'cuda' | 'cuda:N' | 'N' -> the CUDA device index; TensorRT cannot run on the CPU."""
    d = device.lower().removeprefix("cuda").lstrip(":")
    if device.lower() == "cpu":
        raise S2Error("--engine runs on a GPU only: drop --device cpu, or use --onnx on the CPU")
    if d in ("", "auto"):
        return 0
    if not d.isdigit():
        raise S2Error(f"--device {device}: expected auto, cuda or cuda:N")
    return int(d)


def _open_cuda() -> Any:
    from s2trt.runtime.cuda_mem import open_cuda

    return open_cuda()
