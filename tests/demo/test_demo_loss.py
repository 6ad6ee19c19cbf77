"""YOLOv5 loss: CIoU against hand-computed values, target assignment rules, the mask loss against a
per-positive NumPy computation, and that both train."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from s2trt.demo.loss import SegmentLoss, YoloLoss, bbox_ciou, crop_to_boxes  # noqa: E402
from s2trt.demo.train import seg_config  # noqa: E402
from s2trt.models.yolo import DetectionModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_ciou_hand_values() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert bbox_ciou(a, a).item() == pytest.approx(1.0, abs=1e-5)
    # Same size, centres 1 apart along x: IoU 2/6, enclosing box 3 x 2 (diagonal^2 13), no aspect term.
    b = torch.tensor([[1.0, 0.0, 2.0, 2.0]])
    assert bbox_ciou(a, b).item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-5)
    # Same centre, 2x2 vs 4x2: IoU 1/2, no distance term, aspect term v = (4/pi^2)(atan 2 - atan 1)^2.
    c = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    v = 4 / math.pi ** 2 * (math.atan(2) - math.atan(1)) ** 2
    alpha = v / (v - 0.5 + 1)
    assert bbox_ciou(a, c).item() == pytest.approx(0.5 - alpha * v, abs=1e-5)
    far = torch.tensor([[10.0, 10.0, 2.0, 2.0]])
    assert bbox_ciou(a, far).item() < 0


@pytest.fixture(scope="module")
def model() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel("yolov5n-s2", nc=5).train()


def test_match_cells_and_anchor_filter(model: DetectionModel) -> None:
    loss = YoloLoss(model, imgsz=256)
    shape = (1, 3, 32, 32, 10)  # P3 at 256: stride 8
    anchors = model.detect.anchors[0]  # grid units: (10,13), (16,30), (33,23) px / 8
    # A target at grid (10.3, 20.7) whose size equals anchor 0: its own cell (10, 20), the left
    # neighbour (x frac < 0.5) and the lower neighbour (y frac > 0.5).
    w, h = anchors[0].tolist()
    t = torch.tensor([[0, 2, 10.3 / 32, 20.7 / 32, w / 32, h / 32]])
    b, a, gj, gi, tbox, cls, anc = loss.match(0, shape, t)
    cells = {(int(x), int(y)) for x, y, k in zip(gi, gj, a, strict=True) if k == 0}
    assert cells == {(10, 20), (9, 20), (10, 21)}
    assert set(cls.tolist()) == {2} and set(b.tolist()) == {0}
    # Anchors within the 4x ratio are all assigned; the box is relative to each assigned cell.
    ratios = [max(max(w / aw, aw / w), max(h / ah, ah / h)) for aw, ah in anchors.tolist()]
    assert set(a.tolist()) == {k for k, r in enumerate(ratios) if r < 4}
    own = (gi == 10) & (gj == 20)
    assert torch.allclose(tbox[own][0, :2], torch.tensor([0.3, 0.7]), atol=1e-5)
    assert torch.allclose(tbox[(gi == 9) & (gj == 20)][0, :2], torch.tensor([1.3, 0.7]), atol=1e-5)
    assert torch.allclose(anc[own & (a == 0)][0], anchors[0])
    # Twenty times an anchor's size matches no P3 anchor.
    big = torch.tensor([[0, 1, 0.5, 0.5, 20 * w / 32, 20 * h / 32]])
    assert len(loss.match(0, shape, big)[0]) == 0


def test_loss_parts_and_empty_targets(model: DetectionModel) -> None:
    loss = YoloLoss(model, imgsz=128)
    x = torch.rand(2, 3, 128, 128)
    total, parts = loss(model(x), torch.zeros(0, 6))
    assert parts[0] == 0 and parts[2] == 0 and parts[1] > 0  # only objectness without targets
    assert total.item() == pytest.approx(parts.sum().item() * 2, rel=1e-5)


def test_a_few_steps_fit_one_batch() -> None:
    torch.manual_seed(0)
    m = DetectionModel("yolov5n-s2", nc=5).train()
    loss = YoloLoss(m, imgsz=96)
    x = torch.rand(2, 3, 96, 96)
    t = torch.tensor([[0, 1, 0.3, 0.4, 0.2, 0.25], [1, 3, 0.6, 0.5, 0.4, 0.3], [1, 0, 0.2, 0.8, 0.1, 0.1]])
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    first = None
    for _ in range(12):
        total, _ = loss(m(x), t)
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.8 * first  # measured 0.71 with this seed


def test_crop_to_boxes() -> None:
    maps = torch.rand(2, 6, 8)
    boxes = torch.tensor([[1.0, 2.0, 4.0, 5.0], [0.5, 0.0, 8.0, 2.5]])
    out = crop_to_boxes(maps, boxes).numpy()
    ys, xs = np.mgrid[0:6, 0:8]
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        # A pixel counts when its index lies in [x1, x2) and [y1, y2), as yolov5's crop_mask.
        inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        np.testing.assert_array_equal(out[k], np.where(inside, maps[k].numpy(), 0))


@pytest.fixture(scope="module")
def seg_model() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(seg_config(), nc=5).train()


def _bce(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))


def test_mask_loss_against_a_per_positive_computation(seg_model: DetectionModel) -> None:
    imgsz = 64
    loss = SegmentLoss(seg_model, imgsz)
    torch.manual_seed(1)
    x = torch.rand(2, 3, imgsz, imgsz)
    t = torch.tensor([[0, 1, 0.3, 0.4, 0.3, 0.35], [1, 3, 0.6, 0.5, 0.5, 0.4], [1, 0, 0.25, 0.7, 0.2, 0.2]])
    masks = (torch.rand(3, imgsz // 4, imgsz // 4) > 0.5).float()
    with torch.no_grad():
        maps, proto = seg_model(x)
        total, parts = loss((maps, proto), t, masks)
        det_total, det_parts = YoloLoss.__call__(loss, maps, t)
    np.testing.assert_allclose(parts[:3].numpy(), det_parts.numpy(), rtol=1e-6)
    # yolov5's rule, one positive at a time: BCE of (coefficients . prototypes) against the target's
    # mask, inside its box (at prototype scale), averaged over the map and divided by the box's
    # area; the mean over each image's positives, summed over images and layers, times box gain / B.
    pr = proto.numpy()
    ys, xs = np.mgrid[0:imgsz // 4, 0:imgsz // 4]
    want = 0.0
    for i, p in enumerate(maps):
        b, a, gj, gi, *_, rows = loss.assign(i, p.shape, t)
        assert len(b) > 0
        for img in set(b.tolist()):
            per = []
            for k in np.nonzero(b.numpy() == img)[0]:
                coef = p[b[k], a[k], gj[k], gi[k], 10:].numpy()
                logits = np.tensordot(coef, pr[img], 1)
                cx, cy, w, h = t[rows[k], 2:].numpy() * imgsz / 4
                inside = (xs >= cx - w / 2) & (xs < cx + w / 2) & (ys >= cy - h / 2) & (ys < cy + h / 2)
                err = np.where(inside, _bce(logits, masks[rows[k]].numpy()), 0)
                per.append(err.mean() / float(t[rows[k], 4] * t[rows[k], 5]))
            want += np.mean(per)
    want *= loss.w_box / 2
    assert parts[3].item() == pytest.approx(want, rel=1e-4)
    assert total.item() == pytest.approx((det_total.item() / 2 + want) * 2, rel=1e-4)
    # Without targets there is nothing to segment.
    assert loss((maps, proto), torch.zeros(0, 6), masks[:0])[1][3] == 0


def test_a_few_steps_fit_one_batch_of_masks() -> None:
    torch.manual_seed(0)
    m = DetectionModel(seg_config(), nc=5).train()
    imgsz = 64
    loss = SegmentLoss(m, imgsz)
    x = torch.rand(2, 3, imgsz, imgsz)
    t = torch.tensor([[0, 1, 0.3, 0.4, 0.4, 0.4], [1, 4, 0.6, 0.5, 0.5, 0.5]])
    ys, xs = np.mgrid[0:16, 0:16] + 0.5
    disc = lambda cx, cy, r: torch.from_numpy(((xs - cx) ** 2 + (ys - cy) ** 2 < r * r).astype(np.float32))  # noqa: E731
    masks = torch.stack((disc(4.8, 6.4, 3.2), disc(9.6, 8.0, 4.0)))
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    first = None
    for _ in range(12):
        total, parts = loss(m(x), t, masks)
        first = parts[3].item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert parts[3].item() < 0.3 * first  # measured 0.015 of the first with this seed
