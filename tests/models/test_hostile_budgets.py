"""Tensor records a pickle may forge: storage sizes against the bytes stored, views against their
storage, and expanded sizes against what the file may claim (models/budget.py).

Each checkpoint is a real torch zip whose data.pkl is written by hand (protocol-2 opcodes), so
that sizes, strides, offsets and storage sizes take any value; what loads is compared with NumPy's
view of the stored bytes (np.lib.stride_tricks.as_strided), the independent reference.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from s2trt.errors import S2Error
from s2trt.models import load_checkpoint
from s2trt.models.budget import PER_BYTE, SLACK
from s2trt.models.checkpoint import read_pickle

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

DTYPES = {"HalfStorage": (torch.float16, np.float16), "FloatStorage": (torch.float32, np.float32),
          "DoubleStorage": (torch.float64, np.float64), "LongStorage": (torch.int64, np.int64),
          "ByteStorage": (torch.uint8, np.uint8)}
# Words of the loader's own refusals (a refusal by torch would be "not a readable checkpoint").
OWN_REFUSALS = ("record holds", "reaches element", "claims", "has the size")


def _int(n: int) -> bytes:
    return pickle.dumps(n, protocol=2)[2:-1]


def _str(s: str) -> bytes:
    return b"X" + len(s).to_bytes(4, "little") + s.encode()


def _tuple(xs: list[int]) -> bytes:
    return b"(" + b"".join(map(_int, xs)) + b"t"


def tensor_record(path: Path, storage: str, stored: int, claim: int, offset: int,
                  size: list[int], stride: list[int]) -> np.ndarray:
    """{'w': <tensor>} with `stored` elements in the record and the pickle's own claim, offset,
    size and stride; returns the stored elements."""
    dtype, np_dtype = DTYPES[storage]
    values = torch.arange(stored, dtype=torch.float64).to(dtype)
    torch.save({"w": values}, path)
    pkl = (b"\x80\x02}" + _str("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
           + b"(" + _str("storage") + b"ctorch\n" + storage.encode() + b"\n" + _str("0") + _str("cpu")
           + _int(claim) + b"tQ" + _int(offset) + _tuple(size) + _tuple(stride)
           + b"\x89ccollections\nOrderedDict\n)RtRs.")
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, pkl if name.endswith("/data.pkl") else data)
    return values.numpy().view(np_dtype) if stored else np.zeros(0, np_dtype)


dims = st.one_of(st.integers(0, 6), st.integers(0, 1 << 40))


@st.composite
def records(draw) -> dict:
    rank = draw(st.integers(0, 4))
    stored = draw(st.integers(0, 64))
    return {"storage": draw(st.sampled_from(sorted(DTYPES))), "stored": stored,
            "claim": draw(st.one_of(st.just(stored), st.integers(0, 1 << 40), st.integers(0, 80))),
            "offset": draw(st.one_of(st.integers(0, 8), st.integers(0, 1 << 40))),
            "size": draw(st.lists(dims, min_size=rank, max_size=rank)),
            "stride": draw(st.lists(dims, min_size=rank, max_size=rank))}


@SETTINGS
@given(records())
def test_forged_tensor_record_loads_as_numpy_sees_it_or_is_refused(tmp_path_factory, rec):
    path = tmp_path_factory.mktemp("rec") / "rec.pt"
    stored = tensor_record(path, **rec)
    itemsize = stored.itemsize
    limit = PER_BYTE * path.stat().st_size + SLACK
    numel = math.prod(rec["size"])
    last = rec["offset"] + sum((n - 1) * s for n, s in zip(rec["size"], rec["stride"], strict=True))
    fits = rec["claim"] == rec["stored"] and (numel == 0 or last < rec["claim"])
    try:
        w = read_pickle(path)["w"]
    except S2Error as e:
        assert "\n" not in str(e) and any(words in str(e) for words in OWN_REFUSALS), str(e)
        assert not fits or numel * itemsize > limit // 4, f"a fitting record was refused: {e}"
        event("refused")
        return
    event("loaded")
    assert fits and numel * itemsize <= limit, "a record past its storage or budget loaded"
    assert w.shape == tuple(rec["size"])
    if numel:
        view = np.lib.stride_tricks.as_strided(
            stored[rec["offset"]:], shape=rec["size"],
            strides=[s * itemsize for s in rec["stride"]])
        np.testing.assert_array_equal(w.numpy(), view)


def test_storage_other_than_its_record_is_refused_before_torch_reads_it(tmp_path):
    """A storage's size is its record's: checked from the zip directory, before torch allocates
    the record (torch 2.13 compares them after reading; the old loader compared the claim with
    the file's size only)."""
    path = tmp_path / "short.pt"
    tensor_record(path, "FloatStorage", 64, 65, 0, [65], [1])
    with pytest.raises(S2Error, match="claims 260 bytes but its record holds 256"):
        read_pickle(path)


def test_zero_stride_views_within_the_budget_still_load(tmp_path):
    """YOLOv5's Detect keeps expanded (stride-0) anchor grids after an eval forward, and train.py
    pickles them: counted at their expanded size, they load."""
    grid = torch.arange(6, dtype=torch.float32).view(1, 3, 1, 1, 2).expand(1, 3, 80, 80, 2)
    path = tmp_path / "grid.pt"
    torch.save({"anchor_grid": [grid]}, path)
    loaded = read_pickle(path)["anchor_grid"][0]
    assert loaded.stride() == grid.stride() and torch.equal(loaded, grid)


def restrided_state(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A state dict of one-element tensors, each then BUILT with (its storage, 0, shape, zero
    strides): Tensor.__setstate__ calls set_() with them, past the rebuild checks."""
    storage = b"(" + _str("storage") + b"ctorch\nFloatStorage\n" + _str("0") + _str("cpu") + b"K\x01tQ"
    one = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00(K\x01t(K\x01t"
           + b"\x89ccollections\nOrderedDict\n)RtR")
    items = b"".join(_str(k) + one + b"(" + storage + b"K\x00" + _tuple(list(v))
                     + _tuple([0] * len(v)) + b"tb" for k, v in shapes.items())
    torch.save({"w": torch.zeros(1)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, b"\x80\x02}(" + items + b"u." if name.endswith("/data.pkl") else data)
    return path


def test_restrided_weights_are_counted_before_the_model_is_built(tmp_path):
    """The views cost nothing; the 44 M-parameter model they fill (177 MB) is checked first."""
    from s2trt.models import load_config
    from s2trt.models.yolo import plan_model

    cfg = load_config("yolov5s")
    cfg["width_multiple"] = 1.25
    shapes = plan_model(cfg).shapes
    path = restrided_state(tmp_path / "restrided.pt", shapes)
    state = read_pickle(path)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes  # set_() took the strides
    assert all(set(v.stride()) == {0} for v in state.values() if v.dim())
    with pytest.raises(S2Error, match=r"weights describe \d+ elements .* strides"):
        load_checkpoint(path, cfg=cfg)


def test_build_cannot_rewrite_an_allowed_function(tmp_path):
    """BUILD with a slot state is setattr on the object: on torch's own rebuild function it would
    replace its defaults for the whole process (and copy a stored dict into it per BUILD)."""
    fn = torch._utils._rebuild_tensor_v2
    saved = fn.__defaults__
    path = tmp_path / "defaults.pt"
    path.write_bytes(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}" + _str("__defaults__")
                     + b"(K\x01K\x02t" + b"s\x86b.")
    try:
        with pytest.raises(S2Error, match=r"sets the state of torch\._utils\._rebuild_tensor_v2"):
            read_pickle(path)
        assert fn.__defaults__ == saved
    finally:
        fn.__defaults__ = saved


# --- the cost model: what the budget charges bounds what unpickling allocates ----------------

leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                   st.text(max_size=40), st.binary(max_size=40))


def _repeat(inner):
    """Containers, and the same object referenced many times (memo references cost two bytes)."""
    many = st.integers(0, 3000)
    return st.one_of(
        st.lists(inner, max_size=8), st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=8),
        st.frozensets(st.integers() | st.text(max_size=8), max_size=8).map(set),
        st.builds(lambda x, n: [x] * n, inner, many),
        st.builds(lambda x, n: [set(range(n % 300))] * (n // 10) + [x], inner, many),
        st.builds(lambda n: [{"k": None} for _ in range(n)], many))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.recursive(leaves, _repeat, max_leaves=12), st.sampled_from([2, 4]))
def test_what_the_budget_charges_bounds_what_unpickling_allocates(tmp_path_factory, obj, protocol):
    """Python's own pickler writes the opcodes (protocol 2: sets and bytes through REDUCE of set
    and _codecs.encode; 4: EMPTY_SET, BINBYTES, MEMOIZE, frames); tracemalloc, the reference,
    measures what loading them allocates, which must stay below what the budget charged."""
    import tracemalloc

    from s2trt.models import checkpoint

    path = tmp_path_factory.mktemp("cost") / "obj.pt"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    budgets = []
    make = checkpoint._budget

    def keep(*a):
        budgets.append(make(*a))
        return budgets[-1]

    checkpoint._budget = keep
    try:
        for _ in range(2):  # the first load also fills the caches of torch, pytest and Hypothesis
            tracemalloc.start()
            try:
                read_pickle(path)  # a plain pickle: its object loads, then torch wants its magic number
            except S2Error as e:
                # protocol 2 writes b'' as builtins.bytes(), which the allow-list refuses
                assert any(w in str(e) for w in ("magic number", "claims", "allow-list")), str(e)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
    finally:
        checkpoint._budget = make
    event(f"peak {'<' if peak < 1 << 20 else '>='} 1 MB")
    # what torch.load and the test's tools allocate whatever the pickle: well under 256 KB
    assert peak <= budgets[-1].spent + (256 << 10), f"allocated {peak}, charged {budgets[-1].spent}"
