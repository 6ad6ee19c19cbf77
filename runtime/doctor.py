"""`s2trt doctor`: the self-check to run on the target (a Jetson, a GPU server), where TensorRT is.

What no CI machine here can prove without TensorRT, proven where it runs, on the bundled demo model:
its three engines (FP32, FP16 graph, INT8+FP16 graph) build, the plugin loads and is registered,
each engine finds what ONNX Runtime finds on the demo images, each runs in the precision planned
(the engine's own layer information), CUDA graphs replayed at alternating batch sizes give the bits
the plain enqueue gives, and FP16 runs at a measured speed. One table, with the versions that made
it; exit 0 when every check passes, 1 when one fails, 3 where there is no TensorRT or GPU to check.

The graphs are exported with s2export in a child process (torch, as on any export machine), or taken
from `--onnx DIR` where the target has no torch (made elsewhere by `s2trt doctor --export-only DIR`).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from s2trt.cli import add_verbosity, run_main
from s2trt.errors import EXIT_ERROR, EXIT_NO_ENGINE, EXIT_OK, MissingDependencyError, S2Error

log = logging.getLogger(__name__)

# The graphs an engine is built from, by precision, as s2export names them for demo.pt.
GRAPHS = {"fp32": "demo.trt.onnx", "fp16": "demo-fp16.trt.onnx", "int8": "demo-int8-fp16.onnx"}
REFERENCE = "demo.onnx"  # the portable FP32 graph ONNX Runtime runs
IMGSZ = 320  # small enough for an Orin Nano, large enough for the demo's shapes
MAX_BATCH = 8
ALTERNATING = (2, 3, 2, 3, 2, 3)  # a graph per batch size, each replayed after the other ran
CONF = 0.25
# Detections an engine must share with ONNX Runtime (same class, IoU >= 0.5), and how far their box
# corners may move (input pixels). FP32 engines may run TF32 (TensorRT's default on Ampere and
# newer); FP16 moves trained boxes by hundredths of a pixel; INT8 is bounded by its own calibration.
AGREEMENT = {"fp32": (1.0, 0.5), "fp16": (0.95, 2.0), "int8": (0.8, 8.0)}
TIMED = 50


class NotHere(S2Error):
    """No TensorRT or no GPU on this machine: nothing to check (exit 3, as s2export without TensorRT)."""

    exit_code = EXIT_NO_ENGINE


@dataclass
class Row:
    check: str
    ok: bool
    detail: str


class Target:
    """The machine's TensorRT, CUDA and ONNX Runtime; tests replace these methods with fakes."""

    def __init__(self, trt: Any, device: int, plugin_lib: Path | None):
        self.trt, self.device, self.plugin_lib = trt, device, plugin_lib

    def versions(self) -> dict[str, str]:
        from s2trt.trt.gpu import cuda_version, gpu_info

        name, cc = gpu_info(self.device)
        rows = {"GPU": f"{name} (sm_{(cc or '?').replace('.', '')})", "TensorRT": self.trt.__version__}
        cudart = _cudart()
        if cudart is not None:
            rows["driver"] = _driver_version() + f" (CUDA {cuda_version(cudart.cudaDriverGetVersion()[1])})"
            rows["CUDA runtime"] = cuda_version(cudart.cudaRuntimeGetVersion()[1])
        for dist in ("cuda-python", "cuda-bindings", "pycuda"):
            try:
                rows[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return rows

    def plugin(self) -> Path:
        from s2trt.trt.plugin_lib import ensure_plugin

        lib = ensure_plugin(self.trt, self.plugin_lib, required=True)
        assert lib is not None  # required=True raises instead
        return lib

    def build(self, onnx: Path, engine: Path, precision: str) -> None:
        from s2trt.export.engine import EngineOptions, build_engine

        shapes = {f"{k}_shape": (b, 3, IMGSZ, IMGSZ) for k, b in (("min", 1), ("opt", MAX_BATCH),
                                                                   ("max", MAX_BATCH))}
        build_engine(onnx, engine, EngineOptions(precision=precision, device=self.device,
                                                 plugin_lib=self.plugin_lib, **shapes))

    def precision_problems(self, engine: Path, onnx: Path, precision: str) -> list[str]:
        """The engine's layers read back (IEngineInspector) against the FP32 islands of its graph."""
        from s2trt.export.engine import check_engine_precision, fp32_island_patterns

        runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        loaded = runtime.deserialize_cuda_engine(engine.read_bytes())
        if loaded is None:
            return [f"TensorRT cannot load {engine.name}"]
        # As the build checks it (export/engine.py): an FP32 engine has no island to tell apart.
        islands = [] if precision == "fp32" else fp32_island_patterns(onnx, required=False)
        if islands is None:
            return ["the FP32 islands cannot be listed here: pip install 's2trt[engine]' (onnx, "
                    "onnx-graphsurgeon)"]
        return check_engine_precision(loaded, islands, precision, self.trt)

    def engine(self, path: Path, cuda_graphs: bool) -> Any:
        from s2trt.runtime.backends.trt import TrtBackend

        lib = str(self.plugin_lib) if self.plugin_lib else None
        return TrtBackend(path, lib, f"cuda:{self.device}", cuda_graphs=cuda_graphs, gpu_preprocess=False)

    def reference(self, onnx: Path) -> Any:
        from s2trt.runtime.backends.ort import OrtBackend

        return OrtBackend(onnx, device="cpu")


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            return None
    return cudart


def _driver_version() -> str:
    """The driver's own version (nvidia-smi), "driver" where it cannot say (older Jetson releases)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "driver"
    r = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                       text=True, timeout=30, check=False)
    return r.stdout.splitlines()[0].strip() if r.returncode == 0 and r.stdout.strip() else "driver"


def what_is_missing(device: int) -> list[str]:
    """Why this machine cannot run the checks; empty when it can."""
    from s2trt.trt.gpu import gpu_info
    from s2trt.trt.versions import import_tensorrt

    missing = []
    try:
        import_tensorrt("s2trt doctor")
    except MissingDependencyError as e:
        missing.append(f"no TensorRT ({e})")
    if _cudart() is None:
        missing.append("no CUDA from Python, so no GPU can be used: pip install 's2trt[gpu]' (cuda-python)")
    elif gpu_info(device)[0] is None:
        missing.append(f"no NVIDIA GPU {device} (cuda-python finds none; nvidia-smi shows what the "
                       "driver sees)")
    return missing


# ---------------------------------------------------------------------------------------- graphs

def export_commands(demo: Path, out: Path) -> list[list[str]]:
    """The s2export runs that write the three graphs and the reference into `out`."""
    common = [str(demo), "--imgsz", str(IMGSZ), "--dynamic", "--onnx-only", "-q", "-o", f"{out}/"]
    calib = ["--no-plugin", "--int8", "--calib", str(demo.parent / "images")]
    return [common, [*common, "--fp16"], [*common, *calib]]


def export_graphs(out: Path) -> None:
    from s2trt.demo.assets import ASSETS

    for args in export_commands(ASSETS / "demo.pt", out):
        log.info("s2export %s", " ".join(args))
        r = subprocess.run([sys.executable, "-m", "s2trt.export.cli", *args], capture_output=True, text=True,
                           check=False)
        if r.returncode:
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise S2Error(f"exporting the demo graphs failed ({why}); where this machine has no torch, "
                          f"export them elsewhere with `s2trt doctor --export-only DIR` and pass --onnx DIR")


def graphs_in(folder: Path) -> dict[str, Path]:
    paths = {p: folder / name for p, name in (*GRAPHS.items(), ("reference", REFERENCE))}
    absent = [p.name for p in paths.values() if not p.is_file()]
    if absent:
        raise S2Error(f"{folder} lacks {', '.join(absent)}: make them with "
                      f"`s2trt doctor --export-only {folder}`")
    return paths


def demo_batch(n: int, imgsz: tuple[int, int]) -> np.ndarray:
    """n demo images (repeated in order), letterboxed to the engine's input as the runtime does."""
    import cv2

    from s2trt.demo.assets import ASSETS
    from s2trt.detect.letterbox import preprocess

    files = sorted((ASSETS / "images").glob("*.jpg"))
    frames = [cv2.imread(str(files[i % len(files)])) for i in range(n)]
    return preprocess(frames, imgsz)[0]


# ---------------------------------------------------------------------------------------- checks

def agreement(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, int]:
    """(share of ONNX Runtime's detections the engine also makes, the largest corner move in input
    pixels among those, how many ONNX Runtime made), over a batch, after the runtime's NMS."""
    from s2trt.detect.boxes import non_max_suppression

    found = moved = total = 0.0
    for got, want in zip(non_max_suppression(out, CONF), non_max_suppression(ref, CONF), strict=True):
        total += len(want)
        free = np.ones(len(got), bool)
        for w in want:
            if not free.any():
                break
            iou = _iou(w[:4], got[:, :4]) * free * (got[:, 5] == w[5])
            best = int(np.argmax(iou))
            if iou[best] >= 0.5:
                found += 1
                free[best] = False
                moved = max(moved, float(np.abs(got[best, :4] - w[:4]).max()))
    return (found / total if total else 1.0), moved, int(total)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = (box[2:] - box[:2]).prod() + (boxes[:, 2:] - boxes[:, :2]).prod(axis=1) - inter
    return inter / np.maximum(area, 1e-9)


def check_against_ort(backend: Any, reference: Any, precision: str) -> Row:
    x = demo_batch(4, backend.imgsz)
    share, moved, n = agreement(backend.infer(x)["output0"], reference.infer(x)["output0"])
    need, limit = AGREEMENT[precision]
    ok = n > 0 and share >= need and moved <= limit
    return Row(f"{precision}: same detections as ONNX Runtime", ok,
               f"{share:.0%} of {n} found (need {need:.0%}), boxes within {moved:.2f} px (limit {limit:g})")


def check_graph_replay(graphs: Any, plain: Any, precision: str) -> Row:
    """Every output bit equal with and without CUDA graphs, batch sizes alternating so that each
    replay follows a run at the other size."""
    diffs = []
    for i, n in enumerate(ALTERNATING):
        x = demo_batch(n + i, plain.imgsz)[i:]  # other images each time, so a stale buffer cannot pass
        a, b = graphs.infer(x), plain.infer(x)
        diffs += [f"step {i} (batch {n}) {k}" for k in b if not np.array_equal(a[k], b[k])]
    state = graphs.graph_state
    ok = not diffs and state == "on"
    detail = (f"batches {','.join(map(str, ALTERNATING))}: bit for bit, CUDA graphs {state}" if not diffs
              else "differ at " + "; ".join(diffs[:3]))
    return Row(f"{precision}: CUDA graphs = --no-cuda-graphs", ok, detail)


def time_engine(backend: Any, batch: int) -> Row:
    x = demo_batch(batch, backend.imgsz)
    for _ in range(10):
        backend.infer(x)
    times = []
    for _ in range(TIMED):
        t0 = time.perf_counter()
        backend.infer(x)
        times.append(time.perf_counter() - t0)
    ms = float(np.median(times)) * 1e3
    return Row(f"fp16: batch {batch} speed", True,
               f"{ms:.2f} ms per batch, {batch * 1e3 / ms:.0f} images/s (median of {TIMED}, with copies)")


def run_checks(target: Target, graphs: dict[str, Path], work: Path) -> list[Row]:
    rows = [Row("plugin loads and is registered", True, str(target.plugin()))]
    reference = target.reference(graphs["reference"])
    try:
        for precision in GRAPHS:
            engine = work / f"demo-{precision}.engine"
            t0 = time.perf_counter()
            try:
                target.build(graphs[precision], engine, precision)
            except S2Error as e:
                rows.append(Row(f"{precision}: engine builds", False, str(e)))
                continue
            rows.append(Row(f"{precision}: engine builds", True, f"{time.perf_counter() - t0:.0f} s"))
            problems = target.precision_problems(engine, graphs[precision], precision)
            rows.append(Row(f"{precision}: layers run in the precision planned", not problems,
                            "; ".join(problems[:3]) or "FP32 islands in FP32, the rest as asked"))
            with (target.engine(engine, cuda_graphs=True) as fast,
                  target.engine(engine, cuda_graphs=False) as plain):
                rows.append(check_against_ort(plain, reference, precision))
                rows.append(check_graph_replay(fast, plain, precision))
                if precision == "fp16":
                    rows += [time_engine(fast, 1), time_engine(fast, MAX_BATCH)]
    finally:
        reference.close()
    return rows


def table(versions: dict[str, str], rows: Sequence[Row]) -> str:
    width = max(len(r.check) for r in rows)
    lines = ["s2trt doctor", *(f"  {k}: {v}" for k, v in versions.items()), ""]
    lines += [f"  {'ok  ' if r.ok else 'FAIL'} {r.check:<{width}}  {r.detail}" for r in rows]
    failed = sum(not r.ok for r in rows)
    lines.append(f"\n{len(rows) - failed} of {len(rows)} checks passed"
                 + (f", {failed} FAILED" if failed else ""))
    return "\n".join(lines)


def doctor(args: argparse.Namespace, target: Target | None = None) -> int:
    if args.export_only:
        args.export_only.mkdir(parents=True, exist_ok=True)
        export_graphs(args.export_only)
        print(f"graphs for `s2trt doctor --onnx {args.export_only}`: " + ", ".join(
            p.name for p in graphs_in(args.export_only).values()))
        return EXIT_OK
    if target is None:
        missing = what_is_missing(args.device)
        if missing:
            raise NotHere("nothing to check on this machine: " + "; ".join(missing))
        from s2trt.trt.versions import import_tensorrt

        target = Target(import_tensorrt("s2trt doctor"), args.device, args.plugin_lib)
    with tempfile.TemporaryDirectory(prefix="s2trt-doctor-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.onnx is None:
            export_graphs(work)
        rows = run_checks(target, graphs_in(args.onnx or work), work)
    print(table(target.versions(), rows))
    return EXIT_OK if all(r.ok for r in rows) else EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2trt", description="s2trt's own tools for the target machine.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check TensorRT, the plugin, the engines and CUDA graphs here",
                       description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="exit codes: 0 every check passed, 1 a check failed (the table says which), "
                       "3 no TensorRT or no GPU here")
    d.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    d.add_argument("--plugin-lib", type=Path,
                   help="S2SplitAttention plugin library (default: as s2export finds it)")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--onnx", type=Path, metavar="DIR",
                     help="take the demo graphs from DIR (made by --export-only) instead of exporting them")
    src.add_argument("--export-only", type=Path, metavar="DIR",
                     help="only export the demo graphs into DIR, for a target without torch")
    d.add_argument("--keep", type=Path, metavar="DIR", help="keep the graphs and engines in DIR")
    add_verbosity(d)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2trt doctor", build_parser().parse_args, doctor, argv)


if __name__ == "__main__":
    sys.exit(main())
