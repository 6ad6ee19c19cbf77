"""s2export: a YOLOv5-S2 checkpoint -> checked ONNX (portable and TensorRT flavours) -> TensorRT engine.

The parser is assembled from option groups (`add_*_args`) and the work is done by the stages of
s2trt.export.pipeline, so a feature such as INT8 adds one option group and one stage.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2trt.cli import add_verbosity, run_main
from s2trt.errors import EXIT_NO_ENGINE, EXIT_OK, MissingDependencyError, S2Error
from s2trt.export.nms import TRT_TOPK_MAX

log = logging.getLogger("s2trt.export")

EPILOG = """\
exit codes:
  0   done: ONNX written and checked (and the engine built, unless --onnx-only)
  1   bad input, a failed check (parity, graph surgery) or a failed engine build: the message
      says which (an export that fails writes no files)
  2   bad command line
  3   ONNX written, but no TensorRT here to build the engine: the command that builds it on the
      target is printed (use --onnx-only to make this exit 0)
  70  internal error in s2trt (rerun with --verbose and report it)
  130 interrupted

examples:
  s2export best.pt --onnx-only                  portable + TensorRT-flavour ONNX, 640x640, batch 1
  s2export best.pt --dynamic --fp16 --nms       FP16, dynamic batch, in-graph NMS, engine if possible
  s2export best.trt.onnx --fp16                 build the engine on the target (e.g. a Jetson)
"""


# Options that shape the exported graph; an .onnx input was exported already.
EXPORT_ONLY = ("cfg", "names", "imgsz", "batch", "dynamic", "opset", "nms", "conf_thres", "iou_thres",
               "max_det", "topk", "simplify", "output", "full_reference")


def _shape(text: str) -> tuple[int, ...]:
    """'4' (a batch size) or '4x3x640x640' (N x C x H x W)."""
    if not re.fullmatch(r"\d+(x\d+){3}|\d+", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a batch size or an NxCxHxW shape")
    return tuple(int(v) for v in text.strip().split("x"))


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--cfg", help="model config (bundled name such as yolov5s-s2, or a yaml file); "
                   "needed for a plain state_dict, else read from the checkpoint")
    g.add_argument("--names", metavar="YAML|FILE|LIST",
                   help="class names when the checkpoint has none (a plain state_dict) or to replace "
                   "its own: a YOLOv5 data yaml (names: list or {0: name}), a text file with one name "
                   "per line, or a comma-separated list")
    g.add_argument("--imgsz", type=int, nargs="+", default=[640], metavar="N",
                   help="input size: one value (square) or two (h w), multiples of the stride "
                   "(default 640)")
    b = g.add_mutually_exclusive_group()
    b.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    b.add_argument("--dynamic", action="store_true", help="dynamic batch size")
    g.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")


def add_graph_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("graph")
    g.add_argument("--fp16", action="store_true",
                   help="FP16 graphs (weights and compute FP16, inputs/outputs FP32) and an FP16 engine")
    g.add_argument("--nms", action="store_true",
                   help="end the graph in NMS: num_dets, det_boxes, det_scores, det_classes")
    g.add_argument("--conf-thres", type=float, default=0.25, help="NMS score threshold (default 0.25)")
    g.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    g.add_argument("--max-det", type=int, default=300, help="detections per image (default 300)")
    g.add_argument("--topk", type=int, default=1000,
                   help=f"candidates per image before NMS, by score, 1..{TRT_TOPK_MAX} (TensorRT's TopK "
                   "limit; default 1000)")
    g.add_argument("--no-plugin", action="store_true",
                   help="no S2SplitAttention plugin: skip the TensorRT-flavour ONNX and build the "
                   "engine from the portable graph")
    g.add_argument("--simplify", action="store_true", help="also simplify the graph with onnxslim")
    g.add_argument("--full-reference", action="store_true",
                   help="also run the whole TensorRT-flavour graph under onnx.reference (pure NumPy, "
                   "independent of ONNX Runtime; adds about 10 s at 640)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    # str, not Path: a trailing slash (a folder to make) must survive.
    g.add_argument("-o", "--output",
                   help="portable ONNX file (.onnx) or folder (default: beside the weights); a folder "
                   "that does not exist (a name ending in / or without a suffix) is made when the files "
                   "are written; the TensorRT flavour goes beside the ONNX as <name>.trt.onnx, each "
                   "with a <name>.json sidecar")
    g.add_argument("--onnx-only", action="store_true",
                   help="stop after the ONNX files, even where TensorRT is installed")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorRT engine")
    g.add_argument("--workspace", type=float, metavar="GIB", help="builder workspace limit in GiB")
    for key in ("min", "opt", "max"):
        g.add_argument(f"--{key}-shape", f"--{key}", dest=f"{key}_shape", type=_shape, metavar="SHAPE",
                       help=f"{key} input shape of a dynamic-batch engine: a batch size or NxCxHxW")
    g.add_argument("--timing-cache", type=Path, help="timing cache file (read if present, then written)")
    g.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    g.add_argument("--plugin-lib", type=Path,
                   help="S2SplitAttention plugin library (default: the one built by CMake)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2export", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a YOLOv5-S2 checkpoint to ONNX (checked against PyTorch) and build a "
                    "TensorRT engine; or build the engine from an ONNX file made by s2export.")
    p.add_argument("weights", type=Path, help="YOLOv5 checkpoint (.pt), or an s2export .onnx file")
    add_model_args(p)
    add_graph_args(p)
    add_output_args(p)
    add_engine_args(p)
    from s2trt.calib.cli import add_int8_options

    add_int8_options(p)
    add_verbosity(p)
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check what the command line alone can tell: such mistakes exit 2 before any work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.topk <= TRT_TOPK_MAX:
        # A larger pre-filter would not build: TensorRT's TopK layer takes K <= 3840 (nms.py).
        parser.error(f"--topk {args.topk}: TensorRT's TopK layer takes at most {TRT_TOPK_MAX} "
                     f"candidates; use 1..{TRT_TOPK_MAX}")
    if args.int8 and not args.calib:
        parser.error("--int8 needs --calib SOURCE: the calibration images (a folder, a glob, a video "
                     "or a YOLO data yaml)")
    if args.int8 and args.fp16:
        parser.error("--int8 and --fp16 exclude each other: the INT8 export already writes an INT8+FP16 "
                     "graph (<name>-int8-fp16.onnx, its unquantized layers in FP16), and that is what the "
                     "engine is built from")
    if args.batch < 1:
        parser.error(f"--batch {args.batch} must be 1 or more")
    return args


def request(args: argparse.Namespace) -> Any:
    from s2trt.detect.options import DetectOptions
    from s2trt.export.nms import NMSConfig
    from s2trt.export.pipeline import ExportRequest

    if args.int8:
        from s2trt.calib.pipeline import check_int8_args

        check_int8_args(args)  # a bad --calib fails now, not after the export
    nms = (NMSConfig(DetectOptions(args.conf_thres, args.iou_thres, max_det=args.max_det), args.topk)
           if args.nms else None)
    return ExportRequest(weights=args.weights, cfg=args.cfg, names=args.names, imgsz=args.imgsz,
                         batch=None if args.dynamic else args.batch, opset=args.opset, fp16=args.fp16,
                         nms=nms, plugin=not args.no_plugin, output=args.output, simplify=args.simplify,
                         full_reference=args.full_reference)


def engine_options(args: argparse.Namespace, imgsz: Sequence[int]) -> Any:
    from s2trt.export.engine import EngineOptions

    def full(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return (shape[0], 3, *imgsz) if shape is not None and len(shape) == 1 else shape

    precision = "int8" if getattr(args, "int8", False) else "fp16" if args.fp16 else "fp32"
    return EngineOptions(precision=precision, workspace_gib=args.workspace,
                         min_shape=full(args.min_shape), opt_shape=full(args.opt_shape),
                         max_shape=full(args.max_shape), timing_cache=args.timing_cache,
                         device=args.device, verbose=args.verbose, plugin_lib=args.plugin_lib,
                         use_plugin=not args.no_plugin)


def engine_path(onnx_path: Path) -> Path:
    """model.engine beside any graph s2export writes for model (model.trt.onnx, model-fp16.trt.onnx,
    model-int8-fp16.onnx …): `s2export model.pt --fp16` then `s2infer --engine model.engine`, as
    model cards write it; the precision is in the engine's sidecar."""
    stem = onnx_path.stem.removesuffix(".trt")
    for suffix in ("-int8-fp16", "-int8", "-fp16"):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem.removesuffix(suffix)
            break
    return onnx_path.with_name(f"{stem}.engine")


def build(onnx_path: Path, opts: Any) -> int:
    """Build the engine beside the ONNX; without TensorRT print how to build it, exit 3."""
    from s2trt.export.engine import build_engine, manual_build_hint
    from s2trt.meta import sidecar_path

    engine = engine_path(onnx_path)
    try:
        build_engine(onnx_path, engine, opts)
    except MissingDependencyError as e:
        log.debug("%s", e)
        hint = "\n".join(f"  {line}" for line in manual_build_hint(onnx_path, opts, engine).splitlines())
        print(f"s2export: TensorRT is not installed here, so no engine was built from {onnx_path.name}; "
              f"copy it and {sidecar_path(onnx_path).name} to the target and build {engine.name} "
              f"there, in their folder:\n{hint}", file=sys.stderr)
        return EXIT_NO_ENGINE
    print(f"engine: {engine} ({_size(engine)})")
    return EXIT_OK


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def summary(state: Any) -> str:
    req = state.req
    batch = "dynamic batch" if req.batch is None else f"batch {req.batch}"
    lines = ["s2export summary", "  files:"]
    for a in state.artifacts:
        what = f"{a.flavour} {req.precision}, {batch}, {state.imgsz[0]}x{state.imgsz[1]}"
        if a.flavour == "tensorrt":
            what += f", {state.blocks} S2SplitAttention node{'s' if state.blocks != 1 else ''}"
        if req.nms:
            what += ", in-graph NMS"
        lines.append(f"    {a.path}  {_size(a.path)}  ({what})")
    lines += [f"    {p}" for p in state.written if p.suffix == ".json"]
    lines.append(f"  parity on {state.x_source}:")
    lines += [f"    {p.line()}" for p in state.parity]
    if state.nms_report:
        r = state.nms_report
        agree = {True: ", same as the host NMS",
                 False: ", DIFFERENT from the host NMS"}.get(r.get("agree"), "")
        lines.append(f"  nms: {r['detections']} detections on the parity input{agree}")
    total = sum(state.timings.values())
    lines.append("  time: " + ", ".join(f"{k.split(' (')[0].split(':')[0]} {v:.1f} s"
                                        for k, v in state.timings.items()) + f"; total {total:.1f} s")
    return "\n".join(lines)


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    """Every file this command line can write: the graphs, their sidecars, the engine and its."""
    from s2trt.calib.pipeline import int8_fp16_path, int8_path
    from s2trt.export.pipeline import ExportRequest, tensorrt_path
    from s2trt.meta import sidecar_path

    if args.weights.suffix.lower() == ".onnx":
        graphs = [args.weights]
        written: list[Path] = []
    else:
        portable = ExportRequest(weights=args.weights, fp16=args.fp16, output=args.output).portable_path()
        graphs = [portable] + ([] if args.no_plugin else [tensorrt_path(portable)])
        if args.int8:
            graphs += [int8_path(portable), int8_fp16_path(int8_path(portable))]
        written = graphs + [sidecar_path(g) for g in graphs]
    engines = {engine_path(g) for g in graphs}
    return written + sorted(engines) + [sidecar_path(e) for e in sorted(engines)]


def guard_inputs_from_outputs(args: argparse.Namespace) -> None:
    """An output never replaces an input, the rule s2infer follows: checked before any work for
    every file the command line names (a --names n.json beside -o n.onnx would become its
    sidecar), and again for every file published (s2trt.publish)."""
    from s2trt.meta import sidecar_path
    from s2trt.publish import guard_inputs, refuse_input

    inputs: list[tuple[str | Path, str]] = [(args.weights, "the model")]
    if args.weights.suffix.lower() == ".onnx":
        inputs.append((sidecar_path(args.weights), "the model's sidecar"))
    for flag in ("cfg", "names", "plugin_lib", "calib", "int8_val"):
        value = getattr(args, flag, None)
        if value:
            inputs.append((value, f"the --{flag.replace('_', '-')} file"))
    guard_inputs(inputs)
    for out in planned_outputs(args):
        refuse_input(out, "the output")


@dataclass
class Exported:
    """What one s2export run made: the export's state (None for an .onnx input), the graph the
    engine is built from (None with --onnx-only) and the exit code (EXIT_NO_ENGINE: no TensorRT
    here, the command that builds it was printed)."""

    state: Any = None
    target: Path | None = None
    code: int = EXIT_OK

    @property
    def engine(self) -> Path | None:
        return engine_path(self.target) if self.target is not None and self.code == EXIT_OK else None


def _main(args: argparse.Namespace) -> int:
    return export(args).code


def export(args: argparse.Namespace) -> Exported:
    """The whole s2export run on parsed arguments: the command line's and s2trt.export_model's."""
    guard_inputs_from_outputs(args)
    if args.weights.suffix.lower() == ".onnx":
        return _export_onnx(args)
    from s2trt.export.pipeline import ExportState, run

    state = run(ExportState(request(args)))
    if not args.quiet:
        print(summary(state))
    qdq = int8_stage(args, state) if args.int8 else None
    if args.onnx_only:
        return Exported(state)
    if qdq is not None:  # a typed Q/DQ graph: TensorRT 10 and 11 build it strongly typed, as is
        target = qdq
    else:
        target = next(a.path for a in state.artifacts if a.flavour == ("portable" if args.no_plugin
                                                                         else "tensorrt"))
    return Exported(state, target, build(target, engine_options(args, state.imgsz)))


def int8_stage(args: argparse.Namespace, state: Any) -> Path:
    """The INT8 graphs of the portable FP32 export (s2trt.calib), with their accuracy report.

    Returns the graph the engine is built from: the INT8+FP16 one where it could be made.
    """
    from s2trt.calib.pipeline import int8_path, quantize_export
    from s2trt.calib.report import format_table

    portable = next(a.path for a in state.artifacts if a.flavour == "portable")
    out = int8_path(portable)
    print(f"quantizing to INT8 with calibration images from {args.calib} ...", file=sys.stderr)
    result = quantize_export(portable, out, args)
    print(f"  {out}  {_size(out)}  (portable int8 Q/DQ, {result['method']} calibration)")
    print(f"  {out.with_suffix('.json')}")
    mixed = Path(result["int8_fp16"]) if result.get("int8_fp16") else None
    if mixed is not None:
        print(f"  {mixed}  {_size(mixed)}  (int8 Q/DQ, float layers FP16: the graph TensorRT builds)")
        print(f"  {mixed.with_suffix('.json')}")
    report = result["accuracy"]
    lines = format_table(report).splitlines() if report is not None else [result["accuracy_note"]]
    print("\n".join(f"  {line}" for line in lines))
    if mixed is not None:
        return mixed
    if not args.onnx_only:
        # Strongly typed TensorRT (11, and 10 for a Q/DQ graph) runs every unquantized layer in the
        # graph's own type, so this engine keeps the Detect convs and the attention MLP in FP32.
        log.warning("no INT8+FP16 graph could be made (the reason is logged above), so the engine is "
                    "built from %s, whose unquantized layers run in FP32", out.name)
    return out


def _export_onnx(args: argparse.Namespace) -> Exported:
    """`s2export model.onnx`: only the engine, from an ONNX that s2export wrote."""
    from s2trt.meta import read_onnx_meta

    if not args.weights.is_file():
        raise S2Error(f"ONNX file not found: {args.weights}")
    if args.onnx_only:
        raise S2Error("--onnx-only with an .onnx input leaves nothing to do")
    defaults = build_parser().parse_args([str(args.weights)])
    ignored = [f"--{k.replace('_', '-')}" for k in EXPORT_ONLY if getattr(args, k) != getattr(defaults, k)]
    if ignored:
        log.warning("%s: the graph is already exported, so %s %s no effect", args.weights.name,
                    ", ".join(ignored), "has" if len(ignored) == 1 else "have")
    meta = read_onnx_meta(args.weights)
    opts = engine_options(args, meta.imgsz)
    if args.int8 and meta.precision != "int8":  # TensorRT ≤ 10: implicit INT8 with a calibrator
        from s2trt.calib.pipeline import check_int8_args, trt_calibrator

        check_int8_args(args)
        try:
            opts.calibrator = trt_calibrator(args.weights, args, opts)
        except MissingDependencyError as e:  # no TensorRT or CUDA here: build() prints the command
            log.debug("%s", e)
    return Exported(None, args.weights, build(args.weights, opts))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2export", parse, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
