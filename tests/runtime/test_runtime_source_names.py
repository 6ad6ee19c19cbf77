"""What the outputs call a stream whose URL holds a secret in its query or fragment: the output file
name, the JSON Lines `source` and the "given twice" check show it as s2trt.text.redact_credentials
does, never with the secret, and sources of one server that differ in a harmless query value (an
NVR's channels) keep names of their own."""

from __future__ import annotations

import numpy as np
import pytest

from s2trt.errors import S2Error
from s2trt.runtime.inputs.sources import Frame, SourceKind
from s2trt.runtime.inputs.streams import expand_specs, output_names
from s2trt.runtime.outputs.sinks import output_name, record

S = SourceKind.STREAM


@pytest.mark.parametrize("url, name", [
    ("srt://127.0.0.1:9000?passphrase=correct-horse", "127.0.0.1_9000_passphrase.mp4"),
    ("https://cdn.example/live.m3u8?token=abc#sig=zz", "cdn.example_live.m3u8_token.mp4"),
    ("rtsp://admin:pw@nvr/cam/realmonitor?channel=1&subtype=0",
     "nvr_cam_realmonitor_channel_1_subtype_0.mp4"),
    ("rtsp://cam.example:554/live", "cam.example_554_live.mp4"),
])
def test_an_output_name_holds_no_secret(url, name):
    assert output_name(S, url) == name


def test_the_results_file_names_a_stream_without_its_secret_and_a_plain_url_as_it_is():
    img = np.zeros((4, 4, 3), np.uint8)
    for url, shown in [("srt://127.0.0.1:9000?passphrase=correct-horse", "srt://127.0.0.1:9000?passphrase=***"),
                       ("rtsp://cam.example:554/live?ch=1", "rtsp://cam.example:554/live?ch=1")]:
        rec = record(Frame(img, url, 0, S), np.zeros((0, 6), np.float32), ["a"])
        assert rec["source"] == shown


@pytest.mark.parametrize("urls", [
    [f"rtsp://u:p@nvr/cam/realmonitor?channel={c}&subtype=0" for c in (1, 2)],
    ["rtsp://nvr/live?1", "rtsp://nvr/live?2"],  # a value without a name: a channel
    ["rtsp://h/x?sessionName=front", "rtsp://h/x?sessionName=back"],  # "session" in a name is no secret
    ["srt://h:8890?streamid=read:cam1", "srt://h:8890?streamid=read:cam2"],  # a path, without user:pass
])
def test_sources_that_differ_in_a_harmless_value_are_not_given_twice(urls):
    assert expand_specs(urls) == urls


def test_channels_of_one_server_keep_their_own_names():
    urls = [f"rtsp://u:p@nvr/cam/realmonitor?channel={c}&subtype=0" for c in (1, 2)]
    names = output_names([(S, u) for u in urls])
    assert names == {urls[0]: "nvr_cam_realmonitor_channel_1_subtype_0.mp4",
                     urls[1]: "nvr_cam_realmonitor_channel_2_subtype_0.mp4"}


def test_sources_that_differ_only_in_a_secret_are_one_source():
    urls = ["srt://h:9000?passphrase=first-secret", "srt://h:9000?passphrase=other-secret"]
    with pytest.raises(S2Error, match=r"^source srt://h:9000\?passphrase=\*\*\* is given twice "
                       r"\(the two differ only in what is hidden of them\)$") as e:
        expand_specs(urls)
    assert "first-secret" not in str(e.value) and "other-secret" not in str(e.value)
    with pytest.raises(S2Error, match=r"^source rtsp://h/x is given twice$"):  # the very same spec
        expand_specs(["rtsp://h/x", "rtsp://h/x"])
    # Where names are made for such sources anyway (the API), they still differ.
    names = output_names([(S, u) for u in urls])
    assert sorted(names.values()) == ["h_9000_passphrase.mp4", "h_9000_passphrase_2.mp4"]
