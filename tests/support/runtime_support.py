"""Tiny random-weight models for the runtime tests (no tests here; the other test_runtime_* import it).

The real exporter is developed separately; these models are exported with torch.onnx directly so the
runtime is tested against the docs/DESIGN.md §3 contract itself.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from s2trt.detect.letterbox import preprocess

NAMES = ["ball", "cube", "cone", "ring", "star"]
IMGSZ = (128, 160)  # small and non-square: catches h/w mix-ups


@functools.cache
def tiny_models(batch: int | str = "dynamic") -> dict[str, Path]:
    """{'pt': checkpoint, 'onnx': ONNX with s2trt metadata} in a temp folder shared by the session."""
    m, out = _tiny_model()
    return {"pt": out / "tiny.pt",
            "onnx": export_onnx(m, list(NAMES), IMGSZ, out / f"tiny_b{batch}.onnx", batch)}


@functools.cache
def _tiny_model():
    import torch

    from s2trt.models import DetectionModel

    torch.manual_seed(0)
    out = Path(tempfile.mkdtemp(prefix="s2trt-runtime-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)  # 14 MB of models per test session
    m = DetectionModel("yolov5n-s2", nc=len(NAMES))
    m.names = list(NAMES)
    # Random init makes activations vanish layer by layer, so the output would not depend on the
    # image. Set the BatchNorm statistics from real frames (as training would) and widen the head so
    # scores spread over 0..1 and differ from frame to frame: NMS then has real decisions to make.
    x, _ = preprocess([scene(i * 7) for i in range(16)], IMGSZ)
    for bn in m.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.momentum = None
            bn.reset_running_stats()
    with torch.no_grad():
        m.train()
        m(torch.from_numpy(x))
        m.eval()
        for conv in m.detect.m:
            conv.weight *= 3.0
            conv.bias.zero_()
    torch.save({"model": m.half(), "names": list(NAMES)}, out / "tiny.pt")
    return m.float(), out  # FP16-rounded weights, as the checkpoint holds them


def export_onnx(model, names: list[str], imgsz: tuple[int, int], path: Path,
                batch: int | str = "dynamic") -> Path:
    """torch.onnx export with the docs/DESIGN.md §3 names and the s2trt metadata (not the real exporter)."""
    import onnx
    import torch

    from s2trt.meta import ModelMeta

    n = 1 if batch == "dynamic" else int(batch)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(n, 3, *imgsz), str(path), opset_version=17,
                          input_names=["images"], output_names=["output0"], dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}
                          if batch == "dynamic" else None)
    proto = onnx.load(str(path))
    meta = ModelMeta(names=names, imgsz=list(imgsz), stride=32, batch=batch)
    for k, v in meta.to_props().items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def scene(i: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A deterministic frame with moving shapes and texture (something for the network to respond to)."""
    rng = np.random.default_rng(i // 10)
    img = (rng.integers(0, 60, (h, w, 3), dtype=np.uint8) + 90).astype(np.uint8)
    cx, cy = 40 + (i * 7) % (w - 80), 40 + (i * 3) % (h - 80)
    cv2.circle(img, (cx, cy), 30, (30, 200, 240), -1)
    cv2.rectangle(img, (w - cx - 30, h - cy - 20), (w - cx + 30, h - cy + 40), (200, 60, 40), -1)
    return img


def write_video(path: Path, frames: int, h: int = 240, w: int = 320, fourcc: str = "mp4v",
                fps: float = 25.0) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened(), f"OpenCV cannot write {fourcc} here"
    for i in range(frames):
        vw.write(scene(i, h, w))
    vw.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def partial_text(folder: Path, name: str) -> str:
    """What has been written so far to the temporary file of output `name` in `folder`
    (`.<stem>.<random>.partial<suffix>`, s2trt.publish), "" when there is none."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for p in folder.glob(f".{stem}.*.partial{suffix}"):
        with contextlib.suppress(OSError):  # published or removed meanwhile
            return p.read_text()
    return ""


def signal_mid_run(proc: subprocess.Popen, ready: Callable[[], bool], sig: int, wait_s: float) -> None:
    """Send `sig` to `proc` once ready() says the run has got far enough (within wait_s), failing
    the test when the run ended before it could be signalled."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
