"""s2trt.export_model against s2export: the same files, the same parity figures, the same errors."""

from __future__ import annotations

import json
import sys

import pytest
from paths import DEMO_ASSETS

import s2trt
from s2trt.errors import S2Error, UsageError
from s2trt.export.cli import main as s2export_main
from s2trt.meta import sidecar_path

DEMO = DEMO_ASSETS / "demo.pt"


@pytest.fixture
def no_tensorrt(monkeypatch):
    """TensorRT absent even where a test elsewhere made its Python module importable."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_export_model_writes_what_s2export_writes(tmp_path):
    result = s2trt.export_model(DEMO, imgsz=160, nms=True, max_det=50, onnx_only=True,
                                output=tmp_path / "api")
    assert s2export_main([str(DEMO), "--imgsz", "160", "--nms", "--max-det", "50", "--onnx-only",
                          "-o", str(tmp_path / "cli"), "-q"]) == 0
    cli_files = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert sorted(p.name for p in result.files) == cli_files == ["demo.json", "demo.onnx", "demo.trt.json",
                                                                  "demo.trt.onnx"]
    assert all(p.is_file() for p in result.files)
    assert (result.onnx, result.tensorrt_onnx) == (tmp_path / "api" / "demo.onnx",
                                                   tmp_path / "api" / "demo.trt.onnx")
    assert result.engine is None and not result.engine_skipped  # onnx_only: none was asked for
    # The figures returned are the ones the sidecar records, and they are s2export's own checks.
    sidecar = json.loads(sidecar_path(result.onnx).read_text())
    assert list(result.parity) == sidecar["parity"] and result.nms == sidecar["nms_check"]
    assert len(result.parity) == 2 and all(p["pass"] and p["max_abs"] < p["tol"] * 10 for p in result.parity)
    assert result.nms["agree"]
    cli = json.loads((tmp_path / "cli" / "demo.json").read_text())
    assert [p["name"] for p in cli["parity"]] == [p["name"] for p in result.parity]
    assert cli["nms"] == sidecar["nms"] == {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 50,
                                            "topk": 1000, "outputs": ["num_dets", "det_boxes",
                                                                      "det_scores", "det_classes"]}


def test_an_engine_not_built_here_is_said_so(tmp_path, no_tensorrt, capsys):
    exported = s2trt.export_model(DEMO, imgsz=160, no_plugin=True, output=tmp_path / "m.onnx")
    assert exported.engine is None and exported.engine_skipped
    assert "TensorRT is not installed here" in capsys.readouterr().err
    from_onnx = s2trt.export_model(exported.onnx)
    assert from_onnx.engine is None and from_onnx.engine_skipped and from_onnx.files == ()


@pytest.mark.parametrize(("options", "argv"), [
    ({"topk": 5000}, ["--topk", "5000"]),
    ({"int8": True}, ["--int8"]),
    ({"int8": True, "calib": "x/", "fp16": True}, ["--int8", "--calib", "x/", "--fp16"]),
])
def test_bad_options_are_s2export_usage_errors(tmp_path, capsys, options, argv):
    with pytest.raises(UsageError) as e:
        s2trt.export_model(DEMO, **options)
    with pytest.raises(SystemExit) as exit_:
        s2export_main([str(DEMO), *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"s2export: error: {e.value}"
    assert not list(tmp_path.iterdir())


def test_run_errors_are_s2export_messages(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    with pytest.raises(S2Error) as e:
        s2trt.export_model(missing)
    assert s2export_main([str(missing)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"s2export: error: {e.value}"


def test_unknown_keywords_are_type_errors():
    with pytest.raises(TypeError, match=r"unexpected keyword.*fp61"):
        s2trt.export_model(DEMO, fp61=True)
