"""s2serve: serve an s2trt model on Triton Inference Server.

    s2serve export model.onnx REPO [--instances 2 --max-batch 8 ...]   write a model repository
    s2serve REPO [--http-port 8000 --grpc-port 8001 --metrics-port 8002]  run tritonserver on it

The server listens on 127.0.0.1 unless --host says otherwise, and the protocols beyond inference
(shared memory, model loading, trace, logging) need the key in $S2TRT_ADMIN_KEY.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from s2trt.cli import add_verbosity, run_main
from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS  # struct and re only: --help stays instant
from s2trt.errors import EXIT_OK, S2Error

log = logging.getLogger("s2trt.serve")


USAGE = """s2serve export MODEL REPO [options]   write a Triton model repository (s2serve export -h)
       s2serve REPO [options] [-- TRITONSERVER_OPTIONS]   serve it (s2serve -h)"""

EPILOG = """examples:
  s2serve export demo.onnx models/ --instances 2        CPU instances on ONNX Runtime
  s2serve export yolov5s-s2.engine models/ --kind gpu --gpus 0 1 --ensemble --plugin-lib libs2trt_plugins.so
  s2serve models/                                        then: s2infer --triton localhost:8001 video.mp4
  s2infer --triton host1:8001,host2:8001 video.mp4       several servers: spread, with failover
  s2serve models/ -- --backend-config=tensorrt,plugins=/opt/s2trt/libs2trt_plugins.so
  s2serve models/ --host 0.0.0.0                         reachable from other machines (see below)

security: the default --host 127.0.0.1 serves this machine only. --host 0.0.0.0 lets anyone who can
reach the ports run inference and read the model's metadata and statistics, without authentication
or TLS: put it behind a firewall or an authenticating proxy. Shared memory, model loading, trace and
logging stay refused unless a request carries the header s2trt-admin-key (gRPC metadata
triton-grpc-protocol-s2trt-admin-key) equal to $S2TRT_ADMIN_KEY; with that variable unset, nobody
can use them. The key reaches tritonserver through a file only your user can read, never its command
line (which every local user can read), by a small library compiled with the C compiler (cc) at start."""


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2serve export", description="Write a Triton model repository for an s2trt model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="portable .onnx or TensorRT .engine written by s2export")
    p.add_argument("repo", help="model repository folder to write (created if missing)")
    p.add_argument("--max-batch", type=int, default=8, help="max_batch_size of the models (default 8)")
    p.add_argument("--instances", type=int, default=None,
                   help="model instances per device (default: CPU: one per core here, at most 8; GPU: 1)")
    p.add_argument("--kind", choices=("cpu", "gpu"), default=None,
                   help="instance kind (default: gpu for an engine, cpu for an ONNX model)")
    p.add_argument("--gpus", type=int, nargs="+", default=[], help="GPU ids for --kind gpu (default all)")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="how long the dynamic batcher waits to fill a batch (default 2000)")
    p.add_argument("--conf-thres", type=float, default=0.25)
    p.add_argument("--iou-thres", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=300, help="detections per image; outputs are padded to it")
    p.add_argument("--agnostic-nms", action="store_true")
    p.add_argument("--cpu-threads", type=int, default=None,
                   help="ONNX Runtime threads per CPU instance (default: the cores here / instances, so "
                        "1 up to 8 cores; 0: ONNX Runtime's own, every core)")
    p.add_argument("--ensemble", action="store_true",
                   help="also write preprocess -> engine -> postprocess as an ensemble (tensorrt_plan "
                        "for an engine)")
    p.add_argument("--plugin-lib",
                   help="libs2trt_plugins.so the served model loads (a path on the server). Either way, the "
                        "library the engine was built with (same SHA-256), when found here, is copied "
                        "beside the engine, where the served model finds it without this option")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse encoded images whose header declares more pixels, before decoding "
                        f"(default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--python-path", nargs="+", default=None,
                   help="site-packages folders Triton's Python backend adds (default: this environment's)")
    add_verbosity(p)
    return p


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2serve", usage=USAGE,
        description="Serve an s2trt model repository on Triton Inference Server (`s2serve export MODEL REPO` "
                    "writes one). Options after -- go to tritonserver as they are, e.g. "
                    "-- --backend-config=tensorrt,plugins=/path/libs2trt_plugins.so",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repo", help="model repository folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                        "interface, see security below)")
    p.add_argument("--http-port", type=int, default=8000, help="0: any free port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="(default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics (default 8002)")
    p.add_argument("--tritonserver", help="tritonserver binary (default: $S2TRT_TRITONSERVER, PATH, "
                                          "then the one in the nvidia-pytriton wheel)")
    p.add_argument("--log-file", help="write the server's log here (default: a temporary file)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for readiness")
    add_verbosity(p)
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        args = _export_parser().parse_args(argv[1:])
        args.command = "export"
    else:
        cut = argv.index("--") if "--" in argv else len(argv)
        args = _serve_parser().parse_args(argv[:cut])
        args.command = "serve"
        args.server_args = argv[cut + 1:]
    return args


def _export(args: argparse.Namespace) -> int:
    from s2trt.serve.repository import RepoOptions, export_repository

    opts = RepoOptions(max_batch_size=args.max_batch, instances=args.instances, kind=args.kind,
                       gpus=args.gpus, queue_delay_us=args.queue_delay_us, conf_thres=args.conf_thres,
                       iou_thres=args.iou_thres, max_det=args.max_det, agnostic=args.agnostic_nms,
                       cpu_threads=args.cpu_threads, python_path=args.python_path,
                       plugin_lib=args.plugin_lib, ensemble=args.ensemble, max_pixels=args.max_pixels)
    models = export_repository(args.model, args.repo, opts)
    print(f"wrote {args.repo}: {', '.join(models)}; serve it with: s2serve {args.repo}")
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from s2trt.serve.server import ADMIN_HEADER, ENV_ADMIN_KEY, RESTRICTED, TritonServer

    server = TritonServer(args.repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, binary=args.tritonserver, log_path=args.log_file,
                          extra_args=args.server_args, verbose=1 if args.verbose else 0,
                          admin_key=os.environ.get(ENV_ADMIN_KEY) or None)
    where = "all interfaces" if args.host in ("0.0.0.0", "") else args.host
    if args.host not in ("127.0.0.1", "localhost"):
        log.warning("listening on %s: anyone who can reach these ports can run inference (no "
                    "authentication, no TLS)", where)
    server.check_ports()  # before anything else: a taken port is one line, at once
    log.info("starting %s on %s", server.install.binary, server.repository)
    started = time.monotonic()
    # The server runs in a session of its own, so a SIGTERM to us (docker stop, systemd) would orphan
    # it: treat SIGTERM like Ctrl-C and stop it in order. SIGINT too, even where a non-interactive
    # shell started us in the background with SIGINT ignored, so `kill -INT` always stops the server.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        server.start(timeout=args.startup_timeout)
        e = server.endpoints
        print(f"Triton is ready ({time.monotonic() - started:.1f} s), serving {server.repository} "
              f"on {where}\n"
              f"  gRPC     {e.host}:{e.grpc}    (s2infer --triton {e.host}:{e.grpc} SOURCE)\n"
              f"  HTTP     {e.http_url}\n  metrics  {e.metrics_url}\n"
              f"  admin    {', '.join(RESTRICTED)}: "
              + (f"with the header {ADMIN_HEADER}: ${ENV_ADMIN_KEY}" if os.environ.get(ENV_ADMIN_KEY)
                 else f"off (set {ENV_ADMIN_KEY} to allow them with a key)")
              + f"\n  log      {server.log_file}\nPress Ctrl-C to stop.", flush=True)
        while server.running():
            lost = server.lost_models()
            if lost:
                # Triton would go on saying ready while every request to that instance fails.
                log.warning("the model process of %s died: restarting tritonserver (not ready meanwhile)",
                            ", ".join(lost))
                server.restart(timeout=args.startup_timeout)
                log.warning("Triton is ready again (%s)", server.log_file)
            time.sleep(0.5)
        raise S2Error(f"tritonserver exited with code {server.proc.returncode if server.proc else '?'}; "
                      f"its log ends with:\n{server.log_tail()}")
    except KeyboardInterrupt:  # the normal way to stop a server: not an error
        print("stopping Triton ...", flush=True)
        return EXIT_OK
    finally:
        # A second Ctrl-C while the server drains must not skip stop() and orphan tritonserver.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code = server.stop()
        if code is not None:
            log.info("tritonserver stopped (exit code %s)", code)


def _main(args: argparse.Namespace) -> int:
    return _export(args) if args.command == "export" else _serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2serve", parse, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
