"""The price of the Python API: s2trt.Detector.stream vs s2infer on the demo video, and `import s2trt`.

    python benchmarks/bench_api.py [--onnx demo.onnx] [--video sample.mp4] [--batch 1] [--runs 5]

1. Per-frame wall and CPU time (the process's, every thread) over the whole run, model loading
   included, of
   s2infer = `s2infer --onnx M VIDEO --no-save --batch B --device cpu` (in this process), and
   api     = `with s2trt.Detector(M, device="cpu", batch=B) as d: for r in d.stream(VIDEO): ...`;
   the same backend (ONNX Runtime on the CPU) and batch. The machine may be shared, so the two run
   interleaved, --runs times each; compared are the medians of the api/s2infer ratio of each pair
   and the best runs (the load average is printed: CPU time is the figure that load disturbs least).
2. `import s2trt` in a fresh interpreter: its cumulative time from `python -X importtime` (median of
   5), and which heavy modules it loaded (none should be: torch, onnxruntime, cv2, numpy).

Model: --onnx, else demo/assets/demo.pt exported with s2export at 320 (its training size).
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "demo" / "assets"
HEAVY = ("torch", "onnxruntime", "cv2", "numpy", "tensorrt")


def run_s2infer(model: Path, video: Path, batch: int) -> int:
    from s2trt.runtime.cli import main

    if main(["--onnx", str(model), str(video), "--no-save", "--batch", str(batch), "--device", "cpu",
             "-q"]) != 0:
        raise SystemExit("s2infer failed")
    return count_frames(video)


def run_api(model: Path, video: Path, batch: int) -> int:
    import s2trt

    n = 0
    with s2trt.Detector(model, device="cpu", batch=batch) as det:
        for _ in det.stream(video):
            n += 1
    return n


def count_frames(video: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def import_time_ms() -> tuple[float, list[str]]:
    """Cumulative import time of s2trt (importtime's own figure), and the heavy modules loaded."""
    code = f"import s2trt, sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                       check=True)
    line = next(ln for ln in r.stderr.splitlines() if ln.rstrip().endswith("| s2trt"))
    return int(line.split("|")[1]) / 1000, ast.literal_eval(r.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--video", type=Path, default=ASSETS / "sample.mp4")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, load average before {os.getloadavg()[0]:.2f}")
    imports = [import_time_ms() for _ in range(5)]
    ms = statistics.median(t for t, _ in imports)
    print(f"import s2trt: {ms:.1f} ms (median of 5, -X importtime cumulative); heavy modules loaded: "
          f"{imports[0][1] or 'none'}")

    with tempfile.TemporaryDirectory() as tmp:
        model = a.onnx
        if model is None:
            from s2trt.export.cli import main as s2export

            model = Path(tmp) / "demo.onnx"
            if s2export([str(ASSETS / "demo.pt"), "--imgsz", "320", "--onnx-only", "-o", str(model), "-q"]):
                raise SystemExit("s2export failed")
        wall: dict[str, list[float]] = {"s2infer": [], "api": []}
        cpu: dict[str, list[float]] = {"s2infer": [], "api": []}
        frames = {}
        run_api(model, a.video, a.batch)  # warm-up: imports, file cache
        for _ in range(a.runs):
            for name, fn in (("s2infer", run_s2infer), ("api", run_api)):
                t0, c0 = time.perf_counter(), time.process_time()
                frames[name] = fn(model, a.video, a.batch)
                wall[name].append((time.perf_counter() - t0) / frames[name] * 1e3)
                cpu[name].append((time.process_time() - c0) / frames[name] * 1e3)
    for name in wall:
        print(f"{name:8s} wall {statistics.median(wall[name]):6.2f} ms/frame (best {min(wall[name]):.2f}), "
              f"CPU {statistics.median(cpu[name]):6.2f} ms/frame (best {min(cpu[name]):.2f}); "
              f"{frames[name]} frames, batch {a.batch}, medians of {a.runs}")
    # Each api run against the s2infer run just before it: the pairs share the machine's load.
    for what, d in (("wall", wall), ("CPU", cpu)):
        ratios = [x / y for x, y in zip(d["api"], d["s2infer"], strict=True)]
        print(f"api / s2infer, {what}: median of pairs {statistics.median(ratios):.3f}, "
              f"best / best {min(d['api']) / min(d['s2infer']):.3f}")
    print(f"load average after {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
