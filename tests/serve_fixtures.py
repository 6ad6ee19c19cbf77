"""A small random-weight YOLOv5n-S2 ONNX export and sample images for the serving tests.

Random weights give near-constant outputs (every box the same score, which makes NMS order a
coin toss); BatchNorm statistics taken on a few images and a sharper, biased Detect head instead give
a few dozen boxes per image with distinct scores for the server-vs-local comparison.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

IMGSZ = (160, 192)  # (h, w): not square, so letterbox and box scaling are exercised on both axes
NAMES = ["circle", "square", "triangle", "star", "ring"]


def export_test_model(path: Path, imgsz: tuple[int, int] = IMGSZ, dynamic: bool = True) -> Path:
    import onnx
    import torch

    from s2trt.meta import ModelMeta
    from s2trt.models.yolo import DetectionModel
    from s2trt.runtime.preprocess import preprocess

    torch.manual_seed(0)
    model = DetectionModel("yolov5n-s2", nc=len(NAMES))
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # a plain average over the calibration batch
    calib, _ = preprocess(sample_images(6, seed=1), imgsz)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(calib))
        model.eval()
        for conv in model.detect.m:
            conv.weight.mul_(10.0)
            b = conv.bias.view(model.detect.na, -1)
            b[:, 4] += 2.0
            b[:, 5:] += 1.0
    x = torch.zeros(1, 3, *imgsz)
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, x, str(path), opset_version=17, input_names=["images"],
                          output_names=["output0"], dynamic_axes=axes, dynamo=False)
    proto = onnx.load(str(path))
    meta = ModelMeta(names=NAMES, imgsz=list(imgsz), stride=32, batch="dynamic" if dynamic else 1)
    for k, v in meta.to_props().items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def sample_images(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """BGR frames of varied sizes with filled shapes on a noisy background."""
    rng = np.random.default_rng(seed)
    sizes = [(240, 320), (200, 200), (300, 180), (120, 400), (256, 256), (181, 333)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(6):
            c = tuple(int(v) for v in rng.integers(60, 255, 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(8, max(9, min(h, w) // 4)))
            if rng.random() < 0.5:
                cv2.circle(img, (x, y), r, c, -1)
            else:
                cv2.rectangle(img, (x - r, y - r), (x + r, y + r), c, -1)
        out.append(img)
    return out


def encode_jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()
