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
import serve_fixtures as F

from s2trt.errors import S2Error
from s2trt.serve import cli
from s2trt.serve import server as S

needs_server = pytest.mark.skipif(not F.have_tritonserver(), reason=F.NO_SERVER)
KEY = "test-admin-key-1234"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return F.demo_repository(tmp_path_factory)


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

        assert F.infer_one_frame(c).shape == (1, 1)
    finally:
        c.close()


def admin_calls():
    """(gRPC method, request) for each restricted protocol, built from Triton's own protobufs."""
    from tritonclient.grpc import service_pb2 as pb

    verbose = pb.LogSettingsRequest(settings={"log_verbose_level": pb.LogSettingsRequest.SettingValue(
        uint32_param=1)})
    return [("LogSettings", pb.LogSettingsRequest()), ("LogSettings", verbose),
            ("TraceSetting", pb.TraceSettingRequest()),
            ("SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()),
            ("SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(
                name="r", key="/r", offset=0, byte_size=64)),
            ("RepositoryIndex", pb.RepositoryIndexRequest()),
            ("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="s2trt_detector"))]


def visible_to_others(server) -> list[str]:
    """What another local user can read of the server: its command line (ps, /proc/PID/cmdline)."""
    return Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode().split("\0")


def header_guesses(server) -> list[tuple[bytes, bytes]]:
    """Every (header, value) an attacker could build from the restricted-protocol arguments."""
    guesses = []
    for arg in visible_to_others(server):
        if "restricted" in arg:
            name, _, value = arg.split(":", 1)[1].partition("=")
            guesses += [(n.encode(), value.encode()) for n in (name, f"triton-grpc-protocol-{name}")]
    assert guesses
    return guesses


def log_level(server) -> int:
    import tritonclient.grpc as g

    c = g.InferenceServerClient(server.endpoints.grpc_url)
    try:
        return int(c.get_log_settings(headers={S.GRPC_ADMIN_HEADER: KEY}, as_json=True)["settings"][
            "log_verbose_level"]["uint32_param"])
    finally:
        c.close()


@needs_server
def test_without_a_key_nobody_can_use_the_admin_protocols(repo):
    """Raw HTTP/2 and HTTP/1.1 clients send any header the command line suggests, byte for byte: none
    gets through on either protocol, and inference still works."""
    import tritonclient.grpc as g

    with S.TritonServer(repo) as s:
        assert s.admin_key is None
        grpc = s.endpoints.grpc_url
        for method, request in admin_calls():
            for header in header_guesses(s):
                assert F.grpc_raw(grpc, method, request, [header]) != 0, (method, header)
            assert F.grpc_raw(grpc, method, request, []) == 14  # UNAVAILABLE: "restricted"
        for name, value in header_guesses(s):
            assert F.http_raw(s.endpoints.http_url, "GET", "/v2/logging", [(name.decode(), value.decode())]) \
                != 200
        assert http(s, "GET", "/v2/health/ready") == 200
        c = g.InferenceServerClient(grpc)
        try:
            with pytest.raises(g.InferenceServerException, match="restricted"):
                c.get_log_settings(headers={S.GRPC_ADMIN_HEADER: KEY})
            assert F.infer_one_frame(c).shape == (1, 1)
        finally:
            c.close()


@needs_server
def test_the_key_is_never_on_the_servers_command_line(server):
    """With a key, what other users can read (the command line) holds a placeholder, not the key: raw
    HTTP/2 calls with every header built from it are refused; the key itself works over raw HTTP/2."""
    assert not any(KEY in arg for arg in visible_to_others(server))
    assert KEY.encode() not in Path(f"/proc/{server.proc.pid}/environ").read_bytes()  # 0400: ours anyway
    assert not list(server.log_file.parent.glob("*.key"))  # the key's file is gone once the server runs
    grpc = server.endpoints.grpc_url
    before = log_level(server)
    for method, request in admin_calls():
        for header in header_guesses(server):
            assert F.grpc_raw(grpc, method, request, [header]) != 0, (method, header)
    assert log_level(server) == before  # the refused update changed nothing
    key = [(S.GRPC_ADMIN_HEADER.encode(), KEY.encode())]
    assert F.grpc_raw(grpc, "LogSettings", admin_calls()[0][1], key) == 0


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


def test_a_key_without_a_c_compiler_is_one_clear_error(repo, monkeypatch):
    """The key cannot reach the server without the preload library: refused before anything runs."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(S.argv_secret.shutil, "which", lambda name: None)
    server = S.TritonServer(repo, admin_key=KEY)
    with pytest.raises(S2Error, match=r"the admin key .*needs a C compiler \(cc\).*or unset the key"):
        server.start(timeout=30)
    assert server.proc is None and server._tmp is None  # its temporary folder (and key file) removed


@pytest.mark.parametrize("key", ["has space", "line\nbreak", "", "x" * 1025, "é"])
def test_a_key_no_client_could_send_is_refused(tmp_path, key):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("")
    with pytest.raises(S2Error, match="visible ASCII"):
        S.TritonServer(tmp_path, admin_key=key)
