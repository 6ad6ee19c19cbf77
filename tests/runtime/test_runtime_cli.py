"""s2infer end to end on generated videos and images: outputs, JSONL schema, bad input, Ctrl-C, memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_support import (
    IMGSZ,
    NAMES,
    count_frames,
    partial_text,
    scene,
    signal_mid_run,
    tiny_models,
    write_video,
)

from s2trt.detect.boxes import postprocess, scale_boxes
from s2trt.detect.letterbox import preprocess
from s2trt.detect.options import DetectOptions
from s2trt.runtime.backends.ort import OrtBackend
from s2trt.runtime.cli import main

CONF = "0.7"  # the tiny model's scores spread over 0..1: keep a readable number of boxes


@pytest.fixture(scope="module")
def onnx_path():
    return tiny_models()["onnx"]


def run(tmp_path, *argv):
    return main(["--onnx", str(tiny_models()["onnx"]), "--conf-thres", CONF, "--project",
                 str(tmp_path / "runs"), "-q", *map(str, argv)])


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_video_gives_playable_mp4_and_one_json_line_per_frame(tmp_path, onnx_path):
    video = write_video(tmp_path / "clip.mp4", 24)
    assert run(tmp_path, video, "--save-json", "--batch", "3") == 0
    out = tmp_path / "runs" / "exp"
    assert count_frames(out / "clip.mp4") == 24
    recs = read_jsonl(out / "predictions.jsonl")
    assert [r["frame"] for r in recs] == list(range(24))
    assert not list(out.glob(".*partial*"))
    # Every record equals the detections computed directly, frame by frame (order and content).
    backend = OrtBackend(onnx_path, device="cpu")
    cap = cv2.VideoCapture(str(video))
    for rec in recs:
        ok, img = cap.read()
        assert ok
        x, (info,) = preprocess([img], IMGSZ)
        want = scale_boxes(postprocess(backend.infer(x), DetectOptions(float(CONF)))[0], info)
        assert set(rec) == {"source", "frame", "pts", "wall", "width", "height", "boxes", "scores",
                            "class_ids", "names"}
        assert (rec["width"], rec["height"], rec["source"]) == (320, 240, str(video))
        np.testing.assert_allclose(np.array(rec["boxes"]).reshape(-1, 4), want[:, :4], atol=0.02)
        np.testing.assert_allclose(rec["scores"], want[:, 4], atol=2e-4)
        assert rec["class_ids"] == want[:, 5].astype(int).tolist()
        assert rec["names"] == [NAMES[c] for c in rec["class_ids"]]
    assert sum(len(r["boxes"]) for r in recs) > 24


def test_pipelined_and_sequential_give_the_same_results(tmp_path):
    video = write_video(tmp_path / "v.mp4", 12)
    assert run(tmp_path, video, "--no-save", "--save-json", tmp_path / "a.jsonl") == 0
    assert run(tmp_path, video, "--no-save", "--save-json", tmp_path / "b.jsonl", "--sequential") == 0
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl")
    assert not (tmp_path / "runs").exists()  # --no-save with an explicit JSONL path creates no folder


def test_image_folder_with_an_unreadable_image(tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"im{i}.jpg"), scene(i * 5, 200 + 40 * i, 300))
    (src / "im1.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (src / "notes.txt").write_text("ignored")
    assert main(["--onnx", str(tiny_models()["onnx"]), str(src), "--project", str(tmp_path / "runs"),
                 "--save-json"]) == 0
    err = capsys.readouterr().err
    assert "im1.jpg: not a readable image, skipped" in err
    out = tmp_path / "runs" / "exp"
    assert sorted(p.name for p in out.iterdir()) == ["im0.jpg", "im2.jpg", "predictions.jsonl"]
    assert cv2.imread(str(out / "im2.jpg")).shape == (280, 300, 3)
    assert [r["source"][-7:] for r in read_jsonl(out / "predictions.jsonl")] == ["im0.jpg", "im2.jpg"]


def test_images_opencv_reads_but_cannot_write_are_saved_as_jpg(tmp_path):
    """A camera's .mpo (JPEG-based) reads fine, but imwrite has no .mpo writer: save it as .jpg."""
    src = tmp_path / "imgs"
    src.mkdir()
    _, jpeg = cv2.imencode(".jpg", scene(3, 240, 320))
    (src / "photo.mpo").write_bytes(jpeg.tobytes())
    cv2.imwrite(str(src / "plain.png"), scene(4, 240, 320))
    assert main(["--onnx", str(tiny_models()["onnx"]), str(src), "--project", str(tmp_path / "runs")]) == 0
    out = tmp_path / "runs" / "exp"
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "plain.png"]
    assert cv2.imread(str(out / "photo.jpg")).shape == (240, 320, 3)


def mjpg_video(path, frames=40):
    return write_video(path, frames, fourcc="MJPG")


def test_truncated_video_is_processed_up_to_the_cut(tmp_path, capsys):
    video = mjpg_video(tmp_path / "full.avi")
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert run(tmp_path, cut, "--save-json") == 0
    err = capsys.readouterr().err
    assert "cut.avi: the video ends at frame" in err and "of 40 (truncated?)" in err
    out = tmp_path / "runs" / "exp"
    n = len(read_jsonl(out / "predictions.jsonl"))
    assert 10 < n < 40 and count_frames(out / "cut.mp4") == n


def test_unreadable_frame_in_the_middle_is_skipped_and_reported(tmp_path, capsys):
    video = mjpg_video(tmp_path / "full.avi")
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == 40
    data[starts[20]:starts[20] + 3000] = bytes(3000)  # wipe frame 20's JPEG header and first scans
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    assert run(tmp_path, bad, "--no-save", "--save-json", tmp_path / "p.jsonl") == 0
    assert "bad.avi: frame 20 could not be decoded, skipped" in capsys.readouterr().err
    frames = [r["frame"] for r in read_jsonl(tmp_path / "p.jsonl")]
    assert frames == [i for i in range(40) if i != 20]


@pytest.mark.parametrize("case, message", [
    ("missing", "source not found"),
    ("garbage_video", "cannot open video"),
    ("camera", "camera 97 could not be opened"),
    ("empty_folder", "holds no images or videos"),
    ("stream", "cannot open stream rtsp://127.0.0.1:9/cam"),
])
def test_bad_sources_fail_with_one_line(tmp_path, capsys, case, message):
    src = {"missing": tmp_path / "nope.mp4", "garbage_video": tmp_path / "g.mp4", "camera": "97",
           "empty_folder": tmp_path / "empty", "stream": "rtsp://127.0.0.1:9/cam"}[case]
    (tmp_path / "g.mp4").write_bytes(os.urandom(5000))
    (tmp_path / "empty").mkdir()
    assert run(tmp_path, src) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("s2infer: error: ") and message in err[-1]
    assert "Traceback" not in "".join(err)


def test_model_problems_fail_with_one_line(tmp_path, capsys):
    import onnx

    video = write_video(tmp_path / "v.mp4", 2)
    m = onnx.load(str(tiny_models()["onnx"]))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "foreign.onnx"))
    assert main(["--onnx", str(tmp_path / "foreign.onnx"), str(video)]) == 1
    assert "was not exported by s2trt" in capsys.readouterr().err
    assert run(tmp_path, video, "--imgsz", "640") == 1
    assert "--imgsz 640 640 does not match the model, whose input is 128x160" in capsys.readouterr().err
    assert run(tmp_path, video, "--classes", "7") == 1
    assert "the model has 5 classes" in capsys.readouterr().err
    assert main(["--engine", str(tmp_path / "none.engine"), str(video)]) == 1


def test_output_file_filters_and_max_det(tmp_path):
    video = write_video(tmp_path / "v.mp4", 6)
    out = tmp_path / "out" / "annotated.mp4"
    assert run(tmp_path, video, "-o", out, "--save-json", "--classes", "1", "3", "--max-det", "2") == 0
    assert count_frames(out) == 6
    recs = read_jsonl(out.with_suffix(".jsonl"))
    assert len(recs) == 6 and all(len(r["boxes"]) <= 2 for r in recs)
    assert {c for r in recs for c in r["class_ids"]} <= {1, 3}
    assert any(r["boxes"] for r in recs)


def test_runs_folder_increments_like_yolov5(tmp_path):
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), scene(0))
    for _ in range(3):
        assert run(tmp_path, img) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp", "exp2", "exp3"]


def sigint_ignored() -> bool:
    # A process started with SIGINT ignored (`nohup`, `cmd &` in a script) passes that on: Python then
    # installs no KeyboardInterrupt handler in s2infer, and Ctrl-C cannot be tested.
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


@pytest.mark.skipif(sigint_ignored(), reason="SIGINT is ignored in this process (started with nohup or "
                    "in the background?), so s2infer would inherit that and Ctrl-C could not reach it")
def test_ctrl_c_leaves_playable_video_and_valid_jsonl(tmp_path):
    video = write_video(tmp_path / "long.mp4", 400)
    out = tmp_path / "o"
    cmd = [sys.executable, "-c", "import sys; from s2trt.runtime.cli import main; sys.exit(main())",
           "--onnx", str(tiny_models()["onnx"]), str(video), "-o", str(out), "--save-json",
           "--conf-thres", CONF]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signal_mid_run(proc, lambda: len(partial_text(out, "predictions.jsonl")) > 2000, signal.SIGINT, 60)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "s2infer: interrupted" in err and "Traceback" not in err
    recs = read_jsonl(out / "predictions.jsonl")  # every line parses
    assert 0 < len(recs) < 400
    assert [r["frame"] for r in recs] == list(range(len(recs)))
    assert count_frames(out / "long.mp4") == len(recs)
    assert not list(out.glob(".*partial*"))


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat_on_a_long_video(tmp_path):
    from s2trt.runtime.inputs.sources import open_source
    from s2trt.runtime.outputs.sinks import Sinks
    from s2trt.runtime.pipeline import DetectOptions, Runner

    video = write_video(tmp_path / "long.mp4", 900, 360, 640)
    backend = OrtBackend(tiny_models()["onnx"], device="cpu")
    sinks = Sinks(NAMES, tmp_path, None, True, tmp_path / "p.jsonl", False)
    samples = []

    def sample(n):
        samples.append(rss_mb())

    Runner(backend, open_source(str(video)), sinks, DetectOptions(0.7), batch=2,
           on_frames=sample).run()
    sinks.close()
    assert len(samples) == 450
    warm, end = np.median(samples[50:100]), np.median(samples[-50:])
    # Queues hold at most 4 + 4 batches; growth would be a leak of frames or results (~0.7 MB each).
    print(f"RSS {warm:.1f} MB after 100 frames, {end:.1f} MB after 900")
    assert end - warm < 15, f"RSS grew from {warm:.0f} MB to {end:.0f} MB over 800 frames"
    assert count_frames(tmp_path / "long.mp4") == 900


def test_annotate_draws_boxes_and_labels_where_the_detections_are():
    from s2trt.runtime.outputs.sinks import PALETTE, annotate

    img = np.zeros((200, 300, 3), np.uint8)
    det = np.array([[50, 80, 150, 180, 0.9, 2]], np.float32)
    out = annotate(img, det, NAMES, line_width=2)
    assert img.max() == 0  # a copy unless inplace
    assert tuple(out[130, 50]) == PALETTE[2] and tuple(out[180, 100]) == PALETTE[2]  # box edges
    assert out[100:160, 60:140].max() == 0  # inside the box untouched
    assert out[60:78, 50:120].any()  # the label sits above the box
    assert annotate(img, det, NAMES, inplace=True) is img and img.any()


def test_triton_keeps_several_requests_in_flight_by_default():
    from s2trt.runtime.cli import parse
    from s2trt.runtime.model import TRITON_BATCH
    from s2trt.runtime.request import requested_batch

    def batch(*argv: str) -> int | None:
        req = parse([*argv, "v.mp4"]).request
        return requested_batch(req.batch, req.model)

    assert batch("--triton", "localhost:8001") == TRITON_BATCH > 1
    assert batch("--onnx", "m.onnx") is None  # one frame per camera and stream: plan_batch's default
    assert batch("--triton", "localhost:8001", "--batch", "2") == 2


def test_one_pixel_thin_images_are_processed_and_do_not_stop_the_folder(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), scene(1))
    cv2.imwrite(str(src / "b_wide.png"), np.full((1, 5000, 3), 90, np.uint8))
    cv2.imwrite(str(src / "c_tall.png"), np.full((5000, 1, 3), 90, np.uint8))
    cv2.imwrite(str(src / "d.png"), scene(2))
    assert run(tmp_path, src, "--save-json") == 0
    out = tmp_path / "runs" / "exp"
    recs = read_jsonl(out / "predictions.jsonl")
    assert [Path(r["source"]).name for r in recs] == ["a.png", "b_wide.png", "c_tall.png", "d.png"]
    assert [(r["width"], r["height"]) for r in recs] == [(320, 240), (5000, 1), (1, 5000), (320, 240)]
    for r in recs:  # boxes lie inside their frame
        for x1, y1, x2, y2 in r["boxes"]:
            assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"]
    assert cv2.imread(str(out / "b_wide.png")).shape == (1, 5000, 3)
    assert cv2.imread(str(out / "c_tall.png")).shape == (5000, 1, 3)


def test_summary_counts_detections_and_warns_when_there_are_none(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", 5)
    args = ["--onnx", str(tiny_models()["onnx"]), str(video), "--no-save", "--save-json"]
    assert main([*args, str(tmp_path / "a.jsonl"), "--conf-thres", CONF]) == 0
    n = sum(len(r["boxes"]) for r in read_jsonl(tmp_path / "a.jsonl"))
    err = capsys.readouterr().err
    assert n > 0 and f"5 frames, {n} detections in " in err and "no detections" not in err
    assert main([*args, str(tmp_path / "b.jsonl"), "--conf-thres", "1.0"]) == 0
    err = capsys.readouterr().err
    assert "5 frames, 0 detections in " in err and "no detections in 5 frame(s) above --conf-thres 1" in err


def test_half_with_an_exported_model_says_it_does_nothing(tmp_path, capsys):
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), scene(0))
    assert run(tmp_path, img, "--half") == 0
    assert ("--half does nothing with --onnx: the precision of an exported model is fixed at export"
            in capsys.readouterr().err)


def test_an_image_its_output_format_cannot_hold_is_not_saved_and_the_rest_go_on(tmp_path, capsys):
    """A .pfm is saved as .jpg, and JPEG holds at most 65500 pixels a side."""
    src = tmp_path / "imgs"
    src.mkdir()
    cv2.imwrite(str(src / "a.jpg"), scene(1))
    assert cv2.imwrite(str(src / "b.pfm"), np.full((1, 70000, 3), 0.5, np.float32))
    cv2.imwrite(str(src / "c.jpg"), scene(2))
    assert run(tmp_path, src, "--save-json") == 0
    out = tmp_path / "runs" / "exp"
    assert "b.jpg: .jpg cannot hold a 70000x1 image, not saved" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "c.jpg", "predictions.jsonl"]
    assert [Path(r["source"]).name for r in read_jsonl(out / "predictions.jsonl")] == ["a.jpg", "b.pfm",
                                                                                        "c.jpg"]


@pytest.mark.parametrize("glob", [False, True])
def test_one_output_file_for_a_folder_of_images_is_a_usage_error(tmp_path, capsys, glob):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f"{i}.jpg"), scene(i))
    out = tmp_path / "out.mp4"
    assert run(tmp_path, src / "*.jpg" if glob else src, "-o", out) == 2
    assert "names one file, but 2 inputs give a file each: name a folder" in capsys.readouterr().err
    assert not out.exists()
