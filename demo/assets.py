"""The bundled demo media: a labelled sample video of moving, rotating shapes and a few sample images.

`python -m s2trt.demo.assets --out demo/assets --seed 0` writes sample.mp4 (OpenCV's mp4v), its
per-frame labels sample_labels.json (boxes) and sample_segments.json (the visible outline of each
object), and images/*.jpg. The checkpoints demo.pt and demo-seg.pt come from s2trt.demo.train (see
demo/README.md). Every file is written under an exclusively created temporary name, then renamed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from s2trt.demo.shapes import CLASSES, Scene, Shape, background, compose, outline, pick_color, render_image
from s2trt.errors import S2Error
from s2trt.publish import private_folder, publish, write_bytes_atomic

log = logging.getLogger("s2trt.demo.assets")  # not __name__: it is __main__ under -m

ASSETS = Path(__file__).parent / "assets"
# The video's objects are 48-128 pixels across: outlines within a pixel keep the files small.
VIDEO_OUTLINE_TOLERANCE = 1.0


def _moving_shapes(rng: np.random.Generator, bg: np.ndarray, n: int) -> tuple[list[Shape], np.ndarray]:
    """n shapes (every class at least once) and their (vx, vy, spin) per frame."""
    h, w = bg.shape[:2]
    classes = [k % len(CLASSES) for k in range(n)]
    shapes, motion = [], []
    for c in classes:
        r = float(rng.uniform(24, 64))
        cx, cy = float(rng.uniform(r + 1, w - r - 1)), float(rng.uniform(r + 1, h - r - 1))
        color = pick_color(rng, bg[int(cy - r):int(cy + r), int(cx - r):int(cx + r)].reshape(-1, 3).mean(0))
        shapes.append(Shape(c, cx, cy, r, float(rng.uniform(0, 2 * math.pi)), color))
        speed, heading = rng.uniform(1.0, 4.0), rng.uniform(0, 2 * math.pi)
        motion.append((speed * math.cos(heading), speed * math.sin(heading), rng.uniform(-0.06, 0.06)))
    return shapes, np.array(motion)


def _step(shapes: list[Shape], motion: np.ndarray, h: int, w: int) -> None:
    """Move and spin every shape one frame, bouncing off the frame edges so none is ever cut."""
    for s, m in zip(shapes, motion, strict=True):
        s.cx += m[0]
        s.cy += m[1]
        s.angle += m[2]
        if not s.r + 1 <= s.cx <= w - s.r - 1:
            m[0] = -m[0]
            s.cx = min(max(s.cx, s.r + 1), w - s.r - 1)
        if not s.r + 1 <= s.cy <= h - s.r - 1:
            m[1] = -m[1]
            s.cy = min(max(s.cy, s.r + 1), h - s.r - 1)


def video_scenes(seed: int = 0, seconds: float = 10.0, fps: int = 25, size: tuple[int, int] = (640, 480),
                 n_objects: int = 6) -> Iterator[Scene]:
    """The sample video's frames, one Scene each (the same for the same arguments)."""
    w, h = size
    rng = np.random.default_rng([seed, 100])
    bg = background(rng, h, w)
    bg = np.clip(bg.astype(np.float32) + rng.normal(0, 4, bg.shape), 0, 255).astype(np.uint8)
    shapes, motion = _moving_shapes(rng, bg, n_objects)
    for _ in range(round(seconds * fps)):
        yield compose(bg, shapes)
        _step(shapes, motion, h, w)


def _write_json(path: Path, doc: dict) -> None:
    write_bytes_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def frame_outlines(scene: Scene, tolerance: float = VIDEO_OUTLINE_TOLERANCE) -> list[list[int]]:
    """Each object's visible outline as [x0, y0, x1, y1, ...] in whole pixel-edge coordinates."""
    out = []
    for i, (_, x1, y1, x2, y2) in enumerate(scene.labels.astype(int).tolist()):
        mine = scene.owner[y1:y2, x1:x2] == i
        poly = outline(mine, tolerance) if mine.any() else np.zeros((0, 2))
        out.append(np.round(poly + np.array([x1, y1])).astype(int).reshape(-1).tolist())
    return out


def make_video(out: str | Path, labels_out: str | Path, seed: int = 0, seconds: float = 10.0,
               fps: int = 25, size: tuple[int, int] = (640, 480), n_objects: int = 6,
               segments_out: str | Path | None = None) -> int:
    """Write the sample video and its labels; returns the number of frames.

    The labels hold, per frame, [class, x1, y1, x2, y2, visible fraction] in frame pixels: objects
    hidden behind others have visible < 1, and tests count only well-visible ones. `segments_out`
    also gets each object's visible outline (make_segments).
    """
    out, labels_out = Path(out), Path(labels_out)
    w, h = size
    folder = private_folder(out)  # OpenCV opens its file by name: nobody else can enter this folder
    tmp = folder / out.name  # the suffix picks OpenCV's container
    frames, outlines = [], []
    try:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise S2Error(f"OpenCV cannot write an mp4v video to {out}")
        try:
            for scene in video_scenes(seed, seconds, fps, size, n_objects):
                writer.write(scene.image)
                frames.append([[int(c), *(round(float(v), 1) for v in box), round(float(vis), 3)]
                               for (c, *box), vis in zip(scene.labels.tolist(), scene.visible,
                                                         strict=True)])
                if segments_out is not None:
                    outlines.append(frame_outlines(scene))
        finally:
            writer.release()
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        folder.rmdir()
    doc = {"video": out.name, "fps": fps, "width": w, "height": h, "seed": seed, "names": list(CLASSES),
           "format": "per frame: [class, x1, y1, x2, y2, visible fraction], pixels", "frames": frames}
    _write_json(labels_out, doc)
    if segments_out is not None:
        _write_json(Path(segments_out), _segments_doc(out.name, seed, outlines))
    return len(frames)


def _segments_doc(video: str, seed: int, outlines: list[list[list[int]]]) -> dict:
    return {"video": video, "seed": seed, "names": list(CLASSES),
            "format": "per frame, per object of sample_labels.json (same order): its visible outline "
                      "[x0, y0, x1, y1, ...], whole pixels in pixel-edge coordinates (COCO's polygon "
                      "format; a ring's hole is joined by a zero-width cut)", "frames": outlines}


def make_segments(segments_out: str | Path, seed: int = 0, seconds: float = 10.0, fps: int = 25,
                  size: tuple[int, int] = (640, 480), n_objects: int = 6, video: str = "sample.mp4") -> int:
    """Only the outlines file of make_video (the frames are not encoded again); returns the frames."""
    outlines = [frame_outlines(scene) for scene in video_scenes(seed, seconds, fps, size, n_objects)]
    _write_json(Path(segments_out), _segments_doc(video, seed, outlines))
    return len(outlines)


def make_images(folder: str | Path, seed: int = 0, n: int = 4,
                size: tuple[int, int] = (640, 480)) -> list[Path]:
    """A few sample images (the val-set look, at video size) for the quick-start commands."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        scene = render_image(np.random.default_rng([seed, 200, i]), size[1], size[0])
        p = folder / f"shapes_{i}.jpg"
        ok, buf = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise S2Error(f"cannot encode {p}")
        write_bytes_atomic(p, buf.tobytes())
        paths.append(p)
    return paths


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from s2trt.cli import add_verbosity

    p = argparse.ArgumentParser(prog="python -m s2trt.demo.assets", description=__doc__)
    p.add_argument("--out", default=str(ASSETS), help="assets folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--images", type=int, default=4, help="number of sample images")
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = make_video(out / "sample.mp4", out / "sample_labels.json", args.seed, args.seconds,
                   segments_out=out / "sample_segments.json")
    log.info("wrote %s (%d frames), sample_labels.json and sample_segments.json", out / "sample.mp4", n)
    for p in make_images(out / "images", args.seed, args.images):
        log.info("wrote %s", p)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from s2trt.cli import run_main

    return run_main("s2trt.demo.assets", _parse, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
