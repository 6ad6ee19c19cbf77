"""s2infer: run a YOLOv5-S2 detector on images, videos, cameras and streams (like YOLOv5's detect.py).

Only argparse is imported at module level: `s2infer --help` answers at once, and torch, onnxruntime
and tensorrt are imported only by the backend that is asked for.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from s2trt.cli import add_verbosity, run_main, sigterm_as_interrupt
from s2trt.detect.image_limits import (  # struct and re only: --help stays instant
    DEFAULT_MAX_PIXELS,
    limit_decoder_pixels,
)
from s2trt.detect.options import DetectOptions
from s2trt.errors import S2Error, UsageError
from s2trt.runtime.model import TRITON_BATCH, BackendOptions, ModelRef

if TYPE_CHECKING:  # OpenCV: --help stays instant
    from s2trt.runtime.inputs.sources import Item, SourceKind

log = logging.getLogger("s2trt.runtime")

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


REPORT_S = 10.0  # with --verbose, the per-source table this often while sources are live

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
    r.add_argument("--queue-size", type=int, default=4, help="batches buffered between stages (default 4)")
    add_verbosity(r)
    args = p.parse_args(_imgsz_argv(argv))
    _check(p, args)
    return args


def _check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    a.batch_given = a.batch is not None
    if a.batch is None:
        a.batch = TRITON_BATCH if a.triton else 1
    if a.push_timeout is not None and not a.push_timeout > 0:  # also refuses nan
        p.error("--push-timeout must be above 0 seconds")
    try:
        a.options = detect_options(a)
    except S2Error as e:
        p.error(str(e))
    for flag, value in (("--batch", a.batch), ("--vid-stride", a.vid_stride), ("--queue-size", a.queue_size)):
        if value < 1:
            p.error(f"{flag} {value} must be 1 or more")
    if a.max_pixels < 1:
        p.error("--max-pixels must be 1 or more")
    if not (a.stream_timeout > 0 and a.reconnect_timeout > 0):  # also refuses nan
        p.error("--stream-timeout and --reconnect-timeout must be above 0 seconds")
    if a.imgsz is not None and len(a.imgsz) not in (1, 2):
        p.error("--imgsz takes one or two numbers (h [w])")


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


def detect_options(a: argparse.Namespace) -> DetectOptions:
    return DetectOptions(a.conf_thres, a.iou_thres, a.classes, a.agnostic_nms, a.max_det)


def model_ref(a: argparse.Namespace) -> ModelRef:
    if a.triton:
        return ModelRef("triton", a.triton)
    kind = "engine" if a.engine else "onnx" if a.onnx else "weights"
    return ModelRef(kind, getattr(a, kind))


def backend_options(a: argparse.Namespace) -> BackendOptions:
    size = tuple(a.imgsz) if a.imgsz else None
    return BackendOptions(device=a.device, plugin_lib=a.plugin_lib,
                          imgsz=None if size is None else (size[0], size[-1]), cfg=a.cfg, half=a.half,
                          threads=a.threads, triton_model=a.triton_model, cuda_graphs=not a.no_cuda_graphs,
                          gpu_preprocess={"auto": None, "on": True, "off": False}[a.gpu_preprocess])


def plan_outputs(a: argparse.Namespace, items: Sequence[Item]
                 ) -> tuple[Path | None, Path | None, Path | None]:
    """(save_dir, output_file, jsonl_path) from --project/--name, -o and --save-json.

    Nothing is created here: folders appear with the first file written into them."""
    from s2trt.detect.media import IMAGE_EXTS, VIDEO_EXTS
    from s2trt.runtime.outputs.sinks import increment_dir

    wants_dir = a.save or (a.save_json == "")
    save_dir = out_file = None
    if a.output:
        out = Path(a.output)
        names_a_file = out.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS
        if len(items) == 1 and names_a_file:
            _check_output_kind(out, items[0][0])
            out_file = out
        elif names_a_file and not out.is_dir():  # a folder or glob gives several files as well
            raise UsageError(f"-o {out} names one file, but {len(items)} inputs give a file each: "
                             "name a folder")
        elif wants_dir:
            save_dir = increment_dir(out.parent, out.name, exist_ok=True)
    elif wants_dir:
        save_dir = increment_dir(a.project, a.name, a.exist_ok)
    jsonl = None
    if a.save_json:
        jsonl = Path(a.save_json)
    elif a.save_json is not None:
        jsonl = out_file.with_suffix(".jsonl") if out_file else save_dir / "predictions.jsonl"
    return save_dir, out_file, jsonl


def _check_output_kind(out: Path, kind: SourceKind) -> None:
    """-o names one file: it must be the kind of file the input gives (never renamed behind the user)."""
    from s2trt.detect.media import IMAGE_EXTS
    from s2trt.runtime.inputs.sources import SourceKind
    from s2trt.runtime.outputs.sinks import WRITABLE_IMAGE_EXTS

    ext = out.suffix.lower()
    if kind == SourceKind.IMAGE and ext not in IMAGE_EXTS:
        raise UsageError(f"-o {out}: the input is an image, so the output is an annotated image: name it "
                         f"{'/'.join(sorted(WRITABLE_IMAGE_EXTS))}")
    if kind == SourceKind.IMAGE and ext not in WRITABLE_IMAGE_EXTS:
        raise UsageError(f"-o {out}: OpenCV cannot write {ext} images: name it "
                         f"{'/'.join(sorted(WRITABLE_IMAGE_EXTS))}")
    if kind != SourceKind.IMAGE and ext in IMAGE_EXTS:
        raise UsageError(f"-o {out}: the input is a {kind}, so the output is an annotated video: name it "
                         ".mp4 (or .avi, .mkv, .ts)")


def check_outputs(a: argparse.Namespace, items: Sequence[Item], save_dir: Path | None,
                  out_file: Path | None, jsonl: Path | None,
                  file_names: dict[str, str] | None = None) -> None:
    """Refuse any output that is an input: a source file, the model, its sidecar, the plugin or cfg."""
    from s2trt.meta import sidecar_path
    from s2trt.publish import guard_inputs
    from s2trt.runtime.inputs.streams import STREAMS_SUFFIX
    from s2trt.runtime.outputs.sinks import output_name, writes_in_place

    inputs = [(Path(p), "the input") for kind, p in items if not kind.live]
    inputs += [(Path(s), "the source list") for s in a.source if s.endswith(STREAMS_SUFFIX)]
    model = a.engine or a.onnx or a.weights
    if model:
        inputs += [(Path(model), "the model"), (sidecar_path(model), "the model's sidecar")]
    for extra, what in ((a.plugin_lib, "the plugin library"), (a.cfg, "the model config")):
        if extra and Path(extra).is_file():
            inputs.append((Path(extra), what))
    guard_inputs(inputs)  # and at publish time: nothing this run writes replaces one of them
    outputs = [("-o", out_file)] if out_file else []
    if jsonl is not None:
        outputs.append(("--save-json", jsonl))
    if save_dir is not None and a.save:
        flag = "-o" if a.output else "--project/--name"
        names = file_names or {}
        outputs += [(flag, save_dir / (names.get(p) or output_name(kind, p))) for kind, p in items]
    for flag, out in outputs:
        if writes_in_place(out):
            continue
        for path, what in inputs:
            if _same_file(out, path):
                shown = out if flag == "--save-json" or out == out_file else out.parent
                raise UsageError(f"{flag} {shown} would overwrite {what} {path}: choose another output")
    if out_file is not None and out_file.is_dir():
        raise UsageError(f"-o {out_file} is a folder: name a file to write")
    if jsonl is not None and jsonl.is_dir():
        raise UsageError(f"--save-json {jsonl} is a folder: name a file (or give no PATH for "
                         "predictions.jsonl in the output folder)")
    if out_file is not None and jsonl is not None and _same_file(out_file, jsonl):
        raise UsageError(f"--save-json {jsonl} is the -o file: choose another path for one of them")


def _same_file(a: Path, b: Path) -> bool:
    try:  # both exist: the same inode, whatever the links
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _quiet_opencv(verbose: bool) -> None:
    """Our one line says what went wrong; FFmpeg's and OpenCV's own logging would say it again."""
    if verbose:
        return
    # Read by OpenCV's FFmpeg backend when it is first used; -8 is AV_LOG_QUIET.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _main(a: argparse.Namespace) -> int:
    limit_decoder_pixels(a.max_pixels)  # before anything imports cv2: OpenCV reads it once
    if a.trust_engine_plugin:
        from s2trt.trt.plugin_lib import TRUST_ENV

        os.environ[TRUST_ENV] = "1"  # the flag is the variable's command-line form
    with sigterm_as_interrupt():
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from s2trt.runtime.backends.base import OverlappedBackend
    from s2trt.runtime.inputs.streams import LiveOptions, MultiSource, output_names
    from s2trt.runtime.model import open_model
    from s2trt.runtime.outputs.sinks import Sinks
    from s2trt.runtime.pipeline import Runner, open_frames, plan_batch
    from s2trt.text import redact_credentials

    _quiet_opencv(a.verbose)
    source = open_frames(a.source, vid_stride=a.vid_stride, max_pixels=a.max_pixels,
                         live=LiveOptions(a.stream_timeout, a.reconnect_timeout), decoder=a.decoder,
                         push_timeout_s=a.push_timeout, report_s=REPORT_S if a.verbose else None)
    multi = isinstance(source, MultiSource)
    file_names = output_names(source.items)
    save_dir, out_file, jsonl = plan_outputs(a, source.items)
    check_outputs(a, source.items, save_dir, out_file, jsonl, file_names)
    backend = open_model(model_ref(a), backend_options(a), a.options)
    try:
        names = backend.meta.names
        a.batch = plan_batch(a.batch if a.batch_given or a.triton else None, backend, source,
                             a.sequential)
        sinks = Sinks(names, save_dir, out_file, a.save, jsonl, a.show, a.line_width, a.hide_labels,
                      a.hide_conf, file_names, concurrent=multi)
        h, w = backend.imgsz
        log.info("s2infer: %s, input %dx%d, batch %d, %d classes, %s, decoder %s", backend.name, h, w,
                 a.batch, len(names), "pipelined" if not a.sequential else "sequential", source.decoder)
        bar = tqdm(total=source.total, unit="frame", desc="s2infer", disable=a.quiet or None,
                   dynamic_ncols=True, leave=False)
        runner = Runner(backend, source, sinks, a.options, a.batch, not a.sequential, a.queue_size,
                        bar.update)
        finished = False  # ran to the end, or stopped where every frame before has its result
        try:
            stats = runner.run()
            finished = True
        except KeyboardInterrupt:
            finished = True
            raise
        except S2Error as e:  # e.g. every Triton server gone: the frames before it all have results
            finished = getattr(e, "outputs_complete", False)
            raise
        finally:
            if multi:
                source.close()  # its reader threads, before the outputs are finished
            bar.close()
            sinks.close(publish=finished)  # a failed run publishes nothing half-written
            if finished:
                if multi:
                    log.info("per source:\n%s", source.table())
                _report(runner.stats, source.problems + sinks.problems, sinks.saved, a.conf_thres)
                if isinstance(backend, OverlappedBackend):
                    log.debug("%s; letterbox on the %s; batches %s", backend.enqueue_summary(),
                              "GPU" if runner.gpu_letterbox else "CPU",
                              "overlapped" if runner.overlap else "one at a time")
    finally:
        backend.close()
    if stats.frames == 0:
        raise S2Error(f"no frame could be read from {' '.join(map(redact_credentials, a.source))}")
    return 0


def _report(stats, problems: list[str], saved: list[Path], conf_thres: float) -> None:
    log.info("%s", stats.summary())
    if stats.frames and not stats.detections:
        log.warning("no detections in %d frame(s) above --conf-thres %g", stats.frames, conf_thres)
    if problems:
        log.warning("%d problem(s):\n  %s", len(problems), "\n  ".join(problems[:20]))
    if saved:
        folders = sorted({str(p.parent) for p in saved})
        log.info("results saved to %s", ", ".join(folders))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2infer", parse, _main, argv)
