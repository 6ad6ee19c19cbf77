"""Serving every YOLOv5 family: the model repository sized from the graph (P6, P2, segmentation), and a
segmentation model's masks through the Triton model, equal to the local runtime's.

The models are checkpoints written by real yolov5 releases (tests/data/yolov5), exported by s2export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import paths
import pytest
import serve_fixtures as F

from s2trt.detect.boxes import postprocess
from s2trt.detect.letterbox import preprocess
from s2trt.detect.masks import to_frames
from s2trt.detect.options import DetectOptions
from s2trt.export.cli import main as s2export
from s2trt.meta import read_onnx_meta, write_json_atomic
from s2trt.runtime.backends.ort import OrtBackend
from s2trt.runtime.backends.triton import MASK_OUTPUTS, Answer, _answer
from s2trt.serve import repository as R
from s2trt.serve.detector import Detector

YOLOV5 = paths.DATA / "yolov5"
CONF = 0.001  # random weights: a low threshold gives detections to compare
MAX_DET = 100
# (release, checkpoint, export size): P6 (strides 8-64), P2 (strides 4-32), segmentation (+ output1)
FAMILIES = {"p6": ("v6.2", "yolov5s6", (128, 192)), "p2": ("v7.0", "yolov5-p2", (64, 96)),
            "seg": ("v7.0", "yolov5s-seg", (64, 96))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> its portable ONNX (dynamic batch), exported once per module on first use."""
    done: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in done:
            tag, name, imgsz = FAMILIES[family]
            tmp = tmp_path_factory.mktemp(family)
            shutil.copy(YOLOV5 / tag / f"{name}.pt", tmp / f"{family}.pt")
            assert s2export([str(tmp / f"{family}.pt"), "--imgsz", *map(str, imgsz), "--dynamic",
                             "--no-plugin", "--onnx-only", "-q"]) == 0
            done[family] = tmp / f"{family}.onnx"
        return done[family]
    return get


def parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def dims(cfg, kind: str) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in getattr(cfg, kind)}


def ort_shapes(onnx_path: Path) -> dict[str, list[int]]:
    """What ONNX Runtime actually returns past the batch, for one image."""
    backend = OrtBackend(onnx_path, device="cpu")
    out = backend.infer(np.zeros((1, 3, *backend.imgsz), np.float32))
    backend.close()
    return {k: list(v.shape[1:]) for k, v in out.items()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_repository_sizes_the_outputs_from_the_graph(family, exported, tmp_path):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (s2trt[triton])")
    onnx_path = exported(family)
    meta = read_onnx_meta(onnx_path)
    want = ort_shapes(onnx_path)
    h, w = meta.imgsz
    # Three anchors on strides 8, 16 and 32 (what the repository assumed before) is wrong for these.
    if family != "seg":
        assert want["output0"][0] != sum(3 * (h // s) * (w // s) for s in (8, 16, 32))
    R.export_repository(onnx_path, tmp_path / "repo", R.RepoOptions(ensemble=True, instances=1, cpu_threads=1,
                                                                     max_det=MAX_DET))
    cfgs = {n: parse_config(tmp_path / "repo" / n / "config.pbtxt")
            for n in (R.DETECTOR, R.ENGINE, R.POSTPROCESS, R.ENSEMBLE)}
    assert dims(cfgs[R.ENGINE], "output") == want
    post_in = dims(cfgs[R.POSTPROCESS], "input")
    assert {k: post_in[k] for k in want} == want
    nm = meta.nm
    answer = dims(cfgs[R.DETECTOR], "output")
    assert answer == dims(cfgs[R.ENSEMBLE], "output")
    expected = {"num_dets": [1], "det_boxes": [MAX_DET, 4], "det_scores": [MAX_DET], "det_classes": [MAX_DET]}
    if family == "seg":
        assert nm == 32 and want["output1"] == [nm, h // 4, w // 4]
        expected |= {"det_coefficients": [MAX_DET, nm], "det_input_boxes": [MAX_DET, 4],
                     "prototypes": want["output1"], "letterbox": [5]}
    assert answer == expected  # a detection model answers the NMS layout alone, as before

    assert_engine_configs(onnx_path, want, tmp_path)


def assert_engine_configs(onnx_path: Path, want: dict[str, list[int]], tmp_path: Path) -> None:
    """An engine built from `onnx_path`: its sidecar names the ONNX, whose graph gives the shapes;
    without it the rows and the prototypes' size are left to the engine (-1), which the metadata
    cannot give (it records the largest stride only)."""
    meta = read_onnx_meta(onnx_path)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    side = {**meta.to_props(), "onnx_file": str(onnx_path)}
    write_json_atomic(tmp_path / "m.engine.json", side)
    R.export_repository(engine, tmp_path / "plan", R.RepoOptions(ensemble=True, instances=1))
    assert dims(parse_config(tmp_path / "plan" / R.ENGINE / "config.pbtxt"), "output") == want
    write_json_atomic(tmp_path / "m.engine.json", {**side, "onnx_file": str(tmp_path / "gone.onnx")})
    R.export_repository(engine, tmp_path / "plan2", R.RepoOptions(ensemble=True, instances=1))
    cfgs = {n: parse_config(tmp_path / "plan2" / n / "config.pbtxt") for n in (R.ENGINE, R.DETECTOR)}
    nm = meta.nm
    assert dims(cfgs[R.ENGINE], "output") == {"output0": [-1, want["output0"][1]],
                                              **({"output1": [nm, -1, -1]} if nm else {})}
    if nm:
        assert dims(cfgs[R.DETECTOR], "output")["prototypes"] == [nm, -1, -1]
        # Every size the engine can answer fits the open dims, the one it does answer included.
        assert all(c in (-1, g) for c, g in zip(dims(cfgs[R.ENGINE], "output")["output1"], want["output1"],
                                                strict=True))


def p2_seg_onnx(folder: Path) -> Path:
    """A P2 segmentation model exported by s2export: the v7.0 P2 checkpoint's config with a Segment
    head (as YOLOv5's Segment takes it), its weights a state_dict beside that yaml."""
    import torch
    import yaml

    from s2trt.models.checkpoint import load_checkpoint
    from s2trt.models.yolo import DetectionModel

    cfg = dict(load_checkpoint(YOLOV5 / "v7.0" / "yolov5-p2.pt").cfg)
    *head, last = [list(layer) for layer in cfg["head"]]
    cfg["head"] = [*head, [last[0], last[1], "Segment", [cfg["nc"], cfg["anchors"], 32, 256]]]
    model = DetectionModel(cfg)
    assert [int(s) for s in model.stride] == [4, 8, 16, 32]
    (folder / "p2-seg.yaml").write_text(yaml.safe_dump(cfg))
    torch.save(model.state_dict(), folder / "p2-seg.pt")
    assert s2export([str(folder / "p2-seg.pt"), "--cfg", str(folder / "p2-seg.yaml"), "--imgsz",
                     *map(str, FAMILIES["p2"][2]), "--dynamic", "--no-plugin", "--onnx-only", "-q"]) == 0
    return folder / "p2-seg.onnx"


def test_p2_segmentation_prototypes_are_half_the_input_not_a_quarter(tmp_path):
    """Proto upsamples the head's first level x2: H/2 on a P2 head. The repository takes that from the
    graph, and leaves it open (-1) for an engine whose ONNX is gone, where fixed H/4 dims would keep
    Triton's TensorRT backend from loading the model."""
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (s2trt[triton])")
    onnx_path = p2_seg_onnx(tmp_path)
    want = ort_shapes(onnx_path)
    h, w = FAMILIES["p2"][2]
    assert want["output1"] == [32, h // 2, w // 2]
    R.export_repository(onnx_path, tmp_path / "repo", R.RepoOptions(ensemble=True, instances=1, cpu_threads=1,
                                                                     max_det=MAX_DET))
    assert dims(parse_config(tmp_path / "repo" / R.ENGINE / "config.pbtxt"), "output") == want
    assert dims(parse_config(tmp_path / "repo" / R.DETECTOR / "config.pbtxt"), "output")["prototypes"] \
        == want["output1"]
    assert_engine_configs(onnx_path, want, tmp_path)


def frames() -> list[np.ndarray]:
    """Frames of other sizes and aspect ratios than the model's, so the letterbox pads and boxes clip."""
    img = cv2.imread(str(sorted((paths.DEMO_ASSETS / "images").glob("*.jpg"))[0]))
    return [cv2.resize(img, (150, 97)), cv2.resize(img, (61, 140)), *F.sample_images(2, seed=5)]


def local_result(onnx_path: Path, frame: np.ndarray):
    """What s2infer --onnx makes of the frame: its detections in the frame and their masks."""
    backend = OrtBackend(onnx_path, device="cpu")
    x, infos = preprocess([frame], backend.imgsz, **backend.meta.preprocess_kwargs())
    outputs = backend.infer(x)
    backend.close()
    dets, masks = to_frames(postprocess(outputs, DetectOptions(conf_thres=CONF, max_det=MAX_DET)), outputs,
                            infos, backend.imgsz)
    return dets[0], masks[0]


def assert_same_masks(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.x, g.y) == (w.x, w.y)
        np.testing.assert_array_equal(g.bits, w.bits)


class Result:
    """A tritonclient InferResult stand-in over the served model's outputs of one request."""

    def __init__(self, outputs: dict[str, np.ndarray]):
        self.outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs[name]


def test_the_detectors_answer_rebuilds_the_local_masks(exported):
    """The served model's code without a server: frame in, answer out, masks rebuilt on the client
    through detect/masks.py, equal to the local runtime's number for number."""
    onnx_path = exported("seg")
    det = Detector(OrtBackend(onnx_path, device="cpu"), DetectOptions(conf_thres=CONF, max_det=MAX_DET))
    total = 0
    for frame in frames():
        (out,) = det.run_requests([(None, frame[None], {})])
        assert not isinstance(out, Exception)
        assert set(MASK_OUTPUTS) <= set(out)
        got = _answer(Result(out), masks=True)
        want_dets, want_masks = local_result(onnx_path, frame)
        np.testing.assert_array_equal(got.dets, want_dets)
        assert_same_masks(got.masks(det.backend.imgsz), want_masks)
        total += sum(m.area for m in want_masks)
    assert total > 0  # the comparison is not between empty masks
    # A detection model answers no mask outputs, and its Answer has no masks.
    plain = Detector(OrtBackend(exported("p2"), device="cpu"), DetectOptions(conf_thres=CONF))
    (out,) = plain.run_requests([(None, frames()[0][None], {})])
    assert set(out) == {"num_dets", "det_boxes", "det_scores", "det_classes"}
    assert _answer(Result(out), masks=False).masks((64, 96)) is None
    assert Answer(np.zeros((0, 6), np.float32)).masks((64, 96)) is None


# --- a real tritonserver -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_server(exported, tmp_path_factory):
    if not F.have_tritonserver():
        pytest.skip(F.NO_SERVER)
    from s2trt.serve import server as S

    repo = tmp_path_factory.mktemp("seg_repo")
    R.export_repository(exported("seg"), repo, R.RepoOptions(ensemble=True, instances=1, cpu_threads=1,
                                                             max_det=MAX_DET, conf_thres=CONF))
    with S.TritonServer(repo, log_path=tmp_path_factory.mktemp("log") / "triton.log") as s:
        yield s


@pytest.mark.parametrize("model_name", [R.DETECTOR, R.ENSEMBLE])
def test_served_masks_equal_the_local_runtimes(seg_server, exported, model_name):
    from s2trt.runtime.backends.triton import TritonClient

    onnx_path = exported("seg")
    images = frames()
    # PNG: the server decodes the same pixels the local runtime reads; the ensemble takes files only.
    files = [cv2.imencode(".png", f)[1].tobytes() for f in images]
    with TritonClient(seg_server.endpoints.grpc_url, model_name) as client:
        assert client.masks
        answers = client.answers(files)
        boxes_only = client.detect(files[:1])
    for frame, got in zip(images, answers, strict=True):
        want_dets, want_masks = local_result(onnx_path, frame)
        np.testing.assert_array_equal(got.dets, want_dets)
        assert_same_masks(got.masks(client.meta.imgsz), want_masks)
    np.testing.assert_array_equal(boxes_only[0], answers[0].dets)


def test_s2infer_triton_writes_the_masks_s2infer_onnx_writes(seg_server, exported, tmp_path):
    from s2trt.runtime.cli import main as s2infer

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames()):
        cv2.imwrite(str(folder / f"{i}.png"), f)
    records = {}
    for name, model in (("onnx", ["--onnx", str(exported("seg"))]),
                        ("triton", ["--triton", seg_server.endpoints.grpc_url])):
        out = tmp_path / f"{name}.jsonl"
        assert s2infer([*model, str(folder), "--conf-thres", str(CONF), "--max-det", str(MAX_DET),
                        "--save-json", str(out), "-q"]) == 0
        records[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records["onnx"]) == len(frames())
    assert sum(len(r["segments"]) for r in records["onnx"]) > 0
    assert records["triton"] == records["onnx"]  # boxes, scores, classes and segments, line for line


def test_the_python_api_on_triton_gives_the_local_results(seg_server, exported):
    import s2trt

    images = frames()
    options = {"conf_thres": CONF, "max_det": MAX_DET}
    with s2trt.Detector(exported("seg"), **options) as local, \
            s2trt.Detector(f"triton://{seg_server.endpoints.grpc_url}", **options) as remote:
        want, got = local(images), remote(images)
    assert sum(int(w.masks.sum()) for w in want) > 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.detections, w.detections)
        np.testing.assert_array_equal(g.masks, w.masks)
        assert g.to_json() == w.to_json()
