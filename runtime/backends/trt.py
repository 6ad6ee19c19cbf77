"""TensorRT backend (`s2infer --engine`): TensorRT 10/11 tensor-name API, overlapped batches.

Two buffer sets and three streams (upload, compute, download) ordered by events, so the copy-in
(and the CPU's letterbox) of batch n+1 overlaps the run of batch n; the host waits only in
`collect`. What a kernel reads or writes is device memory, what the CPU reads or writes page-locked
host memory, on discrete and integrated GPUs alike (see `TrtBackend._allocate`). The enqueue is
replayed from a CUDA graph per buffer set and input shape when the engine can be captured.
`submit_frames` takes decoded frames: with the kernels library (gpu_letterbox.py) they are uploaded
as uint8 and letterboxed on the upload stream, else letterboxed on the CPU into the pinned input
buffer and copied in.

Version differences stay in s2trt.trt.versions; this module uses only API present in both 10.3
(JetPack 6) and 11.x. `trt` is always the module object so the API conformance test can check it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2trt.detect.letterbox import LetterboxInfo, check_frame, preprocess
from s2trt.errors import S2Error
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.base import BatchedBackend, BatchSpec, output_layout
from s2trt.text import printable
from s2trt.trt.cuda_mem import CaptureFailed

log = logging.getLogger(__name__)

SLOTS = 2  # buffer sets: one uploading while the other runs; a third would add latency, not speed
GRAPHS_ON = "on"

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


@dataclass(frozen=True, eq=False)
class Pending:
    """A submitted batch; `TrtBackend.collect` returns its outputs."""

    slot: int
    n: int  # the caller's frames; a fixed-batch engine runs more and their outputs are dropped
    shapes: dict[str, Shape]  # of the outputs, for the batch the engine ran


@dataclass(eq=False)
class _Slot:
    """One buffer set: input and outputs in page-locked host memory (the CPU's side) and in device
    memory (what the GPU reads and writes), and the events that order its upload, run and download."""

    index: int
    host_in: np.ndarray
    dev_in: int
    host_out: dict[str, np.ndarray]
    dev_out: dict[str, int]
    uploaded: int
    computed: int
    ready: int
    pending: Pending | None = None
    staging: tuple[np.ndarray, int] | None = field(default=None)  # uint8 frames for GPU letterbox


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
                 cuda_graphs: bool = True, gpu_preprocess: bool | None = None,
                 trust_engine_plugin: bool = False, trt: Any = None, cuda: Any = None, letterbox: Any = None):
        """`gpu_preprocess`: None uses the kernels library when it is there, True requires it.
        `trust_engine_plugin`: the library beside the engine may load (else $S2TRT_TRUST_ENGINE_PLUGIN says).
        `trt`, `cuda` and `letterbox` replace the TensorRT module, CUDA memory and GPU letterbox."""
        from s2trt.trt.gpu import select_device
        from s2trt.trt.plugin_lib import (
            PLUGIN_BUILD_CMD,
            PLUGIN_ENV,
            PLUGIN_LIB_NAME,
            PLUGIN_NAME,
            engine_plugin_library,
            ensure_plugin,
        )
        from s2trt.trt.sidecar import check_engine_compatible, read_engine_sidecar, rebuild_command
        from s2trt.trt.versions import import_tensorrt, trt_version, version_str

        path = Path(path)
        if not path.is_file():
            raise S2Error(f"TensorRT engine not found: {path}")
        if trt is None:
            trt = import_tensorrt("s2infer --engine")
        self.trt = trt
        gpu = cuda_index(device)
        if cuda is None:
            select_device(gpu)
        sidecar = read_engine_sidecar(path)
        check_engine_compatible(path, sidecar, trt, gpu)
        needs_plugin = bool((sidecar or {}).get("plugin"))
        if plugin_lib or needs_plugin:
            lib = engine_plugin_library(path, sidecar, plugin_lib, trust_engine_plugin or None)
            if lib is None:
                built_with = Path((sidecar or {}).get("plugin_library") or PLUGIN_LIB_NAME).name
                raise S2Error(
                    f"{printable(path.name)} needs the {PLUGIN_NAME} plugin library: give "
                    f"--plugin-lib or ${PLUGIN_ENV}, put the library it was built with "
                    f"({printable(built_with)}) next to the engine, or build it with "
                    f"`{PLUGIN_BUILD_CMD}`")
            # load_library registers the creators the library lists in getCreators(); a plain
            # dlopen registers nothing, and deserializing would fail with "plugin not found".
            ensure_plugin(trt, lib, needs_plugin)

        # CUDA before TensorRT: pycuda's autoinit makes its own context, and the engine must be
        # deserialized into the context its buffers and stream belong to.
        self.cuda = cuda if cuda is not None else _open_cuda()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                version = version_str(trt_version(trt))
                fix = rebuild_command(sidecar) if sidecar else "s2export <model.pt>"
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
            self.name = f"tensorrt {version_str(trt_version(trt))}"
            log.info("%s: %s, input %s %s, outputs %s", path.name, self.name, self.input.name,
                     self.input.profile_text(), self.layout)

            self.context = self.engine.create_execution_context()
            self._graphs: dict[tuple[int, Shape], int] = {}
            self._enqueue_time: dict[str, tuple[float, int]] = {}
            self.graph_state = GRAPHS_ON if cuda_graphs else "off (not requested)"
            self._shape: Shape = self.input.shape
            self._allocate()
            self._letterbox_required = bool(gpu_preprocess)
            if letterbox is None and self.input.dtype not in (np.float32, np.float16):
                gpu_preprocess = False  # the kernel writes FP32 or FP16 only
            self._letterbox = letterbox if letterbox is not None else _open_letterbox(gpu_preprocess)
            log.info("%s: %d buffer sets in device memory (%s GPU), CUDA graphs %s, preprocessing on the "
                     "%s", path.name, SLOTS, "integrated" if self.cuda.integrated else "discrete",
                     self.graph_state, self.preprocess_device)
        except BaseException:
            self.close()
            raise

    def _meta(self, sidecar: dict | None, path: Path) -> ModelMeta:
        if sidecar is not None:
            return ModelMeta.from_dict(sidecar, str(path))
        shape = self.input.profile[2] if self.input.profile else self.input.shape
        out0 = next((t for t in self.outputs if t.name == "output0"), None)
        proto = next((t for t in self.outputs if t.name == "output1"), None)
        nm = proto.shape[1] if proto is not None and len(proto.shape) == 4 else 0  # a seg model's
        nc = out0.shape[-1] - 5 - nm if out0 is not None and out0.shape[-1] > 5 + nm else 0
        log.warning("%s has no sidecar %s.json: class names unknown, boxes labelled by class id",
                    path, path.name)
        return ModelMeta(names=[str(i) for i in range(nc)], imgsz=[shape[2], shape[3]],
                         task="segment" if nm else "detect", nm=nm)

    def _allocate(self) -> None:
        """Two buffer sets for the largest batch, set once: every batch then only copies and enqueues.

        Batch n+1 is copied into one set on the upload stream while batch n runs from the other on
        the compute stream; its outputs come back on the download stream. An integrated GPU (Jetson)
        gets the same plan: it shares the DRAM with the CPU but reads page-locked host memory
        uncached (CUDA for Tegra application note, "Memory Selection"), so the letterbox kernel's
        neighbouring taps and TensorRT's first convolution would each go to DRAM; one copy-engine pass
        into device memory, which the GPU caches, costs less than that.
        """
        h, w = self.imgsz
        self._max_shape = (self.spec.max, 3, h, w)
        if self.input.profile is not None:
            self._set_input_shape(self._max_shape)
        counts = {}
        for t in self.tensors:
            shape = self._max_shape if t.is_input else tuple(self.context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise S2Error(f"the engine's output '{t.name}' has no fixed size ({fmt(shape)}) at "
                              f"batch {self.spec.max}: data-dependent outputs are not supported")
            counts[t.name] = int(np.prod(shape))
        cuda = self.cuda
        self._compute = cuda.stream_handle
        self._upload = cuda.new_stream()
        self._download = cuda.new_stream()
        self._slots = [self._buffer_set(i, counts) for i in range(SLOTS)]
        self._next_slot = 0

    def _buffer_set(self, index: int, counts: dict[str, int]) -> _Slot:
        bufs = {t.name: self._host_and_device(counts[t.name], t.dtype) for t in self.tensors}
        events = [self.cuda.new_event() for _ in range(3)]
        return _Slot(index, *bufs.pop(self.input.name), {k: v[0] for k, v in bufs.items()},
                     {k: v[1] for k, v in bufs.items()}, *events)

    def _host_and_device(self, count: int, dtype: Any) -> tuple[np.ndarray, int]:
        """Page-locked host memory (the CPU's side of a copy) and device memory of the same size."""
        return self.cuda.host_array((count,), dtype), self.cuda.malloc(count * np.dtype(dtype).itemsize)

    def _set_input_shape(self, shape: Shape) -> None:
        if not self.context.set_input_shape(self.input.name, shape):
            raise S2Error(f"TensorRT refused input shape {fmt(shape)} for '{self.input.name}' "
                          f"({self.input.profile_text()})")
        self._shape = shape

    # ------------------------------------------------------------------ overlapped submit / collect

    def submit(self, batch: np.ndarray) -> Pending:
        """Copies a preprocessed batch (at most max_batch frames) in and enqueues it; returns at once.

        At most two batches are in flight: submit batch n+1, then collect batch n, so the GPU runs n+1
        while the caller post-processes n. A fixed-batch engine gets the last frame repeated.
        """
        self.check_input(batch)
        n = self._check_count(batch.shape[0])
        return self._submit_host(n, lambda dst: np.copyto(dst, batch, casting="same_kind"))

    def _submit_host(self, n: int, fill: Callable[[np.ndarray], object]) -> Pending:
        """`fill` writes n items into the next buffer set's pinned input; the last is repeated up to
        the engine's smallest batch, then the input is uploaded and the batch enqueued."""
        slot = self._free_slot()
        run_shape = (max(n, self.spec.min), 3, *self.imgsz)
        host_in = slot.host_in[:int(np.prod(run_shape))].reshape(run_shape)
        fill(host_in[:n])
        host_in[n:] = host_in[n - 1]
        self.cuda.h2d(slot.dev_in, host_in, self._upload)
        return self._enqueue(slot, n, run_shape)

    def collect(self, pending: Pending) -> dict[str, np.ndarray]:
        """The outputs of a submitted batch; the only place the host waits for the GPU."""
        slot = self._slots[pending.slot]
        if slot.pending is not pending:
            raise ValueError("this batch was already collected")
        self.cuda.event_synchronize(slot.ready)
        slot.pending = None
        # Copies: the pinned buffers take batch n+2 while the caller still holds batch n's results.
        return {name: slot.host_out[name][:int(np.prod(shape))].reshape(shape)[:pending.n].copy()
                for name, shape in pending.shapes.items()}

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.collect(self.submit(batch))

    def _check_count(self, n: int) -> int:
        if not 1 <= n <= self.spec.max:
            raise ValueError(f"submit takes 1 to {self.spec.max} frames, got {n} (infer() splits larger "
                             "batches)")
        return n

    def _free_slot(self) -> _Slot:
        """The buffer set the next batch goes to; its last batch was collected, so by then the GPU
        finished with it (collect waited for its download, which came after its run and upload)."""
        slot = self._slots[self._next_slot]
        if slot.pending is not None:
            raise RuntimeError(f"{SLOTS} batches are in flight: collect the oldest before submitting")
        return slot

    def _enqueue(self, slot: _Slot, n: int, run_shape: Shape) -> Pending:
        """Orders the slot's run after its upload, and its download after its run, all on the GPU."""
        cuda, compute = self.cuda, self._compute
        cuda.record(slot.uploaded, self._upload)
        cuda.wait(compute, slot.uploaded)
        if self.input.profile is not None and run_shape != self._shape:
            self._set_input_shape(run_shape)
        graph = self._graphs.get((slot.index, run_shape))
        t0 = time.perf_counter()
        if graph is not None:
            cuda.launch(graph, compute)
            self._time_enqueue("graph", t0)
        else:
            self._bind(slot)
            if not self.context.execute_async_v3(compute):
                raise S2Error(f"TensorRT failed to run a batch of {run_shape[0]} (see its message above)")
            self._time_enqueue("direct", t0)
            if self.graph_state == GRAPHS_ON:
                self._capture(slot, run_shape)
        cuda.record(slot.computed, compute)
        shapes = {t.name: tuple(int(d) for d in self.context.get_tensor_shape(t.name)) for t in self.outputs}
        cuda.wait(self._download, slot.computed)
        for name, shape in shapes.items():
            host = slot.host_out[name][:int(np.prod(shape))]
            cuda.d2h(host, slot.dev_out[name], self._download)
        cuda.record(slot.ready, self._download)
        slot.pending = Pending(slot.index, n, shapes)
        self._next_slot = (slot.index + 1) % SLOTS
        return slot.pending

    def _time_enqueue(self, how: str, t0: float) -> None:
        total, count = self._enqueue_time.get(how, (0.0, 0))
        self._enqueue_time[how] = (total + time.perf_counter() - t0, count + 1)

    def enqueue_summary(self) -> str:
        """Host time per enqueue, by CUDA graph launch and by direct enqueueV3: what graphs save."""
        parts = [f"{how} {count} x {total / count * 1e3:.3f} ms"
                 for how, (total, count) in sorted(self._enqueue_time.items())]
        return f"CUDA graphs {self.graph_state}; host time per enqueue: {', '.join(parts) or 'none yet'}"

    def _bind(self, slot: _Slot) -> None:
        self.context.set_tensor_address(self.input.name, slot.dev_in)
        for name, ptr in slot.dev_out.items():
            self.context.set_tensor_address(name, ptr)

    # ------------------------------------------------------------------------------ CUDA graphs

    def _capture(self, slot: _Slot, run_shape: Shape) -> None:
        """Records the enqueue just made as a CUDA graph for this buffer set and shape.

        The enqueue just made is the one TensorRT needs before a capture (it does the initialisation
        that a capture must not contain); it already computed this batch, so the capture only
        records. The host waits for it to finish before capturing, as trtexec
        (samples/common/sampleInference.cpp, v10.3.0 line 968) and TensorRT-Edge-LLM
        (engineExecutor.cpp, captureGraph) do: once per buffer set and shape, never in the steady loop.
        Graphs of one context keyed by tensor addresses and shapes, replayed when they match and
        enqueueV3 otherwise, is how NVIDIA's TensorRT-Edge-LLM runs engines on Jetson
        (cpp/runtime/exec/engineExecutor.h). An engine whose layers or plugins cannot be captured
        turns graphs off, once.
        """
        t0 = time.perf_counter()
        compute = self._compute
        self.cuda.record(slot.computed, compute)
        self.cuda.event_synchronize(slot.computed)
        try:
            self.cuda.begin_capture(compute)
        except CaptureFailed as e:
            self._graphs_off(str(e))
            return
        ok = False
        try:
            # Under capture enqueueV3 returns false when the engine holds work that cannot be
            # captured (trtexec, samples/common/sampleInference.cpp: createEnqueueFunction).
            ok = bool(self.context.execute_async_v3(compute))
        finally:
            if not ok:
                self.cuda.abort_capture(compute)
        if not ok:
            self._graphs_off("TensorRT could not enqueue under stream capture (a layer or plugin of "
                             "this engine is not capturable)")
            return
        try:
            graph = self.cuda.end_capture(compute)
        except CaptureFailed as e:
            self._graphs_off(str(e))
            return
        self._graphs[(slot.index, run_shape)] = graph
        log.info("CUDA graph captured for batch %d, buffer set %d, in %.1f ms", run_shape[0], slot.index,
                 (time.perf_counter() - t0) * 1e3)

    def _graphs_off(self, reason: str) -> None:
        self.graph_state = f"off ({reason})"
        self._graphs.clear()  # what the warning says: every batch from now on is enqueued directly
        log.warning("CUDA graphs off: %s; batches are enqueued directly", reason)

    # ------------------------------------------------------------------------ preprocessing

    def submit_frames(self, frames: Sequence[np.ndarray], *, stride: int = 32, pad_value: int = 114,
                      scaleup: bool = True) -> tuple[Pending, list[LetterboxInfo]]:
        """Letterboxes BGR uint8 frames into the engine input and submits them.

        With the kernels library the frames are uploaded as they are (1 byte per pixel) and
        letterboxed on the GPU; without it, on the CPU straight into the pinned input buffer.
        """
        n = self._check_count(len(frames))
        for i, f in enumerate(frames):
            check_frame(f, i)
        if self._letterbox is not None:
            submitted = self._submit_gpu_letterbox(frames, n, stride, pad_value, scaleup)
            if submitted is not None:
                return submitted
        kw = {"stride": stride, "pad_value": pad_value, "scaleup": scaleup}
        infos: list[LetterboxInfo] = []

        def letterbox(dst: np.ndarray) -> None:
            if dst.dtype == np.float32:  # straight into pinned memory: no extra copy
                infos.extend(preprocess(frames, self.imgsz, out=dst, **kw)[1])
            else:
                x, done = preprocess(frames, self.imgsz, **kw)
                np.copyto(dst, x, casting="same_kind")
                infos.extend(done)

        return self._submit_host(n, letterbox), infos

    def _submit_gpu_letterbox(self, frames: Sequence[np.ndarray], n: int, stride: int, pad_value: int,
                              scaleup: bool) -> tuple[Pending, list[LetterboxInfo]] | None:
        """None when the letterbox kernel cannot run here (then it is off for good); the upload and
        the enqueue are not the kernel's: their errors are the batch's, raised as they are."""
        from s2trt.runtime.backends.gpu_letterbox import DeviceFrame

        slot = self._free_slot()
        host, dev = self._staging(slot, sum(f.nbytes for f in frames))
        placed, offset = [], 0
        for f in frames:
            np.copyto(host[offset:offset + f.nbytes].reshape(f.shape), f)
            placed.append(DeviceFrame(dev + offset, f.shape[0], f.shape[1]))
            offset += f.nbytes
        self.cuda.h2d(dev, host[:offset], self._upload)
        run = max(n, self.spec.min)
        placed += [placed[-1]] * (run - n)
        try:
            infos = self._letterbox(placed, slot.dev_in, self.imgsz, half=self.input.dtype == np.float16,
                                    stream=self._upload, stride=stride, pad_value=pad_value,
                                    scaleup=scaleup)
        except S2Error as e:
            if self._letterbox_required:
                raise
            log.warning("GPU preprocessing off, frames are letterboxed on the CPU: %s", e)
            self._letterbox = None
            return None
        return self._enqueue(slot, n, (run, 3, *self.imgsz)), list(infos[:n])

    def _staging(self, slot: _Slot, nbytes: int) -> tuple[np.ndarray, int]:
        """The slot's uint8 frames: page-locked for the CPU to write, in device memory for the
        letterbox kernel to read; grown (doubling) when a batch of larger frames arrives; outgrown
        buffers stay allocated until close, as the GPU may still read them."""
        if slot.staging is None or slot.staging[0].size < nbytes:
            size = max(nbytes, 2 * slot.staging[0].size if slot.staging is not None else 0)
            slot.staging = self._host_and_device(size, np.uint8)
        return slot.staging

    @property
    def preprocess_device(self) -> str:
        return "gpu" if self._letterbox is not None else "cpu"

    def close(self) -> None:
        cuda, self.cuda = getattr(self, "cuda", None), None
        try:
            if cuda is not None:
                cuda.synchronize()  # a batch still in flight reads and writes the buffers freed below
        finally:
            self.context = None  # before the engine, as TensorRT destroys them
            self.engine = None
            if cuda is not None:
                cuda.close()


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


def _open_letterbox(want: bool | None) -> Any:
    """The kernels library's GPU letterbox, or None: CPU preprocessing."""
    if want is False:
        return None
    try:
        from s2trt.runtime.backends.gpu_letterbox import GpuLetterbox, default_kernels_library
    except ImportError:
        if want:
            raise S2Error("GPU preprocessing needs s2trt.runtime.backends.gpu_letterbox, which this install "
                          "lacks: reinstall s2trt") from None
        return None
    if want is None and default_kernels_library() is None:
        log.info("no s2trt kernels library: frames are letterboxed on the CPU")
        return None
    try:
        return GpuLetterbox()
    except S2Error as e:
        if want:
            raise
        log.warning("GPU preprocessing off, frames are letterboxed on the CPU: %s", e)
        return None


def _open_cuda() -> Any:
    from s2trt.trt.cuda_mem import open_cuda

    return open_cuda()
