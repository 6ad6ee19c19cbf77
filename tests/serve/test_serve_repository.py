"""Model repository export (every config.pbtxt parsed by Triton's own protobuf) and the serving logic
that needs no server: request handling, output layout, finding the server binary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2trt.detect.boxes import from_nms_outputs, to_layout
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.meta import ModelMeta, write_json_atomic
from s2trt.serve import repository as R
from s2trt.serve.detector import Detector, frames_from_inputs, request_options

NAMES = ["a", "b", "c"]


@pytest.fixture
def mc():
    """Triton's model_config protobuf: only the config tests need tritonclient."""
    return pytest.importorskip("tritonclient.grpc.model_config_pb2",
                               reason="needs tritonclient (s2trt[triton])")


def parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


ROWS = 1234  # output0's rows: any count, which the repository takes from the graph


def write_onnx(path: Path, meta: ModelMeta, output0: list | None = None, name: str = "output0") -> Path:
    """A graph with s2trt's outputs declared (its one node is never run)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, *meta.imgsz])
    dims = output0 or ["batch", ROWS, 5 + len(meta.names)]
    y = helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["images"], [name])],
                                                "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_model(tmp_path):
    return write_onnx(tmp_path / "m.onnx", ModelMeta(names=NAMES, imgsz=[160, 192]))


def tensors(cfg, kind):
    return {t.name: (t.data_type, list(t.dims)) for t in getattr(cfg, kind)}


@pytest.mark.parametrize("cores, instances, want", [
    (1, None, (1, 1)), (2, None, (2, 1)), (8, None, (8, 1)), (12, None, (8, 1)), (16, None, (8, 2)),
    (64, None, (8, 8)), (16, 2, (2, 8)), (2, 4, (4, 1))])
def test_cpu_instances_and_threads_from_the_cores(cores, instances, want):
    assert R.cpu_layout(cores, instances) == want
    got_instances, threads = want
    assert got_instances * threads <= max(cores, got_instances)  # never more threads than cores


def test_export_defaults_come_from_the_cores_here_and_are_logged(mc, onnx_model, tmp_path, monkeypatch,
                                                                  caplog):
    monkeypatch.setattr(R, "usable_cores", lambda: 16)
    with caplog.at_level("INFO", logger=R.__name__):
        R.export_repository(onnx_model, tmp_path / "a", R.RepoOptions())
    cfg = parse_config(tmp_path / "a" / R.DETECTOR / "config.pbtxt")
    assert [g.count for g in cfg.instance_group] == [8]
    assert cfg.parameters["cpu_threads"].string_value == "2"
    assert "8 x 2 ONNX Runtime thread(s), from the 16 cores here" in caplog.text
    R.export_repository(onnx_model, tmp_path / "b", R.RepoOptions(instances=3, cpu_threads=0))  # as given
    cfg = parse_config(tmp_path / "b" / R.DETECTOR / "config.pbtxt")
    assert [g.count for g in cfg.instance_group] == [3] and cfg.parameters["cpu_threads"].string_value == "0"


def test_detector_config_parses_with_triton_protobuf(mc, onnx_model, tmp_path):
    opts = R.RepoOptions(max_batch_size=4, instances=3, queue_delay_us=500, max_det=50, conf_thres=0.3,
                         python_path=["/opt/site-packages", "/x/y"])
    assert R.export_repository(onnx_model, tmp_path / "repo", opts) == [R.DETECTOR]
    model_dir = tmp_path / "repo" / R.DETECTOR
    cfg = parse_config(model_dir / "config.pbtxt")
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == (R.DETECTOR, "python", 4)
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(3, mc.ModelInstanceGroup.KIND_CPU)]
    inputs = {t.name: t for t in cfg.input}
    assert inputs["IMAGE"].data_type == mc.TYPE_UINT8 and list(inputs["IMAGE"].dims) == [-1]
    assert inputs["IMAGE"].optional and inputs["IMAGE"].allow_ragged_batch
    assert inputs["FRAME"].data_type == mc.TYPE_UINT8 and list(inputs["FRAME"].dims) == [-1, -1, 3]
    assert tensors(cfg, "output") == {"num_dets": (mc.TYPE_INT32, [1]), "det_boxes": (mc.TYPE_FP32, [50, 4]),
                                      "det_scores": (mc.TYPE_FP32, [50]),
                                      "det_classes": (mc.TYPE_INT32, [50])}
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["python_path"] == "/opt/site-packages:/x/y"
    assert params["conf_thres"] == "0.3" and params["max_det"] == "50"
    assert params["model_file"] == "model.onnx"
    assert ModelMeta.from_props(json.loads(params["s2trt_meta"])).names == NAMES
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_model.read_bytes()
    assert "class TritonPythonModel" in (model_dir / "1" / "model.py").read_text()


def test_gpu_instances_and_ensemble_chain(mc, onnx_model, tmp_path):
    opts = R.RepoOptions(kind="gpu", gpus=[0, 2], instances=2, ensemble=True)
    names = R.export_repository(onnx_model, tmp_path / "repo", opts)
    assert names == [R.DETECTOR, R.PREPROCESS, R.ENGINE, R.POSTPROCESS, R.ENSEMBLE]
    cfgs = {n: parse_config(tmp_path / "repo" / n / "config.pbtxt") for n in names}
    g = cfgs[R.DETECTOR].instance_group[0]
    assert (g.count, g.kind, list(g.gpus)) == (2, mc.ModelInstanceGroup.KIND_GPU, [0, 2])
    # An ONNX model: the engine step is a Python step on ONNX Runtime, so the ensemble runs anywhere.
    assert cfgs[R.ENGINE].backend == "python" and cfgs[R.ENGINE].parameters["stage"].string_value == "network"
    ens = cfgs[R.ENSEMBLE]
    assert ens.platform == "ensemble" and (tmp_path / "repo" / R.ENSEMBLE / "1").is_dir()
    # Every step maps only tensors its model has, and reads only what the ensemble input or an
    # earlier step produced; the ensemble's outputs all come from some step.
    available = {t.name for t in ens.input}
    for step in ens.ensemble_scheduling.step:
        model = cfgs[step.model_name]
        assert set(step.input_map) == {t.name for t in model.input}
        assert set(step.output_map) <= {t.name for t in model.output}
        assert set(step.input_map.values()) <= available
        available |= set(step.output_map.values())
    assert {t.name for t in ens.output} <= available
    pre, post = cfgs[R.PREPROCESS], cfgs[R.POSTPROCESS]
    assert tensors(pre, "output")["images"] == (mc.TYPE_FP32, [3, 160, 192])
    assert tensors(post, "input")["output0"] == (mc.TYPE_FP32, [ROWS, 8])


def test_output_dims_the_graph_only_names_stay_open_and_a_contradiction_is_refused(mc, tmp_path):
    meta = ModelMeta(names=NAMES, imgsz=[64, 64])
    named = write_onnx(tmp_path / "n.onnx", meta, ["batch", "anchors", "values"])
    R.export_repository(named, tmp_path / "repo", R.RepoOptions(ensemble=True))
    post = parse_config(tmp_path / "repo" / R.POSTPROCESS / "config.pbtxt")
    assert tensors(post, "input")["output0"] == (mc.TYPE_FP32, [-1, 5 + len(NAMES)])
    wrong = write_onnx(tmp_path / "w.onnx", meta, ["batch", ROWS, 5 + len(NAMES) + 32])
    with pytest.raises(S2Error, match=r"output0 is \[1234, 40\] past the batch, not \(rows, 5 \+ 3 classes"):
        R.export_repository(wrong, tmp_path / "repo2")
    assert not (tmp_path / "repo2").exists()
    # A graph that ends in its own NMS has no output0: the layout comes from the metadata.
    nms = write_onnx(tmp_path / "nms.onnx", ModelMeta(names=NAMES, imgsz=[64, 64], nms={"max_det": 20}),
                     ["batch", 20, 4], name="det_boxes")
    R.export_repository(nms, tmp_path / "repo3", R.RepoOptions(ensemble=True))
    engine = parse_config(tmp_path / "repo3" / R.ENGINE / "config.pbtxt")
    assert tensors(engine, "output")["det_boxes"] == (mc.TYPE_FP32, [20, 4])


def test_engine_gives_tensorrt_plan_step_and_plugin_hint(mc, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    meta = ModelMeta(names=NAMES, imgsz=[320, 320], flavour="tensorrt", plugin="S2SplitAttention",
                     nms={"max_det": 100, "topk": 1000}, batch="dynamic")
    write_json_atomic(tmp_path / "m.engine.json", meta.to_props())
    opts = R.RepoOptions(ensemble=True, plugin_lib="/opt/s2trt/libs2trt_plugins.so")  # kind: gpu for engines
    R.export_repository(engine, tmp_path / "repo", opts)
    plan = parse_config(tmp_path / "repo" / R.ENGINE / "config.pbtxt")
    assert plan.platform == "tensorrt_plan" and not plan.backend
    assert tensors(plan, "input") == {"images": (mc.TYPE_FP32, [3, 320, 320])}
    assert tensors(plan, "output")["det_boxes"] == (mc.TYPE_FP32, [100, 4])
    assert (tmp_path / "repo" / R.ENGINE / "1" / "model.plan").read_bytes() == b"not really an engine"
    det = parse_config(tmp_path / "repo" / R.DETECTOR / "config.pbtxt")
    assert det.parameters["model_file"].string_value == "model.plan"
    assert [g.kind for g in det.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert det.parameters["plugin_lib"].string_value == "/opt/s2trt/libs2trt_plugins.so"
    assert (tmp_path / "repo" / R.DETECTOR / "1" / "model.plan.json").is_file()
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "--backend-config=tensorrt,plugins=\"/opt/s2trt/libs2trt_plugins.so\"" in readme
    assert "LD_PRELOAD=/opt/s2trt/libs2trt_plugins.so" in readme


def test_fixed_batch_engine_cannot_feed_the_ensemble(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    write_json_atomic(tmp_path / "m.engine.json", ModelMeta(names=NAMES, imgsz=[64, 64], batch=1).to_props())
    with pytest.raises(S2Error, match=r"fixed batch of 1.*--dynamic"):
        R.export_repository(engine, tmp_path / "repo", R.RepoOptions(ensemble=True))
    assert R.export_repository(engine, tmp_path / "repo") == [R.DETECTOR]  # the runtime pads fixed batches


def test_names_with_quotes_survive_the_text_format(mc, tmp_path):
    odd = ['say "hi"', "back\\slash", "café"]
    model = write_onnx(tmp_path / "m.onnx", ModelMeta(names=odd, imgsz=[64, 64]))
    R.export_repository(model, tmp_path / "repo")
    cfg = parse_config(tmp_path / "repo" / R.DETECTOR / "config.pbtxt")
    assert ModelMeta.from_props(json.loads(cfg.parameters["s2trt_meta"].string_value)).names == odd


@pytest.mark.parametrize("bad, message", [
    (R.RepoOptions(kind="tpu"), "instance kind"),
    (R.RepoOptions(max_batch_size=0), ">= 1"),
    (R.RepoOptions(conf_thres=1.5), "within 0..1"),
])
def test_bad_options_are_user_errors(onnx_model, tmp_path, bad, message):
    with pytest.raises(S2Error, match=message):
        R.export_repository(onnx_model, tmp_path / "repo", bad)
    assert not (tmp_path / "repo").exists()


def test_unservable_models_are_refused(tmp_path):
    with pytest.raises(S2Error, match="not found"):
        R.export_repository(tmp_path / "missing.onnx", tmp_path / "repo")
    trt_graph = write_onnx(tmp_path / "t.onnx", ModelMeta(names=NAMES, imgsz=[64, 64], flavour="tensorrt"))
    with pytest.raises(S2Error, match="TensorRT flavour"):
        R.export_repository(trt_graph, tmp_path / "repo")
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"x")
    with pytest.raises(S2Error, match="no sidecar"):
        R.export_repository(engine, tmp_path / "repo")


class FakeBackend:
    """Outputs one box per image at a position taken from the image's mean, so results are traceable."""

    def __init__(self, imgsz=(64, 64)):
        self.meta = ModelMeta(names=NAMES, imgsz=list(imgsz))
        self.imgsz, self.max_batch, self.name, self.calls = imgsz, 8, "fake", []

    def infer(self, batch):
        self.calls.append(len(batch))
        out = np.zeros((len(batch), 2, 5 + len(NAMES)), np.float32)
        for i, x in enumerate(batch):
            c = float(x.mean()) * 40 + 10
            out[i, 0, :8] = [c, c, 8, 8, 0.9, 0.1, 0.9, 0.1]  # class 1, score 0.81
        return {"output0": out}

    def close(self):
        pass


def frame(value, h=64, w=64):
    return np.full((h, w, 3), value, np.uint8)


def test_run_requests_batches_good_requests_and_fails_bad_ones_alone():
    import cv2

    backend = FakeBackend()
    det = Detector(backend, DetectOptions(max_det=5))
    png = np.frombuffer(cv2.imencode(".png", frame(200))[1].tobytes(), np.uint8)[None]
    garbage = np.frombuffer(b"not an image", np.uint8)[None]
    results = det.run_requests([
        (None, np.stack([frame(0), frame(255)]), {}),
        (garbage, None, {}),
        (png, None, {"conf_thres": 0.9}),  # the box scores 0.81: filtered for this request only
        (None, None, {}),
        (None, frame(0)[None], {"conf_thres": 2}),
        (png, None, {}),
    ])
    assert backend.calls == [4]  # one network call for the four good images
    assert [r["num_dets"].ravel().tolist() if isinstance(r, dict) else None for r in results] == \
        [[1, 1], None, [0], None, None, [1]]
    assert "not an image whose size can be checked" in str(results[1]) and "exactly one" in str(results[3])
    assert "within 0..1" in str(results[4])
    boxes = from_nms_outputs(*(results[0][k] for k in ("num_dets", "det_boxes", "det_scores", "det_classes")))
    # Frame 0: mean 0 -> box centre 10; frame 1: mean 1 -> centre 50 (same letterbox: 64x64, ratio 1).
    np.testing.assert_allclose(boxes[0][0], [6, 6, 14, 14, 0.81, 1], atol=1e-5)
    np.testing.assert_allclose(boxes[1][0], [46, 46, 54, 54, 0.81, 1], atol=1e-5)
    assert results[0]["det_boxes"].shape == (2, 5, 4)


def test_frames_from_inputs_shapes():
    with pytest.raises(S2Error, match="uint8 of shape"):
        frames_from_inputs(None, np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(S2Error, match="empty"):
        frames_from_inputs(None, np.zeros((0, 4, 4, 3), np.uint8))
    with pytest.raises(S2Error, match="holds no image"):
        frames_from_inputs(np.zeros((0, 10), np.uint8), None)
    assert len(frames_from_inputs(None, np.zeros((3, 4, 5, 3), np.uint8))) == 3


def test_a_frame_over_the_pixel_limit_is_refused_from_its_shape():
    """Before anything is made from it: a read-only broadcast view stands for a frame no test could
    afford, so a copy or a letterbox of it would fail differently (or run out of memory)."""
    huge = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (1, 10_000, 10_000, 3))
    with pytest.raises(S2Error, match="10000x10000 = 100,000,000 pixels is over the server's limit of 99,"):
        frames_from_inputs(None, huge, max_pixels=99_999_999)
    assert len(frames_from_inputs(None, np.zeros((1, 20, 30, 3), np.uint8), max_pixels=600)) == 1
    with pytest.raises(S2Error, match="31x20 = 620 pixels"):
        frames_from_inputs(None, np.zeros((1, 20, 31, 3), np.uint8), max_pixels=600)


def test_to_layout_pads_and_truncates():
    dets = [np.array([[1, 2, 3, 4, 0.9, 2], [5, 6, 7, 8, 0.8, 0]], np.float32), np.zeros((0, 6), np.float32)]
    out = to_layout(dets, 1)
    assert out["num_dets"].tolist() == [[1], [0]] and out["num_dets"].dtype == np.int32
    assert out["det_boxes"].tolist() == [[[1, 2, 3, 4]], [[0, 0, 0, 0]]]
    assert out["det_classes"].dtype == np.int32 and out["det_classes"].tolist() == [[2], [0]]


def test_request_options_cap_max_det_and_parse_strings():
    s = request_options(DetectOptions(max_det=10), {"max_det": "50", "agnostic": "true", "iou_thres": "0.6",
                                                    "unrelated": 1})
    assert (s.max_det, s.agnostic, s.iou_thres, s.conf_thres) == (10, True, 0.6, 0.25)
    for bad in ({"conf_thres": 5}, {"iou_thres": "nan"}, {"max_det": "many"}, {"max_det": float("inf")},
                {"max_det": 0}):
        with pytest.raises(S2Error, match="bad request parameters"):
            request_options(DetectOptions(), bad)


def test_finding_the_server_binary(tmp_path, monkeypatch):
    from s2trt.serve import server

    fake = tmp_path / "tritonserver"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(server.ENV_BINARY, str(fake))
    found = server.find_tritonserver()
    assert found.binary == fake and not found.bundled  # a plain binary: its own backends folder
    monkeypatch.setenv(server.ENV_BINARY, str(tmp_path / "nope"))
    with pytest.raises(S2Error, match="does not exist"):
        server.find_tritonserver()
    monkeypatch.delenv(server.ENV_BINARY)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert server.find_tritonserver().binary == fake
    with pytest.raises(S2Error, match="not a Triton model repository"):
        server.TritonServer(tmp_path)


def test_s2serve_export_command(mc, onnx_model, tmp_path, capsys):
    from s2trt.serve.cli import main

    assert main(["export", str(onnx_model), str(tmp_path / "repo"), "--instances", "2", "--ensemble",
                 "--python-path", "/p"]) == 0
    assert "s2serve " in capsys.readouterr().out
    cfg = parse_config(tmp_path / "repo" / R.DETECTOR / "config.pbtxt")
    assert cfg.instance_group[0].count == 2 and cfg.parameters["python_path"].string_value == "/p"
    assert main(["export", str(tmp_path / "none.onnx"), str(tmp_path / "r2")]) == 1
    assert "model not found" in capsys.readouterr().err


def _plugin_engine(folder: Path, library: Path, digest_of: Path | None = None,
                   name: str | None = None) -> Path:
    """An engine whose sidecar records its plugin library as s2export does (file name + SHA-256)."""
    import hashlib

    engine = folder / "m.engine"
    engine.write_bytes(b"plan")
    side = {**ModelMeta(names=NAMES, imgsz=[64, 64], flavour="tensorrt", plugin="S2SplitAttention",
                        batch="dynamic").to_props(),
            "plugin_library": name or library.name,
            "plugin_sha256": hashlib.sha256((digest_of or library).read_bytes()).hexdigest()}
    write_json_atomic(folder / "m.engine.json", side)
    return engine


@pytest.fixture
def no_plugin_elsewhere(monkeypatch):
    from s2trt.trt import plugin_lib

    monkeypatch.delenv(plugin_lib.PLUGIN_ENV, raising=False)
    monkeypatch.setattr(plugin_lib, "shipped_plugin_library", lambda: None)
    return plugin_lib


def test_engine_plugin_library_is_copied_where_the_served_runtime_finds_it(tmp_path, no_plugin_elsewhere):
    built = tmp_path / "build"
    built.mkdir()
    lib = built / "libs2trt_plugins.so"
    lib.write_bytes(b"\x7fELF the plugin the engine was built with")
    side_dir = tmp_path / "engine"
    side_dir.mkdir()
    engine = _plugin_engine(side_dir, lib)
    R.export_repository(engine, tmp_path / "repo", R.RepoOptions(plugin_lib=str(lib), ensemble=True))
    for model in (R.DETECTOR, R.ENGINE):
        version = tmp_path / "repo" / model / "1"
        assert (version / lib.name).read_bytes() == lib.read_bytes()
    # The served detector's runtime (s2trt.trt.plugin_lib, the only rule it follows without
    # --plugin-lib) picks the copy by the digest the copied sidecar records (it loads a private copy
    # of those bytes, so only the bytes are compared).
    version = tmp_path / "repo" / R.DETECTOR / "1"
    side = json.loads((version / "model.plan.json").read_text())
    # The operator vouches for the repository s2serve export wrote from a library of theirs.
    found = no_plugin_elsewhere.engine_plugin_library(version / "model.plan", side, None, trust_bundle=True)
    assert found is not None and found.read_bytes() == lib.read_bytes()
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert f'plugins="{lib}"' in readme  # --plugin-lib given: the hint names it


def test_plugin_library_found_through_the_shipped_build_and_named_in_the_hint(tmp_path, monkeypatch,
                                                                              no_plugin_elsewhere):
    lib = tmp_path / "libs2trt_plugins.so"
    lib.write_bytes(b"\x7fELF shipped")
    monkeypatch.setattr(no_plugin_elsewhere, "shipped_plugin_library", lambda: lib)
    (tmp_path / "e").mkdir()
    engine = _plugin_engine(tmp_path / "e", lib)
    R.export_repository(engine, tmp_path / "repo", R.RepoOptions(ensemble=True))
    copy = tmp_path / "repo" / R.ENGINE / "1" / lib.name
    assert copy.read_bytes() == lib.read_bytes()
    assert f'plugins="{copy}"' in (tmp_path / "repo" / "README.md").read_text()


def test_plugin_library_with_another_digest_is_not_copied(tmp_path, caplog, no_plugin_elsewhere):
    lib = tmp_path / "libs2trt_plugins.so"
    lib.write_bytes(b"\x7fELF rebuilt since")
    other = tmp_path / "other.so"
    other.write_bytes(b"\x7fELF the one the engine was built with")
    (tmp_path / "e").mkdir()
    engine = _plugin_engine(tmp_path / "e", lib, digest_of=other)
    with caplog.at_level("WARNING"):
        R.export_repository(engine, tmp_path / "repo", R.RepoOptions(plugin_lib=str(lib)))
    assert not (tmp_path / "repo" / R.DETECTOR / "1" / lib.name).exists()
    assert "SHA-256" in caplog.text


@pytest.mark.parametrize("name", ["model.py", "../model.plan", "model.plan.json", "libx.so\n.py"])
def test_sidecar_cannot_name_a_file_of_the_model_folder(tmp_path, name, no_plugin_elsewhere):
    (tmp_path / "e").mkdir()
    lib = tmp_path / "e" / Path(name).name
    lib.write_bytes(b"print('a sidecar wrote the served code')")
    engine = _plugin_engine(tmp_path / "e", lib, name=name)
    R.export_repository(engine, tmp_path / "repo", R.RepoOptions(plugin_lib=str(lib)))
    version = tmp_path / "repo" / R.DETECTOR / "1"
    assert "class TritonPythonModel" in (version / "model.py").read_text()
    assert (version / "model.plan").read_bytes() == b"plan"
    assert sorted(p.name for p in version.iterdir()) == ["model.plan", "model.plan.json", "model.py"]


def test_the_copied_library_is_the_bytes_whose_digest_was_checked(tmp_path, monkeypatch, no_plugin_elsewhere):
    """A rebuild that replaces the library between the digest check and the copy must not put other
    bytes into the repository (the served runtime would then refuse them by their digest)."""
    import hashlib

    lib = tmp_path / "libs2trt_plugins.so"
    lib.write_bytes(b"\x7fELF the one the engine was built with")
    (tmp_path / "e").mkdir()
    engine = _plugin_engine(tmp_path / "e", lib)
    recorded = json.loads((tmp_path / "e" / "m.engine.json").read_text())["plugin_sha256"]
    real_read = Path.read_bytes

    def read_then_rebuilt(self):
        data = real_read(self)
        if self == lib:
            lib.write_bytes(b"\x7fELF rebuilt meanwhile")
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_rebuilt)
    R.export_repository(engine, tmp_path / "repo", R.RepoOptions(plugin_lib=str(lib)))
    copy = tmp_path / "repo" / R.DETECTOR / "1" / lib.name
    assert hashlib.sha256(real_read(copy)).hexdigest() == recorded
    assert real_read(lib) == b"\x7fELF rebuilt meanwhile"  # the rebuild happened after the one read


def test_s2serve_export_where_nothing_can_be_written_is_one_line(onnx_model, tmp_path, capsys):
    from s2trt.serve.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["export", str(onnx_model), str(blocker / "repo")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"s2serve: error: output folder {blocker / 'repo'} is not a folder ({blocker} is a file)")


def test_a_write_failure_midway_is_one_line_and_leaves_no_repository(onnx_model, tmp_path, monkeypatch,
                                                                     capsys):
    """A read-only file system or a full disk while the models are written (the check before writing
    passed): exit 1 with the reason, and the folder it created is gone."""
    from s2trt.serve.cli import main

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(R, "_write_model", full)
    repo = tmp_path / "new" / "repo"
    assert main(["export", str(onnx_model), str(repo)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"s2serve: error: cannot write the model repository {repo}: No space left on device")
    assert not (tmp_path / "new").exists()
