"""Wall time of `s2export` end to end (process start, imports, export, checks, files) on the CPU.

Makes a yolov5s-s2 checkpoint with random weights (FP16, as train.py saves), then runs
`s2export <ckpt> --onnx-only` per configuration a few times in a fresh process and prints a markdown
table: median and best wall seconds, CPU seconds of the child, the load average before each
configuration (the figures are only comparable on an otherwise idle machine; on a shared one the
best run is the closest to it), and the stage times of the last run from the printed summary.

    python benchmarks/bench_export.py [--runs 3] [--imgsz 640]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "fp32, batch 1 (the default)": [],
    "fp32, batch 1, --full-reference": ["--full-reference"],
    "fp16, dynamic batch": ["--fp16", "--dynamic"],
    "fp32, batch 1, in-graph NMS": ["--nms"],
}


def make_checkpoint(folder: Path, cfg: str) -> Path:
    import torch

    from s2trt.models import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg).eval()
    path = folder / f"{cfg}.pt"
    torch.save({"model": model.half(), "epoch": -1}, path)
    return path


def run_once(ckpt: Path, out: Path, extra: list[str], imgsz: int) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "s2trt.export.cli", str(ckpt), "--onnx-only",
                           "--imgsz", str(imgsz), "-o", str(out), *extra],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"s2export failed ({proc.returncode}): {proc.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stages = next((ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("time:")), "")
    return wall, cpu, re.sub(r"^time: ", "", stages)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--cfg", default="yolov5s-s2")
    args = ap.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    print(f"machine: {machine}")
    print("| configuration | wall s (median) | wall s (best) | CPU s (median) | load before | "
          "stages of the last run |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp), args.cfg)
        for k, (name, extra) in enumerate(CONFIGS.items()):
            load = os.getloadavg()[0]
            results = []
            for i in range(args.runs):
                out = Path(tmp) / f"{k}-{i}"
                out.mkdir()
                results.append(run_once(ckpt, out, extra, args.imgsz))
            wall = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            best = min(r[0] for r in results)
            print(f"| {args.cfg} {args.imgsz}, {name} | {wall:.1f} | {best:.1f} | {cpu:.1f} | {load:.1f} | "
                  f"{results[-1][2]} |")


if __name__ == "__main__":
    main()
