"""s2infer on a segmentation model exported by s2export: masks drawn in images and videos, and in
JSON Lines as polygons that read back to the masks.

The model is v7.0's yolov5s-seg checkpoint of tests/data/yolov5 (random weights, so a low
--conf-thres gives it detections); the frames are a demo image, not the fixture's own input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import paths
import pytest
from runtime_support import count_frames

from s2trt.detect.boxes import postprocess
from s2trt.detect.letterbox import preprocess
from s2trt.detect.masks import fill_polygons, to_frames
from s2trt.detect.options import DetectOptions
from s2trt.export.cli import main as s2export
from s2trt.export.parity import demo_assets
from s2trt.runtime.backends.ort import OrtBackend
from s2trt.runtime.cli import main as s2infer
from s2trt.runtime.outputs.sinks import annotate

DATA = paths.DATA / "yolov5" / "v7.0"
CONF = "0.001"
IMGSZ = (64, 96)


@pytest.fixture(scope="module")
def seg(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("seg")
    shutil.copy(DATA / "yolov5s-seg.pt", tmp / "seg.pt")
    assert s2export([str(tmp / "seg.pt"), "--imgsz", *map(str, IMGSZ), "--dynamic", "--no-plugin",
                     "--onnx-only", "-q"]) == 0
    img = cv2.imread(str(sorted((demo_assets() / "images").glob("*.jpg"))[0]))
    frame = cv2.resize(img, (150, 97))
    cv2.imwrite(str(tmp / "frame.png"), frame)  # lossless: the drawing is compared pixel for pixel
    return {"pt": tmp / "seg.pt", "onnx": tmp / "seg.onnx", "image": tmp / "frame.png"}


def _expected(onnx_path: Path, frame: np.ndarray):
    backend = OrtBackend(onnx_path, device="cpu")
    x, infos = preprocess([frame], IMGSZ)
    outputs = backend.infer(x)
    assert outputs["output1"].shape[1:] == (32, IMGSZ[0] // 4, IMGSZ[1] // 4)
    dets, masks = to_frames(postprocess(outputs, DetectOptions(conf_thres=float(CONF))), outputs, infos,
                            IMGSZ)
    return dets[0], masks[0], backend.meta.names


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _holes(mask: np.ndarray) -> np.ndarray:
    outside = np.pad(~mask, 1).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    return outside[1:-1, 1:-1] == 1


def test_image_masks_are_drawn_and_their_polygons_read_back(seg, tmp_path):
    runs = tmp_path / "runs"
    assert s2infer(["--onnx", str(seg["onnx"]), str(seg["image"]), "--conf-thres", CONF, "--save-json",
                    "--project", str(runs), "-q"]) == 0
    frame = cv2.imread(str(seg["image"]))
    dets, masks, names = _expected(seg["onnx"], frame)
    assert len(dets) >= 3 and sum(m.area for m in masks) > 0
    (rec,) = _read(runs / "exp" / "predictions.jsonl")
    assert len(rec["segments"]) == len(rec["boxes"]) == len(dets)
    np.testing.assert_allclose(rec["boxes"], dets[:, :4], atol=0.01)
    shape = frame.shape[:2]
    for polys, m in zip(rec["segments"], masks, strict=True):
        back, full = fill_polygons(polys, shape), m.full(shape)
        assert not (full & ~back).any() and not (back & ~full & ~_holes(full)).any()
    # The drawing: the masks change exactly the pixels they cover (boxes and labels aside), each
    # blended half and half with its class colour.
    drawn = cv2.imread(str(runs / "exp" / "frame.png"))
    boxes_only = annotate(frame, dets, names)
    covered = np.zeros(shape, bool)
    for m in masks:
        covered |= m.full(shape)
    changed = (drawn != boxes_only).any(-1)
    by_boxes = (boxes_only != frame).any(-1)
    assert not (changed & ~covered & ~by_boxes).any()
    inside = covered & ~by_boxes
    assert inside.sum() > 20 and changed[inside].mean() > 0.95
    # Each mask blended half and half with its class colour, the best detection's on top (drawn
    # last), as yolov5's predict.py shows them.
    from s2trt.runtime.outputs.sinks import PALETTE

    want = frame.astype(np.float64)
    for m, cls in reversed(list(zip(masks, dets[:, 5], strict=True))):
        full = m.full(shape)
        want[full] = np.round(want[full] * 0.5 + np.asarray(PALETTE[int(cls) % len(PALETTE)]) * 0.5)
    assert (np.abs(drawn[inside] - want[inside]) <= 1).all()


def test_video_masks_are_in_every_json_line_and_the_video_is_written(seg, tmp_path):
    frame = cv2.imread(str(seg["image"]))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (150, 97))
    for i in range(5):
        writer.write(np.roll(frame, 3 * i, axis=1))
    writer.release()
    runs = tmp_path / "runs"
    assert s2infer(["--onnx", str(seg["onnx"]), str(video), "--conf-thres", CONF, "--save-json",
                    "--batch", "2", "--project", str(runs), "-q"]) == 0
    recs = _read(runs / "exp" / "predictions.jsonl")
    assert [r["frame"] for r in recs] == list(range(5))
    assert count_frames(runs / "exp" / "clip.mp4") == 5
    cap = cv2.VideoCapture(str(video))
    for rec in recs:
        ok, img = cap.read()
        assert ok
        dets, masks, _ = _expected(seg["onnx"], img)
        assert len(rec["segments"]) == len(rec["boxes"]) == len(dets)
        for polys, m in zip(rec["segments"], masks, strict=True):
            full = m.full(img.shape[:2])
            back = fill_polygons(polys, img.shape[:2])
            assert not (full & ~back).any()
    assert sum(len(p) for r in recs for s in r["segments"] for p in s) > 0


def test_pytorch_backend_gives_the_same_masks(seg, tmp_path):
    """--weights runs the checkpoint itself: its masks agree with the exported graph's."""
    out = {}
    for flag, model in (("--onnx", seg["onnx"]), ("--weights", seg["pt"])):
        path = tmp_path / f"{flag[2:]}.jsonl"
        args = [flag, str(model), str(seg["image"]), "--conf-thres", CONF, "--save-json", str(path),
                "--no-save", "-q"]
        assert s2infer(args + (["--imgsz", *map(str, IMGSZ), "--device", "cpu"] if flag == "--weights"
                               else [])) == 0
        (out[flag],) = _read(path)
    a, b = out["--onnx"], out["--weights"]
    assert len(a["segments"]) == len(b["segments"]) > 0
    shape = (a["height"], a["width"])
    boxes_b, scores_b, cls_b = np.asarray(b["boxes"]), np.asarray(b["scores"]), np.asarray(b["class_ids"])
    for box, score, cls, pa in zip(a["boxes"], a["scores"], a["class_ids"], a["segments"], strict=True):
        # Near-equal scores of this random-weight model may come in either order (and many boxes
        # are clipped to the whole frame): match by class, box and score.
        far = np.abs(boxes_b - box).max(1) + 1000 * np.abs(scores_b - score) + 1e9 * (cls_b != cls)
        j = int(far.argmin())
        assert far[j] < 0.5
        ma, mb = fill_polygons(pa, shape), fill_polygons(b["segments"][j], shape)
        assert (ma ^ mb).sum() <= max(2, 0.02 * (ma | mb).sum())


def test_evaluate_gives_mask_map_for_an_exported_seg_model(seg, tmp_path):
    """The evaluation on polygon labels: the box and the mask mAP of the graph's own outputs."""
    pytest.importorskip("faster_coco_eval")
    from s2trt.detect.evaluate import evaluate, onnx_predictor

    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    shutil.copy(seg["image"], tmp_path / "images" / "val" / "a.png")
    (tmp_path / "labels" / "val" / "a.txt").write_text("1 0.2 0.2 0.6 0.25 0.5 0.8\n0 0.5 0.5 0.3 0.3\n")
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\nval: images/val\nnames: [a, b, c]\n")
    predict, _, _ = onnx_predictor(seg["onnx"])
    det, proto = predict(np.zeros((1, 3, *IMGSZ), np.float32))
    assert det.shape[2] == 5 + 3 + 32 and proto.shape == (1, 32, IMGSZ[0] // 4, IMGSZ[1] // 4)
    r = evaluate(onnx_predictor(seg["onnx"])[0], tmp_path / "data.yaml", imgsz=IMGSZ, batch=1)
    assert r["images"] == 1 and {"mAP50", "mask_mAP50", "mask_mAP50-95"} <= set(r)
    assert 0 <= r["mask_mAP50-95"] <= r["mask_mAP50"] <= 1
