"""COCO-style mAP of any backend on a YOLO-format dataset, with the runtime's own pre/post-processing.

A backend is any callable mapping a float32 (B, 3, h, w) batch (docs/DESIGN.md §3 input) to the (B, N, 5 + nc)
output (a segmentation model's: the pair (B, N, 5 + nc + nm) and its prototypes, which adds the mask
mAP where the labels are polygons, see s2trt.detect.mask_eval): a PyTorch model wrapper, an ONNX Runtime
session, a TensorRT engine. Frames go through
`preprocess`, `non_max_suppression` and `scale_boxes` exactly as in s2infer, so FP32, FP16 and INT8
graphs are compared on what users get. The matching and averaging are faster-coco-eval's
(pycocotools' algorithm), not ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from s2trt.detect.boxes import PROTO_OUTPUT, non_max_suppression, scale_boxes
from s2trt.detect.letterbox import preprocess
from s2trt.detect.mask_eval import mask_map, read_label_rows
from s2trt.detect.masks import to_frames
from s2trt.errors import S2Error, missing

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Predict = Callable[[np.ndarray], Any]  # (B, N, 5 + nc), or (detections, prototypes) of a seg model


@dataclass
class Sample:
    """One labelled image: boxes (n, 4) x1y1x2y2 in pixels of the original image, classes (n,)."""

    path: Path
    boxes: np.ndarray
    classes: np.ndarray


def read_data_yaml(data: str | Path) -> dict[str, Any]:
    """A YOLO data yaml (or a folder holding data.yaml), with `path` resolved to an absolute folder."""
    import yaml

    p = Path(data)
    if p.is_dir():
        p = p / "data.yaml"
    if not p.is_file():
        raise S2Error(f"dataset description not found: {p}")
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise S2Error(f"cannot read {p}: {e}") from None
    if not isinstance(d, dict) or "names" not in d:
        raise S2Error(f"{p} is not a YOLO data yaml (it needs `names` and the split folders)")
    root = Path(d.get("path") or p.parent)
    d["path"] = root if root.is_absolute() else (p.parent / root).resolve()
    names = d["names"]
    d["names"] = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return d


def label_path(image: Path) -> Path:
    """YOLOv5's rule: the last `images` folder in the path becomes `labels`, suffix `.txt`."""
    parts = list(image.parts)
    idx = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if idx is None:
        return image.with_suffix(".txt")
    parts[idx] = "labels"
    return Path(*parts).with_suffix(".txt")


def read_labels(path: Path, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO txt rows 'cls cx cy w h' or polygons 'cls x0 y0 x1 y1 ...' (normalised) -> (boxes
    x1y1x2y2 pixels, classes)."""
    boxes, classes, _ = read_label_rows(path, h, w)
    return boxes, classes


def split_images(data: dict[str, Any], split: str) -> list[Path]:
    if split not in data:
        raise S2Error(f"the dataset has no '{split}' split (it has: "
                      f"{', '.join(k for k in data if k not in ('path', 'names', 'nc'))})")
    folder = data["path"] / data[split]
    if not folder.is_dir():
        raise S2Error(f"split folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def coco_map(samples: Sequence[tuple[tuple[int, int], np.ndarray, np.ndarray]],
             detections: Sequence[np.ndarray], nc: int) -> dict[str, float]:
    """mAP50 and mAP50-95 of per-image (n, 6) detections against (hw, boxes, classes) ground truth."""
    try:
        import faster_coco_eval  # noqa: F401  (coco_stats's; checked first, before any work)
    except ImportError:
        raise missing("faster-coco-eval", "eval", "mAP evaluation") from None

    images, anns, results = [], [], []
    for i, ((h, w), boxes, classes) in enumerate(samples, start=1):
        images.append({"id": i, "height": int(h), "width": int(w)})
        for b, c in zip(boxes.tolist(), classes.tolist(), strict=True):
            bw, bh = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], bw, bh], "area": bw * bh})
    for i, det in enumerate(detections, start=1):
        for x1, y1, x2, y2, s, c in det.tolist():
            results.append({"image_id": i, "category_id": int(c) + 1, "score": s,
                            "bbox": [x1, y1, x2 - x1, y2 - y1]})
    if not anns:
        raise S2Error("the evaluation set has no labelled objects")
    if not results:
        return {"mAP50": 0.0, "mAP50-95": 0.0}
    map50, map50_95 = coco_stats(images, anns, results, nc, "bbox")
    return {"mAP50": map50, "mAP50-95": map50_95}


def coco_stats(images: list[dict], anns: list[dict], results: list[dict], nc: int,
               iou_type: str) -> tuple[float, float]:
    """(mAP50, mAP50-95) of COCO-format results against COCO-format ground truth ("bbox" or "segm")."""
    from faster_coco_eval import COCO, COCOeval_faster  # its callers checked it is installed

    gt = COCO({"images": images, "annotations": anns,
               "categories": [{"id": k + 1, "name": str(k)} for k in range(nc)]})
    ev = COCOeval_faster(gt, gt.loadRes(results), iouType=iou_type, print_function=log.debug)
    ev.params.maxDets = [1, 10, 300]  # YOLO keeps up to 300 detections per image, not COCO's 100
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return max(float(ev.stats[1]), 0.0), max(float(ev.stats[0]), 0.0)


def evaluate(predict: Predict, data: str | Path, split: str = "val", imgsz: int = 640, batch: int = 8,
             conf_thres: float = 0.001, iou_thres: float = 0.6, limit: int | None = None,
             max_det: int = 300) -> dict[str, float]:
    """mAP50 / mAP50-95 of `predict` on a split of a YOLO data yaml: {'mAP50', 'mAP50-95', 'images'},
    and for a segmentation model on polygon labels 'mask_mAP50' and 'mask_mAP50-95' too."""
    d = read_data_yaml(data)
    paths = split_images(d, split)[:limit]
    if not paths:
        raise S2Error(f"no images in the '{split}' split of {data}")
    samples, detections, masks, polygons = [], [], [], []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        frames = []
        for p in chunk:
            img = cv2.imread(str(p))
            if img is None:
                raise S2Error(f"cannot read image {p}")
            frames.append(img)
            boxes, classes, polys = read_label_rows(label_path(p), *img.shape[:2])
            samples.append(((img.shape[0], img.shape[1]), boxes, classes))
            polygons.append(polys)
        x, infos = preprocess(frames, imgsz)
        out = predict(x)
        proto = np.asarray(out[1], np.float32) if isinstance(out, (tuple, list)) else None
        pred = np.asarray(out[0] if proto is not None else out, dtype=np.float32)
        if pred.ndim != 3 or pred.shape[0] != len(chunk):
            raise S2Error(f"the backend returned shape {pred.shape}; expected ({len(chunk)}, N, 5 + nc)")
        nm = 0 if proto is None else proto.shape[1]
        dets = non_max_suppression(pred, conf_thres, iou_thres, max_det=max_det, nm=nm)
        if proto is None:
            detections.extend(scale_boxes(det, info) for det, info in zip(dets, infos, strict=True))
        else:
            got, got_masks = to_frames(dets, {PROTO_OUTPUT: proto}, infos, tuple(x.shape[2:]))
            detections.extend(got)
            masks.extend(got_masks)
    result = coco_map(samples, detections, len(d["names"]))
    if masks and any(poly is not None for polys in polygons for poly in polys):
        result.update(mask_map([(hw, classes, polys) for (hw, _, classes), polys in zip(samples, polygons,
                                                                                       strict=True)],
                               detections, masks, len(d["names"])))
    return {**result, "images": len(paths)}


def onnx_predictor(path: str | Path,
                   basic_optimizations: bool = False) -> tuple[Predict, int | None, int | None]:
    """(predict, fixed batch or None, square input size or None) of an ONNX Runtime CPU session.

    basic_optimizations: ORT's extended optimizations fuse DQ -> Concat -> Q into QLinearConcat,
    which has no FP16 kernel, so an INT8+FP16 graph loads only without them; they change how ORT
    runs the graph, not its math.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing("onnxruntime", "ort", "evaluating an ONNX model") from None
    if not Path(path).is_file():
        raise S2Error(f"ONNX model not found: {path}")
    opts = ort.SessionOptions()
    if basic_optimizations:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = inp.shape
    fixed_batch = shape[0] if isinstance(shape[0], int) else None
    segment = [o.name for o in sess.get_outputs()][1:2] == [PROTO_OUTPUT]  # detections, prototypes
    size = shape[2] if isinstance(shape[2], int) else None

    def predict(x: np.ndarray) -> np.ndarray:
        n = len(x)
        if fixed_batch is not None and n < fixed_batch:  # the last, short batch of a fixed-batch graph
            x = np.concatenate((x, np.zeros((fixed_batch - n, *x.shape[1:]), x.dtype)))
        outs = sess.run(None, {inp.name: x})
        return (outs[0][:n], outs[1][:n]) if segment else outs[0][:n]

    return predict, fixed_batch, size
