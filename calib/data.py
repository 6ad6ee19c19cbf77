"""Calibration images: where they come from, which ones are used, and how they become network input.

A source is a folder of images, a glob, a video file (every Nth frame) or a split of a YOLO data yaml.
The selection is deterministic: paths are sorted and a seeded sample of `size` of them is taken, so
two runs on the same source calibrate on the same pixels. Frames go through the runtime's own
`preprocess`, so calibration sees exactly what inference sees (docs/DESIGN.md §6).

`CalibrationReader` speaks ONNX Runtime's CalibrationDataReader protocol (get_next() -> {input: batch}
or None, rewind(), len(), set_range()) and also yields plain batches for the TensorRT calibrator.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from s2trt.detect.letterbox import preprocess
from s2trt.detect.media import IMAGE_EXTS, VIDEO_EXTS
from s2trt.errors import S2Error

log = logging.getLogger(__name__)

DEFAULT_SIZE = 256
DEFAULT_BATCH = 4
YAML_SUFFIXES = (".yaml", ".yml")
# Splits tried, in order, when a data yaml is given without --calib-split: a dedicated calibration
# split, else the training images (calibrating on the validation split would flatter the report).
YAML_SPLIT_ORDER = ("calib", "train", "val")


@dataclass(frozen=True)
class Item:
    """One calibration frame: an image file, or frame `frame` of a video file."""

    path: str
    frame: int | None = None

    def describe(self) -> str:
        return self.path if self.frame is None else f"{self.path}#{self.frame}"


@dataclass
class Preprocessing:
    """What turns a frame into the network input; part of every calibration cache key."""

    imgsz: tuple[int, int]
    stride: int = 32
    pad_value: int = 114
    scaleup: bool = True

    def as_dict(self) -> dict[str, Any]:
        # The layout constants are written out so a change of convention also invalidates caches.
        return {"imgsz": list(self.imgsz), "stride": self.stride, "pad_value": self.pad_value,
                "scaleup": self.scaleup, "layout": "NCHW", "channels": "RGB", "scale": "1/255",
                "letterbox_auto": False}

    @classmethod
    def from_meta(cls, meta: Any) -> Preprocessing:
        """From an s2trt.meta.ModelMeta (the ONNX file's own metadata)."""
        h, w = (int(v) for v in meta.imgsz)
        kw = meta.preprocess_kwargs()
        return cls((h, w), kw["stride"], kw["pad_value"], kw["scaleup"])


# ------------------------------------------------------------------------------------- sources

def _is_image(p: str | Path) -> bool:
    return Path(p).suffix.lower() in IMAGE_EXTS


def _is_video(p: str | Path) -> bool:
    return Path(p).suffix.lower() in VIDEO_EXTS


def _images_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and _is_image(p))


def _yaml_split_images(data: Path, split: str | None) -> list[str]:
    from s2trt.detect.evaluate import read_data_yaml

    d = read_data_yaml(data)
    available = [s for s in YAML_SPLIT_ORDER if d.get(s)]
    if split is None:
        if not available:
            raise S2Error(f"{data} names no calib, train or val split to calibrate on")
        split = available[0]
    elif not d.get(split):
        raise S2Error(f"{data} has no '{split}' split (it has: {', '.join(available) or 'none'})")
    entries = d[split] if isinstance(d[split], list) else [d[split]]
    files: list[str] = []
    for entry in entries:
        p = Path(entry)
        p = p if p.is_absolute() else Path(d["path"]) / p
        if p.is_dir():
            files += _images_in(p)
        elif p.is_file() and p.suffix.lower() == ".txt":  # YOLOv5's list-of-images form
            for line in p.read_text(encoding="utf-8").splitlines():
                q = Path(line.strip())
                if line.strip():
                    files.append(str(q if q.is_absolute() else Path(d["path"]) / q))
        else:
            raise S2Error(f"the '{split}' split of {data} points to {p}, which does not exist")
    log.info("calibration split '%s' of %s", split, data)
    return sorted(files)


def _video_frames(path: str, step: int | None, size: int) -> list[Item]:
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise S2Error(f"cannot open video {path} (unsupported codec or not a video)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if count <= 0:
        raise S2Error(f"video {path} reports no frames: convert it, or extract images and pass the folder")
    # Spread the frames over the whole video unless a step is given: neighbours are near-duplicates.
    step = step or max(1, count // size)
    return [Item(path, i) for i in range(0, count, step)]


def list_items(source: str | Path, size: int = DEFAULT_SIZE, split: str | None = None,
               video_step: int | None = None) -> list[Item]:
    """Every candidate frame of a source, in a stable order (before sampling)."""
    spec = str(source)
    if video_step is not None and video_step < 1:
        raise S2Error("--calib-video-step must be 1 or more")
    if any(c in spec for c in "*?["):
        files = sorted(f for f in glob.glob(spec, recursive=True) if Path(f).is_file())
        items = [Item(f) for f in files if _is_image(f)]
        for f in files:
            if _is_video(f):
                items += _video_frames(f, video_step, size)
        if not items:
            raise S2Error(f"no images or videos match {spec}")
        return items
    p = Path(spec)
    if not p.exists():
        raise S2Error(f"calibration source not found: {spec}")
    if p.is_dir():
        files = _images_in(p)
        if not files:
            raise S2Error(f"{spec} holds no images ({', '.join(sorted(IMAGE_EXTS))}); give a folder of "
                          "images, a glob, a video or a YOLO data yaml")
        return [Item(f) for f in files]
    if p.suffix.lower() in YAML_SUFFIXES:
        files = _yaml_split_images(p, split)
        if not files:
            raise S2Error(f"the calibration split of {spec} holds no images")
        return [Item(f) for f in files]
    if _is_video(p):
        return _video_frames(spec, video_step, size)
    if _is_image(p):
        return [Item(spec)]
    raise S2Error(f"{spec} is not an image folder, glob, video or data yaml")


def sample_items(items: Sequence[Item], size: int, seed: int = 0) -> list[Item]:
    """A seeded subset of `size` items, kept in source order; all of them when there are fewer."""
    if size < 1:
        raise S2Error("--calib-size must be 1 or more")
    if len(items) <= size:
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=size, replace=False))
    return [items[i] for i in keep]


def read_frame(item: Item) -> np.ndarray:
    if item.frame is None:
        img = cv2.imread(item.path, cv2.IMREAD_COLOR)
    else:
        cap = cv2.VideoCapture(item.path)
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, item.frame)
            ok, img = cap.read()
        finally:
            cap.release()
        img = img if ok else None
    if img is None:
        raise S2Error(f"cannot read calibration frame {item.describe()} (corrupt or unsupported file)")
    return img


# --------------------------------------------------------------------------------------- reader

@dataclass
class CalibrationReader:
    """Batches of preprocessed calibration frames, in ORT's CalibrationDataReader protocol."""

    items: list[Item]
    prep: Preprocessing
    batch: int = DEFAULT_BATCH
    input_name: str = "images"
    progress: bool = True
    description: str = "calibration"
    drop_last: bool = False  # fixed-batch graphs and TensorRT take full batches only
    _pos: int = field(default=0, init=False)
    _end: int | None = field(default=None, init=False)
    _bar: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.items:
            raise S2Error("no calibration images")
        if self.batch < 1:
            raise S2Error("--calib-batch must be 1 or more")
        if len(self) == 0:
            raise S2Error(f"{len(self.items)} calibration images do not fill one batch of {self.batch}: "
                          "add images or lower --calib-batch")
        if self.drop_last and len(self.items) % self.batch:
            log.info("calibrating on %d of %d images (whole batches of %d)", len(self) * self.batch,
                     len(self.items), self.batch)

    @property
    def num_images(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        """Number of batches (ORT's strided calibration counts in these units)."""
        n = len(self.items)
        return n // self.batch if self.drop_last else -(-n // self.batch)

    def load_batch(self, index: int) -> np.ndarray:
        """Batch `index` as float32 (n, 3, h, w); the last batch may be short."""
        chunk = self.items[index * self.batch:(index + 1) * self.batch]
        x, _ = preprocess([read_frame(it) for it in chunk], self.prep.imgsz, stride=self.prep.stride,
                          pad_value=self.prep.pad_value, scaleup=self.prep.scaleup)
        return x

    def batches(self) -> Iterator[np.ndarray]:
        """Every batch once, with a progress bar."""
        for i in range(len(self)):
            x = self.load_batch(i)
            self._tick(len(x))
            yield x
        self._close_bar()

    # ONNX Runtime's protocol ------------------------------------------------------------------
    def get_next(self) -> dict[str, np.ndarray] | None:
        end = len(self) if self._end is None else min(self._end, len(self))
        if self._pos >= end:
            if self._pos >= len(self):
                self._close_bar()
            return None
        x = self.load_batch(self._pos)
        self._pos += 1
        self._tick(len(x))
        return {self.input_name: x}

    def rewind(self) -> None:
        self._pos, self._end = 0, None
        self._close_bar()

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict get_next() to batches [start, end): ORT then collects statistics chunk by chunk,
        so memory stays bounded by one chunk's intermediate tensors, not the whole set's."""
        self._pos, self._end = start_index, end_index

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (d := self.get_next()) is not None:
            yield d

    def _tick(self, n: int) -> None:
        if not self.progress:
            return
        if self._bar is None:
            from tqdm import tqdm

            total = min(len(self.items), len(self) * self.batch)
            self._bar = tqdm(total=total, desc=self.description, unit="img", leave=False, disable=None)
        self._bar.update(n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def fingerprint(self) -> str:
        """Hash of which frames are used (not their pixels): reported beside caches for reference."""
        text = json.dumps([[it.path, it.frame] for it in self.items])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_reader(source: str | Path, prep: Preprocessing, size: int = DEFAULT_SIZE,
                batch: int = DEFAULT_BATCH, seed: int = 0, split: str | None = None,
                video_step: int | None = None, input_name: str = "images",
                progress: bool = True, drop_last: bool = False) -> CalibrationReader:
    """The reader over `size` frames sampled from `source` (see list_items for what it may be)."""
    items = sample_items(list_items(source, size, split, video_step), size, seed)
    if len(items) < size:
        log.warning("calibrating on %d frames (fewer than --calib-size %d): %s has no more",
                    len(items), size, source)
    log.info("calibration: %d frames from %s, batch %d", len(items), source, batch)
    return CalibrationReader(items, prep, batch, input_name, progress, drop_last=drop_last)
