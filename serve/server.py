"""Find, start, watch and stop a `tritonserver` process on a model repository.

Two installations are supported: NVIDIA's Triton (a `tritonserver` on PATH, e.g. inside the
`nvcr.io/nvidia/tritonserver` container, whose backends sit in its default folder), and the
binary bundled in the PyPI wheel `nvidia-pytriton`. The wheel ships the Python backend without its
stub and keeps one stub per Python version aside, so for it we assemble a private backend folder
with the stub of the running interpreter, and put the wheel's libraries on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from s2trt import argv_secret
from s2trt.errors import S2Error

log = logging.getLogger(__name__)

ENV_BINARY = "S2TRT_TRITONSERVER"  # an explicit tritonserver binary, checked before PATH and the wheel
ENV_ADMIN_KEY = "S2TRT_ADMIN_KEY"  # the key that unlocks RESTRICTED; unset: nobody can use them

# What a client could do with these beyond inference: register shared-memory regions (the server then
# writes into them), load and unload models, turn on tracing or verbose logging to fill the disk.
# Health, metadata, model config (s2infer reads the model's metadata from it), inference and
# statistics stay open.
RESTRICTED = ("shared-memory", "model-repository", "trace", "logging")
ADMIN_HEADER = "s2trt-admin-key"  # HTTP header; gRPC clients send it as GRPC_ADMIN_HEADER
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"  # the prefix is Triton's, for gRPC metadata
# Without a key the restricted protocols ask for a header that no client can send, so nobody can use
# them and nothing secret is needed: a field name cannot hold a colon (HTTP/1.1 ends the name there,
# RFC 9110 5.6.2; gRPC resets an HTTP/2 stream whose metadata key has one, measured with a raw HTTP/2
# client in tests/serve/test_serve_lockdown.py). Triton splits its option at the first colon only.
CLOSED_HEADER = "s2trt:admin-off"
SHM_DIR = Path("/dev/shm")
STUB = "triton_python_backend_stub"  # the Python backend's model process, one per model instance
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
READY_PATH, LIVE_PATH = "/v2/health/ready", "/v2/health/live"  # HTTP; what probes should ask

# The Prometheus series (metrics port) that say how the model is served. All are counters per model
# and version; per-request means are ratios of rates, e.g. the queue time per request is
# rate(nv_inference_queue_duration_us[1m]) / rate(nv_inference_request_success[1m]).
METRICS = {
    # A request the model refuses (an undecodable image, an image bomb) is answered with an error yet
    # counted as a success by Triton 2.51's Python backend (measured): only the client sees the error.
    "nv_inference_request_success": "requests answered by the model (the request rate)",
    "nv_inference_request_failure": "requests that failed inside Triton (the model crashed, cancelled)",
    "nv_inference_count": "images that reached the model (a request may carry several)",
    "nv_inference_exec_count": "batches executed: count / exec_count is the mean dynamic batch size",
    "nv_inference_queue_duration_us": "microseconds requests waited for an instance: grows first "
                                      "when the server is short of capacity (what the HPA scales on)",
    "nv_inference_compute_infer_duration_us": "microseconds in the model itself (letterbox, network, NMS)",
    "nv_inference_request_duration_us": "microseconds from arrival to answer, all included",
}


@dataclass
class TritonInstall:
    """A tritonserver binary and what it needs around it."""

    binary: Path
    backends: Path | None = None  # the wheel's backend folder; None: the server's own default
    stubs: Path | None = None  # the wheel's per-Python-version stubs of the Python backend
    libs: list[Path] = field(default_factory=list)  # for LD_LIBRARY_PATH

    @property
    def bundled(self) -> bool:
        return self.backends is not None


def _wheel_install() -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    binary = root / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    libs = [p for p in (root.parent / "nvidia_pytriton.libs",) if p.is_dir()]
    return TritonInstall(binary, root / "tritonserver" / "backends",
                         root / "tritonserver" / "python_backend_stubs", libs)


def find_tritonserver(explicit: str | os.PathLike[str] | None = None) -> TritonInstall:
    """The binary to run: `explicit`, $S2TRT_TRITONSERVER, `tritonserver` on PATH, then the wheel's."""
    chosen = explicit or os.environ.get(ENV_BINARY)
    if chosen:
        path = Path(chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise S2Error(f"tritonserver binary {path} does not exist or is not executable")
        wheel = _wheel_install()
        if wheel is not None and path.resolve() == wheel.binary.resolve():
            return wheel
        return TritonInstall(path)
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(Path(on_path))
    wheel = _wheel_install()
    if wheel is not None:
        return wheel
    raise S2Error("no Triton Inference Server found: run inside NVIDIA's tritonserver container, put "
                  "`tritonserver` on PATH, or (x86_64) `pip install --no-deps nvidia-pytriton` for the one "
                  "bundled in that wheel")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_launcher() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL the server when the thread that started it ends, so
    a launcher killed with SIGKILL (or by the OOM killer) leaves no server holding its ports. The
    Python backend's model processes end by themselves once the server is gone. None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing may be loaded between fork and exec
    launcher = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != launcher:  # the launcher died before the line above could take effect
            os._exit(1)

    return preexec


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]  # the name in parentheses may hold spaces
    return state, int(ppid)


def _python_backend_dir(install: TritonInstall, dest: Path) -> Path:
    """A backend folder whose Python backend has the stub of this interpreter's version."""
    assert install.backends is not None and install.stubs is not None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in install.stubs.iterdir()) if install.stubs.is_dir() else []
        raise S2Error(f"the bundled Triton has no Python backend stub for Python {version} "
                      f"(it has {', '.join(have) or 'none'}): use one of those Python versions")
    shutil.copytree(install.backends, dest, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, dest / "python" / "triton_python_backend_stub")
    return dest


@dataclass
class Endpoints:
    host: str
    http: int
    grpc: int
    metrics: int

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics}/metrics"


class TritonServer:
    """One tritonserver process; a context manager that stops it (and its Python stubs) on exit.

    Ports of 0 are replaced by free ones. `log_path` receives the server's output (a temporary file
    when None), whose tail is quoted when the server fails to start. The server is killed when the
    thread that started it ends (start it from a thread that outlives it: the main thread).
    """

    def __init__(self, repository: str | os.PathLike[str], *, host: str = "127.0.0.1", http_port: int = 0,
                 grpc_port: int = 0, metrics_port: int = 0, binary: str | os.PathLike[str] | None = None,
                 log_path: str | os.PathLike[str] | None = None, extra_args: list[str] | None = None,
                 verbose: int = 0, admin_key: str | None = None):
        if ":" in host:
            # Triton joins address and port as ADDRESS:PORT, which an IPv6 literal cannot take
            # ("::1:8001": its gRPC service fails to start, measured with Triton 2.51).
            raise S2Error(f"IPv6 address {host!r} is not supported by s2serve: use 127.0.0.1 (this machine) "
                          "or 0.0.0.0 (every interface)")
        self.repository = Path(repository).resolve()
        if not (self.repository.is_dir() and any(p.joinpath("config.pbtxt").is_file()
                                                 for p in self.repository.iterdir())):
            raise S2Error(f"{repository} is not a Triton model repository (no <model>/config.pbtxt "
                          "in it): write one with `s2serve export MODEL REPO`")
        self.install = find_tritonserver(binary)
        probe = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.endpoints = Endpoints(probe, http_port or free_port(probe), grpc_port or free_port(probe),
                                   metrics_port or free_port(probe))
        self.bind_host = host
        self.extra_args = list(extra_args or [])
        self.verbose = verbose
        # With a key, Triton gets it through argv_secret, never on its command line (ps, /proc show
        # that to every local user); without one, the protocols ask for CLOSED_HEADER.
        if admin_key is not None:
            argv_secret.check_secret(admin_key, f"the admin key (${ENV_ADMIN_KEY})")
        self.admin_key = admin_key
        # The Python backend names its /dev/shm regions with this prefix; a killed server leaves them
        # behind, so stop() removes what carries our (per-server) prefix.
        self.shm_prefix = f"s2trt_{secrets.token_hex(6)}_"
        # Triton's --id, which its metadata (GET /v2) names: readiness counts only from this server,
        # never from another one answering on the same port.
        self.server_id = f"s2trt-{secrets.token_hex(8)}"
        self._model_pids: dict[int, str] = {}  # model process -> its instance, seen when it got ready
        self._log_arg = Path(log_path) if log_path else None
        self._log_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._secret: tuple[Path, Path] | None = None  # (preload library, key file) while starting

    @property
    def log_file(self) -> Path:
        assert self._log_path is not None, "the server has not been started"
        return self._log_path

    def command(self, backend_dir: Path | None) -> list[str]:
        e = self.endpoints
        cmd = [str(self.install.binary), f"--model-repository={self.repository}",
               f"--http-address={self.bind_host}", f"--http-port={e.http}",
               f"--grpc-address={self.bind_host}", f"--grpc-port={e.grpc}",
               f"--metrics-address={self.bind_host}", f"--metrics-port={e.metrics}",
               "--allow-metrics=true", "--exit-timeout-secs=10", f"--log-verbose={self.verbose}",
               f"--id={self.server_id}",
               f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        # Triton's syntax: <protocols>:<header>=<value> (`tritonserver --help`).
        guard = (f"{ADMIN_HEADER}={argv_secret.PLACEHOLDER}" if self.admin_key is not None
                 else f"{CLOSED_HEADER}=off")
        restricted = f"{','.join(RESTRICTED)}:{guard}"
        cmd += [f"--grpc-restricted-protocol={restricted}", f"--http-restricted-api={restricted}"]
        if backend_dir is not None:
            cmd.append(f"--backend-directory={backend_dir}")
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.install.bundled:
            # The stub embeds libpython: prefer this interpreter's own, so the model runs on the same
            # Python build the packages were installed for, then the wheel's libraries.
            libdir = sysconfig.get_config_var("LIBDIR")
            paths = [p for p in [libdir, *map(str, self.install.libs)] if p and Path(p).is_dir()]
            if env.get("LD_LIBRARY_PATH"):
                paths.append(env["LD_LIBRARY_PATH"])
            env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
        if self._secret is not None:
            env = argv_secret.environment(env, *self._secret)
        return env

    def check_ports(self) -> None:
        """One clear line when a port is taken, before anything starts (another s2serve, a leftover
        server): Triton would only say so in its log, after loading the models."""
        host = self.bind_host or "0.0.0.0"
        for what, port in (("http", self.endpoints.http), ("grpc", self.endpoints.grpc),
                           ("metrics", self.endpoints.metrics)):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT is fine
                try:
                    s.bind((host, port))
                except OSError as e:
                    why = "already in use" if e.errno == errno.EADDRINUSE else e.strerror
                    raise S2Error(f"{what} port {port} on {host} is {why} (another tritonserver or "
                                  f"s2serve?): stop it, or choose another with --{what}-port (0: any free "
                                  "port)") from None

    def start(self, timeout: float = 120.0) -> TritonServer:
        self.check_ports()
        self._tmp = tempfile.TemporaryDirectory(prefix="s2trt-triton-")
        try:
            self._launch(Path(self._tmp.name))
            self.wait_ready(timeout)
            self._model_pids = self.model_processes()
        except BaseException:
            self.stop()
            raise
        if self._secret is not None:  # read by the server at exec: not needed on disk any longer
            self._secret[1].unlink(missing_ok=True)
        return self

    def _launch(self, tmp: Path) -> None:
        backend_dir = _python_backend_dir(self.install, tmp / "backends") if self.install.bundled else None
        self._log_path = self._log_arg or tmp / "tritonserver.log"
        if self.admin_key is not None:
            key_file = tmp / "admin.key"  # the folder is this user's alone (mode 0700)
            argv_secret.write_secret(key_file, self.admin_key)
            self._secret = (argv_secret.build_library(tmp, f"the admin key (${ENV_ADMIN_KEY})",
                                                      "unset the key (the admin protocols are then off)"),
                            key_file)
        cmd = self.command(backend_dir)
        log.debug("starting %s", " ".join(cmd))
        with open(self._log_path, "ab") as out:
            # A session of its own: Ctrl-C in a terminal reaches only us, and we stop the server in order.
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.environment(),
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_launcher())

    def _ready(self) -> bool:
        """Ready, and the server answering is this one."""
        try:
            with urllib.request.urlopen(f"{self.endpoints.http_url}{READY_PATH}", timeout=2) as r:
                if r.status != 200:
                    return False
            with urllib.request.urlopen(f"{self.endpoints.http_url}/v2", timeout=2) as r:
                name = json.loads(r.read()).get("name")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        if name != self.server_id:
            raise S2Error(f"another server ({name!r}) answers on {self.endpoints.http_url}, not the "
                          "tritonserver started here: stop it, or choose other ports")
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise S2Error(f"tritonserver exited with code {self.proc.returncode} while starting; "
                              f"its log ({self.log_file}) ends with:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.25)
        raise S2Error(f"tritonserver was not ready after {timeout:.0f} s; its log ({self.log_file}) "
                      f"ends with:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def model_processes(self) -> dict[int, str]:
        """The server's Python-backend model processes: pid -> model instance name."""
        if self.proc is None or not Path("/proc").is_dir():
            return {}
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = _proc_stat(int(entry.name))
            if stat is None or stat[1] != self.proc.pid or stat[0] == "Z":
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if argv and argv[0].endswith(STUB):
                found[int(entry.name)] = argv[-3] if len(argv) > 3 else "?"  # ... INSTANCE KIND ''
        return found

    def lost_models(self) -> list[str]:
        """Model instances whose process died since the server got ready (killed, out of memory). The
        Python backend does not restart them: the server, and the model, still say ready while every
        request to that instance fails (INTERNAL "Stub process is not healthy")."""
        lost = []
        for pid, instance in self._model_pids.items():
            stat = _proc_stat(pid)
            if stat is None or stat[0] == "Z" or self.proc is None or stat[1] != self.proc.pid:
                lost.append(f"{instance} (pid {pid})")
        return lost

    def restart(self, timeout: float = 120.0) -> None:
        """Stop (SIGKILL: a server whose model process died may not drain) and start on the same ports."""
        self.kill()
        self.stop()
        self.start(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (Triton unloads models and exits), then SIGKILL to the whole group if it hangs."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver did not stop within %.0f s: killing it", timeout)
            self.kill()
            code = self.proc.returncode
            self.remove_shm()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._secret = None
        return code

    def shm_regions(self) -> list[Path]:
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*")) if SHM_DIR.is_dir() else []

    def remove_shm(self) -> None:
        """The Python backend's regions of this server: a server that died cannot remove them itself."""
        for region in self.shm_regions():
            with contextlib.suppress(OSError):
                region.unlink()

    def kill(self) -> None:
        """SIGKILL the server and the Python stubs it started (they share its process group)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> TritonServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
