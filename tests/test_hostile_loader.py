"""Resource bombs against the checkpoint loader: each is refused with one line and exit 1.

The files are tiny; on the old loader they took gigabytes or minutes (figures in the notes of issue
15). Each runs in s2export in a subprocess whose peak resident memory is bounded (generously) and
whose data segment is capped, so a regression shows as a failed test, not as a hung machine.
"""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from yolov5_fake import build_model

# Peak resident memory a refusal may take: s2export's imports need ~0.25 GB, the old loader took
# 2-3 GB on these files. The address-space limit only keeps a regression from exhausting the machine.
MAX_RSS = 1 << 30
DATA_LIMIT = 6 << 30


def numpy_object_array(path: Path, via: str = "ndarray") -> Path:
    """A pickle of a few dozen bytes that makes NumPy allocate a 350-million-element object array
    (2.8 GB): by REDUCE on ndarray or _reconstruct, or by the BUILD that fills a real array."""
    n = (350_000_000).to_bytes(4, "little")
    if via == "ndarray":
        data = b"\x80\x02cnumpy\nndarray\nJ" + n + b"\x85U\x01O\x86R."
    elif via == "_reconstruct":  # what ndarray.__reduce__ emits, with a forged shape
        data = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ" + n
                + b"\x85U\x01O\x87R.")
    else:  # a real one-element object array whose pickled state claims the big shape
        data = pickle.dumps(np.array([7], dtype=object), protocol=2)
        assert data.count(b"K\x01K\x01\x85") == 1  # (version 1, shape (1,))
        data = data.replace(b"K\x01K\x01\x85", b"K\x01J" + n + b"\x85")
    path.write_bytes(data)
    return path


def zip_bomb(path: Path, size: int = 2300 << 20) -> Path:
    """A torch zip checkpoint whose one storage inflates from ~2 MB to `size` bytes of zeros."""
    torch.save({"model": torch.zeros(1)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    storage = next(n for n in entries if "/data/" in n)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            if name != storage:
                z.writestr(name, data)
        info = zipfile.ZipInfo(storage)
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            chunk = bytes(16 << 20)
            for _ in range(size // len(chunk)):
                f.write(chunk)
    return path


def _state_dict(path: Path) -> Path:
    torch.save(build_model("yolov5n-s2", nc=2).state_dict(), path)
    return path


def hostile_config(tmp_path: Path, **overrides) -> Path:
    from s2trt.models import load_config

    d = load_config("yolov5n-s2")
    d.update(overrides)
    out = tmp_path / "hostile.yaml"
    out.write_text(yaml.safe_dump(d))
    return out


def wide_config(tmp_path: Path, channels: int = 16384, width: float = 0.25) -> Path:
    from s2trt.models import load_config

    d = load_config("yolov5n-s2")
    d["width_multiple"] = width
    for layer in d["backbone"][:2]:
        layer[3][0] = channels
    out = tmp_path / "wide.yaml"
    out.write_text(yaml.safe_dump(d))
    return out


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))


def run_loader(*args: str, timeout: float = 120) -> tuple[int, str, int]:
    """s2export on a hostile file in a subprocess: exit status, stderr and peak RSS in bytes."""
    code = "import sys; from s2trt.export.cli import main; sys.exit(main(sys.argv[1:]))"
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-c", code, *args, "--onnx-only", "-q"],
                             stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_limit,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + timeout
        while not (done := os.wait4(p.pid, os.WNOHANG))[0]:
            if time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                pytest.fail(f"s2export ran for more than {timeout} s on a hostile file")
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(done[1])  # reaped here, not by Popen
        err.seek(0)
        return p.returncode, err.read().decode(errors="replace"), done[2].ru_maxrss * 1024


def _refused(result: tuple[int, str, int], *words: str) -> None:
    rc, stderr, rss = result
    lines = stderr.strip().splitlines()
    assert rc == 1, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("s2export: error: "), stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    assert rss < MAX_RSS, f"peak RSS {rss >> 20} MB refusing a hostile file"


@pytest.mark.parametrize("via", ["ndarray", "_reconstruct", "setstate"])
def test_numpy_object_array_bomb(tmp_path, via):
    path = numpy_object_array(tmp_path / "np.pt", via)
    assert path.stat().st_size < 256
    _refused(run_loader(str(path), "-o", str(tmp_path)), "NumPy array", "larger than")


def test_zip_bomb(tmp_path):
    path = zip_bomb(tmp_path / "bomb.pt")
    assert path.stat().st_size < 4 << 20
    _refused(run_loader(str(path), "-o", str(tmp_path)), "inflate", "zip bomb")


@pytest.mark.parametrize("override,words", [
    ({"depth_multiple": 1e5}, ("depth_multiple", "(0, 4]")),
    ({"width_multiple": 64.0}, ("width_multiple",)),
    ({"anchors": 10**9}, ("anchors", "1..16")),
])
def test_config_outside_yolov5_ranges(tmp_path, override, words):
    cfg = hostile_config(tmp_path, **override)
    _refused(run_loader(str(_state_dict(tmp_path / "sd.pt")), "--cfg", str(cfg), "-o",
                        str(tmp_path)), *words)


@pytest.mark.parametrize("width,words", [(1.0, ("16384 output channels",)),
                                         (0.25, ("do not fit", "(4096, 3, 6, 6)"))])
def test_wide_convs_refused_before_allocating(tmp_path, width, words):
    """16384 channels are beyond YOLOv5's range; 4096 are within it, but these weights do not
    fit them: both are found before the model is allocated (the old loader built 2 GB first)."""
    cfg = wide_config(tmp_path, width=width)
    _refused(run_loader(str(_state_dict(tmp_path / "sd.pt")), "--cfg", str(cfg), "-o",
                        str(tmp_path)), *words)
