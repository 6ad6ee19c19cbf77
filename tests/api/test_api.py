"""s2trt.Detector: the same records as s2infer (byte for byte), the same errors, PyTorch's boxes, and a
stream that stops cleanly. The models are runtime_support's tiny ones (ONNX and checkpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import DATA, REPO
from runtime_support import IMGSZ, NAMES, scene, tiny_models, write_video
from stream_fixtures import TsServer, make_clip, needs_ffmpeg

import s2trt
from s2trt.detect.letterbox import letterbox_geometry
from s2trt.errors import S2Error
from s2trt.runtime.cli import main as s2infer_main

CONF = 0.7  # the tiny model's scores spread over 0..1: a readable number of boxes


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    return tiny_models()["onnx"]


@pytest.fixture(scope="module")
def det(onnx_path):
    with s2trt.Detector(onnx_path, device="cpu", conf_thres=CONF) as d:
        yield d


def s2infer(tmp_path: Path, *argv: object) -> list[str]:
    """The JSON Lines s2infer writes for the sources, as text lines."""
    out = tmp_path / f"s2infer-{time.monotonic_ns()}.jsonl"
    assert s2infer_main(["--onnx", str(tiny_models()["onnx"]), "--device", "cpu", "--conf-thres", str(CONF),
                         "--no-save", "--save-json", str(out), "-q", *map(str, argv)]) == 0
    return out.read_text().splitlines()


def images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(n):  # different sizes: letterbox ratios and pads differ per image
        p = folder / f"im{i}.png"
        cv2.imwrite(str(p), scene(i * 13, 240 - 40 * i, 320 + 48 * i))
        paths.append(p)
    return paths


def test_images_give_the_records_s2infer_writes(tmp_path, det):
    paths = images(tmp_path / "imgs")
    want = s2infer(tmp_path, tmp_path / "imgs")
    results = det(tmp_path / "imgs")
    assert [r.to_json() for r in results] == want
    assert sum(len(r) for r in results) > 3  # boxes to compare, not empty records
    # The same frames as arrays: the same detections (the record names the source "array").
    for r, line, p in zip(det([cv2.imread(str(p)) for p in paths]), want, paths, strict=True):
        rec, got = json.loads(line), json.loads(r.to_json())
        assert (got.pop("source"), rec.pop("source")) == ("array", str(p))
        assert (got.pop("frame"), rec.pop("frame")) == (paths.index(p), 0)  # its place in the call
        assert got == rec
        assert r.names == rec["names"] and r.class_ids.tolist() == rec["class_ids"]


def test_stream_of_a_video_gives_the_records_s2infer_writes_in_order(tmp_path, onnx_path):
    video = write_video(tmp_path / "clip.mp4", 14)
    want = s2infer(tmp_path, video, "--batch", "3")
    with s2trt.Detector(onnx_path, device="cpu", conf_thres=CONF, batch=3) as d:
        got = [r.to_json() for r in d.stream(video)]
    assert got == want and len(got) == 14


def test_several_sources_stream_as_in_s2infer(tmp_path, det):
    a, b = write_video(tmp_path / "a.mp4", 9), write_video(tmp_path / "b.mp4", 6, 200, 300)
    want = s2infer(tmp_path, a, b)
    with det.stream([a, b]) as s:
        got = [r.to_json() for r in s]
        assert {row.source: row.frames for row in s.sources} == {str(a): 9, str(b): 6}
    # Interleaved by the reader threads: per source, in order, and the same records.
    assert sorted(got) == sorted(want)
    for src in (a, b):
        frames = [json.loads(x)["frame"] for x in got if json.loads(x)["source"] == str(src)]
        assert frames == sorted(frames)


@needs_ffmpeg
@pytest.mark.slow
def test_a_live_stream_keeps_the_newest_frame_and_reconnects(tmp_path, det):
    clip = make_clip(tmp_path / "clip.ts", seconds=2.0)
    with TsServer(clip) as server, det.stream(server.url, stream_timeout=2, reconnect_timeout=30) as s:
        for n, r in enumerate(s, 1):
            assert (r.kind, r.source) == ("stream", server.url) and r.image.shape == (120, 160, 3)
            if n <= 5:
                time.sleep(0.2)  # a slow consumer: the stream runs on, older frames are replaced
            if n == 8:
                server.kill()  # the camera goes away and comes back
                server.start()
            if n == 40:
                break
        (row,) = s.sources
        assert row.dropped > 0 and row.reconnects >= 1 and row.kind == "stream"


def test_results_carry_the_boxes_and_facts_of_their_frame(det):
    frame = scene(3, 200, 352)
    before = frame.copy()
    (r,) = det(frame)
    assert r.boxes.shape == (len(r), 4) and r.boxes.dtype == np.float32
    assert r.scores.shape == (len(r),) and (r.scores > CONF).all()
    assert r.class_ids.dtype == np.int64 and r.names == [NAMES[c] for c in r.class_ids]
    assert (r.boxes[:, [0, 2]] <= 352).all() and (r.boxes[:, [1, 3]] <= 200).all()  # frame pixels
    ratio, _, pad = letterbox_geometry((200, 352), IMGSZ)
    assert (r.letterbox.ratio, r.letterbox.pad, r.letterbox.orig_shape) == (ratio, pad, (200, 352))
    assert set(r.timing) == {"decode", "preprocess", "infer", "postprocess"} and r.timing["infer"] > 0
    assert r.masks is None  # a detection model
    drawn = r.plot()
    assert np.array_equal(frame, before) and not np.array_equal(drawn, frame)  # a copy, with boxes


def test_plot_is_the_frame_s2infer_saves(tmp_path, onnx_path, det):
    src = tmp_path / "one.png"
    cv2.imwrite(str(src), scene(20))
    out = tmp_path / "annotated.png"
    assert s2infer_main(["--onnx", str(onnx_path), "--device", "cpu", "--conf-thres", str(CONF), str(src),
                         "-o", str(out), "-q"]) == 0
    (r,) = det(src)
    assert len(r) and np.array_equal(r.plot(), cv2.imread(str(out)))


def test_batches_and_single_frames_give_the_same_results(onnx_path):
    frames = [scene(i * 5) for i in range(5)]
    with s2trt.Detector(onnx_path, device="cpu", conf_thres=CONF, batch=4) as batched, \
            s2trt.Detector(onnx_path, device="cpu", conf_thres=CONF) as single:
        together = batched(np.stack(frames))
        alone = [single(f)[0] for f in frames]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.detections, b.detections, atol=1e-3)


def matched(a: np.ndarray, b: np.ndarray, atol: float = 1.0, unmatched: float = 0.05) -> int:
    """Pairs of detections of one class whose coordinates are within atol px and scores within 1e-3;
    a fraction `unmatched` may stay unpaired (the random-weight model puts boxes right on NMS and
    threshold decisions, which 1e-5 between two frameworks can flip)."""
    dist = np.abs(a[:, None, :4] - b[None, :, :4]).max(2)
    dist[(a[:, None, 5] != b[None, :, 5]) | (np.abs(a[:, None, 4] - b[None, :, 4]) > 1e-3)] = np.inf
    used: set[int] = set()
    for row in dist:
        free = [j for j in np.argsort(row) if row[j] <= atol and j not in used]
        if free:
            used.add(free[0])
    limit = int(unmatched * max(len(a), len(b)))
    assert len(a) - len(used) <= limit and len(b) - len(used) <= limit, (len(a), len(b), len(used))
    return len(used)


def test_onnx_and_checkpoint_detectors_agree(det):
    """The checkpoint runs in PyTorch, the ONNX file in ONNX Runtime: an independent reference."""
    frames = [scene(i * 11) for i in range(3)]
    with s2trt.Detector(tiny_models()["pt"], device="cpu", conf_thres=CONF, imgsz=IMGSZ) as torch_det:
        assert torch_det.names == det.names == NAMES
        for a, b in zip(det(frames), torch_det(frames), strict=True):
            assert matched(a.detections, b.detections) > 3


@pytest.mark.parametrize(("options", "argv"), [
    ({"conf_thres": 1.5}, ["--conf-thres", "1.5"]),
    ({"max_det": 0}, ["--max-det", "0"]),
    ({"batch": 0}, ["--batch", "0"]),
])
def test_bad_options_are_s2infer_messages(tmp_path, onnx_path, capsys, options, argv):
    with pytest.raises(S2Error) as e:
        s2trt.Detector(onnx_path, **options)
    with pytest.raises(SystemExit) as exit_:
        s2infer_main(["--onnx", str(onnx_path), str(tmp_path), *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"s2infer: error: {e.value}")


def test_model_errors_are_s2infer_messages(tmp_path, onnx_path, capsys):
    frame = tmp_path / "f.png"
    cv2.imwrite(str(frame), scene(0))
    for options, argv in [({"classes": [9]}, ["--classes", "9"]), ({"imgsz": 320}, ["--imgsz", "320"])]:
        with pytest.raises(S2Error) as e:
            s2trt.Detector(onnx_path, **options)
        assert s2infer_main(["--onnx", str(onnx_path), str(frame), "--no-save", *argv]) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"s2infer: error: {e.value}"
    missing = tmp_path / "missing.onnx"
    with pytest.raises(S2Error) as e:
        s2trt.Detector(missing)
    assert s2infer_main(["--onnx", str(missing), str(frame), "--no-save"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"s2infer: error: {e.value}"


def test_triton_servers_are_named_by_a_url(tmp_path, capsys):
    from s2trt.runtime.model import ModelRef

    assert ModelRef.parse("triton://a:8001,b:8001") == ModelRef("triton", "a:8001,b:8001")
    frame = tmp_path / "f.png"
    cv2.imwrite(str(frame), scene(0))
    with pytest.raises(S2Error) as e:  # port 9 (discard): nothing answers there
        s2trt.Detector("triton://127.0.0.1:9")
    assert s2infer_main(["--triton", "127.0.0.1:9", str(frame), "--no-save"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"s2infer: error: {e.value}"
    assert "127.0.0.1:9" in str(e.value)


def test_what_det_refuses(tmp_path, det):
    video = write_video(tmp_path / "v.mp4", 3)
    with pytest.raises(S2Error, match=r"v\.mp4 is a video: videos, cameras and streams go through "
                                      r"Detector\.stream\(\)"):
        det(video)
    with pytest.raises(S2Error, match=r"camera 0: cameras and streams go through Detector\.stream\(\)"):
        det(0)
    with pytest.raises(S2Error, match="frame 1 is not a BGR uint8 image"):
        det([scene(0), np.zeros((8, 8), np.float32)])
    with pytest.raises(S2Error, match="cannot tell what kind of model"):
        s2trt.Detector(tmp_path / "model.bin")
    with pytest.raises(S2Error, match="source not found"):
        det.stream(tmp_path / "nothing.mp4")


def test_breaking_out_of_a_stream_ends_its_threads(tmp_path, det):
    a, b = write_video(tmp_path / "a.mp4", 200), write_video(tmp_path / "b.mp4", 200)
    before = set(threading.enumerate())
    s = det.stream([a, b])
    for i, _ in enumerate(s):
        if i == 4:
            break
    assert set(threading.enumerate()) - before  # the readers and the pipeline's stages run
    with pytest.raises(S2Error, match="running a stream in this thread"):
        det(scene(0))  # the stream holds the Detector until it is closed
    s.close()
    assert not set(threading.enumerate()) - before
    assert s.stats.frames < 400 and next(iter(s), None) is None  # stopped, not run to the end
    assert len(det(scene(0))) >= 0  # the Detector is free again
    with det.stream(a) as s2:
        next(s2)
    assert not set(threading.enumerate()) - before


def test_calls_from_several_threads_take_turns(det):
    frames = [scene(i * 3) for i in range(4)]
    want = [r.detections for r in det(frames)]
    got: list[list[np.ndarray]] = []

    def work() -> None:
        got.append([r.detections for r in det(frames)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4
    for g in got:
        for a, b in zip(g, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_closed_detector_refuses_calls(onnx_path):
    d = s2trt.Detector(onnx_path, device="cpu")
    d.close()
    d.close()
    with pytest.raises(S2Error, match="closed"):
        d(scene(0))


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          timeout=120).stdout.strip()


def test_import_s2trt_loads_no_heavy_module():
    heavy = ("torch", "onnxruntime", "cv2", "numpy", "tensorrt", "tritonclient")
    out = run_python(f"import sys, s2trt; print([m for m in {heavy!r} if m in sys.modules])")
    assert out == "[]"


def test_an_onnx_detector_never_imports_torch(onnx_path):
    out = run_python("import sys, numpy as np, s2trt\n"
                     f"d = s2trt.Detector({str(onnx_path)!r}, device='cpu')\n"
                     "d(np.zeros((64, 64, 3), np.uint8))\n"
                     "print('torch' in sys.modules)")
    assert out == "False"


def test_the_api_names_are_lazy_attributes_of_the_package():
    from s2trt.export.api import export_model
    from s2trt.runtime.api import Detector

    assert s2trt.Detector is Detector and s2trt.export_model is export_model
    assert {"Detector", "Result", "Stream", "export_model", "ExportResult"} <= set(dir(s2trt))
    with pytest.raises(AttributeError):
        s2trt.Nothing  # noqa: B018


def test_the_package_ships_its_type_hints():
    """PEP 561: py.typed beside the package's __init__, and in its package data (so in the wheel)."""
    import tomllib

    root = REPO
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder = root / setup["package-dir"]["s2trt"]
    assert (folder / "py.typed").is_file() and (folder / "__init__.py").is_file()
    assert "py.typed" in setup["package-data"]["s2trt"]


def test_a_segmentation_model_gives_s2infers_masks_record_and_drawing(tmp_path):
    """v7.0's yolov5s-seg checkpoint of tests/data/yolov5 (random weights: a low threshold gives it
    detections), exported here; its masks, record and drawing are s2infer's."""
    import shutil

    shutil.copy(DATA / "yolov5" / "v7.0" / "yolov5s-seg.pt", tmp_path / "seg.pt")
    assert s2trt.export_model(tmp_path / "seg.pt", imgsz=(64, 96), dynamic=True, no_plugin=True,
                              onnx_only=True).onnx == tmp_path / "seg.onnx"
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), cv2.resize(scene(4), (150, 97)))
    out, jsonl = tmp_path / "drawn.png", tmp_path / "seg.jsonl"
    assert s2infer_main(["--onnx", str(tmp_path / "seg.onnx"), str(frame), "--conf-thres", "0.001", "-o",
                         str(out), "--save-json", str(jsonl), "-q"]) == 0
    with s2trt.Detector(tmp_path / "seg.onnx", conf_thres=0.001) as seg:
        (r,) = seg(frame)
    assert len(r) >= 3 and r.to_json() == jsonl.read_text().strip()
    assert np.array_equal(r.plot(), cv2.imread(str(out)))
    assert r.masks.shape == (len(r), 97, 150) and r.masks.dtype == bool and r.masks.any()
    for m, window in zip(r.masks, r.instance_masks, strict=True):  # each mask is its window, placed
        h, w = window.bits.shape
        inside = m[window.y:window.y + h, window.x:window.x + w]
        assert m.sum() == window.bits.sum() == inside.sum()
