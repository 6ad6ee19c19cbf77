"""The CUDA kernels' own source run on the CPU (plugins/emulation/), so that CI without a GPU checks the
kernels' indexing, batch tiling, packed and element-wise paths and the host dispatch against the same
references as the GPU tests. Timing and the memory model are left to the GPU tests. A fake device in
the emulation also shows how the host code uses the runtime: queries, launch attributes, last error.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from plugin_helpers import check_against_references, kernels_build_dir, make_problem, prebuilt, run_kernel


class HostMemory:
    """The Device interface of test_plugin_kernel over NumPy arrays: the emulation takes host pointers."""

    torch = None

    def put(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, order="C", copy=True)

    def get(self, a: np.ndarray) -> np.ndarray:
        return a.copy()

    def ptr(self, a: np.ndarray) -> int:
        return a.ctypes.data

    def stream(self) -> int | None:
        return None

    def sync(self) -> None:
        pass


class HostMemoryOnStream(HostMemory):
    """As HostMemory, with a non-null stream handle: the host code then takes a real stream's path
    (programmatic launch where the device is 9.x). The emulation never dereferences it."""

    def stream(self) -> int:
        return 0x1000


class Emulation:
    """s2sa_forward's signature over s2sa_emulate_forward, plus the fake device's controls."""

    def __init__(self) -> None:
        path = kernels_build_dir() / "libs2sa_emulation.so"
        if not path.is_file() and prebuilt():
            pytest.skip("S2TRT_PLUGIN_BUILD was configured without -DS2TRT_EMULATION=ON")
        lib = ctypes.CDLL(str(path))
        lib.s2sa_emulate_forward.restype = ctypes.c_int
        lib.s2sa_emulate_forward.argtypes = ([ctypes.c_void_p] * 6 + [ctypes.c_int] * 5
                                             + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p])
        lib.s2sa_emulate_set_device.argtypes = [ctypes.c_int] * 4
        lib.s2sa_emulate_set_last_error.argtypes = [ctypes.c_int]
        lib.s2sa_emulate_set_capture.argtypes = [ctypes.c_int] * 3
        lib.s2sa_workspace_size.restype = ctypes.c_size_t
        lib.s2sa_workspace_size.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.s2sa_error_string.restype = ctypes.c_char_p
        lib.s2sa_error_string.argtypes = [ctypes.c_int]
        self.lib = lib

    def s2sa_workspace_size(self, b: int, c: int) -> int:
        return self.lib.s2sa_workspace_size(b, c)

    def s2sa_error_string(self, status: int) -> bytes:
        return self.lib.s2sa_error_string(status)

    def s2sa_forward(self, *args) -> int:
        return self.lib.s2sa_emulate_forward(*args)

    def set_device(self, ordinal: int, major: int = 9, fail_queries: bool = False,
                   refuse_programmatic: bool = False) -> None:
        """Each test takes its own ordinal: the library caches per device what it learnt."""
        self.lib.s2sa_emulate_set_device(ordinal, major, int(fail_queries), int(refuse_programmatic))

    def set_capture(self, status: int, runtime: int = 13000, driver: int = 13000) -> None:
        """What every stream answers to cudaStreamIsCapturing (-1: the query fails), and the CUDA runtime
        and driver versions (1000 * major + 10 * minor) the library sees."""
        self.lib.s2sa_emulate_set_capture(status, runtime, driver)


@pytest.fixture(scope="module")
def emu() -> Emulation:
    return Emulation()


# One CPU thread per CUDA thread and a barrier per shuffle: a few small cases, each for a reason.
CASES = [
    ((1, 16, 5, 7), np.float32),   # odd H*W: element-wise path
    ((1, 16, 5, 7), np.float16),
    ((9, 8, 1, 1), np.float16),    # 1x1; B = 9 leaves partial tiles of 8 (hidden) and 4 (attend)
    ((5, 36, 3, 8), np.float32),   # C not a multiple of 8; H*W = 24: 4-float packs
    ((5, 36, 3, 8), np.float16),   # 8-half packs
    ((1, 160, 2, 4), np.float32),  # C/4 = 40 > 32: lanes loop twice over a weight row
    ((3, 16, 4, 4), np.float16),
]


@pytest.mark.parametrize(("shape", "dtype"), CASES,
                         ids=[f"{'x'.join(map(str, s))}-{np.dtype(d).name}" for s, d in CASES])
def test_emulated_kernels_match_references(emu, shape, dtype):
    xs, w1, w2 = make_problem(*shape, dtype, seed=sum(shape))
    check_against_references(run_kernel(emu, HostMemory(), xs, w1, w2), xs, w1, w2)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_emulated_unaligned_tensors_take_the_elementwise_path(emu, dtype):
    xs, w1, w2 = make_problem(2, 16, 4, 4, dtype, seed=21)
    check_against_references(run_kernel(emu, HostMemory(), xs, w1, w2, misalign=True), xs, w1, w2)


# ---- how the host code uses the runtime (issue 14, item 8) -------------------------------------------

def test_compute_capability_is_queried_once_per_device_not_per_forward(emu):
    xs, w1, w2 = make_problem(2, 8, 2, 4, np.float32, seed=1)
    emu.set_device(ordinal=5, major=9)
    for _ in range(4):
        check_against_references(run_kernel(emu, HostMemoryOnStream(), xs, w1, w2), xs, w1, w2)
    assert emu.lib.s2sa_emulate_device_queries() == 1
    assert emu.lib.s2sa_emulate_programmatic_launches() == 4 * 2  # launches 2 and 3 of each forward
    emu.set_device(ordinal=6, major=8)  # Ampere: no programmatic launch
    run_kernel(emu, HostMemoryOnStream(), xs, w1, w2)
    assert emu.lib.s2sa_emulate_device_queries() == 1
    assert emu.lib.s2sa_emulate_programmatic_launches() == 0


@pytest.mark.parametrize("pending", [0, 2], ids=["none-pending", "unrelated-pending"])
def test_failed_device_query_leaves_other_errors_alone(emu, pending):
    """An error already waiting in the thread's last-error slot belongs to someone else's launch: the
    forward must not clear it (TensorRT would miss it), nor leave an error of its own behind when there
    was none. (The slot holds one error and a failed call overwrites it, as in the real runtime, so
    "an error is still pending" is what can be kept.)"""
    xs, w1, w2 = make_problem(1, 8, 3, 3, np.float32, seed=2)
    emu.set_device(ordinal=7 + pending, fail_queries=True)
    emu.lib.s2sa_emulate_set_last_error(pending)
    check_against_references(run_kernel(emu, HostMemoryOnStream(), xs, w1, w2), xs, w1, w2)
    assert (emu.lib.s2sa_emulate_last_error() != 0) == (pending != 0)
    assert emu.lib.s2sa_emulate_programmatic_launches() == 0  # capability unknown: ordinary launches


@pytest.mark.parametrize("pending", [0, 2], ids=["none-pending", "unrelated-pending"])
def test_refused_programmatic_launch_is_retried_as_an_ordinary_one(emu, pending):
    xs, w1, w2 = make_problem(3, 8, 2, 4, np.float16, seed=3)
    emu.set_device(ordinal=10 + pending, major=9, refuse_programmatic=True)
    emu.lib.s2sa_emulate_set_last_error(pending)
    check_against_references(run_kernel(emu, HostMemoryOnStream(), xs, w1, w2), xs, w1, w2)
    assert (emu.lib.s2sa_emulate_last_error() != 0) == (pending != 0)


# ---- programmatic launch under CUDA graph capture (issue 25, item 6) ------------------------------------

# cudaStreamCaptureStatus
CAPTURE_NONE, CAPTURE_ACTIVE, CAPTURE_INVALIDATED = 0, 1, 2


@pytest.fixture
def capturing(emu):
    """The fake streams report an active capture; back to no capture after the test."""
    yield emu
    emu.set_capture(CAPTURE_NONE)


# (runtime, driver): graph edges that carry a programmatic dependency exist from CUDA 12.3 on, in both.
CAPTURE_VERSIONS = [((13000, 13000), True), ((12030, 12030), True), ((12080, 12020), False),
                    ((12020, 12080), False), ((12000, 12000), False)]


@pytest.mark.parametrize(("versions", "programmatic"), CAPTURE_VERSIONS,
                         ids=[f"runtime{r}-driver{d}" for (r, d), _ in CAPTURE_VERSIONS])
def test_capture_gets_programmatic_launch_only_where_cuda_can_record_it(capturing, versions, programmatic):
    """Where the runtime or the driver predates CUDA 12.3 a programmatic launch into a capturing stream
    would be refused and invalidate the capture (a retry cannot repair that): the forward must decide
    before launching and launch ordinarily, leaving the capture intact."""
    xs, w1, w2 = make_problem(3, 8, 2, 4, np.float32, seed=4)
    capturing.set_device(ordinal=20 + CAPTURE_VERSIONS.index((versions, programmatic)), major=9)
    capturing.set_capture(CAPTURE_ACTIVE, *versions)
    capturing.lib.s2sa_emulate_set_last_error(0)
    check_against_references(run_kernel(capturing, HostMemoryOnStream(), xs, w1, w2), xs, w1, w2)
    assert capturing.lib.s2sa_emulate_capture_status() == CAPTURE_ACTIVE
    assert capturing.lib.s2sa_emulate_programmatic_launches() == (2 if programmatic else 0)
    assert capturing.lib.s2sa_emulate_last_error() == 0


@pytest.mark.parametrize("pending", [0, 2], ids=["none-pending", "unrelated-pending"])
def test_unknown_capture_state_means_ordinary_launches(capturing, pending):
    """A capture query that fails says nothing about the capture: ordinary launches are always correct.
    The query's own error is not left behind, someone else's stays."""
    xs, w1, w2 = make_problem(2, 8, 2, 4, np.float16, seed=5)
    capturing.set_device(ordinal=30 + pending, major=9)
    capturing.set_capture(-1)
    capturing.lib.s2sa_emulate_set_last_error(pending)
    check_against_references(run_kernel(capturing, HostMemoryOnStream(), xs, w1, w2), xs, w1, w2)
    assert capturing.lib.s2sa_emulate_programmatic_launches() == 0
    assert (capturing.lib.s2sa_emulate_last_error() != 0) == (pending != 0)


def test_capture_on_old_cuda_stays_intact_before_sm90(capturing):
    """Before sm_90 no programmatic launch is attempted, whatever the capture: the old-CUDA capture
    stays intact and the forward succeeds."""
    xs, w1, w2 = make_problem(2, 8, 2, 4, np.float32, seed=6)
    capturing.set_device(ordinal=33, major=8)
    capturing.set_capture(CAPTURE_ACTIVE, 12000, 12000)
    check_against_references(run_kernel(capturing, HostMemoryOnStream(), xs, w1, w2), xs, w1, w2)
    assert capturing.lib.s2sa_emulate_capture_status() == CAPTURE_ACTIVE
    assert capturing.lib.s2sa_emulate_programmatic_launches() == 0
