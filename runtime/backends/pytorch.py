"""PyTorch backend (`s2infer --weights model.pt`): the reference the exported models are compared with.

torch is imported here, inside the constructor, and only when this backend is chosen: the runtime
package itself never needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s2trt.detect.boxes import PROTO_OUTPUT
from s2trt.errors import S2Error, missing
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.base import RAW_OUTPUT, BatchedBackend, BatchSpec

log = logging.getLogger(__name__)


class TorchBackend(BatchedBackend):
    def __init__(self, path: str | Path, imgsz: Sequence[int] = (640, 640), device: str = "auto",
                 cfg: str | None = None, half: bool = False, threads: int = 0):
        try:
            import torch
        except ImportError:
            raise missing("torch", "export", "s2infer --weights") from None
        from s2trt.models.checkpoint import load_checkpoint
        from s2trt.models.yolo import fuse_conv_bn

        loaded = load_checkpoint(path, cfg)
        stride = max(loaded.stride)
        h, w = (int(v) for v in imgsz)
        if h % stride or w % stride:
            raise S2Error(f"--imgsz {h} {w} is not a multiple of the model stride {stride}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise S2Error(f"--device {device} asked for, but torch {torch.__version__} sees no CUDA GPU")
        self.torch = torch
        self.device = torch.device(device)
        self.half = half and self.device.type == "cuda"
        if threads:
            torch.set_num_threads(threads)
        # Conv+BN folded as YOLOv5's detect.py and the exporter do: same math, one op fewer per layer.
        self.model = fuse_conv_bn(loaded.model).to(self.device).eval()
        if self.half:
            self.model.half()
        self.meta = ModelMeta(names=loaded.names, imgsz=[h, w], stride=stride, batch="dynamic",
                              precision="fp16" if self.half else "fp32",
                              versions={"torch": torch.__version__},
                              task="segment" if loaded.nm else "detect", nm=loaded.nm)
        self.spec = BatchSpec(1, 64)
        self.name = f"pytorch {torch.__version__} ({self.device})"
        log.info("%s: %s, %d classes, stride %d", Path(path).name, self.name, len(loaded.names), stride)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            y = self.model(x.half() if self.half else x)
        if isinstance(y, tuple):  # a Segment model: detections, then its mask prototypes
            return {RAW_OUTPUT: y[0].float().cpu().numpy(), PROTO_OUTPUT: y[1].float().cpu().numpy()}
        return {RAW_OUTPUT: y.float().cpu().numpy()}
