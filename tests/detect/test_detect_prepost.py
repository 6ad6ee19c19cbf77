"""Letterbox, batching and NMS against hand-computed cases and a plain-Python reference."""

from __future__ import annotations

import numpy as np
import pytest

from s2trt.detect.boxes import from_nms_outputs, non_max_suppression, scale_boxes
from s2trt.detect.letterbox import LetterboxInfo, letterbox, preprocess
from s2trt.errors import S2Error


def ref_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_nms(pred, conf_thres, iou_thres, classes=None, agnostic=False, max_det=300):
    """YOLOv5's algorithm written box by box in plain Python, without offsets: the independent reference."""
    out = []
    for img in pred.astype(np.float64):
        cands = []
        for row in img:
            if row[4] <= conf_thres:
                continue
            s = row[5:] * row[4]
            c = int(np.argmax(s))
            if s[c] <= conf_thres or (classes is not None and c not in classes):
                continue
            cx, cy, w, h = row[:4]
            cands.append((float(s[c]), c, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
        cands.sort(key=lambda t: -t[0])
        kept = []
        for score, c, box in cands:
            if all(ref_iou(box, kb) <= iou_thres for ks, kc, kb in kept if agnostic or kc == c):
                kept.append((score, c, box))
        out.append(np.array([[*b, s, c] for s, c, b in kept[:max_det]], dtype=np.float64).reshape(-1, 6))
    return out


def row(cx, cy, w, h, obj, cls, nc=3, p=0.9):
    r = np.zeros(5 + nc, dtype=np.float32)
    r[:5] = cx, cy, w, h, obj
    r[5 + cls] = p
    return r


def test_nms_hand_made_overlaps():
    rows = [
        row(50, 50, 20, 20, 0.9, 0),     # kept: best of class 0
        row(52, 50, 20, 20, 0.8, 0),     # IoU 0.82 with the first -> suppressed
        row(52, 50, 20, 20, 0.85, 1),    # same place, other class -> kept (class-aware)
        row(70, 50, 20, 20, 0.7, 0),     # IoU with first = 0 (touching) -> kept
        row(200, 200, 10, 10, 0.2, 2),   # objectness below 0.25 -> dropped
        row(300, 300, 10, 10, 0.3, 2, p=0.5),  # obj ok but 0.3*0.5 = 0.15 < 0.25 -> dropped
    ]
    pred = np.stack(rows)[None]
    det = non_max_suppression(pred, 0.25, 0.45)[0]
    assert det.shape == (3, 6)
    np.testing.assert_allclose(det[:, 4], [0.81, 0.765, 0.63], rtol=1e-6)
    np.testing.assert_array_equal(det[:, 5], [0, 1, 0])
    np.testing.assert_allclose(det[0, :4], [40, 40, 60, 60])
    agn = non_max_suppression(pred, 0.25, 0.45, agnostic=True)[0]
    np.testing.assert_array_equal(agn[:, 5], [0, 0])  # the class-1 twin is suppressed now
    only1 = non_max_suppression(pred, 0.25, 0.45, classes=[1])[0]
    np.testing.assert_array_equal(only1[:, 5], [1])
    assert non_max_suppression(pred, 0.25, 0.45, max_det=1)[0].shape == (1, 6)


def test_nms_iou_threshold_decides_suppression():
    # Two 10x10 boxes shifted by 10/3 px horizontally: IoU = (20/3)/(40/3) = 0.5 exactly
    pred = np.stack([row(10, 10, 10, 10, 0.9, 0), row(10 + 10 / 3, 10, 10, 10, 0.8, 0)])[None]
    assert len(non_max_suppression(pred, 0.25, 0.55)[0]) == 2
    assert len(non_max_suppression(pred, 0.25, 0.45)[0]) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_matches_plain_reference_on_random_clusters(seed, agnostic):
    rng = np.random.default_rng(seed)
    nc, n = 4, 400
    centers = rng.uniform(50, 590, (12, 2))
    pick = rng.integers(0, 12, n)
    pred = np.zeros((2, n, 5 + nc), dtype=np.float32)
    pred[..., :2] = centers[pick] + rng.normal(0, 4, (2, n, 2))
    pred[..., 2:4] = rng.uniform(20, 60, (2, n, 2))
    pred[..., 4] = rng.uniform(0, 1, (2, n))
    pred[..., 5:] = rng.uniform(0, 1, (2, n, nc))
    got = non_max_suppression(pred, 0.3, 0.5, agnostic=agnostic)
    want = ref_nms(pred, 0.3, 0.5, agnostic=agnostic)
    for g, w in zip(got, want, strict=True):
        assert len(g) > 5
        order_g, order_w = np.lexsort(g[:, :5].T), np.lexsort(w[:, :5].T)
        np.testing.assert_allclose(g[order_g], w[order_w], rtol=1e-5, atol=1e-3)


def test_nms_empty_and_bad_shape():
    pred = np.zeros((2, 10, 8), dtype=np.float32)
    assert [d.shape for d in non_max_suppression(pred)] == [(0, 6), (0, 6)]
    with pytest.raises(ValueError, match="5 \\+ nc"):
        non_max_suppression(np.zeros((10, 8), dtype=np.float32))


def test_letterbox_geometry_like_yolov5():
    img = np.zeros((333, 500, 3), dtype=np.uint8)
    out, r, (dw, dh) = letterbox(img, 640)
    assert out.shape == (640, 640, 3)
    assert r == pytest.approx(640 / 500)
    # resized to 640 x round(333 * 1.28) = 426: dh = 214 / 2 = 107
    assert (dw, dh) == (0, 107)
    assert (out[:107] == 114).all() and (out[-107:] == 114).all()
    assert (out[107:533] == 0).all()
    # odd padding: 639 - 426 ... use a 641-high target to split 215 as 107 top, 108 bottom
    odd, _, (_, dh) = letterbox(img, (641, 640), stride=1)
    assert dh == 107.5 and (odd[:107] == 114).all() and odd[107].max() == 0 and (odd[-108:] == 114).all()
    small = np.zeros((100, 200, 3), dtype=np.uint8)
    _, r, _ = letterbox(small, 640, scaleup=False)
    assert r == 1.0
    auto, _, _ = letterbox(img, 640, auto=True)
    assert auto.shape == (448, 640, 3)  # 426 padded up to the next multiple of 32


def test_preprocess_equals_letterbox_then_manual_conversion():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (333, 500, 3), dtype=np.uint8),
              rng.integers(0, 255, (480, 640, 3), dtype=np.uint8),
              rng.integers(0, 255, (720, 300, 3), dtype=np.uint8)]
    x, infos = preprocess(frames, (320, 416))
    assert x.shape == (3, 3, 320, 416) and x.dtype == np.float32 and x.flags.c_contiguous
    for i, f in enumerate(frames):
        lb, r, pad = letterbox(f, (320, 416))
        want = lb[..., ::-1].transpose(2, 0, 1).astype(np.float64) / 255
        np.testing.assert_allclose(x[i], want, atol=1e-6)
        assert infos[i] == LetterboxInfo(r, pad, f.shape[:2])
    buf = np.zeros((4, 3, 320, 416), dtype=np.float32)
    y, _ = preprocess(frames, (320, 416), out=buf)
    assert np.shares_memory(y, buf) and y.shape[0] == 3
    np.testing.assert_array_equal(buf[:3], x)


def test_preprocess_rejects_bad_frames():
    with pytest.raises(S2Error, match="not a BGR uint8"):
        preprocess([np.zeros((10, 10), dtype=np.uint8)], 64)
    with pytest.raises(S2Error, match="multiple of the model stride"):
        preprocess([np.zeros((10, 10, 3), dtype=np.uint8)], 100)


def test_scale_boxes_inverts_letterbox_and_clips():
    info = LetterboxInfo(ratio=1.28, pad=(0.0, 107.0), orig_shape=(333, 500))
    orig = np.array([[10, 20, 110, 220, 0.9, 3]], dtype=np.float32)
    net = orig.copy()
    net[:, [0, 2]] = net[:, [0, 2]] * 1.28
    net[:, [1, 3]] = net[:, [1, 3]] * 1.28 + 107
    np.testing.assert_allclose(scale_boxes(net, info), orig, rtol=1e-5)
    outside = np.array([[-20, 90, 700, 600, 0.5, 0]], dtype=np.float32)
    np.testing.assert_allclose(scale_boxes(outside, info)[0, :4], [0, 0, 500, 333])


def test_from_nms_outputs():
    num = np.array([[2], [0]], dtype=np.int32)
    boxes = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    scores = np.full((2, 5), 0.5, dtype=np.float32)
    classes = np.array([[3, 1, 0, 0, 0], [0] * 5], dtype=np.int32)
    a, b = from_nms_outputs(num, boxes, scores, classes)
    assert a.shape == (2, 6) and b.shape == (0, 6)
    np.testing.assert_array_equal(a[:, :4], boxes[0, :2])
    np.testing.assert_array_equal(a[:, 5], [3, 1])


@pytest.mark.parametrize("shape, pad, ratio", [((1, 5000), (0.0, 63.5), 160 / 5000),
                                               ((5000, 1), (79.5, 0.0), 128 / 5000),
                                               ((2, 9000), (0.0, 63.5), 160 / 9000)])
def test_a_one_pixel_thin_frame_keeps_one_row_or_column(shape, pad, ratio):
    """1x5000 at 128x160: 0.032 x 1 row rounds to 0; the frame is squeezed to one row, not dropped."""
    img = np.full((*shape, 3), 200, np.uint8)
    x, (info,) = preprocess([img], (128, 160))
    assert info == LetterboxInfo(ratio, pad, shape)
    content = np.argwhere(np.abs(x[0, 0] - 200 / 255) < 1e-6)
    rows, cols = sorted(set(content[:, 0])), sorted(set(content[:, 1]))
    if pad[1]:  # one row, 63 = round(63.5 - 0.1), across the full width
        assert rows == [63] and cols == list(range(160))
    else:
        assert cols == [79] and rows == list(range(128))
    assert len(content) == (160 if pad[1] else 128)  # everything else is padding
    lb, r, p = letterbox(img, (128, 160))
    assert lb.shape == (128, 160, 3) and (r, p) == (ratio, pad)
    # Boxes map back inside the frame.
    det = np.array([[0, 0, 160, 128, 0.9, 0]], np.float32)
    np.testing.assert_allclose(scale_boxes(det, info)[0, :4], [0, 0, shape[1], shape[0]])


def test_boxes_without_area_in_the_frame_are_dropped():
    info = LetterboxInfo(ratio=1.0, pad=(0.0, 20.0), orig_shape=(100, 200))
    net = np.array([[10, 30, 50, 60, 0.9, 1],  # inside
                    [10, 0, 50, 15, 0.8, 2],  # wholly in the top padding: clips to y1 == y2 == 0
                    [30, 40, 30, 80, 0.7, 3],  # zero width
                    [210, 40, 250, 80, 0.6, 4],  # right of the frame
                    [190, 110, 230, 150, 0.5, 0]], np.float32)  # crosses the corner: kept, clipped
    out = scale_boxes(net, info)
    np.testing.assert_allclose(out, [[10, 10, 50, 40, 0.9, 1], [190, 90, 200, 100, 0.5, 0]])
    assert scale_boxes(np.zeros((0, 6), np.float32), info).shape == (0, 6)
