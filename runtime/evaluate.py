"""`python -m s2trt.runtime.evaluate`: mAP50 / mAP50-95 of an ONNX model on a YOLO data yaml, through
the evaluation in s2trt.detect.evaluate (the runtime's own pre/post-processing)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from s2trt.detect.evaluate import evaluate, onnx_predictor


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from s2trt.cli import add_verbosity

    p = argparse.ArgumentParser(prog="python -m s2trt.runtime.evaluate",
                                description="mAP50 / mAP50-95 of an ONNX model on a YOLO data yaml")
    p.add_argument("--onnx", required=True, help="ONNX model with the (B, N, 5 + nc) output")
    p.add_argument("--data", required=True, help="data yaml (or the folder holding data.yaml)")
    p.add_argument("--split", default="val")
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    predict, fixed_batch, size = onnx_predictor(args.onnx)
    imgsz = args.imgsz or size or 640
    batch = fixed_batch or args.batch
    r = evaluate(predict, args.data, args.split, imgsz, batch, limit=args.limit)
    masks = f"  mask mAP50 {r['mask_mAP50']:.4f}  mask mAP50-95 {r['mask_mAP50-95']:.4f}" \
        if "mask_mAP50" in r else ""
    print(f"{args.split}: {r['images']} images at {imgsz}: mAP50 {r['mAP50']:.4f}  "
          f"mAP50-95 {r['mAP50-95']:.4f}{masks}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from s2trt.cli import run_main

    return run_main("s2trt.runtime.evaluate", _parse, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
