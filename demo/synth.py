"""Seeded synthetic detection set in YOLO txt format: images/<split>, labels/<split>, data.yaml.

Labels are boxes ('cls cx cy w h'), or with --segments polygons ('cls x0 y0 x1 y1 ...', the format
yolov5's segment/train.py reads) tracing the pixels of each shape that stay visible.

Image i of a split depends only on (seed, split, i), so a small prefix of a split (e.g. the first 20
val images, as CI uses) is exactly the start of the full split.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from s2trt.demo.shapes import CLASSES, Scene, render_image
from s2trt.errors import S2Error

log = logging.getLogger("s2trt.demo.synth")  # not __name__: it is __main__ under -m

SPLITS = ("train", "val", "calib")
_SPLIT_ID = {name: k for k, name in enumerate(SPLITS)}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_ID[split], index])


def make_scene(seed: int, split: str, index: int, imgsz: int) -> Scene:
    """Image `index` of `split`: width imgsz, height imgsz or 3/4 of it (letterboxing gets exercised)."""
    rng = image_rng(seed, split, index)
    h = imgsz if rng.random() < 0.5 else round(imgsz * 0.75)
    return render_image(rng, h, imgsz)


def yolo_lines(labels: np.ndarray, h: int, w: int) -> list[str]:
    """(cls, x1, y1, x2, y2) pixels -> 'cls cx cy w h' normalised, as YOLOv5 reads them."""
    out = []
    for c, x1, y1, x2, y2 in labels:
        if x2 <= x1 or y2 <= y1:
            continue
        out.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                   f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return out


def yolo_segment_lines(labels: np.ndarray, polygons: Sequence[np.ndarray], h: int, w: int) -> list[str]:
    """Visible outlines (k, 2) in pixels -> 'cls x0 y0 x1 y1 ...' normalised (YOLOv5's segment labels)."""
    out = []
    for (c, *_), poly in zip(labels, polygons, strict=True):
        if len(poly) < 3:
            continue
        xy = (np.asarray(poly, np.float64) / [w, h]).reshape(-1)
        out.append(f"{int(c)} " + " ".join(f"{v:.5f}" for v in xy))
    return out


def write_split(out: Path, split: str, n: int, seed: int, imgsz: int, segments: bool = False) -> None:
    img_dir, lbl_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        scene = make_scene(seed, split, i, imgsz)
        h, w = scene.image.shape[:2]
        name = f"{split}_{i:06d}"
        if not cv2.imwrite(str(img_dir / f"{name}.jpg"), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise S2Error(f"cannot write {img_dir / name}.jpg")
        lines = (yolo_segment_lines(scene.labels, scene.polygons, h, w) if segments
                 else yolo_lines(scene.labels, h, w))
        (lbl_dir / f"{name}.txt").write_text("".join(f"{s}\n" for s in lines))


def write_data_yaml(out: Path, splits: Sequence[str]) -> Path:
    import yaml

    d = {"path": str(out.resolve()), **{s: f"images/{s}" for s in splits},
         "nc": len(CLASSES), "names": dict(enumerate(CLASSES))}
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def generate(out: str | Path, seed: int = 0, counts: dict[str, int] | None = None,
             imgsz: int = 416, segments: bool = False) -> Path:
    """Write the requested splits under `out` and return the data yaml's path; `segments`: polygon
    labels instead of boxes (the images are the same)."""
    out = Path(out)
    counts = {k: v for k, v in (counts or {"train": 2000, "val": 200, "calib": 100}).items() if v > 0}
    for split, n in counts.items():
        log.info("writing %d %s images to %s", n, split, out)
        write_split(out, split, n, seed, imgsz, segments)
    return write_data_yaml(out, list(counts))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from s2trt.cli import add_verbosity

    p = argparse.ArgumentParser(prog="python -m s2trt.demo.synth", description=__doc__)
    p.add_argument("--out", required=True, help="output folder (images/, labels/, data.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=2000, help="number of training images")
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--calib", type=int, default=100, help="INT8 calibration images")
    p.add_argument("--imgsz", type=int, default=416, help="image width in pixels")
    p.add_argument("--segments", action="store_true",
                   help="polygon labels of the visible outlines (YOLOv5 segment format), not boxes")
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    if args.imgsz < 64:
        raise S2Error("--imgsz must be at least 64")
    path = generate(args.out, args.seed, {"train": args.train, "val": args.val, "calib": args.calib},
                    args.imgsz, args.segments)
    log.info("data yaml: %s", path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from s2trt.cli import run_main

    return run_main("s2trt.demo.synth", _parse, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
