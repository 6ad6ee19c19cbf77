"""Where results go: annotated images and videos, JSON Lines, a window.

Every file is written under a temporary name and renamed when closed, so an interrupted run leaves
only complete outputs: a video whose container was finalised (it plays) and JSONL of whole lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from s2trt.errors import S2Error
from s2trt.runtime.sources import Frame

log = logging.getLogger(__name__)

# Formats cv2.imwrite can write everywhere; others that it reads (.mpo, .dng, .pfm) are saved as .jpg.
WRITABLE_IMAGE_EXTS = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}

# 20 saturated colours, hues 7/20 of a turn apart so neighbouring class ids contrast (BGR).
PALETTE = [tuple(int(v) for v in cv2.cvtColor(np.uint8([[[(i * 63) % 180, 220, 230]]]),
                                              cv2.COLOR_HSV2BGR)[0, 0]) for i in range(20)]


def increment_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """runs/detect/exp, then exp2, exp3, ... as YOLOv5 does; created."""
    base = Path(project) / name
    path = base
    if not exist_ok:
        n = 2
        while path.exists():
            path = base.with_name(f"{base.name}{n}")
            n += 1
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise S2Error(f"cannot create output folder {path}: {e.strerror or e}") from None
    return path


def annotate(img: np.ndarray, dets: np.ndarray, names: Sequence[str], line_width: int | None = None,
             labels: bool = True, conf: bool = True, inplace: bool = False) -> np.ndarray:
    """Draw boxes (and 'name 0.87' labels) on img, or on a copy of it."""
    out = img if inplace else img.copy()
    lw = line_width or max(round(sum(img.shape[:2]) / 2 * 0.003), 2)
    for x1, y1, x2, y2, score, cls in dets:
        c = int(cls)
        color = PALETTE[c % len(PALETTE)]
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(out, p1, p2, color, lw, cv2.LINE_AA)
        if not labels:
            continue
        text = class_name(names, c) + (f" {score:.2f}" if conf else "")
        fs = lw / 3
        tw, th = cv2.getTextSize(text, 0, fs, max(lw - 1, 1))[0]
        above = p1[1] - th - 3 >= 0
        x0 = max(min(p1[0], out.shape[1] - tw), 0)  # keep the label inside the frame
        q1 = (x0, p1[1] - th - 3 if above else p1[1])
        q2 = (x0 + tw, p1[1] if above else p1[1] + th + 3)
        cv2.rectangle(out, q1, q2, color, -1, cv2.LINE_AA)
        cv2.putText(out, text, (x0, q2[1] - 2), 0, fs, (255, 255, 255), max(lw - 1, 1), cv2.LINE_AA)
    return out


def class_name(names: Sequence[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else str(c)


def _tmp_name(path: Path) -> Path:
    # Same folder (rename is atomic) and same extension (OpenCV picks the format from it).
    return path.with_name(f".{path.stem}.partial{path.suffix}")


class VideoSink:
    """An mp4 written as .<name>.partial.mp4 and renamed on close."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        self.path = path
        self.tmp = _tmp_name(path)
        self.frames = 0
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                      fps if fps and fps > 0 else 30.0, size)
        if not self.writer.isOpened():
            raise S2Error(f"cannot write video {path} (OpenCV has no mp4v encoder or the folder is "
                          "not writable)")
        self.size = size

    def write(self, img: np.ndarray) -> None:
        if (img.shape[1], img.shape[0]) != self.size:  # a stream that changed resolution
            img = cv2.resize(img, self.size)
        self.writer.write(img)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        if self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class JsonlSink:
    """One JSON object per frame; whole lines only, renamed into place on close."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = _tmp_name(path)
        try:
            self.f: IO[str] | None = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise S2Error(f"cannot write {path}: {e.strerror or e}") from None
        self.lines = 0

    def write(self, frame: Frame, dets: np.ndarray, names: Sequence[str]) -> None:
        assert self.f is not None
        self.f.write(json.dumps(record(frame, dets, names), separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
            os.replace(self.tmp, self.path)


def record(frame: Frame, dets: np.ndarray, names: Sequence[str]) -> dict:
    """The JSONL schema: one frame, its size, and parallel lists of boxes, scores, classes and names."""
    cls = [int(c) for c in dets[:, 5]]
    return {
        "source": frame.source,
        "frame": frame.index,
        "width": int(frame.image.shape[1]),
        "height": int(frame.image.shape[0]),
        "boxes": [[round(float(v), 2) for v in b] for b in dets[:, :4]],
        "scores": [round(float(s), 4) for s in dets[:, 4]],
        "class_ids": cls,
        "names": [class_name(names, c) for c in cls],
    }


class Sinks:
    """All outputs of a run; `write` takes each frame once, in order."""

    def __init__(self, names: Sequence[str], save_dir: Path | None, output: Path | None,
                 save: bool, json_path: Path | None, show: bool, line_width: int | None = None,
                 hide_labels: bool = False, hide_conf: bool = False):
        self.names, self.save_dir, self.output, self.save = names, save_dir, output, save
        self.show = show and _has_display()
        if show and not self.show:
            log.warning("--show: no display available here, nothing will be shown")
        self.draw_kw = {"line_width": line_width, "labels": not hide_labels, "conf": not hide_conf}
        self.jsonl = JsonlSink(json_path) if json_path else None
        self.videos: dict[str, VideoSink] = {}
        self.saved: list[Path] = []

    def _target(self, frame: Frame) -> Path:
        if self.output is not None and self.save_dir is None:
            return self.output
        assert self.save_dir is not None
        if frame.kind == "camera":
            return self.save_dir / f"camera{frame.source}.mp4"
        if frame.kind == "stream":
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", frame.source.split("://", 1)[-1]).strip("_")[:60]
            return self.save_dir / f"{stem or 'stream'}.mp4"
        p = Path(frame.source)
        return self.save_dir / (p.name if frame.kind == "image" else f"{p.stem}.mp4")

    def write(self, frame: Frame, dets: np.ndarray) -> None:
        if self.jsonl is not None:
            self.jsonl.write(frame, dets, self.names)
        if not (self.save or self.show):
            return
        # In place: the frame has no other reader after this sink (saves a copy of every frame).
        img = annotate(frame.image, dets, self.names, inplace=True, **self.draw_kw)
        if self.save:
            if frame.kind == "image":
                self._write_image(self._target(frame), img)
            else:
                self._video(frame, img).write(img)
        if self.show:
            cv2.imshow(frame.source, img)
            cv2.waitKey(1)

    def _video(self, frame: Frame, img: np.ndarray) -> VideoSink:
        sink = self.videos.get(frame.source)
        if sink is None:
            for old in list(self.videos):  # sources run one after another: finish the previous one
                self._close_video(old)
            sink = VideoSink(self._target(frame), frame.fps, (img.shape[1], img.shape[0]))
            self.videos[frame.source] = sink
        return sink

    def _close_video(self, key: str) -> None:
        sink = self.videos.pop(key)
        sink.close()
        if sink.frames:
            self.saved.append(sink.path)

    def _write_image(self, path: Path, img: np.ndarray) -> None:
        if path.suffix.lower() not in WRITABLE_IMAGE_EXTS:
            path = path.with_suffix(".jpg")
        tmp = _tmp_name(path)
        try:
            written = cv2.imwrite(str(tmp), img)
        except cv2.error as e:
            raise S2Error(f"cannot write image {path}: {str(e).strip().splitlines()[-1]}") from None
        if not written:
            raise S2Error(f"cannot write image {path}")
        os.replace(tmp, path)
        self.saved.append(path)

    def close(self) -> None:
        errors = []
        for key in list(self.videos):
            try:
                self._close_video(key)
            except OSError as e:
                errors.append(str(e))
        if self.jsonl is not None:
            self.jsonl.close()
            self.saved.append(self.jsonl.path)
        if self.show:
            cv2.destroyAllWindows()
        if errors:
            raise S2Error(f"could not finish the outputs: {'; '.join(errors)}")


def _has_display() -> bool:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
        return False
    try:
        cv2.namedWindow("s2infer-probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("s2infer-probe")
    except cv2.error:  # opencv-python-headless has no GUI backend
        return False
    return True
