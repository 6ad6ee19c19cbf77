"""The GPU letterbox kernel (plugins/s2Preprocess/, called through runtime/gpu_preprocess.py) against the
CPU preprocessing it replaces (runtime/preprocess.py: OpenCV's INTER_LINEAR resize, pad 114, /255).

The contract: the same tensor within one 8-bit step per pixel (1/255: OpenCV's vectorised and scalar
paths already differ by that much), the same placement (geometry, padding) exactly. On the CPU the kernel's
own source runs under the thread emulation (plugins/emulation/); on a GPU the real launch is checked.
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest
from paths import REPO
from plugin_helpers import kernels_build_dir, kernels_library, nvcc_path, prebuilt, toolchain_missing

from s2trt.detect.letterbox import letterbox_geometry, preprocess
from s2trt.errors import S2Error
from s2trt.runtime.backends.gpu_letterbox import DeviceFrame, GpuLetterbox

STEP = 1 / 255
# FP16 output: one more rounding, at most half an FP16 ulp of a value <= 1 (2^-12).
TOL = {np.float32: STEP + 1e-6, np.float16: STEP + 2.0 ** -12 + 1e-6}


@pytest.fixture(scope="module")
def emulated() -> GpuLetterbox:
    path = kernels_build_dir() / "libs2sa_emulation.so"
    if not path.is_file() and prebuilt():
        pytest.skip("S2TRT_PLUGIN_BUILD was configured without -DS2TRT_EMULATION=ON")
    return GpuLetterbox(path, entry="s2pp_emulate_letterbox")


@pytest.fixture(scope="module")
def kernels() -> GpuLetterbox:
    return GpuLetterbox(kernels_library())


def frames_of(images: list[np.ndarray]) -> list[DeviceFrame]:
    """The emulation reads host memory: a frame's pointer is its NumPy data, its pitch the row stride."""
    return [DeviceFrame(a.ctypes.data, a.shape[0], a.shape[1], a.strides[0]) for a in images]


def run_emulated(lb: GpuLetterbox, images: list[np.ndarray], imgsz, dtype=np.float32, **kw):
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    out = np.full((len(images), 3, h, w), np.nan, dtype)
    infos = lb(frames_of(images), out.ctypes.data, imgsz, half=dtype == np.float16, **kw)
    return out, infos


def check_matches_cpu(out: np.ndarray, infos, images, imgsz, scaleup: bool = True, **kw) -> None:
    want, want_infos = preprocess(images, imgsz, scaleup=scaleup, **kw)
    assert out.shape == want.shape and np.isfinite(out).all()
    diff = np.abs(out.astype(np.float64) - want.astype(np.float64))
    assert diff.max() <= TOL[out.dtype.type], f"max diff {diff.max() * 255:.3f} levels"
    # Placement is exact: every pixel outside the resized area is the pad value, bit for bit.
    h, w = want.shape[2:]
    for i, img in enumerate(images):
        _, (nw, nh), (dw, dh) = letterbox_geometry(img.shape[:2], (h, w), False, scaleup)
        top, left = round(dh - 0.1), round(dw - 0.1)
        pad = np.ones((h, w), bool)
        pad[top:top + nh, left:left + nw] = False
        assert np.array_equal(out[i][:, pad], want[i][:, pad].astype(out.dtype)), f"frame {i}: padding"
    assert infos == want_infos


def random_images(shapes, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


CASES = [
    ((37, 53), (64, 64)),    # odd sizes, upscaled
    ((1, 77), (64, 96)),     # one row
    ((1, 2000), (64, 64)),   # one row that rounds to 0.032 rows: kept as one, as preprocess.py does
    ((91, 1), (64, 64)),     # one column
    ((1, 1), (32, 32)),      # one pixel fills the whole resized area
    ((64, 96), (64, 96)),    # same size: no resize, exact copy
    ((128, 192), (64, 96)),  # exactly half: OpenCV switches INTER_LINEAR to INTER_AREA there
    ((200, 129), (64, 64)),  # non-integer downscale
    ((45, 160), (96, 64)),   # wide frame into a tall input
]


@pytest.mark.parametrize(("shape", "imgsz"), CASES, ids=[f"{s[0]}x{s[1]}-to-{i[0]}x{i[1]}" for s, i in CASES])
def test_emulated_kernel_matches_cpu_preprocessing(emulated, shape, imgsz):
    images = random_images([shape], seed=sum(shape))
    out, infos = run_emulated(emulated, images, imgsz)
    check_matches_cpu(out, infos, images, imgsz)


@pytest.mark.parametrize("shape", [(37, 53), (200, 129), (1, 77)], ids=["37x53", "200x129", "1x77"])
def test_emulated_kernel_is_opencvs_fixed_point_arithmetic(emulated, shape):
    """Beyond the one-step contract: the kernel rounds weights and sums as cv2.resize's 8-bit path does,
    so nearly every pixel is identical (float bilinear weights agreed on only 87-91 %)."""
    images = random_images([shape], seed=1)
    out, _ = run_emulated(emulated, images, 64)
    want, _ = preprocess(images, 64)
    assert np.mean(np.abs(out - want) < 1e-6) >= 0.99


def test_emulated_batch_of_mixed_sizes_spans_two_launches(emulated):
    # 17 frames: the kernel takes 16 per launch, so the 17th lands through the second launch's offset.
    shapes = [(13 + 7 * i, 91 - 4 * i) for i in range(16)] + [(1, 33)]
    images = random_images(shapes, seed=5)
    out, infos = run_emulated(emulated, images, (32, 64))
    check_matches_cpu(out, infos, images, (32, 64))


def test_emulated_fp16_output(emulated):
    images = random_images([(37, 53), (20, 70)], seed=7)
    out, infos = run_emulated(emulated, images, 64, dtype=np.float16)
    assert out.dtype == np.float16
    check_matches_cpu(out, infos, images, 64)


def test_emulated_pitched_frames_and_no_upscaling(emulated):
    # A crop of a larger frame (rows farther apart than 3 * width); scaleup=False keeps it small.
    big = random_images([(50, 80)], seed=9)[0]
    images = [big[5:30, 7:40], random_images([(90, 20)], seed=10)[0]]
    assert images[0].strides[0] > 3 * images[0].shape[1]
    out, infos = run_emulated(emulated, images, 64, scaleup=False)
    check_matches_cpu(out, infos, images, 64, scaleup=False)


def test_emulated_pad_value(emulated):
    images = random_images([(20, 64)], seed=11)
    out, _ = run_emulated(emulated, images, 64, pad_value=0)
    want, _ = preprocess(images, 64, pad_value=0)
    np.testing.assert_allclose(out, want, atol=TOL[np.float32])
    assert (out[0, :, 0, :] == 0).all()  # the top padding rows


def test_geometry_is_the_python_letterbox_geometry(kernels):
    """Placement is exact, including Python's round-half-to-even where a size lands on .5."""
    rng = np.random.default_rng(0)
    sizes = [(5, 1280), (3, 1280), (7, 9), (480, 640), (1080, 1920), (2, 3), (1279, 1), (1, 5000)]
    sizes += [tuple(int(v) for v in rng.integers(1, 3000, 2)) for _ in range(300)]
    for (h, w) in sizes:
        for imgsz in ((640, 640), (384, 640), (64, 32)):
            for scaleup in (True, False):
                _, (nw, nh), (dw, dh) = letterbox_geometry((h, w), imgsz, False, scaleup)
                want = (nh, nw, round(dh - 0.1), round(dw - 0.1))
                assert kernels.geometry((h, w), imgsz, scaleup) == want, ((h, w), imgsz, scaleup)
    with pytest.raises(S2Error, match="positive"):
        kernels.geometry((0, 5), 64)


def test_bad_frames_are_refused_before_anything_is_written(emulated):
    images = random_images([(20, 30)], seed=1)
    with pytest.raises(S2Error, match="empty"):
        emulated([DeviceFrame(images[0].ctypes.data, 0, 30)], 0, 64)
    with pytest.raises(S2Error, match="stride"):
        run_emulated(emulated, images, 60)
    with pytest.raises(S2Error, match="pitch"):
        emulated([DeviceFrame(images[0].ctypes.data, 20, 30, 89)], 0, 64)
    # The C entry point checks every frame before the first launch: out stays untouched.
    lib = ctypes.CDLL(str(emulated.path))
    out = np.full((2, 3, 64, 64), np.nan, np.float32)
    good = images[0]
    ptrs = (ctypes.c_void_p * 2)(good.ctypes.data, good.ctypes.data)
    ints = ctypes.c_int * 2
    # The second frame claims a row pitch shorter than its rows.
    args = (ptrs, ints(20, 20), ints(30, 30), ints(0, 60), 2, ctypes.c_void_p(out.ctypes.data),
            64, 64, 0, 114, 1, None)
    assert lib.s2pp_emulate_letterbox(*args) == 1  # cudaErrorInvalidValue
    assert np.isnan(out).all()
    for change in ({8: 2}, {9: 256}, {9: -1}, {6: 0}):  # dtype, pad value, size
        bad = list(args)
        bad[3] = None
        for i, v in change.items():
            bad[i] = v
        assert lib.s2pp_emulate_letterbox(*bad) == 1, change
    assert np.isnan(out).all()


# ---- the kernel's arithmetic (issue 25, item 7) -------------------------------------------------------

def cv2_axis(src: int, resized: int) -> tuple[np.ndarray, ...]:
    """cv2.resize's INTER_LINEAR source pixels and 11-bit weights along one axis, from its formula:
    scale = 1 / (resized / src) and fx = (d + 0.5) * scale - 0.5 in double (two roundings: NumPy does
    not fuse them), rounded to float; cvFloor; edges clamped; weights rint(w * 2048) in float."""
    scale = 1.0 / (resized / src)
    f = ((np.arange(resized, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f)
    frac = (f - first).astype(np.float32)
    first = first.astype(np.int64)
    clamped = (first < 0) | (first >= src - 1)
    first = np.clip(first, 0, src - 1)
    frac[clamped] = 0
    w0 = np.rint((np.float32(1) - frac) * np.float32(2048))
    w1 = np.rint(frac * np.float32(2048))
    return first, np.minimum(first + 1, src - 1), w0.astype(np.int64), w1.astype(np.int64)


def test_emulated_source_coordinates_are_cv2s_double_arithmetic(emulated):
    """The kernel computes cv2's double-precision source coordinate with integers only (no FP64 per
    pixel): bit for bit the same pixels and weights, over every source size up to 1300 into the usual
    input sizes and 3000 random size pairs up to 8K, covering upscaling, downscaling and exact ratios."""
    lib = ctypes.CDLL(str(emulated.path))
    rng = np.random.default_rng(25)
    pairs = [(src, r) for src in range(1, 1301) for r in (1, 3, 64, 320, 384, 480, 640, 1280)]
    pairs += [tuple(int(v) for v in p) for p in rng.integers(1, 8192, (3000, 2))]
    for src, resized in pairs:
        got = [np.zeros(resized, np.int32) for _ in range(4)]
        lib.s2pp_emulate_axis(src, resized, *(ctypes.c_void_p(a.ctypes.data) for a in got))
        for name, g, want in zip(("first", "second", "weight0", "weight1"), got, cv2_axis(src, resized),
                                 strict=True):
            bad = np.flatnonzero(g != want)
            assert not bad.size, f"{src} -> {resized}, {name}[{bad[0]}]: {g[bad[0]]} != {want[bad[0]]}"


@pytest.mark.parametrize("arch", ["86", "87", "89"])
def test_letterbox_kernel_has_no_fp64_instructions(arch):
    """FP64 runs at 1/64 of the FP32 rate on sm_86/87/89 (A10/RTX 30, Jetson Orin, L4/RTX 40): the
    letterbox kernel, one thread per output pixel, must not use it (nvcc's PTX for those GPUs)."""
    reason = toolchain_missing()
    if reason:
        pytest.skip(reason)
    source = REPO / "plugins" / "s2Preprocess" / "s2PreprocessKernel.cu"
    r = subprocess.run([nvcc_path(), "-std=c++17", "-ptx", f"-arch=sm_{arch}", str(source), "-o", "-"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ".entry" in r.stdout and "letterboxKernel" in r.stdout
    fp64 = [line.strip() for line in r.stdout.splitlines() if ".f64" in line]
    assert not fp64, f"sm_{arch}: {len(fp64)} FP64 lines, e.g. {fp64[:3]}"


def test_missing_library_says_how_to_build_it(tmp_path):
    with pytest.raises(S2Error, match="cmake -S plugins"):
        GpuLetterbox(tmp_path / "libs2trt_kernels.so")


# ---- GPU: the real launch ---------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_kernel_matches_cpu_preprocessing_on_gpu(kernels, dtype):
    from plugin_helpers import Device

    dev = Device()
    shapes = [(1080, 1920), (37, 53), (1, 77), (91, 1), (640, 640), (1280, 1280), (720, 1280), (480, 640)]
    shapes += [(13 + 7 * i, 91 - 4 * i) for i in range(10)]  # 18 frames: two launches
    images = random_images(shapes, seed=3)
    d_frames = [dev.put(img) for img in images]
    d_out = dev.put(np.full((len(images), 3, 640, 640), np.nan, dtype))
    frames = [DeviceFrame(dev.ptr(d), img.shape[0], img.shape[1])
              for d, img in zip(d_frames, images, strict=True)]
    dev.sync()  # the uploads ran on the default stream, the kernel runs on another
    infos = kernels(frames, dev.ptr(d_out), 640, half=dtype == np.float16, stream=dev.stream())
    dev.sync()
    check_matches_cpu(dev.get(d_out), infos, images, 640)
