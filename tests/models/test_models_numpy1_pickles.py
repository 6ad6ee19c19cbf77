"""Checkpoints that yolov5's own code pickled with NumPy 1 and torch 1.x, as users' 2021-2022 files are.

The entries of tests/data/yolov5/<tag>/index.json with a `writer` were written by that release's
train.py code under torch 1.8.1 / NumPy 1.20.3 (v5.0, v6.0) and torch 1.13.1 / NumPy 1.23.5 (v7.0)
(tests/data/yolov5/README.md says how). test_models_yolov5_releases.py checks their parity with the
release's own forward and exports the v5.0 and v7.0 ones to ONNX, as it does for every entry of the
index; this file checks that they really are what those writers make, and that the NumPy values in
them are read back as they were written, not merely accepted. torch's older stream format (no
zip; no YOLOv5 release wrote it by default) is written here at test time: its records of module
classes are the one thing in it that the zip format lacks.
"""

from __future__ import annotations

import collections
import json
import pickle
import pickletools
import warnings
import zipfile

import numpy as np
import pytest
import torch
from paths import DATA
from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

from s2trt.models import load_checkpoint
from s2trt.models.checkpoint import UnsafeCheckpointError, read_pickle

YOLOV5 = DATA / "yolov5"
CASES = [(tag.name, e) for tag in sorted(YOLOV5.iterdir()) if tag.is_dir()
         for e in json.loads((tag / "index.json").read_text()) if "NumPy 1." in e.get("writer", "")]
IDS = [f"{t}-{e['name']}" for t, e in CASES]

# What NumPy 1.x names in a pickle: an array (best_fitness, fitness()'s 1-element result, which
# v5.0 and v6.0's strip_optimizer() keeps) and a scalar (the optimizer's lr and momentum, from the
# warmup's np.interp, in the train-format file only). NumPy 2 writes numpy._core.multiarray.
ARRAY = {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype", "_codecs encode"}
SCALAR = {"numpy.core.multiarray scalar", "numpy dtype", "_codecs encode"}


def _zip(path) -> tuple[list[str], set[str]]:
    """The archive's record names and the globals its pickle names."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        data = z.read(next(n for n in names if n.endswith("/data.pkl")))
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2  # torch.save's protocol
    return names, {arg for op, arg, _ in ops if op.name == "GLOBAL"}


def test_the_numpy1_files_are_there():
    writers = {(t, e["name"]): e["writer"] for t, e in CASES}
    assert {t for t, _ in writers} == {"v5.0", "v6.0", "v7.0"}
    assert all(w.startswith(("torch 1.8.", "torch 1.13.")) for w in writers.values())
    layouts = {(t, e["stripped"], e["segment"]) for t, e in CASES}
    assert {("v5.0", False, False), ("v6.0", True, False), ("v7.0", True, True)} <= layouts


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pickles_are_numpy1_and_torch1(case):
    tag, entry = case
    names, found = _zip(YOLOV5 / tag / f"{entry['name']}.pt")
    # torch 2.1+ adds a byteorder record, 2.x a serialization id; torch 1.x writes neither
    assert not any(n.endswith(("/byteorder", "/.data/serialization_id")) for n in names)
    numpy = {g for g in found if g.startswith(("numpy", "_codecs"))}
    assert not any(g.startswith("numpy._core") for g in found)
    if tag == "v7.0":  # its strip_optimizer() sets best_fitness to None: no NumPy value is left
        assert numpy == set()
        assert "__builtin__ getattr" in found  # Segment.detect = Detect.forward
    elif entry["stripped"]:
        assert numpy == ARRAY
    else:
        assert numpy == ARRAY | SCALAR


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_numpy1_values_read_back_as_written(case):
    """The dtype state tuples and scalar bytes NumPy 1.x writes give the values train.py stored."""
    tag, entry = case
    raw = read_pickle(YOLOV5 / tag / f"{entry['name']}.pt")
    fitness = raw["best_fitness"]
    if tag == "v7.0":
        assert fitness is None
    else:
        assert type(fitness).__name__ == "ndarray" and fitness.dtype == np.float64
        assert np.asarray(fitness).tolist() == [0.61]
    model = raw["model"]
    # labels_to_class_weights() is float64 (torch.from_numpy) until v6.1, .float() from v6.2
    want = torch.float64 if tag in ("v5.0", "v6.0") else torch.float32
    assert model.__dict__["class_weights"].dtype == want
    if not entry["stripped"]:
        (group,) = raw["optimizer"]["param_groups"]
        # train.py's warmup at its iteration 40 of 1000, np.interp's np.float64 results
        assert type(group["momentum"]) is np.float64 and type(group["lr"]) is np.float64
        assert group["momentum"] == np.interp(40, [0, 1000], [0.8, 0.937])
        assert group["lr"] == np.interp(40, [0, 1000], [0.0, 0.01])
        assert raw["optimizer"]["state"][0]["momentum_buffer"].dtype == torch.float32


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loads_as_the_release_wrote_it(case):
    tag, entry = case
    lm = load_checkpoint(YOLOV5 / tag / f"{entry['name']}.pt")
    assert lm.info["release"] == tag
    assert (lm.info["key"], lm.info["epoch"]) == (("model", -1) if entry["stripped"] else ("ema", 41))
    assert lm.half and lm.names == ["class0", "class1", "class2"] and lm.source == "yolov5"
    assert lm.nm == (32 if entry["segment"] else 0)


def test_torch_stream_format_records_module_classes(tmp_path):
    """torch's stream format (torch < 1.6's default, torch 1.x and 2.x on request) stores each
    module class with its source: such a file loads, and the source is never compared (torch.load
    would warn that it cannot read a stand-in's source, or write a .patch file)."""
    from yolov5_fake import build_model

    model = build_model("yolov5n-s2", nc=3, width_multiple=0.0625).half()
    path = tmp_path / "stream.pt"
    torch.save({"epoch": -1, "model": model}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02" and b"def forward(self" in path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm = load_checkpoint(path)
    assert lm.half and lm.info["key"] == "model"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model.float()(x)[0], lm.model(x)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def _stream(path, record: tuple) -> None:
    """A file in torch's stream format whose pickle holds one persistent record."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return record if obj is _MARK else None

    with open(path, "wb") as f:
        for part in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION}):
            pickle.dump(part, f, protocol=2)
        Pickler(f, protocol=2).dump({"model": _MARK})
        pickle.dump([], f, protocol=2)


_MARK = object()


@pytest.mark.parametrize("record", [
    ("module", torch.nn.Conv2d, None, 7),  # a source that is not text
    ("module", torch.nn.Conv2d, None),  # too short
    ("module", collections.OrderedDict, None, None),  # a global, but not a module's stand-in
    ("module", "torch.nn.Conv2d", None, None),  # a name, not a class
], ids=["source", "short", "not-a-module", "not-a-class"])
def test_forged_module_records_are_refused(tmp_path, record):
    path = tmp_path / "forged.pt"
    _stream(path, record)
    with pytest.raises(UnsafeCheckpointError, match="module record"):
        read_pickle(path)
