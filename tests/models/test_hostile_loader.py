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


# --- memory budgets: every allocation a pickle asks for is counted before it happens ----------

# A refusal may take this much more than refusing a 29-byte file (which costs torch's imports).
RSS_ABOVE_BASELINE = 100 << 20


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def _str(s: str) -> bytes:
    """BINUNICODE: a string in a protocol-2 pickle."""
    return b"X" + _u32(len(s)) + s.encode()


def numpy_void_scalar(path: Path, itemsize: int = 400_000_000) -> Path:
    """numpy.core.multiarray.scalar(dtype('V<itemsize>')): without data NumPy zeroes the item,
    then copies it into the scalar, twice the itemsize in a hundred bytes."""
    path.write_bytes(b"\x80\x02cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\n" + _str(f"V{itemsize}")
                     + b"\x89\x88\x87R\x85R.")
    return path


def codec_chain(path: Path, times: int = 17, start: int = 2048) -> Path:
    """_codecs.encode(..., 'hex') applied `times` times to a latin-1 string: it doubles each time
    (2 KB becomes 268 MB, the last two alive together)."""
    enc = b"c_codecs\nencode\nq\x00"
    data = b"\x80\x02" + enc + b"h\x00" * times  # the callables first, then innermost arguments
    data += _str("a" * start) + _str("latin1") + b"\x86R"
    data += (_str("hex") + b"\x86R") * times
    path.write_bytes(data + b".")
    return path


def _tar_header(name: str, typeflag: bytes, size: int, extra: dict[int, bytes]) -> bytes:
    h = bytearray(512)
    for at, field in {0: name.encode(), 100: b"0000644\0", 108: b"0000000\0", 116: b"0000000\0",
                      124: b"%011o\0" % size, 136: b"00000000000\0", 148: b" " * 8,
                      156: typeflag, 257: b"ustar  \0", **extra}.items():
        h[at:at + len(field)] = field
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def legacy_tar(path: Path, claim: int = 100_000_000) -> Path:
    """torch's first (tar) format: a GNU sparse member `storages` that unpacks to 4 * claim bytes
    of holes, read back as one float32 storage of `claim` elements. Its storage type is a YOLOv5
    stand-in that a BUILD gave a `_dtype`; the file is a few KB."""
    standin = (b"cmodels.common\nConv\n)R}" + _str("_dtype") + b"ctorch\nfloat32\nsb")
    head = (pickle.dumps(1, protocol=2) + b"\x80\x02" + _str("0") + _str("cpu") + standin
            + b"\x87." + claim.to_bytes(8, "little"))
    real = len(head) + 4 * claim
    sparse = {386: b"%011o\0" % 0 + b"%011o\0" % len(head), 482: b"\0", 483: b"%011o\0" % real}
    block = head + bytes(-len(head) % 512)
    path.write_bytes(_tar_header("storages", b"S", len(head), sparse) + block + bytes(1024))
    return path


def zero_stride_weights(path: Path, tmp_path: Path, width: float = 1.25) -> tuple[Path, Path]:
    """A state dict whose every tensor is one stored FP16 zero expanded (stride 0) to the shape a
    wide YOLOv5 config wants: a few KB describe a model of tens of millions of parameters."""
    from s2trt.models import load_config
    from s2trt.models.yolo import plan_model

    d = load_config("yolov5s")
    d["width_multiple"] = width
    cfg = tmp_path / "wide-zero.yaml"
    cfg.write_text(yaml.safe_dump(d))
    one = torch.zeros(1, dtype=torch.float16)
    state = {k: (torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked")
                 else one.expand(shape)) for k, shape in plan_model(d).shapes.items()}
    torch.save(state, path)
    return path, cfg


def memo_index(path: Path, index: int = 50_000_000) -> Path:
    """LONG_BINPUT of a large index: CPython's C unpickler grows its memo array to twice the index
    and zeroes it (16 bytes per index) before anything else happens."""
    path.write_bytes(b"\x80\x02Nr" + _u32(index) + b".")
    return path


def empty_sets(path: Path, n: int = 1_000_000) -> Path:
    """A million EMPTY_SET opcodes: a byte each, 216 bytes each in CPython."""
    path.write_bytes(b"\x80\x04" + b"\x8f" * n + b".")
    return path


def module_spam(path: Path, n: int = 200_000) -> Path:
    """A YOLOv5 class called 200,000 times (4 bytes a call): each nn.Module.__init__ makes a
    dozen ordered dicts."""
    path.write_bytes(b"\x80\x02cmodels.common\nConv\nq\x00" + b"h\x00)R" * n + b".")
    return path


def module_builds(path: Path, n: int = 140_000) -> Path:
    """NEWOBJ and BUILD with one stored empty dict, 140,000 times (7 bytes each): nn.Module's
    __setstate__ adds the dozen hook dicts the empty state lacks."""
    path.write_bytes(b"\x80\x02cmodels.common\nConv\nq\x00}q\x01(" + b"h\x00)\x81h\x01b" * n + b"l.")
    return path


def state_copies(path: Path, keys: int = 5000, copies: int = 2000) -> Path:
    """One stored dict of 5,000 attributes BUILT into 2,000 modules: each BUILD copies it."""
    d = b"}q\x01(" + b"".join(_str(f"k{i}") + b"N" for i in range(keys)) + b"u0"
    one = b"h\x00)\x81h\x01b"  # NEWOBJ of the class, BUILD with the memoized dict
    path.write_bytes(b"\x80\x02cmodels.common\nConv\nq\x00" + d + b"(" + one * copies + b"l.")
    return path


def set_copies(path: Path, items: int = 50_000, copies: int = 400) -> Path:
    """builtins.set over one stored list of 50,000 ints, 400 times: 8 bytes an element in the
    list, 30 and more in each set."""
    lst = b"]q\x01(" + b"".join(b"J" + _u32(i) for i in range(items)) + b"e0"
    one = b"h\x00h\x01\x85R"
    path.write_bytes(b"\x80\x02c__builtin__\nset\nq\x00" + lst + b"(" + one * copies + b"l.")
    return path


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory) -> int:
    """Peak RSS of s2export refusing a 29-byte file that is no checkpoint at all."""
    path = tmp_path_factory.mktemp("baseline") / "junk.pt"
    path.write_bytes(b"this is not a checkpoint\n\0\0\0\0")
    assert path.stat().st_size == 29
    rc, stderr, rss = run_loader(str(path), "-o", str(path.parent))
    assert rc == 1, stderr
    return rss


BOMBS = {
    "numpy void scalar": (numpy_void_scalar, ("NumPy scalar",)),
    "_codecs.encode chain": (codec_chain, ("_codecs.encode", "latin1")),
    "legacy tar": (legacy_tar, ("tar",)),
    "memo index": (memo_index, ("claims", "bytes")),
    "empty sets": (empty_sets, ("pickle opcodes",)),
    "module spam": (module_spam, ("models.common.Conv",)),
    "module builds": (module_builds, ("models.common.Conv",)),
    "state copies": (state_copies, ("attributes of a models.common.Conv",)),
    "set copies": (set_copies, ("builtins.set",)),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_pickle_memory_bomb_is_refused_before_allocating(tmp_path, baseline_rss, bomb):
    make, words = BOMBS[bomb]
    path = make(tmp_path / "bomb.pt")
    assert path.stat().st_size <= 1 << 20
    rc, stderr, rss = run_loader(str(path), "-o", str(tmp_path))
    assert rss - baseline_rss < RSS_ABOVE_BASELINE, \
        f"peak RSS {rss >> 20} MB, {(rss - baseline_rss) >> 20} MB above refusing a 29-byte file"
    _refused((rc, stderr, rss), *words)
    assert not [p for p in tmp_path.rglob("*") if p != path]  # nothing unpacked or written


def test_zero_stride_weights_are_counted_at_their_expanded_size(tmp_path, baseline_rss):
    """A state dict of expanded views over one stored zero: refused from the sizes the views
    describe, before the model they fill is allocated (it was allocated and exported)."""
    path, cfg = zero_stride_weights(tmp_path / "zero.pt", tmp_path)
    assert path.stat().st_size < 256 << 10
    rc, stderr, rss = run_loader(str(path), "--cfg", str(cfg), "-o", str(tmp_path))
    assert rss - baseline_rss < RSS_ABOVE_BASELINE, f"peak RSS {rss >> 20} MB"
    _refused((rc, stderr, rss), "stride (0, 0, 0, 0) claims")
