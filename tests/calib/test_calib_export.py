"""`s2export demo.pt --int8 --calib <calib split> --onnx-only` on the bundled demo model (issue 9's
done-when): a Q/DQ ONNX whose mAP50 stays within 1 point of FP32, and a report that says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import DEMO_ASSETS

from s2trt.export.cli import main

DEMO = DEMO_ASSETS / "demo.pt"

pytest.importorskip("onnxruntime")
pytest.importorskip("faster_coco_eval")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from s2trt.demo.synth import generate

    # The first images of the demo data's splits (the generator is prefix-stable), at its 416 px.
    return generate(tmp_path_factory.mktemp("shapes"), seed=0, counts={"val": 40, "calib": 16}, imgsz=416)


@pytest.mark.skipif(not DEMO.is_file(), reason="the bundled demo checkpoint is missing")
def test_demo_int8_within_one_map50_point(data: Path, tmp_path: Path, capsys) -> None:
    rc = main([str(DEMO), "--imgsz", "320", "--no-plugin", "--onnx-only", "-o", str(tmp_path), "--int8",
               "--calib", str(data), "--calib-size", "16", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    side = json.loads((tmp_path / "demo-int8.json").read_text())
    acc = side["int8"]["accuracy"]
    assert side["precision"] == "int8" and (tmp_path / "demo-int8.onnx").is_file()
    assert acc["rows"]["fp32"]["mAP50"] > 0.9  # the model works, so the drop means something
    assert acc["within_tolerance"] and acc["drop_mAP50"] <= 1.0
    assert "INT8 (percentile) is within 1 mAP50 point of FP32" in out
    # Issue 14's done-when: the report lists FP32 / FP16 / INT8 / INT8+FP16, each within the budget.
    assert set(acc["rows"]) == {"fp32", "fp16", "int8-percentile", "int8+fp16"}
    assert all(r["drop_mAP50"] <= 1.0 for r in acc["rows"].values())
    assert (tmp_path / "demo-int8-fp16.onnx").is_file()
    assert f"{tmp_path / 'demo-int8-fp16.onnx'}" in out  # listed: the graph an engine is built from


@pytest.mark.parametrize("extra, code, message", [
    ([], 2, "--int8 needs --calib"),  # the command line alone says so: a usage error
    (["--calib", "/nonexistent/images"], 1, "calibration source not found"),
    (["--calib", "x", "--fp16"], 2, "--int8 and --fp16 exclude each other: the INT8 export already writes "
                                    "an INT8+FP16 graph"),
])
def test_bad_int8_options_fail_before_exporting(tmp_path: Path, capsys, extra: list[str], code: int,
                                                message: str) -> None:
    try:
        rc = main([str(DEMO), "--onnx-only", "-o", str(tmp_path), "--int8", *extra])
    except SystemExit as e:  # argparse's exit
        rc = e.code
    assert rc == code and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing exported
