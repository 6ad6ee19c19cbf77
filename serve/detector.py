"""What the Triton model `s2trt_detector` does per batch of requests, free of Triton's own API.

Requests carry encoded images (`IMAGE`: the file's bytes as a uint8 vector, one image per row) or
uint8 BGR frames (`FRAME`, (h, w, 3)); the answer is docs/DESIGN.md §3's NMS layout, padded to `max_det`,
and for a segmentation model what its masks are made from (`answer`, docs/DESIGN.md §7).
Requests of one scheduler batch run through the network together, and a bad request (undecodable
bytes, an image bomb, a frame that cannot be letterboxed, both inputs or none) fails alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from s2trt.detect.boxes import PROTO_OUTPUT, postprocess, to_layout
from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS, check_image_bytes
from s2trt.detect.letterbox import LetterboxInfo, preprocess
from s2trt.detect.masks import COEFFICIENTS_OUTPUT, in_frame
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.runtime.backends.base import Backend
from s2trt.runtime.backends.triton import (
    INPUT_BOXES,
    INPUT_FRAME,
    INPUT_IMAGE,
    LETTERBOX,
    PROTOTYPES,
    geometry,
    padded,
)

# The request parameters a client may set (Triton's parameters extension; s2infer --triton sends them).
REQUEST_OPTIONS = ("conf_thres", "iou_thres", "agnostic", "max_det")


def request_options(base: DetectOptions, params: Mapping[str, Any]) -> DetectOptions:
    """`base` (the server's options) with what a request's parameters change. Values arrive as JSON
    numbers, booleans or, from config.pbtxt, strings; max_det cannot exceed the server's, to which
    the outputs are padded. A bad value is the request's error (S2Error)."""
    changes: dict[str, Any] = {}
    try:
        for key in REQUEST_OPTIONS:
            if key not in params:
                continue
            value = params[key]
            if key == "agnostic":
                changes[key] = value in (True, "true", "1", 1)
            elif key == "max_det":
                changes[key] = min(int(value), base.max_det)
            else:
                changes[key] = float(value)
        return base.replace(**changes) if changes else base
    except (S2Error, ValueError, TypeError, ArithmeticError) as e:  # int(inf): OverflowError
        raise S2Error(f"bad request parameters: {e}") from None


def server_options(params: Mapping[str, str]) -> DetectOptions:
    """The model's options from the `parameters` of its config.pbtxt."""
    return request_options(DetectOptions(max_det=int(params.get("max_det", "300"))),
                           {k: v for k, v in params.items() if k in ("conf_thres", "iou_thres", "agnostic")})


def answer(dets: Sequence[np.ndarray], infos: Sequence[LetterboxInfo], max_det: int,
           prototypes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The model's outputs for detections in network-input pixels ((n, 6 + nm) rows of the runtime's
    NMS): the NMS layout in frame pixels, and with a segmentation model's prototypes (B, nm, h, w)
    each row's coefficients and input box, the prototypes and the letterbox, so a client rebuilds the
    masks with detect/masks.py's process_masks exactly as s2infer makes them."""
    kept = [in_frame(d, info) for d, info in zip(dets, infos, strict=True)]
    out = to_layout([frame for frame, _ in kept], max_det)
    if prototypes is None:
        return out
    rows = [r for _, r in kept]
    return {**out, COEFFICIENTS_OUTPUT: padded([r[:, 6:] for r in rows], max_det, prototypes.shape[1]),
            INPUT_BOXES: padded([r[:, :4] for r in rows], max_det, 4),
            PROTOTYPES: np.ascontiguousarray(prototypes, dtype=np.float32), LETTERBOX: geometry(infos)}


def decode_image(data: np.ndarray, index: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An encoded image (JPEG, PNG, ...: a uint8 vector; trailing zero padding is ignored) -> BGR.

    The size its header declares is checked first: a small file can declare a huge image (a 1.2 MB
    PNG of 20000x20000 took a model process to 2.5 GB), and decoding is what allocates it."""
    buf = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    check_image_bytes(buf.tobytes(), max_pixels, f"image {index} of the request",
                      "the server's limit: s2serve export --max-pixels")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise S2Error(f"image {index} of the request is not a decodable image ({buf.size} bytes)")
    return img


def frames_from_inputs(image: np.ndarray | None, frame: np.ndarray | None,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """The BGR frames of one request, from exactly one of its two inputs."""
    if (image is None) == (frame is None):
        raise S2Error(f"send exactly one of the inputs {INPUT_IMAGE} (encoded images) and "
                      f"{INPUT_FRAME} (uint8 BGR frames)")
    if frame is not None:
        if frame.ndim != 4 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise S2Error(f"{INPUT_FRAME} must be uint8 of shape (batch, h, w, 3), got {frame.dtype} "
                          f"{tuple(frame.shape)}")
        if 0 in frame.shape:
            raise S2Error(f"{INPUT_FRAME} is empty (shape {tuple(frame.shape)})")
        # From the shape alone, before anything is made from the frame (a 10000x10000 frame cost
        # 473 MB more in the letterbox).
        h, w = frame.shape[1:3]
        if h * w > max_pixels:
            raise S2Error(f"{INPUT_FRAME} of {w}x{h} = {h * w:,} pixels is over the server's limit of "
                          f"{max_pixels:,} (s2serve export --max-pixels)")
        return list(frame)
    assert image is not None
    if image.dtype != np.uint8 or image.ndim != 2:
        raise S2Error(f"{INPUT_IMAGE} must be uint8 of shape (batch, bytes), got {image.dtype} "
                      f"{tuple(image.shape)}")
    if image.shape[0] == 0:
        raise S2Error(f"{INPUT_IMAGE} holds no image")
    return [decode_image(row, i, max_pixels) for i, row in enumerate(image)]


def open_backend(model_file: Path, device: str = "CPU", device_id: int = 0, threads: int = 0,
                 plugin_lib: str | None = None) -> Backend:
    """s2trt's own runtime backend for the file: a TensorRT engine, or ONNX Runtime for .onnx."""
    if not model_file.is_file():
        raise S2Error(f"model file {model_file} not found in the model repository")
    # Triton names the instance's device; the runtime takes "cpu" or "cuda:N".
    where = "cpu" if device == "CPU" else f"cuda:{device_id}"
    if model_file.suffix == ".onnx":
        from s2trt.runtime.backends.ort import OrtBackend

        return OrtBackend(model_file, device=where, threads=threads)
    from s2trt.runtime.backends.trt import TrtBackend

    return TrtBackend(model_file, plugin_lib, where)


class Detector:
    """A runtime backend plus the shared pre/post-processing: frames in, detections in frame pixels out."""

    def __init__(self, backend: Backend, options: DetectOptions, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.backend = backend
        self.meta = backend.meta
        self.options = options
        self.max_pixels = max_pixels

    @classmethod
    def from_params(cls, model_dir: str | Path, params: Mapping[str, str], device: str = "CPU",
                    device_id: int = 0) -> Detector:
        """Build from the `parameters` of config.pbtxt (string values, as Triton hands them over)."""
        backend = open_backend(Path(model_dir) / params.get("model_file", "model.onnx"), device, device_id,
                               int(params.get("cpu_threads", "0")), params.get("plugin_lib") or None)
        return cls(backend, server_options(params), int(params.get("max_pixels", DEFAULT_MAX_PIXELS)))

    def prepare(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxInfo]]:
        """Letterboxed network input for the frames of one request; any failure is that request's."""
        try:
            return preprocess(frames, self.backend.imgsz, **self.meta.preprocess_kwargs())
        except S2Error:
            raise
        except Exception as e:  # e.g. cv2 on a frame it cannot resize: this request's problem alone
            raise S2Error(f"the request's image could not be letterboxed "
                          f"({type(e).__name__}: {str(e).strip()[:200]})") from None

    def detect(self, frames: Sequence[np.ndarray], options: Sequence[DetectOptions] | None = None
               ) -> list[np.ndarray]:
        """(n, 6) [x1, y1, x2, y2, score, class] per frame, in the frame's pixels."""
        batch, infos = self.prepare(frames)
        dets, _ = self._infer(batch, options or [self.options] * len(frames))
        return [in_frame(d, info)[0] for d, info in zip(dets, infos, strict=True)]

    def _infer(self, batch: np.ndarray, options: Sequence[DetectOptions]
               ) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Per image its detections in network-input pixels (with a segmentation model's mask
        coefficients), and the batch's prototypes (None for a detection model)."""
        outputs = self.backend.infer(batch)
        dets = []
        for i, o in enumerate(options):  # thresholds may differ per request, so select per image
            dets.extend(postprocess({k: v[i:i + 1] for k, v in outputs.items()}, o))
        return dets, outputs.get(PROTO_OUTPUT)

    def run_requests(self, requests: Sequence[tuple[np.ndarray | None, np.ndarray | None, Mapping[str, Any]]]
                     ) -> list[dict[str, np.ndarray] | S2Error]:
        """(IMAGE, FRAME, parameters) per request -> its outputs, or the error that fails it alone.

        Everything a request's own content can break (decoding, the image guard, letterboxing, its
        parameters) runs per request; only the requests that got through share one network call.
        """
        results: list[dict[str, np.ndarray] | S2Error] = []
        inputs: list[np.ndarray] = []
        infos: list[LetterboxInfo] = []
        options: list[DetectOptions] = []
        spans: list[tuple[int, int, int]] = []  # (result index, first frame, frame count)
        for image, frame, params in requests:
            try:
                o = request_options(self.options, params)
                batch, got = self.prepare(frames_from_inputs(image, frame, self.max_pixels))
            except S2Error as e:
                results.append(e)
                continue
            spans.append((len(results), len(infos), len(got)))
            results.append(S2Error("not run"))
            inputs.append(batch)
            infos.extend(got)
            options.extend([o] * len(got))
        if inputs:
            dets, prototypes = self._infer(np.concatenate(inputs), options)
            for slot, first, n in spans:
                results[slot] = answer(dets[first:first + n], infos[first:first + n], self.options.max_det,
                                       None if prototypes is None else prototypes[first:first + n])
        return results

    def close(self) -> None:
        self.backend.close()
