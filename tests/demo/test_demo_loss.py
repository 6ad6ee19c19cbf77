"""YOLOv5 loss: CIoU against hand-computed values, target assignment rules, and that it trains."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from s2trt.demo.loss import YoloLoss, bbox_ciou  # noqa: E402
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
