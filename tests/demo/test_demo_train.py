"""Trainer plumbing: augmentation keeps labels on the pixels, checkpoints load with the safe loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from s2trt.demo.augment import augment, letterbox_labels, random_placement  # noqa: E402
from s2trt.demo.synth import generate  # noqa: E402
from s2trt.demo.train import ModelEMA, lr_at, main, save_checkpoint  # noqa: E402
from s2trt.models import load_checkpoint  # noqa: E402
from s2trt.models.yolo import DetectionModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _image_with_box(h: int, w: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    lab = np.array([[2, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]], np.float32)
    return img, lab


def _white_bbox(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(img[..., 0] > 200)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def _label_bbox(lab: np.ndarray, size: int) -> np.ndarray:
    c = lab[0, 1:] * size
    return np.array([c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2])


@pytest.mark.parametrize("seed", range(6))
def test_augmented_labels_follow_the_pixels(seed: int) -> None:
    img, lab = _image_with_box(150, 200, (60, 40, 120, 90))
    rng = np.random.default_rng(seed)
    out, new = random_placement(img, lab, 128, rng, scale=(0.6, 0.9))  # small enough to stay whole
    assert out.shape == (128, 128, 3) and len(new) == 1 and new[0, 0] == 2
    # Resampling blurs the edges by about a pixel.
    np.testing.assert_allclose(_label_bbox(new, 128), _white_bbox(out), atol=1.5)
    out, new = letterbox_labels(img, lab, 128)
    np.testing.assert_allclose(_label_bbox(new, 128), _white_bbox(out), atol=1.5)
    out, new = augment(img, lab, 128, rng, hsv=(0, 0, 0))
    if len(new):
        np.testing.assert_allclose(_label_bbox(new, 128), _white_bbox(out), atol=1.5)


def test_objects_cut_by_the_canvas_keep_or_drop_by_visible_area() -> None:
    img, lab = _image_with_box(100, 100, (90, 40, 100, 50))
    full = (10 * 0.8) ** 2  # the box's area at scale 64/100 * 1.25
    kinds = set()
    for seed in range(40):
        out, new = random_placement(img, lab, 64, np.random.default_rng(seed), scale=(1.25, 1.25))
        visible = (out[..., 0] > 127).sum()
        if visible < 0.5 * full:
            assert len(new) == 0
            kinds.add("dropped")
        elif visible > 0.7 * full:
            assert len(new) == 1
            b = _label_bbox(new, 64)
            assert b[0] >= 0 and b[2] <= 64
            kinds.add("kept")
    assert kinds == {"dropped", "kept"}


def test_lr_schedule() -> None:
    assert lr_at(0, 0.0, 10, 1.0, 0.1) == pytest.approx(0.1)  # warmup starts small
    assert lr_at(50, 0.0, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(50, 0.5, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert lr_at(50, 1.0, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_checkpoint_roundtrip_through_the_safe_loader(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DetectionModel("yolov5n-s2", nc=3)
    model.names = {0: "a", 1: "b", 2: "c"}
    ema = ModelEMA(model)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, ema, epoch=7, fitness=0.5, opt={"imgsz": 64})
    raw = torch.load(path, weights_only=False)
    assert raw["ema"] is None and raw["optimizer"] is None and raw["model"].training
    assert next(raw["model"].parameters()).dtype == torch.float16
    loaded = load_checkpoint(path)
    assert loaded.names == ["a", "b", "c"] and loaded.half and loaded.source == "yolov5"
    assert loaded.info["epoch"] == 7 and loaded.stride == [8, 16, 32]
    x = torch.rand(1, 3, 64, 64)
    ref = ema.ema.half().float().eval()  # what was stored: the EMA weights rounded to FP16
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref(x), rtol=1e-4, atol=1e-3)


def test_train_cli_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    data = generate(tmp_path / "d", seed=0, counts={"train": 8, "val": 2}, imgsz=96)
    out = tmp_path / "tiny.pt"
    rc = main(["--data", str(data), "--imgsz", "64", "--epochs", "1", "--batch", "4", "--out", str(out),
               "--threads", "1", "-q"])
    assert rc == 0
    loaded = load_checkpoint(out)
    assert loaded.names == ["circle", "square", "triangle", "star", "ring"]
    assert loaded.info["epoch"] == 0


def test_train_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "none.yaml"), "--imgsz", "64"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["--data", "x", "--imgsz", "100"]) == 1
    assert "multiple of 32" in capsys.readouterr().err
    if not torch.cuda.is_available():
        data = generate(tmp_path / "d", seed=0, counts={"train": 1}, imgsz=64)
        assert main(["--data", str(data), "--device", "cuda"]) == 1
        assert "no CUDA GPU" in capsys.readouterr().err
