"""Where results go: annotated images and videos, JSON Lines, a window.

Every file is written under an exclusively created temporary name (s2trt.publish: a link planted
in the output folder is never followed) and renamed when closed, so an interrupted run leaves
only complete outputs: a video whose container was finalised (it plays) and JSONL of whole lines. A
failed run (a full disk, a dead server) publishes nothing that was still being written. Pipes,
devices and /dev/stdout are written in place (a rename would replace them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from s2trt.detect.masks import InstanceMask, draw_masks
from s2trt.detect.opencv_safe import drawable, opencv_path
from s2trt.errors import S2Error
from s2trt.meta import check_writable
from s2trt.publish import exclusive_temp, private_folder
from s2trt.publish import publish as publish_file
from s2trt.runtime.inputs.sources import Frame, SourceKind
from s2trt.runtime.outputs.in_place import InPlaceWriter, VideoRelay, writes_in_place
from s2trt.text import redact_credentials

log = logging.getLogger(__name__)

# MPEG-4 Part 2 (mp4v) takes a time base denominator up to 65535: OpenCV opens no writer above.
MAX_VIDEO_FPS = 65535
# Formats cv2.imwrite can write everywhere; others that it reads (.mpo, .dng, .pfm) are saved as .jpg.
WRITABLE_IMAGE_EXTS = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}

# 20 saturated colours, hues 7/20 of a turn apart so neighbouring class ids contrast (BGR).
PALETTE = [tuple(int(v) for v in cv2.cvtColor(np.uint8([[[(i * 63) % 180, 220, 230]]]),
                                              cv2.COLOR_HSV2BGR)[0, 0]) for i in range(20)]


def increment_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """runs/detect/exp, then exp2, exp3, ... as YOLOv5 does. Not created: the sinks make it when the
    first file goes in (a run that writes nothing leaves no empty folder); checked to be creatable."""
    base = Path(project) / name
    path = base
    if not exist_ok:
        n = 2
        while path.exists():
            path = base.with_name(f"{base.name}{n}")
            n += 1
    check_writable(path)
    return path


def annotate(img: np.ndarray, dets: np.ndarray, names: Sequence[str], line_width: int | None = None,
             labels: bool = True, conf: bool = True, inplace: bool = False,
             masks: Sequence[InstanceMask] | None = None) -> np.ndarray:
    """Draw masks (a segmentation model's, under the boxes as yolov5 draws them), boxes and
    'name 0.87' labels on img, or on a copy of it."""
    out = img if inplace else img.copy()
    if masks is not None:
        draw_masks(out, masks, [PALETTE[int(c) % len(PALETTE)] for c in dets[:, 5]])
    lw = line_width or max(round(sum(img.shape[:2]) / 2 * 0.003), 2)
    for x1, y1, x2, y2, score, cls in dets:
        c = int(cls)
        color = PALETTE[c % len(PALETTE)]
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(out, p1, p2, color, lw, cv2.LINE_AA)
        if not labels:
            continue
        text = drawable(class_name(names, c) + (f" {score:.2f}" if conf else ""))
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


def _why(e: OSError) -> str:
    return e.strerror or str(e)


class VideoSink:
    """An mp4 written in a private folder beside its target (OpenCV opens the file by name, so the
    folder is what keeps a planted link out of its way) and renamed on close, once the file proves
    complete."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        self.path = path
        if fps > MAX_VIDEO_FPS:  # inf too; nan and 0 (unknown) are written at 30 below
            raise S2Error(f"cannot write video {path}: its source claims {fps:g} frames per second, and "
                          f"an mp4v video holds at most {MAX_VIDEO_FPS} (MPEG-4's time base)")
        self.direct = writes_in_place(path)
        # In place through a relay that checks every write; else a file in a private folder: same
        # folder (rename is atomic) and same extension (OpenCV picks the format from it).
        self.relay = VideoRelay(path) if self.direct else None
        self.tmp = self.relay.fifo if self.relay else private_folder(path) / f"video{path.suffix}"
        self.frames = 0
        with opencv_path(self.tmp, new=True) as name:  # a folder whose name is not UTF-8
            self.writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*"mp4v"),
                                          fps if fps and fps > 0 else 30.0, size)
        if not self.writer.isOpened():
            self._discard()
            if self.relay:
                with contextlib.suppress(S2Error):  # the reason is the container, said below
                    self.relay.abandon()
                raise S2Error(f"cannot write video into {path}: a pipe or device takes a streamable "
                              "container (a name ending in .ts or .mkv), not .mp4")
            raise S2Error(f"cannot write video {path} (OpenCV has no mp4v encoder or the folder is "
                          "not writable)")
        self.size = size
        self.fps = fps if fps and fps > 0 else 30.0
        self.t0: float | None = None  # the first live frame's capture time
        self.last: np.ndarray | None = None  # the last live frame written, to fill drops with
        self.pts_base: float | None = None  # stream time + pts_base = seconds into the video
        self.last_pts = 0.0

    def _clock(self, captured: float, pts: float | None) -> float:
        """Seconds into the video for a live frame: its stream timestamp where it has one (frames
        that arrive in a burst, after a stall or the decoder's probing, keep the camera's spacing),
        else its arrival; re-anchored on arrival when the timestamps stall or jump (a reconnect
        starts them anew)."""
        if self.t0 is None:
            self.t0 = captured
        arrival = captured - self.t0
        if pts is None or self.pts_base is None or not 0 < pts - self.last_pts <= 5.0:
            self.pts_base = None if pts is None else arrival - pts
            self.last_pts = pts or 0.0
            return arrival
        self.last_pts = pts
        return pts + self.pts_base

    def write(self, img: np.ndarray, captured: float | None = None, pts: float | None = None) -> None:
        """`captured`: a live frame's capture time (monotonic seconds), `pts` its stream timestamp if
        known. Frames dropped before it are filled by repeating the last one written, so the video
        plays in real time (64 s of stream make 64 s of video however many frames inference kept)."""
        if (img.shape[1], img.shape[0]) != self.size:  # a stream that changed resolution
            img = cv2.resize(img, self.size)
        if captured is not None:
            due = round(self._clock(captured, pts) * self.fps)
            while self.last is not None and self.frames < due:
                self.writer.write(self.last)
                self.frames += 1
            self.last = img
        self.writer.write(img)
        self.frames += 1

    def close(self, publish: bool = True) -> bool:
        """Finish the file; True when it was published. Raises S2Error if it came out incomplete."""
        self.writer.release()
        if self.relay:
            self.relay.finish()  # raises the first write error: a device that takes nothing
            return publish and self.frames > 0
        if not (publish and self.frames):
            self._discard()
            return False
        # OpenCV's writer reports no error (a full disk gives a file without its index): read back
        # the frame count that the container declares.
        with opencv_path(self.tmp) as name:
            cap = cv2.VideoCapture(name)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if n != self.frames:
            self._discard()
            raise S2Error(f"cannot write video {self.path}: the file came out incomplete ({n} of "
                          f"{self.frames} frames readable; is the disk full?)")
        try:
            publish_file(self.tmp, self.path)
        finally:
            self._discard()
        return True

    def _discard(self) -> None:
        if not self.direct:
            self.tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.tmp.parent.rmdir()


class JsonlSink:
    """One JSON object per frame; whole lines only, renamed into place on close.

    The file is created at the first line, so a run that reads nothing leaves no empty file. It is
    written line by line without a buffer, so it is known how many bytes hold whole lines
    (`complete`) and how many hold the lines of frames whose other outputs are published too
    (`settled`, moved by mark_settled): what a failed run publishes."""

    def __init__(self, path: Path):
        self.path = path
        self.direct = writes_in_place(path)
        self.tmp = path
        self.f: IO[str] | InPlaceWriter | None = None
        self.lines = 0
        self.complete = self.settled = 0

    def _open(self) -> IO[str] | InPlaceWriter:
        if str(self.path) == "-":
            if sys.stdout is None:  # started with stdout closed (`>&-`)
                raise S2Error("cannot write JSON Lines to stdout (--save-json -): it is closed")
            return sys.stdout
        if self.direct:
            return InPlaceWriter(self.path, str(self.path))
        fd, self.tmp = exclusive_temp(self.path)
        return os.fdopen(fd, "wb", buffering=0)

    def mark_settled(self) -> None:
        self.settled = self.complete

    def write(self, frame: Frame, dets: np.ndarray, names: Sequence[str],
              masks: Sequence[InstanceMask] | None = None) -> None:
        if self.f is None:
            self.f = self._open()
        line = json.dumps(record(frame, dets, names, masks), separators=(",", ":")) + "\n"
        try:
            if isinstance(self.f, InPlaceWriter):
                self.f.write(line.encode())
            elif self.f is sys.stdout:
                self.f.write(line)
            else:
                data = memoryview(line.encode())
                while data:  # a short write, then the error (a full disk) on the next
                    data = data[self.f.write(data):]
                self.complete += len(line.encode())
        except (OSError, ValueError) as e:  # ValueError: a stdout that was closed meanwhile
            raise S2Error(f"cannot write {self.path}: {_why(e)}") from None
        self.lines += 1

    def close(self, publish: bool = True) -> bool:
        """Finish the file; True when it was published. Raises S2Error if it could not be written.

        Not `publish` (a failed run): its settled lines are published, as the images they describe
        were, and the rest is cut off; nothing settled, nothing published."""
        f, self.f = self.f, None
        if f is None:
            return False
        try:
            if f is sys.stdout:
                f.flush()
            elif isinstance(f, InPlaceWriter):
                f.close()
            else:
                if not publish and self.settled:
                    os.ftruncate(f.fileno(), self.settled)  # frees blocks: works on a full disk
                    publish = True
                f.close()
        except (OSError, ValueError) as e:
            if not self.direct:
                self.tmp.unlink(missing_ok=True)
            raise S2Error(f"cannot write {self.path}: {_why(e)}") from None
        if self.direct:
            return publish
        try:
            if publish:
                publish_file(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return publish


def record(frame: Frame, dets: np.ndarray, names: Sequence[str],
           masks: Sequence[InstanceMask] | None = None) -> dict:
    """The JSONL schema: one frame, its time, its size, and parallel lists of boxes, scores, classes
    and names. `pts`: the frame's timestamp in its video or stream, seconds (null where the decoder
    cannot tell, and for images); `wall`: a camera's or stream's frame's capture time, Unix seconds
    (null for files, whose results do not depend on when they ran). A segmentation model adds
    `segments`: per detection, its mask's outer polygons [x0, y0, x1, y1, ...] in frame pixels
    (COCO's polygon format; s2trt.detect.masks.fill_polygons draws them back)."""
    cls = [int(c) for c in dets[:, 5]]
    live = frame.kind.live
    return {
        "source": redact_credentials(frame.source),  # results files are shared: no credentials
        "frame": frame.index,
        "pts": None if frame.pts is None else round(frame.pts, 3),
        "wall": round(frame.wall, 3) if live else None,
        "width": int(frame.image.shape[1]),
        "height": int(frame.image.shape[0]),
        "boxes": [[round(float(v), 2) for v in b] for b in dets[:, :4]],
        "scores": [round(float(s), 4) for s in dets[:, 4]],
        "class_ids": cls,
        "names": [class_name(names, c) for c in cls],
        **({} if masks is None else {"segments": [m.polygons() for m in masks]}),
    }


def output_name(kind: SourceKind, source: str) -> str:
    """The file name of a source's annotated copy in the output folder."""
    if kind == SourceKind.CAMERA:
        return f"camera{source}.mp4"
    if kind == SourceKind.STREAM:
        bare = redact_credentials(source).split("://", 1)[-1]
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", bare).strip("_")[:60]
        return f"{stem or 'stream'}.mp4"
    p = Path(source)
    if kind != SourceKind.IMAGE:
        return f"{p.stem}.mp4"
    # Formats OpenCV reads but cannot write (.mpo, .dng, .pfm) are saved as .jpg.
    return p.name if p.suffix.lower() in WRITABLE_IMAGE_EXTS else f"{p.stem}.jpg"


class Sinks:
    """All outputs of a run; `write` takes each frame once, in order.

    Folders are created when the first file goes into them, so a run that writes nothing leaves no
    empty folder. `close(publish=False)` (a failed run) discards the files still being written and
    removes the folders it created if they stay empty.

    `file_names` maps a source to its file name in the folder (several sources that would share a
    name get different ones); `concurrent` keeps every video open until close, for sources whose
    frames come interleaved (several in one run) instead of one after another."""

    def __init__(self, names: Sequence[str], save_dir: Path | None, output: Path | None,
                 save: bool, json_path: Path | None, show: bool, line_width: int | None = None,
                 hide_labels: bool = False, hide_conf: bool = False,
                 file_names: dict[str, str] | None = None, concurrent: bool = False):
        self.names, self.save_dir, self.output, self.save = names, save_dir, output, save
        self.file_names, self.concurrent = file_names or {}, concurrent
        self.show = show and _has_display()
        if show and not self.show:
            log.warning("--show: no display available here, nothing will be shown")
        self.draw_kw = {"line_width": line_width, "labels": not hide_labels, "conf": not hide_conf}
        self.jsonl = JsonlSink(json_path) if json_path else None
        self.videos: dict[str, VideoSink] = {}
        self.saved: list[Path] = []
        self.problems: list[str] = []  # outputs that could not be made, reported with the input's
        self.created: list[Path] = []  # folders this run made, deepest last

    def _target(self, frame: Frame) -> Path:
        if self.output is not None and self.save_dir is None:
            return self.output
        assert self.save_dir is not None
        return self.save_dir / (self.file_names.get(frame.source) or output_name(frame.kind, frame.source))

    def _folder_for(self, path: Path) -> None:
        if str(path) == "-" or path.parent.is_dir():
            return
        missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()][::-1]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise S2Error(f"cannot create output folder {path.parent}: {_why(e)}") from None
        self.created += missing

    def write(self, frame: Frame, dets: np.ndarray, masks: Sequence[InstanceMask] | None = None) -> None:
        """One frame's (n, 6) detections in frame pixels, and a segmentation model's masks."""
        if (self.save and frame.kind != SourceKind.IMAGE and frame.source not in self.videos
                and not self.concurrent):
            for old in list(self.videos):  # sources run one after another: finish the previous one
                self._close_video(old, True)
        if self.jsonl is not None:
            if self.jsonl.f is None:
                self._folder_for(self.jsonl.path)
            self.jsonl.write(frame, dets, self.names, masks)
        if self.save or self.show:
            self._save_and_show(frame, dets, masks)

    def _save_and_show(self, frame: Frame, dets: np.ndarray, masks: Sequence[InstanceMask] | None) -> None:
        # In place: the frame has no other reader after this sink (saves a copy of every frame).
        img = annotate(frame.image, dets, self.names, inplace=True, masks=masks, **self.draw_kw)
        if self.save:
            if frame.kind == SourceKind.IMAGE:
                self._write_image(self._target(frame), img)
            else:
                live = frame.kind.live
                self._video(frame, img).write(img, frame.captured if live else None, frame.pts)
                if frame.last and self.concurrent:  # published now, not when every source has ended
                    self._close_video(frame.source, True)
        if self.show:
            cv2.imshow(drawable(redact_credentials(frame.source)), img)
            cv2.waitKey(1)

    def _video(self, frame: Frame, img: np.ndarray) -> VideoSink:
        sink = self.videos.get(frame.source)
        if sink is None:  # (the previous source's video, in a sequential run, was closed by write)
            target = self._target(frame)
            self._folder_for(target)
            sink = VideoSink(target, frame.fps, (img.shape[1], img.shape[0]))
            self.videos[frame.source] = sink
        return sink

    def _close_video(self, key: str, publish: bool) -> None:
        sink = self.videos.pop(key)
        if sink.close(publish):
            self._published(sink.path)

    def _published(self, path: Path) -> None:
        """An image or video is out: the JSON lines so far describe published files only, unless a
        video is still open, and a failed run publishes them with those files (JsonlSink.close)."""
        self.saved.append(path)
        if self.jsonl is not None and not self.videos:
            self.jsonl.mark_settled()

    def _write_image(self, path: Path, img: np.ndarray) -> None:
        ext = path.suffix.lower() if path.suffix.lower() in WRITABLE_IMAGE_EXTS else ".jpg"
        try:
            ok, buf = cv2.imencode(ext, img)
        except cv2.error:
            ok = False
        if not ok:  # this image only (a JPEG holds at most 65500 pixels a side): the others go on
            msg = f"{path}: {ext} cannot hold a {img.shape[1]}x{img.shape[0]} image, not saved"
            self.problems.append(msg)
            log.warning("%s", msg)
            return
        self._folder_for(path)
        if writes_in_place(path):
            out = InPlaceWriter(path, f"image {path}")
            try:
                out.write(buf.tobytes())
            finally:
                out.close()
            self._published(path)
            return
        fd, tmp = exclusive_temp(path)
        try:  # written by Python, not cv2.imwrite, so that a full disk raises instead of truncating
            with os.fdopen(fd, "wb") as f:
                f.write(buf.tobytes())
            publish_file(tmp, path)
        except OSError as e:
            raise S2Error(f"cannot write image {path}: {_why(e)}") from None
        finally:
            tmp.unlink(missing_ok=True)
        self._published(path)

    def close(self, publish: bool = True) -> None:
        """Finish every output: publish it (a run that ended or was interrupted) or discard what is
        still being written (a failed run). The first write failure is raised after the rest is
        cleaned up, and then nothing more is published."""
        error: S2Error | None = None
        for key in list(self.videos):
            try:
                self._close_video(key, publish and error is None)
            except S2Error as e:
                error = error or e
        if self.jsonl is not None:
            try:
                if self.jsonl.close(publish and error is None) and str(self.jsonl.path) != "-":
                    self.saved.append(self.jsonl.path)
            except S2Error as e:
                error = error or e
        if self.show:
            cv2.destroyAllWindows()
        for d in reversed(self.created):  # folders this run made and left empty
            with contextlib.suppress(OSError):  # not empty, or not ours to remove
                d.rmdir()
        if error is not None:
            raise error


def _has_display() -> bool:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
        return False
    try:
        cv2.namedWindow("s2infer-probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("s2infer-probe")
    except cv2.error:  # opencv-python-headless has no GUI backend
        return False
    return True
