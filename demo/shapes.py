"""Drawing of the five demo shapes on textured backgrounds, with boxes and polygons measured from the
drawn pixels.

Every box and outline comes from the pixels that stay visible after all shapes are drawn (an
ownership map), so labels are tight by construction; placements that would hide too much of an
earlier shape are rejected, so every labelled object stays recognisable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "ring")
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions
_MIN_VISIBLE = 0.7  # an object may lose at most 30% of its pixels to shapes drawn over it
_TRACE = 4  # outlines are traced on the mask enlarged this many times: 1/8 pixel inside the edge
_SIMPLIFY = 0.5  # then simplified to within this many pixels


@dataclass
class Shape:
    """One shape: class, centre, circumradius and rotation (radians), in pixels."""

    cls: int
    cx: float
    cy: float
    r: float
    angle: float
    color: tuple[int, int, int]


@dataclass
class Scene:
    """A rendered image, its labels (cls, x1, y1, x2, y2; pixel edges) and who owns each pixel."""

    image: np.ndarray
    labels: np.ndarray  # (n, 5) float32
    owner: np.ndarray  # (h, w) int16: index into labels, -1 = background
    visible: np.ndarray  # (n,) fraction of each shape's pixels that stay visible
    polygons: list[np.ndarray]  # per label, its visible outline (k, 2) in pixel-edge coordinates


def _polygon(cx: float, cy: float, radii: list[float], angle: float) -> np.ndarray:
    n = len(radii)
    pts = [(cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
           for k, r in enumerate(radii)]
    return np.round(np.array(pts) * (1 << _SHIFT)).astype(np.int32)


def shape_mask(s: Shape, hw: tuple[int, int]) -> np.ndarray:
    """The shape's pixels as a bool (h, w) mask."""
    m = np.zeros(hw, np.uint8)
    c = (round(s.cx * (1 << _SHIFT)), round(s.cy * (1 << _SHIFT)))
    if s.cls in (0, 4):  # circle, ring
        cv2.circle(m, c, round(s.r * (1 << _SHIFT)), 1, -1, cv2.LINE_8, _SHIFT)
        if s.cls == 4:
            cv2.circle(m, c, round(0.55 * s.r * (1 << _SHIFT)), 0, -1, cv2.LINE_8, _SHIFT)
    else:
        radii = {1: [s.r] * 4, 2: [s.r] * 3, 3: [s.r, 0.45 * s.r] * 5}[s.cls]
        cv2.fillPoly(m, [_polygon(s.cx, s.cy, radii, s.angle)], 1, cv2.LINE_8, _SHIFT)
    return m.astype(bool)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gradient, low-frequency colour noise, a few thin lines and pixel noise (BGR uint8)."""
    c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    t = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = (xx * math.cos(t) + yy * math.sin(t)) / max(h, w)
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    img = c0 + (c1 - c0) * g[..., None]
    cell = int(rng.integers(16, 64))
    low = rng.normal(0, rng.uniform(5, 25), (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
    img += cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 7))):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 3)),
                 cv2.LINE_AA)
    return img


def add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def pick_color(rng: np.random.Generator, bg_mean: np.ndarray) -> tuple[int, int, int]:
    """A saturated colour that stands out from the background around the shape."""
    best, best_d = None, -1.0
    for _ in range(12):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(90, 256), rng.integers(60, 256)]]], np.uint8)
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        d = float(np.linalg.norm(bgr - bg_mean))
        if d > best_d:
            best, best_d = bgr, d
        if d > 90:
            break
    return tuple(int(v) for v in best)


def random_shape(rng: np.random.Generator, h: int, w: int, rmin: float, rmax: float,
                 bg: np.ndarray) -> Shape:
    r = float(math.exp(rng.uniform(math.log(rmin), math.log(rmax))))
    cx, cy = float(rng.uniform(r + 1, w - r - 1)), float(rng.uniform(r + 1, h - r - 1))
    y0, y1, x0, x1 = int(cy - r), int(cy + r) + 1, int(cx - r), int(cx + r) + 1
    color = pick_color(rng, bg[max(y0, 0):y1, max(x0, 0):x1].reshape(-1, 3).mean(0))
    return Shape(int(rng.integers(0, len(CLASSES))), cx, cy, r, float(rng.uniform(0, 2 * math.pi)), color)


def compose(bg: np.ndarray, shapes: list[Shape], masks: list[np.ndarray] | None = None) -> Scene:
    """Draw shapes in order (later on top) with a little shading; boxes from the visible pixels."""
    h, w = bg.shape[:2]
    img = bg.astype(np.float32)
    owner = np.full((h, w), -1, np.int16)
    masks = masks if masks is not None else [shape_mask(s, (h, w)) for s in shapes]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, (s, m) in enumerate(zip(shapes, masks, strict=True)):
        # A soft light gradient across each shape, so colour alone is not a flat template.
        t = s.angle * 1.7
        shade = 1 + 0.18 * ((xx[m] - s.cx) * math.cos(t) + (yy[m] - s.cy) * math.sin(t)) / max(s.r, 1)
        img[m] = np.asarray(s.color, np.float32) * shade[:, None]
        owner[m] = i
    img = np.clip(img, 0, 255).astype(np.uint8)
    labels, visible, polygons = [], [], []
    for i, (s, m) in enumerate(zip(shapes, masks, strict=True)):
        mine = owner == i
        ys, xs = np.nonzero(mine)
        visible.append(len(xs) / max(int(m.sum()), 1))
        if len(xs) == 0:
            labels.append((s.cls, 0, 0, 0, 0))
            polygons.append(np.zeros((0, 2), np.float32))
            continue
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        labels.append((s.cls, x1, y1, x2, y2))
        polygons.append(outline(mine[y1:y2, x1:x2]) + np.array([x1, y1], np.float32))
    return Scene(img, np.array(labels, np.float32).reshape(-1, 5), owner, np.array(visible, np.float32),
                 polygons)


def outline(mask: np.ndarray, tolerance: float = _SIMPLIFY) -> np.ndarray:
    """One polygon (k, 2) whose inside is the mask's pixels, in pixel-edge coordinates (pixel (x, y)
    is the square x..x+1, y..y+1, as COCO rasterises polygons).

    The contours are traced on the mask enlarged _TRACE times, so they run 1/(2 _TRACE) pixel
    inside the true edge, then simplified (Douglas-Peucker) to within `tolerance` pixels. A mask in
    several parts or with holes (a ring, a shape cut in two by one in front) becomes one polygon, as
    YOLO's one-polygon-per-object label format needs: each further contour is spliced in at its
    nearest point by a zero-width cut there and back (a keyhole), and holes run opposite to outer
    contours, so even-odd and non-zero filling both leave them empty.
    """
    big = np.repeat(np.repeat(mask.astype(np.uint8), _TRACE, 0), _TRACE, 1)
    contours, hierarchy = cv2.findContours(np.pad(big, 1), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE,
                                           offset=(-1, -1))
    if not contours:
        return np.zeros((0, 2), np.float32)
    parts = []
    for c, (_, _, _, parent) in zip(contours, hierarchy[0], strict=True):
        pts = cv2.approxPolyDP(c, tolerance * _TRACE, True).reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            pts = c.reshape(-1, 2).astype(np.float64)
        hole = parent >= 0
        signed = cv2.contourArea(pts.astype(np.float32), oriented=True)
        if (signed < 0) != hole:  # outer contours one way round, holes the other
            pts = pts[::-1]
        parts.append((hole, -abs(signed), (pts + 0.5) / _TRACE))
    parts.sort(key=lambda p: (p[0], p[1]))  # the largest outer contour first
    poly = parts[0][2]
    for _, _, pts in parts[1:]:
        d = ((poly[:, None] - pts[None]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        loop = np.concatenate((pts[j:], pts[:j + 1]))  # round the part, back to where it was entered
        poly = np.concatenate((poly[:i + 1], loop, poly[i:]))
    return poly.astype(np.float32)


def place_shapes(rng: np.random.Generator, bg: np.ndarray, n: int, rmin: float, rmax: float,
                 tries: int = 30) -> tuple[list[Shape], list[np.ndarray]]:
    """Up to n shapes, each accepted only if every shape keeps >= 70% of its pixels visible."""
    h, w = bg.shape[:2]
    shapes: list[Shape] = []
    masks: list[np.ndarray] = []
    owner = np.full((h, w), -1, np.int16)
    for _ in range(n * tries):
        if len(shapes) == n:
            break
        s = random_shape(rng, h, w, rmin, rmax, bg)
        m = shape_mask(s, (h, w))
        if m.sum() < 30:
            continue
        hidden = np.bincount(owner[m][owner[m] >= 0], minlength=len(shapes))
        if any(int((owner == j).sum()) - int(hidden[j]) < _MIN_VISIBLE * masks[j].sum()
               for j in np.nonzero(hidden)[0]):
            continue
        owner[m] = len(shapes)
        shapes.append(s)
        masks.append(m)
    return shapes, masks


def render_image(rng: np.random.Generator, h: int, w: int, max_objects: int = 8) -> Scene:
    """One random training/validation image with 1..max_objects shapes."""
    bg = background(rng, h, w)
    side = min(h, w)
    shapes, masks = place_shapes(rng, bg, int(rng.integers(1, max_objects + 1)), 0.025 * side, 0.17 * side)
    scene = compose(bg, shapes, masks=masks)
    if rng.random() < 0.3:
        scene.image = cv2.GaussianBlur(scene.image, (3, 3), 0)
    scene.image = add_noise(rng, scene.image, float(rng.uniform(0, 10)))
    return scene
