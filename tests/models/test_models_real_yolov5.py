"""The fake YOLOv5 checkpoints against what the real v6.0 and v7.0 train.py pickle.

The facts below were read from checkpoints that the yolov5 repository itself wrote (tags v6.0 and
v7.0, `train.py --cfg yolov5s-s2.yaml` with an S2Attention added to their models/common.py and
parse_model, torch 2.13 CPU, NumPy 1.23.5 and 2.2.6; train-format `epochN.pt` from --save-period,
`best.pt` after strip_optimizer()). s2export loaded every one of them without the yolov5 repo and its
ONNX output matched their own model's forward within 1e-4 absolute. Their code cannot be in this
repository, so these tests pin the pickle layout the fake must reproduce for the loader tests to
mean anything.
"""

from __future__ import annotations

import pickletools
import zipfile

import pytest
from yolov5_fake import make_yolov5_checkpoint

from s2trt.models import load_checkpoint
from s2trt.models.checkpoint import read_pickle

# Globals of the real pickles other than yolov5's and torch.nn's classes; NumPy 2 writes
# `numpy._core.multiarray` where NumPy 1 writes `numpy.core.multiarray`.
_TENSORS = {"__builtin__ set", "collections OrderedDict", "torch FloatStorage", "torch HalfStorage",
            "torch LongStorage", "torch._utils _rebuild_parameter", "torch._utils _rebuild_tensor_v2"}
_ARRAY = {"_codecs encode", "numpy dtype", "numpy ndarray", "numpy.core.multiarray _reconstruct"}
_SCALAR = {"numpy.core.multiarray scalar"}  # the optimizer's momentum, a numpy.float64
REAL_GLOBALS = {
    # v6.0: best_fitness stays an array after stripping; class_weights is float64
    ("v6.0", False): _TENSORS | _ARRAY | _SCALAR | {"torch DoubleStorage"},
    ("v6.0", True): _TENSORS | _ARRAY | {"torch DoubleStorage"},
    # v7.0: best_fitness is an array once an epoch scored above zero (until then the float 0.0)
    ("v7.0", False): _TENSORS | _ARRAY | _SCALAR,
    ("v7.0", True): _TENSORS,  # strip_optimizer() sets best_fitness to None as well
}
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
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = list(pickletools.genops(data))
    assert ops[0][1] == 2  # torch.save's protocol, as in the real files
    return {arg.replace("numpy._core.", "numpy.core.") for op, arg, _ in ops if op.name == "GLOBAL"}


@pytest.mark.parametrize("release,stripped", sorted(REAL_GLOBALS))
def test_fake_pickles_what_real_train_py_pickles(tmp_path, release, stripped):
    path = make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=5, release=release, stripped=stripped)
    expected = REAL_GLOBALS[release, stripped] | NN | YOLOV5 | {"models.yolo Detect",
                                                                 MODEL_CLASS[release]}
    assert _globals(path) == expected


@pytest.mark.parametrize("release,stripped", sorted(REAL_KEYS))
def test_real_layouts_load(tmp_path, release, stripped):
    path = make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=5, release=release, stripped=stripped)
    raw = read_pickle(path)  # the fake's classes exist only while it writes
    assert list(raw) == REAL_KEYS[release, stripped]
    lm = load_checkpoint(path)
    assert lm.info["key"] == ("model" if stripped else "ema")
    assert lm.info["epoch"] == (-1 if stripped else 41)
    assert ("date" in lm.info) == (release == "v7.0")
    assert lm.names == [f"class{i}" for i in range(5)] and lm.stride == [8, 16, 32]
