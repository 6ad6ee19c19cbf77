"""From the network's outputs to detections: confidence filter, class-aware NMS, boxes back to the frame.

The graph's Detect head already gives boxes in input pixels (cx, cy, w, h); what happens here is
selection (`postprocess`: NMS and the filters of `DetectOptions`). Detections are (n, 6)
float32 arrays of rows [x1, y1, x2, y2, score, class]. The NMS runs in OpenCV's C++
(cv2.dnn.NMSBoxes) on boxes offset by class, as YOLOv5 does with torchvision, so host-side NMS costs
no Python loop per box (USERS.md #9).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from s2trt.detect.letterbox import LetterboxInfo
from s2trt.detect.options import DetectOptions

# The graph's outputs (docs/DESIGN.md §3): YOLOv5's raw boxes, or the four in-graph NMS outputs.
RAW_OUTPUT = "output0"
PROTO_OUTPUT = "output1"  # a segmentation model's mask prototypes (B, nm, H/4, W/4; H/2, W/2 for a P2 head)
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
MAX_WH = 7680  # class offset for class-aware NMS: larger than any box coordinate (YOLOv5's value)


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    half_w, half_h = x[..., 2] / 2, x[..., 3] / 2
    y[..., 0] = x[..., 0] - half_w
    y[..., 1] = x[..., 1] - half_h
    y[..., 2] = x[..., 0] + half_w
    y[..., 3] = x[..., 1] + half_h
    return y


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy NMS on x1y1x2y2 boxes: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds iou_thres (torchvision's rule).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.empty((len(boxes), 4), dtype=np.float64)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    # OpenCV drops scores <= score_threshold (which must be >= 0); ours are already > conf_thres >= 0.
    keep = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, float(iou_thres))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def non_max_suppression(pred: np.ndarray, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        classes: Sequence[int] | None = None, agnostic: bool = False,
                        max_det: int = 300, max_nms: int = 30000, nm: int = 0) -> list[np.ndarray]:
    """YOLOv5's NMS on (B, N, 5 + nc + nm) outputs -> per image (n, 6 + nm) [x1, y1, x2, y2, score,
    class, the nm mask coefficients of a segmentation model].

    Boxes stay in network-input pixels; score = objectness x best class score. The thresholds are
    taken as given: `DetectOptions` is where options are checked.
    """
    if pred.ndim != 3 or pred.shape[2] < 6 + nm:
        raise ValueError(f"expected predictions of shape (B, N, 5 + nc + {nm}), got {pred.shape}")
    end = pred.shape[2] - nm  # the class scores end where the mask coefficients begin
    out = []
    class_filter = None if classes is None else np.asarray(list(classes), dtype=np.int64)
    for x in pred:  # one iteration per image, not per box
        x = x[x[:, 4] > conf_thres]
        if not len(x):
            out.append(np.zeros((0, 6 + nm), dtype=np.float32))
            continue
        cls_scores = x[:, 5:end] * x[:, 4:5]
        j = cls_scores.argmax(1)
        conf = np.take_along_axis(cls_scores, j[:, None], 1)[:, 0]
        keep = conf > conf_thres
        if class_filter is not None:
            keep &= np.isin(j, class_filter)
        boxes, conf, j, coef = xywh2xyxy(x[keep, :4]), conf[keep], j[keep], x[keep, end:]
        if len(conf) > max_nms:  # NMS cost is quadratic: keep the best max_nms candidates
            top = np.argsort(-conf, kind="stable")[:max_nms]
            boxes, conf, j, coef = boxes[top], conf[top], j[top], coef[top]
        offset = 0.0 if agnostic else j[:, None].astype(np.float64) * MAX_WH
        i = nms_indices(boxes + offset, conf, iou_thres)[:max_det]
        det = np.empty((len(i), 6 + nm), dtype=np.float32)
        det[:, :4], det[:, 4], det[:, 5], det[:, 6:] = boxes[i], conf[i], j[i], coef[i]
        out.append(det)
    return out


def postprocess(outputs: dict[str, np.ndarray], options: DetectOptions) -> list[np.ndarray]:
    """A backend's outputs by name -> per image (n, 6) detections in network-input pixels, (n, 6 + nm)
    with a segmentation model's mask coefficients when its prototypes (`output1`, nm channels) are there.

    `output0` goes through NMS; a graph that ends in its own NMS applied its thresholds at export,
    and stricter options still filter its detections here."""
    o = options
    if RAW_OUTPUT in outputs:
        nm = outputs[PROTO_OUTPUT].shape[1] if PROTO_OUTPUT in outputs else 0
        return non_max_suppression(outputs[RAW_OUTPUT].astype(np.float32, copy=False), o.conf_thres,
                                   o.iou_thres, o.classes, o.agnostic, o.max_det, nm=nm)
    keep_cls = None if o.classes is None else np.asarray(o.classes, dtype=np.int64)
    out = []
    for d in from_nms_outputs(*(outputs[k] for k in NMS_OUTPUTS)):
        m = d[:, 4] > o.conf_thres
        if keep_cls is not None:
            m &= np.isin(d[:, 5].astype(np.int64), keep_cls)
        out.append(d[m][:o.max_det])
    return out


def scale_boxes(dets: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map (n, 6) detections from network-input pixels to the original frame, clipped to it.

    A box that lies in the padding is clipped to a line on the frame's border: it is dropped, as is
    any box without area, so no consumer sees a detection of nothing.
    """
    dets = dets.copy()
    dw, dh = info.pad
    dets[:, [0, 2]] = (dets[:, [0, 2]] - dw) / info.ratio
    dets[:, [1, 3]] = (dets[:, [1, 3]] - dh) / info.ratio
    h, w = info.orig_shape
    dets[:, [0, 2]] = dets[:, [0, 2]].clip(0, w)
    dets[:, [1, 3]] = dets[:, [1, 3]].clip(0, h)
    return dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])]


def from_nms_outputs(num_dets: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                     det_classes: np.ndarray) -> list[np.ndarray]:
    """The four outputs of an in-graph-NMS model (docs/DESIGN.md §3) -> per image (n, 6) detections."""
    num = np.asarray(num_dets).reshape(len(det_boxes), -1)[:, 0].astype(np.int64)
    k = det_boxes.shape[1]
    out = []
    for b, n in enumerate(np.clip(num, 0, k)):
        det = np.empty((n, 6), dtype=np.float32)
        det[:, :4] = det_boxes[b, :n]
        det[:, 4] = det_scores[b, :n]
        det[:, 5] = det_classes[b, :n]
        out.append(det)
    return out


def to_layout(dets: Sequence[np.ndarray], max_det: int) -> dict[str, np.ndarray]:
    """Per-image (n, 6) detections -> num_dets (B, 1), det_boxes (B, K, 4), det_scores, det_classes."""
    b = len(dets)
    num = np.zeros((b, 1), dtype=np.int32)
    boxes = np.zeros((b, max_det, 4), dtype=np.float32)
    scores = np.zeros((b, max_det), dtype=np.float32)
    classes = np.zeros((b, max_det), dtype=np.int32)
    for i, d in enumerate(dets):
        n = min(len(d), max_det)
        num[i, 0] = n
        boxes[i, :n], scores[i, :n], classes[i, :n] = d[:n, :4], d[:n, 4], d[:n, 5]
    return {"num_dets": num, "det_boxes": boxes, "det_scores": scores, "det_classes": classes}
