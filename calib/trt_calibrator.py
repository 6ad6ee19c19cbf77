"""TensorRT ≤ 10 implicit INT8: an IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator fed by the same
calibration reader as the Q/DQ path, with a keyed calibration cache (calib/cache.py).

The calibrator classes exist only in TensorRT ≤ 10 (11 builds INT8 from Q/DQ graphs only), and only
when TensorRT is importable, so the class is made by a factory marked for those versions.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from s2trt.calib.cache import cache_key, graph_digest, load_cache, save_cache
from s2trt.calib.data import CalibrationReader
from s2trt.calib.qdq import CalibMethod
from s2trt.errors import S2Error
from s2trt.trt.versions import for_trt, import_tensorrt, is_strongly_typed_only

log = logging.getLogger(__name__)

TRT_METHODS = (CalibMethod.ENTROPY, CalibMethod.MINMAX)


def make_calibrator(onnx_path: str | Path, reader: CalibrationReader, method: str | CalibMethod,
                    cache: str | Path | None = None, device: int = 0) -> Any:
    """A calibrator object for EngineOptions(calibrator=...) on TensorRT ≤ 10.

    With a matching `cache`, TensorRT reads the table from it and no image is decoded; without one,
    the reader's batches go to CUDA device `device` (the build's --device; build_engine moves the
    buffer there in any case) and the table TensorRT computes is written to `cache`.
    """
    m = CalibMethod.from_name(method)
    if m not in TRT_METHODS:
        raise S2Error(f"TensorRT's implicit INT8 calibration has no '{m.value}' method (it offers "
                      f"{', '.join(t.value for t in TRT_METHODS)}): use one of those, or the Q/DQ "
                      "ONNX path, which supports all three")
    trt = import_tensorrt("INT8 calibration for TensorRT")
    if is_strongly_typed_only(trt):
        raise S2Error(f"TensorRT {trt.__version__} has no INT8 calibrator (removed in 11): build the "
                      "engine from the Q/DQ ONNX that `s2export --int8` writes")
    key = cache_key(graph_digest(onnx_path), reader.prep.as_dict(), m.value)
    cached = load_cache(cache, key) if cache is not None else None
    # TensorRT expects every batch at the size get_batch_size() announces; replace() re-runs the
    # reader's checks, so too few images for one whole batch is an error here, not a silent no-op.
    reader = dataclasses.replace(reader, drop_last=True)
    return _calibrator_class(trt, m.value)(reader, cached, Path(cache) if cache else None, key, device)


@for_trt(max_major=10)
def _calibrator_class(trt: Any, method: str) -> type:
    base = trt.IInt8EntropyCalibrator2 if method == "entropy" else trt.IInt8MinMaxCalibrator

    class S2Calibrator(base):  # type: ignore[misc, valid-type]
        """TensorRT pulls batches with get_batch() and hands back its table to cache."""

        def __init__(self, reader: CalibrationReader, cached: bytes | None, cache: Path | None,
                     key: dict[str, Any], device: int = 0) -> None:
            base.__init__(self)
            self.reader, self.cached, self.cache, self.key = reader, cached, cache, key
            self.method, self.device = method, device
            self.error: Exception | None = None
            self._batches: Any = None
            self._mem: Any = None
            self._dev = 0
            if cached is None:  # fail now, not inside TensorRT's build, when CUDA memory is unavailable
                self._start()

        def get_batch_size(self) -> int:
            return self.reader.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            # An exception must not cross into TensorRT: keep it for the caller and end calibration.
            try:
                if self._batches is None:
                    self._start()
                x = next(self._batches, None)
                if x is None:
                    self.close()
                    return None
                self._mem.h2d(self._dev, x)
                self._mem.synchronize()
                return [self._dev] * len(names)
            except Exception as e:
                self.error = e
                log.error("calibration stopped: %s", e)
                self.close()
                return None

        def read_calibration_cache(self) -> bytes | None:
            return self.cached

        def write_calibration_cache(self, cache: Any) -> None:
            if self.cache is not None and self.error is None:  # never cache a partial calibration
                save_cache(self.cache, bytes(cache), self.key, images=len(self.reader) * self.reader.batch,
                           frames=self.reader.fingerprint(), tensorrt=str(trt.__version__))

        def use_device(self, device: int) -> None:
            """Hold the batch buffer on `device`: TensorRT reads the pointers get_batch() returns
            on the GPU that builds the engine, where another device's memory is no valid input."""
            if device == self.device:
                return
            self.close()
            self.device = device
            if self.cached is None:
                self._start()

        def _start(self) -> None:
            from s2trt.trt.cuda_mem import open_cuda
            from s2trt.trt.gpu import select_device

            select_device(self.device)  # cudaMalloc and the stream use the current device
            self._mem = open_cuda()
            h, w = self.reader.prep.imgsz
            self._dev = self._mem.malloc(self.reader.batch * 3 * h * w * 4)
            self._batches = self.reader.batches()

        def close(self) -> None:
            if self._mem is not None:
                self._mem.close()
                self._mem = None

    return S2Calibrator
