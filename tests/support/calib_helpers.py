"""Small inputs for the calib tests (a random-weight YOLOv5n-S2 ONNX, synthetic labelled images) and
the graph walks their Q/DQ checks share."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

NC = 5


def export_random_model(path: Path, imgsz: int = 160, dynamic: bool = False, seed: int = 0) -> Path:
    """yolov5n-s2 with random weights, exported as the exporter's portable graph would be
    (fused BN, opset 17, input `images`, output `output0`, s2trt metadata)."""
    import onnx
    import torch

    from s2trt.meta import ModelMeta
    from s2trt.models.yolo import DetectionModel, fuse_conv_bn

    torch.manual_seed(seed)
    model = fuse_conv_bn(DetectionModel("yolov5n-s2", nc=NC).eval())
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 3, imgsz, imgsz), str(path), opset_version=17,
                          input_names=["images"], output_names=["output0"], dynamic_axes=axes, dynamo=False)
    m = onnx.load(str(path))
    meta = ModelMeta(names=[f"c{i}" for i in range(NC)], imgsz=[imgsz, imgsz],
                     batch="dynamic" if dynamic else 1)
    for k, v in meta.to_props().items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, str(path))
    return path


def draw_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """A noisy background with 1-3 filled rectangles; (image, [(cls, x1, y1, x2, y2)])."""
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        bw, bh = int(rng.integers(w // 6, w // 2)), int(rng.integers(h // 6, h // 2))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        c = int(rng.integers(0, NC))
        cv2.rectangle(img, (x1, y1), (x1 + bw, y1 + bh), tuple(int(v) for v in rng.integers(120, 256, 3)), -1)
        boxes.append((c, x1, y1, x1 + bw, y1 + bh))
    return img, boxes


def write_images(folder: Path, n: int, seed: int = 0, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = (96, 128) if i % 2 else (128, 128)  # two shapes, so letterboxing is exercised
        img, _ = draw_scene(rng, h, w)
        p = folder / f"{prefix}_{i:03d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def write_dataset(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """A YOLO dataset: images/<split>, labels/<split>, data.yaml with `path` and `names`."""
    import yaml

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, boxes = draw_scene(rng, 128, 128)
            cv2.imwrite(str(root / "images" / split / f"{i:03d}.png"), img)
            rows = [f"{c} {(x1 + x2) / 256:.6f} {(y1 + y2) / 256:.6f} {(x2 - x1) / 128:.6f} "
                    f"{(y2 - y1) / 128:.6f}" for c, x1, y1, x2, y2 in boxes]
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(rows) + "\n")
    data = {"path": str(root), **{s: f"images/{s}" for s in counts}, "nc": NC,
            "names": [f"c{i}" for i in range(NC)]}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def write_video(path: Path, n: int, size: tuple[int, int] = (96, 128)) -> Path:
    """Frame i is a flat grey of level 10 * i (MJPG keeps flat frames near their level)."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for i in range(n):
        writer.write(np.full((h, w, 3), 10 * i, np.uint8))
    writer.release()
    return path


def readers(model: Any) -> dict[str, list]:
    """Tensor name -> the nodes of an ONNX graph that read it."""
    out: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def concat_quantizers(model: Any) -> dict[str, set[tuple[float, int]]]:
    """For each Concat that reads dequantized tensors: the (scale, zero point) of every Q and DQ
    around it (its inputs' pairs and the Qs reading its output). TensorRT elides the Concat only when
    these compare equal (developer guide, "Q/DQ Layer-Placement Recommendations")."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    after = readers(model)
    out: dict[str, set[tuple[float, int]]] = {}
    for cat in (n for n in model.graph.node if n.op_type == "Concat"):
        dqs = [prod[t] for t in cat.input if t in prod and prod[t].op_type == "DequantizeLinear"
               and prod[t].input[0] not in inits]
        if dqs:
            nodes = [*dqs, *(prod[d.input[0]] for d in dqs),
                     *(r for r in after.get(cat.output[0], []) if r.op_type == "QuantizeLinear")]
            out[cat.name] = {(float(inits[n.input[1]]), int(inits[n.input[2]])) for n in nodes}
    return out
