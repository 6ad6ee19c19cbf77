"""Checkpoints written by yolov5's own code, v5.0-v7.0, against that release's own forward.

tests/data/yolov5/<tag>/ holds, per family of that release's yamls, a checkpoint pickled by its
train.py (segment/train.py for seg; `best.pt` after its strip_optimizer(), one train-format file per
release) with S2Attention inserted in the layer list, and `<name>.ref.pt`: the output of that
release's forward on its own loaded checkpoint, for a seeded torch.rand input
(tests/data/yolov5/README.md says how they were made). Neither yolov5's code nor a copy of it
is needed here: the loader rebuilds the model from s2trt's own modules and must agree with the
stored output.
"""

from __future__ import annotations

import json

import pytest
import torch
from paths import DATA

from s2trt.models import load_checkpoint
from s2trt.models.s2attention import S2Attention
from s2trt.models.yolo import Segment

YOLOV5 = DATA / "yolov5"
CASES = [(tag.name, entry) for tag in sorted(YOLOV5.iterdir()) if tag.is_dir()
         for entry in json.loads((tag / "index.json").read_text())]
RTOL = 1e-4  # of the largest output value; C3TR's attention is not bit-exact (docs/DESIGN.md §1)


def _id(case: tuple[str, dict]) -> str:
    return f"{case[0]}-{case[1]['name']}"


def _reference(tag: str, entry: dict) -> dict[str, torch.Tensor]:
    """The stored outputs, and the input they were computed from (torch.rand from a seed)."""
    ref = torch.load(YOLOV5 / tag / f"{entry['name']}.ref.pt", map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(entry["input_seed"])
    return {"input": torch.rand(entry["input_shape"], generator=gen), **ref}


def test_every_release_and_family_is_covered():
    families = {(t, e["name"]) for t, e in CASES}
    assert {t for t, _ in families} == {"v5.0", "v6.0", "v6.1", "v6.2", "v7.0"}
    for kind in ("6", "p2", "ghost", "transformer", "seg"):
        assert any(kind in n for _, n in families), kind
    for scale in "nsmlx":
        assert any(n in (f"yolov5{scale}", f"yolov5{scale}-seg") for _, n in families), scale
    for stem in ("yolov5-panet", "yolov5-fpn", "yolov3-tiny", "yolov5s-LeakyReLU"):
        assert any(n == stem for _, n in families), stem
    assert {t for t, e in CASES if not e["stripped"]} == {"v5.0", "v6.0", "v6.1", "v6.2", "v7.0"}
    size = sum(p.stat().st_size for p in YOLOV5.rglob("*") if p.is_file())
    assert size < 9 << 20  # the fixtures stay small enough for the repository


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_checkpoint_matches_its_releases_forward(case):
    tag, entry = case
    lm = load_checkpoint(YOLOV5 / tag / f"{entry['name']}.pt")
    assert lm.info["release"] == tag
    assert lm.info["key"] == ("model" if entry["stripped"] else "ema")
    assert lm.half and lm.names == [f"class{i}" for i in range(3)]
    blocks = [i for i, m in enumerate(lm.model.model) if isinstance(m, S2Attention)]
    assert blocks == entry["s2attention_at"]
    ref = _reference(tag, entry)
    with torch.no_grad():
        out = lm.model(ref["input"])
    outs = out if isinstance(out, tuple) else (out,)
    assert isinstance(lm.model.model[-1], Segment) == entry["segment"] == (len(outs) == 2)
    for i, o in enumerate(outs):
        want = ref[f"output{i}"]
        assert o.shape == want.shape
        err = (o - want).abs().max() / want.abs().max()
        assert err <= RTOL, f"output{i}: {err:.2e} of the largest value"


# Every module kind once: v5.0's (Focus, SPP, BottleneckCSP, TransformerBlock, ZeroPad2d, MaxPool2d)
# and v7.0's (GhostConv, C3Ghost, C3TR, Segment, Proto, a yaml activation); v6.x adds none.
EXPORT_CASES = [c for c in CASES if c[0] in ("v5.0", "v7.0")]


@pytest.mark.parametrize("case", EXPORT_CASES, ids=[_id(c) for c in EXPORT_CASES])
def test_portable_onnx_has_no_scatternd_and_matches(case):
    """The export path of s2export (portable graph) on every module kind: no in-place remnants,
    and ONNX Runtime agrees with the stored output of the release's own forward."""
    import onnxruntime as ort

    from s2trt.export.onnx_export import export_portable, op_counts

    tag, entry = case
    lm = load_checkpoint(YOLOV5 / tag / f"{entry['name']}.pt")
    ref = _reference(tag, entry)
    x = ref["input"]
    onnx_model = export_portable(lm, x.shape[2:], batch=x.shape[0])
    assert "ScatterND" not in op_counts(onnx_model)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert len(outs) == (2 if entry["segment"] else 1)
    for i, o in enumerate(outs):
        want = ref[f"output{i}"]
        err = (torch.from_numpy(o) - want).abs().max() / want.abs().max()
        assert err <= RTOL, f"output{i}: {err:.2e} of the largest value"
