"""Instance masks (s2trt.detect.masks) against a float64 NumPy reference written from the spec, and
against PyTorch's own resize on a real v7.0 segmentation checkpoint's outputs.

The spec is yolov5 v7.0 predict.py's: sigmoid(coefficients . prototypes), bilinear upsample to the
letterboxed input (align_corners=False), crop to the box, > 0.5, then the letterbox's content
region resized to the frame (same bilinear rule), > 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import paths
import pytest
import torch

from s2trt.detect.boxes import non_max_suppression, postprocess
from s2trt.detect.letterbox import preprocess
from s2trt.detect.masks import fill_polygons, full_masks, process_masks, to_frames
from s2trt.detect.options import DetectOptions

DATA = paths.DATA / "yolov5" / "v7.0"
NM = 32


def _resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float64 interpolation matrix of a half-pixel-centre bilinear resize with clamped
    edges: out = A @ in. Written from the definition, one output row at a time."""
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(np.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        a[i, lo] += 1 - (src - lo)
        a[i, hi] += src - lo
    return a


def reference_masks(proto, coefs, boxes, input_hw, frame_hw, top, left, nh, nw):
    """Full-frame float64 masks and, per frame pixel, how far its last value was from 0.5."""
    h, w = input_hw
    nm, mh, mw = proto.shape
    soft = 1 / (1 + np.exp(-(coefs.astype(np.float64) @ proto.astype(np.float64).reshape(nm, -1))))
    soft = soft.reshape(-1, mh, mw)
    ay, ax = _resize_matrix(h, mh), _resize_matrix(w, mw)
    fy, fx = _resize_matrix(frame_hw[0], nh), _resize_matrix(frame_hw[1], nw)
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    masks, margins, crop_margins = [], [], []
    for m, (x1, y1, x2, y2) in zip(soft, boxes.astype(np.float64), strict=True):
        up = ay @ m @ ax.T
        inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        crop_margins.append(np.abs(up - 0.5)[inside].min(initial=1.0))
        binary = (up * inside) > 0.5
        content = binary[top:top + nh, left:left + nw].astype(np.float64)
        frame = fy @ content @ fx.T
        masks.append(frame > 0.5)
        margins.append(np.abs(frame - 0.5))
    return masks, margins, min(crop_margins, default=1.0)


def _case(seed: int, frame_hw: tuple[int, int], input_hw=(128, 160), n=12):
    rng = np.random.default_rng(seed)
    h, w = input_hw
    proto = rng.normal(0, 1, (NM, h // 4, w // 4)).astype(np.float32)
    coefs = rng.normal(0, 0.6, (n, NM)).astype(np.float32)
    xy = rng.uniform(-10, [w, h], (n, 2))
    wh = rng.uniform(2, [w * 0.7, h * 0.7], (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    frame = np.zeros((*frame_hw, 3), np.uint8)
    _, infos = preprocess([frame], input_hw)
    dets = np.concatenate([boxes, np.full((n, 1), 0.9), np.zeros((n, 1)), coefs], 1).astype(np.float32)
    return proto, dets, infos[0]


@pytest.mark.parametrize("frame_hw", [(480, 640), (640, 360), (37, 91), (1080, 1920), (128, 160)])
@pytest.mark.parametrize("seed", [0, 1])
def test_masks_match_the_float64_reference(frame_hw, seed):
    input_hw = (128, 160)
    proto, dets, info = _case(seed, frame_hw, input_hw)
    dw, dh = info.pad
    top, left = round(dh - 0.1), round(dw - 0.1)
    nh, nw = round(input_hw[0] - 2 * dh), round(input_hw[1] - 2 * dw)
    want, margins, crop_margin = reference_masks(proto, dets[:, 6:], dets[:, :4], input_hw, frame_hw,
                                                 top, left, nh, nw)
    assert crop_margin > 1e-5  # no input pixel within float32's reach of the threshold
    got = process_masks(proto, dets, input_hw, info)
    assert len(got) == len(dets)
    assert sum(m.area for m in got) > 0
    for g, wnt, margin in zip(got, want, margins, strict=True):
        diff = g.full(frame_hw) != wnt
        # A frame pixel may only differ where the float64 value is a tie with 0.5 (half-way
        # between a set and an unset pixel: float32 and float64 weights can round either way).
        assert not (diff & (margin > 1e-6)).any(), np.argwhere(diff & (margin > 1e-6))[:5]


def test_a_box_outside_the_input_or_in_the_padding_has_an_empty_mask():
    proto, dets, info = _case(3, (100, 400))
    dets[0, :4] = [-50, -50, -10, -10]  # outside the input
    dets[1, :4] = [10, 2, 60, 8]  # in the top padding of a wide frame letterboxed to 128x160
    got = process_masks(proto, dets[:2], (128, 160), info)
    assert got[0].area == 0 and got[1].area == 0


def _fixture_outputs(name: str = "yolov5s-seg"):
    """A real frame letterboxed, through the v7.0 checkpoint's PyTorch forward."""
    from s2trt.export.parity import demo_assets
    from s2trt.models import load_checkpoint

    lm = load_checkpoint(DATA / f"{name}.pt")
    img = cv2.imread(str(sorted((demo_assets() / "images").glob("*.jpg"))[0]))
    frame = np.ascontiguousarray(cv2.resize(img, (150, 97)))  # not the letterbox's aspect
    x, infos = preprocess([frame], (64, 96))
    with torch.no_grad():
        det, proto = lm.model(torch.from_numpy(x))
    return frame, infos[0], {"output0": det.numpy(), "output1": proto.numpy()}


def test_masks_match_pytorchs_resize_on_a_real_checkpoint():
    """The same steps in PyTorch (matmul, sigmoid, F.interpolate bilinear, box crop, > 0.5, the
    letterbox's content region, F.interpolate to the frame, > 0.5) on the model's own outputs."""
    import torch.nn.functional as F

    frame, info, outputs = _fixture_outputs()
    dets = postprocess(outputs, DetectOptions(conf_thres=0.001, iou_thres=0.6))
    assert dets[0].shape[1] == 6 + NM and len(dets[0]) >= 3
    got = process_masks(outputs["output1"][0], dets[0], (64, 96), info)
    proto = torch.from_numpy(outputs["output1"][0]).double()
    d = torch.from_numpy(dets[0]).double()
    soft = (d[:, 6:] @ proto.reshape(NM, -1)).sigmoid().reshape(-1, *proto.shape[1:])
    up = F.interpolate(soft[None], (64, 96), mode="bilinear", align_corners=False)[0]
    r, c = torch.arange(64)[None, :, None], torch.arange(96)[None, None, :]
    x1, y1, x2, y2 = (d[:, k, None, None] for k in range(4))
    binary = (up * ((c >= x1) & (c < x2) & (r >= y1) & (r < y2))).gt(0.5).double()
    dw, dh = info.pad
    top, left = round(dh - 0.1), round(dw - 0.1)
    nh, nw = round(64 - 2 * dh), round(96 - 2 * dw)
    content = binary[:, top:top + nh, left:left + nw]
    frame_val = F.interpolate(content[None], frame.shape[:2], mode="bilinear", align_corners=False)[0]
    want = frame_val.gt(0.5).numpy()
    tie = (frame_val - 0.5).abs().numpy() < 1e-6
    assert sum(m.area for m in got) > 0
    for g, wnt, t in zip(got, want, tie, strict=True):
        assert not ((g.full(frame.shape[:2]) != wnt) & ~t).any()


def test_polygons_read_back_as_the_mask_with_its_holes_filled():
    frame, info, outputs = _fixture_outputs("yolov5x-seg")
    dets = postprocess(outputs, DetectOptions(conf_thres=0.001, iou_thres=0.6))
    frames, masks = to_frames(dets, outputs, [info], (64, 96))
    shape = frame.shape[:2]
    assert masks[0] is not None and len(masks[0]) == len(frames[0]) and frames[0].shape[1] == 6
    checked = 0
    for m in masks[0]:
        polys = json.loads(json.dumps(m.polygons()))  # through JSON, as s2infer writes them
        back = fill_polygons(polys, shape)
        full = m.full(shape)
        assert not (full & ~back).any()  # every mask pixel is inside its polygons
        # What the polygons add is only holes: pixels not reachable from outside the mask.
        outside = np.pad(~full, 1).astype(np.uint8)
        cv2.floodFill(outside, None, (0, 0), 2)
        holes = outside[1:-1, 1:-1] == 1
        assert not (back & ~full & ~holes).any()
        checked += bool(m.area)
    assert checked >= 3


def test_nms_carries_the_coefficients_of_the_kept_boxes():
    rng = np.random.default_rng(5)
    n, nc = 200, 3
    pred = np.zeros((1, n, 5 + nc + NM), np.float32)
    pred[0, :, :2] = rng.uniform(20, 300, (n, 2))
    pred[0, :, 2:4] = rng.uniform(5, 60, (n, 2))
    pred[0, :, 4] = rng.uniform(0, 1, n)
    pred[0, :, 5:5 + nc] = rng.uniform(0, 1, (n, nc))
    pred[0, :, 5 + nc:] = np.arange(n)[:, None] * 10.0  # large: must never be read as a class score
    got = non_max_suppression(pred, 0.2, 0.5, nm=NM)[0]
    plain = non_max_suppression(pred[..., :5 + nc], 0.2, 0.5)[0]
    assert got.shape == (len(plain), 6 + NM) and len(plain) > 10
    np.testing.assert_array_equal(got[:, :6], plain)
    rows = (got[:, 6] / 10).round().astype(int)
    np.testing.assert_array_equal(got[:, 6:], pred[0, rows, 5 + nc:])
    np.testing.assert_allclose(got[:, 4], pred[0, rows, 4] * pred[0, rows, 5:5 + nc].max(1), rtol=1e-6)


def test_to_frames_keeps_masks_beside_the_boxes_the_frame_keeps():
    proto, dets, info = _case(7, (100, 400), n=4)
    # The frame fills input rows 44..83 of 128: the second box is all padding, scale_boxes drops it.
    dets[:, :4] = [[20, 50, 80, 80], [10, 2, 60, 8], [90, 45, 150, 83], [0, 60, 40, 70]]
    frames, masks = to_frames([dets], {"output0": np.zeros(1), "output1": proto[None]}, [info], (128, 160))
    assert len(frames[0]) == 3 and len(masks[0]) == 3 and all(m.area for m in masks[0])
    want = process_masks(proto, dets[[0, 2, 3]], (128, 160), info)
    for g, wnt in zip(masks[0], want, strict=True):
        np.testing.assert_array_equal(g.full((100, 400)), wnt.full((100, 400)))
    stacked = full_masks(masks[0], (100, 400))
    assert stacked.shape == (3, 100, 400) and [int(m.sum()) for m in stacked] == [m.area for m in masks[0]]
    assert full_masks([], (100, 400)).shape == (0, 100, 400)
    plain, none = to_frames([dets[:, :6]], {"output0": np.zeros(1)}, [info], (128, 160))
    assert none == [None] and plain[0].shape == (3, 6)


def _polygon_dataset(root: Path) -> tuple[Path, list[tuple[tuple[int, int], list[np.ndarray]]]]:
    """Four images with two or three convex polygons each, labelled in YOLO's polygon format."""
    rng = np.random.default_rng(11)
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    truth = []
    for i, (h, w) in enumerate([(160, 200), (120, 200), (200, 160), (160, 160)]):
        img = np.full((h, w, 3), 60, np.uint8)
        polys, lines = [], []
        for k in range(2 + i % 2):
            cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
            ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
            rad = rng.uniform(0.15, 0.3) * min(h, w)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
            polys.append(pts)
            cv2.fillPoly(img, [pts.round().astype(np.int32)], (200, 80 + 60 * k, 40))
            lines.append(" ".join([str(k % 2), *(f"{v:.6f}" for v in (pts / [w, h]).reshape(-1))]))
        cv2.imwrite(str(root / "images" / "val" / f"im{i}.png"), img)
        (root / "labels" / "val" / f"im{i}.txt").write_text("\n".join(lines) + "\n")
        truth.append(((h, w), polys))
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\nnames: [a, b]\n")
    return root / "data.yaml", truth


def _mask_oracle(truth, imgsz: int, wrong: bool = False):
    """A seg backend that 'predicts' each labelled polygon: its bounds as the box, and a prototype
    channel per object that is +10 inside the polygon (drawn at stride 4) and -10 outside, picked by
    a one-hot coefficient; `wrong` picks the next object's channel instead. The letterbox
    arithmetic is written out here, not imported."""
    outs = []
    for (h, w), polys in truth:
        r = min(imgsz / h, imgsz / w)
        dw, dh = (imgsz - round(w * r)) / 2, (imgsz - round(h * r)) / 2
        det = np.zeros((20, 5 + 2 + NM), np.float32)
        proto = np.full((NM, imgsz // 4, imgsz // 4), -10, np.float32)
        for k, pts in enumerate(polys):
            p = pts * r + [dw, dh]
            (x0, y0), (x1, y1) = p.min(0), p.max(0)
            det[k, :5] = ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.9)
            det[k, 5 + k % 2] = 1.0
            det[k, 7 + (k + wrong) % len(polys)] = 1.0
            plane = np.zeros(proto.shape[1:], np.uint8)
            cv2.fillPoly(plane, [(p / 4).round().astype(np.int32)], 1)
            proto[k][plane.astype(bool)] = 10
        outs.append((det, proto))
    queue = iter(outs)

    def predict(x: np.ndarray):
        got = [next(queue) for _ in range(len(x))]
        return np.stack([g[0] for g in got]), np.stack([g[1] for g in got])

    return predict


def test_mask_map_of_polygon_labels_tells_right_masks_from_wrong_ones(tmp_path):
    pytest.importorskip("faster_coco_eval")
    from s2trt.detect.evaluate import evaluate

    data, truth = _polygon_dataset(tmp_path)
    right = evaluate(_mask_oracle(truth, 128), data, imgsz=128, batch=3)
    wrong = evaluate(_mask_oracle(truth, 128, wrong=True), data, imgsz=128, batch=3)
    # The boxes are the same in both: only the masks tell them apart.
    assert right["mAP50"] > 0.99 and wrong["mAP50"] > 0.99
    assert right["mask_mAP50"] > 0.99 and 0.3 < right["mask_mAP50-95"] < 1.0
    assert wrong["mask_mAP50"] < 0.2
