"""Odd checkpoint structures and model configs: a working model, or one S2Error line (exit 1).

Property tests (Hypothesis, fixed examples) over what a pickle can hold once the allow-list has
let it through: stand-in modules whose stored dicts hold the wrong things, class names and
provenance of any type, and configs near and far from YOLOv5's ranges. For the configs that are
accepted, the shapes and strides planned without building are checked against a real build and a
real forward pass (the independent reference).
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from s2trt.errors import S2Error
from s2trt.models import DetectionModel, load_checkpoint
from s2trt.models.yolo import plan_model

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

TINY = {"nc": 2, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30]],
        "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "C3", [16]]],
        "head": [[[2], 1, "Detect", ["nc", "anchors"]]]}

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
    | st.just(torch.zeros(2)) | st.just(torch.zeros(2, dtype=torch.complex64)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | st.integers(),
                                                                inner, max_size=3),
    max_leaves=6)


class Thing(torch.nn.Module):
    """Pickled as `models.fuzz.Thing`: the loader sees it as a YOLOv5 class and makes a stand-in."""

    def __repr__(self) -> str:
        # nn.Module's repr walks _modules, which the strategy replaces with junk: Hypothesis must be
        # able to print a falsifying example.
        return f"Thing({sorted(self.__dict__)})"


@contextlib.contextmanager
def fuzz_module():
    saved = {k: sys.modules.get(k) for k in ("models", "models.fuzz")}
    pkg, mod = types.ModuleType("models"), types.ModuleType("models.fuzz")
    pkg.fuzz, mod.Thing = mod, Thing
    Thing.__module__ = "models.fuzz"
    sys.modules.update({"models": pkg, "models.fuzz": mod})
    try:
        yield
    finally:
        Thing.__module__ = __name__
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def tiny_tree() -> torch.nn.Module:
    model = DetectionModel(copy.deepcopy(TINY))
    for m in model.modules():
        m.__class__ = Thing
    model.yaml = copy.deepcopy(TINY)
    model.names = {0: "cat", 1: "dog"}
    return model


@st.composite
def odd_checkpoint(draw) -> dict:
    """A train.py-like dict around the tiny model, with a few of its stored pieces replaced."""
    model = tiny_tree()
    nodes = list(model.modules())
    for _ in range(draw(st.integers(0, 3))):
        node = draw(st.sampled_from(nodes))
        key = draw(st.sampled_from(["_modules", "_parameters", "_buffers", "_non_persistent_buffers_set",
                                    "yaml", "names", "child", "param", "self"]))
        if key == "child" and node._modules:
            node.__dict__["_modules"][draw(st.sampled_from(sorted(node._modules)))] = draw(junk)
        elif key == "param" and node._parameters:
            node.__dict__["_parameters"][draw(st.sampled_from(sorted(node._parameters)))] = draw(junk)
        elif key == "self":  # a module containing itself
            node.__dict__["_modules"]["loop"] = node
        elif key == "yaml":
            y = copy.deepcopy(TINY)
            y[draw(st.sampled_from(sorted(y)))] = draw(junk)
            node.__dict__["yaml"] = draw(st.sampled_from([y, draw(junk)]))
        else:
            node.__dict__[key] = draw(junk)
    ckpt = {"model": model, "ema": draw(st.sampled_from([None, model])), "epoch": draw(junk),
            "date": draw(junk), "git": draw(junk)}
    if draw(st.booleans()):
        ckpt["names"] = draw(junk)
    if draw(st.integers(0, 5)) == 0:
        ckpt["model"] = ckpt["ema"] = draw(junk)
    return ckpt


@SETTINGS
@given(odd_checkpoint())
def test_odd_checkpoint_loads_or_is_one_error(tmp_path_factory, ckpt):
    path = tmp_path_factory.mktemp("odd") / "odd.pt"
    with fuzz_module():
        torch.save(ckpt, path)
    try:
        lm = load_checkpoint(path)
    except S2Error as e:
        assert "\n" not in str(e) and len(str(e)) < 2000
        event("refused")
        return
    event("loaded")
    assert lm.nc == 2 and len(lm.names) == 2 and all(type(n) is str for n in lm.names)
    assert lm.stride == [4]
    with torch.no_grad():
        assert lm.model(torch.zeros(1, 3, 32, 32)).shape == (1, 2 * 8 * 8, 7)


def test_unmodified_tiny_checkpoint_loads(tmp_path):
    """The property's base case is a real load, so the property is not vacuous."""
    path = tmp_path / "tiny.pt"
    with fuzz_module():
        torch.save({"model": tiny_tree(), "ema": None}, path)
    lm = load_checkpoint(path)
    assert lm.names == ["cat", "dog"] and lm.stride == [4]


def _layer0(m: torch.nn.Module) -> torch.nn.Module:
    return m._modules["model"]._modules["0"]  # indexing is gone once re-classed to Thing


def _conv0(m: torch.nn.Module) -> torch.nn.Module:
    return _layer0(m)._modules["conv"]


@pytest.mark.parametrize("mutate,words", [
    (lambda m: m.__dict__["_modules"].__setitem__("model", 7), "not a module"),
    (lambda m: m.__dict__.__setitem__("_modules", [1, 2]), "_modules"),
    (lambda m: _conv0(m).__dict__["_parameters"].__setitem__("weight", "w"), "not a tensor"),
    (lambda m: _layer0(m).__dict__["_modules"].__setitem__("me", _layer0(m)), "nested deeper"),
    (lambda m: m.__dict__.__setitem__("names", [["a"] * 3] * 2), "class names"),
    (lambda m: _conv0(m).__dict__["_parameters"].__setitem__(
        "weight", torch.zeros(8, 3, 3, 3, dtype=torch.complex64)), "not floating point"),
])
def test_odd_stand_ins_are_one_error(tmp_path, mutate, words):
    model = tiny_tree()
    mutate(model)
    path = tmp_path / "odd.pt"
    with fuzz_module():
        torch.save({"model": model}, path)
    with pytest.raises(S2Error, match=words):
        load_checkpoint(path)


def test_state_dict_hooks_in_the_pickle_never_run(tmp_path):
    """nn.Module.state_dict() would call hooks stored in the pickle; the loader reads the dicts."""
    model = tiny_tree()
    model.__dict__["_state_dict_hooks"] = {0: Thing}  # callable, allow-listed: it would be called
    path = tmp_path / "hooks.pt"
    with fuzz_module():
        torch.save({"model": model}, path)
    assert load_checkpoint(path).names == ["cat", "dog"]


# --- model configs --------------------------------------------------------------------------

@st.composite
def config(draw) -> dict:
    """A small YOLOv5-like config (strided backbone, maybe an upsampling head, one Detect); in
    about half of them one or two values are pushed outside YOLOv5's ranges or types."""
    layers: list = []
    channels = st.sampled_from([8, 16, 24])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["Conv", "Conv", "C3", "SPPF", "S2Attention", "nn.Upsample",
                                     "Concat"]))
        n = draw(st.sampled_from([1, 1, 2, 3]))
        if kind == "Conv":
            args = [draw(channels), draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 2]))]
        elif kind == "C3":
            args = [draw(channels), draw(st.booleans())]
        elif kind == "SPPF":
            args = [draw(channels), draw(st.sampled_from([3, 5]))]
        elif kind == "nn.Upsample":
            args = [None, 2, "nearest"]
        elif kind == "Concat":
            args = [1]
        else:
            args = [draw(channels)]
        f = -1 if kind != "Concat" else [-1, draw(st.integers(0, len(layers)))]
        layers.append([f, n, kind, args])
    sources = draw(st.lists(st.integers(1, len(layers)), min_size=1, max_size=3, unique=True))
    na = draw(st.sampled_from([1, 3]))
    d = {"nc": draw(st.sampled_from([1, 3])), "depth_multiple": draw(st.sampled_from([0.33, 1.0])),
         "width_multiple": draw(st.sampled_from([0.25, 0.5, 1.0])),
         "anchors": draw(st.sampled_from([[[10, 13] * na] * len(sources), na])),
         "backbone": [[-1, 1, "Conv", [16, 3, 2]], *layers],
         "head": [[sources, 1, "Detect", ["nc", "anchors"]]]}
    hostile = {
        "nc": st.integers(-1, 10**7) | junk,
        "depth_multiple": st.floats(-1, 1e6) | st.just("1e5") | st.booleans(),
        "width_multiple": st.floats(-1, 1e6) | st.just("2") | junk,
        "anchors": st.integers(-1, 10**9) | junk,
        "ch": st.integers(-1, 10**6) | junk,
    }
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        where = draw(st.sampled_from([*hostile, "layer", "arg", "from"]))
        if where in hostile:
            d[where] = draw(hostile[where])
            continue
        layer = draw(st.sampled_from(d["backbone"]))
        if where == "layer":
            layer[draw(st.integers(0, 3))] = draw(junk | st.integers(-10, 10**6))
        elif where == "arg" and layer[3]:
            layer[3][draw(st.integers(0, len(layer[3]) - 1))] = draw(
                st.integers(-4, 10**6) | st.floats(0, 1e6) | junk)
        else:
            layer[0] = draw(st.integers(-10, 10) | st.lists(st.integers(-10, 10), max_size=3))
    return d


@SETTINGS
@given(config())
def test_config_plan_matches_a_real_build_or_is_one_error(cfg):
    try:
        plan = plan_model(cfg)
    except S2Error as e:
        assert "\n" not in str(e) and len(str(e)) < 2000
        event("refused")
        return
    event("planned")
    assume(plan.numel < 2_000_000)  # the reference build must stay quick
    model = DetectionModel(copy.deepcopy(cfg))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == plan.shapes
    model.train()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 256))
    assert plan.stride == [256 / o.shape[2] for o in out]
    assert plan.stride == [256 / o.shape[3] for o in out]


def test_config_plan_p6_matches_a_real_build():
    """Four outputs (YOLOv5 P6 style) with an upsample-concat path: planned strides are the ones
    a forward pass gives."""
    d = {"nc": 3, "anchors": [[10, 13, 16, 30]] * 4,
         "backbone": [[-1, 1, "Conv", [16, 6, 2, 2]], *[[-1, 1, "Conv", [c, 3, 2]] for c in
                                                          (32, 32, 64, 64, 64)],
                      [-1, 1, "SPPF", [64, 5]]],
         "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]],
                  [-1, 2, "C3", [64, False]], [-1, 1, "S2Attention", [64]],
                  [[2, 3, 10, 6], 1, "Detect", ["nc", "anchors"]]]}
    plan = plan_model(d)
    model = DetectionModel(d).train()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 256))
    assert plan.stride == [256 / o.shape[2] for o in out] == [8, 16, 32, 64]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == plan.shapes


def test_parameter_count_is_checked_before_building():
    """Three 4096-channel 3x3 convs are within the per-layer ranges but describe 453 M parameters
    (1.8 GB): refused from the config alone, where the old code allocated them all first."""
    d = copy.deepcopy(TINY)
    d["backbone"] = [[-1, 1, "Conv", [4096, 3, 2]], *[[-1, 1, "Conv", [4096, 3, 1]]] * 3]
    d["head"] = [[[3], 1, "Detect", ["nc", "anchors"]]]
    with pytest.raises(S2Error, match=r"describes 453 M parameters, more than s2trt's limit"):
        DetectionModel(d)


@pytest.mark.parametrize("key", ["_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"])
def test_a_tensor_where_the_module_keeps_a_table_is_one_error(tmp_path, key):
    """Found by the property above: a stored tensor in place of a module's table was asked for its truth
    value (`or {}`), a RuntimeError (exit 70) instead of the loader's one line."""
    model = tiny_tree()
    model.__dict__[key] = torch.zeros(2)
    path = tmp_path / "odd.pt"
    with fuzz_module():
        torch.save({"model": model, "ema": None}, path)
    with pytest.raises(S2Error, match="malformed YOLOv5 checkpoint"):
        load_checkpoint(path)
