"""Time in the outputs: each JSON Lines record's timestamps (stream and wall clock), and camera and
stream videos that play in real time however many frames inference dropped (filled by repeating the
last annotated frame, timed by the stream's timestamps)."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
from gst_fixtures import needs_gst
from rtsp_fixtures import RtspServer, live, needs_rtsp_server
from runtime_support import NAMES, count_frames, tiny_models, write_video

from s2trt.runtime.inputs.sources import Frame, SourceKind
from s2trt.runtime.outputs.sinks import Sinks, VideoSink, record


def _live_frame(i: float, captured: float) -> Frame:
    return Frame(np.full((48, 64, 3), int(i) % 256, np.uint8), "rtsp://cam/a", int(i), SourceKind.STREAM,
                 25.0, captured=captured, pts=i / 25, wall=1_765_000_000.0 + captured)


def test_a_live_video_plays_in_real_time_whatever_inference_dropped(tmp_path):
    # 2 s of a 25 FPS stream of which inference kept 6 frames: 2 s of video (51 frames), each gap
    # filled with the frame before it.
    sink = VideoSink(tmp_path / "cam.mp4", 25.0, (64, 48))
    kept = [0.0, 0.2, 0.24, 1.0, 1.6, 2.0]
    for k, t in enumerate(kept):
        sink.write(np.full((48, 64, 3), 40 * k, np.uint8), captured=100.0 + t)
    assert sink.close()
    assert count_frames(tmp_path / "cam.mp4") == round(2.0 * 25) + 1
    cap = cv2.VideoCapture(str(tmp_path / "cam.mp4"))
    values = [int(cap.read()[1][24, 32, 0]) for _ in range(51)]
    cap.release()
    want = [40 * max(k for k, t in enumerate(kept) if t <= n / 25 + 1e-9) for n in range(51)]
    assert np.abs(np.array(values) - want).max() < 10  # each frame is the kept one before it (mp4v is lossy)


def test_jsonl_carries_each_frame_time(tmp_path):
    f = _live_frame(7, captured=3.0)
    rec = record(f, np.zeros((0, 6), np.float32), NAMES)
    assert rec["pts"] == 0.28 and rec["wall"] == 1_765_000_003.0
    img = Frame(np.zeros((8, 8, 3), np.uint8), "a.png", 0, SourceKind.IMAGE)
    rec = record(img, np.zeros((0, 6)), NAMES)
    assert (rec["pts"], rec["wall"]) == (None, None)
    # Through the sinks: the live video holds real time, the JSONL one line per frame kept.
    sinks = Sinks(NAMES, tmp_path / "out", None, True, tmp_path / "p.jsonl", False, concurrent=True)
    for i, t in ((0, 0.0), (10, 0.4), (25, 1.0)):
        sinks.write(_live_frame(i, 50.0 + t), np.zeros((0, 6), np.float32))
    sinks.close()
    assert count_frames(tmp_path / "out" / "cam_a.mp4") == 26
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3


@needs_gst
@needs_rtsp_server
def test_s2infer_reads_rtsp_with_gstreamer_and_its_video_keeps_real_time(tmp_path, capsys):
    from s2trt.runtime.cli import main

    video = write_video(tmp_path / "v.mp4", 60, 48, 64)
    model = tiny_models()["onnx"]  # exported before the clock below starts
    with RtspServer({"/cam": live()}) as server:
        url = server.url("/cam", "rtspt")
        t0 = time.time()
        killer = threading.Timer(4.0, server.kill)
        killer.start()
        try:
            rc = main(["--onnx", str(model), "--conf-thres", "0.7", "--project",
                       str(tmp_path / "runs"), "-q", "--decoder", "sw", url, str(video), "--save-json",
                       "--stream-timeout", "1", "--reconnect-timeout", "1.5", "-v"])
        finally:
            killer.cancel()
    assert rc == 0
    t1 = time.time()
    out = tmp_path / "runs" / "exp"
    recs = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    clip = [r for r in recs if r["source"] == str(video)]
    assert [r["pts"] for r in clip] == [round(i / 25, 3) for i in range(60)]
    assert all(r["wall"] is None for r in clip)  # a file's results do not depend on when it ran
    cam = [r for r in recs if r["source"] == url]
    assert len(cam) >= 20 and all(r["wall"] and r["pts"] is not None for r in cam)
    walls = [r["wall"] for r in cam]
    assert walls == sorted(walls) and t0 <= walls[0] and walls[-1] <= t1  # this run's clock
    # The annotated stream lasts as long as the stream did, whatever inference kept of it.
    span = cam[-1]["pts"] - cam[0]["pts"]
    n = count_frames(out / f"127.0.0.1_{server.port}_cam.mp4")
    assert n >= len(cam) and abs(n - (span * 25 + 1)) <= 3
    err = capsys.readouterr().err
    table = err[err.index("per source:"):]
    assert "avdec_h264" in table and "p95 ms" in table
