"""The safe loader on YOLOv5-format pickles, plain state dicts, and hostile or broken files."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import types
import zipfile

import pytest
import torch
from yolov5_fake import build_model, make_yolov5_checkpoint

from s2trt.errors import S2Error
from s2trt.models import load_checkpoint
from s2trt.models.checkpoint import HeadMethod, UnsafeCheckpointError, read_pickle


def _outputs_equal(a: torch.nn.Module, b: torch.nn.Module, size: int = 128, atol: float = 1e-4):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    torch.testing.assert_close(ya, yb, rtol=1e-3, atol=atol)


@pytest.mark.parametrize("release,stripped", [("v7.0", False), ("v7.0", True), ("v6.0", False)])
def test_yolov5s_s2_pickle_loads_without_yolov5(tmp_path, release, stripped):
    path = make_yolov5_checkpoint(tmp_path, "yolov5s-s2", nc=80, half=True, release=release,
                                  stripped=stripped)
    assert "models.yolo" not in sys.modules  # the throw-away yolov5 modules are gone
    raw = zipfile.ZipFile(path).read(next(n for n in zipfile.ZipFile(path).namelist()
                                          if n.endswith("data.pkl")))
    assert b"models.yolo" in raw and b"models.common" in raw  # the real YOLOv5 class names
    lm = load_checkpoint(path)
    assert lm.source == "yolov5" and lm.half
    assert lm.names[:2] == ["class0", "class1"] and lm.nc == 80
    assert lm.stride == [8, 16, 32]
    assert lm.has_s2attention
    assert not lm.model.training
    reference = make_yolov5_checkpoint.last_model.half().float()  # the FP16 weights that were saved
    _outputs_equal(lm.model, reference)


def test_fp32_checkpoint_other_width_and_classes(tmp_path):
    path = make_yolov5_checkpoint(tmp_path, "yolov5s-s2", nc=3, half=False, width_multiple=0.75)
    lm = load_checkpoint(path)
    assert not lm.half and lm.nc == 3
    assert lm.model.model[24].mlp1.weight.shape == (768 * 3, 768)
    _outputs_equal(lm.model, make_yolov5_checkpoint.last_model, atol=1e-5)


def test_plain_yolov5s_without_block(tmp_path):
    lm = load_checkpoint(make_yolov5_checkpoint(tmp_path, "yolov5s", nc=5))
    assert not lm.has_s2attention and lm.nc == 5


def test_state_dict_needs_cfg(tmp_path):
    model = build_model("yolov5n-s2", nc=5)
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(S2Error, match="--cfg"):
        load_checkpoint(path)
    lm = load_checkpoint(path, cfg="yolov5n-s2")
    assert lm.source == "state_dict" and lm.nc == 5
    _outputs_equal(lm.model, model, atol=1e-5)


def test_wrong_architecture_is_one_clear_error(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build_model("yolov5n-s2", nc=5).state_dict(), path)
    with pytest.raises(S2Error, match="do not fit the model config"):
        load_checkpoint(path, cfg="yolov5s")


class _Evil:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _evil_payloads(marker: str):
    import builtins
    import subprocess
    return {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "eval": _Evil(builtins.eval, f"open({marker!r}, 'w').close()"),
        "exec": _Evil(builtins.exec, f"open({marker!r}, 'w').close()"),
        "subprocess": _Evil(subprocess.call, ["touch", marker]),
        "outside allow-list": _Evil(pathlib_touch, marker),
    }


def pathlib_touch(path: str) -> None:
    open(path, "w").close()


@pytest.mark.parametrize("kind", ["os.system", "eval", "exec", "subprocess", "outside allow-list"])
@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, kind, container):
    marker = str(tmp_path / "pwned")
    payload = {"model": _evil_payloads(marker)[kind], "epoch": 1}
    path = tmp_path / "evil.pt"
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="allow-list"):
        load_checkpoint(path)
    assert not os.path.exists(marker)


def test_malicious_global_inside_a_real_checkpoint(tmp_path):
    marker = str(tmp_path / "pwned")
    path = make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=2)
    ckpt_bytes = io.BytesIO()
    torch.save({"model": None, "ema": _Evil(os.system, f"touch {marker}")}, ckpt_bytes)
    path.write_bytes(ckpt_bytes.getvalue())
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_garbage_files_are_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(S2Error, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(S2Error, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(S2Error, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_without_model(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"epoch": 3, "optimizer": None}, path)
    with pytest.raises(S2Error, match="holds no model"):
        load_checkpoint(path)


def test_torch_module_constructors_are_never_called(tmp_path):
    """A REDUCE of nn.Linear(2**20, 2**20) would try to allocate 4 TB; the allow-listed torch.nn
    classes resolve to inert stand-ins, so the call builds nothing."""
    path = tmp_path / "huge.pt"
    torch.save({"model": _Evil(torch.nn.Linear, 1 << 20, 1 << 20)}, path)
    with pytest.raises(S2Error, match="no model config"):
        load_checkpoint(path)


def test_malformed_model_config_is_one_clear_error(tmp_path):
    broken = {"nc": 2, "anchors": [[1, 2]], "backbone": [[-1, 1, "Conv"]], "head": []}
    path = make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=2, yaml=broken)
    with pytest.raises(S2Error, match=r"model config layer 0: a layer is \[from, number"):
        load_checkpoint(path)


def test_legacy_format_loads_and_its_storage_sizes_are_checked(tmp_path):
    """torch's pre-1.6 format allocates each storage at the size the pickle states, before reading
    its data: the size is checked against the file first (the zip format reads record sizes)."""
    model = build_model("yolov5n-s2", nc=2)
    path = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    _outputs_equal(load_checkpoint(path, cfg="yolov5n-s2").model, model, atol=1e-5)

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(12345)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    assert data.count(b"M90") == 2  # BININT2 12345: the storage's numel first, then the shape
    path.write_bytes(data.replace(b"M90", b"J\xff\xff\xff\x7f", 1))
    with pytest.raises(S2Error, match=r"tensor storage .* claims 2147483647 elements"):
        load_checkpoint(path)


def _getattr_pickle(obj: bytes, attr: str, default: bool = False) -> bytes:
    """{'model': getattr(<obj>, attr[, None])} as protocol-2 opcodes, the way Segment's
    `self.detect = Detect.forward` is written (GLOBAL getattr, the class, the name, REDUCE)."""
    a = attr.encode()
    args = obj + b"X" + len(a).to_bytes(4, "little") + a + (b"N\x87" if default else b"\x86")
    return b"\x80\x02}X\x05\x00\x00\x00model" + b"c__builtin__\ngetattr\n" + args + b"Rs."


_DETECT_FORWARD = b"c__builtin__\ngetattr\ncmodels.yolo\nDetect\nX\x07\x00\x00\x00forward\x86R"


@pytest.mark.parametrize("obj,attr,default", [
    (b"c__builtin__\n__import__\nX\x02\x00\x00\x00os\x85R", "system", False),  # getattr(os, ...)
    (b"X\x02\x00\x00\x00os", "system", False),  # on a string
    (b"cmodels.yolo\nDetect\n", "__init__", False),  # another name of a head
    (b"cmodels.yolo\nDetect\n", "__reduce_ex__", False),
    (b"cmodels.common\nConv\n", "forward", False),  # forward of a class that is not a head
    (b"cmodels.yolo\nDetectionModel\n", "forward", False),
    (b"cutils.general\nDetect\n", "forward", False),  # a head's name in another module
    (b"ccollections\nOrderedDict\n", "fromkeys", False),  # an allow-listed global's attribute
    (b"cmodels.yolo\nDetect\n", "forward", True),  # with a default
    (_DETECT_FORWARD, "__globals__", False),  # through what the allowed one returns
])
def test_getattr_is_refused_except_a_heads_forward(tmp_path, obj, attr, default):
    path = tmp_path / "getattr.pt"
    path.write_bytes(_getattr_pickle(obj, attr, default))
    with pytest.raises(UnsafeCheckpointError, match="allow-list"):
        load_checkpoint(path)


@contextlib.contextmanager
def _yolo_module(*names: str):
    """A throw-away `models.yolo` with empty nn.Module classes of these names, for pickling."""
    saved = {k: sys.modules.get(k) for k in ("models", "models.yolo")}
    pkg, mod = types.ModuleType("models"), types.ModuleType("models.yolo")
    pkg.yolo = mod
    for name in names:
        setattr(mod, name, type(name, (torch.nn.Module,), {"__module__": "models.yolo"}))
    sys.modules.update({"models": pkg, "models.yolo": mod})
    try:
        yield mod
    finally:
        for k, v in saved.items():
            sys.modules.pop(k, None) if v is None else sys.modules.__setitem__(k, v)


@pytest.mark.parametrize("cls", ["Detect", "Segment"])
def test_getattr_of_a_heads_forward_is_inert_data(tmp_path, cls):
    path = tmp_path / "getattr.pt"
    with _yolo_module(cls) as mod:
        torch.save({"model": _Evil(getattr, getattr(mod, cls), "forward")}, path)
    assert read_pickle(path) == {"model": HeadMethod(cls, "forward")}
    with pytest.raises(S2Error, match="does not contain a YOLOv5 model"):
        load_checkpoint(path)


def test_classification_model_is_one_line_naming_it_and_the_release(tmp_path):
    with _yolo_module("ClassificationModel") as mod:
        model = mod.ClassificationModel()
        model.lin = torch.nn.Linear(2, 2)
        torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None,
                    "updates": None, "optimizer": None, "opt": {}, "git": {}, "date": "x"},
                   tmp_path / "cls.pt")
    with pytest.raises(S2Error, match=r"YOLOv5 v7.0 ClassificationModel, a classification model"):
        load_checkpoint(tmp_path / "cls.pt")
