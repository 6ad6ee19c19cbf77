"""s2serve supervises its tritonserver (issue 28 items 2 and 3), against real servers on 127.0.0.1:
no server outlives a launcher killed with SIGKILL, a taken port is one line before anything starts,
readiness counts only from the server started here, and a model process that died is noticed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serve_fixtures as F

from s2trt.errors import S2Error
from s2trt.serve import server as S

pytestmark = pytest.mark.skipif(not F.have_tritonserver(), reason=F.NO_SERVER)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return F.demo_repository(tmp_path_factory)


def s2serve(repo: Path, ports: list[int], *extra: str, tmpdir: Path | None = None) -> subprocess.Popen:
    """s2serve in a process of its own; `tmpdir`: its temporary folder's parent (a launcher killed
    with SIGKILL cannot remove its folder, so a test that kills it keeps the folder in its own)."""
    env = dict(os.environ, TMPDIR=str(tmpdir)) if tmpdir is not None else None
    return subprocess.Popen([sys.executable, "-m", "s2trt.serve.cli", str(repo), "--http-port", str(ports[0]),
                             "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def read_until(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    out = ""
    deadline = time.monotonic() + timeout
    while text not in out and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    assert text in out, out
    return out


def children(pid: int, name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", name], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_kill_9_of_s2serve_leaves_no_tritonserver(repo, tmp_path):
    ports = [S.free_port() for _ in range(3)]
    proc = s2serve(repo, ports, tmpdir=tmp_path)
    try:
        read_until(proc, "Ctrl-C")
        [server] = children(proc.pid, "tritonserver")
        stubs = children(server, S.STUB)
        assert stubs
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_for(lambda: gone(server), 10, "tritonserver to die with s2serve")
        wait_for(lambda: all(gone(p) for p in stubs), 20, "the model processes to end")
        wait_for(lambda: all(port_free(p) for p in ports), 10, "the ports to be free")
    finally:
        stop(proc)


def test_a_second_s2serve_on_busy_ports_fails_at_once_with_one_line(repo):
    with S.TritonServer(repo) as first:
        e = first.endpoints
        for ports in ([e.http, e.grpc, e.metrics], [S.free_port(), e.grpc, S.free_port()]):
            t0 = time.monotonic()
            proc = s2serve(repo, ports)
            out, _ = proc.communicate(timeout=60)
            lines = out.strip().splitlines()
            assert proc.returncode == 1 and len(lines) == 1, out
            assert lines[0].startswith("s2serve: error:") and "already in use" in lines[0], lines
            assert "Triton is ready" not in out
            assert time.monotonic() - t0 < 20  # no server was started: the time to import s2trt
        assert first._ready()  # the first one is untouched


def test_readiness_of_another_server_is_never_taken_for_ours(repo, monkeypatch):
    """A port check passes and the port is taken just after (a race): the server answering is not ours."""
    with S.TritonServer(repo) as first:
        second = S.TritonServer(repo, http_port=first.endpoints.http)
        monkeypatch.setattr(second, "check_ports", lambda: None)
        with pytest.raises(S2Error, match=r"another server|exited"):
            second.start(timeout=60)
        assert not second.running()


def test_a_dead_model_process_is_noticed_and_the_server_restarted(repo):
    import tritonclient.grpc as g

    ports = [S.free_port() for _ in range(3)]
    proc = s2serve(repo, ports)
    try:
        read_until(proc, "Ctrl-C")
        [server] = children(proc.pid, "tritonserver")
        [stub] = children(server, S.STUB)
        os.kill(stub, signal.SIGKILL)
        out = read_until(proc, "Triton is ready again", timeout=180)
        assert "s2trt_detector_0_0" in out and f"pid {stub}" in out, out
        [again] = children(proc.pid, "tritonserver")
        assert again != server and children(again, S.STUB)
        c = g.InferenceServerClient(f"127.0.0.1:{ports[1]}")
        try:
            assert F.infer_one_frame(c).shape == (1, 1)
        finally:
            c.close()
    finally:
        stop(proc)
