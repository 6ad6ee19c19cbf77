"""The synthetic data generator: shape geometry against closed forms, tight labels, YOLO files, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from s2trt.demo.shapes import CLASSES, Shape, shape_mask
from s2trt.demo.synth import generate, make_scene


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


# Extents (left, top, right, bottom) relative to the centre, in units of the circumradius r, at
# rotation 0: vertices sit at angles 2*pi*k/n from the +x axis (y grows downwards).
EXTENTS = {
    0: (-1, -1, 1, 1),  # circle
    1: (-1, -1, 1, 1),  # square standing on a corner (a diamond) at angle 0
    2: (-0.5, -math.sin(math.radians(120)), 1, math.sin(math.radians(120))),  # triangle
    3: (math.cos(math.radians(144)), -math.sin(math.radians(72)), 1, math.sin(math.radians(72))),  # star
    4: (-1, -1, 1, 1),  # ring
}


@pytest.mark.parametrize("cls", range(5))
def test_shape_extent_matches_closed_form(cls: int) -> None:
    cx, cy, r = 100.3, 90.7, 40.0
    mask = shape_mask(Shape(cls, cx, cy, r, 0.0, (0, 0, 0)), (200, 200))
    x1, y1, x2, y2 = _bbox(mask)
    left, top, right, bottom = EXTENTS[cls]
    # Rasterisation moves an edge by at most a pixel.
    assert x1 == pytest.approx(cx + left * r, abs=1.5)
    assert x2 == pytest.approx(cx + right * r, abs=1.5)
    assert y1 == pytest.approx(cy + top * r, abs=1.5)
    assert y2 == pytest.approx(cy + bottom * r, abs=1.5)


def test_areas_tell_the_classes_apart() -> None:
    r = 90.0
    area = {c: shape_mask(Shape(c, 100, 100, r, 0.3, (0, 0, 0)), (200, 200)).sum() for c in range(5)}
    # The rasteriser also fills the pixels the outline crosses: about half a perimeter more than the
    # exact area, a few percent at this size.
    assert area[0] == pytest.approx(math.pi * r * r, rel=0.04)
    assert area[1] == pytest.approx(2 * r * r, rel=0.04)  # square with half-diagonal r
    assert area[2] == pytest.approx(3 * math.sqrt(3) / 4 * r * r, rel=0.04)
    assert area[4] == pytest.approx(math.pi * r * r * (1 - 0.55 ** 2), rel=0.04)
    # A 5-point star is 10 triangles (outer radius r, inner 0.45 r, 36 degrees apart).
    assert area[3] == pytest.approx(5 * r * 0.45 * r * math.sin(math.radians(36)), rel=0.04)
    assert not shape_mask(Shape(4, 100, 100, r, 0, (0, 0, 0)), (200, 200))[100, 100]  # the ring's hole


@pytest.mark.parametrize("index", range(12))
def test_labels_are_tight_on_visible_pixels(index: int) -> None:
    scene = make_scene(0, "train", index, 320)
    assert 1 <= len(scene.labels) <= 8
    for i, (c, x1, y1, x2, y2) in enumerate(scene.labels):
        assert 0 <= c < len(CLASSES)
        mine = scene.owner == i
        assert mine.sum() > 0
        # Every visible pixel of the shape is inside its box, and the box touches the shape on all
        # four sides (no slack).
        assert (x1, y1, x2, y2) == _bbox(mine)
        assert scene.visible[i] >= 0.7 - 1e-6


def test_drawn_pixels_are_the_shape_colour() -> None:
    scene = make_scene(3, "val", 0, 320)
    h, w = scene.owner.shape
    for i in range(len(scene.labels)):
        inside = scene.image[scene.owner == i].astype(float).mean(0)
        x1, y1, x2, y2 = scene.labels[i, 1:].astype(int)
        ring = np.zeros((h, w), bool)
        ring[max(y1 - 6, 0):y2 + 6, max(x1 - 6, 0):x2 + 6] = True
        ring[y1:y2, x1:x2] = False
        if ring.sum() and (scene.owner[ring] == -1).sum() > 20:
            around = scene.image[ring & (scene.owner == -1)].astype(float).mean(0)
            assert np.abs(inside - around).max() > 20  # the object stands out from its surroundings


def test_yolo_files_roundtrip(tmp_path) -> None:
    data = generate(tmp_path, seed=5, counts={"train": 3, "val": 2, "calib": 1}, imgsz=256)
    d = yaml.safe_load(data.read_text())
    assert d["names"] == dict(enumerate(CLASSES)) and d["nc"] == 5
    for split, n in (("train", 3), ("val", 2), ("calib", 1)):
        assert len(list((tmp_path / "images" / split).glob("*.jpg"))) == n
    scene = make_scene(5, "val", 1, 256)
    h, w = scene.image.shape[:2]
    rows = np.loadtxt(tmp_path / "labels" / "val" / "val_000001.txt", ndmin=2)
    assert rows.shape == (len(scene.labels), 5)
    x1 = (rows[:, 1] - rows[:, 3] / 2) * w
    y2 = (rows[:, 2] + rows[:, 4] / 2) * h
    np.testing.assert_allclose(rows[:, 0], scene.labels[:, 0])
    np.testing.assert_allclose(x1, scene.labels[:, 1], atol=1e-3)
    np.testing.assert_allclose(y2, scene.labels[:, 4], atol=1e-3)


def test_seeded_and_independent_of_split_size() -> None:
    a, b = make_scene(0, "val", 7, 256), make_scene(0, "val", 7, 256)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(make_scene(1, "val", 7, 256).image, a.image)
    assert not np.array_equal(make_scene(0, "train", 7, 256).image, a.image)


def test_every_class_occurs() -> None:
    seen = np.concatenate([make_scene(0, "train", i, 192).labels[:, 0] for i in range(20)])
    assert set(seen.astype(int)) == set(range(5))
