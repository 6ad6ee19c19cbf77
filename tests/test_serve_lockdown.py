"""s2serve's locked-down defaults against a real tritonserver on 127.0.0.1: the non-inference protocols
refused without the admin key (inference still served), loopback by default, the Python backend's
/dev/shm regions removed even after the server was killed, and a usage line that names both forms."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import serve_fixtures as F

from s2trt.errors import S2Error
from s2trt.serve import cli
from s2trt.serve import server as S

needs_server = pytest.mark.skipif(not F.have_tritonserver(), reason=F.NO_SERVER)
KEY = "test-admin-key-1234"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    model = F.export_demo_model(tmp_path_factory.mktemp("model") / "demo.onnx")
    return F.small_repository(model, tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def server(repo):
    with S.TritonServer(repo, admin_key=KEY) as s:
        yield s


def http(server, method: str, path: str, body: dict | None = None, key: str | None = None) -> int:
    return F.http_status(server.endpoints.http_url + path, method, body, key)


# Triton 2.51's HTTP routes (docs: protocol/extension_{logging,trace,shared_memory,model_repository}.md).
RESTRICTED_HTTP = [("GET", "/v2/logging", None), ("POST", "/v2/logging", {"log_verbose_level": 1}),
                   ("GET", "/v2/trace/setting", None), ("GET", "/v2/systemsharedmemory/status", None),
                   ("POST", "/v2/systemsharedmemory/region/r/register",
                    {"key": "/r", "offset": 0, "byte_size": 64}),
                   ("POST", "/v2/repository/index", {}),
                   ("POST", "/v2/repository/models/s2trt_detector/unload", {})]


@needs_server
@pytest.mark.parametrize("method, path, body", RESTRICTED_HTTP)
def test_http_admin_apis_refused_without_the_key(server, method, path, body):
    assert http(server, method, path, body) == 403
    assert http(server, method, path, body, key="wrong") == 403


@needs_server
def test_http_admin_api_answers_with_the_key_and_health_stays_open(server):
    assert http(server, "GET", "/v2/logging", key=KEY) == 200
    assert http(server, "GET", "/v2/health/ready") == 200
    assert http(server, "GET", "/v2/models/s2trt_detector/config") == 200


@needs_server
def test_grpc_admin_protocols_refused_without_the_key_inference_still_works(server):
    import tritonclient.grpc as g

    c = g.InferenceServerClient(server.endpoints.grpc_url)
    try:
        calls = [c.get_log_settings, c.get_trace_settings, c.get_system_shared_memory_status,
                 c.get_cuda_shared_memory_status, c.get_model_repository_index,
                 lambda **k: c.update_log_settings({"log_verbose_level": 1}, **k),
                 lambda **k: c.register_system_shared_memory("r", "/r", 64, **k),
                 lambda **k: c.unload_model("s2trt_detector", **k)]
        for call in calls:
            with pytest.raises(g.InferenceServerException, match="restricted"):
                call()
            with pytest.raises(g.InferenceServerException, match="restricted"):
                call(headers={S.GRPC_ADMIN_HEADER: "wrong"})
        assert "log_verbose_level" in str(c.get_log_settings(headers={S.GRPC_ADMIN_HEADER: KEY}))
        assert c.is_model_ready("s2trt_detector")  # the refused unload did not happen

        frame = F.sample_images(1)[0][None]
        inp = g.InferInput("FRAME", list(frame.shape), "UINT8")
        inp.set_data_from_numpy(frame)
        assert c.infer("s2trt_detector", [inp]).as_numpy("num_dets").shape == (1, 1)
    finally:
        c.close()


def _sent(server, key: str) -> int | str:
    """The HTTP status for the key as a client would send it, or why the client refused to."""
    try:
        return http(server, "GET", "/v2/logging", key=key)
    except ValueError as e:  # http.client: "Invalid header value"
        return str(e)


@needs_server
def test_without_a_key_nobody_can_use_the_admin_protocols(repo):
    import tritonclient.grpc as g

    with S.TritonServer(repo) as s:
        assert s.admin_key and len(s.admin_key) >= 32  # random, never printed
        assert http(s, "GET", "/v2/logging") == 403
        assert http(s, "GET", "/v2/health/ready") == 200
        # Triton takes the key on its command line, which every local user can read (ps, /proc): the
        # key made up for "off" must be one that no client can send. A header value cannot hold a
        # line break (HTTP/1.1 ends the field there, RFC 9110 5.5; gRPC refuses it as invalid metadata).
        argv = Path(f"/proc/{s.proc.pid}/cmdline").read_bytes().decode().split("\0")
        seen = next(a for a in argv if a.startswith("--http-restricted-api=")).split("=", 2)[2]
        assert seen == s.admin_key
        for key in (seen, seen.replace("\n", ""), seen.replace("\n", " "), seen.split("\n")[0]):
            assert _sent(s, key) != 200, repr(key)
        c = g.InferenceServerClient(s.endpoints.grpc_url)
        try:
            with pytest.raises(g.InferenceServerException):
                c.get_log_settings(headers={S.GRPC_ADMIN_HEADER: seen})
        finally:
            c.close()


def test_s2serve_listens_on_loopback_by_default(tmp_path):
    args = cli.parse([str(tmp_path)])
    assert args.host == "127.0.0.1"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("")
    cmd = S.TritonServer(tmp_path, host=args.host).command(None)
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in cmd


def test_s2serve_takes_the_admin_key_from_the_environment(tmp_path, monkeypatch):
    seen = {}

    class Fake:
        def __init__(self, repo, **kw):
            seen.update(kw)
            raise S.S2Error("stop here")

    monkeypatch.setattr(S, "TritonServer", Fake)
    monkeypatch.setenv(S.ENV_ADMIN_KEY, "from-env")
    assert cli.main([str(tmp_path)]) == 1
    assert seen["admin_key"] == "from-env"


def test_usage_line_names_both_forms(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse([])
    assert e.value.code == 2
    usage = capsys.readouterr().err.split("error:")[0]
    assert "s2serve export MODEL REPO" in usage and "s2serve REPO" in usage


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@needs_server
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_shm_regions_removed_after_the_server_was_killed(repo):
    before = shm_entries()
    srv = S.TritonServer(repo).start()
    try:
        created = shm_entries() - before
        assert created, "the Python backend made no /dev/shm region: nothing to check"
        os.kill(srv.proc.pid, signal.SIGKILL)  # the server alone, as the OOM killer would
        srv.proc.wait(timeout=30)
        assert created & shm_entries()  # what a dead server leaves behind
    finally:
        srv.stop()
    assert not created & shm_entries()


@needs_server
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_s2serve_removes_shm_regions_when_its_server_dies(repo):
    before = shm_entries()
    ports = [S.free_port() for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2trt.serve.cli", str(repo), "--http-port", str(ports[0]),
         "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = ""
        deadline = time.monotonic() + 120
        while "Ctrl-C" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert "Triton is ready" in out and "127.0.0.1" in out, out
        created = shm_entries() - before
        assert created
        server_pid = int(subprocess.run(["pgrep", "-P", str(proc.pid), "tritonserver"], capture_output=True,
                                        text=True).stdout.split()[0])
        os.kill(server_pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "tritonserver exited with code" in rest
        assert not created & shm_entries()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("host", ["::1", "::", "fe80::1%eth0"])
def test_an_ipv6_host_is_one_clear_error(tmp_path, host, capsys):
    """Triton joins address and port as "ADDRESS:PORT" ("::1:8001": its gRPC service fails to start,
    measured with 2.51) and s2serve probed an IPv4 socket (internal error, exit 70): refused up front."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("")
    with pytest.raises(S2Error, match="IPv6"):
        S.TritonServer(tmp_path, host=host)
    assert cli.main([str(tmp_path), "--host", host]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0.0.0.0" in err[0], err
