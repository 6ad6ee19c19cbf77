"""Many streams into one model: 1, 4 and 8 live 1080p streams through s2infer's multi-source reader.

    python benchmarks/bench_streams.py [--onnx m.onnx | --engine m.engine] [--streams 1 4 8]
                                       [--seconds 15] [--batch N] [--mode live|files]

Each stream is a real MPEG-TS stream served by ffmpeg on 127.0.0.1 (tcp, played at its own 25 FPS
and looped, as a camera would), read by `runtime.inputs.streams.MultiSource` (a reader per stream keeping
its newest frame) and run through the pipeline (`Runner`) with the frames of all streams batched
together (batch = the number of streams unless --batch), without output files. Reported per run:
aggregate FPS (frames inferred per second, all streams), FPS per stream, frames dropped per stream
(decoded, then replaced by a newer frame before inference took it), and the host CPU time of this
process per inferred frame (decode + letterbox + inference + NMS, every thread).
`--mode files` reads the same clip as N files instead: nothing is dropped, so it gives the ceiling.

Model: --onnx or --engine (TensorRT, on a GPU), else demo/assets/demo.pt exported with s2export at
320 with a dynamic batch. The clip: demo/assets/sample.mp4 scaled to 1920x1080 (MPEG-2, keyframe
every 12 frames). Needs the ffmpeg program.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "demo" / "assets"
FPS = 25


def export_demo(work: Path) -> Path:
    from s2trt.export.cli import main as s2export

    out = work / "demo320.onnx"
    if s2export([str(ASSETS / "demo.pt"), "--imgsz", "320", "--dynamic", "--onnx-only", "-o", str(out),
                 "-q"]) != 0:
        sys.exit("s2export failed")
    return out


def make_clip(ffmpeg: str, work: Path, seconds: float) -> Path:
    out = work / "clip1080.ts"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i",
                    str(ASSETS / "sample.mp4"), "-t", str(seconds), "-vf", "scale=1920:1080",
                    "-r", str(FPS), "-c:v", "mpeg2video", "-q:v", "4", "-g", "12", "-f", "mpegts",
                    str(out)], check=True)
    return out


def listening(port: int) -> bool:
    want = f":{port:04X} "
    return any(want in ln and ln.split()[3] == "0A"
               for ln in Path("/proc/net/tcp").read_text().splitlines()[1:])


def serve(ffmpeg: str, clip: Path, n: int) -> tuple[list[str], list[subprocess.Popen]]:
    from s2trt.serve.server import free_port

    urls, procs = [], []
    for _ in range(n):
        port = free_port()
        procs.append(subprocess.Popen(
            [ffmpeg, "-hide_banner", "-loglevel", "quiet", "-re", "-stream_loop", "-1", "-i", str(clip),
             "-c", "copy", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"tcp://127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while not listening(port):
            if time.monotonic() > deadline:
                sys.exit(f"ffmpeg did not listen on {urls[-1]}")
            time.sleep(0.05)
    return urls, procs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class NullSink:
    def write(self, frame, dets) -> None:
        pass


def open_backend(a: argparse.Namespace, model: Path):
    if a.engine:
        from s2trt.runtime.backends.trt import TrtBackend

        return TrtBackend(a.engine, a.plugin_lib, "cuda")
    from s2trt.runtime.backends.ort import OrtBackend

    return OrtBackend(model, a.device, a.threads)


def run_once(a, backend, specs: list[str]) -> dict:
    from s2trt.runtime.inputs.streams import LiveOptions, MultiSource
    from s2trt.runtime.pipeline import DetectOptions, Runner

    ms = MultiSource(specs, live=LiveOptions(read_timeout_s=10, reconnect_timeout_s=30))
    runner = Runner(backend, ms, NullSink(), DetectOptions(), batch=a.batch or len(specs))
    # Counted from the first inferred frame: the streams' probing (about a second) is not the rate.
    first = threading.Event()
    runner.on_frames = lambda n: first.set()
    timer = threading.Thread(target=lambda: (first.wait(60), time.sleep(a.seconds), ms.close()),
                             daemon=True)
    marks: dict[str, float] = {}

    def mark() -> None:
        first.wait(60)
        marks["cpu0"], marks["t0"] = time.process_time(), time.perf_counter()
        marks["f0"] = sum(s.frames for s in ms.stats.values())
        marks.update({f"d:{k}": s.dropped for k, s in ms.stats.items()})
        marks.update({f"n:{k}": s.frames for k, s in ms.stats.items()})

    marker = threading.Thread(target=mark, daemon=True)
    timer.start()
    marker.start()
    runner.run()
    wall = time.perf_counter() - marks["t0"]
    cpu = time.process_time() - marks["cpu0"]
    frames = sum(s.frames for s in ms.stats.values()) - marks["f0"]
    per = {k: ((s.frames - marks.get(f"n:{k}", 0)) / wall, s.dropped - marks.get(f"d:{k}", 0))
           for k, s in ms.stats.items()}
    return {"frames": frames, "wall": wall, "fps": frames / wall, "cpu_ms": cpu / max(frames, 1) * 1e3,
            "per": per, "infer_ms": runner.stats.table().get("infer", {}).get("mean", 0.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_mutually_exclusive_group()
    m.add_argument("--onnx")
    m.add_argument("--engine")
    p.add_argument("--plugin-lib")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    p.add_argument("--batch", type=int, help="frames per batch (default: the number of streams)")
    p.add_argument("--mode", choices=["live", "files"], default="live")
    a = p.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("needs the ffmpeg program (apt-get install -y ffmpeg)")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with tempfile.TemporaryDirectory(prefix="s2trt-bench-streams-") as tmp:
        work = Path(tmp)
        model = Path(a.onnx) if a.onnx else None if a.engine else export_demo(work)
        # Files mode reads each clip once from start to end: long enough for the measured time.
        clip = make_clip(ffmpeg, work, 4 if a.mode == "live" else max(a.seconds, 4) * 2)
        backend = open_backend(a, model)
        print(f"# bench_streams: {backend.name}, input {backend.imgsz[0]}x{backend.imgsz[1]}, "
              f"{a.mode} 1920x1080 @ {FPS} FPS streams, {a.seconds:g} s per run")
        print(f"# {platform.machine()} {os.cpu_count()} CPUs ({cpu_name()}), "
              f"load average {os.getloadavg()[0]:.1f} at start, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"{'streams':>7}{'batch':>6}{'agg FPS':>9}{'FPS/stream (min..max)':>24}"
              f"{'dropped':>9}{'drop %':>8}{'CPU ms/frame':>14}{'infer ms/batch':>16}")
        try:
            for n in a.streams:
                procs: list[subprocess.Popen] = []
                if a.mode == "live":
                    specs, procs = serve(ffmpeg, clip, n)
                else:
                    specs = []
                    for i in range(n):
                        (work / f"cam{i}.ts").symlink_to(clip)
                        specs.append(str(work / f"cam{i}.ts"))
                try:
                    r = run_once(a, backend, specs)
                finally:
                    for pr in procs:
                        pr.send_signal(signal.SIGKILL)
                        pr.wait()
                    for s in specs:
                        if a.mode == "files":
                            Path(s).unlink()
                fps = [v[0] for v in r["per"].values()]
                dropped = sum(v[1] for v in r["per"].values())
                read = r["frames"] + dropped
                print(f"{n:>7}{a.batch or n:>6}{r['fps']:>9.1f}"
                      f"{f'{sum(fps) / len(fps):.1f} ({min(fps):.1f}..{max(fps):.1f})':>24}"
                      f"{dropped:>9}{100 * dropped / max(read, 1):>7.0f}%{r['cpu_ms']:>14.1f}"
                      f"{r['infer_ms'] * (a.batch or n):>16.1f}", flush=True)
        finally:
            backend.close()
        print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
