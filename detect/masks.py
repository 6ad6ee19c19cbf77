"""Instance masks of a YOLOv5 segmentation model, from its two outputs to the original frame.

The semantics are those of yolov5 v7.0's `predict.py` (process_mask with upsampling, then the mask
mapped back through the letterbox like its `scale_image`), for one detection:
1. soft = sigmoid(coefficients (nm,) . prototypes (nm, mh, mw)), at the prototypes' stride 4;
2. soft upsampled to the letterboxed network input (h, w): bilinear with half-pixel centres and
   clamped edges (PyTorch's `align_corners=False`, OpenCV's INTER_LINEAR);
3. cropped to the box in input pixels: pixel (row r, column c) is kept when x1 <= c < x2 and
   y1 <= r < y2, zero elsewhere;
4. thresholded: soft > 0.5;
5. back to the frame: the letterbox's padding cut off (the exact rows and columns the letterbox
   wrote, `s2trt.detect.letterbox`), the rest resized to the frame with the same bilinear rule,
   and kept where > 0.5.
Each step only touches the pixels near the box: a mask is a window of the frame (`InstanceMask`),
so 300 masks of a 4K frame cost what their boxes cover, not 300 frames.

Detections of a segmentation model are (n, 6 + nm) rows [x1, y1, x2, y2, score, class, coefficients]
in network-input pixels (`s2trt.detect.boxes.non_max_suppression` with `nm`). An NMS layout may carry
them too: `det_coefficients` (B, K, nm) beside its boxes (the Triton model's answer, docs/DESIGN.md §7).

In JSON, a mask is its outer polygons (`polygons`, OpenCV's contour tracing of the window's pixels),
COCO's polygon `segmentation` format in frame pixels; `fill_polygons` draws them back. Holes inside
a mask are not kept (COCO polygons have none), as in yolov5's `--save-txt` segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from s2trt.detect.boxes import (
    NMS_OUTPUTS,
    PROTO_OUTPUT,
    RAW_OUTPUT,
    from_nms_outputs,
    postprocess,
    scale_boxes,
)
from s2trt.detect.letterbox import LetterboxInfo
from s2trt.detect.options import DetectOptions

THRESHOLD = 0.5
COEFFICIENTS_OUTPUT = "det_coefficients"  # (B, K, nm): the mask coefficients of an NMS layout's rows


@dataclass
class InstanceMask:
    """One instance's mask in its frame: `bits` (h, w) bool, its top-left corner at (x, y)."""

    x: int
    y: int
    bits: np.ndarray

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask as a (h, w) bool array of the whole frame."""
        out = np.zeros(shape, dtype=bool)
        h, w = self.bits.shape
        out[self.y:self.y + h, self.x:self.x + w] = self.bits
        return out

    @property
    def area(self) -> int:
        return int(self.bits.sum())

    def polygons(self) -> list[list[int]]:
        """Outer contours in frame pixels, each [x0, y0, x1, y1, ...] (COCO's polygon format)."""
        if not self.bits.any():
            return []
        contours, _ = cv2.findContours(self.bits.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE, offset=(self.x, self.y))
        return [c.reshape(-1).astype(int).tolist() for c in contours]


def fill_polygons(polygons: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """A mask read back from its polygons: (h, w) bool of the frame, contour pixels included."""
    out = np.zeros(shape, dtype=np.uint8)
    pts = [np.asarray(p, dtype=np.float64).reshape(-1, 2).round().astype(np.int32) for p in polygons
           if len(p) >= 2]
    if pts:
        cv2.fillPoly(out, pts, 1)
        cv2.polylines(out, pts, True, 1)  # a one-pixel-wide part has no inside to fill
    return out.astype(bool)


def taps(n_out: int, n_in: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows (i0, i1) and the weight of i1 for output rows start..stop-1 of a bilinear resize
    from n_in to n_out rows (half-pixel centres, clamped at both edges)."""
    src = np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _resample(a: np.ndarray, rows: tuple[np.ndarray, np.ndarray, np.ndarray],
              cols: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Bilinear samples of `a` at the given row and column taps; a tap outside `a` reads 0."""
    a = np.pad(a.astype(np.float32, copy=False), 1)  # the zero border every outside tap reads
    (r0, r1, fy), (c0, c1, fx) = rows, cols
    n, m = a.shape
    r0, r1 = np.clip(r0 + 1, 0, n - 1), np.clip(r1 + 1, 0, n - 1)
    c0, c1 = np.clip(c0 + 1, 0, m - 1), np.clip(c1 + 1, 0, m - 1)
    fy32, fx32 = fy.astype(np.float32)[:, None], fx.astype(np.float32)[None, :]
    r = a[r0] * (1 - fy32) + a[r1] * fy32
    return r[:, c0] * (1 - fx32) + r[:, c1] * fx32


def soft_mask(proto: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """sigmoid(coefficients . prototypes): (mh, mw) float32 of the prototypes (nm, mh, mw) given."""
    logits = np.tensordot(coefficients.astype(np.float32), proto, axes=1)
    with np.errstate(over="ignore"):  # exp of a very negative logit: the sigmoid is 0 as it should
        return 1.0 / (1.0 + np.exp(-logits))


def process_masks(proto: np.ndarray, dets: np.ndarray, input_hw: tuple[int, int],
                  info: LetterboxInfo) -> list[InstanceMask]:
    """Masks in the frame for (n, 6 + nm) detections in network-input pixels (steps 1-5 above)."""
    nm = proto.shape[0]
    h, w = input_hw
    mh, mw = proto.shape[1:]
    proto = proto.astype(np.float32, copy=False)
    h0, w0 = info.orig_shape
    # The letterbox resized the frame to (nh, nw) and padded dh, dw on each side (split as it
    # splits them): the rows and columns it wrote are exactly these.
    dw, dh = info.pad
    nw, nh = round(w - 2 * dw), round(h - 2 * dh)
    top, left = round(dh - 0.1), round(dw - 0.1)
    out = []
    for coef, (x1, y1, x2, y2) in zip(dets[:, 6:6 + nm], dets[:, :4].astype(np.float64), strict=True):
        # Step 3's window in input pixels: the columns c with x1 <= c < x2, inside the input.
        c0, c1 = int(np.clip(np.ceil(x1), 0, w)), int(np.clip(np.ceil(x2), 0, w))
        r0, r1 = int(np.clip(np.ceil(y1), 0, h)), int(np.clip(np.ceil(y2), 0, h))
        if c1 <= c0 or r1 <= r0:
            out.append(InstanceMask(0, 0, np.zeros((0, 0), dtype=bool)))
            continue
        # Steps 1-4 on the window only, from the prototype pixels its taps read.
        rows, cols = taps(h, mh, r0, r1), taps(w, mw, c0, c1)
        a, b, c, d = int(rows[0][0]), int(rows[1][-1]) + 1, int(cols[0][0]), int(cols[1][-1]) + 1
        m = soft_mask(proto[:, a:b, c:d], coef)
        win = _resample(m, (rows[0] - a, rows[1] - a, rows[2]),
                        (cols[0] - c, cols[1] - c, cols[2])) > THRESHOLD
        # Step 5: the frame rows and columns whose taps reach the window (one pixel of margin
        # each side, since a tap is at most one source pixel away from its centre).
        fy0, fy1 = _reach(r0 - top, r1 - top, h0 / nh, h0)
        fx0, fx1 = _reach(c0 - left, c1 - left, w0 / nw, w0)
        rows = taps(h0, nh, fy0, fy1)
        cols = taps(w0, nw, fx0, fx1)
        # Content row j is input row top + j, which is window row top + j - r0.
        rows = (rows[0] + top - r0, rows[1] + top - r0, rows[2])
        cols = (cols[0] + left - c0, cols[1] + left - c0, cols[2])
        bits = _resample(win.astype(np.float32), rows, cols) > THRESHOLD
        out.append(_trimmed(bits, fx0, fy0))
    return out


def _reach(lo: int, hi: int, scale: float, n: int) -> tuple[int, int]:
    """Output rows [a, b) of a resize by `scale` (output per source row) whose taps can read source
    rows [lo, hi), clipped to 0..n."""
    a = int(np.floor((lo - 1 + 0.5) * scale - 0.5)) - 1
    b = int(np.ceil((hi + 0.5) * scale - 0.5)) + 2
    return max(a, 0), min(max(b, 0), n)


def _trimmed(bits: np.ndarray, x: int, y: int) -> InstanceMask:
    """The smallest window that holds every set pixel."""
    rows, cols = np.flatnonzero(bits.any(1)), np.flatnonzero(bits.any(0))
    if not len(rows):
        return InstanceMask(0, 0, np.zeros((0, 0), dtype=bool))
    return InstanceMask(x + int(cols[0]), y + int(rows[0]),
                        np.ascontiguousarray(bits[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]))


def detections(outputs: dict[str, np.ndarray], options: DetectOptions) -> list[np.ndarray]:
    """`postprocess` that keeps a segmentation model's mask coefficients: per image (n, 6 + nm) rows
    from output0 and output1, or from an NMS layout that carries them in `det_coefficients`."""
    coefficients = outputs.get(COEFFICIENTS_OUTPUT)
    if coefficients is None or RAW_OUTPUT in outputs:
        return postprocess(outputs, options)
    layout = {k: outputs[k] for k in NMS_OUTPUTS}
    rows = [np.concatenate([d, c[:len(d)].astype(np.float32, copy=False)], axis=1)
            for d, c in zip(from_nms_outputs(*layout.values()), coefficients, strict=True)]
    # postprocess's own selection decides which rows stay: it sees each row's index as a unit box
    # (x1 = index), so the kept rows' coefficients follow them whatever its filter is.
    k = layout["det_boxes"].shape[1]
    index = np.zeros_like(layout["det_boxes"], dtype=np.float32)
    index[..., 0], index[..., 2], index[..., 3] = np.arange(k), np.arange(k) + 1, 1
    kept = postprocess({**layout, "det_boxes": index}, options)
    return [r[p[:, 0].astype(np.int64)] for r, p in zip(rows, kept, strict=True)]


def in_frame(dets: np.ndarray, info: LetterboxInfo) -> tuple[np.ndarray, np.ndarray]:
    """(n, 6) detections mapped to the frame (`scale_boxes`), and the network-input rows they come
    from, coefficients included: a box with nothing left in the frame is dropped from both."""
    indexed = np.concatenate([dets[:, :6], np.arange(len(dets), dtype=np.float32)[:, None]], axis=1)
    kept = scale_boxes(indexed, info)
    return np.ascontiguousarray(kept[:, :6]), dets[kept[:, 6].astype(np.int64)]


def to_frames(dets: Sequence[np.ndarray], outputs: dict[str, np.ndarray], infos: Sequence[LetterboxInfo],
              input_hw: tuple[int, int]) -> tuple[list[np.ndarray], list[list[InstanceMask] | None]]:
    """Per image: (n, 6) detections in the frame, and their masks (None for a detection model).

    A box that `scale_boxes` drops (nothing left of it in the frame) loses its mask with it.
    """
    proto = outputs.get(PROTO_OUTPUT)
    if proto is None:
        return [scale_boxes(d, info) for d, info in zip(dets, infos, strict=True)], [None] * len(dets)
    frames, masks = [], []
    for d, p, info in zip(dets, proto, infos, strict=True):
        kept, rows = in_frame(d, info)
        frames.append(kept)
        masks.append(process_masks(p, rows, input_hw, info))
    return frames, masks


def full_masks(masks: Sequence[InstanceMask], shape: tuple[int, int]) -> np.ndarray:
    """(n, h, w) bool masks of the whole frame (for Python callers; s2infer keeps the windows)."""
    return np.stack([m.full(shape) for m in masks]) if masks else np.zeros((0, *shape), dtype=bool)


def draw_masks(img: np.ndarray, masks: Sequence[InstanceMask], colors: Sequence[tuple[int, int, int]],
               alpha: float = 0.5) -> np.ndarray:
    """Blend each mask into img (in place) in its colour, the first mask on top (as yolov5 draws)."""
    for m, color in reversed(list(zip(masks, colors, strict=True))):
        h, w = m.bits.shape
        if not h:
            continue
        region = img[m.y:m.y + h, m.x:m.x + w]
        sel = region[m.bits].astype(np.float32)
        region[m.bits] = (sel * (1 - alpha) + np.asarray(color, np.float32) * alpha).round().astype(img.dtype)
    return img
