"""Letterbox and batch frames into the network input (docs/DESIGN.md §3), shared by inference and calibration.

One implementation for every consumer, so INT8 calibration sees exactly the pixels inference sees.
The letterbox follows YOLOv5: keep the aspect ratio, resize with INTER_LINEAR, pad with 114 split
in two halves (top = round(dh - 0.1), bottom = round(dh + 0.1)), so boxes match YOLOv5's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from s2trt.errors import S2Error


@dataclass
class LetterboxInfo:
    """How one frame was fitted into the network input, to map boxes back."""

    ratio: float  # network pixels per original pixel
    pad: tuple[float, float]  # (dw, dh): padding on the left and on the top, before rounding
    orig_shape: tuple[int, int]  # (h, w) of the original frame


def _as_hw(shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(shape, int):
        return shape, shape
    h, w = (int(v) for v in shape)
    return h, w


def letterbox_geometry(orig_hw: tuple[int, int], new_shape: tuple[int, int], auto: bool = False,
                       scaleup: bool = True, stride: int = 32
                       ) -> tuple[float, tuple[int, int], tuple[float, float]]:
    """(ratio, resized (w, h), (dw, dh)) for a frame of orig_hw: the arithmetic of YOLOv5's letterbox."""
    h0, w0 = orig_hw
    r = min(new_shape[0] / h0, new_shape[1] / w0)
    if not scaleup:  # only shrink: upscaling a small frame does not help the detector
        r = min(r, 1.0)
    # A 1x5000 frame would round its short side to 0 rows; keep at least one so every frame with a
    # pixel is processed (its boxes are clipped to the frame afterwards).
    new_unpad = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:  # minimum rectangle: pad only up to the next multiple of the stride
        dw, dh = dw % stride, dh % stride
    return r, new_unpad, (dw / 2, dh / 2)


def letterbox(img: np.ndarray, new_shape: int | Sequence[int] = (640, 640),
              color: tuple[int, int, int] = (114, 114, 114), auto: bool = False, scaleup: bool = True,
              stride: int = 32) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to new_shape (h, w): (img, ratio, (dw, dh))."""
    new_hw = _as_hw(new_shape)
    r, (nw, nh), (dw, dh) = letterbox_geometry(img.shape[:2], new_hw, auto, scaleup, stride)
    if (img.shape[1], img.shape[0]) != (nw, nh):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, r, (dw, dh)


def check_frame(img: object, index: int = 0) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        desc = (f"shape {img.shape} dtype {img.dtype}" if isinstance(img, np.ndarray)
                else type(img).__name__)
        raise S2Error(f"frame {index} is not a BGR uint8 image of shape (h, w, 3) ({desc})")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise S2Error(f"frame {index} is empty (shape {img.shape})")
    return img


def preprocess(images: Sequence[np.ndarray], imgsz: int | Sequence[int], *, stride: int = 32,
               pad_value: int = 114, scaleup: bool = True, out: np.ndarray | None = None
               ) -> tuple[np.ndarray, list[LetterboxInfo]]:
    """BGR uint8 HWC frames -> (float32 (B, 3, h, w) RGB in 0..1, C-contiguous; one LetterboxInfo each).

    `out` may be a preallocated float32 (B', 3, h, w) array with B' >= len(images) (for example pinned
    host memory of an accelerator backend); the batch is written into its first len(images) items.
    Every frame is letterboxed to exactly imgsz (no `auto` minimum rectangle: a batch needs one shape).
    """
    h, w = _as_hw(imgsz)
    if h % stride or w % stride:
        raise S2Error(f"image size {h}x{w} is not a multiple of the model stride {stride}")
    n = len(images)
    if out is None:
        out = np.empty((n, 3, h, w), dtype=np.float32)
    elif out.shape[0] < n or out.shape[1:] != (3, h, w) or out.dtype != np.float32:
        raise ValueError(f"out has shape {out.shape} {out.dtype}, need at least ({n}, 3, {h}, {w}) float32")
    # Letterbox all frames into one uint8 NHWC canvas, then a single strided pass does BGR->RGB,
    # HWC->CHW and /255 for the whole batch (cheaper than per-frame float conversions).
    canvas = np.full((n, h, w, 3), pad_value, dtype=np.uint8)
    infos = []
    for i, img in enumerate(images):
        check_frame(img, i)
        r, (nw, nh), (dw, dh) = letterbox_geometry(img.shape[:2], (h, w), False, scaleup, stride)
        top, left = round(dh - 0.1), round(dw - 0.1)
        dst = canvas[i, top:top + nh, left:left + nw]
        if (img.shape[1], img.shape[0]) != (nw, nh):
            dst[...] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        else:
            dst[...] = img
        infos.append(LetterboxInfo(r, (dw, dh), (img.shape[0], img.shape[1])))
    np.multiply(canvas[..., ::-1].transpose(0, 3, 1, 2), np.float32(1 / 255), out=out[:n],
                dtype=np.float32)
    return out[:n], infos
