"""s2export end to end on YOLOv5-format checkpoints: files, metadata, exit codes, bad inputs."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from yolov5_fake import build_model, make_yolov5_checkpoint

from s2trt.errors import EXIT_NO_ENGINE
from s2trt.export import parity
from s2trt.export.cli import main
from s2trt.export.fp16 import FP16_TOL
from s2trt.export.outputs import StagedFiles
from s2trt.meta import read_onnx_meta

IMGSZ = "160"
SMALL = "64"  # where the size does not matter: keeps the file fast


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    path = make_yolov5_checkpoint(tmp_path_factory.mktemp("ckpt"), cfg="yolov5n-s2", nc=3, half=True)
    # The checkpoint stores FP16 weights: the reference is the pickled model with those weights.
    return path, make_yolov5_checkpoint.last_model.half().float().eval()


@pytest.fixture
def no_tensorrt(monkeypatch):
    """TensorRT absent even where a test elsewhere made its Python module importable."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    rc = main([str(ckpt[0]), "--imgsz", IMGSZ, "--dynamic", "--onnx-only", "-o", str(out), "-q"])
    assert rc == 0
    return out


def test_onnx_only_writes_both_flavours_with_metadata(ckpt, exported):
    stem = ckpt[0].stem
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        [f"{stem}.onnx", f"{stem}.json", f"{stem}.trt.onnx", f"{stem}.trt.json"])
    portable, trt = read_onnx_meta(exported / f"{stem}.onnx"), read_onnx_meta(exported / f"{stem}.trt.onnx")
    assert portable.flavour == "portable" and portable.plugin is None
    assert trt.flavour == "tensorrt" and trt.plugin == "S2SplitAttention"
    assert portable.names == ["class0", "class1", "class2"] and portable.imgsz == [160, 160]
    assert portable.batch == "dynamic" and portable.stride == 32 and portable.precision == "fp32"
    side = json.loads((exported / f"{stem}.json").read_text())
    assert side["flavour"] == "portable" and side["names"] == portable.names
    checks = {p["name"].split(" (")[0]: p for p in side["parity"]}
    assert checks["portable fp32"]["pass"] and checks["portable fp32"]["rel"] <= 1e-4
    assert checks["tensorrt fp32"]["pass"]
    assert json.loads((exported / f"{stem}.trt.json").read_text())["plugin_blocks"] == 1


@pytest.mark.parametrize("batch", [1, 4])
def test_written_file_runs_at_any_batch_like_pytorch(ckpt, exported, batch):
    x, _ = parity.sample_input([160, 160], batch)
    out = parity.run_ort(_load(exported / f"{ckpt[0].stem}.onnx"), x)[0]
    with torch.no_grad():
        ref = ckpt[1](torch.from_numpy(x)).numpy()
    assert parity.compare("file", out, ref, parity.FP32_TOL, "t").ok


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def test_without_tensorrt_exit_3_and_print_the_build_command(ckpt, tmp_path, capsys, no_tensorrt):
    rc = main([str(ckpt[0]), "--imgsz", SMALL, "--fp16", "-o", str(tmp_path / "m.onnx"), "-q"])
    assert rc == EXIT_NO_ENGINE == 3
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err
    assert "s2export " in err and "m.trt.onnx" in err and "trtexec --onnx=" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx", "m.trt.json", "m.trt.onnx"]
    assert read_onnx_meta(tmp_path / "m.onnx").precision == "fp16"

    # The Jetson workflow: build from the ONNX alone (again no TensorRT here: exit 3, same advice).
    assert main([str(tmp_path / "m.trt.onnx"), "--fp16", "-q"]) == 3
    assert "trtexec" in capsys.readouterr().err


def test_onnx_input_with_dynamic_shapes_in_the_hint(ckpt, exported, capsys, no_tensorrt):
    onnx_path = exported / f"{ckpt[0].stem}.trt.onnx"
    assert main([str(onnx_path), "--min", "1", "--opt", "2", "--max", "8", "-q"]) == 3
    assert "maxShapes=images:8x3x160x160" in capsys.readouterr().err


def test_nms_and_no_plugin(ckpt, tmp_path):
    out = tmp_path / "runs" / "exp"  # made by the export, like YOLOv5's runs/
    rc = main([str(ckpt[0]), "--imgsz", SMALL, "--nms", "--max-det", "20", "--no-plugin", "--onnx-only",
               "-o", str(out / f"{ckpt[0].stem}.onnx"), "-q"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"{ckpt[0].stem}.json", f"{ckpt[0].stem}.onnx"]  # no TensorRT flavour
    model = _load(out / f"{ckpt[0].stem}.onnx")
    assert [o.name for o in model.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    meta = read_onnx_meta(out / f"{ckpt[0].stem}.onnx")
    assert meta.nms["max_det"] == 20 and meta.nms["iou_thres"] == 0.45
    outs = parity.run_ort(model, parity.sample_input([64, 64], 1)[0])
    assert outs[1].shape == (1, 20, 4)


def test_plain_yolov5s_needs_no_plugin(tmp_path, capsys):
    ck = make_yolov5_checkpoint(tmp_path, cfg="yolov5s", nc=2, width_multiple=0.25)
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(ck), "--imgsz", "64", "--onnx-only", "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no S2Attention block" in err[0] and "--no-plugin" in err[0]
    assert not list(out.iterdir())
    assert main([str(ck), "--imgsz", "64", "--onnx-only", "--no-plugin", "-o", str(out), "-q"]) == 0
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".onnx"]


def _evil(path: Path, marker: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"model": Evil()}))
    return path


def _bad_inputs(tmp: Path, ckpt: Path) -> dict[str, tuple[list[str], str]]:
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(os.urandom(4096))
    truncated = tmp / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:200_000])
    state = tmp / "state.pt"
    torch.save(build_model("yolov5n-s2", nc=3).state_dict(), state)
    a_file = tmp / "a_file"
    a_file.write_text("x")
    return {
        "missing": ([str(tmp / "nope.pt")], "not found"),
        "corrupt": ([str(corrupt)], "not a readable PyTorch checkpoint"),
        "truncated": ([str(truncated)], "not a readable PyTorch checkpoint"),
        "malicious": ([str(_evil(tmp / "evil.pt", tmp / "pwned"))], "allow-list"),
        "wrong architecture": ([str(state), "--cfg", "yolov5s-s2"], "do not fit the model config"),
        "imgsz": ([str(ckpt), "--imgsz", "100"], "not a multiple of the model stride 32"),
        "output folder is a file": ([str(ckpt), "-o", str(a_file / "m.onnx")], "not a folder"),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt", "truncated", "malicious", "wrong architecture",
                                  "imgsz", "output folder is a file"])
def test_bad_input_one_line_nonzero_no_files(ckpt, tmp_path, capsys, case):
    src = tmp_path / "src"
    src.mkdir()
    args, message = _bad_inputs(src, ckpt[0])[case]
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(src.iterdir())
    if "-o" not in args:
        args += ["-o", str(out)]
    if "--imgsz" not in args:
        args += ["--imgsz", SMALL]
    rc = main([*args, "--onnx-only", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1, err
    assert len(err) == 1 and err[0].startswith("s2export: error:") and message in err[0], err
    assert not list(out.iterdir()) and sorted(src.iterdir()) == before
    assert not (src / "pwned").exists()


def test_failed_parity_writes_nothing(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(parity, "FP32_TOL", 0.0)  # no float graph is bit-exact: the check must fail
    out = tmp_path / "runs" / "m.onnx"
    assert main([str(ckpt[0]), "--imgsz", SMALL, "--onnx-only", "-o", str(out), "-q"]) == 1
    assert "parity check failed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "neither files nor the missing output folder are made"


def test_staged_files_all_or_nothing(tmp_path):
    staged = StagedFiles()
    staged.add(tmp_path / "a.onnx", b"a")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    staged.add(a_file / "a.json", b"b")  # its folder is a file: the second write fails
    with pytest.raises(Exception, match="cannot write"):
        staged.commit()
    assert list(tmp_path.iterdir()) == [a_file]


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for line in ("exit codes:", "3   ONNX written", "--onnx-only", "--min-shape", "--plugin-lib",
                 "--timing-cache", "--workspace", "--device"):
        assert line in text


def test_fp16_and_simplify_sidecar_states_the_tolerance(ckpt, tmp_path):
    assert main([str(ckpt[0]), "--imgsz", SMALL, "--fp16", "--simplify", "--onnx-only", "-o", str(tmp_path),
                 "-q"]) == 0
    side = json.loads((tmp_path / f"{ckpt[0].stem}-fp16.json").read_text())
    fp16 = [p for p in side["parity"] if "fp16" in p["name"]]
    assert len(fp16) == 2 and all(p["pass"] and p["tol"] == FP16_TOL for p in fp16)
    assert np.isfinite([p["rel"] for p in side["parity"]]).all()


DEMO_CKPT = parity.demo_assets() / "demo.pt"


@pytest.mark.skipif(not DEMO_CKPT.is_file(), reason=f"{DEMO_CKPT} is not bundled yet (s2trt.demo.train "
                    "writes it); the same path runs above on a YOLOv5-format checkpoint")
def test_bundled_demo_checkpoint_with_nms_agrees_with_host_nms(tmp_path):
    assert main([str(DEMO_CKPT), "--imgsz", "320", "--nms", "--onnx-only", "-o", str(tmp_path), "-q"]) == 0
    side = json.loads((tmp_path / "demo.trt.json").read_text())
    assert all(p["pass"] for p in side["parity"]) and side["parity"][0]["input"].startswith("shapes_")
    assert side["nms_check"]["agree"] and sum(side["nms_check"]["detections"]) > 0


def test_engine_stage_gets_the_tensorrt_flavour_and_options(ckpt, exported, monkeypatch, capsys):
    """Where TensorRT exists: the CLI hands the builder the right file and options (builder stubbed)."""
    import s2trt.export.engine as engine

    calls = []

    def fake_build(onnx_path, engine_path, opts):
        calls.append((Path(onnx_path), Path(engine_path), opts))
        Path(engine_path).write_bytes(b"plan")
        return {}

    monkeypatch.setattr(engine, "build_engine", fake_build)
    onnx_path = exported / f"{ckpt[0].stem}.trt.onnx"
    assert main([str(onnx_path), "--fp16", "--min", "1", "--max", "4x3x160x160", "--workspace", "2",
                 "--device", "1", "--timing-cache", str(exported / "t.cache"), "-q"]) == 0
    (src, dst, opts), = calls
    assert src == onnx_path and dst == exported / f"{ckpt[0].stem}.engine"  # model.trt.onnx -> model.engine
    assert opts.precision == "fp16" and opts.min_shape == (1, 3, 160, 160)
    assert opts.max_shape == (4, 3, 160, 160) and opts.opt_shape is None
    assert opts.workspace_gib == 2 and opts.device == 1 and opts.use_plugin
    assert "engine:" in capsys.readouterr().out
    dst.unlink()


def test_export_options_with_an_onnx_input_are_reported_as_ignored(ckpt, exported, capsys, no_tensorrt):
    assert main([str(exported / f"{ckpt[0].stem}.onnx"), "--nms", "--imgsz", "320", "--no-plugin"]) == 3
    err = capsys.readouterr().err
    assert "--imgsz, --nms have no effect" in err and "--no-plugin" not in err.split("no effect")[0]


def test_outputs_get_ordinary_file_permissions(tmp_path):
    """Atomic writes go through mkstemp (0600); published files must be readable like open()'s."""
    from s2trt.meta import FILE_MODE, write_json_atomic

    staged = StagedFiles()
    staged.add(tmp_path / "a.onnx", b"a")
    staged.commit()
    write_json_atomic(tmp_path / "a.json", {"k": 1})
    for name in ("a.onnx", "a.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == FILE_MODE


@pytest.mark.parametrize("args, message", [
    # TensorRT's TopK layer takes K <= 3840 (NvInfer.h ITopKLayer::setK, addTopK: 10.3, 10.16, 11.1).
    (["--nms", "--topk", "3841"], "at most 3840"),
    (["--nms", "--topk", "5000"], "at most 3840"),
    (["--topk", "0"], "use 1..3840"),
    (["--int8"], "--int8 needs --calib"),
    (["--int8", "--calib", "imgs/", "--fp16"], "--int8 and --fp16 exclude each other"),
    (["--batch", "0"], "--batch 0 must be 1 or more"),
])
def test_bad_command_line_exits_2_before_any_work(ckpt, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([str(ckpt[0]), "--imgsz", SMALL, "--onnx-only", "-o", str(out), *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_quiet_prints_no_summary_and_the_summary_has_stage_times(ckpt, tmp_path, capsys):
    assert main([str(ckpt[0]), "--imgsz", SMALL, "--onnx-only", "-o", str(tmp_path), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert main([str(ckpt[0]), "--imgsz", SMALL, "--onnx-only", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "s2export summary" in out
    times = next(line for line in out.splitlines() if line.strip().startswith("time:"))
    for stage in ("loading the checkpoint", "exporting to ONNX", "TensorRT flavour", "writing files",
                  "total"):
        assert stage in times


def test_tensorrt_flavour_checked_at_ort_speed_and_onnx_reference_behind_a_flag(ckpt, tmp_path):
    """The default check runs standard ops in ONNX Runtime and the plugin node through its NumPy
    reference, on the whole parity batch; --full-reference adds the onnx.reference run."""
    names = {}
    for flag in ([], ["--full-reference"]):
        out = tmp_path / ("full" if flag else "default")
        out.mkdir()
        assert main([str(ckpt[0]), "--imgsz", SMALL, "--dynamic", "--onnx-only", "-o", str(out), "-q",
                     *flag]) == 0
        side = json.loads((out / f"{ckpt[0].stem}.trt.json").read_text())
        assert all(p["pass"] and p["rel"] <= parity.FP32_TOL for p in side["parity"])
        names[bool(flag)] = [p["name"] for p in side["parity"]]
    assert names[False] == ["portable fp32 (ONNX Runtime) vs PyTorch",
                            "tensorrt fp32 (ONNX Runtime + S2SplitAttention reference) vs PyTorch"]
    assert names[True] == [*names[False],
                           "tensorrt fp32 (onnx.reference + S2SplitAttention reference) vs PyTorch"]


def test_tensorrt_flavour_check_catches_a_wrong_plugin_node(ckpt, tmp_path, capsys, monkeypatch):
    """Checked without onnx.reference, a plugin node that computes the wrong thing still fails."""
    import s2trt.export.plugin_reference as ref

    real = ref.split_attention
    monkeypatch.setattr(ref, "split_attention", lambda x1, x2, x3, **kw: real(x2, x1, x3, **kw))
    assert main([str(ckpt[0]), "--imgsz", SMALL, "--onnx-only", "-o", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert "parity check failed" in err and "tensorrt fp32 (ONNX Runtime" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mixed_made", [True, False])
def test_int8_engine_is_built_from_the_int8_fp16_graph(ckpt, tmp_path, monkeypatch, capsys, mixed_made):
    """Strongly typed TensorRT (11, and 10 for a typed graph: export/engine.py) runs unquantized
    layers in the graph's own type, so the engine must come from `-int8-fp16.onnx`, not the Q/DQ
    graph whose float layers are FP32 (calibration and the builder stubbed: this is the CLI's choice)."""
    import s2trt.calib.pipeline as calib
    import s2trt.export.engine as engine

    def fake_quantize(portable, out, args):
        out.write_bytes(b"int8")
        mixed = calib.int8_fp16_path(out)
        if mixed_made:
            mixed.write_bytes(b"int8+fp16")
        return {"method": "percentile", "accuracy": None, "accuracy_note": "not measured",
                "int8_fp16": str(mixed) if mixed_made else None}

    built = []

    def fake_build(onnx_path, engine_path, opts):
        built.append((Path(onnx_path), opts.precision))
        Path(engine_path).write_bytes(b"plan")
        return {}

    monkeypatch.setattr(calib, "check_int8_args", lambda args: None)
    monkeypatch.setattr(calib, "quantize_export", fake_quantize)
    monkeypatch.setattr(engine, "build_engine", fake_build)
    assert main([str(ckpt[0]), "--imgsz", SMALL, "--no-plugin", "-o", str(tmp_path), "-q", "--int8",
                 "--calib", str(tmp_path)]) == 0
    stem = ckpt[0].stem
    expected = tmp_path / (f"{stem}-int8-fp16.onnx" if mixed_made else f"{stem}-int8.onnx")
    assert built == [(expected, "int8")]
    captured = capsys.readouterr()
    assert (str(tmp_path / f"{stem}-int8-fp16.onnx") in captured.out) == mixed_made
    warned = [line for line in captured.err.splitlines() if "no INT8+FP16 graph" in line]
    assert len(warned) == (0 if mixed_made else 1)
    assert all(f"{stem}-int8.onnx" in line and "FP32" in line for line in warned)


def test_names_name_the_classes_of_a_state_dict(tmp_path, capsys):
    """A plain state_dict has no class names: --names gives them (a data yaml here), and a list of
    the wrong length is one line, exit 1, no files."""
    sd = tmp_path / "sd.pt"
    torch.save(build_model("yolov5n-s2", nc=3).state_dict(), sd)
    data = tmp_path / "data.yaml"
    data.write_text("nc: 3\nnames: [cat, dog, 'no']\n")
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(sd), "--cfg", "yolov5n-s2", "--names", str(data), "--imgsz", SMALL, "--onnx-only",
                 "--no-plugin", "-o", str(out), "-q"]) == 0
    assert read_onnx_meta(out / "sd.onnx").names == ["cat", "dog", "no"]
    assert json.loads((out / "sd.json").read_text())["names"] == ["cat", "dog", "no"]

    bad = tmp_path / "bad"
    bad.mkdir()
    assert main([str(sd), "--cfg", "yolov5n-s2", "--names", "cat,dog", "--imgsz", SMALL, "--onnx-only",
                 "--no-plugin", "-o", str(bad), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 class names given for a model of 3 classes" in err[0], err
    assert not list(bad.iterdir())


@pytest.mark.parametrize("output", ["out/", "out", "out.v2/"])
def test_missing_output_folder_is_made_like_the_folder_of_a_missing_file(ckpt, tmp_path, output):
    """One rule (issue 15 item 11): `-o new/model.onnx` makes new/, so `-o out/` (or a name without
    a suffix) makes out/ too, when the files are written."""
    rc = main([str(ckpt[0]), "--imgsz", SMALL, "--no-plugin", "--onnx-only", "-o", f"{tmp_path}/{output}",
               "-q"])  # not tmp_path / output: Path drops the slash
    assert rc == 0
    folder = tmp_path / output.rstrip("/")
    assert sorted(p.name for p in folder.iterdir()) == [f"{ckpt[0].stem}.json", f"{ckpt[0].stem}.onnx"]
    assert read_onnx_meta(folder / f"{ckpt[0].stem}.onnx").flavour == "portable"


def test_output_with_another_suffix_is_refused_before_any_work(ckpt, tmp_path, capsys):
    assert main([str(ckpt[0]), "--imgsz", SMALL, "--onnx-only", "-o", str(tmp_path / "model.txt"),
                 "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be a folder or a file name ending in .onnx" in err[0], err
    assert not list(tmp_path.iterdir())
