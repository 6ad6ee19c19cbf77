"""RTSP for real: GStreamer's RTSP server (tests/support/rtsp_server.c) on 127.0.0.1 serving live H.264 and
H.265, read over TCP and UDP, with credentials, through a server restart and a resolution change;
SRT from gst-launch's srtsink; and a stream that connects but cannot be decoded."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
from gst_fixtures import needs_gst
from rtsp_fixtures import RtspServer, live, needs_rtsp_server
from runtime_support import write_video
from stream_fixtures import free_port, wait_for

from s2trt.errors import S2Error
from s2trt.runtime.inputs.streams import LiveOptions, MultiSource

pytestmark = [needs_gst, needs_rtsp_server]

OPTS = LiveOptions(read_timeout_s=3.0, reconnect_timeout_s=8.0, backoff_s=0.1, max_backoff_s=0.4)


def _take(ms: MultiSource, n: int, until=None) -> list:
    """The first n frames (or until until(frames) holds), then the readers are stopped."""
    got = []
    for f in ms:
        got.append(f)
        if (until(got) if until else len(got) >= n):
            break
    ms.close()
    return got


@pytest.mark.parametrize("codec, scheme, decoder, want", [
    ("h264", "rtspt", "sw", "avdec_h264"),  # RTSP interleaved over TCP
    ("h265", "rtspu", "sw", "avdec_h265"),  # RTP over UDP
    ("h264", "rtsp", "opencv", "opencv"),  # today's path, against the same server
])
def test_live_rtsp_streams_decode_over_tcp_and_udp(codec, scheme, decoder, want):
    with RtspServer({"/cam": live(codec)}) as server:
        url = server.url("/cam", scheme)
        ms = MultiSource([url], live=OPTS, decoder=decoder)
        got = _take(ms, 25)
    assert len(got) == 25 and all(f.image.shape == (120, 160, 3) for f in got)
    assert all(f.image.std() > 10 for f in got)  # a picture, not a blank frame
    assert ms.stats[url].decoder == want
    idx = [f.index for f in got]
    assert idx == sorted(set(idx))
    if decoder != "opencv":
        pts = np.array([f.pts for f in got])
        assert np.all(np.diff(pts) > 0)
        # 25 FPS: kept frames are whole frame intervals apart (newer ones replace older ones).
        steps = np.diff(pts) / 0.04
        assert np.abs(steps - np.round(steps)).max() < 0.1


def test_credentials_open_the_stream_and_never_show(caplog):
    with RtspServer({"/cam": live()}, user="alice:s3cret") as server:
        good = server.url("/cam", "rtspt", "alice:s3cret")
        assert len(_take(MultiSource([good], live=OPTS, decoder="sw"), 5)) == 5
        for auth in ("alice:wrong", None):
            bad = server.url("/cam", "rtspt", auth)
            with pytest.raises(S2Error, match="Unauthorized") as e:
                list(MultiSource([bad], live=OPTS, decoder="sw"))
            assert "wrong" not in str(e.value) and "s3cret" not in str(e.value)
    assert "s3cret" not in caplog.text


def test_a_restarted_server_is_reconnected():
    with RtspServer({"/cam": live()}) as server:
        url = server.url("/cam", "rtspt")
        ms = MultiSource([url], live=OPTS, decoder="sw")
        errors: list[BaseException] = []

        def restart():
            try:
                wait_for(lambda: ms.stats[url].frames >= 10, "the first frames")
                server.kill()
                time.sleep(0.5)
                server.start()  # the same port, a new server process
            except BaseException as e:  # reported by the test below
                errors.append(e)

        t = threading.Thread(target=restart, daemon=True)
        t.start()
        got = _take(ms, 0, until=lambda fs: ms.stats[url].reconnects == 1 and len(fs) >= 20)
        t.join(timeout=10)
    assert not errors, errors[0]
    st = ms.stats[url]
    assert st.reconnects == 1 and len(got) >= 20
    idx = [f.index for f in got]
    assert idx == sorted(set(idx))  # numbering goes on across the new connection


def test_a_camera_that_changes_resolution_midstream():
    with RtspServer({"/cam": live(size="160x120")}, switch=(1, "320x240")) as server:
        url = server.url("/cam", "rtspt")
        ms = MultiSource([url], live=OPTS, decoder="sw")
        got = _take(ms, 0, until=lambda fs: fs[-1].image.shape[0] == 240 and len(fs) >= 30)
    shapes = [f.image.shape for f in got]
    assert shapes[0] == (120, 160, 3) and shapes[-1] == (240, 320, 3)
    first_big = shapes.index((240, 320, 3))
    assert set(shapes[first_big:]) == {(240, 320, 3)}  # one switch, every frame whole


def test_a_stream_that_connects_but_cannot_be_decoded_says_so_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("GST_PLUGIN_FEATURE_RANK", "avdec_h265:NONE,libde265dec:NONE")
    video = write_video(tmp_path / "v.mp4", 5, 48, 64)
    opts = LiveOptions(read_timeout_s=3.0, reconnect_timeout_s=60.0)
    with RtspServer({"/cam": live("h265")}) as server:
        url = server.url("/cam", "rtspt")
        with pytest.raises(S2Error, match="connects, but its video cannot be decoded here"):
            list(MultiSource([url], live=opts, decoder="sw"))  # alone: the run's error, exit 1
        t0 = time.monotonic()
        ms = MultiSource([url, str(video)], live=opts, decoder="sw")
        assert len(list(ms)) == 5
    assert time.monotonic() - t0 < 20  # not after the 60 s reconnect timeout
    assert ms.stats[url].status == "undecodable"
    assert any("cannot be decoded" in p for p in ms.problems)


def test_srt_is_a_stream():
    port = free_port()
    gst = shutil.which("gst-launch-1.0")
    sender = subprocess.Popen(
        [gst, "-q", "videotestsrc", "is-live=true", "!", "video/x-raw,width=160,height=120,framerate=25/1",
         "!", "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=10", "!", "mpegtsmux",
         "!", "srtsink", f"uri=srt://:{port}"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        url = f"srt://127.0.0.1:{port}"
        ms = MultiSource([url], live=OPTS, decoder="sw")
        got = _take(ms, 10)
    finally:
        sender.kill()
        sender.wait(timeout=10)
    assert len(got) == 10 and got[0].image.shape == (120, 160, 3)
    assert ms.stats[url].decoder == "avdec_h264"
