"""`s2trt.export_model`: s2export from Python.

The keyword arguments become s2export's command line and go through its own parser and its own
run (`s2trt.export.cli.export`), so the API checks, refuses and writes exactly what the command
does, with the same one-line messages (a bad option is a `UsageError`, exit code 2 on the command
line). It is a face over the export like the CLI, not a second implementation of it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2trt.errors import EXIT_NO_ENGINE, UsageError
from s2trt.export import cli
from s2trt.publish import forget_inputs


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote and measured.

    - `files`: every file written (graphs and their sidecars, then the engine), in order;
    - `onnx` / `tensorrt_onnx`: the portable graph and the graph with the S2SplitAttention node
      (None for an .onnx input, or without the plugin);
    - `engine`: the TensorRT engine, or None (`onnx_only`, or no TensorRT here: then
      `engine_skipped` is True and the command that builds it on the target was printed, as
      s2export prints it when it exits 3);
    - `parity`: one dict per check against PyTorch (`name`, `max_abs`, `rel`, `tol`, `pass`);
    - `nms`: the in-graph NMS against the host NMS on the parity input (None without `nms`).
    """

    files: tuple[Path, ...]
    onnx: Path | None
    tensorrt_onnx: Path | None
    engine: Path | None
    engine_skipped: bool
    parity: tuple[dict[str, Any], ...]
    nms: dict[str, Any] | None


def export_model(weights: str | os.PathLike[str], *, fp16: bool = False, imgsz: int | Sequence[int] = 640,
                 batch: int = 1, dynamic: bool = False, nms: bool = False, conf_thres: float = 0.25,
                 iou_thres: float = 0.45, max_det: int = 300, topk: int = 1000, no_plugin: bool = False,
                 output: str | os.PathLike[str] | None = None, onnx_only: bool = False, quiet: bool = True,
                 **options: Any) -> ExportResult:
    """Export a YOLOv5-S2 checkpoint (or build the engine of an s2export .onnx), as
    `s2export weights ...` does: every keyword is the s2export option of that name with
    underscores (`fp16=True` is `--fp16`, `imgsz=(384, 640)` is `--imgsz 384 640`, `int8=True,
    calib="images/"` is `--int8 --calib images/`); False and None leave an option out.

    Returns the files written and the parity figures. Raises `S2Error` (a `UsageError` for a bad
    option) with s2export's message; nothing is left half-written. `quiet=False` prints s2export's
    summary. Not thread-safe in one process: exports write files and set the process's logging.
    """
    given = {"fp16": fp16, "imgsz": imgsz, "batch": batch, "dynamic": dynamic, "nms": nms,
             "conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det, "topk": topk,
             "no_plugin": no_plugin, "output": output, "onnx_only": onnx_only, "quiet": quiet, **options}
    parser = cli.build_parser()
    args = _parse(parser, [os.fspath(weights), *_argv(parser, given)])
    try:
        done = cli.export(args)
    finally:
        forget_inputs()  # s2export guards its inputs from its outputs for this export only
    state = done.state
    flavours = {a.flavour: a.path for a in state.artifacts} if state is not None else {}
    engine = done.engine
    files = [*(state.written if state is not None else []), *_engine_files(engine)]
    return ExportResult(files=tuple(files), onnx=flavours.get("portable"),
                        tensorrt_onnx=flavours.get("tensorrt"), engine=engine,
                        engine_skipped=done.code == EXIT_NO_ENGINE,
                        parity=tuple(p.to_dict() for p in state.parity) if state is not None else (),
                        nms=state.nms_report if state is not None else None)


def _engine_files(engine: Path | None) -> list[Path]:
    from s2trt.meta import sidecar_path

    if engine is None:
        return []
    return [engine] + [p for p in (sidecar_path(engine),) if p.exists()]


def _argv(parser: argparse.ArgumentParser, given: dict[str, Any]) -> list[str]:
    """The command line that the keywords stand for (an unknown keyword is a TypeError, as for any
    Python function)."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    unknown = sorted(set(given) - set(actions))
    if unknown:
        raise TypeError(f"export_model() got unexpected keyword(s) {', '.join(unknown)}; its keywords "
                        f"are s2export's options: {', '.join(sorted(actions))}")
    argv: list[str] = []
    for key, value in given.items():
        action = actions[key]
        flag = max(action.option_strings, key=len)  # the long form
        if value is None or value is False:
            continue
        if action.nargs == 0:  # a switch
            argv.append(flag)
        elif isinstance(value, (list, tuple)) and isinstance(action, argparse._AppendAction):
            for v in value:
                argv += [flag, _text(v)]
        elif isinstance(value, (list, tuple)) and action.nargs in ("+", "*"):
            argv += [flag, *(_text(v) for v in value)]
        else:
            argv += [flag, _text(value)]
    return argv


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):  # a shape: (4, 3, 640, 640) is 4x3x640x640
        return "x".join(str(v) for v in value)
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """s2export's parse with its checks; argparse's exit becomes the UsageError of its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return cli.parse(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise UsageError(lines[-1].split("error: ", 1)[-1] if lines else "bad options") from None
