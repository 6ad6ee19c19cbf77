"""s2trt.text.redact_credentials: what logs, messages and results files show of a URL. The reference
is urllib's own split of the URL: every user, password, secret-named query value and fragment it
finds is gone, and everything else is kept byte for byte."""

from __future__ import annotations

import time
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
    ("rtsp://admin:s3cr@t@cam:554/live?ch=1#t", f"rtsp://cam:554/live?ch=1#{MASK}"),
    # Whole key names and their last word, whatever the case, the separator or the escaping.
    ("rtsp://cam/x?pw=a&pin=1234&ch=1", f"rtsp://cam/x?pw={MASK}&pin={MASK}&ch=1"),
    ("rtmp://h/live/s?md5=beef&expires=1", f"rtmp://h/live/s?md5={MASK}&expires=1"),
    ("https://cdn/a.m3u8?hdnts=exp=1~acl=/*~hmac=abc", f"https://cdn/a.m3u8?hdnts={MASK}"),
    ("https://cdn/a.m3u8?hmac=abc&X-Amz-Security-Token=t", f"https://cdn/a.m3u8?hmac={MASK}&X-Amz-Security-Token={MASK}"),
    ("http://h/x?accessToken=1&stream_key=2&access%5Ftoken=3",
     f"http://h/x?accessToken={MASK}&stream_key={MASK}&access%5Ftoken={MASK}"),
    ("rtsp://cam/x?channel=1;token=abc", f"rtsp://cam/x?channel=1;token={MASK}"),  # ; separates too
    ("rtsp://cam/x?=s3cret&ch=1", f"rtsp://cam/x?={MASK}&ch=1"),  # a value under an empty name
    # MediaMTX's SRT login: streamid=action:path:user:pass.
    ("srt://h:8890?streamid=read:cam1:alice:s3cret&latency=200", f"srt://h:8890?streamid={MASK}&latency=200"),
])
def test_secrets_in_the_query_and_fragment_are_masked(url, shown):
    assert redact_credentials(url) == shown
    assert has_credentials(url)
    # Independent check with urllib: no secret value survives, the rest of the URL is unchanged.
    parts, kept = urlsplit(url), urlsplit(shown)
    assert (kept.scheme, kept.hostname, kept.port, kept.path) == (parts.scheme, parts.hostname, parts.port,
                                                                  parts.path)
    assert kept.username is None and kept.password is None and kept.fragment in ("", MASK)
    pairs = [parse_qsl(u.query.replace(";", "&")) for u in (parts, kept)]
    for (key, value), (key2, value2) in zip(*pairs, strict=True):
        assert key == key2 and value2 in (value, MASK)


@pytest.mark.parametrize("url", [
    "rtsp://cam/cam/realmonitor?channel=1&subtype=0",  # a camera's channel: tells two sources apart
    "srt://server:8890?streamid=read:cam1&latency=200",
    "rtsp://cam/live", "udp://@239.0.0.1:1234", "rtsp://cam/a@b", "imgs/me@home.jpg", "0",
    "rtsp://cam/l?", "rtsp://cam/l#", "rtsp://cam/l?a=1&&b=2",
    # Names that only hold a secret's word are no secret: they tell sources apart.
    "http://h/x?keyframe=1&usermode=2&sessionName=front&passive=1&tokenizer=x",
    "rtsp://nvr/live?1", "rtsp://nvr/live?AbCdEf0123",  # a value without a name: a channel on many NVRs
    "srt://h:8890?streamid=publish:cam1", "srt://h:8890?streamid=%23!::r=cam1,m=request",
])
def test_a_url_without_secrets_is_shown_as_it_is(url):
    assert redact_credentials(url) == url and not has_credentials(url)


def test_every_url_in_a_message_is_redacted():
    msg = ('Could not open "rtsp://u:pw@h/x?token=t0k". Retrying srt://h:1?passphrase=p4ss\n'
           "then https://h/y#s1g and rtsp://h/z?channel=3")
    text = redact_credentials(msg)
    assert not any(s in text for s in ("pw@", "t0k", "p4ss", "s1g"))
    assert text == (f'Could not open "rtsp://h/x?token={MASK}". Retrying srt://h:1?passphrase={MASK}\n'
                    f"then https://h/y#{MASK} and rtsp://h/z?channel=3")


@pytest.mark.parametrize("text, shown", [
    # A URL ends at a quote, < > or a backtick, so what follows it in a message or JSON stays.
    ('{"a":"rtsp://h/x?token=a","b":1}', f'{{"a":"rtsp://h/x?token={MASK}","b":1}}'),
    ("url='rtsp://h/x?sig=zz'; next <srt://h?passphrase=p> `http://h/#f` x",
     f"url='rtsp://h/x?sig={MASK}'; next <srt://h?passphrase={MASK}> `http://h/#{MASK}` x"),
    # But not at , [ ] ( ): an IPv6 host and an SRT stream id hold them.
    ("rtsp://[::1]:554/x?token=a,b", f"rtsp://[::1]:554/x?token={MASK}"),
])
def test_a_url_ends_where_a_message_quotes_it(text, shown):
    assert redact_credentials(text) == shown


@pytest.mark.parametrize("text, shown", [
    ("http://go2rtc:1984/api/stream.mp4?src=rtsp://admin:pw@cam/x", "http://go2rtc:1984/api/stream.mp4?src=rtsp://cam/x"),
    ('["rtsp://h/a","rtsp://u:p@h/b"]', '["rtsp://h/a","rtsp://h/b"]'),
    ("rtsp://h/a?channel=1,rtsp://u:p@h/b", "rtsp://h/a?channel=1,rtsp://h/b"),
    ("http://proxy/x?channel=1&src=rtsp://cam/y?token=t0k&ch=2#frag",
     f"http://proxy/x?channel=1&src=rtsp://cam/y?token={MASK}&ch=2#{MASK}"),
    ("srt://h?streamid=x&src=http://u:p@h2/?pw=1", f"srt://h?streamid=x&src=http://h2/?pw={MASK}"),

    # A secret that looks like a URL itself is masked whole, not shown as a nested URL.
    ("srt://h?passphrase=my://pass&x=1 then", f"srt://h?passphrase={MASK} then"),
    ("http://h/x#rtsp://c/y z", f"http://h/x#{MASK} z"),
])
def test_a_url_nested_in_another_is_redacted_too(text, shown):
    assert redact_credentials(text) == shown
    assert has_credentials(text)


def test_redaction_time_grows_linearly_with_hostile_text():
    # It runs on every log record: a long run of letters once took seconds (quadratic backtracking).
    # The ratio of two sizes, with a wide margin, not a wall-clock bound that a slow machine breaks.
    def seconds(n: int) -> float:
        texts = ["a" * n, "a" * n + "://", "a://" + "?&" * (n // 2), "x://" + "a=1&" * (n // 4),
                 "a:/" * (n // 3), "a-" * (n // 2) + "://x", "rtsp://" + "u:" * (n // 2), "a://?" * (n // 5)]
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for text in texts:
                redact_credentials(text)
            best = min(best, time.perf_counter() - t)
        return best

    small, large = seconds(20_000), seconds(200_000)
    assert large < 30 * max(small, 1e-4), (small, large)  # 10 x the text: ~10 x the time, not ~100 x
    assert large < 1.0
