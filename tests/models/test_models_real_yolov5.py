"""The fake YOLOv5 checkpoints against what the real v6.0 and v7.0 train.py pickle.

The facts below were read from checkpoints that the yolov5 repository itself wrote (tags v6.0 and
v7.0, `train.py --cfg yolov5s-s2.yaml` with an S2Attention added to their models/common.py and
parse_model, torch 2.13 CPU, NumPy 1.23.5 and 2.2.6; train-format `epochN.pt` from --save-period,
`best.pt` after strip_optimizer()). s2export loaded every one of them without the yolov5 repo and its
ONNX output matched their own model's forward within 1e-4 absolute. Their code cannot be in this
repository, so these tests pin the pickle layout the fake must reproduce for the loader tests to
mean anything: against the real NumPy-1 checkpoints stored in tests/data/yolov5 where one of the
layout is stored, against those facts where none is.
"""

from __future__ import annotations

import pickletools
import zipfile

import pytest
from paths import DATA
from yolov5_fake import make_yolov5_checkpoint

from s2trt.models import load_checkpoint
from s2trt.models.checkpoint import read_pickle

YOLOV5_DATA = DATA / "yolov5"

# Real checkpoints that the releases' own code pickled with NumPy 1 and torch 1.x (tests/data/yolov5,
# the `-numpy1` entries, test_models_numpy1_pickles.py): per layout of the fake, the real file of
# that layout. v6.0's stripped one is the fake's family (yolov5n), so every global must match; the
# others are other families, so only the globals outside torch.nn and yolov5's modules do (v5.0's
# train.py saves the same values as v6.0's, so its train-format file stands for v6.0's).
REAL_FILE = {("v6.0", False): "v5.0/yolov3-tiny-numpy1.pt", ("v6.0", True): "v6.0/yolov5n-numpy1.pt",
             ("v7.0", True): "v7.0/yolov5s-seg-numpy1.pt"}
# No real v7.0 train-format file is stored (the fixtures' size limit); one with NumPy 1.23.5 held:
# the optimizer's momentum, a numpy.float64 (scalar), and best_fitness, an array once an epoch
# scored above zero; class_weights is float32 from v6.2 on.
V7_TRAIN_FORMAT = {"__builtin__ set", "collections OrderedDict", "torch FloatStorage",
                   "torch HalfStorage", "torch LongStorage", "torch._utils _rebuild_parameter",
                   "torch._utils _rebuild_tensor_v2", "_codecs encode", "numpy dtype", "numpy ndarray",
                   "numpy.core.multiarray _reconstruct", "numpy.core.multiarray scalar"}
REAL_KEYS = {
    ("v6.0", False): ["epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id"],
    ("v6.0", True): ["epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id",
                     "training_results"],
    ("v7.0", False): ["epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "git",
                      "date"],
    ("v7.0", True): ["epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "git",
                     "date"],
}
NN = {"torch.nn.modules.activation GELU", "torch.nn.modules.activation SiLU",
      "torch.nn.modules.activation Softmax", "torch.nn.modules.batchnorm BatchNorm2d",
      "torch.nn.modules.container ModuleList", "torch.nn.modules.container Sequential",
      "torch.nn.modules.conv Conv2d", "torch.nn.modules.linear Linear",
      "torch.nn.modules.pooling MaxPool2d", "torch.nn.modules.upsampling Upsample"}
YOLOV5 = {f"models.common {n}" for n in
          ("Bottleneck", "C3", "Concat", "Conv", "S2Attention", "SPPF", "SplitAttention")}
MODEL_CLASS = {"v6.0": "models.yolo Model", "v7.0": "models.yolo DetectionModel"}


def _globals(path) -> set[str]:
    """The globals a checkpoint's pickle names, NumPy 2's module names written as NumPy 1's: the
    fake is pickled by whichever NumPy runs the tests, the real files by NumPy 1."""
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = list(pickletools.genops(data))
    assert ops[0][1] == 2  # torch.save's protocol, as in the real files
    return {arg.replace("numpy._core.", "numpy.core.") for op, arg, _ in ops if op.name == "GLOBAL"}


def _values(names: set[str]) -> set[str]:
    """The globals of a checkpoint's values, not of its modules (Segment's getattr is a module's)."""
    return {g for g in names if not g.startswith(("torch.nn.", "models."))
            and g != "__builtin__ getattr"}


@pytest.mark.parametrize("release,stripped", sorted(REAL_KEYS))
def test_fake_pickles_what_real_train_py_pickles(tmp_path, release, stripped):
    fake = _globals(make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=5, release=release,
                                           stripped=stripped))
    assert fake - _values(fake) == NN | YOLOV5 | {"models.yolo Detect", MODEL_CLASS[release]}
    real = REAL_FILE.get((release, stripped))
    real_globals = _globals(YOLOV5_DATA / real) if real else None
    assert _values(fake) == (_values(real_globals) if real else V7_TRAIN_FORMAT)
    if (release, stripped) == ("v6.0", True):
        assert fake == real_globals


@pytest.mark.parametrize("release,stripped", sorted(REAL_KEYS))
def test_real_layouts_load(tmp_path, release, stripped):
    path = make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=5, release=release, stripped=stripped)
    raw = read_pickle(path)  # the fake's classes exist only while it writes
    assert list(raw) == REAL_KEYS[release, stripped]
    if stripped:  # v5.0's train-format file orders its keys as v5.0 does
        assert list(read_pickle(YOLOV5_DATA / REAL_FILE[release, stripped])) == list(raw)
    lm = load_checkpoint(path)
    assert lm.info["key"] == ("model" if stripped else "ema")
    assert lm.info["epoch"] == (-1 if stripped else 41)
    assert ("date" in lm.info) == (release == "v7.0")
    assert lm.names == [f"class{i}" for i in range(5)] and lm.stride == [8, 16, 32]
