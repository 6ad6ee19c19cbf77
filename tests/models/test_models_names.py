"""Class names for a checkpoint that has none (a plain state_dict) or the wrong ones: a list, a
YOLOv5 data yaml, a text file with one name per line, or a comma-separated list."""

from __future__ import annotations

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yolov5_fake import build_model, make_yolov5_checkpoint

from s2trt.errors import S2Error
from s2trt.meta import read_names
from s2trt.models import load_checkpoint

NAMES = ["person", "bicycle", "no", "7"]


@pytest.fixture(scope="module")
def state_dict(tmp_path_factory):
    path = tmp_path_factory.mktemp("sd") / "sd.pt"
    torch.save(build_model("yolov5n-s2", nc=4).state_dict(), path)
    return path


# The two layouts of YOLOv5's data yamls: a list (v5.0-v6.x), a dict by index (v7.0).
DATA_V6 = "path: ../datasets/x\ntrain: images/train\nnc: 4\nnames: ['person', 'bicycle', 'no', 7]\n"
DATA_V7 = "path: x\ntrain: a\nval: b\nnames:\n  0: person\n  1: bicycle\n  2: 'no'\n  3: 7\n"


@pytest.mark.parametrize("content", [DATA_V6, DATA_V7], ids=["v6-list", "v7-dict"])
def test_state_dict_names_from_a_data_yaml(tmp_path, state_dict, content):
    data = tmp_path / "data.yaml"
    data.write_text(content)
    lm = load_checkpoint(state_dict, cfg="yolov5n-s2", names=data)
    assert lm.names == NAMES and lm.model.names == NAMES


def test_state_dict_names_from_a_list_text_file_or_commas(tmp_path, state_dict):
    assert load_checkpoint(state_dict, cfg="yolov5n-s2", names=NAMES).names == NAMES
    txt = tmp_path / "classes.txt"
    txt.write_text("person\nbicycle\n\nno\n7\n")
    assert load_checkpoint(state_dict, cfg="yolov5n-s2", names=str(txt)).names == NAMES
    assert load_checkpoint(state_dict, cfg="yolov5n-s2", names="person, bicycle,no,7").names == NAMES


def test_state_dict_without_names_is_numbered(state_dict):
    assert load_checkpoint(state_dict, cfg="yolov5n-s2").names == ["0", "1", "2", "3"]


def test_names_replace_a_checkpoints_own(tmp_path):
    path = make_yolov5_checkpoint(tmp_path, "yolov5n-s2", nc=4)
    assert load_checkpoint(path).names[0] == "class0"
    assert load_checkpoint(path, names=NAMES).names == NAMES


@pytest.mark.parametrize("names,words", [
    (["a", "b"], "2 class names given for a model of 4 classes"),
    ("a,b,c,d,e", "5 class names given"),
    ("a,,c,d", "class 1 is ''"),
    ("missing.yaml", "file not found"),
])
def test_wrong_names_are_one_error(state_dict, names, words):
    with pytest.raises(S2Error, match=words):
        load_checkpoint(state_dict, cfg="yolov5n-s2", names=names)


@pytest.mark.parametrize("content,words", [
    ("nc: 3\nnames: [a, b, c, d]\n", "nc: 3 but lists 4 names"),
    ("names: [a, b, no, d]\n", "class 2 is False \\(quote it"),
    ("names:\n  1: a\n  2: b\n", "indexed 0..1"),
    ("train: x\n", "no 'names:' entry"),
    ("names: {a: [\n", "not valid YAML"),
    ("names: 5\n", "not a list"),
])
def test_bad_data_yaml_is_one_error(tmp_path, content, words):
    data = tmp_path / "data.yaml"
    data.write_text(content)
    with pytest.raises(S2Error, match=words):
        read_names(data)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.integers(-1, 4) | st.text(max_size=3), inner, max_size=4),
    max_leaves=10)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({}, optional={"names": yaml_values | st.lists(st.text(max_size=5)),
                                           "nc": yaml_values, "path": yaml_values}) | yaml_values)
def test_any_data_yaml_gives_names_or_one_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("data") / "data.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        names = read_names(path)
    except S2Error as e:
        assert "\n" not in str(e)
        return
    assert names and all(isinstance(n, str) and n.strip() for n in names)
    if isinstance(data, dict) and data.get("nc") is not None:
        assert data["nc"] == len(names)
