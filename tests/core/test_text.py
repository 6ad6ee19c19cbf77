"""s2trt.text.redact_credentials: what logs, messages and results files show of a URL. The reference
is urllib's own split of the URL: every user, password, secret-named query value and fragment it
finds is gone, and everything else is kept byte for byte."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from s2trt.text import MASK, has_credentials, redact_credentials


@pytest.mark.parametrize("url, shown", [
    ("srt://127.0.0.1:9000?passphrase=correct-horse", f"srt://127.0.0.1:9000?passphrase={MASK}"),
    ("rtsp://cam/live?token=abc&channel=2", f"rtsp://cam/live?token={MASK}&channel=2"),
    ("rtsp://cam/onvif?user=admin&password=123", f"rtsp://cam/onvif?user={MASK}&password={MASK}"),
    ("https://cdn/x.m3u8?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00&X-Amz-Expires=60",
     f"https://cdn/x.m3u8?X-Amz-Credential={MASK}&X-Amz-Signature={MASK}&X-Amz-Expires=60"),
    # The key as the server reads it, percent-decoded.
    ("https://cdn/x.m3u8?Pass%77ord=x", f"https://cdn/x.m3u8?Pass%77ord={MASK}"),
    ("https://cam/live.m3u8#sig=s3cret", f"https://cam/live.m3u8#{MASK}"),
    ("https://cam/live.m3u8?AbCdEf0123", f"https://cam/live.m3u8?{MASK}"),  # a value without a name
    ("rtsp://admin:s3cr@t@cam:554/live?ch=1#t", f"rtsp://cam:554/live?ch=1#{MASK}"),
])
def test_secrets_in_the_query_and_fragment_are_masked(url, shown):
    assert redact_credentials(url) == shown
    assert has_credentials(url)
    # Independent check with urllib: no secret value survives, the rest of the URL is unchanged.
    parts, kept = urlsplit(url), urlsplit(shown)
    assert (kept.scheme, kept.hostname, kept.port, kept.path) == (parts.scheme, parts.hostname, parts.port,
                                                                  parts.path)
    assert kept.username is None and kept.password is None and kept.fragment in ("", MASK)
    for (key, value), (key2, value2) in zip(parse_qsl(parts.query), parse_qsl(kept.query), strict=True):
        assert key == key2 and value2 in (value, MASK)


@pytest.mark.parametrize("url", [
    "rtsp://cam/cam/realmonitor?channel=1&subtype=0",  # a camera's channel: tells two sources apart
    "srt://server:8890?streamid=read:cam1&latency=200",
    "rtsp://cam/live", "udp://@239.0.0.1:1234", "rtsp://cam/a@b", "imgs/me@home.jpg", "0",
    "rtsp://cam/l?", "rtsp://cam/l#", "rtsp://cam/l?a=1&&b=2",
])
def test_a_url_without_secrets_is_shown_as_it_is(url):
    assert redact_credentials(url) == url and not has_credentials(url)


def test_every_url_in_a_message_is_redacted():
    msg = ('Could not open "rtsp://u:pw@h/x?token=t0k". Retrying srt://h:1?passphrase=p4ss\n'
           "then https://h/y#s1g and rtsp://h/z?channel=3")
    text = redact_credentials(msg)
    assert not any(s in text for s in ("pw@", "t0k", "p4ss", "s1g"))
    assert text == (f'Could not open "rtsp://h/x?token={MASK} Retrying srt://h:1?passphrase={MASK}\n'
                    f"then https://h/y#{MASK} and rtsp://h/z?channel=3")
