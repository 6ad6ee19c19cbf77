"""Compare the INT8 calibration methods on one model and time FP32 / FP16 / INT8 / INT8+FP16 in ONNX
Runtime (CPU).

    python benchmarks/calib_methods.py --onnx demo.onnx --data data.yaml [--calib-size 256]

Prints Markdown tables (accuracy per method, latency per graph) with the machine they ran on, for
benchmarks/RESULTS.md, and writes the raw numbers as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    return f"{cpu}, {os.cpu_count()} cores, ONNX Runtime {ort.__version__} CPUExecutionProvider"


def latency_ms(path: Path, shape: tuple[int, ...], warmup: int, iters: int, basic: bool = False) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if basic:  # see detect.evaluate.onnx_predictor: ORT's QLinearConcat fusion has no FP16 kernel
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    import torch

    from s2trt.calib.data import Preprocessing, open_reader
    from s2trt.calib.pipeline import write_int8_fp16
    from s2trt.calib.qdq import CalibMethod, quantize_qdq
    from s2trt.calib.report import accuracy_report, fp16_graph
    from s2trt.meta import read_onnx_meta

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True, help="FP32 portable ONNX from s2export")
    p.add_argument("--data", required=True, help="YOLO data yaml with calib (or train) and val splits")
    p.add_argument("--calib-split", default=None)
    p.add_argument("--calib-size", type=int, default=256)
    p.add_argument("--calib-batch", type=int, default=1)
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--iters", type=int, default=50, help="timed runs per graph (batch 1)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    meta = read_onnx_meta(args.onnx)
    prep = Preprocessing.from_meta(meta)
    reader = open_reader(args.data, prep, args.calib_size, args.calib_batch, split=args.calib_split,
                         progress=False)
    with tempfile.TemporaryDirectory(prefix="s2trt-bench-") as tmp:
        paths, quant = {}, {}
        for m in CalibMethod:
            paths[m.value] = Path(tmp) / f"int8-{m.value}.onnx"
            quant[m.value] = quantize_qdq(args.onnx, paths[m.value], reader, m, work_dir=tmp)
        mixed: dict[str, Path | None] = {}

        def int8_fp16(method: str) -> Path | None:
            mixed[method] = write_int8_fp16(paths[method], Path(tmp) / f"int8-{method}-fp16.onnx")
            return mixed[method]

        report = accuracy_report(args.onnx, paths, args.data, "val", list(prep.imgsz), 1, args.val_limit,
                                 int8_fp16=int8_fp16)
        fp16, _ = fp16_graph(args.onnx, Path(tmp))
        shape = (1, 3, *prep.imgsz)
        best_mixed = mixed.get(report["best"])
        graphs = {"fp32": args.onnx, **({"fp16": fp16} if fp16 else {}),
                  **{f"int8-{k}": v for k, v in paths.items()},
                  **({"int8+fp16": best_mixed} if best_mixed else {})}
        speed = {k: latency_ms(v, shape, 5, args.iters, basic=k == "int8+fp16") for k, v in graphs.items()}
        sizes = {k: Path(v).stat().st_size / 1e6 for k, v in graphs.items()}

    rows = report["rows"]
    print(f"Machine: {machine()}")
    print(f"Model: {args.onnx.name}, {prep.imgsz[0]}x{prep.imgsz[1]}; calibration: {reader.num_images} "
          f"images of {args.data}; validation: {report['images']} images ('val' split)\n")
    print("| graph | mAP50 | mAP50-95 | ΔmAP50 (points) | ΔmAP50-95 (points) | quantize time |")
    print("|---|---|---|---|---|---|")
    for k, r in rows.items():
        q = quant.get(k.removeprefix("int8-"), {}).get("quantize_s") if k != "int8+fp16" else None
        print(f"| {k} | {100 * r['mAP50']:.2f} | {100 * r['mAP50-95']:.2f} | {0.0 - r['drop_mAP50']:+.2f} | "
              f"{0.0 - r['drop_mAP50-95']:+.2f} | {f'{q:.0f} s' if q is not None else '-'} |")
    print(f"\nBest INT8 method: {report['best']} (mAP50 drop {report['drop_mAP50']:.2f} points)\n")
    print(f"| graph | median latency, batch 1 ({args.iters} runs) | vs FP32 | file size |")
    print("|---|---|---|---|")
    for k, ms in speed.items():
        print(f"| {k} | {ms:.1f} ms | {speed['fp32'] / ms:.2f}x | {sizes[k]:.1f} MB |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "report": report, "quantization": quant,
                                         "latency_ms": speed, "size_mb": sizes}, indent=2))


if __name__ == "__main__":
    main()
