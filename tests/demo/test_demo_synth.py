"""The synthetic data generator: shape geometry against closed forms, tight labels, polygon labels
that trace the visible pixels, YOLO files, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from s2trt.demo.shapes import CLASSES, Shape, outline, shape_mask
from s2trt.demo.synth import generate, make_scene
from s2trt.detect.mask_eval import read_label_rows


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


def _coco_fill(poly: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The polygon as COCO's own rasteriser fills it (what the mask mAP compares against)."""
    coco_mask = pytest.importorskip("faster_coco_eval.core.mask")
    rle = coco_mask.merge(coco_mask.frPyObjects([poly.reshape(-1).astype(float).tolist()], *hw))
    return coco_mask.decode(rle).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _winding(poly: np.ndarray, x: float, y: float) -> int:
    """Winding number of a closed polygon around (x, y): non-zero filling's inside test."""
    d = poly - [x, y]
    ang = np.arctan2(d[:, 1], d[:, 0])
    step = np.diff(np.append(ang, ang[0]))
    return round(float(((step + np.pi) % (2 * np.pi) - np.pi).sum()) / (2 * np.pi))


@pytest.mark.parametrize("index", range(8))
def test_polygons_trace_the_visible_pixels_and_agree_with_the_boxes(index: int) -> None:
    scene = make_scene(0, "val", index, 320)
    hw = scene.owner.shape
    assert len(scene.polygons) == len(scene.labels)
    ious = []
    for i, (poly, (_, x1, y1, x2, y2)) in enumerate(zip(scene.polygons, scene.labels, strict=True)):
        mine = scene.owner == i
        # Straight edges drawn without anti-aliasing are staircases that the 1/2-pixel simplification
        # cuts straight: on the smallest shapes (~100 pixels) that is a few percent.
        ious.append(_iou(_coco_fill(poly, hw), mine))
        assert ious[-1] >= 0.95
        # Traced 1/8 pixel inside the edge and simplified to 1/2 pixel: the bounds are the box's.
        np.testing.assert_allclose([*poly.min(0), *poly.max(0)], [x1, y1, x2, y2], atol=0.65)
    assert np.mean(ious) >= 0.98  # measured 0.993 over the first 30 val images


def test_a_ring_keeps_its_hole_and_a_split_shape_stays_one_polygon() -> None:
    ring = shape_mask(Shape(4, 50.3, 45.6, 30, 0, (0, 0, 0)), (100, 100))
    poly = outline(ring)
    assert _iou(_coco_fill(poly, (100, 100)), ring) > 0.98
    # The hole is outside under both filling rules: even-odd (COCO, above) and non-zero.
    assert _winding(poly, 50.3, 45.6) == 0 and abs(_winding(poly, 50.3, 45.6 + 22)) == 1
    # A circle cut in two by a bar drawn over it: one polygon, both halves, nothing between them.
    disc = shape_mask(Shape(0, 50, 50, 30, 0, (0, 0, 0)), (100, 100))
    disc[45:55] = False
    poly = outline(disc)
    assert _iou(_coco_fill(poly, (100, 100)), disc) > 0.97
    assert abs(_winding(poly, 50, 30)) == 1 and abs(_winding(poly, 50, 70)) == 1
    assert _winding(poly, 20, 50) == 0


def test_segment_files_roundtrip(tmp_path) -> None:
    generate(tmp_path, seed=5, counts={"val": 2}, imgsz=256, segments=True)
    scene = make_scene(5, "val", 1, 256)
    h, w = scene.image.shape[:2]
    boxes, classes, polygons = read_label_rows(tmp_path / "labels" / "val" / "val_000001.txt", h, w)
    np.testing.assert_array_equal(classes, scene.labels[:, 0])
    for poly, want in zip(polygons, scene.polygons, strict=True):
        np.testing.assert_allclose(poly, want, atol=0.01)  # five decimals of the image size
    # The evaluator's box of a polygon row (its bounds) is the tight box label.
    np.testing.assert_allclose(boxes, scene.labels[:, 1:], atol=0.65)
    # The images are the same as with box labels.
    box_dir = tmp_path / "boxes"
    generate(box_dir, seed=5, counts={"val": 2}, imgsz=256)
    assert (box_dir / "images" / "val" / "val_000001.jpg").read_bytes() == \
        (tmp_path / "images" / "val" / "val_000001.jpg").read_bytes()
