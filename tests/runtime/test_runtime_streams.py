"""Several sources in one run: .streams files, output names, the newest-frame policy of live sources,
reconnects, and real MPEG-TS streams served by ffmpeg on 127.0.0.1 (killed and restarted mid-run)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_support import (
    NAMES,
    count_frames,
    partial_text,
    signal_mid_run,
    tiny_models,
    write_video,
)
from stream_fixtures import TsServer, make_clip, needs_ffmpeg, wait_for

from s2trt.errors import S2Error
from s2trt.runtime.backends.ort import OrtBackend
from s2trt.runtime.inputs.sources import SourceKind, open_source
from s2trt.runtime.inputs.streams import (
    LiveOptions,
    MultiSource,
    expand_specs,
    is_multi,
    output_names,
    read_streams_file,
)
from s2trt.runtime.outputs.sinks import record
from s2trt.runtime.pipeline import DetectOptions, Runner
from s2trt.text import redact_credentials

FAST = LiveOptions(read_timeout_s=0.5, reconnect_timeout_s=0.4, backoff_s=0.05, max_backoff_s=0.1)


# --- what the command line names ---------------------------------------------------------------

def test_streams_file_one_source_per_line(tmp_path):
    f = tmp_path / "cams.streams"
    f.write_text("# front door\nrtsp://10.0.0.5/live\n\n  0  \n/data/my clip.mp4\r\nudp://127.0.0.1:5000\n")
    assert read_streams_file(f) == ["rtsp://10.0.0.5/live", "0", "/data/my clip.mp4",
                                    "udp://127.0.0.1:5000"]
    assert expand_specs(["a.mp4", str(f)]) == ["a.mp4", "rtsp://10.0.0.5/live", "0", "/data/my clip.mp4",
                                               "udp://127.0.0.1:5000"]


@pytest.mark.parametrize("text, msg", [("", "lists no sources"), ("# only a comment\n\n", "lists no sources"),
                                       ("x.streams\n", "another .streams file")])
def test_bad_streams_file_is_one_clear_error(tmp_path, text, msg):
    f = tmp_path / "cams.streams"
    f.write_text(text)
    with pytest.raises(S2Error, match=msg):
        read_streams_file(f)
    with pytest.raises(S2Error, match=r"no such \.streams file"):
        expand_specs([str(tmp_path / "missing.streams")])


def test_a_source_given_twice_is_refused(tmp_path):
    video = write_video(tmp_path / "a.mp4", 2)
    with pytest.raises(S2Error, match="given twice"):
        expand_specs([str(video), "0", str(video)])
    with pytest.raises(S2Error, match="given twice"):  # once by name, once through its folder
        MultiSource([str(video), str(tmp_path)])


def test_which_runs_need_the_multi_source_reader():
    assert not is_multi(["clip.mp4"]) and not is_multi(["imgs/"])
    assert is_multi(["a.mp4", "b.mp4"]) and is_multi(["cams.streams"])
    assert is_multi(["0"]) and is_multi(["rtsp://cam/live"]) and is_multi(["TCP://127.0.0.1:9"])


def test_output_names_follow_the_source_and_never_collide():
    video, camera, stream, image = SourceKind.VIDEO, SourceKind.CAMERA, SourceKind.STREAM, SourceKind.IMAGE
    items = [(video, "front/clip.mp4"), (video, "back/clip.mp4"), (video, "x/clip_2.mp4"),
             (video, "CLIP.avi"), (camera, "0"), (stream, "rtsp://10.0.0.5/live"), (image, "imgs/a.png")]
    names = output_names(items)
    assert names == {"front/clip.mp4": "clip.mp4", "back/clip.mp4": "clip_2.mp4",
                     "x/clip_2.mp4": "clip_2_2.mp4", "CLIP.avi": "CLIP_3.mp4", "0": "camera0.mp4",
                     "rtsp://10.0.0.5/live": "10.0.0.5_live.mp4", "imgs/a.png": "a.png"}
    assert len({n.lower() for n in names.values()}) == len(items)


# --- live readers against fake captures --------------------------------------------------------

class FakeCap:
    """A camera that gives `n` frames, one every `period` s, each filled with its own number."""

    def __init__(self, n, period=0.0, first=0):
        self.n, self.period, self.i, self.first = n, period, 0, first
        self.released = False

    def grab(self):
        if self.i >= self.n:
            return False
        time.sleep(self.period)
        self.i += 1
        return True

    def retrieve(self):
        return True, np.full((12, 16, 3), (self.first + self.i - 1) % 256, np.uint8)

    def get(self, prop):
        return 25.0

    def release(self):
        self.released = True


def scripted(*steps):
    """An opener that gives these captures (or raises these errors) in turn, then refuses."""
    it = iter(steps)
    opened = []

    def opener(kind, item, timeout_s):
        step = next(it, S2Error(f"cannot open stream {redact_credentials(item)}"))  # as open_capture says it
        if isinstance(step, Exception):
            raise step
        opened.append(step)
        return step

    opener.opened = opened
    return opener


def test_live_source_keeps_the_newest_frame_and_counts_every_drop():
    ms = MultiSource(["rtsp://cam/a"], live=FAST, opener=scripted(FakeCap(120, period=0.001)))
    got = []
    for f in ms:
        got.append(f)
        time.sleep(0.01)  # inference slower than the camera
    st = ms.stats["rtsp://cam/a"]
    idx = [f.index for f in got]
    assert idx == sorted(set(idx))  # in order, never the same frame twice
    assert st.frames == len(got) and st.frames + st.dropped == 120 and st.dropped > 0
    assert idx[-1] == 119  # the newest frame is the one kept
    assert all(int(f.image[0, 0, 0]) == f.index % 256 for f in got)  # each number is its frame's own
    assert st.status == "lost" and any("no frame for" in p for p in ms.problems)


def test_stalled_or_closed_stream_reconnects_with_backoff_and_then_ends_alone():
    opener = scripted(FakeCap(5), S2Error("refused"), S2Error("refused"), FakeCap(3, first=5))
    opts = LiveOptions(read_timeout_s=0.5, reconnect_timeout_s=0.5, backoff_s=0.02, max_backoff_s=0.5)
    t0 = time.monotonic()
    ms = MultiSource(["rtsp://cam/a"], live=opts, opener=opener)
    got = list(ms)
    st = ms.stats["rtsp://cam/a"]
    assert int(got[-1].image[0, 0, 0]) == 7  # the second connection's newest frame
    assert [f.index for f in got] == sorted({f.index for f in got})  # numbering goes on after it
    assert st.reconnects == 1 and st.frames + st.dropped == 8 and st.status == "lost"
    assert all(c.released for c in opener.opened)
    # Backoff doubles from 0.02 s: two refusals take 0.02 + 0.04 s; the source ends when
    # reconnect_timeout (0.5 s) has passed since its last frame, not before.
    assert 0.5 <= time.monotonic() - t0 < 5


def test_reconnect_is_counted_and_dead_source_ends_while_a_file_goes_on(tmp_path):
    video = write_video(tmp_path / "v.mp4", 30, 48, 64)
    opener = scripted(FakeCap(4), FakeCap(4, first=4))
    ms = MultiSource([str(video), "rtsp://cam/a"], live=FAST, opener=opener)
    order = []
    for f in ms:
        order.append((f.source, f.index))
        if f.source == str(video):
            time.sleep(0.03)  # the file outlasts the camera
    cam = ms.stats["rtsp://cam/a"]
    assert cam.reconnects == 1 and cam.status == "lost"
    assert [i for s, i in order if s == str(video)] == list(range(30))  # a file is never dropped from
    assert ms.stats[str(video)].status == "ended" and ms.stats[str(video)].dropped == 0
    last_cam = max(k for k, (s, _) in enumerate(order) if s != str(video))
    assert last_cam < len(order) - 1  # file frames came after the camera had gone
    table = ms.table()
    assert "rtsp://cam/a" in table and "lost" in table and "reconnects" in table


def test_a_source_that_never_opens_fails_at_once_and_the_others_go_on(tmp_path):
    video = write_video(tmp_path / "v.mp4", 6, 48, 64)
    t0 = time.monotonic()
    ms = MultiSource([str(video), "rtsp://wrong/url"], live=LiveOptions(reconnect_timeout_s=30),
                     opener=scripted(S2Error("cannot open stream rtsp://wrong/url")))
    assert [f.index for f in ms] == list(range(6))
    assert time.monotonic() - t0 < 10  # not after the 30 s reconnect timeout
    assert ms.stats["rtsp://wrong/url"].status == "failed"
    assert any("cannot open stream rtsp://wrong/url" in p for p in ms.problems)
    # Alone, it fails the run with its own message, as a single source does.
    with pytest.raises(S2Error, match="cannot open stream rtsp://wrong/url"):
        list(MultiSource(["rtsp://wrong/url"], opener=scripted(S2Error("cannot open stream rtsp://wrong/url"))))


def test_live_frames_above_max_pixels_end_that_source():
    ms = MultiSource(["rtsp://cam/a"], max_pixels=100, live=FAST, opener=scripted(FakeCap(3)))
    assert list(ms) == []
    assert ms.stats["rtsp://cam/a"].status == "failed" and "megapixels" in ms.problems[0]


def test_verbose_reports_per_source_counters_periodically(caplog):
    ms = MultiSource(["rtsp://cam/a"], live=FAST, report_s=0.05,
                     opener=scripted(FakeCap(40, period=0.005)))
    with caplog.at_level(logging.INFO, logger="s2trt.runtime.inputs.streams"):
        list(ms)
    reports = [r.getMessage() for r in caplog.records if "per source so far" in r.getMessage()]
    assert len(reports) >= 2 and "rtsp://cam/a" in reports[0] and "dropped" in reports[0]


# --- files through the real pipeline -----------------------------------------------------------

class RecordSink:
    def __init__(self):
        self.recs = []

    def write(self, frame, dets):
        self.recs.append(record(frame, dets, NAMES))


def _run(frames, batch):
    backend = OrtBackend(tiny_models()["onnx"], device="cpu")
    sink = RecordSink()
    batches = []
    runner = Runner(backend, frames, sink, DetectOptions(conf_thres=0.7), batch=batch)
    infer = runner._infer

    def spy(b):
        batches.append([f.source for f in b.frames])
        return infer(b)

    runner._infer = spy
    runner.run()
    return sink.recs, batches


def test_files_together_are_batched_together_and_match_each_run_alone(tmp_path):
    a = write_video(tmp_path / "a.mp4", 7)
    b = write_video(tmp_path / "b.mp4", 5, 200, 300)
    streams = tmp_path / "two.streams"
    streams.write_text(f"{a}\n{b}\n")
    alone = {str(v): _run(open_source(str(v)), 1)[0] for v in (a, b)}
    for specs in ([str(a), str(b)], [str(streams)]):
        recs, batches = _run(MultiSource(specs), 4)
        assert any(len(set(srcs)) == 2 for srcs in batches)  # both sources share the engine's batch
        for v in (str(a), str(b)):
            mine = [r for r in recs if r["source"] == v]
            assert [r["frame"] for r in mine] == list(range(len(alone[v])))
            assert mine == alone[v]  # detections identical to the source run alone


# --- real streams on 127.0.0.1 -----------------------------------------------------------------

def _drive(ms, url, server, outage, errors):
    """Kill the server after 10 frames, restart it `outage` s later, wait for the reconnect, then
    kill it for good."""
    try:
        wait_for(lambda: url in ms.stats and ms.stats[url].frames >= 10, "the first frames")
        server.kill()
        before = ms.stats[url].frames
        time.sleep(outage)
        server.start()
        wait_for(lambda: ms.stats[url].reconnects == 1 and ms.stats[url].frames >= before + 5,
              "frames after the reconnect")
        server.kill()
    except BaseException as e:
        errors.append(e)
        ms.close()


@needs_ffmpeg
# tcp: the connection closes at the kill. udp: the socket goes silent, which the reader sees as a
# stall only after read_timeout_s, so that outage is longer (a shorter gap is no stall: the same
# socket simply goes on).
@pytest.mark.parametrize("proto, outage", [("tcp", 0.5), ("udp", 2.0)])
def test_real_stream_killed_and_restarted_reconnects_then_dies_alone(tmp_path, proto, outage):
    clip = make_clip(tmp_path / "cam.ts")
    video = write_video(tmp_path / "v.mp4", 1000, 48, 64)
    # Reopening probes the MPEG-TS stream (up to ~1 s at 25 FPS): the source must outlive the
    # outage, a reopen that times out in it and one after the restart.
    opts = LiveOptions(read_timeout_s=1.0, reconnect_timeout_s=outage + 3.5, backoff_s=0.1,
                       max_backoff_s=0.4)
    with TsServer(clip, proto) as server:
        ms = MultiSource([server.url, str(video)], live=opts)
        errors: list[BaseException] = []
        driver = threading.Thread(target=_drive, args=(ms, server.url, server, outage, errors), daemon=True)
        driver.start()
        t0 = time.monotonic()
        got = []
        for f in ms:
            got.append((f.source, f.index))
            if f.source == str(video) and ms.stats[server.url].status == "running":
                time.sleep(0.01)  # the file lasts until the stream is gone
        driver.join(timeout=5)
    assert not errors, errors[0]
    st = ms.stats[server.url]
    assert st.reconnects == 1 and st.status == "lost" and st.frames >= 15
    cam = [i for s, i in got if s == server.url]
    assert cam == sorted(set(cam))
    assert [i for s, i in got if s == str(video)] == list(range(1000))
    assert got[-1][0] == str(video)  # the file went on after the stream had died
    assert time.monotonic() - t0 < 40


def test_a_folder_of_images_is_one_row_and_its_unreadable_image_a_problem(tmp_path):
    import cv2

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        cv2.imwrite(str(imgs / f"im{i}.png"), np.full((20, 30, 3), i, np.uint8))
    (imgs / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    video = write_video(tmp_path / "v.mp4", 4, 48, 64)
    ms = MultiSource([str(imgs), str(video)])
    got = {(f.source, f.index) for f in ms}
    want = {(str(imgs / "im0.png"), 0), (str(imgs / "im2.png"), 0), *((str(video), i) for i in range(4))}
    assert got == want
    assert set(ms.stats) == {str(imgs), str(video)}
    assert ms.stats[str(imgs)].frames == 2 and ms.stats[str(imgs)].status == "ended"
    assert any("im1.png" in p for p in ms.problems)


# --- s2infer with several sources --------------------------------------------------------------

def _s2infer(tmp_path, *argv):
    from s2trt.runtime.cli import main

    return main(["--onnx", str(tiny_models()["onnx"]), "--conf-thres", "0.7", "--project",
                 str(tmp_path / "runs"), "-q", *map(str, argv)])


def _lines(path):
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()]


def _plays_in_real_time(video, recs, fps=25.0):
    """A live source's annotated video lasts as long as its frames' capture times span (frames that
    inference dropped are filled), and holds at least every frame written to the JSONL."""
    clock = "pts" if recs[-1]["pts"] else "wall"  # the stream's own timestamps, where it has them
    n, want = count_frames(video), (recs[-1][clock] - recs[0][clock]) * fps + 1
    return n >= len(recs) and abs(n - want) <= max(3, 0.1 * want)


def test_s2infer_two_files_and_their_streams_file_match_each_file_alone(tmp_path):
    (tmp_path / "front").mkdir()
    (tmp_path / "back").mkdir()
    a = write_video(tmp_path / "front" / "clip.mp4", 8)
    b = write_video(tmp_path / "back" / "clip.mp4", 5, 200, 300)
    alone = {}
    for v in (a, b):
        assert _s2infer(tmp_path, v, "--no-save", "--save-json", tmp_path / "alone.jsonl") == 0
        alone[str(v)] = _lines(tmp_path / "alone.jsonl")
    streams = tmp_path / "two.streams"
    streams.write_text(f"# two cameras\n{a}\n{b}\n")
    for n, specs in enumerate(([a, b], [streams]), 1):
        assert _s2infer(tmp_path, *specs, "--batch", "4", "--save-json", "--name", f"m{n}") == 0
        out = tmp_path / "runs" / f"m{n}"
        # One video per source, named after it; the second clip.mp4 does not overwrite the first.
        assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "clip_2.mp4", "predictions.jsonl"]
        assert count_frames(out / "clip.mp4") == 8 and count_frames(out / "clip_2.mp4") == 5
        recs = _lines(out / "predictions.jsonl")
        for v in (a, b):
            assert [r for r in recs if r["source"] == str(v)] == alone[str(v)]


@needs_ffmpeg
def test_s2infer_live_stream_that_dies_ends_alone_and_is_reported(tmp_path, capsys):
    clip = make_clip(tmp_path / "cam.ts")
    video = write_video(tmp_path / "v.mp4", 150, 48, 64)
    tiny_models()  # exported before the clock below starts
    with TsServer(clip, "tcp") as server:
        killer = threading.Timer(3.0, server.kill)
        killer.start()
        try:
            rc = _s2infer(tmp_path, server.url, video, "--save-json", "--stream-timeout", "1",
                          "--reconnect-timeout", "1.5", "-v")
        finally:
            killer.cancel()
    assert rc == 0
    out = tmp_path / "runs" / "exp"
    recs = _lines(out / "predictions.jsonl")
    cam = [r["frame"] for r in recs if r["source"] == server.url]
    assert cam and cam == sorted(set(cam))
    assert [r["frame"] for r in recs if r["source"] == str(video)] == list(range(150))
    assert count_frames(out / "v.mp4") == 150
    live = [r for r in recs if r["source"] == server.url]
    assert _plays_in_real_time(out / f"127.0.0.1_{server.port}.mp4", live)
    err = capsys.readouterr().err
    assert "reconnects" in err and "lost" in err and "no frame for" in err


def test_videos_of_one_folder_that_share_a_stem_get_a_file_each(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "clip.mp4", 3)
    write_video(src / "clip.avi", 4, fourcc="MJPG")
    assert _s2infer(tmp_path, src) == 0
    out = tmp_path / "runs" / "exp"
    assert count_frames(out / "clip.mp4") + count_frames(out / "clip_2.mp4") == 7  # none overwritten


def test_each_file_final_frame_is_marked_so_its_video_is_finished_early(tmp_path):
    from s2trt.runtime.outputs.sinks import Sinks

    (tmp_path / "in").mkdir()
    a = write_video(tmp_path / "in" / "a.mp4", 3, 48, 64)
    b = write_video(tmp_path / "in" / "b.mp4", 2, 48, 64)
    c = write_video(tmp_path / "c.mp4", 4, 48, 64)
    ms = MultiSource([str(tmp_path / "in"), str(c)])
    sinks = Sinks(NAMES, tmp_path / "out", None, True, None, False, file_names=output_names(ms.items),
                  concurrent=True)
    published_at = {}
    for n, f in enumerate(ms):
        assert f.last == (f.index == {str(a): 2, str(b): 1, str(c): 3}[f.source])
        sinks.write(f, np.zeros((0, 6), np.float32))
        for p in sinks.saved:
            published_at.setdefault(p.name, n)
    total = n + 1
    sinks.close()
    assert sorted(published_at) == ["a.mp4", "b.mp4", "c.mp4"]
    assert min(published_at.values()) < total - 1  # a finished file did not wait for the others
    assert count_frames(tmp_path / "out" / "a.mp4") == 3 and count_frames(tmp_path / "out" / "c.mp4") == 4


@needs_ffmpeg
def test_sigterm_ends_an_endless_live_run_with_every_output_complete(tmp_path):
    import signal
    import subprocess
    import sys

    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        pytest.skip("SIGTERM is ignored in this process, so s2infer inherits that and keeps ignoring it")
    clip = make_clip(tmp_path / "cam.ts")
    video = write_video(tmp_path / "v.mp4", 6, 48, 64)
    out = tmp_path / "o"
    with TsServer(clip, "tcp") as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from s2trt.runtime.cli import main; sys.exit(main())",
             "--onnx", str(tiny_models()["onnx"]), "--conf-thres", "0.7", server.url, str(video), "-o",
             str(out), "--save-json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tmp_path)
        signal_mid_run(proc, lambda: partial_text(out, "predictions.jsonl").count(server.url) >= 20,
                       signal.SIGTERM, 120)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "s2infer: terminated"
    recs = _lines(out / "predictions.jsonl")
    cam = [r for r in recs if r["source"] == server.url]
    assert len(cam) >= 20 and _plays_in_real_time(out / f"127.0.0.1_{server.port}.mp4", cam)
    assert count_frames(out / "v.mp4") == 6
    assert not list(out.glob(".*partial*"))
    table = err[err.index("per source:"):]
    assert server.url in table and "stopped" in table and "/v.mp4" in table


def test_one_output_file_for_several_sources_is_a_usage_error(tmp_path, capsys):
    a, b = write_video(tmp_path / "a.mp4", 2), write_video(tmp_path / "b.mp4", 2)
    assert _s2infer(tmp_path, a, b, "-o", tmp_path / "out.mp4") == 2
    assert "names one file, but 2 inputs give a file each" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("flag", ["--stream-timeout", "--reconnect-timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_timeouts_must_be_positive(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        _s2infer(tmp_path, "rtsp://127.0.0.1:9/cam", flag, value)
    assert e.value.code == 2 and "must be above 0 seconds" in capsys.readouterr().err


def test_an_unreadable_file_among_several_sources_ends_alone(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", 5)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    assert _s2infer(tmp_path, bad, video, "--save-json") == 0
    out = tmp_path / "runs" / "exp"
    assert [r["frame"] for r in _lines(out / "predictions.jsonl")] == list(range(5))
    assert count_frames(out / "v.mp4") == 5
    assert f"{bad}: not a readable image, this source ended" in capsys.readouterr().err


def test_a_stream_that_opened_once_is_reopened_even_before_its_first_frame():
    # Opens, gives nothing (a camera still starting), then refuses once: a drop to ride out, not a
    # wrong address.
    opener = scripted(FakeCap(0), S2Error("refused"), FakeCap(3))
    ms = MultiSource(["rtsp://cam/a"], live=FAST, opener=opener)
    got = list(ms)
    assert got and int(got[-1].image[0, 0, 0]) == 2
    assert ms.stats["rtsp://cam/a"].status == "lost"


def test_stream_credentials_never_reach_logs_tables_or_file_names(caplog):
    url = "rtsp://admin:s3cr@t@cam.example:554/live?ch=1"
    assert redact_credentials(url) == "rtsp://cam.example:554/live?ch=1"
    for kept in ("rtsp://cam/a@b", "imgs/me@home.jpg", "0", "rtsp://cam/x?u=a@b"):
        assert redact_credentials(kept) == kept  # an @ after the host, or outside a URL, is no credential
    opened = []
    steps = scripted(FakeCap(3), S2Error("refused"), FakeCap(2, first=3))

    def opener(kind, item, timeout_s):
        opened.append(item)
        return steps(kind, item, timeout_s)

    opts = LiveOptions(read_timeout_s=0.5, reconnect_timeout_s=0.3, backoff_s=0.02, max_backoff_s=0.1)
    ms = MultiSource([url], live=opts, opener=opener)
    with caplog.at_level(logging.WARNING):
        got = list(ms)
    assert got and set(opened) == {url}  # the stream itself is opened with its credentials
    assert "reconnected" in caplog.text and ms.problems
    shown_text = "\n".join([caplog.text, *ms.problems, ms.table()])
    assert "cam.example:554/live" in shown_text
    assert "admin" not in shown_text and "s3cr" not in shown_text
    assert output_names([(SourceKind.STREAM, url)]) == {url: "cam.example_554_live_ch_1.mp4"}
    # Results files are shared too: the JSONL names the stream as the logs do.
    rec = record(got[0], np.zeros((0, 6), np.float32), NAMES)
    assert rec["source"] == "rtsp://cam.example:554/live?ch=1"
    with pytest.raises(S2Error, match=r"^source rtsp://cam\.example:554/live\?ch=1 is given twice \(the two "
                       r"differ only in what is hidden of them\)$"):
        expand_specs([url, "rtsp://viewer:other@cam.example:554/live?ch=1"])


def test_a_video_that_cannot_be_opened_among_several_sources_fails_alone(tmp_path, capsys):
    # README: videos that cannot be opened "are skipped alone" in multi-source runs.
    video, bad = write_video(tmp_path / "v.mp4", 5), tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert _s2infer(tmp_path, bad, video, "--save-json", "-v") == 0
    out = tmp_path / "runs" / "exp"
    assert [r["frame"] for r in _lines(out / "predictions.jsonl")] == list(range(5))
    assert count_frames(out / "v.mp4") == 5
    err = capsys.readouterr().err
    assert f"cannot open video {bad}" in err and "this source ended" in err
    table = err[err.index("per source:"):].splitlines()
    rows = [ln.split() for ln in table[2:] if ln.startswith(("/", "…"))]  # long paths are cut short
    assert [(r[0].rsplit("/", 1)[-1], r[-1]) for r in rows] == [("bad.mp4", "failed"), ("v.mp4", "ended")]


def test_a_lone_video_that_cannot_be_opened_fails_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(S2Error, match="cannot open video"):
        MultiSource([str(bad)])
    assert _s2infer(tmp_path, bad) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("s2infer: error: cannot open video")
