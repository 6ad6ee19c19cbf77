"""Calibration reader: sources, deterministic sampling, the runtime's preprocessing, ORT's protocol."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from calib_helpers import write_dataset, write_images, write_video

from s2trt.calib.data import CalibrationReader, Item, Preprocessing, list_items, open_reader, sample_items
from s2trt.errors import S2Error

PREP = Preprocessing((64, 64))


def test_folder_is_listed_sorted_and_recursively(tmp_path: Path) -> None:
    write_images(tmp_path / "b", 2, prefix="x")
    write_images(tmp_path / "a", 3, seed=1, prefix="y")
    (tmp_path / "notes.txt").write_text("not an image")
    items = list_items(tmp_path)
    paths = [it.path for it in items]
    assert paths == sorted(paths) and len(paths) == 5
    assert all(it.frame is None for it in items)


def test_glob_selects_matching_files(tmp_path: Path) -> None:
    write_images(tmp_path, 4)
    items = list_items(str(tmp_path / "img_00[02]*.png"))
    assert [Path(it.path).name for it in items] == ["img_000.png", "img_002.png"]


def test_sampling_is_seeded_ordered_and_capped() -> None:
    items = [Item(f"{i:03d}.jpg") for i in range(100)]
    a, b, c = sample_items(items, 10, 0), sample_items(items, 10, 0), sample_items(items, 10, 1)
    assert a == b and a != c
    assert len(a) == 10 and len(set(a)) == 10
    assert [it.path for it in a] == sorted(it.path for it in a)  # source order is kept
    assert sample_items(items[:5], 10) == items[:5]
    with pytest.raises(S2Error, match="calib-size"):
        sample_items(items, 0)


def test_video_frames_every_nth_and_spread(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 20)
    assert [it.frame for it in list_items(video, video_step=5)] == [0, 5, 10, 15]
    assert [it.frame for it in list_items(video, size=4)] == [0, 5, 10, 15]  # spread over the clip
    reader = CalibrationReader(list_items(video, video_step=5), Preprocessing((96, 128)), batch=4,
                               progress=False)
    x = reader.get_next()["images"]
    # Frame i is grey level 10*i: the reader must have decoded those exact frames.
    assert np.allclose(x.reshape(4, -1).mean(1) * 255, [0, 50, 100, 150], atol=3)


def test_yaml_split_default_and_explicit(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", {"train": 3, "val": 2})
    assert len(list_items(data)) == 3  # no calib split: train
    assert len(list_items(data, split="val")) == 2
    with pytest.raises(S2Error, match="no 'calib' split"):
        list_items(data, split="calib")


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "not found"),
    (lambda p: p, "holds no images"),
    (lambda p: str(p / "*.jpg"), "no images or videos match"),
    (lambda p: (p / "model.bin").write_bytes(b"x") and p / "model.bin", "is not an image folder"),
])
def test_clear_errors_for_unusable_sources(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(S2Error, match=message):
        list_items(make(tmp_path))


def test_batches_are_the_runtime_preprocessing(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 5)
    reader = open_reader(tmp_path, PREP, size=5, batch=2, progress=False)
    batches = [d["images"] for d in reader]
    assert [len(b) for b in batches] == [2, 2, 1] and len(reader) == 3
    # Independent check on a frame that needs no resize: RGB, CHW, /255, letterboxed rows = 114.
    img = cv2.imread(str(paths[0]))  # 128x128 -> 64x64 is a resize, so build an exact-size one
    exact = tmp_path / "exact"
    exact.mkdir()
    small = cv2.resize(img, (64, 48), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(exact / "e.png"), small)
    x = open_reader(exact, PREP, progress=False).get_next()["images"][0]
    assert x.dtype == np.float32 and x.shape == (3, 64, 64)
    np.testing.assert_allclose(x[:, 8:56], small[..., ::-1].transpose(2, 0, 1) / 255, atol=1e-6)
    np.testing.assert_allclose(x[:, :8], 114 / 255, atol=1e-6)


def test_ort_protocol_rewind_and_ranges(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader

    write_images(tmp_path, 6)
    reader = open_reader(tmp_path, PREP, size=6, batch=2, input_name="x", progress=False)
    assert isinstance(reader, CalibrationDataReader)
    first = [d["x"] for d in reader]
    assert reader.get_next() is None
    reader.rewind()
    again = [d["x"] for d in reader]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    reader.set_range(1, 2)
    chunk = reader.get_next()["x"]
    assert np.array_equal(chunk, first[1]) and reader.get_next() is None


def test_drop_last_keeps_whole_batches_only(tmp_path: Path) -> None:
    write_images(tmp_path, 5)
    reader = open_reader(tmp_path, PREP, size=5, batch=2, progress=False, drop_last=True)
    assert [len(b) for b in reader.batches()] == [2, 2]
    with pytest.raises(S2Error, match="do not fill one batch"):
        open_reader(tmp_path, PREP, size=1, batch=2, progress=False, drop_last=True)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    reader = open_reader(tmp_path, PREP, progress=False)
    with pytest.raises(S2Error, match=r"broken\.jpg"):
        reader.get_next()


def test_preprocessing_from_model_metadata() -> None:
    from s2trt.meta import ModelMeta

    meta = ModelMeta(names=["a"], imgsz=[320, 416], stride=32,
                     letterbox={"pad_value": 0, "auto": False, "scaleup": False})
    prep = Preprocessing.from_meta(meta)
    assert prep == Preprocessing((320, 416), 32, 0, False)
    assert prep.as_dict()["imgsz"] == [320, 416]
