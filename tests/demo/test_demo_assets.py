"""The bundled demo assets: sizes, the labelled video and its outlines, written safely, and that the
bundled model finds the shapes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from s2trt.demo.assets import ASSETS, make_images, make_video, video_scenes
from s2trt.demo.shapes import CLASSES
from s2trt.detect.boxes import non_max_suppression, scale_boxes
from s2trt.detect.letterbox import preprocess

CHECKPOINT = ASSETS / "demo.pt"
FRAMES = list(range(0, 250, 25))  # 10 frames, one every second


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_assets_are_small() -> None:
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 15 * 2 ** 20
    assert CHECKPOINT.is_file() and (ASSETS / "sample.mp4").is_file()
    assert len(list((ASSETS / "images").glob("*.jpg"))) >= 3


@pytest.fixture(scope="module")
def video() -> tuple[list[np.ndarray], dict]:
    labels = json.loads((ASSETS / "sample_labels.json").read_text())
    cap = cv2.VideoCapture(str(ASSETS / "sample.mp4"))
    frames, i = [], 0
    try:
        # Read sequentially: seeking in an mp4v stream lands on key frames, not on the frame asked for.
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i in FRAMES:
                frames.append(frame)
            i += 1
    finally:
        cap.release()
    assert i == len(labels["frames"]) == 250
    return frames, labels


def test_video_format(video: tuple[list[np.ndarray], dict]) -> None:
    frames, labels = video
    assert frames[0].shape == (480, 640, 3)
    assert labels["fps"] == 25 and labels["names"] == list(CLASSES)
    classes = {row[0] for f in labels["frames"] for row in f}
    assert classes == set(range(len(CLASSES)))


def test_video_outlines_match_the_objects(video: tuple[list[np.ndarray], dict]) -> None:
    coco_mask = pytest.importorskip("faster_coco_eval.core.mask")
    _, labels = video
    doc = json.loads((ASSETS / "sample_segments.json").read_text())
    assert doc["video"] == "sample.mp4" and len(doc["frames"]) == len(labels["frames"])
    scenes = {k: s for k, s in enumerate(video_scenes(labels["seed"], 2.0)) if k in FRAMES}
    for k, (objects, outlines) in enumerate(zip(labels["frames"], doc["frames"], strict=True)):
        assert len(outlines) == len(objects)
        for i, ((_, x1, y1, x2, y2, _), poly) in enumerate(zip(objects, outlines, strict=True)):
            pts = np.asarray(poly, float).reshape(-1, 2)
            # Whole pixels, within a pixel of the outline: the bounds are the box label's.
            np.testing.assert_allclose([*pts.min(0), *pts.max(0)], [x1, y1, x2, y2], atol=1.5)
            if k in scenes:  # the drawn pixels of the object, rendered again
                rle = coco_mask.merge(coco_mask.frPyObjects([poly], 480, 640))
                filled = coco_mask.decode(rle).astype(bool)
                mine = scenes[k].owner == i
                assert (filled & mine).sum() / (filled | mine).sum() > 0.95


def test_assets_are_written_through_temporary_names(tmp_path) -> None:
    # A link at the output (or at any name a writer might pick) is replaced, never written through.
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("clip.mp4", "clip.tmp.mp4", "labels.json", "segments.json", "shapes_0.jpg"):
        (out / name).symlink_to(victim)
    assert make_video(out / "clip.mp4", out / "labels.json", seconds=0.2,
                      segments_out=out / "segments.json") == 5
    paths = make_images(out, n=1)
    assert victim.read_bytes() == b"keep"
    for name in ("clip.mp4", "labels.json", "segments.json", "shapes_0.jpg"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
    assert cv2.imread(str(paths[0])).shape == (480, 640, 3)
    assert len(json.loads((out / "segments.json").read_text())["frames"]) == 5
    # Nothing half-written is left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["clip.mp4", "clip.tmp.mp4", "labels.json", "segments.json", "shapes_0.jpg"])


def test_bundled_checkpoint_loads_safely() -> None:
    pytest.importorskip("torch")
    from s2trt.models import load_checkpoint

    m = load_checkpoint(CHECKPOINT)
    assert m.names == list(CLASSES) and m.half and m.source == "yolov5"
    assert m.stride == [8, 16, 32] and m.has_s2attention


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (4,) with boxes b (n, 4), x1y1x2y2."""
    lt, rb = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:4])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_bundled_model_finds_the_video_objects(video: tuple[list[np.ndarray], dict]) -> None:
    pytest.importorskip("torch")
    from s2trt.demo.torch_backend import torch_predictor
    from s2trt.models import load_checkpoint

    frames, labels = video
    predict = torch_predictor(load_checkpoint(CHECKPOINT).model)
    x, infos = preprocess(frames, 320)
    dets = [scale_boxes(d, info) for d, info in
            zip(non_max_suppression(predict(x), 0.25, 0.45), infos, strict=True)]
    found = total = 0
    for k, det in zip(FRAMES, dets, strict=True):
        for c, x1, y1, x2, y2, visible in labels["frames"][k]:
            if visible < 0.9:  # half-hidden shapes are not a fair test of the detector
                continue
            total += 1
            same = det[det[:, 5] == c]
            found += bool(len(same)) and _iou(np.array([x1, y1, x2, y2]), same).max() >= 0.5
    assert total >= 40
    assert found / total >= 0.9, f"found {found} of {total} objects"
