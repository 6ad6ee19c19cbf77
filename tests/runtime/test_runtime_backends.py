"""ONNX Runtime and PyTorch backends on a tiny random-weight YOLOv5n-S2, and the runtime's import diet."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from paths import DEMO_ASSETS
from runtime_support import IMGSZ, NAMES, export_onnx, scene, tiny_models

from s2trt.detect.boxes import postprocess, scale_boxes
from s2trt.detect.letterbox import preprocess
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.runtime.backends.ort import OrtBackend, choose_providers


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def ort_backend(models):
    return OrtBackend(models["onnx"], device="cpu")


@pytest.fixture(scope="module")
def torch_backend(models):
    pytest.importorskip("torch")
    from s2trt.runtime.backends.pytorch import TorchBackend

    return TorchBackend(models["pt"], IMGSZ, device="cpu")


def frames(n, start=0):
    return [scene(i * 13 + start, 240 + 16 * (i % 3), 320) for i in range(n)]


def match_detections(a, b, atol=1.0, unmatched=0):
    """Pair boxes one to one (same class, every coordinate within atol px, score within 1e-3).

    `unmatched` (a fraction) allows a few unpaired boxes: two correct backends differ by ~1e-5, which
    can flip a box lying exactly on an NMS or threshold decision of a random-weight model.
    """
    dist = np.abs(a[:, None, :4] - b[None, :, :4]).max(2)
    dist[a[:, None, 5] != b[None, :, 5]] = np.inf
    dist[np.abs(a[:, None, 4] - b[None, :, 4]) > 1e-3] = np.inf
    pairs, used = 0, set()
    for i in np.argsort(-a[:, 4], kind="stable"):
        j = next((j for j in np.argsort(dist[i]) if dist[i, j] <= atol and j not in used), None)
        if j is not None:
            used.add(j)
            pairs += 1
    limit = int(unmatched * max(len(a), len(b)))
    assert len(a) - pairs <= limit and len(b) - pairs <= limit, (len(a), len(b), pairs)
    return pairs


def test_ort_reads_s2trt_metadata(ort_backend):
    assert ort_backend.meta.names == NAMES
    assert tuple(ort_backend.imgsz) == IMGSZ
    assert ort_backend.layout == "raw" and not ort_backend.spec.fixed
    assert "CPUExecutionProvider" in ort_backend.name


def test_ort_and_pytorch_agree(ort_backend, torch_backend):
    imgs = frames(4)
    x, infos = preprocess(imgs, IMGSZ)
    raw_o, raw_t = ort_backend.infer(x), torch_backend.infer(x)
    # FP32 on both sides, same FP16-rounded weights: differences are summation order only.
    np.testing.assert_allclose(raw_o["output0"], raw_t["output0"], rtol=1e-3, atol=2e-3)
    do, dt = postprocess(raw_o, DetectOptions(0.7, 0.45)), postprocess(raw_t, DetectOptions(0.7, 0.45))
    assert all(10 < len(d) < 300 for d in do)  # real NMS work, below the max_det cap
    for a, b, info in zip(do, dt, infos, strict=True):
        match_detections(scale_boxes(a, info), scale_boxes(b, info))


def test_fixed_batch_model_pads_partial_batches(models, ort_backend):
    fixed = OrtBackend(tiny_models(batch=4)["onnx"], device="cpu")
    assert fixed.spec.fixed and fixed.max_batch == 4
    x, _ = preprocess(frames(6, start=3), IMGSZ)
    got = fixed.infer(x)["output0"]
    want = ort_backend.infer(x)["output0"]
    assert got.shape[0] == 6
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_non_s2trt_onnx_is_refused(tmp_path, models):
    import onnx

    m = onnx.load(str(models["onnx"]))
    del m.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(m, str(path))
    with pytest.raises(S2Error, match="not exported by s2trt"):
        OrtBackend(path, device="cpu")


def test_metadata_that_contradicts_the_graph(tmp_path, models):
    import onnx

    m = onnx.load(str(models["onnx"]))
    for p in m.metadata_props:
        if p.key == "imgsz":
            p.value = "[640, 640]"
    path = tmp_path / "edited.onnx"
    onnx.save(m, str(path))
    with pytest.raises(S2Error, match=r"input is 128x160 but its metadata says imgsz \[640, 640\]"):
        OrtBackend(path, device="cpu")


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx")
    with pytest.raises(S2Error, match=r"cannot load .*bad\.onnx with onnxruntime"):
        OrtBackend(bad, device="cpu")
    with pytest.raises(S2Error, match="ONNX model not found"):
        OrtBackend(tmp_path / "missing.onnx")


def test_wrong_input_size_is_one_clear_error(ort_backend):
    with pytest.raises(S2Error, match=r"takes \(batch, 3, 128, 160\)"):
        ort_backend.infer(np.zeros((1, 3, 128, 128), np.float32))


def nms_graph_model(tmp_path):
    """A graph with the docs/DESIGN.md §3 NMS outputs: two fixed boxes whose scores come from the image
    mean."""
    import onnx
    from onnx import TensorProto, helper

    from s2trt.meta import ModelMeta

    h, w = IMGSZ
    k = 4
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),  # (B,)
        helper.make_node("Unsqueeze", ["m", "ax1"], ["m1"]),  # (B,1)
        helper.make_node("Mul", ["m1", "score_pattern"], ["det_scores"]),  # (B,K)
        helper.make_node("Shape", ["images"], ["shp"]),
        helper.make_node("Slice", ["shp", "zero", "one"], ["b"]),
        helper.make_node("Concat", ["b", "one"], ["nshape"], axis=0),
        helper.make_node("Expand", ["two_i32", "nshape"], ["num_dets"]),
        helper.make_node("Concat", ["b", "kdims"], ["bshape"], axis=0),
        helper.make_node("Expand", ["box_pattern", "bshape"], ["det_boxes"]),
        helper.make_node("Concat", ["b", "kdim"], ["cshape"], axis=0),
        helper.make_node("Expand", ["cls_pattern", "cshape"], ["det_classes"]),
    ]
    inits = [
        helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("kdims", TensorProto.INT64, [2], [k, 4]),
        helper.make_tensor("kdim", TensorProto.INT64, [1], [k]),
        helper.make_tensor("two_i32", TensorProto.INT32, [1, 1], [2]),
        helper.make_tensor("score_pattern", TensorProto.FLOAT, [1, k], [1.0, 0.5, 0, 0]),
        helper.make_tensor("box_pattern", TensorProto.FLOAT, [1, k, 4],
                           [10, 20, 50, 60, 64, 32, 96, 64] + [0] * 8),
        helper.make_tensor("cls_pattern", TensorProto.INT32, [1, k], [3, 1, 0, 0]),
    ]
    graph = helper.make_graph(
        nodes, "nms", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, h, w])],
        [helper.make_tensor_value_info("num_dets", TensorProto.INT32, ["B", 1]),
         helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["B", k, 4]),
         helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, ["B", k]),
         helper.make_tensor_value_info("det_classes", TensorProto.INT32, ["B", k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = ModelMeta(names=list(NAMES), imgsz=list(IMGSZ), batch="dynamic",
                     nms={"max_det": k, "iou_thres": 0.45, "conf_thres": 0.25})
    for key, v in meta.to_props().items():
        model.metadata_props.add(key=key, value=v)
    onnx.checker.check_model(model)
    path = tmp_path / "nms.onnx"
    onnx.save(model, str(path))
    return path


def test_in_graph_nms_model(tmp_path):
    backend = OrtBackend(nms_graph_model(tmp_path), device="cpu")
    assert backend.layout == "nms"
    white, grey = np.full((128, 160, 3), 255, np.uint8), np.full((128, 160, 3), 128, np.uint8)
    x, _ = preprocess([white, grey], IMGSZ)
    dets = postprocess(backend.infer(x), DetectOptions(conf_thres=0.3))
    # white: mean 1.0 -> scores 1.0 and 0.5 (both kept); grey: mean 0.502 -> 0.502 and 0.251 (< 0.3)
    assert [len(d) for d in dets] == [2, 1]
    np.testing.assert_allclose(dets[0], [[10, 20, 50, 60, 1.0, 3], [64, 32, 96, 64, 0.5, 1]], atol=1e-6)
    assert [len(d) for d in postprocess(backend.infer(x), DetectOptions(0.3, classes=[1]))] == [1, 0]


def test_choose_providers():
    assert choose_providers(["CPUExecutionProvider"], "auto") == ["CPUExecutionProvider"]
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(cuda, "auto") == cuda
    assert choose_providers(cuda, "cpu") == ["CPUExecutionProvider"]
    with pytest.raises(S2Error, match="onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_runtime_imports_no_heavy_framework():
    code = (
        "import sys, contextlib, io\n"
        "import s2trt.runtime, s2trt.runtime.cli as cli\n"
        "import s2trt.runtime.pipeline, s2trt.runtime.inputs.sources, s2trt.runtime.outputs.sinks\n"
        "import s2trt.runtime.backends.base, s2trt.runtime.backends.trt, s2trt.trt.cuda_mem\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0\n"
        "assert 'usage: s2infer' in out.getvalue()\n"
        "heavy = sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx', 'cuda', 'pycuda')\n"
        "               if m in sys.modules)\n"
        "print(','.join(heavy))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


@pytest.mark.gpu
def test_ort_cuda_and_torch_cuda_agree_with_cpu(models, ort_backend):
    import onnxruntime as ort

    x, _ = preprocess(frames(2), IMGSZ)
    cpu = ort_backend.infer(x)["output0"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        gpu = OrtBackend(models["onnx"], device="cuda").infer(x)["output0"]
        np.testing.assert_allclose(gpu, cpu, rtol=1e-2, atol=1e-2)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        from s2trt.runtime.backends.pytorch import TorchBackend

        tb = TorchBackend(models["pt"], IMGSZ, device="cuda")
        np.testing.assert_allclose(tb.infer(x)["output0"], cpu, rtol=1e-2, atol=1e-2)


SAMPLE = DEMO_ASSETS / "sample.mp4"
DEMO_PT = SAMPLE.with_name("demo.pt")


def cli_detections(tmp_path, name, *argv):
    from s2trt.runtime.cli import main

    out = tmp_path / f"{name}.jsonl"
    assert main([*map(str, argv), str(SAMPLE), "--vid-stride", "10", "--no-save", "--save-json", str(out),
                 "-q"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    return {r["frame"]: np.column_stack([np.array(r["boxes"]).reshape(-1, 4), r["scores"], r["class_ids"]])
            for r in recs}


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_ort_and_pytorch_give_the_same_detections_on_the_sample_video(tmp_path, which):
    """s2infer --onnx and s2infer --weights, end to end on every 10th frame of the bundled sample video."""
    if not SAMPLE.is_file():
        pytest.skip("demo/assets/sample.mp4 is not in this checkout")
    if which == "tiny":
        # random weights put some boxes on NMS/threshold decisions: allow 2% unpaired (see match_detections)
        pt, onnx_path, conf, slack = tiny_models()["pt"], tiny_models()["onnx"], "0.7", 0.02
    else:
        if not DEMO_PT.is_file():
            pytest.skip("demo/assets/demo.pt is not in this checkout yet")
        from s2trt.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(DEMO_PT)  # exported here, at the demo's training size (320)
        onnx_path = export_onnx(loaded.model, loaded.names, (320, 320), tmp_path / "demo.onnx")
        pt, conf, slack = DEMO_PT, "0.25", 0.01
    h, w = OrtBackend(onnx_path, device="cpu").imgsz
    ort_dets = cli_detections(tmp_path, "ort", "--onnx", onnx_path, "--conf-thres", conf)
    # one torch thread: OpenMP's two spinning threads are 10x slower on a shared 2-core CI machine
    pt_dets = cli_detections(tmp_path, "pt", "--weights", pt, "--imgsz", h, w, "--device", "cpu",
                             "--conf-thres", conf, "--threads", "1")
    assert sorted(ort_dets) == sorted(pt_dets) == list(range(0, 250, 10))
    # boxes are rounded to 0.01 px in the JSONL; 1 px in a 640x480 frame is a tight tolerance
    a = np.concatenate([np.column_stack([d, np.full(len(d), f)]) for f, d in ort_dets.items()])
    b = np.concatenate([np.column_stack([d, np.full(len(d), f)]) for f, d in pt_dets.items()])
    # the frame number goes into the class column so boxes pair only within their own frame
    a[:, 5] += 1000 * a[:, 6]
    b[:, 5] += 1000 * b[:, 6]
    total = match_detections(a[:, :6], b[:, :6], atol=1.0, unmatched=slack)
    assert total >= len(ort_dets)  # at least one box per frame on average: the comparison has content


def test_options_an_in_graph_nms_cannot_apply_are_named(tmp_path, capsys):
    from s2trt.runtime.cli import main

    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.full((128, 160, 3), 255, np.uint8))
    model = str(nms_graph_model(tmp_path))
    assert main(["--onnx", model, str(img), "--no-save", "--iou-thres", "0.7", "--agnostic-nms"]) == 0
    err = capsys.readouterr().err
    assert "--iou-thres 0.7 (exported with 0.45)" in err and "--agnostic-nms" in err
    assert main(["--onnx", model, str(img), "--no-save", "--conf-thres", "0.5"]) == 0
    assert "cannot apply" not in capsys.readouterr().err  # a stricter threshold still filters here
