"""Forged ONNX metadata and sidecar JSON: a ModelMeta whose fields have the contract's types, or
one S2Error line (exit 1) — never another exception (exit 70) further down the pipeline."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import DEMO_ASSETS

from s2trt.errors import S2Error
from s2trt.meta import ModelMeta, read_onnx_meta, read_sidecar, sidecar_path

# Repeatable in CI: the same examples every run, no time limit per example on a busy machine.
SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

IMAGE = DEMO_ASSETS / "images" / "shapes_0.jpg"
GOOD = ModelMeta(names=["cat", "dog"], imgsz=[64, 64]).to_props()


def well_typed(m: ModelMeta) -> bool:
    """The contract of docs/DESIGN.md §3, written from the spec, independent of core/meta.py."""
    def is_int(x, lo, hi):
        return type(x) is int and lo <= x <= hi

    def unit(x):
        return type(x) in (int, float) and 0 <= x <= 1

    nms_ok = m.nms is None or (isinstance(m.nms, dict) and all(
        (k not in m.nms) or ok(m.nms[k]) for k, ok in (
            ("conf_thres", unit), ("iou_thres", unit), ("max_det", lambda x: is_int(x, 1, 10**5)),
            ("topk", lambda x: is_int(x, 1, 10**5)))))
    lb = m.letterbox
    return (isinstance(m.names, list) and len(m.names) >= 1 and all(type(n) is str for n in m.names)
            and isinstance(m.imgsz, list) and len(m.imgsz) == 2
            and all(is_int(v, 1, 16384) for v in m.imgsz)
            and is_int(m.stride, 1, 256)
            and (m.batch == "dynamic" or is_int(m.batch, 1, 4096))
            and m.flavour in ("portable", "tensorrt") and m.precision in ("fp32", "fp16", "int8")
            and nms_ok and isinstance(lb, dict) and is_int(lb.get("pad_value", 114), 0, 255)
            and type(lb.get("scaleup", True)) is bool and type(lb.get("auto", False)) is bool
            and (m.plugin is None or type(m.plugin) is str)
            and isinstance(m.versions, dict)
            and all(type(x) is str for x in (*m.versions, *m.versions.values())))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

# Near-miss values for each field: the right shape with a wrong type or a value out of range.
field_values = {
    "names": st.one_of(json_values, st.lists(st.text(max_size=8) | st.integers(), max_size=4)),
    "imgsz": st.one_of(json_values, st.lists(st.integers(-5, 10**6) | st.floats(), min_size=1,
                                             max_size=3)),
    "stride": st.one_of(json_values, st.integers(-64, 10**4)),
    "batch": st.one_of(json_values, st.sampled_from(["dynamic", "Dynamic"]), st.integers(-2, 10**5)),
    "flavour": st.one_of(st.sampled_from(["portable", "tensorrt", "fancy"]), json_values),
    "precision": st.one_of(st.sampled_from(["fp32", "fp16", "int8", "fp8"]), json_values),
    "nms": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "conf_thres": json_values, "iou_thres": json_values,
        "max_det": st.integers(-5, 10**7) | json_values, "topk": json_values})),
    "letterbox": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "pad_value": st.integers(-300, 300) | json_values, "auto": json_values,
        "scaleup": json_values})),
    "plugin": st.one_of(st.none(), st.text(max_size=8), json_values),
    "versions": st.one_of(json_values, st.dictionaries(st.text(max_size=6), st.text(max_size=6)
                                                       | st.integers(), max_size=3)),
}


def _encode(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


@st.composite
def forged_props(draw) -> dict:
    """s2export's metadata with some fields dropped, replaced by forgeries, or left as raw text."""
    props = dict(GOOD)
    for name, values in field_values.items():
        action = draw(st.sampled_from(["keep", "keep", "forge", "drop", "raw"]))
        if action == "forge":
            props[name] = _encode(draw(values))
        elif action == "drop":
            props.pop(name, None)
        elif action == "raw":
            props[name] = draw(st.text(max_size=10))
    if draw(st.booleans()):
        props[draw(st.text(max_size=6))] = draw(st.text(max_size=6))
    return props


@SETTINGS
@given(forged_props())
def test_onnx_metadata_parses_to_a_contract_or_one_error(props):
    try:
        meta = ModelMeta.from_props(props, "m.onnx")
    except S2Error as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    assert well_typed(meta), asdict(meta)


@st.composite
def valid_meta(draw) -> ModelMeta:
    names = draw(st.lists(st.text(max_size=20), min_size=1, max_size=6))
    nms = draw(st.none() | st.fixed_dictionaries({
        "conf_thres": st.floats(0, 1), "iou_thres": st.floats(0, 1),
        "max_det": st.integers(1, 3000), "topk": st.integers(1, 3840),
        "outputs": st.just(["num_dets", "det_boxes", "det_scores", "det_classes"])}))
    return ModelMeta(names=names, imgsz=[draw(st.integers(1, 64)) * 32, draw(st.integers(1, 64)) * 32],
                     stride=draw(st.sampled_from([32, 64])),
                     batch=draw(st.sampled_from(["dynamic"]) | st.integers(1, 64)),
                     flavour=draw(st.sampled_from(["portable", "tensorrt"])),
                     precision=draw(st.sampled_from(["fp32", "fp16", "int8"])), nms=nms,
                     plugin=draw(st.sampled_from([None, "S2SplitAttention"])),
                     versions=draw(st.dictionaries(st.sampled_from(["torch", "onnx", "s2trt"]),
                                                   st.text(max_size=8), max_size=3)))


@SETTINGS
@given(valid_meta())
def test_what_s2export_writes_reads_back_unchanged(meta):
    assert ModelMeta.from_props(meta.to_props()) == meta
    assert ModelMeta.from_dict(asdict(meta)) == meta


@st.composite
def forged_sidecar(draw) -> object:
    """A sidecar as s2export writes it (asdict of the metadata) with forged fields, or any JSON."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    data = asdict(ModelMeta(names=["cat", "dog"], imgsz=[64, 64]))
    for name, values in field_values.items():
        action = draw(st.sampled_from(["keep", "keep", "forge", "drop"]))
        if action == "forge":
            data[name] = draw(values)
        elif action == "drop":
            data.pop(name, None)
    return data


@SETTINGS
@given(forged_sidecar())
def test_sidecar_json_parses_to_a_contract_or_one_error(tmp_path_factory, data):
    model = tmp_path_factory.mktemp("side") / "m.onnx"
    sidecar_path(model).write_text(json.dumps(data))
    try:
        meta = ModelMeta.from_dict(read_sidecar(model), str(model))
    except S2Error as e:
        assert "\n" not in str(e)
        return
    assert well_typed(meta)


@pytest.mark.parametrize("text,words", [
    ("[" * 100_000 + "]" * 100_000, "cannot read"),  # RecursionError in json
    ("[1, 2]", "not the object"),
    ('{"names": 1' + "0" * 5000 + "}", "cannot read"),  # more digits than Python converts
    ("\udcff", "cannot read"),
])
def test_damaged_sidecar_is_one_error(tmp_path, text, words):
    model = tmp_path / "m.onnx"
    sidecar_path(model).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(S2Error, match=words):
        read_sidecar(model)


def write_onnx(path: Path, props: dict[str, str]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])],
                                                "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


FORGED = {
    "names not a list": {"names": "5"},
    "names of numbers": {"names": "[1, 2]"},
    "imgsz one side": {"imgsz": "[64]"},
    "imgsz huge": {"imgsz": f"[{10**12}, 64]"},
    "imgsz text": {"imgsz": '["a", "b"]'},
    "stride zero": {"stride": "0"},
    "stride nan": {"stride": "NaN"},
    "batch negative": {"batch": "-3"},
    "letterbox list": {"letterbox": "[1]"},
    "pad_value text": {"letterbox": '{"pad_value": "grey"}'},
    "nms max_det huge": {"nms": '{"max_det": 1e300}'},
    "versions list": {"versions": "[1]"},
    "precision unknown": {"precision": "fp4"},
    "names missing": {"names": None},
    "imgsz missing": {"imgsz": None},
}


@pytest.mark.parametrize("forgery", list(FORGED))
def test_forged_onnx_metadata_is_refused(tmp_path, forgery):
    props = {**GOOD, **FORGED[forgery]}
    props = {k: v for k, v in props.items() if v is not None}
    path = write_onnx(tmp_path / "m.onnx", props)
    with pytest.raises(S2Error, match="s2trt metadata"):
        read_onnx_meta(path)


@pytest.mark.parametrize("forgery", ["names not a list", "imgsz one side", "stride nan",
                                     "pad_value text"])
def test_s2infer_exits_1_on_forged_metadata(tmp_path, forgery):
    props = {**GOOD, **FORGED[forgery]}
    path = write_onnx(tmp_path / "m.onnx", props)
    code = "import sys; from s2trt.runtime.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "--onnx", str(path), str(IMAGE), "-q"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stderr[-1500:]
    assert len(lines) == 1 and "s2trt metadata" in lines[0], r.stderr[-1500:]


def test_well_typed_reference_accepts_what_s2export_writes():
    assert well_typed(ModelMeta.from_props(GOOD))
    assert not well_typed(ModelMeta(names="ab", imgsz=[64, 64]))  # type: ignore[arg-type]
    assert math.isfinite(ModelMeta.from_props(GOOD).stride)
