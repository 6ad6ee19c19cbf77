"""s2export and every writer of s2trt never publish an output onto one of their inputs (issue 26.3):
refused before any work with exit 2, like s2infer, and again at the rename for what a command line
cannot tell."""

from __future__ import annotations

import os

import pytest

from s2trt.errors import UsageError
from s2trt.export.cli import main


@pytest.fixture
def inputs(tmp_path):
    """A checkpoint that is never loaded (the guard runs first) and the files s2export reads."""
    files = {"weights": tmp_path / "w.pt", "names": tmp_path / "n.json", "cfg": tmp_path / "c.json",
             "lib": tmp_path / "m.engine", "onnx": tmp_path / "m.onnx", "onnx_side": tmp_path / "m.json"}
    for i, p in enumerate(files.values()):
        p.write_bytes(f"input {i}\n".encode())
    return files


@pytest.mark.parametrize("argv, clash, what", [
    (["{weights}", "--names", "{names}", "-o", "{tmp}/n.onnx"], "n.json", "the --names file"),
    (["{weights}", "--cfg", "{cfg}", "-o", "{tmp}/c.onnx"], "c.json", "the --cfg file"),
    (["{weights}", "--names", "{names}", "-o", "{tmp}/n.trt.onnx", "--no-plugin"], "n.trt.json",
     None),  # no clash: n.trt.json is not n.json
    (["{weights}", "--names", "{tmp}/w-fp16.json", "--fp16"], "w-fp16.json", "the --names file"),
    (["{onnx}", "--plugin-lib", "{lib}"], "m.engine", "the --plugin-lib file"),
    (["{tmp}/x.onnx", "--names", "{tmp}/x.engine.json"], "x.engine.json", "the --names file"),
])
def test_an_output_onto_an_input_is_refused_before_any_work(tmp_path, inputs, capsys, argv, clash, what):
    (tmp_path / "w-fp16.json").write_text("a\n")
    (tmp_path / "x.onnx").write_bytes(b"not read")
    (tmp_path / "x.engine.json").write_text("b\n")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    fmt = {k: str(v) for k, v in inputs.items()} | {"tmp": str(tmp_path)}
    code = main([a.format(**fmt) for a in argv] + ["--onnx-only", "-q"])
    err = capsys.readouterr().err
    if what is None:  # the guard passes and the export goes on, to fail on the fake checkpoint
        assert code == 1 and "would overwrite" not in err, err
    else:
        assert code == 2, err
        assert err.strip().splitlines() == [f"s2export: error: the output {tmp_path / clash} would "
                                            f"overwrite {what} {tmp_path / clash}: choose another output"]
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_no_writer_publishes_onto_a_guarded_input_through_any_name(tmp_path):
    """The check at the rename, shared by s2infer, s2export and s2serve export (s2trt.publish)."""
    from s2trt.export.outputs import StagedFiles
    from s2trt.publish import forget_inputs, guard_inputs, write_bytes_atomic

    names = tmp_path / "names.txt"
    names.write_text("cat\n")
    os.link(names, tmp_path / "hard.json")
    (tmp_path / "soft.json").symlink_to(names)
    guard_inputs([(names, "the --names file")])
    for target in (names, tmp_path / "hard.json"):
        with pytest.raises(UsageError, match="would overwrite the --names file"):
            write_bytes_atomic(target, b"{}")
        staged = StagedFiles()
        staged.add(tmp_path / "other.onnx", b"graph")
        staged.add(target, b"{}")
        with pytest.raises(UsageError):
            staged.commit()
    # A link is replaced by the rename, not written through: the input is not touched.
    write_bytes_atomic(tmp_path / "soft.json", b"{}")
    assert names.read_text() == "cat\n" and (tmp_path / "soft.json").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.json", "names.txt", "soft.json"]
    forget_inputs()
    write_bytes_atomic(names, b"dog\n")  # once the command has ended, the file is anyone's
    assert names.read_text() == "dog\n"
