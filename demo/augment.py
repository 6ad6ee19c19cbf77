"""Training-time augmentation: random scale and placement on the letterbox canvas, flip, HSV jitter.

Labels are (n, 5) rows [class, cx, cy, w, h] normalised to the image, polygons (k, 2) rows [x, y]
normalised to the image; the results are normalised to the square imgsz canvas.
"""

from __future__ import annotations

import cv2
import numpy as np

from s2trt.detect.letterbox import letterbox

PAD = 114


def hsv_jitter(img: np.ndarray, rng: np.random.Generator, gains: tuple[float, float, float]) -> np.ndarray:
    """Scale hue, saturation and value by random factors, through lookup tables (cheap on uint8)."""
    fh, fs, fv = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * fh) % 180).astype(np.uint8)
    lut_s = np.clip(x * fs, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * fv, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _move(labels: np.ndarray, segments: list[np.ndarray] | None, a: tuple[float, float, float, float],
          imgsz: int, min_kept: float) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Labels (and polygons) through x -> x * a[0] + a[2], y -> y * a[1] + a[3] (image-normalised to
    canvas pixels), normalised to the canvas. Objects cut by its edge keep a clipped box when at least
    `min_kept` of the box remains; their polygons are left whole (rasterising clips them)."""
    if len(labels) == 0:
        return labels, segments
    sx, sy, ox, oy = a
    cx, cy = labels[:, 1] * sx + ox, labels[:, 2] * sy + oy
    bw, bh = labels[:, 3] * sx, labels[:, 4] * sy
    bx = np.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), 1)
    clipped = bx.clip(0, imgsz)
    area = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw > 2) & (ch > 2) & (cw * ch >= min_kept * area)
    c = clipped[keep]
    lab = np.stack((labels[keep, 0], (c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2,
                    c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]), 1) / np.array([1, imgsz, imgsz, imgsz, imgsz])
    if segments is not None:
        segments = [(seg * [sx, sy] + [ox, oy]).astype(np.float32) / imgsz
                    for seg, k in zip(segments, keep, strict=True) if k]
    return lab.astype(np.float32), segments


def _letterbox(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    h0, w0 = img.shape[:2]
    out, r, (dw, dh) = letterbox(img, (imgsz, imgsz))
    return out, (w0 * r, h0 * r, dw, dh)


def _random_place(img: np.ndarray, imgsz: int, rng: np.random.Generator, scale: tuple[float, float]
                  ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    h0, w0 = img.shape[:2]
    r = imgsz / max(h0, w0) * rng.uniform(*scale)
    nw, nh = max(round(w0 * r), 1), max(round(h0 * r), 1)
    im = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ox = int(rng.integers(min(0, imgsz - nw), max(0, imgsz - nw) + 1))
    oy = int(rng.integers(min(0, imgsz - nh), max(0, imgsz - nh) + 1))
    canvas = np.full((imgsz, imgsz, 3), PAD, np.uint8)
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + nw, imgsz), min(oy + nh, imgsz)
    canvas[y0:y1, x0:x1] = im[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return canvas, (nw, nh, ox, oy)


def letterbox_labels(img: np.ndarray, labels: np.ndarray, imgsz: int,
                     segments: list[np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """Exactly the inference letterbox (no augmentation), labels (and polygons) moved with it."""
    out, a = _letterbox(img, imgsz)
    return out, *_move(labels, segments, a, imgsz, 0.0)


def random_placement(img: np.ndarray, labels: np.ndarray, imgsz: int, rng: np.random.Generator,
                     scale: tuple[float, float] = (0.6, 1.25), min_kept: float = 0.6,
                     segments: list[np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """Resize by a random factor around the letterbox fit and paste at a random offset on a 114 canvas.

    Objects cut by the canvas edge keep a clipped box when at least `min_kept` of it remains.
    """
    canvas, a = _random_place(img, imgsz, rng, scale)
    return canvas, *_move(labels, segments, a, imgsz, min_kept)


def augment(img: np.ndarray, labels: np.ndarray, imgsz: int, rng: np.random.Generator,
            hsv: tuple[float, float, float] = (0.015, 0.6, 0.4), p_plain: float = 0.25,
            fliplr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One training sample: a plain letterbox some of the time (what inference sees), else random."""
    img, labels, _ = augment_segments(img, labels, None, imgsz, rng, hsv, p_plain, fliplr)
    return img, labels


def augment_segments(img: np.ndarray, labels: np.ndarray, segments: list[np.ndarray] | None, imgsz: int,
                     rng: np.random.Generator, hsv: tuple[float, float, float] = (0.015, 0.6, 0.4),
                     p_plain: float = 0.25, fliplr: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """augment() with each label's polygon (k, 2), image-normalised, moved along with its box."""
    if rng.random() < p_plain:
        img, labels, segments = letterbox_labels(img, labels, imgsz, segments)
    else:
        img, labels, segments = random_placement(img, labels, imgsz, rng, segments=segments)
    if rng.random() < fliplr:
        img = np.ascontiguousarray(img[:, ::-1])
        labels = labels.copy()
        labels[:, 1] = 1 - labels[:, 1]
        if segments is not None:
            segments = [np.stack((1 - s[:, 0], s[:, 1]), 1) for s in segments]
    return hsv_jitter(img, rng, hsv), labels, segments
