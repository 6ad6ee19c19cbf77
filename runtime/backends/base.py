"""The interface every inference backend implements, and what they share: batching.

A backend runs the network on a preprocessed batch (float32 (B, 3, h, w)) and returns its raw outputs
by name: `output0` (B, N, 5 + nc) for a graph without NMS, or the four in-graph NMS outputs of
docs/DESIGN.md §3. `Backend.infer` hides the model's batch constraints: a fixed-batch model gets a partial
last batch padded, a batch larger than the model's maximum is split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from s2trt.detect.boxes import NMS_OUTPUTS, RAW_OUTPUT
from s2trt.errors import S2Error
from s2trt.meta import ModelMeta

log = logging.getLogger(__name__)

@runtime_checkable
class Backend(Protocol):
    """What the pipeline asks of every backend (TensorRT, ONNX Runtime, PyTorch, Triton).

    `infer` takes a letterboxed float32 (B, 3, h, w) batch of any B >= 1 and returns the graph's
    outputs by name (`output0`, or the four NMS outputs). One backend is driven by one thread at a
    time; `close` releases what it holds and may be called more than once."""

    meta: ModelMeta
    name: str  # for messages: "onnxruntime (CPUExecutionProvider)", "tensorrt 10.3.0", ...

    @property
    def imgsz(self) -> tuple[int, int]: ...

    @property
    def max_batch(self) -> int: ...

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@runtime_checkable
class OverlappedBackend(Backend, Protocol):
    """A backend that takes batch n+1 before batch n's results are read (TensorRT's): `submit`
    returns at once, `collect` is the only wait. Called from one thread.

    `preprocess_device` is "gpu" when `submit_frames` letterboxes raw BGR uint8 frames on the
    device, "cpu" when the pipeline letterboxes (and `submit_frames` is not called);
    `enqueue_summary` says how the batches were enqueued (for the debug log at the end of a run)."""

    @property
    def preprocess_device(self) -> str: ...

    def submit(self, batch: np.ndarray) -> Any: ...

    def collect(self, pending: Any) -> dict[str, np.ndarray]: ...

    def submit_frames(self, frames: Sequence[np.ndarray], *, stride: int = 32, pad_value: int = 114,
                      scaleup: bool = True) -> tuple[Any, list]: ...

    def enqueue_summary(self) -> str: ...


@dataclass(frozen=True)
class BatchSpec:
    """The batch sizes a model accepts: fixed (min == max) or a range (dynamic)."""

    min: int
    max: int

    @property
    def fixed(self) -> bool:
        return self.min == self.max


class BatchedBackend:
    """Base for backends: subclasses implement `_run` for batches within `spec`; `infer` adapts."""

    meta: ModelMeta
    name: str = "backend"
    spec: BatchSpec = BatchSpec(1, 1)

    @property
    def imgsz(self) -> tuple[int, int]:
        h, w = self.meta.imgsz
        return int(h), int(w)

    @property
    def max_batch(self) -> int:
        return self.spec.max

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check_input(self, batch: np.ndarray) -> None:
        h, w = self.imgsz
        if batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            raise S2Error(f"{self.name}: input of shape {tuple(batch.shape)} does not fit the model, "
                          f"which takes (batch, 3, {h}, {w}); run with --imgsz {h} {w} or re-export "
                          "the model for the size you need")

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.check_input(batch)
        n = batch.shape[0]
        if n == 0:
            raise ValueError("empty batch")
        chunks = []
        for start in range(0, n, self.spec.max):
            part = batch[start:start + self.spec.max]
            k = part.shape[0]
            if k < self.spec.min:  # a fixed-batch model: pad with the last frame, drop its outputs
                pad = np.repeat(part[-1:], self.spec.min - k, axis=0)
                part = np.concatenate([part, pad])
            out = self._run(np.ascontiguousarray(part, dtype=np.float32))
            chunks.append({k_: v[:k] for k_, v in out.items()})
        if len(chunks) == 1:
            return chunks[0]
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def output_layout(names: Sequence[str], source: str) -> str:
    """'raw' for output0, 'nms' for the four NMS outputs; anything else is not an s2trt model."""
    if RAW_OUTPUT in names:
        return "raw"
    if all(n in names for n in NMS_OUTPUTS):
        return "nms"
    raise S2Error(f"{source} has outputs {list(names)}; an s2trt model has '{RAW_OUTPUT}' or the NMS "
                  f"outputs {', '.join(NMS_OUTPUTS)}: export it with s2export")


def check_meta_imgsz(meta: ModelMeta, shape: Sequence[object], source: str) -> None:
    """The model's input (…, h, w) must agree with its metadata, or boxes land in the wrong place."""
    h, w = shape[-2], shape[-1]
    if isinstance(h, int) and isinstance(w, int) and [h, w] != [int(v) for v in meta.imgsz]:
        raise S2Error(f"{source}: its input is {h}x{w} but its metadata says imgsz {meta.imgsz}; "
                      "the file was edited after export: re-export it")
