"""INT8 options for s2export, and `python -m s2trt.calib`, which quantizes an existing FP32 export.

    python -m s2trt.calib model.onnx --calib data.yaml --calib-method all
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from s2trt.calib.data import DEFAULT_SIZE
from s2trt.calib.qdq import DEFAULT_METHOD, DEFAULT_TRT_METHOD, EXCLUDE_GROUPS, CalibMethod
from s2trt.calib.report import DEFAULT_MAX_DROP
from s2trt.cli import add_verbosity, run_main

METHOD_CHOICES = [*(m.value for m in CalibMethod), "all"]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text}")
    return v


def add_int8_options(parser: argparse.ArgumentParser, with_flag: bool = True) -> None:
    """The INT8 option group; with_flag adds --int8 itself (s2export), off for the standalone tool."""
    g = parser.add_argument_group(
        "INT8", "Q/DQ ONNX by ONNX Runtime static quantization (TensorRT 10 and 11), with an accuracy "
        "report; TensorRT ≤ 10 engines can use an implicit calibrator with a cache instead")
    if with_flag:
        g.add_argument("--int8", action="store_true", help="also write the INT8 Q/DQ graph (needs --calib)")
    g.add_argument("--calib", metavar="SOURCE",
                   help="calibration images: a folder, a glob ('imgs/*.jpg'), a video (every Nth frame) "
                        "or a YOLO data yaml (its calib split, else train, else val)")
    g.add_argument("--calib-split", help="split of a data yaml to calibrate on")
    g.add_argument("--calib-size", type=_positive, default=DEFAULT_SIZE,
                   help=f"number of calibration images, sampled with a fixed seed (default {DEFAULT_SIZE})")
    g.add_argument("--calib-batch", type=_positive,
                   help="calibration batch (default: the graph's fixed batch, else 4)")
    g.add_argument("--calib-seed", type=int, default=0, help="seed of the image sample (default 0)")
    g.add_argument("--calib-video-step", type=_positive, metavar="N",
                   help="use every Nth video frame (default: spread --calib-size frames over the video)")
    g.add_argument("--calib-method", choices=METHOD_CHOICES,
                   help=f"activation range method (default {DEFAULT_METHOD.value} for the Q/DQ graph, "
                        f"{DEFAULT_TRT_METHOD.value} for the TensorRT ≤ 10 calibrator); 'all' tries the "
                        "three and keeps the best (needs labelled validation data)")
    g.add_argument("--int8-exclude", action="append", metavar="SPEC",
                   help=f"keep nodes in float: groups ({', '.join(EXCLUDE_GROUPS)}), 'default' "
                        "(detect,attention), 'none', or shell patterns of node names or op types "
                        "('/model.0/*', 'Sigmoid'); repeat or comma-separate. Replaces the default "
                        "(detect,attention), e.g. --int8-exclude default,stem")
    g.add_argument("--calib-cache", type=Path, metavar="FILE",
                   help="TensorRT ≤ 10 calibration cache: reused when it matches the model, written "
                        "otherwise")
    g.add_argument("--int8-val", metavar="DATA.yaml",
                   help="labelled data for the accuracy report (default: the --calib data yaml)")
    g.add_argument("--int8-val-split", default="val", help="split for the accuracy report (default val)")
    g.add_argument("--int8-val-limit", type=_positive, metavar="N", help="evaluate only the first N images")
    g.add_argument("--max-map-drop", type=float, default=DEFAULT_MAX_DROP, metavar="POINTS",
                   help=f"warn when INT8 loses more mAP50 points than this (default {DEFAULT_MAX_DROP:g})")
    g.add_argument("--no-int8-report", action="store_true", help="skip the accuracy report")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m s2trt.calib",
        description="Quantize an s2export FP32 ONNX to INT8 Q/DQ and report the accuracy it costs.")
    p.add_argument("onnx", type=Path, help="FP32 portable ONNX written by s2export")
    p.add_argument("-o", "--output", type=Path, help="INT8 ONNX (default: <onnx stem>-int8.onnx)")
    add_int8_options(p, with_flag=False)
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    from s2trt.calib.pipeline import int8_path, quantize_export

    out = args.output or int8_path(args.onnx)
    result = quantize_export(args.onnx, out, args)
    print(f"INT8 Q/DQ ({result['method']}): {out} (sidecar {out.with_suffix('.json').name})")
    if result["int8_fp16"] is not None:
        print(f"INT8+FP16 for strongly typed TensorRT: {result['int8_fp16']}")
    if result["accuracy"] is not None:
        from s2trt.calib.report import format_table

        print(format_table(result["accuracy"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2trt.calib", parse, _main, argv)
