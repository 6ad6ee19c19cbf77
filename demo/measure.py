"""mAP50 / mAP50-95 of a PyTorch checkpoint on a YOLO data yaml (the numbers in demo/README.md); for
a segmentation model on polygon labels the mask mAP too.

`python -m s2trt.demo.measure --weights demo/assets/demo.pt --data DIR/data.yaml --imgsz 320`
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from s2trt.demo.assets import ASSETS

log = logging.getLogger("s2trt.demo.measure")  # not __name__: it is __main__ under -m


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from s2trt.cli import add_verbosity

    p = argparse.ArgumentParser(prog="python -m s2trt.demo.measure", description=__doc__)
    p.add_argument("--weights", default=str(ASSETS / "demo.pt"), help="checkpoint (default: bundled)")
    p.add_argument("--data", required=True, help="data yaml (or the folder holding data.yaml)")
    p.add_argument("--split", default="val")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch (0: its default)")
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    import torch

    from s2trt.demo.torch_backend import torch_predictor
    from s2trt.detect.evaluate import evaluate
    from s2trt.models import load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    predict = torch_predictor(load_checkpoint(args.weights).model, args.device)
    r = evaluate(predict, args.data, args.split, args.imgsz, args.batch, limit=args.limit)
    masks = (f"  mask mAP50 {r['mask_mAP50']:.4f}  mask mAP50-95 {r['mask_mAP50-95']:.4f}"
             if "mask_mAP50" in r else "")
    print(f"{args.weights} on {args.split} ({r['images']} images at {args.imgsz}): "
          f"mAP50 {r['mAP50']:.4f}  mAP50-95 {r['mAP50-95']:.4f}{masks}  ({time.time() - t0:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from s2trt.cli import run_main

    return run_main("s2trt.demo.measure", _parse, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
