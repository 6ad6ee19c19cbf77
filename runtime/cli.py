"""s2infer: run a YOLOv5-S2 detector on images, videos, cameras and streams (like YOLOv5's detect.py).

The face over the runtime: parse the command line, map it onto one `RunRequest` and hand it to
`runtime/run.py`; one-line errors and exit codes come from `s2trt.cli.run_main`. Only argparse and
s2trt's light modules are imported here: `s2infer --help` answers at once, and torch, onnxruntime and
tensorrt are imported only by the backend that is asked for.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from s2trt.cli import add_verbosity, run_main
from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS  # struct and re only: --help stays instant
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error
from s2trt.runtime.model import GPU_PREPROCESS, TRITON_BATCH, BackendOptions, ModelRef
from s2trt.runtime.request import QUEUE_SIZE, InputOptions, OutputOptions, RunRequest
from s2trt.runtime.run import run

EPILOG = """examples:
  s2infer --engine yolov5s-s2.engine video.mp4            annotated video in runs/detect/exp
  s2infer --onnx demo.onnx sample.mp4 --save-json         + predictions.jsonl, one line per frame
  s2infer --onnx demo.onnx images/ --no-save --save-json out.jsonl
  s2infer --onnx demo.onnx video.mp4 --no-save --save-json - | jq .   JSON Lines on stdout
  s2infer --weights best.pt 0 --show                      camera 0, PyTorch reference backend
  s2infer --engine m.engine rtsp://cam/stream --batch 4 -o cam.mp4
  s2infer --engine m.engine cam1.mp4 rtsp://cam/live 0 --batch 3   several sources, one batch: a video
                                                          per source, one JSONL with `source` per line
  s2infer --engine m.engine cams.streams --save-json       the sources a .streams file lists, one a line
  s2infer --triton localhost:8001 video.mp4                the detector served by s2serve

exit codes: 0 done (unreadable files and frames are skipped and reported), 1 nothing could be done or
an output could not be written (the message says why; nothing half-written is left), 2 bad command line
(also an output that would overwrite an input), 70 internal error, 130 interrupted (Ctrl-C) and 143
terminated (SIGTERM): the outputs so far are complete"""


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="s2infer", description="Run YOLOv5-S2 detection on images, videos, cameras and streams.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="+", help="image, folder, glob ('imgs/*.jpg'), video, camera index "
                   "(0) or rtsp:// / rtmp:// / http:// / udp:// / tcp:// URL; several, or a .streams file "
                   "listing one per line, run together with their frames batched together")
    m = p.add_argument_group("model (one of --engine, --onnx, --weights, --triton)")
    which = m.add_mutually_exclusive_group(required=True)
    which.add_argument("--engine", metavar="PATH", help="TensorRT engine (with its .engine.json sidecar)")
    which.add_argument("--onnx", metavar="PATH", help="ONNX model exported by s2export (ONNX Runtime)")
    which.add_argument("--weights", metavar="PATH", help="YOLOv5 .pt checkpoint (PyTorch, reference path)")
    which.add_argument("--triton", metavar="HOST:PORT[,HOST:PORT...]", help="Triton servers running "
                       "s2trt's model repository (gRPC; see s2serve); several servers share the frames "
                       "with failover")
    m.add_argument("--triton-model", default="s2trt_detector", help="model name on the Triton server "
                   "(default s2trt_detector)")
    m.add_argument("--cfg", help="model config for a plain state_dict checkpoint (e.g. yolov5s-s2)")
    m.add_argument("--plugin-lib", metavar="PATH", help="S2SplitAttention plugin library for --engine "
                   "(default: $S2TRT_PLUGIN_LIB, else the one s2trt ships)")
    m.add_argument("--trust-engine-plugin", action="store_true",
                   help="--engine: also load the plugin library that came with the engine (beside it, "
                        "with the SHA-256 its sidecar records): it runs code, so only for an engine "
                        "from a source you trust (also: S2TRT_TRUST_ENGINE_PLUGIN=1)")
    m.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: the GPU "
                   "when there is one)")
    m.add_argument("--imgsz", type=_imgsz, metavar="N", help="network input h [w]; --onnx and "
                   "--engine take it from the model, --weights defaults to 640")
    m.add_argument("--no-cuda-graphs", action="store_true", help="--engine: enqueue every batch "
                   "directly instead of replaying it as a CUDA graph")
    m.add_argument("--gpu-preprocess", choices=["auto", "on", "off"], default="auto",
                   help="--engine: letterbox on the GPU with the kernels library (auto: when it is "
                        "installed; on: required)")
    m.add_argument("--half", action="store_true", help="FP16 inference for --weights on a GPU")
    m.add_argument("--threads", type=int, default=0, help="CPU threads of ONNX Runtime or PyTorch "
                   "(default: all cores)")

    d = p.add_argument_group("detection")
    d.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold (default 0.25)")
    d.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    d.add_argument("--classes", type=int, nargs="+", metavar="ID", help="keep only these class ids")
    d.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    d.add_argument("--max-det", type=int, default=300, help="detections per image (default 300)")

    i = p.add_argument_group("input")
    i.add_argument("--batch", type=int, default=None,
                   help=f"frames per inference batch (default: the number of cameras and streams, up to "
                        f"the model's maximum, else 1; {TRITON_BATCH} with --triton, so that many "
                        "requests are in flight for the server's dynamic batcher)")
    i.add_argument("--decoder", choices=["auto", "nv", "sw", "opencv"], default="auto",
                   help="how videos and streams are decoded: nv = NVIDIA's decoders through GStreamer "
                        "(nvv4l2decoder on Jetson, nvh264dec/nvh265dec), sw = GStreamer's software "
                        "decoders, opencv = OpenCV's FFmpeg; auto (default): nv where it exists, else "
                        "opencv. Cameras are read by OpenCV")
    i.add_argument("--push-timeout", type=float, default=None, metavar="S",
                   help="several sources: a batch is pushed when full or S seconds after its first "
                        "frame, with at most one frame per camera or stream (default: one frame "
                        "interval of the fastest live source)")
    i.add_argument("--vid-stride", type=int, default=1, help="use every Nth video frame (default 1)")
    i.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images and video frames larger than N pixels, checked from the file's "
                        "header before decoding (default %(default)s)")
    i.add_argument("--stream-timeout", type=float, default=10.0, metavar="S",
                   help="a camera or stream that gives no frame for S seconds has stalled and is "
                        "reopened; also the time allowed to open it (default 10)")
    i.add_argument("--reconnect-timeout", type=float, default=60.0, metavar="S",
                   help="a camera or stream that gives no frame for S seconds, reopening with backoff "
                        "included, ends; the other sources go on (default 60)")

    o = p.add_argument_group("output")
    o.add_argument("--save", action=argparse.BooleanOptionalAction, default=True,
                   help="save annotated images / videos (default on; --no-save to skip)")
    o.add_argument("--save-json", nargs="?", const="", metavar="PATH",
                   help="write JSON Lines, one record per frame (default PATH: predictions.jsonl in "
                   "the output folder; '-' for stdout; pipes and devices are written in place)")
    o.add_argument("--project", default="runs/detect", help="output root (default runs/detect)")
    o.add_argument("--name", default="exp", help="output folder under --project (exp, exp2, ...)")
    o.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of exp2, exp3, ...")
    o.add_argument("-o", "--output", metavar="PATH", help="output file (one video or image source) or "
                   "folder, instead of --project/--name")
    o.add_argument("--show", action="store_true", help="show results in a window (where a display exists)")
    o.add_argument("--line-width", type=int, help="box line width in pixels (default: from frame size)")
    o.add_argument("--hide-labels", action="store_true", help="draw boxes without labels")
    o.add_argument("--hide-conf", action="store_true", help="draw labels without scores")

    r = p.add_argument_group("run")
    r.add_argument("--sequential", action="store_true", help="no stage overlap (for comparison)")
    r.add_argument("--queue-size", type=int, default=QUEUE_SIZE,
                   help=f"batches buffered between stages (default {QUEUE_SIZE})")
    add_verbosity(r)
    args = p.parse_args(_imgsz_argv(argv))
    _check(p, args)
    return args


def _check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.imgsz is not None and len(a.imgsz) not in (1, 2):
        p.error("--imgsz takes one or two numbers (h [w])")
    try:
        a.request = request(a)
        a.request.check()
    except S2Error as e:
        p.error(str(e))


def _imgsz(text: str) -> list[int]:
    """`--imgsz` as _imgsz_argv joins it: "H" or "H,W"."""
    return [int(v) for v in text.split(",")]


def _imgsz_argv(argv: Sequence[str] | None) -> list[str]:
    """`--imgsz H [W]` joined into one `--imgsz=H,W`, so that the option takes its numbers and never
    the source after them (`--imgsz 320 tcp://…`). The second number is the width only when it could
    be one (32 or more: no model's input is narrower than its stride); a smaller one is a camera."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out += args[i - 1:]
            break
        if arg != "--imgsz" or i >= len(args) or not args[i].isdigit():
            out.append(arg)
            continue
        nums = [args[i]]
        i += 1
        if i < len(args) and args[i].isdigit() and int(args[i]) >= 32:
            nums.append(args[i])
            i += 1
        out.append("--imgsz=" + ",".join(nums))
    return out


def request(a: argparse.Namespace) -> RunRequest:
    """The run the command line asks for."""
    if a.triton:
        model = ModelRef("triton", a.triton)
    else:
        kind = "engine" if a.engine else "onnx" if a.onnx else "weights"
        model = ModelRef(kind, getattr(a, kind))
    size = tuple(a.imgsz) if a.imgsz else None
    backend = BackendOptions(device=a.device, plugin_lib=a.plugin_lib,
                             imgsz=None if size is None else (size[0], size[-1]), cfg=a.cfg, half=a.half,
                             threads=a.threads, triton_model=a.triton_model, cuda_graphs=not a.no_cuda_graphs,
                             gpu_preprocess=GPU_PREPROCESS[a.gpu_preprocess],
                             trust_engine_plugin=a.trust_engine_plugin)
    return RunRequest(
        model, tuple(a.source), backend,
        DetectOptions(a.conf_thres, a.iou_thres, a.classes, a.agnostic_nms, a.max_det),
        InputOptions(a.vid_stride, a.max_pixels, a.stream_timeout, a.reconnect_timeout, a.decoder,
                     a.push_timeout),
        OutputOptions(a.save, a.save_json, a.project, a.name, a.exist_ok, a.output, a.show, a.line_width,
                      a.hide_labels, a.hide_conf),
        batch=a.batch, sequential=a.sequential, queue_size=a.queue_size, verbose=a.verbose, quiet=a.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2infer", parse, lambda a: run(a.request), argv)
