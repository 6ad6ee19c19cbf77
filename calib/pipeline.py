"""The INT8 stage of s2export: calibration reader → Q/DQ ONNX per method → INT8+FP16 graph → accuracy
report → sidecars.

`quantize_export(onnx_fp32, out, args)` is what the exporter calls after writing the FP32 portable
graph; `trt_calibrator(onnx, args)` gives the engine builder a TensorRT ≤ 10 calibrator fed by the
same reader. `args` carries the options of s2trt.calib.cli.add_int8_options.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from s2trt.calib.data import (
    DEFAULT_BATCH,
    DEFAULT_SIZE,
    YAML_SUFFIXES,
    Preprocessing,
    list_items,
    open_reader,
)
from s2trt.calib.qdq import (
    DEFAULT_METHOD,
    DEFAULT_TRT_METHOD,
    CalibMethod,
    mixed_int8_fp16,
    quantize_qdq,
)
from s2trt.calib.report import DEFAULT_MAX_DROP, accuracy_report, verdict
from s2trt.errors import S2Error
from s2trt.meta import (
    ModelMeta,
    read_onnx_meta,
    read_sidecar,
    sidecar_path,
    write_bytes_atomic,
    write_json_atomic,
)
from s2trt.text import first_line

log = logging.getLogger(__name__)

ALL_METHODS = "all"


@dataclass
class Int8Options:
    calib: str
    method: str | None = None  # a CalibMethod value, "all", or None: the default of each path
    size: int = DEFAULT_SIZE
    batch: int | None = None  # None: the graph's fixed batch, else DEFAULT_BATCH
    seed: int = 0
    split: str | None = None
    video_step: int | None = None
    exclude: list[str] | None = None  # None: the default groups
    cache: Path | None = None
    val: str | None = None  # labelled data yaml for the report; None: the calib yaml, if it is one
    val_split: str = "val"
    val_limit: int | None = None
    max_map_drop: float = DEFAULT_MAX_DROP
    report: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Int8Options:
        if not getattr(args, "calib", None):
            raise S2Error("--int8 needs calibration images: --calib FOLDER|GLOB|VIDEO|DATA.yaml")
        g = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        return cls(calib=str(args.calib), method=g("calib_method"),
                   size=g("calib_size") or DEFAULT_SIZE, batch=g("calib_batch"), seed=g("calib_seed") or 0,
                   split=g("calib_split"), video_step=g("calib_video_step"), exclude=g("int8_exclude"),
                   cache=g("calib_cache"), val=g("int8_val"), val_split=g("int8_val_split") or "val",
                   val_limit=g("int8_val_limit"),
                   max_map_drop=DEFAULT_MAX_DROP if g("max_map_drop") is None else g("max_map_drop"),
                   report=not g("no_int8_report", False))

    def methods(self) -> list[CalibMethod]:
        if self.method is None:
            return [DEFAULT_METHOD]
        return list(CalibMethod) if self.method == ALL_METHODS else [CalibMethod.from_name(self.method)]

    def val_data(self) -> str | None:
        if self.val:
            return self.val
        return self.calib if Path(self.calib).suffix.lower() in YAML_SUFFIXES else None


def check_int8_args(args: argparse.Namespace) -> Int8Options:
    """Validate the INT8 options before a long export: fail on a bad source now, not at the end."""
    o = Int8Options.from_args(args)
    o.methods()
    list_items(o.calib, o.size, o.split, o.video_step)
    if len(o.methods()) > 1 and o.val_data() is None:
        raise S2Error("--calib-method all picks the method by mAP, so it needs labelled validation "
                      "data: --calib DATA.yaml or --int8-val DATA.yaml")
    return o


def int8_path(portable: Path) -> Path:
    """model.onnx -> model-int8.onnx (the exporter names its FP16 graph model-fp16.onnx)."""
    return portable.with_name(portable.stem + "-int8.onnx")


def int8_fp16_path(int8: Path) -> Path:
    """model-int8.onnx -> model-int8-fp16.onnx: the Q/DQ graph with its unquantized part in FP16."""
    return int8.with_name(int8.stem + "-fp16.onnx")


def write_int8_fp16(qdq: Path, out: Path) -> Path | None:
    """Write the INT8+FP16 graph of a Q/DQ graph (calib.qdq.mixed_int8_fp16); None when it cannot be
    made, which is logged: the INT8 graph stays usable without it."""
    import onnx

    try:
        mixed = mixed_int8_fp16(onnx.load(str(qdq)))
    except Exception as e:  # the converter's failure must not cost the user the INT8 graph
        log.warning("INT8+FP16 graph not written: %s", first_line(e, 200))
        return None
    write_bytes_atomic(out, mixed.SerializeToString())
    return out


def _input_batch(onnx_path: Path) -> int | None:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _reader(onnx_fp32: Path, meta: ModelMeta, o: Int8Options, progress: bool = True) -> Any:
    fixed = _input_batch(onnx_fp32)
    batch = o.batch or fixed or DEFAULT_BATCH
    if fixed is not None and batch != fixed:
        log.warning("the graph has a fixed batch of %d: calibrating with batches of %d, not %d",
                    fixed, fixed, batch)
        batch = fixed
    return open_reader(o.calib, Preprocessing.from_meta(meta), o.size, batch, o.seed, o.split,
                       o.video_step, progress=progress, drop_last=fixed is not None)


def _check_graph(meta: ModelMeta, path: Path) -> None:
    if meta.flavour != "portable":
        raise S2Error(f"{path} is the {meta.flavour} flavour: quantize the portable graph (ONNX "
                      "Runtime calibrates it; the TensorRT flavour's plugin node does not run there)")
    if meta.precision != "fp32":
        raise S2Error(f"{path} is a {meta.precision} graph: INT8 quantization starts from the FP32 export")


def quantize_export(onnx_fp32: Path, out: Path, args: argparse.Namespace | Int8Options) -> dict[str, Any]:
    """Write the INT8 Q/DQ graph of `onnx_fp32` to `out`, its INT8+FP16 graph next to it
    (int8_fp16_path: what strongly typed TensorRT should build) and their sidecars; return the report.

    With --calib-method all, every method is tried and the best one is kept (see accuracy_report). The
    caller prints the report (s2trt.calib.report.format_table); a drop beyond --max-map-drop is
    logged as a warning here.
    """
    o = args if isinstance(args, Int8Options) else Int8Options.from_args(args)
    onnx_fp32, out = Path(onnx_fp32), Path(out)
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise S2Error(f"cannot write {out}: {out.parent} is not a writable folder")
    meta = read_onnx_meta(onnx_fp32)
    _check_graph(meta, onnx_fp32)
    methods = o.methods()
    val = o.val_data() if o.report else None
    if len(methods) > 1 and val is None:
        raise S2Error("--calib-method all picks the method by mAP, so it needs labelled validation "
                      "data: --calib DATA.yaml or --int8-val DATA.yaml")
    reader = _reader(onnx_fp32, meta, o)
    result: dict[str, Any] = {"file": str(out), "methods": {}}
    with tempfile.TemporaryDirectory(prefix="s2trt-int8-", dir=out.parent) as tmp:
        paths: dict[str, Path] = {}
        for m in methods:
            paths[m.value] = out if len(methods) == 1 else Path(tmp) / f"{m.value}.onnx"
            result["methods"][m.value] = quantize_qdq(onnx_fp32, paths[m.value], reader, m, o.exclude, tmp)
        report = None
        mixed_of: dict[str, Path | None] = {}

        def make_mixed(method: str) -> Path | None:
            mixed_of[method] = write_int8_fp16(paths[method], Path(tmp) / f"{method}-fp16.onnx")
            return mixed_of[method]

        if val is None:
            result["accuracy_note"] = ("accuracy not measured: pass labelled data with --int8-val DATA.yaml "
                                       "(or calibrate from a data yaml)")
        elif meta.nms:
            result["accuracy_note"] = "accuracy not measured: the graph ends in NMS (export without --nms)"
            val = None
        else:
            report = accuracy_report(onnx_fp32, paths, val, o.val_split, list(meta.imgsz),
                                     reader.batch if _input_batch(onnx_fp32) else DEFAULT_BATCH,
                                     o.val_limit, o.max_map_drop, int8_fp16=make_mixed)
        best = report["best"] if report else methods[0].value
        if len(methods) > 1:
            write_bytes_atomic(out, paths[best].read_bytes())
        mixed = int8_fp16_path(out)
        made = mixed_of[best] if best in mixed_of else make_mixed(best)
        if made is not None:
            write_bytes_atomic(mixed, made.read_bytes())
        else:  # an older run's INT8+FP16 graph would not match the INT8 graph written now
            for stale in (mixed, sidecar_path(mixed)):
                stale.unlink(missing_ok=True)
    result.update(method=best, accuracy=report, int8_fp16=str(mixed) if made is not None else None)
    _write_sidecar(onnx_fp32, out, meta, result, o)
    if made is not None:
        _write_sidecar(onnx_fp32, mixed, meta, {**result, "file": str(mixed), "graph": "int8+fp16",
                                                "int8_onnx": str(out)}, o)
    if report is not None and not report["within_tolerance"]:
        log.warning("%s", verdict(report))
    elif report is not None:
        log.info("%s", verdict(report))
    else:
        log.warning("%s", result["accuracy_note"])
    return result


def _write_sidecar(onnx_fp32: Path, out: Path, meta: ModelMeta, result: dict[str, Any],
                   o: Int8Options) -> None:
    base = read_sidecar(onnx_fp32) or asdict(meta)
    base = {k: v for k, v in base.items() if k not in ("parity", "int8")}
    base["precision"] = "int8"
    base["int8"] = {**result, "fp32_onnx": str(onnx_fp32),
                    "calibration": {"source": o.calib, "split": o.split, "size": o.size, "seed": o.seed,
                                    "exclude": o.exclude if o.exclude is not None else ["default"]}}
    write_json_atomic(sidecar_path(out), base)


def trt_calibrator(onnx_path: Path, args: argparse.Namespace | Int8Options,
                   engine_options: Any = None) -> Any:
    """A TensorRT ≤ 10 calibrator (entropy or minmax) over the same images, for EngineOptions.

    TensorRT calibrates a dynamic-batch network at the opt shape of its calibration profile, so
    with the builder's `engine_options` the batches are made that size, on its --device. After the build, the
    calibrator's `error` holds what stopped calibration, if anything did.
    """
    from s2trt.calib.trt_calibrator import make_calibrator

    o = args if isinstance(args, Int8Options) else Int8Options.from_args(args)
    meta = read_onnx_meta(onnx_path)
    if engine_options is not None and _input_batch(Path(onnx_path)) is None:
        from s2trt.export.engine import resolve_profile

        profile = resolve_profile("images", (-1, 3, *meta.imgsz), engine_options)
        if profile is not None:
            o = replace(o, batch=profile[1][0])
    method = DEFAULT_TRT_METHOD.value if o.method in (None, ALL_METHODS) else o.method
    device = engine_options.device if engine_options is not None else 0
    return make_calibrator(onnx_path, _reader(Path(onnx_path), meta, o), method, o.cache, device)
