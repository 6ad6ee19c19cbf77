"""Trainer plumbing: augmentation keeps labels and polygons on the pixels, masks rasterised from the
polygons, checkpoints (detection and segmentation) load with the safe loader."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from s2trt.demo.assets import ASSETS  # noqa: E402
from s2trt.demo.augment import augment, augment_segments, letterbox_labels, random_placement  # noqa: E402
from s2trt.demo.shapes import CLASSES  # noqa: E402
from s2trt.demo.synth import generate  # noqa: E402
from s2trt.demo.train import (  # noqa: E402
    ModelEMA,
    init_from,
    lr_at,
    main,
    rasterize,
    read_label_file,
    save_checkpoint,
    seg_config,
)
from s2trt.errors import S2Error  # noqa: E402
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
    out, new, _ = random_placement(img, lab, 128, rng, scale=(0.6, 0.9))  # small enough to stay whole
    assert out.shape == (128, 128, 3) and len(new) == 1 and new[0, 0] == 2
    # Resampling blurs the edges by about a pixel.
    np.testing.assert_allclose(_label_bbox(new, 128), _white_bbox(out), atol=1.5)
    out, new, _ = letterbox_labels(img, lab, 128)
    np.testing.assert_allclose(_label_bbox(new, 128), _white_bbox(out), atol=1.5)
    out, new = augment(img, lab, 128, rng, hsv=(0, 0, 0))
    if len(new):
        np.testing.assert_allclose(_label_bbox(new, 128), _white_bbox(out), atol=1.5)


def test_objects_cut_by_the_canvas_keep_or_drop_by_visible_area() -> None:
    img, lab = _image_with_box(100, 100, (90, 40, 100, 50))
    full = (10 * 0.8) ** 2  # the box's area at scale 64/100 * 1.25
    kinds = set()
    for seed in range(40):
        out, new, _ = random_placement(img, lab, 64, np.random.default_rng(seed), scale=(1.25, 1.25))
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


def _polygon_image(h: int, w: int, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A white polygon (pixel-edge coordinates) on black, its box label and its normalised polygon."""
    img = np.zeros((h, w, 3), np.uint8)
    fine = np.zeros((h * 8, w * 8), np.uint8)
    cv2.fillPoly(fine, [np.round((pts * 8 - 0.5) * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
    img[...] = cv2.resize(fine, (w, h), interpolation=cv2.INTER_AREA)[..., None]
    lo, hi = pts.min(0), pts.max(0)
    lab = np.array([[3, (lo[0] + hi[0]) / 2 / w, (lo[1] + hi[1]) / 2 / h, (hi[0] - lo[0]) / w,
                     (hi[1] - lo[1]) / h]], np.float32)
    return img, lab, [(pts / [w, h]).astype(np.float32)]


@pytest.mark.parametrize("seed", range(6))
def test_augmented_polygons_follow_the_pixels(seed: int) -> None:
    star = np.array([[60, 40], [75, 62], [110, 65], [80, 78], [90, 110], [62, 88], [35, 105], [48, 72],
                     [20, 55], [52, 55]], np.float64)
    img, lab, seg = _polygon_image(150, 200, star)
    out, new, moved = augment_segments(img, lab, seg, 128, np.random.default_rng(seed), hsv=(0, 0, 0),
                                       p_plain=0.5)
    assert len(new) == len(moved) == 1
    # The mask rasterised from the moved polygon covers what the moved image shows, at the
    # prototypes' resolution (resampling blurs the edges by about a pixel).
    want = cv2.resize((out[..., 0] > 127).astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    got = rasterize(moved, 128)[0]
    assert np.minimum(got, want).sum() / np.maximum(got, want).sum() > 0.9
    # The moved box is the moved polygon's bounds, cut by the canvas edge as the mask is.
    lo, hi = moved[0].min(0).clip(0, 1), moved[0].max(0).clip(0, 1)
    np.testing.assert_allclose(new[0, 1:], [*(lo + hi) / 2, *(hi - lo)], atol=1e-5)


def test_rasterize_covers_the_polygon_area() -> None:
    # A square 32 x 32 canvas pixels with corners on pixel edges: exactly 8 x 8 prototype pixels.
    sq = np.array([[16, 32], [48, 32], [48, 64], [16, 64]], np.float32) / 128
    m = rasterize([sq], 128)[0]
    assert m.shape == (32, 32)
    np.testing.assert_allclose(m[8:16, 4:12], 1)
    # OpenCV also fills the samples the edges touch: 1/8 of a prototype pixel on two sides.
    assert m.sum() == pytest.approx(64, abs=64 * 2 / 8 / 8 + 0.5)
    assert m[:7].sum() == m[17:].sum() == m[:, :3].sum() == m[:, 13:].sum() == 0


def test_label_files_with_boxes_and_polygons(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("1 0.5 0.5 0.2 0.4\n4 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n")
    labels, segments = read_label_file(p)
    np.testing.assert_allclose(labels, [[1, 0.5, 0.5, 0.2, 0.4], [4, 0.2, 0.4, 0.2, 0.4]], atol=1e-6)
    np.testing.assert_allclose(segments[0], [[0.4, 0.3], [0.6, 0.3], [0.6, 0.7], [0.4, 0.7]], atol=1e-6)
    np.testing.assert_allclose(segments[1], [[0.1, 0.2], [0.3, 0.2], [0.3, 0.6], [0.1, 0.6]], atol=1e-6)
    assert read_label_file(tmp_path / "none.txt")[0].shape == (0, 5)
    p.write_text("1 0.5 0.5\n")
    with pytest.raises(S2Error, match="neither a box nor a polygon"):
        read_label_file(p)


def test_seg_model_starts_from_the_detector() -> None:
    seg = DetectionModel(seg_config(), nc=5)
    det = load_checkpoint(ASSETS / "demo.pt").model.state_dict()
    n = init_from(seg, str(ASSETS / "demo.pt"))
    mine = seg.state_dict()
    head = f"model.{len(seg.model) - 1}."
    same = [k for k in mine if k in det and mine[k].shape == det[k].shape]
    assert n == len(same) + 6  # and the three head convolutions' weights and biases
    for k in same:
        torch.testing.assert_close(mine[k], det[k])
    for lvl in range(3):
        for kind in ("weight", "bias"):
            w = mine[f"{head}m.{lvl}.{kind}"].view(3, 42, -1)
            torch.testing.assert_close(w[:, :10], det[f"{head}m.{lvl}.{kind}"].view(3, 10, -1))
    assert not any(k in det for k in mine if ".proto." in k)


def test_seg_train_cli_writes_a_loadable_seg_checkpoint(tmp_path: Path) -> None:
    data = generate(tmp_path / "d", seed=0, counts={"train": 8, "val": 2}, imgsz=96, segments=True)
    out = tmp_path / "seg.pt"
    rc = main(["--data", str(data), "--cfg", "yolov5n-seg-s2", "--imgsz", "64", "--epochs", "1",
               "--batch", "4", "--out", str(out), "--threads", "1", "-q"])
    assert rc == 0
    loaded = load_checkpoint(out)
    assert loaded.nm == 32 and loaded.names == list(CLASSES) and loaded.has_s2attention
    loaded.model.eval()
    with torch.no_grad():
        det, proto = loaded.model(torch.rand(1, 3, 64, 64))
    assert det.shape[-1] == 5 + 5 + 32 and proto.shape == (1, 32, 16, 16)


def test_train_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "none.yaml"), "--imgsz", "64"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["--data", "x", "--imgsz", "100"]) == 1
    assert "multiple of 32" in capsys.readouterr().err
    if not torch.cuda.is_available():
        data = generate(tmp_path / "d", seed=0, counts={"train": 1}, imgsz=64)
        assert main(["--data", str(data), "--device", "cuda"]) == 1
        assert "no CUDA GPU" in capsys.readouterr().err
