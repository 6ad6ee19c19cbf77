"""s2infer runtime benchmark: our ORT path vs a bare onnxruntime loop, and pipelined vs sequential.

    python benchmarks/bench_runtime.py [--onnx demo.onnx] [--video sample.mp4] [--repeats 3]

Model: --onnx, else demo/assets/demo.onnx, else demo/assets/demo.pt exported with s2export at 320,
else a random-weight yolov5n-s2 at 416 (the demo's architecture): speed does not depend on weights.
Videos: --video, else demo/assets/sample.mp4, else a generated 640x480 clip; and a generated
1920x1080 clip. The machine may be shared, so the variants run interleaved: overheads are
the median over many short rounds, FPS the best of --repeats runs; the load average is printed too.

1. Overhead, frames already decoded in memory, one frame per batch, no output files:
   bare   = a hand-written loop: cv2 letterbox + cv2.dnn.blobFromImage + session.run + confidence
            filter + cv2.dnn.NMSBoxesBatched, what a user writes without s2trt;
   s2trt  = Runner(sequential) with OrtBackend, preprocess, NMS, scale_boxes and stats.
   Also session.run alone vs OrtBackend.infer on the same tensors.
2. End to end from the video file to an annotated mp4 + JSONL: sequential vs pipelined.
3. The same with a stand-in accelerator (inference is a sleep that uses no host CPU, as on a GPU).
4. ONNX Runtime with its idle threads spinning (its default) vs not (s2trt's default).

On a GPU machine with TensorRT, `--engine m.engine` runs instead the TensorRT backend's ways to run
on decoded frames (the generated 1920x1080 clip unless --video): synchronous (submit + collect per
batch) vs overlapped (batch n+1 submitted before batch n is collected), CUDA graphs off / on, CPU vs
GPU letterbox; FPS (best of --repeats), host CPU ms per frame, host time per enqueue.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "demo" / "assets"


def resolve_model(arg: str | None, work: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given"
    if (ASSETS / "demo.onnx").is_file():
        return ASSETS / "demo.onnx", "demo.onnx"
    pt, what, size = ASSETS / "demo.pt", "demo.pt exported with s2export at 320 (its training size)", "320"
    if not pt.is_file():
        import torch

        from s2trt.models import DetectionModel

        torch.manual_seed(0)
        pt, what, size = work / "random.pt", "random-weight yolov5n-s2 (nc=3) exported with s2export", "416"
        torch.save({"model": DetectionModel("yolov5n-s2", nc=3).eval().half()}, pt)
    out = work / "model.onnx"
    from s2trt.export.cli import main as s2export

    if s2export([str(pt), "--imgsz", size, "--onnx-only", "-o", str(out), "-q"]) != 0:
        sys.exit("s2export failed")
    return out, what


def synth_video(path: Path, frames: int, w: int, h: int) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(60, 200, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    for i in range(frames):
        img = base.copy()
        for k in range(6):
            cx = int((0.1 + 0.13 * k) * w + 6 * i) % w
            cy = int((0.2 + 0.1 * k) * h + 3 * i * (k % 2 * 2 - 1)) % h
            cv2.circle(img, (cx, cy), h // 12, (40 * k, 200, 255 - 30 * k), -1)
        vw.write(img)
    vw.release()
    return path


def read_frames(video: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


def bare_loop(sess, frames: list[np.ndarray], imgsz: tuple[int, int], conf: float, iou: float) -> int:
    """What a user writes with onnxruntime and OpenCV alone (same letterbox and NMS semantics)."""
    h, w = imgsz
    name = sess.get_inputs()[0].name
    kept = 0
    for img in frames:
        r = min(h / img.shape[0], w / img.shape[1])
        nw, nh = round(img.shape[1] * r), round(img.shape[0] * r)
        dw, dh = (w - nw) / 2, (h - nh) / 2
        lb = cv2.copyMakeBorder(cv2.resize(img, (nw, nh)), round(dh - 0.1), round(dh + 0.1),
                                round(dw - 0.1), round(dw + 0.1), cv2.BORDER_CONSTANT, value=(114,) * 3)
        blob = cv2.dnn.blobFromImage(lb, 1 / 255, swapRB=True)
        p = sess.run(None, {name: blob})[0][0]
        p = p[p[:, 4] > conf]
        scores = p[:, 5:] * p[:, 4:5]
        cls = scores.argmax(1)
        score = scores.max(1)
        m = score > conf
        p, cls, score = p[m], cls[m], score[m]
        boxes = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 2], p[:, 3]], 1)
        keep = cv2.dnn.NMSBoxesBatched(boxes.astype(np.float64), score, cls, conf, iou) if len(p) else []
        det = np.asarray(boxes[np.asarray(keep, int).reshape(-1)])
        det[:, :2] = (det[:, :2] - (dw, dh)) / r
        kept += len(det)
    return kept


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx")
    ap.add_argument("--video")
    ap.add_argument("--frames", type=int, default=100, help="frames for the overhead test")
    ap.add_argument("--video-frames", type=int, default=150, help="frames of the generated videos")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--conf-thres", type=float, default=0.25)
    ap.add_argument("--engine", help="benchmark the TensorRT backend on this engine (GPU) instead")
    ap.add_argument("--batch", type=int, default=4, help="frames per batch with --engine")
    a = ap.parse_args()
    if a.engine:
        work = Path(tempfile.mkdtemp(prefix="s2bench-"))
        video = Path(a.video) if a.video else synth_video(work / "hd1080.mp4", a.video_frames, 1920, 1080)
        frames = read_frames(video, a.frames)
        print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
        print(f"engine {a.engine}, {len(frames)} frames of {video.name} "
              f"({frames[0].shape[1]}x{frames[0].shape[0]}), batch {a.batch}")
        for mode, (fps, cpu_ms, note) in bench_trt(a.engine, frames, a.batch, a.repeats).items():
            print(f"   {mode}: {fps:.1f} FPS, host CPU {cpu_ms:.2f} ms per frame; {note}")
        return

    import onnxruntime as ort

    from s2trt.detect.letterbox import preprocess
    from s2trt.runtime.backends.ort import OrtBackend
    from s2trt.runtime.inputs.sources import Frame, SourceKind, open_source
    from s2trt.runtime.outputs.sinks import Sinks
    from s2trt.runtime.pipeline import DetectOptions, Runner

    work = Path(tempfile.mkdtemp(prefix="s2bench-"))
    model, model_what = resolve_model(a.onnx, work)
    sample = Path(a.video) if a.video else ASSETS / "sample.mp4"
    sample_what = str(sample.relative_to(ROOT)) if sample.is_file() and not a.video else str(sample)
    if not sample.is_file():
        sample = synth_video(work / "sample640.mp4", a.video_frames, 640, 480)
        sample_what = f"generated 640x480, {a.video_frames} frames"
    hd = synth_video(work / "hd1080.mp4", a.video_frames, 1920, 1080)

    backend = OrtBackend(model, device="cpu")
    imgsz = backend.imgsz
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"model: {model_what} ({model.name}, input {imgsz[0]}x{imgsz[1]}, {backend.name})")
    print(f"onnxruntime {ort.__version__}, opencv {cv2.__version__}, numpy {np.__version__}\n")

    sess = backend.session  # the same session: only the code around it differs
    opts = DetectOptions(a.conf_thres)
    frames = read_frames(sample, a.frames)
    n = len(frames)
    x, _ = preprocess(frames[:1], imgsz)

    # Short rounds, the four variants interleaved: a load spike from a neighbour hits all of them.
    rounds, chunk = a.repeats * 5, max(n // 5, 1)
    runs: dict[str, list[float]] = {"bare_infer": [], "ours_infer": [], "bare_e2e": [], "ours_e2e": []}
    for r in range(rounds):
        part = frames[(r * chunk) % n:][:chunk]
        k = len(part)
        items = [Frame(f, "mem", i, SourceKind.VIDEO) for i, f in enumerate(part)]
        variants = {
            "bare_infer": lambda k=k: [sess.run(None, {"images": x}) for _ in range(k)],
            "ours_infer": lambda k=k: [backend.infer(x) for _ in range(k)],
            "bare_e2e": lambda part=part: bare_loop(sess, part, imgsz, a.conf_thres, 0.45),
            "ours_e2e": lambda items=items: Runner(backend, items, _NullSinks(), opts,
                                                   pipelined=False).run(),
        }
        for name, fn in variants.items():
            runs[name].append(best(fn, 1) * 1000 / k)
    ms = {k: float(np.median(v)) for k, v in runs.items()}
    print(f"1. overhead on {n} decoded frames of {sample_what} (ms per frame, median of {rounds} "
          f"interleaved rounds of {chunk} frames)")
    print(f"   session.run alone {ms['bare_infer']:.2f} | OrtBackend.infer {ms['ours_infer']:.2f} "
          f"({ms['ours_infer'] / ms['bare_infer']:.3f}x)")
    print(f"   bare ORT+OpenCV loop {ms['bare_e2e']:.2f} | s2trt Runner {ms['ours_e2e']:.2f} "
          f"({ms['ours_e2e'] / ms['bare_e2e']:.3f}x)\n")

    print("2. end to end, video file -> annotated mp4 + JSONL (FPS, best of "
          f"{a.repeats}; threads = ONNX Runtime intra-op threads)")
    one_thread = OrtBackend(model, device="cpu", threads=1)
    for label, video in ((sample_what, sample), (f"generated 1920x1080, {a.video_frames} frames", hd)):
        res: dict[str, float] = {}
        cpu_use: dict[str, tuple[float, float]] = {}
        for _ in range(a.repeats):
            for mode in ("sequential", "pipelined", "pipelined, 1 ORT thread"):
                b = one_thread if "1 ORT" in mode else backend
                out = work / "out"
                out.mkdir(exist_ok=True)
                sinks = Sinks(b.meta.names, out, None, True, out / "p.jsonl", False)
                cpu0 = _cpu_s()
                stats = Runner(b, open_source(str(video)), sinks, opts, pipelined=mode != "sequential").run()
                cpu = _cpu_s() - cpu0
                sinks.close()
                if stats.fps > res.get(mode, 0.0):
                    res[mode] = stats.fps
                    cpu_use[mode] = (cpu * 1000 / stats.frames, cpu / stats.wall_s)
                    if mode == "sequential":
                        stages = stats.table()
        seq = res["sequential"]
        print(f"   {label}: " + ", ".join(f"{m} {f:.1f} FPS ({f / seq:.2f}x)" for m, f in res.items()))
        print("      CPU ms per frame / cores busy: "
              + ", ".join(f"{m} {c:.1f} / {u:.2f}" for m, (c, u) in cpu_use.items()))
        print("      sequential ms per frame: "
              + ", ".join(f"{k} {v['mean']:.1f}" for k, v in stages.items()))

    # An accelerator takes no host CPU while it infers: a backend that sleeps for the measured CPU
    # inference time and returns a real output stands in for a GPU, to show what overlap gives there.
    infer_s = ms["bare_infer"] / 1000
    fake = _SleepBackend(backend, backend.infer(x), infer_s)
    print(f"\n3. simulated accelerator (inference = {infer_s * 1000:.1f} ms sleep, no host CPU), FPS, "
          f"best of {a.repeats}")
    for label, video in ((sample_what, sample), ("generated 1920x1080", hd)):
        res = {}
        for _ in range(a.repeats):
            for mode in ("sequential", "pipelined"):
                out = work / "out"
                sinks = Sinks(fake.meta.names, out, None, True, out / "p.jsonl", False)
                stats = Runner(fake, open_source(str(video)), sinks, opts,
                               pipelined=mode != "sequential").run()
                sinks.close()
                res[mode] = max(res.get(mode, 0.0), stats.fps)
        print(f"   {label}: sequential {res['sequential']:.1f} FPS, pipelined {res['pipelined']:.1f} FPS "
              f"({res['pipelined'] / res['sequential']:.2f}x)")

    spinning = OrtBackend(model, device="cpu", spin=True)
    t_spin, t_nospin = [], []
    for _ in range(a.repeats):
        t_spin.append(best(lambda: [spinning.session.run(None, {"images": x}) for _ in range(n)], 1))
        t_nospin.append(best(lambda: [sess.run(None, {"images": x}) for _ in range(n)], 1))
    print(f"\n4. session.run per frame: ORT default (idle threads spin) {min(t_spin) * 1000 / n:.2f} ms, "
          f"spinning off (s2trt's default) {min(t_nospin) * 1000 / n:.2f} ms")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


TRT_MODES = {  # name: (overlapped, TrtBackend keyword arguments)
    "synchronous, CPU letterbox, no CUDA graphs": (False, {"cuda_graphs": False, "gpu_preprocess": False}),
    "overlapped, CPU letterbox, no CUDA graphs": (True, {"cuda_graphs": False, "gpu_preprocess": False}),
    "overlapped, CPU letterbox, CUDA graphs": (True, {"cuda_graphs": True, "gpu_preprocess": False}),
    "overlapped, GPU letterbox if built, CUDA graphs": (True, {"cuda_graphs": True, "gpu_preprocess": None}),
}


def bench_trt(engine: str | Path, frames: list[np.ndarray], batch: int, repeats: int,
              make_backend=None) -> dict[str, tuple[float, float, str]]:
    """Per mode of TRT_MODES: (best FPS, host CPU ms per frame, what the backend ended up using)."""
    if make_backend is None:
        from s2trt.runtime.backends.trt import TrtBackend as make_backend

    results = {}
    for mode, (overlapped, kw) in TRT_MODES.items():
        backend = make_backend(engine, **kw)
        try:
            k = min(batch, backend.max_batch)
            batches = [frames[i:i + k] for i in range(0, len(frames), k)]
            _run_trt(backend, batches[:2], overlapped)  # warm-up: first enqueues, graph captures
            fps, cpu_ms = 0.0, 0.0
            for _ in range(repeats):
                t0, cpu0 = time.perf_counter(), _cpu_s()
                _run_trt(backend, batches, overlapped)
                wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
                if len(frames) / wall > fps:
                    fps, cpu_ms = len(frames) / wall, cpu * 1000 / len(frames)
            results[mode] = (fps, cpu_ms, f"letterbox on the {backend.preprocess_device}, "
                             f"{backend.enqueue_summary()}")
        finally:
            backend.close()
    return results


def _run_trt(backend, batches: list[list[np.ndarray]], overlapped: bool) -> None:
    pending = None
    for frames in batches:
        submitted, _ = backend.submit_frames(frames)
        if not overlapped:
            backend.collect(submitted)
            continue
        if pending is not None:
            backend.collect(pending)
        pending = submitted
    if pending is not None:
        backend.collect(pending)


def _cpu_s() -> float:
    """CPU seconds used by this process so far, all threads (user + system)."""
    t = os.times()
    return t.user + t.system


class _SleepBackend:
    def __init__(self, real, outputs: dict[str, np.ndarray], seconds: float):
        self.meta, self.name, self.imgsz = real.meta, "sleep", real.imgsz
        self.outputs, self.seconds = outputs, seconds

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(self.seconds * len(batch))
        return {k: np.repeat(v[:1], len(batch), 0) for k, v in self.outputs.items()}


class _NullSinks:
    def write(self, frame, dets) -> None:
        pass


if __name__ == "__main__":
    main()
