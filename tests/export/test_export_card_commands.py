"""A model card's own pair of commands works as written: `s2export model.pt --fp16`, then
`s2infer --engine model.engine video.mp4` (Ultralytics users write `best.engine` the same way).

The engine is `model.engine` whatever graph it is built from (the precision is in its sidecar), and
without TensorRT the printed commands run on the target as they stand: file names, no folders of the
machine that printed them, no flag the graph already carries.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest

from s2trt.demo.assets import ASSETS
from s2trt.export.cli import engine_path, main
from s2trt.meta import read_onnx_meta
from s2trt.trt import plugin_lib

SMALL = "64"  # the size does not matter here; it keeps the export fast


@pytest.mark.parametrize(("onnx", "engine"), [
    ("model.onnx", "model.engine"), ("model.trt.onnx", "model.engine"),
    ("model-fp16.onnx", "model.engine"), ("model-fp16.trt.onnx", "model.engine"),
    ("model-int8.onnx", "model.engine"), ("model-int8-fp16.onnx", "model.engine"),
    ("best.onnx", "best.engine"), ("yolo-s2.trt.onnx", "yolo-s2.engine"),
    # Only the suffixes s2export adds go; a name that is nothing but one keeps it.
    ("fp16.onnx", "fp16.engine"), ("-fp16.onnx", "-fp16.engine"), ("a.b.onnx", "a.b.engine"),
])
def test_engine_takes_the_models_name(onnx: str, engine: str, tmp_path: Path) -> None:
    assert engine_path(tmp_path / onnx) == tmp_path / engine


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo checkpoint under the card's name."""
    path = tmp_path_factory.mktemp("card") / "model.pt"
    shutil.copyfile(ASSETS / "demo.pt", path)
    return path


def test_card_export_builds_model_engine(model_pt: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    """Where TensorRT is: the FP16 TensorRT-flavour graph becomes model.engine (builder stubbed)."""
    import s2trt.export.engine as engine

    built = []

    def fake_build(onnx_path: Path, engine_file: Path, opts) -> dict:
        built.append((Path(onnx_path), Path(engine_file), opts.precision))
        Path(engine_file).write_bytes(b"plan")
        return {}

    monkeypatch.setattr(engine, "build_engine", fake_build)
    monkeypatch.chdir(model_pt.parent)
    assert main(["model.pt", "--fp16", "--imgsz", SMALL, "-q"]) == 0
    assert built == [(Path("model-fp16.trt.onnx"), Path("model.engine"), "fp16")]
    assert "engine: model.engine" in capsys.readouterr().out
    assert read_onnx_meta(model_pt.parent / "model-fp16.trt.onnx").precision == "fp16"


def test_without_tensorrt_the_printed_commands_run_on_the_target(model_pt: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Exit 3 and two commands for the folder the files are copied to: no --fp16 for an FP16 graph,
    neither the export folder nor the plugin library found on this machine."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    here = tmp_path / "workstation" / "exports"
    found = tmp_path / "workstation" / "lib" / plugin_lib.PLUGIN_LIB_NAME
    found.parent.mkdir(parents=True)
    found.write_bytes(b"\x7fELF")
    monkeypatch.setenv(plugin_lib.PLUGIN_ENV, str(found))
    assert main([str(model_pt), "--fp16", "--imgsz", SMALL, "-o", f"{here}/", "-q"]) == 3
    err = capsys.readouterr().err
    assert str(tmp_path) not in err, err
    head, *commands = err.strip().splitlines()
    assert "copy it and model-fp16.trt.json to the target and build model.engine there" in head
    s2, trtexec = (shlex.split(line) for line in commands[:2])
    assert s2 == ["s2export", "model-fp16.trt.onnx"]
    assert trtexec[:3] == ["trtexec", "--onnx=model-fp16.trt.onnx", "--saveEngine=model.engine"]
    assert "--stronglyTyped" in trtexec and "--fp16" not in trtexec
    assert f"--dynamicPlugins=plugins/build/{plugin_lib.PLUGIN_LIB_NAME}" in trtexec

    # On the target, in that folder, the printed s2export line names the same engine (builder stubbed).
    import s2trt.export.engine as engine

    built = []
    monkeypatch.setattr(engine, "build_engine",
                        lambda onnx, out, opts: built.append((Path(onnx), Path(out))) or Path(out).touch())
    monkeypatch.chdir(here)
    assert main(s2[1:]) == 0
    assert built == [(Path("model-fp16.trt.onnx"), Path("model.engine"))]
