"""The three steps of the `s2trt_ensemble` model, as plain callables on the requests of a batch.

Each takes one dict of arrays per request (keyed by tensor name) and returns, per request, its
outputs or the error that fails it alone, so triton_stage.py only moves tensors in and out of Triton.
The arithmetic is the runtime's: the same letterbox, NMS and box scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from s2trt.detect.boxes import PROTO_OUTPUT, postprocess
from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS
from s2trt.detect.letterbox import preprocess
from s2trt.errors import S2Error
from s2trt.meta import ModelMeta
from s2trt.runtime.backends.triton import LETTERBOX, geometry, letterboxes
from s2trt.serve.detector import answer, decode_image, open_backend, server_options

Arrays = Mapping[str, np.ndarray]
Result = dict[str, np.ndarray] | S2Error


def merged(run: Callable[[Arrays], dict[str, np.ndarray]], feeds: Sequence[Arrays]) -> list[Result]:
    """Run the requests as one batch and split the outputs back (their shapes agree past the batch)."""
    sizes = [len(next(iter(f.values()))) for f in feeds]
    out = run({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
    parts: list[Result] = []
    start = 0
    for n in sizes:
        parts.append({k: v[start:start + n] for k, v in out.items()})
        start += n
    return parts


class Preprocess:
    def __init__(self, meta: ModelMeta, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.meta = meta
        self.max_pixels = max_pixels

    def __call__(self, feeds: Sequence[Arrays]) -> list[Result]:
        out: list[Result] = []
        for f in feeds:  # one by one: encoded files differ in length, and a bad one fails alone
            try:
                out.append(self.one(f))
            except S2Error as e:
                out.append(e)
            except Exception as e:  # e.g. cv2 on an image it cannot resize: still this request's alone
                out.append(S2Error(f"the request's image could not be letterboxed "
                                   f"({type(e).__name__}: {str(e).strip()[:200]})"))
        return out

    def one(self, inputs: Arrays) -> dict[str, np.ndarray]:
        frames = [decode_image(row, i, self.max_pixels) for i, row in enumerate(inputs["IMAGE"])]
        batch, infos = preprocess(frames, self.meta.imgsz, **self.meta.preprocess_kwargs())
        return {"images": batch, LETTERBOX: geometry(infos)}


class Network:
    def __init__(self, model_dir: str | Path, params: Mapping[str, str], device: str = "CPU",
                 device_id: int = 0):
        self.backend = open_backend(Path(model_dir) / params["model_file"], device, device_id,
                                    int(params.get("cpu_threads", "0")), params.get("plugin_lib") or None)

    def __call__(self, feeds: Sequence[Arrays]) -> list[Result]:
        return merged(lambda f: self.backend.infer(np.ascontiguousarray(f["images"], dtype=np.float32)),
                      feeds)

    def close(self) -> None:
        self.backend.close()


class Postprocess:
    def __init__(self, meta: ModelMeta, params: Mapping[str, str]):
        self.meta = meta
        self.options = server_options(params)

    def __call__(self, feeds: Sequence[Arrays]) -> list[Result]:
        return merged(self.one, feeds)

    def one(self, inputs: Arrays) -> dict[str, np.ndarray]:
        net = {k: v for k, v in inputs.items() if k != LETTERBOX}
        return answer(postprocess(net, self.options), letterboxes(inputs[LETTERBOX]), self.options.max_det,
                      net.get(PROTO_OUTPUT))
