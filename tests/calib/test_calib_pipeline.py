"""The INT8 stage end to end: Q/DQ file, accuracy report in the sidecar, method choice, CLI errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from calib_helpers import export_random_model, write_dataset

from s2trt.calib.cli import main
from s2trt.calib.pipeline import Int8Options, int8_path, quantize_export
from s2trt.calib.qdq import CalibMethod
from s2trt.calib.report import format_table, pick_best
from s2trt.errors import S2Error

pytest.importorskip("onnxruntime")
pytest.importorskip("faster_coco_eval")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pipeline")
    export_random_model(d / "model.onnx", imgsz=128, dynamic=True)
    write_dataset(d / "ds", {"calib": 4, "val": 4})
    return d


def test_quantize_export_writes_graph_sidecar_and_report(work: Path, caplog) -> None:
    out = int8_path(work / "model.onnx")
    assert out.name == "model-int8.onnx"
    opts = Int8Options(calib=str(work / "ds" / "data.yaml"), method="minmax", size=4, batch=2,
                       max_map_drop=-1.0)  # below any real drop: the warning must fire
    with caplog.at_level(logging.INFO, logger="s2trt"):
        result = quantize_export(work / "model.onnx", out, opts)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["precision"] == "int8" and side["producer"] == "s2trt"
    acc = side["int8"]["accuracy"]
    assert set(acc["rows"]) >= {"fp32", "int8-minmax"} and acc["images"] == 4 and acc["split"] == "val"
    assert side["int8"]["methods"]["minmax"]["int8_convs"] > 0
    assert acc["within_tolerance"] is False and "more than --max-map-drop -1" in caplog.text
    table = format_table(result["accuracy"])
    assert "fp32" in table and "int8-minmax" in table and "mAP50" in table
    # The INT8+FP16 graph strongly typed TensorRT builds: written, typed, measured, with its sidecar.
    mixed = work / "model-int8-fp16.onnx"
    assert result["int8_fp16"] == str(mixed) and mixed.is_file()
    assert "int8+fp16" in acc["rows"] and "int8+fp16" in table and "INT8+FP16" in caplog.text
    mixed_side = json.loads(mixed.with_suffix(".json").read_text())
    assert mixed_side["precision"] == "int8" and mixed_side["int8"]["graph"] == "int8+fp16"
    import onnx

    types = {i.data_type for i in onnx.load(str(mixed)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.INT8 in types
    if "fp16" not in acc["rows"]:  # the exporter's FP16 converter is optional here
        assert any("FP16 skipped" in n for n in acc["notes"])


def test_all_methods_keep_the_best(work: Path) -> None:
    out = work / "best.onnx"
    result = quantize_export(work / "model.onnx", out, Int8Options(
        calib=str(work / "ds" / "data.yaml"), method="all", size=4, batch=4, report=True))
    rows = result["accuracy"]["rows"]
    assert {f"int8-{m}" for m in ("entropy", "minmax", "percentile")} <= set(rows)
    best = result["method"]
    assert best == pick_best({m: rows[f"int8-{m}"] for m in ("entropy", "minmax", "percentile")}, 1.0)
    assert out.is_file() and not list(work.glob("s2trt-int8-*"))  # temporary files are gone
    assert "int8+fp16" in rows and (work / "best-fp16.onnx").is_file()  # of the best method only
    assert len([r for r in rows if "fp16" in r]) == 2


def test_best_method_meets_the_budget_then_maximises_map50_95() -> None:
    rows = {"entropy": {"mAP50": 0.90, "mAP50-95": 0.70, "drop_mAP50": 0.5},
            "minmax": {"mAP50": 0.91, "mAP50-95": 0.60, "drop_mAP50": -0.5},
            "percentile": {"mAP50": 0.80, "mAP50-95": 0.75, "drop_mAP50": 10.5}}
    assert pick_best(rows, 1.0) == "entropy"  # percentile has the best boxes but blows the budget
    assert pick_best(rows, 20.0) == "percentile"
    assert pick_best(rows, -1.0) == "minmax"  # none within: the best mAP50
    assert Int8Options(calib="x").methods() == [CalibMethod.PERCENTILE]


def test_failed_int8_fp16_leaves_no_stale_graph(work: Path, monkeypatch, caplog) -> None:
    """When the INT8+FP16 graph cannot be made, the INT8 graph is still written, and an older run's
    INT8+FP16 graph next to it is removed rather than left to pair with the new INT8 graph."""
    import s2trt.calib.pipeline as pipeline

    def broken(model):
        raise ValueError("no FP16 for this graph")

    out = work / "stale.onnx"
    old = pipeline.int8_fp16_path(out)
    old.write_bytes(b"old")
    old.with_suffix(".json").write_text("{}")
    monkeypatch.setattr(pipeline, "mixed_int8_fp16", broken)
    result = quantize_export(work / "model.onnx", out, Int8Options(
        calib=str(work / "ds" / "images" / "calib"), size=2))
    assert out.is_file() and result["int8_fp16"] is None
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert "INT8+FP16 graph not written: no FP16 for this graph" in caplog.text


def test_all_methods_need_labelled_data(work: Path) -> None:
    with pytest.raises(S2Error, match="needs labelled validation data"):
        quantize_export(work / "model.onnx", work / "x.onnx",
                        Int8Options(calib=str(work / "ds" / "images" / "calib"), method="all"))


def test_folder_calibration_without_labels_skips_the_report(work: Path) -> None:
    out = work / "nolabels.onnx"
    result = quantize_export(work / "model.onnx", out,
                             Int8Options(calib=str(work / "ds" / "images" / "calib"), size=4))
    assert result["accuracy"] is None and "--int8-val" in result["accuracy_note"]
    assert json.loads(out.with_suffix(".json").read_text())["int8"]["accuracy"] is None


def test_options_are_checked_before_any_work(work: Path) -> None:
    import argparse

    from s2trt.calib.cli import add_int8_options
    from s2trt.calib.pipeline import check_int8_args

    p = argparse.ArgumentParser()
    add_int8_options(p)
    assert check_int8_args(p.parse_args(["--int8", "--calib", str(work / "ds" / "data.yaml")])).size == 256
    with pytest.raises(S2Error, match="calibration source not found"):
        check_int8_args(p.parse_args(["--int8", "--calib", str(work / "missing")]))
    with pytest.raises(S2Error, match="needs labelled validation data"):
        check_int8_args(p.parse_args(["--calib", str(work / "ds" / "images" / "val"),
                                      "--calib-method", "all"]))


def test_tensorrt_flavour_is_refused(work: Path, tmp_path: Path) -> None:
    import onnx

    m = onnx.load(str(work / "model.onnx"))
    for p in m.metadata_props:
        if p.key == "flavour":
            p.value = "tensorrt"
    onnx.save(m, str(tmp_path / "m.trt.onnx"))
    with pytest.raises(S2Error, match="quantize the portable graph"):
        quantize_export(tmp_path / "m.trt.onnx", tmp_path / "q.onnx", Int8Options(calib=str(work)))


def test_cli_success_and_one_line_errors(work: Path, capsys) -> None:
    out = work / "cli.onnx"
    assert main([str(work / "model.onnx"), "-o", str(out), "--calib", str(work / "ds" / "images" / "calib"),
                 "--calib-size", "2", "--calib-method", "percentile", "-q"]) == 0
    assert out.is_file() and "INT8 Q/DQ (percentile)" in capsys.readouterr().out
    assert main([str(work / "model.onnx"), "-q"]) == 1
    assert capsys.readouterr().err.strip() == (
        "s2trt.calib: error: --int8 needs calibration images: --calib FOLDER|GLOB|VIDEO|DATA.yaml")
    assert main([str(work / "model.onnx"), "--calib", str(work / "nowhere"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibration source not found" in err
    with pytest.raises(SystemExit):
        main([str(work / "model.onnx"), "--calib", "x", "--calib-method", "kl"])
