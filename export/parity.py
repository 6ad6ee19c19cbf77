"""Export-time parity: the ONNX graphs against the PyTorch model on a real, letterboxed image.

The error is measured relative to each output group's scale, because the groups live on different
scales: boxes (cx, cy, w, h) are pixels up to the image size, objectness and class scores are 0..1.
An absolute 1e-4 would be too strict for boxes and a box-scaled one too loose for scores.
`rel = max over groups of max|a - b| / max(|b|)` of that group. A Segment model's detections have a
third group, the nm raw mask coefficients after the class scores (unbounded, like logits), and its
prototypes (B, nm, h, w) are one group of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from s2trt.errors import S2Error

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

FP32_TOL = 1e-4
RANDOM_SEED = 0


@dataclass
class Parity:
    """One comparison: what against what, the figures, and whether it passed."""

    name: str  # e.g. "portable fp32 (ONNX Runtime) vs PyTorch"
    max_abs: float
    rel: float
    tol: float
    input: str  # where the test image came from

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.rel) and self.rel <= self.tol)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass": self.ok}

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.name}: max abs diff {self.max_abs:.3g}, relative {self.rel:.3g} " \
               f"(tolerance {self.tol:g}) {verdict}"


def demo_assets() -> Path:
    import s2trt.demo

    return Path(s2trt.demo.__file__).parent / "assets"


def _load_image() -> tuple[np.ndarray, str]:
    """A BGR uint8 image: the bundled demo image or video frame, else a seeded random image."""
    import cv2

    assets = demo_assets()
    for path in sorted((assets / "images").glob("*.jpg")) + sorted((assets / "images").glob("*.png")):
        img = cv2.imread(str(path))
        if img is not None:
            return img, path.name
    video = assets / "sample.mp4"
    if video.is_file():
        cap = cv2.VideoCapture(str(video))
        ok, frame = cap.read()
        cap.release()
        if ok:
            return frame, f"{video.name} frame 0"
    rng = np.random.default_rng(RANDOM_SEED)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), f"random image (seed {RANDOM_SEED})"


def sample_input(imgsz: Sequence[int], batch: int = 1, stride: int = 32) -> tuple[np.ndarray, str]:
    """(batch, 3, h, w) float32 network input made the way the runtime makes it, and its source.

    Items after the first are mirrored or flipped copies, so a batch mix-up shows in the diff.
    """
    img, source = _load_image()
    variants = [img, img[:, ::-1], img[::-1], img[::-1, ::-1]]
    frames = [np.ascontiguousarray(variants[i % 4]) for i in range(batch)]
    try:
        from s2trt.detect.letterbox import preprocess
    except ImportError:  # the runtime package is optional for exporting
        return _plain_letterbox(frames, imgsz), source
    x, _ = preprocess(frames, list(imgsz), stride=stride)
    return np.ascontiguousarray(x), source


def _plain_letterbox(frames: list[np.ndarray], imgsz: Sequence[int]) -> np.ndarray:
    import cv2

    h, w = imgsz
    out = np.full((len(frames), h, w, 3), 114, np.uint8)
    for i, f in enumerate(frames):
        r = min(h / f.shape[0], w / f.shape[1])
        nh, nw = round(f.shape[0] * r), round(f.shape[1] * r)
        top, left = (h - nh) // 2, (w - nw) // 2
        out[i, top:top + nh, left:left + nw] = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255


def compare(name: str, out: np.ndarray, ref: np.ndarray, tol: float, source: str,
            nm: int = 0) -> Parity:
    """Relative error of a (B, N, 5 + nc [+ nm]) output, or of prototypes, against a reference of
    the same shape; `nm` is the number of mask coefficients at the end of each detection row."""
    if out.shape != ref.shape:
        raise S2Error(f"{name}: output shape {out.shape} differs from the reference's {ref.shape}")
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(out - ref)
    groups = [slice(None)]
    if ref.ndim == 3 and ref.shape[-1] > 4 + nm:
        end = ref.shape[-1] - nm
        groups = [slice(0, 4), slice(4, end)] + ([slice(end, None)] if nm else [])
    rel = 0.0
    for g in groups:
        scale = max(float(np.abs(ref[..., g]).max(initial=0.0)), 1e-12)
        rel = max(rel, float(diff[..., g].max(initial=0.0)) / scale)
    if not np.isfinite(out).all():
        rel = float("inf")
    return Parity(name, float(diff.max(initial=0.0)), rel, tol, source)


def run_torch(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's detections (B, N, 5 + nc [+ nm])."""
    return run_torch_outputs(model, x)[0]


def run_torch_outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    """Every output of the model, in the graph's order: detections, then a Segment model's
    prototypes."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return [o.numpy() for o in out] if isinstance(out, (tuple, list)) else [out.numpy()]


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = _session(model)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def fp16_storage(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32 graph that rounds every FP16 tensor of `model` to FP16, for ONNX Runtime on the CPU.

    ONNX Runtime has no FP16 kernels for most ops on the CPU: it runs them in FP32 and drops the
    Cast pairs it inserts around them, so an FP16 graph's activations would never be rounded there.
    TensorRT stores each FP16 tensor in FP16 and accumulates in FP32; this graph does the same:
    FP16 weights widened exactly, and each FP16 tensor passed through Cast(->FP16) -> Cast(->FP32),
    which ONNX Runtime keeps because it did not insert them.
    """
    import onnx
    import onnx_graphsurgeon as gs

    from s2trt.export.fp16 import elem_types
    from s2trt.export.graph import add_node, constant, is_cast_to, is_constant, load, save

    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    types = elem_types(model)  # also past the plugin node, which shape inference does not know
    graph = load(model)
    io = {id(t) for t in (*graph.inputs, *graph.outputs)}
    for t in graph.tensors().values():
        if is_constant(t) and t.dtype == np.float16:
            t.values = constant(t).astype(np.float32)
        elif not is_constant(t) and id(t) not in io:  # their FP16 types no longer hold
            t.dtype = t.shape = None
    for node in list(graph.nodes):
        is_cast16 = is_cast_to(node, f16)
        for k, t in enumerate(list(node.outputs)):
            if is_cast16:
                node.outputs[k] = half = gs.Variable(f"{t.name}/half")
            elif types.get(t.name) == f16 and id(t) not in io:
                node.outputs[k] = raw = gs.Variable(f"{t.name}/raw")
                half = add_node(graph, "Cast", [raw], [f"{t.name}/half"], attrs={"to": f16})[0]
            else:
                continue
            add_node(graph, "Cast", [half], [t], attrs={"to": f32})
    return save(graph, like=model)


def run_reference(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """onnx.reference with the NumPy implementation of the S2SplitAttention node."""
    from onnx.reference import ReferenceEvaluator

    from s2trt.export.plugin_reference import reference_op

    ev = ReferenceEvaluator(model, new_ops=[reference_op()])
    # Its Sigmoid, 1/(1+exp(-x)), overflows to the right answer (0) on large negative logits: the
    # RuntimeWarning would only alarm a user of --full-reference.
    with np.errstate(over="ignore", invalid="ignore"):
        return ev.run(None, {model.graph.input[0].name: x})


def run_ort_with_plugin(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """ONNX Runtime for the standard ops, the NumPy reference for each S2SplitAttention node.

    The same semantics as run_reference at ONNX Runtime's speed (onnx.reference's FP16 convolutions
    take minutes at 640): each plugin node is cut out, its inputs become graph outputs and its output
    a graph input, and one session of that graph runs once per plugin node plus once for the final
    outputs.
    """
    import onnx

    from s2trt.export.graph import load, save
    from s2trt.export.plugin_reference import OP_DOMAIN, split_attention

    graph = load(model)
    plugins = [n for n in graph.nodes if n.domain == OP_DOMAIN]
    if not plugins:
        return run_ort(model, x)
    if any(t.dtype is None for n in plugins for t in n.inputs):
        # Shape inference costs a serialization round trip of the whole graph: only when needed.
        graph = load(onnx.shape_inference.infer_shapes(model))
        plugins = [n for n in graph.nodes if n.domain == OP_DOMAIN]
    image, n_out = graph.inputs[0].name, len(graph.outputs)
    feeds: dict[str, np.ndarray] = {image: x}
    attrs = []
    for node in plugins:
        x1, y = node.inputs[0], node.outputs[0]
        y.dtype = x1.dtype  # shape inference does not know the plugin: its output has its input's type
        # Not computed yet: zeros of the right type and shape will do.
        feeds[y.name] = np.zeros([d if isinstance(d, int) else x.shape[0] for d in x1.shape or []],
                                 x1.dtype)
        attrs.append((y.name, dict(node.attrs)))
        graph.outputs.extend(node.inputs)
        graph.inputs.append(y)
        node.inputs.clear()
        node.outputs.clear()
    sess = _session(save(graph, like=model))
    for i, (name, kw) in enumerate(attrs):
        x1, x2, x3 = sess.run(None, feeds)[n_out + 3 * i: n_out + 3 * i + 3]
        feeds[name] = split_attention(x1, x2, x3, **kw)
    return sess.run(None, feeds)[:n_out]


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT's optimizer warnings are about its own rewrites, not ours
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def require(results: Sequence[Parity]) -> None:
    """Fail the export loudly when any parity check failed."""
    bad = [p for p in results if not p.ok]
    if bad:
        raise S2Error("parity check failed, no files written: " + "; ".join(p.line() for p in bad))
