"""What INT8 costs: mAP50 and mAP50-95 of the FP32, FP16, INT8 Q/DQ and INT8+FP16 graphs on a validation set.

All run in ONNX Runtime on the CPU through the runtime's own evaluator (same preprocessing, NMS and
box scaling as s2infer), so the numbers compare precisions, not pipelines. Drops are in mAP points
(0-100 scale), as papers and the YOLOv5 README report them. INT8+FP16 is the graph strongly typed
TensorRT builds (calib.qdq.mixed_int8_fp16): the best INT8 method's Q/DQ graph with the rest in FP16.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from s2trt.text import first_line

log = logging.getLogger(__name__)

DEFAULT_MAX_DROP = 1.0  # mAP50 points
MIXED_ROW = "int8+fp16"  # the report row of the best method's INT8+FP16 graph


def fp16_graph(onnx_fp32: Path, work_dir: Path) -> tuple[Path | None, str | None]:
    """The exporter's FP16 conversion of the FP32 graph: (path, None), or (None, why not)."""
    try:
        import onnx

        from s2trt.export.fp16 import to_fp16
    except ImportError as e:
        return None, f"FP16 skipped: the exporter's FP16 converter is unavailable ({e})"
    try:
        model = to_fp16(onnx.load(str(onnx_fp32)))
    except Exception as e:  # the report must not fail an INT8 export because FP16 could not be made
        return None, f"FP16 skipped: conversion failed ({first_line(e, 160)})"
    path = work_dir / "fp16.onnx"
    onnx.save(model, str(path))
    return path, None


def _timed(predict: Callable[[np.ndarray], np.ndarray], clock: list[float]) -> Callable:
    def run(x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        y = predict(x)
        clock[0] += time.perf_counter() - t0
        clock[1] += len(x)
        return y
    return run


def evaluate_onnx(path: Path, data: str | Path, split: str, imgsz: int, batch: int,
                  limit: int | None, basic_optimizations: bool = False) -> dict[str, Any]:
    """mAP of one ONNX file in an ORT CPU session, with its mean inference time per image."""
    from s2trt.detect.evaluate import evaluate, onnx_predictor

    predict, fixed_batch, _ = onnx_predictor(path, basic_optimizations)
    clock = [0.0, 0]
    r = evaluate(_timed(predict, clock), data, split, imgsz, fixed_batch or batch, limit=limit)
    masks = {k: r[k] for k in ("mask_mAP50", "mask_mAP50-95") if k in r}  # a seg model, polygon labels
    return {"mAP50": r["mAP50"], "mAP50-95": r["mAP50-95"], **masks, "images": r["images"],
            "ms_per_image": round(1000 * clock[0] / max(clock[1], 1), 2)}


def accuracy_report(onnx_fp32: Path, int8: dict[str, Path], data: str | Path, split: str = "val",
                    imgsz: int = 640, batch: int = 1, limit: int | None = None,
                    max_drop: float = DEFAULT_MAX_DROP, with_fp16: bool = True,
                    int8_fp16: Callable[[str], Path | None] | None = None) -> dict[str, Any]:
    """Evaluate FP32, FP16 (when it can be made), each INT8 graph in `int8` (method -> path) and,
    with `int8_fp16` (method -> its INT8+FP16 graph, or None when it cannot be made), the
    INT8+FP16 graph of the best method.

    `best` names the INT8 method with the highest mAP50-95 among those whose mAP50 drop is within
    `max_drop` points (mAP50 saturates on easy data, mAP50-95 still tells box quality apart), or the
    highest mAP50 when none is; `within_tolerance` says whether its mAP50 drop, and its INT8+FP16
    graph's, are within the budget.
    """
    rows: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="s2trt-report-") as tmp:
        log.info("accuracy: FP32 on the '%s' split of %s", split, data)
        rows["fp32"] = evaluate_onnx(onnx_fp32, data, split, imgsz, batch, limit)
        if with_fp16:
            fp16, note = fp16_graph(onnx_fp32, Path(tmp))
            if fp16 is not None:
                log.info("accuracy: FP16")
                rows["fp16"] = evaluate_onnx(fp16, data, split, imgsz, batch, limit)
            else:
                notes.append(note or "FP16 skipped")
        for method, path in int8.items():
            log.info("accuracy: INT8 Q/DQ (%s)", method)
            rows[f"int8-{method}"] = evaluate_onnx(path, data, split, imgsz, batch, limit)
        _add_drops(rows)
        best = pick_best({m: rows[f"int8-{m}"] for m in int8}, max_drop)
        if int8_fp16 is not None:
            mixed = int8_fp16(best)
            if mixed is not None:
                log.info("accuracy: INT8+FP16 (%s)", best)
                rows[MIXED_ROW] = evaluate_onnx(mixed, data, split, imgsz, batch, limit,
                                                basic_optimizations=True)
                _add_drops(rows)
            else:
                notes.append("INT8+FP16 skipped: the graph could not be made (see the log)")
    drop = rows[f"int8-{best}"]["drop_mAP50"]
    within = drop <= max_drop and rows.get(MIXED_ROW, {}).get("drop_mAP50", drop) <= max_drop
    return {"data": str(data), "split": split, "imgsz": imgsz, "images": rows["fp32"]["images"],
            "runtime": "onnxruntime CPU", "rows": rows, "notes": notes, "best": best,
            "max_map_drop": max_drop, "drop_mAP50": drop, "within_tolerance": within}


def _add_drops(rows: dict[str, dict[str, Any]]) -> None:
    base = rows["fp32"]
    for row in rows.values():
        # + 0.0 turns the -0.0 of equal scores into 0.0
        row["drop_mAP50"] = round(100 * (base["mAP50"] - row["mAP50"]), 2) + 0.0
        row["drop_mAP50-95"] = round(100 * (base["mAP50-95"] - row["mAP50-95"]), 2) + 0.0


def pick_best(rows: dict[str, dict[str, Any]], max_drop: float) -> str:
    within = [m for m, r in rows.items() if r["drop_mAP50"] <= max_drop]
    if within:
        return max(within, key=lambda m: (rows[m]["mAP50-95"], rows[m]["mAP50"]))
    return max(rows, key=lambda m: (rows[m]["mAP50"], rows[m]["mAP50-95"]))


def format_table(report: dict[str, Any]) -> str:
    size = "x".join(str(v) for v in report["imgsz"]) if isinstance(report["imgsz"], list) else report["imgsz"]
    lines = [f"accuracy on {report['images']} images of the '{report['split']}' split of {report['data']} "
             f"({report['runtime']}, {size} px)",
             f"{'graph':<18}{'mAP50':>8}{'mAP50-95':>10}{'ΔmAP50':>9}{'ΔmAP50-95':>11}{'ms/img':>9}"]
    for name, r in report["rows"].items():
        several = sum(k.startswith("int8-") for k in report["rows"]) > 1
        mark = "  <- best INT8" if several and name == f"int8-{report['best']}" else ""
        lines.append(f"{name:<18}{100 * r['mAP50']:>8.2f}{100 * r['mAP50-95']:>10.2f}"
                     f"{0.0 - r['drop_mAP50']:>+9.2f}{0.0 - r['drop_mAP50-95']:>+11.2f}"
                     f"{r['ms_per_image']:>9.1f}{mark}"
                     + (f"  mask mAP50 {100 * r['mask_mAP50']:.2f}, mAP50-95 {100 * r['mask_mAP50-95']:.2f}"
                        if "mask_mAP50" in r else ""))
    lines += report["notes"]
    lines.append(verdict(report))
    return "\n".join(lines)


def verdict(report: dict[str, Any]) -> str:
    best, drop, limit = report["best"], report["drop_mAP50"], report["max_map_drop"]
    mixed = report["rows"].get(MIXED_ROW)
    also = f", INT8+FP16 {0.0 - mixed['drop_mAP50']:+.2f}" if mixed is not None else ""
    if report["within_tolerance"]:
        return (f"INT8 ({best}) is within {limit:g} mAP50 point of FP32 (mAP50 {0.0 - drop:+.2f} "
                f"points{also})")
    worst = max(drop, mixed["drop_mAP50"] if mixed is not None else drop)
    return (f"INT8 ({best}) loses {worst:.2f} mAP50 points (INT8 {0.0 - drop:+.2f}{also}), more than "
            f"--max-map-drop {limit:g}: try another --calib-method (or all), more or more "
            "representative --calib images, or keep more layers in float with --int8-exclude")
