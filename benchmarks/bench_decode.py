"""CPU time per decoded 1080p H.264 frame: OpenCV's FFmpeg vs GStreamer's software path (s2infer's
`--decoder opencv` and `--decoder sw`), each delivering BGR frames to Python as the pipeline reads them.

    python benchmarks/bench_decode.py [--seconds 10] [--repeat 2] [--clip video.mp4]

The clip (unless --clip): demo/assets/sample.mp4 scaled to 1920x1080, 25 FPS, H.264 (libx264 medium,
keyframe every 50 frames, no B-frames, as IP cameras send it). CPU is every thread of this process plus,
for GStreamer, its gst-launch-1.0 child (read from /proc before the child ends); wall FPS is as fast
as the decoder goes. Needs ffmpeg and GStreamer (gstreamer1.0-tools, -plugins-base/-good/-bad,
gstreamer1.0-libav).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "demo" / "assets"
FPS = 25
TICK = os.sysconf("SC_CLK_TCK")


def make_clip(work: Path, seconds: float) -> Path:
    out = work / "clip1080_h264.mp4"
    subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-stream_loop", "-1", "-i", str(ASSETS / "sample.mp4"), "-t", str(seconds),
                    "-vf", "scale=1920:1080", "-r", str(FPS), "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    "-preset", "medium", "-g", "50", "-bf", "0", str(out)], check=True)
    return out


def child_cpu_s(pid: int) -> float:
    """utime + stime of a running process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(clip: Path, decoder: str) -> dict:
    from s2trt.runtime.inputs.sources import SourceKind, open_capture

    t0, cpu0 = time.perf_counter(), time.process_time()
    cap = open_capture(SourceKind.VIDEO, str(clip), decoder=decoder)
    frames, child = 0, 0.0
    try:
        while cap.grab():
            if cap.retrieve()[0]:
                frames += 1
            proc = getattr(cap, "proc", None)
            if proc is not None and proc.poll() is None:
                child = child_cpu_s(proc.pid)  # the last reading before it exits at the end
        name = getattr(cap, "decoder", None) or "FFmpeg (OpenCV)"
    finally:
        cap.release()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0 + child
    return {"decoder": decoder, "name": name, "frames": frames, "wall": wall, "cpu_ms": cpu / frames * 1e3,
            "child_ms": child / frames * 1e3, "fps": frames / wall}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s = 250 frames)")
    p.add_argument("--repeat", type=int, default=2, help="runs per path, alternating (default 2)")
    p.add_argument("--clip", help="an H.264 video to decode instead of the scaled sample")
    a = p.parse_args()
    from s2trt.runtime.inputs.gst import resolve_decoder

    resolve_decoder("sw")  # GStreamer is there, or one line saying what to install
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with tempfile.TemporaryDirectory(prefix="s2trt-bench-decode-") as tmp:
        clip = Path(a.clip) if a.clip else make_clip(Path(tmp), a.seconds)
        print(f"# bench_decode: {clip.name}, 1920x1080 H.264, {platform.machine()} {os.cpu_count()} CPUs "
              f"({cpu_name()}), load average {os.getloadavg()[0]:.1f} at start, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"{'path':<10}{'decoder':<18}{'frames':>7}{'wall FPS':>10}{'CPU ms/frame':>14}"
              f"{'(in gst child)':>16}")
        for _ in range(a.repeat):
            for decoder in ("opencv", "sw"):
                r = run(clip, decoder)
                child = f"{r['child_ms']:.1f}" if decoder != "opencv" else "-"
                print(f"{decoder:<10}{r['name']:<18}{r['frames']:>7}{r['fps']:>10.1f}{r['cpu_ms']:>14.1f}"
                      f"{child:>16}", flush=True)
        print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    sys.exit(main())
