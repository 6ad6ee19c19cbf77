"""Many streams into one model: 1, 4 and 8 live 1080p streams through s2infer's multi-source reader.

    python benchmarks/bench_streams.py [--onnx m.onnx | --engine m.engine] [--streams 1 4 8]
                                       [--seconds 15] [--batch N] [--mode live|files]
                                       [--source ts|rtsp] [--decoder opencv sw nv] [--decode-only]

Each stream is a real MPEG-TS stream served by ffmpeg on 127.0.0.1 (tcp, played at its own 25 FPS
and looped, as a camera would), read by `runtime.inputs.streams.MultiSource` (a reader per stream keeping
its newest frame) and run through the pipeline (`Runner`) with the frames of all streams batched
together (batch = the number of streams unless --batch), without output files. Reported per run:
aggregate FPS (frames inferred per second, all streams), FPS per stream, frames dropped per stream
(decoded, then replaced by a newer frame before inference took it), and the host CPU time of this
process per inferred frame (decode + letterbox + inference + NMS, every thread).
`--mode files` reads the same clip as N files instead: nothing is dropped, so it gives the ceiling.

`--source rtsp` serves H.264 over RTSP instead, from GStreamer's RTSP server (tests/rtsp_server.c,
built with gcc against libgstrtspserver-1.0-dev; one mount per stream, the clip played at its own
rate), read over TCP by each `--decoder` in turn (`opencv`: OpenCV's FFmpeg with rtsp_transport tcp;
`sw`/`nv`: GStreamer, rtspt://). Added columns: capture-to-result latency p50/p95 over all streams'
frames, and the CPU time per frame counts the gst-launch-1.0 children too. `--decode-only` takes
the batches without inference (result = the frame reached the batch), to compare the decode paths
alone on a small CPU.

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


def make_h264(ffmpeg: str, work: Path, seconds: float) -> Path:
    out = work / "clip1080_h264.mp4"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i",
                    str(ASSETS / "sample.mp4"), "-t", str(seconds), "-vf", "scale=1920:1080",
                    "-r", str(FPS), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast",
                    "-g", "50", "-bf", "0", str(out)], check=True)
    return out


def serve_rtsp(clip: Path, n: int, work: Path) -> tuple[list[str], list[subprocess.Popen]]:
    """n mounts on one GStreamer RTSP server, each playing the H.264 clip to its client."""
    from s2trt.serve.server import free_port

    binary = work / "rtsp_server"
    if not binary.exists():
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "gstreamer-rtsp-server-1.0"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["gcc", "-O1", "-o", str(binary), str(ROOT / "tests" / "rtsp_server.c"), *flags],
                       check=True)
    port = free_port()
    launch = f"filesrc location={clip} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96"
    proc = subprocess.Popen([str(binary), str(port), *(f"/cam{i}={launch}" for i in range(n))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        sys.exit("the RTSP server did not start")
    return [f"rtsp://127.0.0.1:{port}/cam{i}" for i in range(n)], [proc]


def child_cpu_s(skip: set[int]) -> dict[int, float]:
    """utime + stime of this process's running children (the gst-launch-1.0 decoders), by pid."""
    me, out = os.getpid(), {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if int(fields[1]) == me and pid not in skip:
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
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


class Consumer:
    """--decode-only: takes the muxer's batches as the pipeline would, without inference."""

    def __init__(self, ms, batch: int):
        self.ms, self.batch, self.on_frames = ms, batch, None

    def run(self) -> None:
        for b in self.ms.batches(self.batch):
            for f in b:
                self.ms.result(f)
            if self.on_frames:
                self.on_frames(len(b))


def run_once(a, backend, specs: list[str], decoder: str = "opencv",
             skip: frozenset[int] = frozenset()) -> dict:
    from s2trt.runtime.inputs.streams import LiveOptions, MultiSource
    from s2trt.runtime.pipeline import DetectOptions, Runner

    ms = MultiSource(specs, live=LiveOptions(read_timeout_s=10, reconnect_timeout_s=30), decoder=decoder)
    batch = a.batch or len(specs)
    runner = (Consumer(ms, batch) if a.decode_only
              else Runner(backend, ms, NullSink(), DetectOptions(), batch=batch))
    # Counted from the first inferred frame: the streams' probing (about a second) is not the rate.
    first = threading.Event()
    runner.on_frames = lambda n: first.set()
    timer = threading.Thread(target=lambda: (first.wait(60), time.sleep(a.seconds), ms.close()),
                             daemon=True)
    marks: dict[str, float] = {}

    def mark() -> None:
        first.wait(60)
        marks["cpu0"], marks["t0"] = time.process_time(), time.perf_counter()
        marks.update({f"c:{pid}": t for pid, t in child_cpu_s(set(skip)).items()})
        marks["f0"] = sum(s.frames for s in ms.stats.values())
        marks.update({f"d:{k}": s.dropped for k, s in ms.stats.items()})
        marks.update({f"n:{k}": s.frames for k, s in ms.stats.items()})

    marker = threading.Thread(target=mark, daemon=True)
    timer.start()
    marker.start()
    children: dict[int, float] = {}

    def watch() -> None:  # the children's CPU, read while they run (they are killed at the end)
        while not ms._stop.is_set():
            children.update(child_cpu_s(set(skip)))
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    runner.run()
    ms.close()
    wall = time.perf_counter() - marks["t0"]
    cpu = time.process_time() - marks["cpu0"]
    cpu += sum(t - marks.get(f"c:{pid}", 0.0) for pid, t in children.items())
    frames = sum(s.frames for s in ms.stats.values()) - marks["f0"]
    per = {k: ((s.frames - marks.get(f"n:{k}", 0)) / wall, s.dropped - marks.get(f"d:{k}", 0))
           for k, s in ms.stats.items()}
    import numpy as np

    lat = np.concatenate([np.asarray(s.latency.sample) for s in ms.stats.values()] or [np.zeros(0)])
    p50, p95 = (np.percentile(lat, [50, 95]) if lat.size else (0.0, 0.0))
    infer = runner.stats.table().get("infer", {}).get("mean", 0.0) if not a.decode_only else 0.0
    return {"frames": frames, "wall": wall, "fps": frames / wall, "cpu_ms": cpu / max(frames, 1) * 1e3,
            "per": per, "infer_ms": infer, "p50": p50, "p95": p95,
            "decoders": sorted({s.decoder for s in ms.stats.values() if s.decoder})}


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
    p.add_argument("--source", choices=["ts", "rtsp"], default="ts",
                   help="live streams: MPEG-2 in MPEG-TS from ffmpeg (ts), or H.264 over RTSP (rtsp)")
    p.add_argument("--decoder", nargs="+", choices=["opencv", "sw", "nv"], default=["opencv"],
                   help="decode paths to compare, one run each (default opencv)")
    p.add_argument("--decode-only", action="store_true", help="no inference: compare the decode paths")
    a = p.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("needs the ffmpeg program (apt-get install -y ffmpeg)")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # OpenCV's FFmpeg reads RTSP over UDP by default; TCP as GStreamer's rtspt:// does.
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    rtsp = a.mode == "live" and a.source == "rtsp"
    with tempfile.TemporaryDirectory(prefix="s2trt-bench-streams-") as tmp:
        work = Path(tmp)
        model = None if a.engine or a.decode_only else Path(a.onnx) if a.onnx else export_demo(work)
        # Files mode reads each clip once from start to end: long enough for the measured time.
        if rtsp:  # each client gets the clip from its start: long enough for the probing and the run
            clip = make_h264(ffmpeg, work, a.seconds + 8)
        else:
            clip = make_clip(ffmpeg, work, 4 if a.mode == "live" else max(a.seconds, 4) * 2)
        backend = None if a.decode_only else open_backend(a, model)
        what = "decode only" if backend is None else (f"{backend.name}, input {backend.imgsz[0]}x"
                                                      f"{backend.imgsz[1]}")
        kind = "RTSP H.264" if rtsp else "MPEG-TS MPEG-2" if a.mode == "live" else "files of"
        print(f"# bench_streams: {what}, {a.mode} {kind} 1920x1080 @ {FPS} FPS streams, {a.seconds:g} s "
              "per run")
        print(f"# {platform.machine()} {os.cpu_count()} CPUs ({cpu_name()}), "
              f"load average {os.getloadavg()[0]:.1f} at start, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"{'decoder':<12}{'streams':>7}{'batch':>6}{'agg FPS':>9}{'FPS/stream (min..max)':>24}"
              f"{'dropped':>9}{'drop %':>8}{'lat p50':>9}{'lat p95':>9}{'CPU ms/frame':>14}"
              f"{'infer ms/batch':>16}")
        try:
            for decoder in a.decoder:
                for n in a.streams:
                    procs: list[subprocess.Popen] = []
                    if rtsp:
                        specs, procs = serve_rtsp(clip, n, work)
                        if decoder != "opencv":
                            specs = [u.replace("rtsp://", "rtspt://", 1) for u in specs]
                    elif a.mode == "live":
                        specs, procs = serve(ffmpeg, clip, n)
                    else:
                        specs = []
                        for i in range(n):
                            (work / f"cam{i}.ts").symlink_to(clip)
                            specs.append(str(work / f"cam{i}.ts"))
                    try:
                        r = run_once(a, backend, specs, decoder, frozenset(pr.pid for pr in procs))
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
                    name = "/".join(r["decoders"]) or decoder
                    print(f"{name:<12}{n:>7}{a.batch or n:>6}{r['fps']:>9.1f}"
                          f"{f'{sum(fps) / len(fps):.1f} ({min(fps):.1f}..{max(fps):.1f})':>24}"
                          f"{dropped:>9}{100 * dropped / max(read, 1):>7.0f}%{r['p50']:>9.0f}{r['p95']:>9.0f}"
                          f"{r['cpu_ms']:>14.1f}{r['infer_ms'] * (a.batch or n):>16.1f}", flush=True)
        finally:
            if backend is not None:
                backend.close()
        print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
