"""The failover logic of s2trt.runtime.backends.triton_pool without servers: fake clients whose calls
the test answers, fails or leaves hanging, so every interleaving below is deterministic."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from s2trt.errors import S2Error
from s2trt.runtime.backends import triton_pool as P


class Status(Exception):
    """What tritonclient raises: an error with a gRPC status and a message."""

    def __init__(self, status: str, msg: str):
        super().__init__(msg)
        self._status, self._msg = status, msg

    def status(self) -> str:
        return f"StatusCode.{self._status}"

    def message(self) -> str:
        return self._msg


class Call:
    def __init__(self, client: FakeClient, item: int, callback):
        self.client, self.item, self.callback, self.done = client, item, callback, False

    def answer(self, result=None, error=None):
        if not self.done:
            self.done = True
            self.callback(result, error)

    def cancel(self):
        self.answer(error=Status("CANCELLED", "Locally cancelled by application!"))


class FakeClient:
    def __init__(self, url: str):
        self.url, self.calls, self.closed = url, [], False

    def infer(self, item: int, callback) -> Call:
        call = Call(self, item, callback)
        self.calls.append(call)
        return call

    def pending(self) -> list[Call]:
        return [c for c in self.calls if not c.done]

    def close(self):
        self.closed = True


def unreachable(errors):
    return S2Error("no server left: " + "; ".join(f"{u}: {m}" for u, m in errors))


def make_pool(urls, connect=None, **kw):
    clients = {u: FakeClient(u) for u in urls}
    pool = P.ServerPool(urls, connect or (lambda u: (_ for _ in ()).throw(P.Unreachable("refused"))),
                        unreachable, **kw)
    pool.start(dict(clients))
    return pool, clients


def submit(pool, item):
    return pool.submit(lambda client, cb: client.infer(item, cb), lambda r: (r, item))


def test_parse_urls():
    assert P.parse_urls("a:8001, b:8001,") == ["a:8001", "b:8001"]
    assert P.parse_urls(["h:1"]) == ["h:1"]
    for bad, msg in [("", "no Triton server"), ("a:8001,a:8001", "twice"), ("a", "not HOST:PORT"),
                     ("a:0", "not HOST:PORT"), ("a:x", "not HOST:PORT")]:
        with pytest.raises(S2Error, match=msg):
            P.parse_urls(bad)


def test_least_outstanding_first():
    pool, c = make_pool(["a:1", "b:1", "c:1"], max_in_flight=64)
    futures = [submit(pool, i) for i in range(6)]
    assert [len(c[u].pending()) for u in c] == [2, 2, 2]
    for call in c["a:1"].pending():
        call.answer("ra")
    futures += [submit(pool, i) for i in range(6, 8)]  # a has none outstanding now: both go there
    assert len(c["a:1"].pending()) == 2
    for client in c.values():
        for call in client.pending():
            call.answer(client.url)
    assert [f.result()[1] for f in futures] == list(range(8))
    pool.close()


def test_failed_server_requests_resent_each_resolved_exactly_once():
    pool, c = make_pool(["a:1", "b:1"], max_in_flight=64)
    resolved = []
    futures = [submit(pool, i) for i in range(10)]
    for f in futures:
        f.add_done_callback(lambda f: resolved.append(f))
    on_a = c["a:1"].pending()
    on_a[0].answer(error=Status("UNAVAILABLE", "Socket closed"))  # a dies: its other calls are cancelled
    assert not c["a:1"].pending()
    assert len(c["b:1"].pending()) == 10  # all of a's went to b
    for call in c["b:1"].pending():
        call.answer("rb")
    on_a[1].answer("late answer from a")  # ignored: that request moved on
    assert len(resolved) == 10 and [f.result() for f in futures] == [("rb", i) for i in range(10)]
    a = pool.servers[0]
    assert (a.up, a.failures, a.moved, a.answered) == (False, 1, 5, 0)
    assert pool.servers[1].answered == 10
    assert "a:1" in pool.table() and "down" in pool.table()
    pool.close()


@pytest.mark.parametrize("status", ["INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"])
def test_a_rejected_request_is_not_resent(status):
    pool, c = make_pool(["a:1", "b:1"])
    f = submit(pool, 0)
    (c["a:1"].pending() or c["b:1"].pending())[0].answer(error=Status(status, "not a decodable image"))
    with pytest.raises(S2Error, match="rejected the request: not a decodable image"):
        f.result()
    assert all(s.up for s in pool.servers) and sum(len(x.calls) for x in c.values()) == 1
    pool.close()


@pytest.mark.parametrize("status", ["INTERNAL", "UNKNOWN", "UNAVAILABLE"])
def test_a_server_side_fault_takes_the_server_out_and_the_request_goes_elsewhere(status):
    """Triton's Python backend answers INTERNAL "Stub process is not healthy" once the model process
    died, while the server still says ready: that server's failure, not the request's."""
    pool, c = make_pool(["a:1", "b:1"], probe_backoff=(60.0, 60.0))
    futures = [submit(pool, i) for i in range(4)]
    on_a = c["a:1"].pending()
    assert len(on_a) == 2
    on_a[0].answer(error=Status(status, "Stub process is not healthy."))
    a, b = pool.servers
    assert not a.up and a.moved == 2 and not c["a:1"].pending()  # its other call was cancelled, re-sent
    for call in c["b:1"].pending():
        call.answer(result=call.item)
    assert [f.result(timeout=5) for f in futures] == [(i, i) for i in range(4)]  # each once, in order
    assert b.answered == 4 and len(c["b:1"].calls) == 4
    pool.close()


def test_no_server_left_fails_the_request_with_every_reason():
    pool, c = make_pool(["a:1", "b:1"])
    f = submit(pool, 0)
    for url in ("a:1", "b:1", "a:1"):
        for call in c[url].pending():
            call.answer(error=Status("UNAVAILABLE", f"{url} gone"))
    with pytest.raises(S2Error, match="no server left: a:1: a:1 gone; b:1: b:1 gone"):
        f.result()
    pool.close()


def test_failed_server_is_probed_with_backoff_and_rejoins():
    probes: list[float] = []
    back = threading.Event()
    fresh = FakeClient("a:1")

    def connect(url):
        probes.append(time.monotonic())
        if not back.is_set():
            raise P.Unreachable("connection refused")
        return fresh

    pool, c = make_pool(["a:1", "b:1"], connect, probe_backoff=(0.05, 0.4))
    f = submit(pool, 0)
    (c["a:1"].pending() or c["b:1"].pending())[0].answer(error=Status("UNAVAILABLE", "gone"))
    if not f.done():
        c["b:1"].pending()[0].answer("rb")
    assert f.result() == ("rb", 0)
    time.sleep(1.2)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert 3 <= len(probes) <= 8, probes
    assert gaps[0] < 0.15 and gaps[2] > 0.3 and max(gaps) < 0.4 + 0.1, gaps  # 0.1, 0.2, 0.4, 0.4 (cap)
    back.set()
    deadline = time.monotonic() + 2
    while not pool.servers[0].up and time.monotonic() < deadline:
        time.sleep(0.02)
    a = pool.servers[0]
    assert a.up and a.rejoins == 1 and c["a:1"].closed  # the old connection is dropped
    futures = [submit(pool, i) for i in range(4)]
    assert len(fresh.pending()) == 2  # a takes its share again
    for client in (fresh, c["b:1"]):
        for call in client.pending():
            call.answer("ok")
    assert all(f.result()[0] == "ok" for f in futures)
    pool.close()


def test_in_flight_limit_blocks_until_an_answer():
    pool, c = make_pool(["a:1"], max_in_flight=2)
    submit(pool, 0), submit(pool, 1)
    third = threading.Thread(target=submit, args=(pool, 2))
    third.start()
    third.join(0.2)
    assert third.is_alive()
    c["a:1"].pending()[0].answer("r")
    third.join(2)
    assert not third.is_alive()
    pool.close()


def test_a_request_no_server_answers_is_not_resent_forever():
    """Servers whose health checks pass but whose inference hangs (a stuck model instance): each
    request times out, the server is taken out, probed back in at once, and the request would bounce
    between them without end. It gets a bounded number of tries, then the run's one error."""
    clients: list[FakeClient] = []

    def connect(url):
        clients.append(FakeClient(url))
        return clients[-1]

    pool, c = make_pool(["a:1", "b:1"], connect, probe_backoff=(0.01, 0.01))
    clients += c.values()
    f = submit(pool, 0)
    tries = 0
    while not f.done() and tries < 20:
        call = next(x for cl in clients for x in cl.pending())
        deadline = time.monotonic() + 2  # the other server is back before this one times out
        while not all(s.up for s in pool.servers if s.url != call.client.url) and time.monotonic() < deadline:
            time.sleep(0.005)
        call.answer(error=Status("DEADLINE_EXCEEDED", "Deadline Exceeded"))
        tries += 1
    assert f.done(), "the request was still being re-sent after 20 timeouts"
    assert tries <= 2 * len(pool.servers)
    with pytest.raises(S2Error, match=r"no server left: .*Deadline Exceeded"):
        f.result()
    pool.close()


def test_a_call_refused_by_a_closed_connection_goes_to_another_server():
    """gRPC refuses to issue a call on a closed channel (ValueError "Cannot invoke RPC on closed
    channel!", grpc/_channel.py) — e.g. the connection a probe replaced and closed while a dispatch
    still held it. Nothing reached a server: the request goes elsewhere instead of failing the run."""
    pool, c = make_pool(["a:1", "b:1"], max_in_flight=8)

    def closed(item, callback):
        raise ValueError("Cannot invoke RPC on closed channel!")

    c["a:1"].infer = closed
    futures = [submit(pool, i) for i in range(2)]  # one of them is offered to a first
    for call in c["b:1"].pending():
        call.answer("rb")
    assert [f.result() for f in futures] == [("rb", 0), ("rb", 1)]
    assert not pool.servers[0].up  # its connection is unusable: replaced when a probe succeeds
    pool.close()


@pytest.mark.parametrize("forged", ['{"names": "not a list", "imgsz": 5}', "not JSON {"])
def test_client_closes_its_connections_when_the_served_metadata_is_refused(monkeypatch, forged):
    """The servers answer, but the s2trt_meta they serve is not valid metadata: one clear error (an
    S2Error, never a traceback), and the connections opened to check them are closed."""
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (s2trt[triton])")
    from s2trt.runtime.backends import triton as C

    opened: list[FakeClient] = []

    def connect(self, url, timeout=None):
        self._meta_props = forged
        opened.append(FakeClient(url))
        return opened[-1]

    monkeypatch.setattr(C.TritonClient, "_connect", connect)
    with pytest.raises(S2Error, match="a:1,b:1/s2trt_detector"):
        C.TritonClient("a:1,b:1")
    assert len(opened) == 2 and all(c.closed for c in opened)


def test_latency_figures_stay_bounded_on_an_endless_live_run(monkeypatch):
    """A live camera served through Triton runs for days (30 fps: 2.6 million answers a day): the
    per-server latencies behind the p50/p99 columns are a fixed-size uniform sample of the run, not
    one float per answer."""
    monkeypatch.setattr(P, "LATENCY_SAMPLES", 50, raising=False)
    pool, c = make_pool(["a:1"], max_in_flight=4)
    for i in range(400):
        f = submit(pool, i)
        c["a:1"].pending()[0].answer("r")
        f.result()
    a = pool.servers[0]
    assert a.answered == 400 and len(a.latencies) == 50
    assert "400" in pool.table()
    pool.close()
