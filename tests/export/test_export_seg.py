"""s2export on YOLOv5 v7.0 segmentation checkpoints: both outputs, both flavours, FP16, INT8, --nms.

The references are the outputs of v7.0's own forward stored beside each checkpoint
(tests/data/yolov5/README.md): detections (B, N, 5 + nc + nm) with raw mask coefficients, and
prototypes (B, nm, H/4, W/4). The written files are run on that stored input and must agree with
them, independently of the parity check s2export ran on its own image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import paths
import pytest
import torch

from s2trt.errors import S2Error
from s2trt.export import parity
from s2trt.export.cli import main
from s2trt.export.fp16 import FP16_TOL, decode_nodes, elem_types
from s2trt.export.pipeline import ExportRequest, ExportState, run
from s2trt.meta import ModelMeta, read_onnx_meta

DATA = paths.DATA / "yolov5" / "v7.0"
SEG = [e for e in json.loads((DATA / "index.json").read_text()) if e["segment"]]
NC, NM = 3, 32


def _reference(entry: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    ref = torch.load(DATA / f"{entry['name']}.ref.pt", map_location="cpu", weights_only=True)
    x = torch.rand(entry["input_shape"], generator=torch.Generator().manual_seed(entry["input_seed"]))
    return x.numpy(), [ref["output0"].numpy(), ref["output1"].numpy()]


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


def _export(tmp: Path, entry: dict, **kw) -> ExportState:
    weights = tmp / f"{entry['name']}.pt"
    shutil.copy(DATA / weights.name, weights)
    req = ExportRequest(weights=weights, imgsz=[entry["imgsz"]], output=tmp / "out", **kw)
    return run(ExportState(req))


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory) -> ExportState:
    """yolov5s-seg (S2Attention right before Segment), dynamic batch, FP16, both flavours."""
    entry = next(e for e in SEG if e["name"] == "yolov5s-seg")
    return _export(tmp_path_factory.mktemp("seg16"), entry, batch=None, fp16=True)


@pytest.mark.parametrize("entry", SEG, ids=[e["name"] for e in SEG])
def test_both_flavours_match_the_releases_own_forward(tmp_path, entry):
    x, (det, proto) = _reference(entry)
    state = _export(tmp_path, entry, batch=x.shape[0])
    assert [a.flavour for a in state.artifacts] == ["portable", "tensorrt"]
    checked = [p for p in state.parity if p.name.endswith(("(output0)", "(output1)"))]
    assert len(checked) == 4 and all(p.ok and p.rel <= parity.FP32_TOL for p in checked)
    for art in state.artifacts:
        model = onnx.load(str(art.path))
        shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
        assert shapes == {"output0": list(det.shape), "output1": list(proto.shape)}
        assert det.shape[-1] == 5 + NC + NM and proto.shape[1:] == (NM, x.shape[2] // 4, x.shape[3] // 4)
        meta = read_onnx_meta(art.path)
        assert (meta.task, meta.nm) == ("segment", NM)
        outs = (parity.run_ort_with_plugin if art.flavour == "tensorrt" else parity.run_ort)(model, x)
        assert len(outs) == 2
        for name, out, ref in zip(("detections", "prototypes"), outs, (det, proto), strict=True):
            assert _rel(out, ref) <= parity.FP32_TOL, (art.flavour, name)
        # The coefficients on their own scale: the check above is dominated by the box pixels.
        coef = slice(5 + NC, None)
        assert _rel(outs[0][..., coef], det[..., coef]) <= parity.FP32_TOL


def test_fp16_coefficients_stay_fp32_and_proto_runs_in_fp16(fp16_export):
    """The decode island (every node after the head's last convolutions) holds the coefficients,
    and Proto's convolutions and upsample are FP16; both graph outputs stay FP32."""
    x, (det, proto) = _reference(next(e for e in SEG if e["name"] == "yolov5s-seg"))
    for art in fp16_export.artifacts:
        model = onnx.load(str(art.path))
        types = elem_types(model)
        assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
        island = set(decode_nodes(model))
        producer = {o: n for n in model.graph.node for o in n.output}
        for node in model.graph.node:
            if node.name in island:
                assert all(types[t] != onnx.TensorProto.FLOAT16 for t in node.output if t), node.name
        # Walk back from the prototypes: the last Conv and everything before it up to Proto's
        # input is FP16 (its weights too).
        node, convs = producer["output1"], 0
        while convs < 3:
            if node.op_type == "Conv":
                convs += 1
                assert types[node.output[0]] == onnx.TensorProto.FLOAT16, node.name
                assert types[node.input[1]] == onnx.TensorProto.FLOAT16, node.name
            node = producer[node.input[0]]
        outs = (parity.run_ort_with_plugin if art.flavour == "tensorrt" else parity.run_ort)(
            parity.fp16_storage(model), x)
        assert _rel(outs[0], det) <= FP16_TOL and _rel(outs[1], proto) <= FP16_TOL
        coef = slice(5 + NC, None)
        assert _rel(outs[0][..., coef], det[..., coef]) <= FP16_TOL
        # A mask is sigmoid(coefficients . prototypes) thresholded at 0.5: FP16's error must not
        # move the logits of the stored reference by more than a small fraction of their scale.
        logits = np.einsum("bnk,bkp->bnp", outs[0][..., coef], outs[1].reshape(2, NM, -1))
        want = np.einsum("bnk,bkp->bnp", det[..., coef].astype(np.float64), proto.reshape(2, NM, -1))
        assert _rel(logits, want) <= FP16_TOL


def test_dynamic_batch_seg_graph_runs_at_any_batch(fp16_export):
    portable = onnx.load(str(fp16_export.artifacts[0].path))
    dims = {o.name: o.type.tensor_type.shape.dim[0].dim_param for o in portable.graph.output}
    assert dims == {"output0": "batch", "output1": "batch"}
    x, _ = parity.sample_input([64, 64], 3)
    ref = parity.run_torch_outputs(fp16_export.loaded.model, x)
    outs = parity.run_ort(parity.fp16_storage(portable), x)
    assert [o.shape for o in outs] == [r.shape for r in ref]
    assert all(_rel(o, r) <= FP16_TOL for o, r in zip(outs, ref, strict=True))


def test_nms_is_refused_for_seg_with_one_line(tmp_path, capsys):
    weights = tmp_path / "yolov5n-seg.pt"
    shutil.copy(DATA / weights.name, weights)
    assert main([str(weights), "--imgsz", "64", "--nms", "--onnx-only", "-o", str(tmp_path / "o"),
                 "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--nms is not supported for segmentation" in err[0], err
    assert not (tmp_path / "o").exists()


def _polygon_data(root: Path) -> Path:
    """The demo images as a train split and a val split labelled with polygons (YOLO seg format)."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for img in sorted((parity.demo_assets() / "images").glob("*.jpg")):
            shutil.copy(img, root / "images" / split / img.name)
            (root / "labels" / split / f"{img.stem}.txt").write_text(
                "0 0.1 0.1 0.5 0.15 0.45 0.6 0.12 0.5\n2 0.6 0.55 0.9 0.6 0.8 0.95\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\n"
                                    "names: [class0, class1, class2]\n")
    return root / "data.yaml"


def test_int8_qdq_graphs_build_for_seg_and_report_mask_map(tmp_path):
    """Q/DQ graphs of a seg model keep both outputs, their prototypes and boxes follow FP32's, and
    the accuracy report on polygon labels gives the mask mAP of every graph."""
    from s2trt.calib.pipeline import Int8Options, int8_fp16_path, quantize_export
    from s2trt.calib.report import format_table

    entry = next(e for e in SEG if e["name"] == "yolov5n-seg")
    state = _export(tmp_path, entry, batch=1, plugin=False)
    fp32 = state.artifacts[0].path
    out = fp32.with_name("int8.onnx")
    result = quantize_export(fp32, out, Int8Options(calib=str(_polygon_data(tmp_path / "data"))))
    for path in (out, int8_fp16_path(out)):
        model = onnx.load(str(path))
        assert [o.name for o in model.graph.output] == ["output0", "output1"]
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        assert (read_onnx_meta(path).task, read_onnx_meta(path).nm) == ("segment", NM)
    x, _ = parity.sample_input([64, 64], 1)
    ref = parity.run_ort(onnx.load(str(fp32)), x)
    got = parity.run_ort(onnx.load(str(out)), x)
    # INT8 rounds every activation to 1/255 of its range: a broken graph is off by order 1.
    assert _rel(got[1], ref[1]) < 0.1 and _rel(got[0][..., :4], ref[0][..., :4]) < 0.1
    rows = result["accuracy"]["rows"]
    assert {"fp32", "fp16", "int8-percentile"} <= set(rows)
    assert all(0 <= r["mask_mAP50-95"] <= r["mask_mAP50"] <= 1 for r in rows.values())
    assert "mask mAP50" in format_table(result["accuracy"])


def test_task_and_mask_count_must_agree_in_metadata():
    good = ModelMeta(names=["a"], imgsz=[64, 64], task="segment", nm=NM).to_props()
    assert ModelMeta.from_props(good).nm == NM
    for forged in ({"nm": "0"}, {"task": '"detect"', "nm": "32"}, {"nm": "-1"}, {"task": "classify"}):
        with pytest.raises(S2Error, match="metadata"):
            ModelMeta.from_props({**good, **forged})
