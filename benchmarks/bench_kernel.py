"""S2SplitAttention CUDA kernel vs PyTorch at the model's shapes (C=512, 20x20 at 640 input); with
--preprocess, the GPU letterbox kernel vs runtime/preprocess.py on the CPU.

    python benchmarks/bench_kernel.py                       # after building plugins/build (see below)
    python benchmarks/bench_kernel.py --lib path/to/libs2trt_kernels.so --batches 1 8 32 --no-compile
    python benchmarks/bench_kernel.py --preprocess --frames 8 --frame-size 1080 1920  # CPU part: anywhere

Build the library first (on any machine with nvcc; copy it to the GPU machine if needed):
    cmake -S plugins -B plugins/build -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build plugins/build -j2

Columns, all in microseconds per forward:
  kernel graph   s2sa_forward launched 20x inside one CUDA graph, replayed: GPU time per forward
  kernel stream  s2sa_forward called from Python in a loop (adds ctypes + launch overhead)
  torch eager    the same math as plain PyTorch ops, called in a loop
  torch graph    the eager ops captured 20x in one CUDA graph
  compile graph  torch.compile of the same function, captured 20x in one CUDA graph
Bandwidth: the bytes a two-pass algorithm must move (inputs read twice, output written once, FP32
weights read once) over the kernel-graph time, against the card's peak from the CUDA driver.
Inputs stay L2-resident between iterations at small batch, as they would after the producing layer.
S2SA_NO_PDL=1 (or --no-pdl) disables programmatic dependent launch, to measure what it brings.

--preprocess, milliseconds per batch of --frames random frames into a --imgsz FP32 input:
  cpu preprocess   preprocess() (OpenCV resize + NumPy), best of --reps, OpenCV's own threads
  cpu + h2d        that, plus the copy of the float32 batch from pinned memory to the GPU
  gpu up+kernel    the uint8 frames from pinned memory to the GPU, then s2pp_letterbox (CUDA events)
  gpu kernel       s2pp_letterbox alone
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIB = ROOT / "plugins" / "build" / "libs2trt_kernels.so"
GRAPH_REPS = 20


def torch_math(x1, x2, x3, w1, w2):
    """docs/DESIGN.md §1 step 4 with PyTorch ops in the inputs' dtype, as a model's user would run it."""
    import torch

    b, c = x1.shape[:2]
    a = (x1 + x2 + x3).sum(dim=(2, 3))
    hat = torch.nn.functional.gelu(a @ w1.t()) @ w2.t()
    bar = hat.view(b, 3, c).softmax(dim=1)[..., None, None]
    return bar[:, 0] * x1 + bar[:, 1] * x2 + bar[:, 2] * x3


def load_kernels(path: Path) -> ctypes.CDLL:
    if not path.is_file():
        raise SystemExit(f"{path} not found: build it with cmake (see the top of {Path(__file__).name}) "
                         "or pass --lib")
    lib = ctypes.CDLL(str(path))
    lib.s2sa_workspace_size.restype = ctypes.c_size_t
    lib.s2sa_workspace_size.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.s2sa_forward.restype = ctypes.c_int
    lib.s2sa_forward.argtypes = ([ctypes.c_void_p] * 6 + [ctypes.c_int] * 5
                                 + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p])
    lib.s2sa_error_string.restype = ctypes.c_char_p
    return lib


def peak_bandwidth_gbs() -> float | None:
    """Memory clock x bus width x 2 (DDR), from the CUDA driver of device 0."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        dev, clock_khz, bus_bits = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        # 36: CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE (kHz), 37: CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH
        ok = (cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
              and cuda.cuDeviceGetAttribute(ctypes.byref(clock_khz), 36, dev) == 0
              and cuda.cuDeviceGetAttribute(ctypes.byref(bus_bits), 37, dev) == 0)
    except OSError:
        return None
    return 2.0 * clock_khz.value * 1e3 * bus_bits.value / 8 / 1e9 if ok and clock_khz.value else None


def time_loop(torch, fn, iters: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def time_graph(torch, fn, replays: int = 50) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(GRAPH_REPS):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (replays * GRAPH_REPS)


def bench_case(torch, lib, batch: int, channels: int, size: int, dtype, compile_: bool, peak: float | None):
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (batch, channels, size, size)
    xs = [torch.randn(shape, device="cuda", dtype=dtype, generator=gen) for _ in range(3)]
    scale = 1.0 / (channels * 3 * size * size) ** 0.5
    w1 = torch.randn(channels, channels, device="cuda", generator=gen) * scale
    w2 = torch.randn(3 * channels, channels, device="cuda", generator=gen) * (2.0 / channels ** 0.5)
    out = torch.empty_like(xs[0])
    ws_bytes = lib.s2sa_workspace_size(batch, channels)
    ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device="cuda")
    code = 1 if dtype == torch.float16 else 0

    def kernel():
        status = lib.s2sa_forward(*(x.data_ptr() for x in xs), out.data_ptr(), w1.data_ptr(), w2.data_ptr(),
                                  batch, channels, size, size, code, ws.data_ptr(), ws_bytes,
                                  torch.cuda.current_stream().cuda_stream)
        if status:
            raise RuntimeError(f"s2sa_forward: {lib.s2sa_error_string(status).decode()}")

    w1t, w2t = w1.to(dtype), w2.to(dtype)

    def eager():
        return torch_math(*xs, w1t, w2t)

    kernel()
    torch.cuda.synchronize()
    exact = torch_math(*(x.float() for x in xs), w1, w2)
    max_err = (out.float() - exact).abs().max().item()

    row = {"dtype": str(dtype).replace("torch.", ""), "batch": batch,
           "kernel graph": time_graph(torch, kernel), "kernel stream": time_loop(torch, kernel),
           "torch eager": time_loop(torch, eager), "torch graph": time_graph(torch, eager)}
    if compile_:
        compiled = torch.compile(torch_math, dynamic=False)
        row["compile graph"] = time_graph(torch, lambda: compiled(*xs, w1t, w2t))
    moved = 7 * xs[0].numel() * xs[0].element_size() + 4 * channels * channels * 4
    row["GB/s"] = moved / (row["kernel graph"] * 1e-6) / 1e9
    row["% peak"] = 100.0 * row["GB/s"] / peak if peak else float("nan")
    row["max |err|"] = max_err
    return row


def bench_preprocess(args) -> None:
    import time

    import cv2
    import numpy as np

    from s2trt.detect.letterbox import preprocess

    rng = np.random.default_rng(0)
    fh, fw = args.frame_size
    frames = [rng.integers(0, 256, (fh, fw, 3), dtype=np.uint8) for _ in range(args.frames)]
    out = np.empty((args.frames, 3, args.imgsz, args.imgsz), np.float32)
    cpu = []
    for _ in range(args.reps):
        start = time.perf_counter()
        preprocess(frames, args.imgsz, out=out)
        cpu.append((time.perf_counter() - start) * 1e3)
    row = {"frames": f"{args.frames}x{fh}x{fw}", "cpu preprocess": min(cpu)}
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if gpu:
        from s2trt.runtime.backends.gpu_letterbox import DeviceFrame, GpuLetterbox

        letterbox = GpuLetterbox(args.lib)
        host_frames = [torch.from_numpy(f).pin_memory() for f in frames]
        dev_frames = [torch.empty_like(f, device="cuda") for f in host_frames]
        host_out = torch.from_numpy(out).pin_memory()
        dev_out = torch.empty(out.shape, dtype=torch.float32, device="cuda")
        stream = torch.cuda.current_stream().cuda_stream
        descs = [DeviceFrame(d.data_ptr(), fh, fw) for d in dev_frames]

        def kernel():
            letterbox(descs, dev_out.data_ptr(), args.imgsz, stream=stream)

        def upload_and_kernel():
            for h, d in zip(host_frames, dev_frames, strict=True):
                d.copy_(h, non_blocking=True)
            kernel()

        h2d = time_loop(torch, lambda: dev_out.copy_(host_out, non_blocking=True), 50)
        row["cpu + h2d"] = min(cpu) + h2d / 1e3
        row["gpu up+kernel"] = time_loop(torch, upload_and_kernel, 50) / 1e3
        row["gpu kernel"] = time_loop(torch, kernel, 50) / 1e3
        device = torch.cuda.get_device_properties(0).name
    else:
        device = "no CUDA device: CPU column only"
    print(f"\n{device}; OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), {os.cpu_count()} CPUs; "
          f"input {args.imgsz}x{args.imgsz} FP32; {platform.node()}\n")
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(v if isinstance(v, str) else f"{v:.2f}" for v in row.values()) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", type=Path, default=DEFAULT_LIB,
                    help="libs2trt_kernels.so (default: %(default)s)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=["float32", "float16"])
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--size", type=int, default=20, help="H = W (20 at 640 input, stride 32)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes of compilation)")
    ap.add_argument("--no-pdl", action="store_true", help="disable programmatic dependent launch")
    ap.add_argument("--peak-gbs", type=float, help="peak memory bandwidth, when the driver cannot tell")
    ap.add_argument("--preprocess", action="store_true", help="benchmark the GPU letterbox kernel instead")
    ap.add_argument("--frames", type=int, default=8, help="--preprocess: frames per batch")
    ap.add_argument("--frame-size", type=int, nargs=2, default=[1080, 1920], metavar=("H", "W"))
    ap.add_argument("--imgsz", type=int, default=640, help="--preprocess: network input size")
    ap.add_argument("--reps", type=int, default=5, help="--preprocess: CPU repetitions (best is kept)")
    args = ap.parse_args()
    if args.preprocess:
        bench_preprocess(args)
        return
    if args.no_pdl:
        os.environ["S2SA_NO_PDL"] = "1"  # read by the library at its first launch

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    lib = load_kernels(args.lib)
    peak = args.peak_gbs or peak_bandwidth_gbs()
    # A real stream, as TensorRT gives: the kernel skips programmatic launch on the default stream.
    with torch.cuda.stream(torch.cuda.Stream()):
        rows = [bench_case(torch, lib, b, args.channels, args.size, getattr(torch, d),
                           not args.no_compile, peak)
                for d in args.dtypes for b in args.batches]

    props = torch.cuda.get_device_properties(0)
    print(f"\n{props.name}, peak {peak or float('nan'):.0f} GB/s; torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}; C={args.channels}, {args.size}x{args.size}; PDL "
          f"{'off' if args.no_pdl else 'on (sm_90+)'}; {platform.node()}\n")
    cols = list(rows[0].keys())
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [v if isinstance(v, str | int) else f"{v:.3g}" if k == "max |err|" else f"{v:.1f}"
                 for k, v in r.items()]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
