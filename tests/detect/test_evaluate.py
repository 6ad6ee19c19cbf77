"""runtime.evaluate: oracle backends with known IoU give known mAP; the bundled demo model's floor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from s2trt.demo.synth import generate
from s2trt.detect.evaluate import coco_map, evaluate
from s2trt.errors import S2Error

pytest.importorskip("faster_coco_eval")

NC = 5
IMGSZ = 256


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Width 256 and heights 256 or 192 (the generator mixes both), so letterbox padding is exercised.
    return generate(tmp_path_factory.mktemp("shapes"), seed=0, counts={"val": 6}, imgsz=256)


def _truth(data: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per image in sorted order: (h, w) and label rows [cls, cx, cy, w, h] in pixels."""
    for p in sorted((data.parent / "images" / "val").glob("*.jpg")):
        h, w = cv2.imread(str(p)).shape[:2]
        rows = np.loadtxt(data.parent / "labels" / "val" / f"{p.stem}.txt", ndmin=2)
        yield np.array([h, w]), rows * np.array([1, w, h, w, h])


def oracle(data: Path, shift: float = 0.0, class_offset: int = 0, n_out: int = 50):
    """A backend that 'predicts' the ground truth, moved right by `shift` box widths, in network pixels.

    The letterbox arithmetic is written out here (scale to fit, centred padding), not imported.
    """
    rows = []
    for (h, w), lab in _truth(data):
        r = min(IMGSZ / h, IMGSZ / w)
        dw, dh = (IMGSZ - round(w * r)) / 2, (IMGSZ - round(h * r)) / 2
        out = np.zeros((n_out, 5 + NC), np.float32)
        for k, (c, cx, cy, bw, bh) in enumerate(lab):
            out[k, :4] = ((cx + shift * bw) * r + dw, cy * r + dh, bw * r, bh * r)
            out[k, 4] = 0.9
            out[k, 5 + (int(c) + class_offset) % NC] = 1.0
        rows.append(out)
    queue = iter(rows)

    def predict(x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.shape[1:] == (3, IMGSZ, IMGSZ)
        return np.stack([next(queue) for _ in range(len(x))])

    return predict


def test_perfect_predictions_score_one(data: Path) -> None:
    r = evaluate(oracle(data), data, imgsz=IMGSZ, batch=4)
    assert r["images"] == 6
    assert r["mAP50"] == pytest.approx(1.0, abs=1e-6)
    assert r["mAP50-95"] == pytest.approx(1.0, abs=1e-6)


def test_shifted_boxes_lose_exactly_the_strict_thresholds(data: Path) -> None:
    # Moving every box by 10% of its width gives IoU 0.9 / 1.1 = 0.818: it passes the thresholds
    # 0.50 .. 0.80 (7 of the 10) and fails 0.85 .. 0.95.
    r = evaluate(oracle(data, shift=0.1), data, imgsz=IMGSZ, batch=4)
    assert r["mAP50"] == pytest.approx(1.0, abs=1e-6)
    assert r["mAP50-95"] == pytest.approx(0.7, abs=1e-6)
    # Half a width: IoU 1/3, nothing counts.
    r = evaluate(oracle(data, shift=0.5), data, imgsz=IMGSZ, batch=3)
    assert r["mAP50"] == pytest.approx(0.0, abs=1e-6)


def test_wrong_classes_score_zero(data: Path) -> None:
    r = evaluate(oracle(data, class_offset=1), data, imgsz=IMGSZ, batch=6)
    assert r["mAP50"] == pytest.approx(0.0, abs=1e-6)


def test_false_positive_ranked_first_halves_ap() -> None:
    gt = [((100, 100), np.array([[10.0, 10, 50, 50]]), np.array([0]))]
    dets = [np.array([[60, 60, 90, 90, 0.9, 0], [10, 10, 50, 50, 0.8, 0]], np.float32)]
    # Precision 1/2 at recall 1, and the precision envelope is 1/2 at every recall level.
    r = coco_map(gt, dets, nc=1)
    assert r["mAP50"] == pytest.approx(0.5, abs=1e-6)
    assert coco_map(gt, [np.zeros((0, 6), np.float32)], nc=1)["mAP50"] == 0.0


def test_user_errors(data: Path, tmp_path: Path) -> None:
    with pytest.raises(S2Error, match="no 'train' split"):
        evaluate(oracle(data), data, split="train", imgsz=IMGSZ)
    with pytest.raises(S2Error, match="backend returned shape"):
        evaluate(lambda x: np.zeros((1, 10, 10), np.float32), data, imgsz=IMGSZ, batch=2)
    with pytest.raises(S2Error, match="not found"):
        evaluate(oracle(data), tmp_path / "nothing.yaml", imgsz=IMGSZ)


# The bundled model on the first 20 val images (seed 0) measured mAP50 0.986, mAP50-95 0.875 (see
# demo/README.md); the floors leave room for other CPUs' rounding, not for a broken model or pipeline.
DEMO_MAP50_FLOOR = 0.90
DEMO_MAP50_95_FLOOR = 0.75


def test_bundled_demo_model_on_val_subset(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from s2trt.demo.assets import ASSETS
    from s2trt.demo.torch_backend import torch_predictor
    from s2trt.models import load_checkpoint

    # The first 20 images of the val split that demo/README.md's command generates.
    data = generate(tmp_path, seed=0, counts={"val": 20}, imgsz=416)
    predict = torch_predictor(load_checkpoint(ASSETS / "demo.pt").model)
    r = evaluate(predict, data, imgsz=320, batch=10)
    assert r["images"] == 20
    assert r["mAP50"] >= DEMO_MAP50_FLOOR
    assert DEMO_MAP50_95_FLOOR <= r["mAP50-95"] < r["mAP50"]


def test_onnx_cli_pads_the_last_fixed_batch(data: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from s2trt.detect.evaluate import onnx_predictor
    from s2trt.runtime.evaluate import main

    # A fixed-batch-4 graph whose output is one box per image, scaled by each image's mean pixel
    # so every row of the batch is distinct: (4, 1, 10).
    box = np.array([[[100, 100, 40, 40, 0.9, 1, 0, 0, 0, 0]]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=1, axes=[1, 2, 3]),
         helper.make_node("Reshape", ["m", "shape"], ["m3"]),
         helper.make_node("Mul", ["m3", "box"], ["output0"])],
        "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [4, 3, IMGSZ, IMGSZ])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [4, 1, 10])],
        [numpy_helper.from_array(box, "box"), numpy_helper.from_array(np.array([4, 1, 1]), "shape")])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    predict, batch, size = onnx_predictor(path)
    assert (batch, size) == (4, IMGSZ)
    x = np.random.default_rng(0).random((3, 3, IMGSZ, IMGSZ), dtype=np.float32)
    y = predict(x)
    assert y.shape == (3, 1, 10)
    np.testing.assert_allclose(y[:, 0, 0], 100 * x.mean((1, 2, 3)), rtol=1e-4)
    assert main(["--onnx", str(path), "--data", str(data), "-q"]) == 0  # 6 images: batches of 4 + 2
    assert "6 images at 256" in capsys.readouterr().out
    assert main(["--onnx", str(tmp_path / "missing.onnx"), "--data", str(data)]) == 1
