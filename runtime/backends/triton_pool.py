"""Several Triton servers behind one client: spreading, failover, probing, per-server figures.

Each request goes to the live server with the fewest outstanding requests. When a server fails (the
connection drops, or a request gets no answer within the timeout) it is taken out, its unanswered
requests are cancelled there and sent to the others, and it is probed again with exponential backoff
until it answers, serves the same model and can run it, when it rejoins. Every request resolves
exactly once: an attempt that the request has moved on from is ignored. A request fails only when it
is rejected (the server refused the request itself: the same on any server), when no server is left
to try, or when it went unanswered twice per server (servers that rejoin but never answer).

The status decides. A request is re-sent when its server did not answer or answered with a fault of
its own (INTERNAL: e.g. its model process died, and Triton still says ready; UNAVAILABLE; UNKNOWN),
never when it refused the request (INVALID_ARGUMENT: the served model's refusal of a bad frame or bad
parameters). A request whose content kills every server it reaches would still reach each live
server once; the served model refuses image bombs from the header for that reason.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s2trt.errors import S2Error

log = logging.getLogger(__name__)

# A channel of its own per connection (no subchannel shared with an earlier, failed one, whose
# reconnect backoff gRPC would otherwise apply), and tritonclient's own message size limits.
CHANNEL_ARGS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.use_local_subchannel_pool", 1)]
# Latencies kept per server for the p50/p99 of the end-of-run table: a uniform sample of the whole
# run (reservoir sampling), so a live camera served for days keeps a fixed memory.
LATENCY_SAMPLES = 10_000
# Status codes that mean "no answer from this server", or a fault of this server rather than of the
# request (Triton: TRITONSERVER_ERROR_INTERNAL/UNKNOWN; the served model answers INVALID_ARG for what a
# request did wrong); anything else is the server's answer.
SERVER_FAULTS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL", "UNKNOWN")


class Unreachable(S2Error):
    """No answer from a server (as opposed to an answer that says it cannot serve us)."""


class NoServerLeft(Unreachable):
    """Every server failed. The run stops here, but every frame before this one got its result, so
    what was written so far is whole: a caller may publish it as after Ctrl-C."""

    outputs_complete = True


def parse_urls(spec: str | Sequence[str]) -> list[str]:
    """"host1:8001,host2:8001" (or a list) -> the distinct HOST:PORT addresses, in the given order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    urls = [u.strip() for u in items if u.strip()]
    if not urls:
        raise S2Error("no Triton server given: --triton HOST:PORT[,HOST:PORT...]")
    for u in urls:
        host, _, port = u.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise S2Error(f"Triton address {u!r} is not HOST:PORT (e.g. localhost:8001)")
    if len(set(urls)) != len(urls):
        raise S2Error(f"a Triton server is named twice in {','.join(urls)}")
    return urls


def server_fault(error: Exception) -> bool:
    """The server did not answer, or failed on its own side: another server may well succeed."""
    status = str(getattr(error, "status", lambda: "")() or "")
    msg = (getattr(error, "message", lambda: str(error))() or str(error)).lower()
    # gRPC refuses a call on a closed channel before anything is sent (ValueError, grpc/_channel.py).
    return (any(status.endswith(s) for s in SERVER_FAULTS) or "failed to connect" in msg
            or "socket closed" in msg or "closed channel" in msg)


def message(error: Exception) -> str:
    text = (getattr(error, "message", lambda: str(error))() or str(error)).strip()
    if text.startswith("failed to connect to all addresses"):  # gRPC's chain ends with the cause
        return text.rsplit(": ", 1)[-1]
    return text


@dataclass
class Server:
    """One server's connection, state and figures; guarded by the pool's lock."""

    url: str
    client: Any = None  # tritonclient.grpc.InferenceServerClient while up
    up: bool = False
    generation: int = 0  # + 1 each time it goes down: failures of an older connection are old news
    outstanding: int = 0
    inflight: dict[int, Any] = field(default_factory=dict)  # job id -> the call, to cancel it
    answered: int = 0
    failures: int = 0  # times it was taken out
    moved: int = 0  # requests re-sent elsewhere because it did not answer them
    rejoins: int = 0
    latencies: list[float] = field(default_factory=list)  # a sample of LATENCY_SAMPLES at most
    backoff: float = 0.0
    next_probe: float = 0.0
    last_error: str = ""


@dataclass
class _Job:
    id: int
    send: Callable[[Any, Callable[..., None]], Any]  # (client, callback) -> the call
    convert: Callable[[Any], Any]  # the server's result -> what the future gives
    future: Future[Any]
    tried: dict[str, int] = field(default_factory=dict)  # url -> generation it failed in
    attempt: int = 0
    finished: bool = False


class ServerPool:
    """Requests spread over servers with failover. `connect(url)` opens a checked client (or raises
    S2Error); `unreachable(urls, errors)` phrases the error when no server is left."""

    def __init__(self, urls: Sequence[str], connect: Callable[[str], Any],
                 unreachable: Callable[[list[tuple[str, str]]], S2Error], *, max_in_flight: int = 16,
                 probe_backoff: tuple[float, float] = (0.5, 30.0)):
        self.servers = [Server(u) for u in urls]
        # Tries per request: a server that passes its probe but never answers (a stuck model) would
        # otherwise take a request back after each timeout, and a request would bounce for ever.
        self._max_attempts = 2 * len(self.servers)
        self._connect = connect
        self._unreachable = unreachable
        self._initial_backoff, self._max_backoff = probe_backoff
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Condition(threading.RLock())
        self._next_id = 0
        self._sampler = random.Random(0)
        self._turn = 0  # rotates the first choice among servers with equally few outstanding
        self._closed = False
        self._prober = threading.Thread(target=self._probe_loop, name="triton-probe", daemon=True)

    def start(self, connections: dict[str, Any]) -> None:
        """Begin with the clients connected at start-up (url -> client or the S2Error it gave); the
        servers that failed are probed with backoff."""
        with self._lock:
            for s in self.servers:
                got = connections[s.url]
                if isinstance(got, Exception):
                    self._take_out(s, str(got))
                else:
                    s.client, s.up = got, True
        self._prober.start()

    # -- requests --

    def submit(self, send: Callable[[Any, Callable[..., None]], Any], convert: Callable[[Any], Any]
               ) -> Future[Any]:
        """Start a request; `send(client, callback)` issues it, `convert(result)` makes the answer."""
        future: Future[Any] = Future()
        self._slots.acquire()
        with self._lock:
            self._next_id += 1
            job = _Job(self._next_id, send, convert, future)
        self._dispatch(job)
        return future

    @property
    def submitted(self) -> int:
        """Requests submitted so far (each counted once, however often it was re-sent)."""
        return self._next_id

    def _pick(self, job: _Job) -> Server | None:
        n = len(self.servers)
        order = [self.servers[(self._turn + i) % n] for i in range(n)]
        self._turn = (self._turn + 1) % n
        candidates = [s for s in order if s.up and job.tried.get(s.url, -1) != s.generation]
        return min(candidates, key=lambda s: s.outstanding) if candidates else None

    def _dispatch(self, job: _Job) -> None:
        with self._lock:
            server = self._pick(job)
            if server is not None:
                job.attempt += 1
                attempt, generation, client = job.attempt, server.generation, server.client
                server.outstanding += 1
                server.inflight[job.id] = None
        if server is None:
            with self._lock:
                errors = [(s.url, s.last_error) for s in self.servers]
            self._finish(job, error=self._unreachable(errors))
            return
        started = time.perf_counter()

        def callback(result: Any = None, error: Exception | None = None) -> None:
            self._done(job, server, attempt, generation, started, result, error)

        try:
            call = job.send(client, callback)
        except Exception as e:  # refused before it left, e.g. a closed channel
            callback(None, e)
            return
        with self._lock:
            if job.attempt == attempt and job.id in server.inflight:
                server.inflight[job.id] = call
            late = server.generation != generation  # taken out while this call was being issued
        if late:
            call.cancel()

    def _done(self, job: _Job, server: Server, attempt: int, generation: int, started: float,
              result: Any, error: Exception | None) -> None:
        to_cancel: list[Any] = []
        with self._lock:
            server.outstanding -= 1
            if job.attempt == attempt:
                server.inflight.pop(job.id, None)
            if job.finished or job.attempt != attempt:
                return
            if self._closed and error is not None:  # cancelled by close(): nobody waits for it
                error = S2Error("the Triton client was closed before the answer came")
            retry = error is not None and not isinstance(error, S2Error) and server_fault(error)
            if error is None:
                server.answered += 1
                self._sample(server, time.perf_counter() - started)
            elif retry:
                server.moved += 1
                job.tried[server.url] = generation
                if server.generation == generation and server.up:
                    to_cancel = self._take_out(server, message(error))
        for call in to_cancel:  # outside the lock: a cancelled call may call back at once
            call.cancel()
        if error is None:
            try:
                self._finish(job, result=job.convert(result))
            except S2Error as e:
                self._finish(job, error=e)
        elif retry and job.attempt >= self._max_attempts:
            with self._lock:
                errors = [(s.url, s.last_error) for s in self.servers]
            self._finish(job, error=self._unreachable(errors))
        elif retry:
            self._dispatch(job)
        elif isinstance(error, S2Error):
            self._finish(job, error=error)
        else:  # the server refused the request itself: any other server would say the same
            self._finish(job, error=S2Error(f"Triton server at {server.url} rejected the request: "
                                            f"{message(error)}"))

    def _sample(self, server: Server, seconds: float) -> None:
        """Reservoir sampling (Vitter's algorithm R), lock held."""
        if len(server.latencies) < LATENCY_SAMPLES:
            server.latencies.append(seconds)
        else:
            k = self._sampler.randrange(server.answered)
            if k < LATENCY_SAMPLES:
                server.latencies[k] = seconds

    def _finish(self, job: _Job, result: Any = None, error: Exception | None = None) -> None:
        with self._lock:
            if job.finished:
                return
            job.finished = True
        self._slots.release()
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _take_out(self, server: Server, reason: str) -> list[Any]:
        """Mark it down (lock held); its in-flight calls, which the caller cancels."""
        server.up = False
        server.generation += 1
        server.failures += 1
        server.last_error = reason
        server.backoff = self._initial_backoff
        server.next_probe = time.monotonic() + server.backoff
        calls = [c for c in server.inflight.values() if c is not None]
        live = sum(s.up for s in self.servers)
        if live and (server.client is not None or calls):  # with none left, the run's error says it
            log.warning("Triton server %s failed (%s): its %d unanswered request(s) go to the %d other(s)",
                        server.url, reason, len(calls), live)
        self._lock.notify_all()
        return calls

    # -- probing --

    def _probe_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                down = [s for s in self.servers if not s.up]
                due = [s for s in down if s.next_probe <= now]
                if not due:
                    self._lock.wait(min([s.next_probe - now for s in down], default=None))
                    continue
            for s in due:
                try:
                    client = self._connect(s.url)
                except Exception as e:  # S2Error, or anything the connection itself raised
                    with self._lock:
                        s.last_error = str(e)
                        s.backoff = min(s.backoff * 2, self._max_backoff)
                        s.next_probe = time.monotonic() + s.backoff
                    continue
                with self._lock:
                    old, s.client, s.up = s.client, client, True
                    if self._closed:
                        old = client
                    elif s.failures:
                        s.rejoins += 1
                        log.info("Triton server %s is back and takes requests again", s.url)
                if old is not None:
                    old.close()

    # -- figures --

    def table(self) -> str:
        with self._lock:
            rows = [(s.url, s.answered, s.latencies[:], s.failures, s.moved, s.rejoins, s.up)
                    for s in self.servers]
        width = max(len("Triton server"), *(len(r[0]) for r in rows))
        lines = [f"{'Triton server':<{width}}  answered  p50 ms  p99 ms  failed  re-sent  rejoined  state"]
        for url, answered, lat, failures, moved, rejoins, up in rows:
            p50, p99 = (np.percentile(lat, [50, 99]) * 1000) if lat else (float("nan"),) * 2
            lines.append(f"{url:<{width}}  {answered:>8}  {p50:>6.1f}  {p99:>6.1f}  {failures:>6}  "
                         f"{moved:>7}  {rejoins:>8}  {'up' if up else 'down'}")
        return "\n".join(lines)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            clients = [s.client for s in self.servers if s.client is not None]
        if self._prober.is_alive():
            self._prober.join(timeout=10)
        for c in clients:
            c.close()
