"""In-graph NMS (standard ONNX ops) against the runtime's host NMS on the same raw outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from s2trt.detect.boxes import from_nms_outputs, non_max_suppression
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.export import onnx_export, parity
from s2trt.export.nms import NMS_OUTPUTS, NMSConfig, append_nms, nms_graph


def clustered_raw(batch: int, n: int, nc: int, seed: int) -> np.ndarray:
    """YOLOv5-like raw outputs: boxes around a few centres (heavy overlap), random scores."""
    rng = np.random.default_rng(seed)
    raw = np.zeros((batch, n, 5 + nc), np.float32)
    centres = rng.uniform(40, 600, (batch, 30, 2))
    pick = rng.integers(0, 30, (batch, n))
    raw[..., :2] = np.take_along_axis(centres, pick[..., None].repeat(2, -1), 1)
    raw[..., :2] += rng.normal(0, 5, (batch, n, 2))
    raw[..., 2:4] = rng.uniform(16, 90, (batch, n, 2))
    raw[..., 4] = rng.uniform(0, 1, (batch, n)) ** 2
    raw[..., 5:] = rng.uniform(0, 1, (batch, n, nc))
    return raw


def run(model: onnx.ModelProto, raw: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: raw})


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g[:, :4], w[:, :4], rtol=0, atol=1e-3)
        np.testing.assert_allclose(g[:, 4], w[:, 4], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(g[:, 5], w[:, 5])


@pytest.mark.parametrize(("cfg", "nc"), [(NMSConfig(), 80),
                                          (NMSConfig(DetectOptions(0.4, 0.6, max_det=20)), 3),
                                          (NMSConfig(DetectOptions(0.1, 0.3), topk=2000), 1)])
def test_matches_host_nms(cfg, nc):
    raw = clustered_raw(3, 1500, nc, seed=nc)
    raw[1, :, 4] = 0.0  # an image without detections
    outs = run(nms_graph(1500, nc, cfg), raw)
    k = cfg.options.max_det
    assert [o.shape for o in outs] == [(3, 1), (3, k, 4), (3, k), (3, k)]
    assert outs[0].dtype == np.int32 and outs[3].dtype == np.int32
    want = non_max_suppression(raw, cfg.options.conf_thres, cfg.options.iou_thres, max_det=k)
    assert sum(len(w) for w in want) > 20  # the case is not trivial
    assert_same(from_nms_outputs(*outs), want)
    # Padding: zeros past num_dets, classes -1.
    for b, n in enumerate(outs[0][:, 0]):
        assert not outs[1][b, n:].any() and not outs[2][b, n:].any() and (outs[3][b, n:] == -1).all()


def test_topk_prefilter_equals_host_nms_on_the_same_candidates():
    """With more candidates than the TopK keeps, the graph is host NMS over the top-k boxes."""
    cfg = NMSConfig(DetectOptions(0.05, 0.45, max_det=1500), topk=400)
    raw = clustered_raw(2, 3000, 4, seed=7)
    outs = run(nms_graph(3000, 4, cfg), raw)
    assert outs[1].shape == (2, 1500, 4)  # padded to max_det although topk < max_det
    score = (raw[..., 5:] * raw[..., 4:5]).max(-1)
    top = np.argsort(-score, axis=1, kind="stable")[:, :400]
    pre = np.take_along_axis(raw, top[..., None], 1)
    assert_same(from_nms_outputs(*outs), non_max_suppression(pre, 0.05, 0.45, max_det=1500))


def test_nms_graph_uses_standard_ops_only():
    model = nms_graph(100, 5, NMSConfig())
    onnx.checker.check_model(model, full_check=True)
    ops = onnx_export.op_counts(model)
    assert ops["NonMaxSuppression"] == 1 and ops["TopK"] == 2
    assert not set(ops) & (onnx_export.FORBIDDEN_OPS | {"EfficientNMS_TRT", "BatchedNMS_TRT"})
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)


@pytest.mark.parametrize("opset", [17, 18])
def test_reducemax_form_follows_the_opset(opset):
    raw = clustered_raw(1, 200, 2, seed=1)
    outs = run(nms_graph(200, 2, NMSConfig(), opset=opset), raw)
    assert_same(from_nms_outputs(*outs), non_max_suppression(raw, 0.25, 0.45))


def test_bad_thresholds_are_refused():
    with pytest.raises(S2Error, match=r"within 0\.\.1"):
        NMSConfig(DetectOptions(conf_thres=1.5))
    with pytest.raises(S2Error, match="max-det"):
        NMSConfig(DetectOptions(max_det=0))


@pytest.mark.parametrize("options", [DetectOptions(classes=[1]), DetectOptions(agnostic=True)])
def test_options_the_graph_cannot_apply_are_refused(options):
    with pytest.raises(S2Error, match="in-graph NMS keeps every class"):
        NMSConfig(options)


def test_model_with_nms_agrees_with_host_nms_on_its_raw_output():
    import torch
    from export_helpers import loaded_model

    lm = loaded_model("yolov5n-s2", nc=4, seed=3)
    detect = lm.model.model[-1]
    with torch.no_grad():  # random weights detect nothing: raise the objectness priors
        for conv in detect.m:
            conv.bias.view(detect.na, -1)[:, 4] += 4.0
    portable = onnx_export.export_portable(lm, [128, 160], batch=None)
    x, _ = parity.sample_input([128, 160], 2)
    raw = parity.run_ort(portable, x)[0]
    onnx_export.set_output_shape(portable, "output0", ["batch", *raw.shape[1:]])
    cfg = NMSConfig(DetectOptions(conf_thres=0.005, iou_thres=0.5, max_det=50))
    with_nms = append_nms(portable, cfg)
    assert [o.name for o in with_nms.graph.output] == list(NMS_OUTPUTS)
    outs = parity.run_ort(with_nms, x)
    want = non_max_suppression(raw, 0.005, 0.5, max_det=50)
    assert sum(len(w) for w in want) > 0
    assert_same(from_nms_outputs(*outs), want)
