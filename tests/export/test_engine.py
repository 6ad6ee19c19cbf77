"""Engine builder and TensorRT compatibility logic, without TensorRT.

A small fake TensorRT module (tests/support/fakes.py, FakeTRT) records what the builder asks for; like the
real 11.x it has no precision flags, so the 11 path cannot use them by accident. The real modules' API
is checked in test_trt_api.py, the fake's against it in test_fakes.py.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from c_library import c_library
from fakes import FORMATS, PINNED, FakeBuilderConfig, FakeLayer, FakeNetwork, FakeTRT
from onnx_files import write_onnx

from s2trt.errors import MissingDependencyError, S2Error
from s2trt.export import engine as eng
from s2trt.export.engine import EngineOptions, build_engine, manual_build_hint, resolve_profile
from s2trt.meta import ModelMeta, sidecar_path
from s2trt.trt import gpu, plugin_lib, sidecar, versions

NAMES = ["person", "car"]


# ------------------------------------------------------------------------------ fake TensorRT

def _write_island_onnx(path: Path, meta: ModelMeta, plugin: bool = False) -> Path:
    """An FP32 graph with a decode island: /m/Mul_1 -> conv -> /m/Sigmoid -> /m/Mul -> /m/Reshape, the
    Reshape's shape from /m/Shape (an INT64 shape computation inside the island). With `plugin`,
    an s2trt::S2SplitAttention node (unknown to ONNX shape inference) comes before conv."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnx_graphsurgeon")
    h, np_ = onnx.helper, pytest.importorskip("numpy")
    inits = [onnx.numpy_helper.from_array(np_.ones((3, 3, 1, 1), np_.float32), "w"),
             onnx.numpy_helper.from_array(np_.array(2.0, np_.float32), "two"),
             onnx.numpy_helper.from_array(np_.array(1.0, np_.float32), "one")]
    nodes = [h.make_node("Mul", ["images", "one"], ["x1"], name="/m/Mul_1"),
             h.make_node("Conv", ["x1", "w"], ["c"], name="conv"),
             h.make_node("Sigmoid", ["c"], ["s"], name="/m/Sigmoid"),
             h.make_node("Mul", ["s", "two"], ["m"], name="/m/Mul"),
             h.make_node("Shape", ["c"], ["sh"], name="/m/Shape"),
             h.make_node("Reshape", ["m", "sh"], ["output0"], name="/m/Reshape")]
    shape = ["batch", 3, 64, 64]
    opsets = [h.make_opsetid("", 17)]
    if plugin:
        nodes[0].input[0] = "p"
        nodes.insert(0, h.make_node("S2SplitAttention", ["images"], ["p"], name="plugin", domain="s2trt"))
        opsets.append(h.make_opsetid("s2trt", 1))
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, shape)],
                         [h.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, shape)], inits)
    model = h.make_model(graph, opset_imports=opsets)
    h.set_model_props(model, meta.to_props())
    onnx.save(model, str(path))
    return path


# trtexec --layerPrecisions names of that graph's FP32 island (/m/Mul exactly: /m/Mul_1 is no island node).
ISLAND_PATTERNS = ["/m/Mul", "/m/Reshape*", "/m/Sigmoid*"]


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    meta = ModelMeta(names=NAMES, imgsz=[64, 64], batch="dynamic")
    return _write_island_onnx(tmp_path / "model.onnx", meta)


@pytest.fixture(autouse=True)
def _known_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "gpu_info", lambda device=0: ("Orin", "8.7"))
    # With cuda-python installed and no GPU, cudaSetDevice fails before the fake TensorRT is reached.
    monkeypatch.setattr(gpu, "select_device", lambda device: None)


def _pinned(trt: FakeTRT) -> list[str]:
    """Layers the builder ran in FP32 with FP32 outputs (ILayer::setPrecision and setOutputType)."""
    return [layer.name for layer in trt.network._layers
            if layer.pinned == "float" and set(layer.output_types.values()) == {"float"}]


def _build(monkeypatch: pytest.MonkeyPatch, trt: FakeTRT, onnx: Path, opts: EngineOptions) -> dict:
    monkeypatch.setattr(versions, "import_tensorrt", lambda purpose: trt)
    return build_engine(onnx, onnx.with_suffix(".engine"), opts)


# ------------------------------------------------------------------------------ without TensorRT

def test_build_without_tensorrt_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails even where TensorRT exists
    with pytest.raises(MissingDependencyError) as e:
        build_engine(tmp_path / "absent.onnx", tmp_path / "m.engine", EngineOptions(precision="bogus"))
    msg = str(e.value)
    assert "\n" not in msg and msg.count(". ") == 0 and "JetPack" in msg and "pip install tensorrt" in msg
    assert list(tmp_path.iterdir()) == []  # checked before the options and the files


def test_tensorrt_module_without_its_libraries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pkg = tmp_path / "tensorrt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('libnvinfer.so.10: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    with pytest.raises(MissingDependencyError, match=r"cannot load the TensorRT libraries \(libnvinfer"):
        versions.import_tensorrt("running an engine")


def test_versions() -> None:
    assert versions.trt_version(SimpleNamespace(__version__="10.7.0.post1")) == (10, 7, 0)
    assert versions.trt_version(SimpleNamespace(__version__="10.3.0.26")) == (10, 3, 0)
    assert not versions.is_strongly_typed_only(SimpleNamespace(__version__="10.16.1.11"))
    assert versions.is_strongly_typed_only(SimpleNamespace(__version__="11.0.0.114"))


# ------------------------------------------------------------------------------ manual build hint

def test_hint_for_dynamic_fp32_graph_with_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = tmp_path / "model.onnx"  # only its sidecar is here: the Jetson case without the onnx package
    sidecar_path(onnx).write_text(json.dumps(asdict(ModelMeta(
        names=NAMES, imgsz=[64, 64], batch="dynamic", flavour="tensorrt", plugin="S2SplitAttention"))))
    monkeypatch.delenv(plugin_lib.PLUGIN_ENV, raising=False)
    monkeypatch.setattr(plugin_lib, "_REPO_ROOT", tmp_path)  # no plugin built here
    opts = EngineOptions(precision="fp16", workspace_gib=2, timing_cache=tmp_path / "t.cache")
    lines = manual_build_hint(onnx, opts).splitlines()
    s2, trtexec = (shlex.split(line) for line in lines[:2])
    # Run where the files are copied to on the target: file names, not this machine's folders.
    assert s2 == ["s2export", "model.onnx", "--fp16", "--min", "1x3x64x64", "--opt", "8x3x64x64",
                  "--max", "16x3x64x64", "--workspace", "2", "--timing-cache", str(tmp_path / "t.cache")]
    assert trtexec == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine",
                       "--fp16", "--minShapes=images:1x3x64x64", "--optShapes=images:8x3x64x64",
                       "--maxShapes=images:16x3x64x64", "--dynamicPlugins=plugins/build/libs2trt_plugins.so",
                       "--memPoolSize=workspace:2G", f"--timingCacheFile={tmp_path / 't.cache'}"]
    # Without the ONNX here its island layers cannot be listed: said, not silently dropped.
    assert lines[2].startswith("# trtexec would run the FP32 islands") and "onnx-graphsurgeon" in lines[2]
    assert lines[3].startswith("# trtexec --fp16 exists up to TensorRT 10") and len(lines) == 4


def test_hint_for_fp16_graph_is_strongly_typed(tmp_path: Path) -> None:
    onnx = write_onnx(tmp_path / "m.onnx", ModelMeta(names=NAMES, imgsz=[640, 640], precision="fp16"))
    lines = manual_build_hint(onnx, EngineOptions(precision="fp16", plugin_lib=Path("/opt/p.so"),
                                                  device=1)).splitlines()
    # The graph carries its precision: repeating --fp16 would only say what the file says.
    assert lines == ["s2export m.onnx --device 1",
                     "trtexec --onnx=m.onnx --saveEngine=m.engine --stronglyTyped --device=1"]
    # Without --fp16 too: the graph's own FP16 types make it strongly typed (s2export does the same).
    assert manual_build_hint(onnx, EngineOptions(), tmp_path / "model.engine").splitlines() == [
        "s2export m.onnx", "trtexec --onnx=m.onnx --saveEngine=model.engine --stronglyTyped"]


# ------------------------------------------------------------------------------ profile shapes

def test_profile_defaults_and_overrides() -> None:
    dims = (-1, 3, 640, 640)
    assert resolve_profile("images", dims, EngineOptions()) == (
        (1, 3, 640, 640), (8, 3, 640, 640), (16, 3, 640, 640))
    assert resolve_profile("images", dims, EngineOptions(max_shape=(4, 3, 640, 640)))[1] == (2, 3, 640, 640)
    assert resolve_profile("images", dims, EngineOptions(opt_shape=(32, 3, 640, 640)))[2] == (32, 3, 640, 640)


def test_profile_errors(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(S2Error, match="min ≤ opt ≤ max"):
        resolve_profile("images", (-1, 3, 64, 64), EngineOptions(min_shape=(8, 3, 64, 64),
                                                                 max_shape=(4, 3, 64, 64)))
    with pytest.raises(S2Error, match="fixed dimensions unchanged"):
        resolve_profile("images", (-1, 3, 64, 64), EngineOptions(max_shape=(4, 3, 32, 32)))
    with pytest.raises(S2Error, match="besides the batch"):
        resolve_profile("images", (-1, 3, -1, -1), EngineOptions(max_shape=(4, 3, 64, 64)))
    with caplog.at_level(logging.WARNING):
        assert resolve_profile("images", (1, 3, 64, 64), EngineOptions(max_shape=(4, 3, 64, 64))) is None
    assert "fixed shape 1x3x64x64" in caplog.text


# ------------------------------------------------------------------------------ builder, fake TensorRT

def test_trt10_fp16_dynamic_build(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, tmp_path: Path) -> None:
    trt = FakeTRT("10.3.0.26")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    side = _build(monkeypatch, trt, onnx_file, EngineOptions(precision="fp16", workspace_gib=1.5,
                                                            timing_cache=cache))
    assert trt.network.flags == 0 and trt.config.flags == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert _pinned(trt) == PINNED and side["fp32_layers"] == ISLAND_PATTERNS
    assert trt.config.pools == {"workspace": 3 << 29}
    assert trt.config.profiles == [{"images": ((1, 3, 64, 64), (8, 3, 64, 64), (16, 3, 64, 64))}]
    engine = onnx_file.with_suffix(".engine")
    assert engine.read_bytes() == b"fake engine" and cache.read_bytes() == b"cache:old"
    assert json.loads(sidecar_path(engine).read_text()) == side
    assert side["names"] == NAMES and side["precision"] == "fp16" and side["tensorrt_version"] == "10.3.0"
    assert (side["gpu"], side["compute_capability"]) == ("Orin", "8.7")
    assert side["precision_path"].startswith("builder flags")
    assert side["profiles"] == {"images": {"min": [1, 3, 64, 64], "opt": [8, 3, 64, 64],
                                           "max": [16, 3, 64, 64]}}
    assert side["onnx_file"] == str(onnx_file) and side["plugin_library"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temporary files left behind
        "model.engine", "model.engine.json", "model.onnx", "timing.cache"]


# ------------------------------------------------------------------------ precision, checked

def test_an_engine_whose_islands_run_in_fp16_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                        onnx_file: Path) -> None:
    """The build is read back (IEngineInspector, detailed verbosity): pins TensorRT did not honour
    fail the build with the layers' names, and no engine is written."""
    trt = FakeTRT("10.3.0")
    _build(monkeypatch, trt, onnx_file, EngineOptions(precision="fp16"))
    assert trt.config.profiling_verbosity == "detailed"
    # The dynamic engine's formats were read for its opt shape (else TensorRT reports "N/A").
    assert [c.shapes for c in trt.engine.contexts] == [{"images": (8, 3, 64, 64)}]
    onnx_file.with_suffix(".engine").unlink()

    def ignored(trt: object, config: SimpleNamespace, network: object, patterns: list[str]) -> list[str]:
        config.set_flag("OBEY_PRECISION_CONSTRAINTS")  # the flag, but no layer pinned
        return []

    monkeypatch.setattr(versions, "pin_fp32_layers", ignored)
    with pytest.raises(S2Error, match=r"does not run in the precision planned, so none was written: "
                                      r"/m/Sigmoid \(FP32 island\) runs in FP16; /m/Sigmoid_5 \(FP32 "
                                      r"island\) runs in FP16; /m/Mul \(FP32 island\) runs in FP16; "
                                      r"/m/Reshape \(FP32 island\) runs in FP16$"):
        _build(monkeypatch, FakeTRT("10.3.0"), onnx_file, EngineOptions(precision="fp16"))
    assert not onnx_file.with_suffix(".engine").exists()


def _inspected(*layers: tuple[str, str, str, str], dynamic: bool = False) -> SimpleNamespace:
    """An engine whose inspector reports these (name, parameter type, input type, output type)."""
    entries = [{"Name": n, "LayerType": "Reformat" if p == "Reformat" else "Layer", "ParameterType": p,
                "Inputs": [{"Format/Datatype": FORMATS.get(i, i)}],
                "Outputs": [{"Format/Datatype": FORMATS.get(o, o)}]} for n, p, i, o in layers]
    inspector = SimpleNamespace(execution_context=None,
                                get_engine_information=lambda fmt: json.dumps({"Layers": entries}))
    return SimpleNamespace(num_io_tensors=0, create_engine_inspector=lambda: inspector)


TRT = FakeTRT("10.3.0")


@pytest.mark.parametrize(("precision", "layers", "problems"), [
    # An FP16 engine: convolutions in FP16, the island in FP32; Reformat layers are not judged.
    ("fp16", [("/m/Mul_1 + conv", "Convolution", "half", "half"), ("Reformatting CopyNode for Input "
              "Tensor 0 to /m/Sigmoid", "Reformat", "half", "float"),
              ("PWN(/m/Sigmoid, /m/Mul)", "PointWise", "float", "float")], []),
    # A border Cast of the FP16 pass fused into an island layer: that side may be FP16; fused into a
    # convolution (the image's Cast before the stem), it reads FP32 and computes in FP16.
    ("fp16", [("c/to_fp32 + PWN(/m/Sigmoid, /m/Mul)", "PointWise", "half", "float"),
              ("/m/Reshape + m/to_fp16", "Shuffle", "float", "half"),
              ("images/to_fp16 + conv", "Convolution", "float", "half")], []),
    ("fp16", [("PWN(/m/Sigmoid, /m/Mul)", "PointWise", "float", "half"),
              ("/m/Mul_1 + conv", "Convolution", "float", "float"),
              ("{ForeignNode[/m/Reshape.../m/Reshape_7]}", "Myelin", "half", "half")],
     ["PWN(/m/Sigmoid, /m/Mul) (FP32 island) runs in FP16", "/m/Mul_1 + conv runs in FP32, not FP16",
      "{ForeignNode[/m/Reshape.../m/Reshape_7]} (FP32 island) runs in FP16"]),
    # TensorRT 10.9+ names types in one word.
    ("int8", [("conv", "Convolution", "Int8", "Half"), ("/m/Sigmoid", "Activation", "Float", "Float")], []),
    ("int8", [("conv", "Convolution", "half", "half")], ["no layer runs in INT8"]),
    ("int8", [("conv", "Convolution", "float", "int8")], ["conv runs in FP32, not INT8 or FP16"]),
    ("fp32", [("conv", "Convolution", "float", "float"), ("/m/Shape", "Shape", "int64", "int64")], []),
    ("fp32", [("conv", "Convolution", "float", "half")], ["conv runs in FP16/FP32, not FP32"]),
])
def test_check_engine_precision(precision: str, layers: list, problems: list[str]) -> None:
    engine = _inspected(*layers)
    assert eng.check_engine_precision(engine, ISLAND_PATTERNS, precision, TRT) == problems


def test_check_engine_precision_needs_detailed_layer_information() -> None:
    inspector = SimpleNamespace(get_engine_information=lambda fmt: json.dumps({"Layers": ["conv", "pool"]}))
    engine = SimpleNamespace(num_io_tensors=0, create_engine_inspector=lambda: inspector)
    assert eng.check_engine_precision(engine, ISLAND_PATTERNS, "fp16", TRT) == [
        "the engine reports no layer information: it was built without ProfilingVerbosity.DETAILED"]


def test_island_pins_reach_the_constants_that_feed_only_the_island() -> None:
    """onnx-tensorrt makes an initializer operand a Constant layer and a broadcast a Shuffle, both
    unnamed: pinned when they feed island layers only, left alone when anything else reads them."""
    trt = FakeTRT("10.3.0")
    layers = [FakeLayer("(Unnamed Layer* 1) [Constant]", "CONSTANT", "float"),
              FakeLayer("(Unnamed Layer* 2) [Shuffle]", "SHUFFLE", "float",
                        ("(Unnamed Layer* 1) [Constant]",)),
              FakeLayer("(Unnamed Layer* 3) [Constant]", "CONSTANT", "float"),
              FakeLayer("(Unnamed Layer* 4) [Constant]", "CONSTANT", "int32"),
              FakeLayer("(Unnamed Layer* 5) [Constant]", "CONSTANT", "float"),
              FakeLayer("/m/Mul_1", "EW", "float", ("images", "(Unnamed Layer* 3) [Constant]")),
              FakeLayer("/m/Mul", "EW", "float", ("/m/Sigmoid", "(Unnamed Layer* 2) [Shuffle]",
                                               "(Unnamed Layer* 3) [Constant]")),
              FakeLayer("/m/Reshape", "SHUFFLE", "float", ("/m/Mul", "(Unnamed Layer* 4) [Constant]")),
              FakeLayer("/m/Sigmoid", "ACT", "float", ("conv",))]
    network = FakeNetwork(0, (1, 3, 64, 64), layers)
    pinned = versions.pin_fp32_layers(trt, FakeBuilderConfig(), network, ISLAND_PATTERNS)
    assert pinned == ["/m/Mul", "/m/Reshape", "/m/Sigmoid", "(Unnamed Layer* 2) [Shuffle]",
                      "(Unnamed Layer* 1) [Constant]"]
    assert [layer.name for layer in layers if layer.pinned == "float"] == [
        "(Unnamed Layer* 1) [Constant]", "(Unnamed Layer* 2) [Shuffle]", "/m/Mul", "/m/Reshape", "/m/Sigmoid"]


def test_trt10_int8(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    with pytest.raises(S2Error, match="INT8 needs calibration"):
        _build(monkeypatch, FakeTRT("10.3.0"), onnx_file, EngineOptions(precision="int8"))
    calibrator = object()
    trt = FakeTRT("10.3.0")
    _build(monkeypatch, trt, onnx_file, EngineOptions(precision="int8", calibrator=calibrator))
    assert trt.config.flags == {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"}
    assert trt.config.int8_calibrator is calibrator and _pinned(trt) == PINNED
    assert trt.config.calibration_profile == trt.config.profiles[0]  # dynamic batch needs it
    trt = FakeTRT("10.16.1.11", graph="int8")  # a Q/DQ graph: explicit quantization, no calibrator
    side = _build(monkeypatch, trt, onnx_file, EngineOptions(precision="int8", calibrator=calibrator))
    assert side["precision"] == "int8" and trt.config.int8_calibrator is None
    assert trt.network.flags == 1 << 1 and trt.config.flags == set()  # strongly typed, as on 11
    with pytest.raises(S2Error, match=r"strongly typed.*model\.onnx is int8: export an fp16 graph"):
        _build(monkeypatch, FakeTRT("10.3.0", graph="int8"), onnx_file, EngineOptions(precision="fp16"))


def test_typed_graphs_are_strongly_typed_on_10(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An FP16 or Q/DQ graph is built as a strongly typed network on 10.x as on 11, without precision
    flags: NetworkDefinitionCreationFlag::kSTRONGLY_TYPED = 1 exists in TensorRT 10.3 (NvInfer.h of
    v10.3.0, line 9620: "kSTRONGLY_TYPED = 1,"), and a weakly typed 10.x network refuses FP16 tensors
    without BuilderFlag::kFP16. Before, an FP16 graph built without --fp16 failed on 10.x."""
    for graph in ("fp16", "int8"):
        onnx = _write_island_onnx(tmp_path / f"{graph}.onnx", ModelMeta(
            names=NAMES, imgsz=[64, 64], batch="dynamic", precision=graph))
        for version in ("10.3.0", "10.16.1.11"):
            trt = FakeTRT(version, graph=graph)
            side = _build(monkeypatch, trt, onnx, EngineOptions())
            assert trt.network.flags == 1 << 1 and trt.config.flags == set() and _pinned(trt) == []
            assert side["precision"] == graph and side["precision_path"].startswith("strongly typed")


def test_island_patterns_after_the_plugin_node(tmp_path: Path) -> None:
    """ONNX shape inference gives no types after the plugin node; the decode after it is still
    found (and its shape computation still left out)."""
    meta = ModelMeta(names=NAMES, imgsz=[64, 64], batch="dynamic")
    onnx = _write_island_onnx(tmp_path / "trt.onnx", meta, plugin=True)
    assert eng.fp32_island_patterns(onnx, required=True) == ISLAND_PATTERNS


def test_island_names_trtexec_cannot_read_are_left_out(tmp_path: Path) -> None:
    """trtexec splits --layerPrecisions at ',' and reads a "'" as quoting a name
    (samples/common/sampleOptions.cpp v10.3.0, getLayerPrecisions l. 481 and splitNameAndValue
    l. 267-290: two quotes are dropped from the name, any other count is an error), so such a node
    name would make the printed line pin another layer than the builder, or fail."""
    onnx = pytest.importorskip("onnx")
    path = _write_island_onnx(tmp_path / "q.onnx", ModelMeta(names=NAMES, imgsz=[64, 64], batch="dynamic"))
    model = onnx.load(str(path))
    next(n for n in model.graph.node if n.name == "/m/Sigmoid").name = "/m/Sig'moid"
    onnx.save(model, str(path))
    assert eng.fp32_island_patterns(path, required=True) == ["/m/Mul", "/m/Reshape*"]


def test_graph_types_decide_over_metadata(monkeypatch: pytest.MonkeyPatch, onnx_file: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """Metadata is a file anyone can edit: the parsed network's own types choose the creation flag."""
    trt = FakeTRT("10.3.0", graph="fp16")  # the metadata of onnx_file says fp32
    side = _build(monkeypatch, trt, onnx_file, EngineOptions())
    assert trt.network.flags == 1 << 1 and side["precision"] == "fp16"
    assert "is an fp16 graph although its metadata says fp32" in caplog.text


# trtexec options (samples/common/sampleOptions.cpp of v10.3.0, its --help) for what the builder sets:
# --stronglyTyped "Create a strongly typed network", --fp16/--int8 the builder flags,
# --precisionConstraints=obey "meet precision constraints set by --layerPrecisions/--layerOutputTypes
# or fail", which sets BuilderFlag::kOBEY_PRECISION_CONSTRAINTS (NvInfer.h v10.3.0 line 8334); a layer
# name "can contain at most one wildcard ('*') character". The builder pins with ILayer::setPrecision
# (line 668) and ILayer::setOutputType (line 749), in a weakly typed network only.
TRTEXEC_FLAGS = {"--stronglyTyped": "strongly_typed", "--fp16": "FP16", "--int8": "INT8",
                 "--precisionConstraints=obey": "OBEY_PRECISION_CONSTRAINTS"}


def _trtexec_matches(name: str, spec: str) -> bool:
    return any(name == p or ("*" in p and name.startswith(p.split("*")[0]) and name.endswith(p.split("*")[1]))
               for p in (item.rsplit(":", 1)[0] for item in spec.split(",")))


OBEY = "OBEY_PRECISION_CONSTRAINTS"


@pytest.mark.parametrize(("graph", "requested", "expected"), [
    ("fp32", "fp32", set()), ("fp32", "fp16", {"FP16", OBEY}), ("fp32", "int8", {"FP16", "INT8", OBEY}),
    ("fp16", "fp32", {"strongly_typed"}), ("fp16", "fp16", {"strongly_typed"}),
    ("int8", "fp32", {"strongly_typed"}), ("int8", "int8", {"strongly_typed"})])
def test_builder_and_trtexec_line_build_the_same_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         graph: str, requested: str, expected: set) -> None:
    onnx = _write_island_onnx(tmp_path / "m.onnx", ModelMeta(names=NAMES, imgsz=[64, 64], batch="dynamic",
                                                             precision=graph))
    trt = FakeTRT("10.3.0", graph=graph)
    calibrator = object() if requested == "int8" and graph == "fp32" else None
    opts = EngineOptions(precision=requested, calibrator=calibrator)
    _build(monkeypatch, trt, onnx, opts)
    trtexec = shlex.split(manual_build_hint(onnx, opts).splitlines()[1])
    built = set(trt.config.flags) | ({"strongly_typed"} if trt.network.flags == 1 << 1 else set())
    printed = {flag for option, flag in TRTEXEC_FLAGS.items() if option in trtexec}
    assert built == printed == expected
    specs = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in trtexec if a.startswith("--layer")}
    if OBEY in printed:
        assert specs["--layerPrecisions"] == specs["--layerOutputTypes"] == ",".join(
            f"{p}:fp32" for p in ISLAND_PATTERNS)
        matched = [layer.name for layer in trt.network._layers if _trtexec_matches(layer.name,
                                                                                    specs["--layerPrecisions"])]
        # trtexec skips wildcard matches that compute integers (setLayerPrecisions): /m/Reshape_7.
        assert _pinned(trt) == [n for n in matched if n != "/m/Reshape_7"] == PINNED
    else:
        assert specs == {} and _pinned(trt) == []


def test_failed_calibration_writes_no_engine(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    calibrator = SimpleNamespace(error=OSError("frame 17 of calib.mp4 could not be decoded"))
    with pytest.raises(S2Error, match=r"INT8 calibration failed.*frame 17"):
        _build(monkeypatch, FakeTRT("10.3.0"), onnx_file, EngineOptions(precision="int8",
                                                                         calibrator=calibrator))
    assert not onnx_file.with_suffix(".engine").exists()


@pytest.mark.parametrize(("graph", "requested", "expected"), [
    ("fp16", "fp16", "fp16"), ("fp16", "fp32", "fp16"), ("int8", "int8", "int8"), ("fp32", "fp32", "fp32"),
    ("fp32", "fp16", None), ("fp16", "int8", None)])
def test_trt11_precision_comes_from_the_graph(monkeypatch: pytest.MonkeyPatch, onnx_file: Path,
                                              graph: str, requested: str, expected: str | None) -> None:
    trt = FakeTRT("11.4.0.106", graph=graph)
    if expected is None:
        with pytest.raises(S2Error, match=f"strongly typed.*is {graph}.*s2export model.pt --{requested}"):
            _build(monkeypatch, trt, onnx_file, EngineOptions(precision=requested))
        return
    side = _build(monkeypatch, trt, onnx_file, EngineOptions(precision=requested))
    assert trt.network.flags == 1 << 0 and trt.config.flags == set()
    assert side["precision"] == expected and side["precision_path"].startswith("strongly typed")


def test_trt11_refuses_a_calibrator(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    opts = EngineOptions(precision="int8", calibrator=object())
    with pytest.raises(S2Error, match=r"no INT8 calibrator.*Q/DQ"):
        _build(monkeypatch, FakeTRT("11.0.0"), onnx_file, opts)


def test_parser_errors_are_listed(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    trt = FakeTRT("10.3.0", parse_errors=("node 7 (S2SplitAttention):\n  plugin not found", "e2", "e3", "e4"))
    with pytest.raises(S2Error, match=r"cannot parse model.onnx: node 7 \(S2SplitAttention\): plugin not "
                                      r"found \| e2 \| e3 \(and 1 more\); load the plugin library"):
        _build(monkeypatch, trt, onnx_file, EngineOptions())
    assert not onnx_file.with_suffix(".engine").exists()
    trt = FakeTRT("10.3.0", parse_errors=("node \x1b[2J\x1b]0;x\x07 (Foo): unsupported",))
    with pytest.raises(S2Error) as e:  # node names are text of the file: no terminal escapes
        _build(monkeypatch, trt, onnx_file, EngineOptions())
    assert "\x1b" not in str(e.value) and "node \\x1b[2J\\x1b]0;x\\x07 (Foo)" in str(e.value)


# ------------------------------------------------------------------------------ plugin library

@pytest.fixture(scope="module")
def plugin_so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return c_library(tmp_path_factory, "fake", "int s2trt_engine_test_marker(void) { return 42; }\n")


def test_plugin_library_loads_globally(plugin_so: Path) -> None:
    assert plugin_lib.load_plugin_library(plugin_so, required=True) == plugin_so.resolve()
    # RTLD_GLOBAL: TensorRT (and the process) can see the library's symbols.
    assert ctypes.CDLL(None).s2trt_engine_test_marker() == 42


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plugin_library_rewritten_in_place_while_loaded(plugin_so: Path, tmp_path: Path) -> None:
    """`cp` or a rebuild over the loaded library (truncate, then write) drops the relocated pages of
    a file the loader mapped: the process jumped to an unrelocated address when it exited (SIGSEGV,
    exit 139, after every test had passed). A private copy is loaded, so nothing changes under it."""
    lib = tmp_path / plugin_lib.PLUGIN_LIB_NAME
    shutil.copy(plugin_so, lib)
    script = textwrap.dedent(f"""
        import ctypes, sys
        from pathlib import Path
        from s2trt.trt import gpu, plugin_lib, sidecar, versions
        lib = Path({str(lib)!r})
        plugin_lib.load_plugin_library(lib, required=True)
        digest = plugin_lib.plugin_library_sha256(lib.resolve())
        lib.write_bytes(lib.read_bytes() + b"rebuilt")
        assert ctypes.CDLL(None).s2trt_engine_test_marker() == 42
        print(digest)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hashlib.sha256(plugin_so.read_bytes()).hexdigest() != _sha256(lib)


def test_plugin_library_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(S2Error, match=r"does not exist: build it with `cmake -S plugins -B plugins/build"):
        plugin_lib.load_plugin_library(tmp_path / "libs2trt_plugins.so", required=False)
    text = tmp_path / "notelf.so"
    text.write_text("not a shared library\n")
    with pytest.raises(S2Error, match=r"cannot load plugin library .*notelf\.so \(.*(ELF|too short).*\): "
                                      r"rebuild it .*cmake --build plugins/build"):
        plugin_lib.load_plugin_library(text, required=True)
    monkeypatch.delenv(plugin_lib.PLUGIN_ENV, raising=False)
    monkeypatch.setattr(plugin_lib, "_REPO_ROOT", tmp_path)
    assert plugin_lib.default_plugin_library() is None
    assert plugin_lib.load_plugin_library(None, required=False) is None
    with pytest.raises(S2Error, match=r"plugin library was not found.*cmake -S plugins"):
        plugin_lib.load_plugin_library(None, required=True)
    monkeypatch.setenv(plugin_lib.PLUGIN_ENV, str(text))
    assert plugin_lib.default_plugin_library() == text


def test_plugin_registry_check(plugin_so: Path) -> None:
    key = ("S2SplitAttention", "1", "s2trt")
    plugin_lib.check_plugin_registered(FakeTRT("10.3.0", creators=(key,)))
    trt = FakeTRT("11.4.0")
    lib = plugin_lib.load_plugin_library(plugin_so, required=True)
    with pytest.raises(S2Error, match=r"no plugin s2trt::S2SplitAttention version 1: .*libfake\.so is loaded "
                                      r"but registers no such creator: rebuild it against TensorRT 11\.4\.0"):
        plugin_lib.check_plugin_registered(trt, library=lib)
    # Tried getCreators()-style registration first, on the copy that was loaded: the file's own path
    # would be a second library to the loader.
    (registered,) = trt.loaded_libraries
    assert registered.startswith("/proc/self/fd/") and _sha256(Path(registered)) == _sha256(plugin_so)
    with pytest.raises(S2Error, match="load the plugin library with --plugin-lib"):
        plugin_lib.check_plugin_registered(trt)


def test_ensure_plugin_registers_the_library(plugin_so: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    trt = FakeTRT("10.3.0")  # like the real library: no creator until the registry loads it
    registry = SimpleNamespace(
        get_creator=lambda *key: key if key in trt.creators else None,
        load_library=lambda path: trt.creators.append(("S2SplitAttention", "1", "s2trt")))
    monkeypatch.setattr(trt, "get_plugin_registry", lambda: registry)
    assert plugin_lib.ensure_plugin(trt, plugin_so, required=True) == plugin_so.resolve()
    monkeypatch.delenv(plugin_lib.PLUGIN_ENV, raising=False)
    monkeypatch.setattr(plugin_lib, "_REPO_ROOT", tmp_path)
    assert plugin_lib.ensure_plugin(FakeTRT("11.4.0"), None, required=False) is None


def test_plugin_graph_build(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, plugin_so: Path) -> None:
    sidecar_path(onnx_file).write_text(json.dumps({"plugin": "S2SplitAttention", "flavour": "tensorrt"}))
    meta = ModelMeta(names=NAMES, imgsz=[64, 64], flavour="tensorrt", plugin="S2SplitAttention")
    monkeypatch.setattr(eng, "read_onnx_meta", lambda p: meta)
    with pytest.raises(S2Error, match="--no-plugin cannot build it"):
        _build(monkeypatch, FakeTRT("10.3.0"), onnx_file, EngineOptions(use_plugin=False))
    trt = FakeTRT("10.3.0", creators=(("S2SplitAttention", "1", "s2trt"),))
    side = _build(monkeypatch, trt, onnx_file, EngineOptions(plugin_lib=plugin_so))
    # No library inside the plan: NvInfer.h (10.3) documents IBuilderConfig::setPluginsToSerialize as
    # "Set the plugin libraries to be serialized with version-compatible engines", and s2trt builds
    # none (BuilderFlag::kVERSION_COMPATIBLE = 13 is never set); the runtime loads the library itself.
    assert "plugins_to_serialize" not in vars(trt.config) and trt.config.flags == set()
    assert "version_compatible" not in side and side["plugin_library"] == "libfake.so"


def test_sidecar_digest_is_of_the_library_the_build_loaded(monkeypatch: pytest.MonkeyPatch, onnx_file: Path,
                                                         plugin_so: Path, tmp_path: Path) -> None:
    """The library is rebuilt while the engine builds (minutes): the sidecar must name the library
    in the engine, or the runtime would take the new file beside the engine for the one it needs."""
    lib = tmp_path / "lib" / plugin_lib.PLUGIN_LIB_NAME
    lib.parent.mkdir()
    shutil.copy(plugin_so, lib)
    loaded = _sha256(lib)
    sidecar_path(onnx_file).write_text(json.dumps({"plugin": "S2SplitAttention", "flavour": "tensorrt"}))
    meta = ModelMeta(names=NAMES, imgsz=[64, 64], flavour="tensorrt", plugin="S2SplitAttention")
    monkeypatch.setattr(eng, "read_onnx_meta", lambda p: meta)
    trt = FakeTRT("10.3.0", creators=(("S2SplitAttention", "1", "s2trt"),))
    make_builder = trt.Builder

    def builder(logger: object) -> object:
        b = make_builder(logger)
        build = b.build_serialized_network

        def build_while_rebuilt(network: object, config: object) -> object:
            lib.write_bytes(lib.read_bytes() + b"rebuilt")
            return build(network, config)

        b.build_serialized_network = build_while_rebuilt
        return b

    trt.Builder = builder
    side = _build(monkeypatch, trt, onnx_file, EngineOptions(plugin_lib=lib))
    assert side["plugin_sha256"] == loaded != _sha256(lib)


# ------------------------------------------------------------------------------ engine/machine check

def _sidecar(version: str = "10.3.0", gpu: str = "Orin", cc: str = "8.7", **kw: object) -> dict:
    return {"tensorrt_version": version, "gpu": gpu, "compute_capability": cc, "precision": "fp16",
            "onnx_file": "model.onnx", **kw}


def test_engine_sidecar_fields(plugin_so: Path) -> None:
    side = sidecar.engine_sidecar(SimpleNamespace(__version__="10.3.0.26"), "fp16", plugin_so,
                             _sha256(plugin_so), {"names": NAMES, "precision": "fp32"})
    assert side["names"] == NAMES and side["precision"] == "fp16" and side["tensorrt_version"] == "10.3.0"
    # The library by file name and digest, never the build machine's path (README, "Plugin loading").
    assert (side["gpu"], side["compute_capability"], side["plugin_library"]) == ("Orin", "8.7", "libfake.so")
    assert side["plugin_sha256"] == _sha256(plugin_so)
    assert side["built_at"].endswith("+00:00")


def test_compatible_engine_passes(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar.check_engine_compatible("model.engine", _sidecar(), SimpleNamespace(__version__="10.3.0.26"))
    monkeypatch.setattr(gpu, "gpu_info", lambda device=0: (None, None))  # no CUDA module: version only
    sidecar.check_engine_compatible("model.engine", _sidecar(), SimpleNamespace(__version__="10.3.0"))
    with caplog.at_level(logging.WARNING):
        sidecar.check_engine_compatible("model.engine", None, SimpleNamespace(__version__="10.3.0"))
    assert "no sidecar" in caplog.text


def test_engine_from_other_version_or_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    here = SimpleNamespace(__version__="10.8.0.43")
    monkeypatch.setattr(gpu, "gpu_info", lambda device=0: ("NVIDIA H100", "9.0"))
    with pytest.raises(S2Error) as e:
        sidecar.check_engine_compatible("/models/model.engine", _sidecar(), here)
    assert str(e.value) == ("model.engine was built with TensorRT 10.3.0 on Orin (sm_87); this is TensorRT "
                            "10.8.0 on NVIDIA H100 (sm_90): rebuild it on this machine with: "
                            "s2export model.onnx --fp16")
    with pytest.raises(S2Error, match=r"TensorRT 10\.3\.0 on Orin.*TensorRT 10\.3\.0 on NVIDIA H100"):
        sidecar.check_engine_compatible("model.engine", _sidecar(), SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(gpu, "gpu_info", lambda device=0: ("Orin", "8.7"))
    with pytest.raises(S2Error, match=r"built with TensorRT 10\.3\.0 .* this is TensorRT 10\.16\.1"):
        sidecar.check_engine_compatible("model.engine", _sidecar(), SimpleNamespace(__version__="10.16.1.11"))


def test_no_engine_is_version_compatible(monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """An engine runs on the TensorRT version that built it only. Sidecars of older s2trt releases say
    version_compatible=true for engines built without BuilderFlag::kVERSION_COMPATIBLE: the key is
    not believed (TensorRT would refuse the plan after a confusing deserialization error)."""
    side = _sidecar(version="10.3.0", version_compatible=True)
    for later in ("10.16.1.11", "11.4.0"):
        with pytest.raises(S2Error, match=r"built with TensorRT 10\.3\.0 .* rebuild it on this machine"):
            sidecar.check_engine_compatible("m.engine", side, SimpleNamespace(__version__=later))
    monkeypatch.setattr(gpu, "gpu_info", lambda device=0: ("Jetson AGX Orin", "8.7"))
    with caplog.at_level(logging.WARNING):
        sidecar.check_engine_compatible("m.engine", _sidecar(), SimpleNamespace(__version__="10.3.0"))
    assert "same compute capability" in caplog.text
