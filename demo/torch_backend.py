"""A PyTorch model as an evaluation backend: float32 NumPy batch in, (B, N, 5 + nc) NumPy out (for a
segmentation model the pair (B, N, 5 + nc + nm), prototypes (B, nm, H/4, W/4))."""

from __future__ import annotations

from typing import Any

import numpy as np


def torch_predictor(model: Any, device: str = "cpu", half: bool = False) -> Any:
    """Wrap a DetectionModel (put in eval mode) so detect.evaluate can call it like any backend."""
    import torch

    model = model.to(device).eval()
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype)

    def predict(x: np.ndarray) -> Any:
        with torch.inference_mode():
            y = model(torch.from_numpy(x).to(device, dtype))
        if isinstance(y, tuple):
            return tuple(t.float().cpu().numpy() for t in y)
        return y.float().cpu().numpy()

    return predict
