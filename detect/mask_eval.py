"""Mask mAP of a segmentation model on YOLO polygon labels (the format of yolov5's `segment/`).

A polygon label row is `class x0 y0 x1 y1 ...` (normalised, three points or more); a box row
`class cx cy w h`. The ground-truth masks are the polygons filled as COCO fills them (its own
polygon -> RLE conversion), the predicted masks those s2infer computes (s2trt.detect.masks),
encoded as COCO RLE; matching and averaging are faster-coco-eval's `segm` evaluation
(pycocotools' algorithm), as the box mAP is its `bbox` evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s2trt.detect.masks import InstanceMask
from s2trt.errors import S2Error, missing


def read_label_rows(path: Path, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """YOLO label rows -> (boxes x1y1x2y2 in pixels, classes, per row its polygon (k, 2) in pixels
    or None for a box row). A polygon's box is its bounds, as yolov5's segments2boxes makes it."""
    boxes, classes, polygons = [], [], []
    if path.is_file():
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                v = np.array(line.split(), dtype=np.float64)
            except ValueError:
                raise S2Error(f"{path} line {i}: not numbers") from None
            if len(v) == 5:
                cx, cy, bw, bh = v[1] * w, v[2] * h, v[3] * w, v[4] * h
                boxes.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
                polygons.append(None)
            elif len(v) >= 7 and len(v) % 2 == 1:
                pts = v[1:].reshape(-1, 2) * [w, h]
                boxes.append([*pts.min(0), *pts.max(0)])
                polygons.append(pts)
            else:
                raise S2Error(f"{path} line {i}: expected 'class cx cy w h' or 'class x0 y0 x1 y1 "
                              f"x2 y2 ...' (a polygon), found {len(v)} numbers")
            classes.append(int(v[0]))
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64),
            polygons)


def mask_map(samples: Sequence[tuple[tuple[int, int], np.ndarray, Sequence[np.ndarray | None]]],
             detections: Sequence[np.ndarray], masks: Sequence[Sequence[InstanceMask]],
             nc: int) -> dict[str, float]:
    """mask mAP50 and mAP50-95 of per-image (n, 6) detections and their masks against
    (hw, classes, polygons) ground truth; objects labelled with a box only are left out."""
    try:
        from faster_coco_eval.core import mask as coco_mask
    except ImportError:
        raise missing("faster-coco-eval", "eval", "mask mAP evaluation") from None

    images, anns, results = [], [], []
    for i, ((h, w), classes, polygons) in enumerate(samples, start=1):
        images.append({"id": i, "height": int(h), "width": int(w)})
        for c, poly in zip(classes.tolist(), polygons, strict=True):
            if poly is None:
                continue
            seg = [np.asarray(poly, np.float64).reshape(-1).tolist()]
            rle = coco_mask.merge(coco_mask.frPyObjects(seg, int(h), int(w)))
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                         "segmentation": seg, "area": float(coco_mask.area(rle)),
                         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
    for i, ((h, w), _, _) in enumerate(samples, start=1):
        for det, m in zip(detections[i - 1], masks[i - 1], strict=True):
            rle = coco_mask.encode(np.asfortranarray(m.full((h, w)).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
            results.append({"image_id": i, "category_id": int(det[5]) + 1, "score": float(det[4]),
                            "segmentation": rle})
    if not anns:
        raise S2Error("the evaluation set has no polygon labels, so there is no mask mAP to measure")
    if not results:
        return {"mask_mAP50": 0.0, "mask_mAP50-95": 0.0}
    from s2trt.detect.evaluate import coco_stats  # evaluate imports this module

    map50, map50_95 = coco_stats(images, anns, results, nc, "segm")
    return {"mask_mAP50": map50, "mask_mAP50-95": map50_95}
