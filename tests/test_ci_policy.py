"""CI proves what it claims: under CI=true a skip for anything but a GPU or TensorRT is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROBE = '''
import pytest
plain = pytest.mark.skipif(True, reason="needs the ffmpeg program")

@plain
def test_missing_tool():
    pass

def test_skip_in_body():
    pytest.skip("dockerd not found")

@pytest.mark.gpu
def test_needs_gpu():
    pytest.skip("no NVIDIA GPU")

@pytest.mark.tensorrt
def test_needs_tensorrt():
    pytest.skip("TensorRT's Python module is not installed")

def test_runs():
    pass
'''
IMPORTSKIP = 'import pytest\npytest.importorskip("no_such_module_s2trt")\n\ndef test_x():\n    pass\n'


def _run(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(folder)]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def _folder(tmp_path: Path) -> Path:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "test_importskip.py").write_text(IMPORTSKIP)
    # The markers the real suite registers in pyproject.toml.
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: g\n    tensorrt: t\n")
    return tmp_path


def test_under_ci_only_gpu_and_tensorrt_may_skip(tmp_path: Path) -> None:
    out = _run(_folder(tmp_path), "true")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    # A skipif marker acts in setup, so pytest reports that one as an error: a failure all the same.
    assert "ERROR test_probe.py::test_missing_tool" in text and "needs the ffmpeg program" in text
    assert "FAILED test_probe.py::test_skip_in_body" in text and "dockerd not found" in text
    assert "files skipped whole" in text and "no_such_module_s2trt" in text
    assert "PASSED test_probe.py::test_runs" in text
    # The allowed skips stay skips, listed with their reasons at the end.
    assert "SKIPPED" in text and "no NVIDIA GPU" in text and "TensorRT's Python module" in text
    assert "skip reasons" in text


def test_outside_ci_a_missing_tool_is_a_skip(tmp_path: Path) -> None:
    out = _run(_folder(tmp_path), None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAILED" not in out.stdout
