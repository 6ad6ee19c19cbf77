"""The S2SplitAttention kernel through its C ABI (ctypes), against the float64 reference of
docs/DESIGN.md §1 (tests/support/reference.py) and the op's NumPy implementation that the exporter uses
(export/plugin_reference.py).

Argument checking and the references themselves run on the CPU; everything that touches device memory
is marked gpu. Device memory comes from torch (CUDA build) or cupy, whichever is installed.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from plugin_helpers import (
    CUDA_SUCCESS,
    TOL,
    Device,
    check_against_references,
    kernels_library,
    make_problem,
    run_kernel,
)
from reference import split_attention as ref_split_attention

from s2trt.export import plugin_reference

CUDA_ERROR_INVALID_VALUE = 1


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.s2sa_workspace_size.restype = ctypes.c_size_t
    lib.s2sa_workspace_size.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.s2sa_forward.restype = ctypes.c_int
    lib.s2sa_forward.argtypes = ([ctypes.c_void_p] * 6 + [ctypes.c_int] * 5
                                 + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p])
    lib.s2sa_error_string.restype = ctypes.c_char_p
    lib.s2sa_error_string.argtypes = [ctypes.c_int]
    return lib


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    return load(kernels_library())


@pytest.fixture(scope="module")
def dev() -> Device:
    return Device()


# ---- CPU: the C ABI's contract, checked before any launch -------------------------------------------

def test_workspace_size_holds_two_aligned_fp32_vectors(lib):
    for b, c in ((1, 64), (32, 512), (3, 1024), (7, 12)):
        assert lib.s2sa_workspace_size(b, c) == 2 * (-(-b * c * 4 // 256) * 256)
    assert lib.s2sa_workspace_size(0, 512) == 0


def test_invalid_arguments_are_refused_before_any_launch(lib):
    # Fake, aligned, never dereferenced addresses: a launch would fail with a device error, not 1.
    p = 1 << 20
    good = {"B": 2, "C": 64, "H": 5, "W": 7, "dtype": 0, "ws": p, "ws_bytes": lib.s2sa_workspace_size(2, 64)}

    def call(**change) -> int:
        a = {**good, **change}
        return lib.s2sa_forward(a.get("x1", p), p, p, p, a.get("w1", p), p, a["B"], a["C"], a["H"], a["W"],
                                a["dtype"], a["ws"], a["ws_bytes"], None)

    for change in ({"C": 6}, {"C": 0}, {"B": -1}, {"H": -1}, {"dtype": 2}, {"ws_bytes": 16}, {"ws": p + 8},
                   {"x1": None}, {"w1": p + 4}, {"ws": None}, {"H": 1 << 15, "W": 1 << 15}):
        assert call(**change) == CUDA_ERROR_INVALID_VALUE, change
    assert call(B=0) == CUDA_SUCCESS  # nothing to compute
    assert call(H=0) == CUDA_SUCCESS
    assert lib.s2sa_error_string(CUDA_ERROR_INVALID_VALUE) == b"invalid argument"


# ---- CPU: the op's NumPy implementation agrees with the float64 reference of docs/DESIGN.md §1 -------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 16, 1, 1), (3, 12, 4, 6)])
def test_plugin_reference_matches_float64_reference(shape, dtype):
    xs, w1, w2 = make_problem(*shape, dtype, seed=3)
    # ONNX FLOATS attributes arrive as flat lists.
    got = plugin_reference.split_attention(*xs, shape[1], list(w1.ravel()), list(w2.ravel()))
    assert got.dtype == dtype and got.shape == shape
    want = ref_split_attention(*xs, w1, w2)
    np.testing.assert_allclose(got.astype(np.float64), want, **TOL[np.dtype(dtype)])


def test_plugin_reference_rejects_a_channel_mismatch():
    xs, w1, w2 = make_problem(1, 8, 2, 2, np.float32)
    with pytest.raises(ValueError, match="channels"):
        plugin_reference.split_attention(*xs, 16, w1.ravel(), w2.ravel())


# ---- GPU: the kernel against both references ---------------------------------------------------------

SHAPES = [
    (1, 64, 5, 7), (2, 64, 1, 1), (3, 128, 13, 20), (17, 96, 20, 20),  # odd H*W, 1x1, C not a multiple of 8
    (1, 512, 20, 20), (8, 512, 20, 20), (32, 512, 20, 20),              # the model's shapes at 640 input
    (5, 1024, 13, 20), (32, 1024, 5, 7), (4, 256, 40, 40),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_kernel_matches_references(lib, dev, shape, dtype):
    xs, w1, w2 = make_problem(*shape, dtype, seed=sum(shape))
    check_against_references(run_kernel(lib, dev, xs, w1, w2), xs, w1, w2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_unaligned_tensors_take_the_elementwise_path(lib, dev, dtype):
    xs, w1, w2 = make_problem(3, 64, 20, 20, dtype, seed=11)
    check_against_references(run_kernel(lib, dev, xs, w1, w2, misalign=True), xs, w1, w2)


@pytest.mark.gpu
def test_saturated_softmax_stays_finite(lib, dev):
    xs, w1, w2 = make_problem(2, 128, 8, 8, np.float32, seed=5, logit_scale=200.0)
    # Logits of a few hundred carry FP32 rounding of ~1e-4, which moves near-tied branch weights by as
    # much: the point here is a stable softmax (no inf/NaN, the right branch wins), not FP32 accuracy.
    tol = {"rtol": 1e-4, "atol": 1e-3}
    check_against_references(run_kernel(lib, dev, xs, w1, w2), xs, w1, w2, tol)


@pytest.mark.gpu
def test_repeated_runs_are_bitwise_identical(lib, dev):
    xs, w1, w2 = make_problem(8, 512, 20, 20, np.float16, seed=9)
    assert np.array_equal(run_kernel(lib, dev, xs, w1, w2), run_kernel(lib, dev, xs, w1, w2))


@pytest.mark.gpu
def test_forward_replays_from_a_cuda_graph(lib, dev):
    """TensorRT may capture enqueue into a CUDA graph: the launches (with their programmatic
    dependencies on sm_90) must capture and replay."""
    if dev.torch is None:
        pytest.skip("graph capture is checked through torch.cuda.graph")
    torch = dev.torch
    xs, w1, w2 = make_problem(4, 256, 20, 20, np.float16, seed=13)
    run_kernel(lib, dev, xs, w1, w2)  # loads the kernels before capture, as a first enqueue would
    d_x = [dev.put(x) for x in xs]
    d_out = dev.put(np.full(xs[0].shape, np.nan, np.float16))
    d_w1, d_w2 = dev.put(w1), dev.put(w2)
    ws = lib.s2sa_workspace_size(4, 256)
    d_ws = dev.put(np.zeros(ws, np.uint8))
    graph = torch.cuda.CUDAGraph()
    dev.sync()
    with torch.cuda.graph(graph):
        capture = torch.cuda.current_stream().cuda_stream
        status = lib.s2sa_forward(*(dev.ptr(t) for t in d_x), dev.ptr(d_out), dev.ptr(d_w1), dev.ptr(d_w2),
                                  4, 256, 20, 20, 1, dev.ptr(d_ws), ws, capture)
    assert status == CUDA_SUCCESS, lib.s2sa_error_string(status).decode()
    d_out.fill_(float("nan"))
    graph.replay()
    dev.sync()
    check_against_references(dev.get(d_out), xs, w1, w2)
