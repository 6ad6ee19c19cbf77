"""FP16 vs FP32 box error of a checkpoint's ONNX graphs on the demo images (benchmarks/RESULTS.md).

The FP16 graph runs with every FP16 tensor rounded as TensorRT stores it (export.parity.fp16_storage),
so ONNX Runtime on the CPU shows FP16's error. Per image: the largest |Δ| of any box coordinate
(cx, cy, w, h in pixels) over all candidate boxes, and over the candidates whose FP32 confidence
(objectness × best class) is above 0.25, the ones NMS can keep. Random weights give logits near 0,
where FP16 is exact enough to hide the error a trained model shows: measure trained weights.

    python benchmarks/fp16_box_error.py [--weights demo/assets/demo.pt] [--imgsz 640]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from s2trt.detect.letterbox import preprocess
from s2trt.export import onnx_export, parity
from s2trt.export.fp16 import to_fp16
from s2trt.models.checkpoint import load_checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "demo" / "assets"
CONF = 0.25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=ASSETS / "demo.pt")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--images", type=Path, default=ASSETS / "images")
    args = ap.parse_args()

    loaded = load_checkpoint(args.weights)
    fp32 = onnx_export.export_portable(loaded, [args.imgsz, args.imgsz], batch=1)
    fp16 = parity.fp16_storage(to_fp16(fp32))
    worst_all, worst_kept = [], []
    for path in sorted(args.images.glob("*.jpg")):
        x, _ = preprocess([cv2.imread(str(path))], (args.imgsz, args.imgsz))
        a, b = parity.run_ort(fp32, x)[0][0], parity.run_ort(fp16, x)[0][0]
        err = np.abs(a[:, :4] - b[:, :4]).max(1)
        kept = a[:, 4] * a[:, 5:].max(1) > CONF
        worst_all.append(float(err.max()))
        worst_kept.append(float(err[kept].max()) if kept.any() else float("nan"))
        print(f"{path.name}: all {len(err)} boxes max {worst_all[-1]:.3f} px; "
              f"{int(kept.sum())} boxes above {CONF}: max {worst_kept[-1]:.3f} px")
    print(f"{args.weights.name} at {args.imgsz}: all boxes {min(worst_all):.2f}-{max(worst_all):.2f} px, "
          f"above {CONF} {np.nanmin(worst_kept):.3f}-{np.nanmax(worst_kept):.3f} px")


if __name__ == "__main__":
    main()
