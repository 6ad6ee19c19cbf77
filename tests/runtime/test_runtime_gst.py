"""The GStreamer decode path (runtime/inputs/gst.py) against Debian's real GStreamer: frames, sizes and
timestamps compared with OpenCV's FFmpeg decoding the same files, the decoder choice, and what a
video or stream that cannot be decoded says."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from gst_fixtures import encode, needs_gst
from runtime_support import tiny_models

from s2trt.errors import S2Error
from s2trt.runtime.inputs import gst
from s2trt.runtime.inputs.gst import GstCapture, i420_to_bgr, launch_args, parse_caps, resolve_decoder
from s2trt.runtime.inputs.sources import open_source
from s2trt.runtime.inputs.streams import MultiSource


def _opencv_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


def _gst_frames(path: Path, kind: str = "video") -> tuple[list[np.ndarray], list[float | None], str | None]:
    cap = GstCapture(kind, str(path), "sw", timeout_s=20)
    frames, pts = [], []
    try:
        while cap.grab():
            ok, img = cap.retrieve()
            assert ok
            frames.append(img.copy())
            pts.append(cap.pts)
    finally:
        cap.release()
    return frames, pts, cap.decoder


@needs_gst
# 162 wide: I420 chroma rows of 81 bytes, which GStreamer pads to 84; the frames must come out unpadded.
@pytest.mark.parametrize("codec, decoder, size, container", [
    ("libx264", "avdec_h264", "160x120", "mp4"), ("libx265", "avdec_h265", "160x120", "mkv"),
    ("libx264", "avdec_h264", "162x90", "ts")])
def test_gstreamer_decodes_what_ffmpeg_decodes(tmp_path, codec, decoder, size, container):
    clip = encode(tmp_path / f"c.{container}", codec, frames=20, size=size)
    ref = _opencv_frames(clip)
    frames, pts, used = _gst_frames(clip)
    assert used == decoder
    assert len(frames) == len(ref) == 20
    w, h = map(int, size.split("x"))
    for a, b in zip(frames, ref, strict=True):
        assert a.shape == b.shape == (h, w, 3) and a.dtype == np.uint8
        # Both decode the same YUV and convert it with BT.601; only the chroma upsampling and
        # rounding differ (swscale vs OpenCV).
        assert np.abs(a.astype(int) - b).mean() < 2.0
    np.testing.assert_allclose(pts, np.arange(20) / 25, atol=1e-3)  # stream time from the segment


@needs_gst
def test_a_resolution_change_midstream_is_followed(tmp_path):
    a = encode(tmp_path / "a.ts", frames=10, size="160x120")
    b = encode(tmp_path / "b.ts", frames=10, size="320x240")
    both = tmp_path / "ab.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())  # a camera that switches to 320x240
    frames, _, _ = _gst_frames(both)
    shapes = [f.shape[:2] for f in frames]
    assert shapes[0] == (120, 160) and shapes[-1] == (240, 320)
    assert sorted(set(shapes)) == [(120, 160), (240, 320)] and len(frames) >= 18
    assert shapes == sorted(shapes)  # one switch, no frame read with the other size's framing


@needs_gst
def test_a_video_whose_codec_cannot_be_decoded_says_so(tmp_path, monkeypatch):
    clip = encode(tmp_path / "c.mkv", "libx265")
    # As if no H.265 decoder were installed (bookworm has two).
    monkeypatch.setenv("GST_PLUGIN_FEATURE_RANK", "avdec_h265:NONE,libde265dec:NONE")
    with pytest.raises(S2Error, match=r"c\.mkv: cannot be decoded: .*(?i:missing|decoder|plug)"):
        GstCapture("video", str(clip), "sw", timeout_s=20)
    with pytest.raises(S2Error, match="cannot be decoded"):
        list(open_source(str(clip), decoder="sw"))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with pytest.raises(S2Error, match=r"notes\.mp4"):
        GstCapture("video", str(text), "sw", timeout_s=20)


@needs_gst
def test_a_truncated_video_says_where_it_ends_with_either_decoder(tmp_path):
    clip = encode(tmp_path / "c.mp4", frames=50, size="320x240", extra=("-movflags", "+faststart"))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:clip.stat().st_size * 6 // 10])  # a copy that stopped halfway
    for decoder in ("sw", "opencv"):
        src = open_source(str(cut), decoder=decoder)
        n = len(list(src))
        assert 10 < n < 50
        assert src.problems == [f"{cut}: the video ends at frame {n} of 50 (truncated?)"], decoder


@needs_gst
def test_a_file_source_through_gstreamer_gives_frames_with_their_timestamps(tmp_path):
    clip = encode(tmp_path / "c.mp4", frames=12)
    src = open_source(str(clip), decoder="sw")
    frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    np.testing.assert_allclose([f.pts for f in frames], np.arange(12) / 25, atol=1e-3)
    assert src.decoders == {str(clip): "avdec_h264"} and frames[0].fps == 25
    ms = MultiSource([str(clip), str(encode(tmp_path / "d.mkv", "libx265", frames=6))], decoder="sw")
    assert len(list(ms)) == 18
    assert [s.decoder for s in ms.stats.values()] == ["avdec_h264", "avdec_h265"]
    assert "avdec_h265" in ms.table()


@pytest.mark.parametrize("w, h", [(160, 120), (162, 90), (161, 121), (1920, 1080)])
def test_i420_frames_in_gstreamer_layout_become_bgr(w, h):
    # GStreamer's default I420 layout: Y rows padded to 4 bytes, chroma of ceil(w/2) x ceil(h/2)
    # padded to 4; the reference converts the same planes packed, as OpenCV takes them.
    h2, w2 = h + h % 2, w + w % 2
    packed = np.random.default_rng(0).integers(0, 256, (h2 * 3 // 2, w2), np.uint8)
    want = cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_I420)[:h, :w]
    flat = packed.ravel()
    planes = [flat[:w2 * h2].reshape(h2, w2), flat[w2 * h2:w2 * h2 * 5 // 4].reshape(h2 // 2, w2 // 2),
              flat[w2 * h2 * 5 // 4:].reshape(h2 // 2, w2 // 2)]
    strides = [(w + 3) & ~3, (w2 // 2 + 3) & ~3, (w2 // 2 + 3) & ~3]
    data = b""
    for plane, stride in zip(planes, strides, strict=True):
        rows = np.full((plane.shape[0], stride), 7, np.uint8)  # padding GStreamer leaves unset
        rows[:, :min(plane.shape[1], stride)] = plane[:, :stride]
        data += rows.tobytes()
    got = i420_to_bgr(data, w, h)
    assert got is not None and got.shape == (h, w, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    assert i420_to_bgr(data[:-1], w, h) is None  # a short buffer is no frame


def test_caps_and_the_decoder_choice(monkeypatch):
    caps = parse_caps("video/x-raw, width=(int)1920, height=(int)1080, framerate=(fraction)30000/1001, "
                      "format=(string)BGR")
    assert (caps.width, caps.height) == (1920, 1080) and abs(caps.fps - 29.97) < 0.01
    assert resolve_decoder("opencv") == "opencv"
    with pytest.raises(S2Error, match="choose one of auto, nv, sw, opencv"):
        resolve_decoder("vaapi")
    have = {"gdppay", "avdec_h264"}
    monkeypatch.setattr(gst, "has_element", lambda name: name in have)
    monkeypatch.setattr(gst, "gst_launch", lambda: "/usr/bin/gst-launch-1.0")
    assert resolve_decoder("auto") == "opencv"  # no NVIDIA decoder: today's path
    with pytest.raises(S2Error, match="no NVIDIA decoder here"):
        resolve_decoder("nv")
    have |= {"nvv4l2decoder", "nvvideoconvert"}  # a Jetson with DeepStream
    assert resolve_decoder("auto") == "nv"
    args = launch_args("stream", "rtsp://cam/live", "nv", 5)
    # NVMM memory leaves the GPU through nvvideoconvert, as I420 straight into the pipe.
    i = args.index("nvvideoconvert")
    assert args[i:i + 5] == ["nvvideoconvert", "!", "video/x-raw,format=I420", "!", "gdppay"]
    assert args[-2:] == ["fd=5", "sync=false"] and "gdppay" in args
    monkeypatch.setattr(gst, "gst_launch", lambda: None)
    with pytest.raises(S2Error, match=r"apt-get install gstreamer1\.0-tools"):
        resolve_decoder("sw")


def test_opencv_refuses_gstreamer_only_schemes_by_name():
    from s2trt.runtime.inputs.sources import live_kind, open_capture

    for url in ("rtspt://cam/live", "rtspu://cam/live", "srt://127.0.0.1:9000", "rtmps://host/app/key"):
        assert live_kind(url) == "stream"  # a stream, never "source not found"
    with pytest.raises(S2Error, match=r"rtspt:// is GStreamer's scheme: read it with --decoder sw"):
        open_capture("stream", "rtspt://user:pw@cam/live")


@needs_gst
def test_s2infer_decoder_sw_runs_a_video_and_says_which_decoder(tmp_path, capsys):
    from s2trt.runtime.cli import main

    clip = encode(tmp_path / "c.mp4", frames=10, size="320x240")
    out = tmp_path / "out"
    argv = ["--onnx", str(tiny_models()["onnx"]), "--conf-thres", "0.7", "-q", "-o", str(out),
            "--save-json"]
    assert main([*argv, "--decoder", "sw", str(clip)]) == 0
    recs = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(10))
    cap = cv2.VideoCapture(str(out / "c.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    cap.release()
    assert main([*argv, "--decoder", "sw", str(clip), str(clip.with_name("missing.mp4")), "-v",
                 "--exist-ok"]) == 0
    err = capsys.readouterr().err
    assert "decoder sw" in err
    rows = {ln.split()[0].rsplit("/", 1)[-1]: ln.split() for ln in err[err.index("per source:"):].splitlines()
            if ".mp4" in ln}
    assert rows["c.mp4"][-2:] == ["avdec_h264", "ended"] and rows["c.mp4"][1] == "10"
    # A missing path among several sources is reported and ends alone, as an unreachable URL does.
    assert rows["missing.mp4"][-1] == "failed" and "source not found" in err


@needs_gst
def test_a_live_stream_child_ends_with_release(tmp_path):
    from stream_fixtures import TsServer, make_clip

    with TsServer(make_clip(tmp_path / "cam.ts"), "tcp") as server:
        cap = GstCapture("stream", server.url, "sw", timeout_s=10)
        assert cap.grab() and cap.retrieve()[1].shape == (120, 160, 3)
        assert cap.decoder == "mpeg2dec" or cap.decoder.startswith("avdec_mpeg2")
        cap.release()
        assert cap.proc.poll() is not None  # the endless child is gone, with its pipe
        assert not cap.grab()
