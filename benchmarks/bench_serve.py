"""Triton serving: throughput and latency (p50/p99) against the number of concurrent clients.

Starts the server on an `s2serve export` repository of the model, then for each concurrency level
runs that many client threads, each sending encoded images one request at a time (gRPC), and
reports requests/s and per-request latency. The baseline is the same model in-process (the runtime's
ONNX Runtime backend, one image at a time, no server), on the same images.

    python benchmarks/bench_serve.py                      # random-weight yolov5n-s2 at 320, demo images
    python benchmarks/bench_serve.py --model demo.onnx --instances 2 --concurrency 1 4 16
    python benchmarks/bench_serve.py --demo --servers 1 2 --concurrency 8 16   # scaling out

With `--servers 1 2` each level runs against one server, then against two identical servers on this
machine, every client spreading its requests over them (s2infer --triton a,b: least outstanding
requests first).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def random_model(path: Path, imgsz: int) -> Path:
    """Timing does not depend on the weights: a random yolov5n-s2 with s2trt metadata."""
    import warnings

    import onnx
    import torch

    from s2trt.meta import ModelMeta
    from s2trt.models.yolo import DetectionModel

    model = DetectionModel("yolov5n-s2", nc=5).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 3, imgsz, imgsz), str(path), opset_version=17,
                          input_names=["images"], output_names=["output0"],
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, dynamo=False)
    proto = onnx.load(str(path))
    for k, v in ModelMeta(names=[f"c{i}" for i in range(5)], imgsz=[imgsz, imgsz],
                          batch="dynamic").to_props().items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def demo_model(path: Path, imgsz: int) -> Path:
    """The bundled trained demo checkpoint (demo/assets/demo.pt) exported with a dynamic batch."""
    import onnx

    from s2trt.export.onnx_export import torch_to_onnx
    from s2trt.meta import ModelMeta
    from s2trt.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(ROOT / "demo" / "assets" / "demo.pt")
    proto = torch_to_onnx(loaded, (imgsz, imgsz), None)
    meta = ModelMeta(names=list(loaded.names), imgsz=[imgsz, imgsz], stride=int(max(loaded.stride)),
                     batch="dynamic")
    for k, v in meta.to_props().items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def load_images(folder: Path | None, n: int) -> list[bytes]:
    files = sorted(folder.glob("*.jpg")) if folder and folder.is_dir() else []
    if files:
        return [p.read_bytes() for p in files]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        out.append(cv2.imencode(".jpg", img)[1].tobytes())
    return out


def baseline(model: Path, images: list[bytes], requests: int, threads: int) -> tuple[float, list[float]]:
    from s2trt.detect.options import DetectOptions
    from s2trt.runtime.backends.ort import OrtBackend
    from s2trt.serve.detector import Detector, decode_image

    det = Detector(OrtBackend(model, "cpu", threads), DetectOptions())
    lat = []
    t0 = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        det.detect([decode_image(np.frombuffer(images[i % len(images)], np.uint8), 0)])
        lat.append(time.perf_counter() - t)
    return requests / (time.perf_counter() - t0), lat


def load(url: str, images: list[bytes], clients: int, per_client: int) -> tuple[float, list[float], int]:
    from s2trt.errors import S2Error
    from s2trt.runtime.backends.triton import TritonClient

    lat: list[float] = []
    errors = [0]

    def worker(k: int) -> None:
        with TritonClient(url) as c:
            for j in range(per_client):
                t = time.perf_counter()
                try:
                    c.submit(images[(k + j) % len(images)]).result()
                except S2Error:
                    errors[0] += 1
                lat.append(time.perf_counter() - t)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(lat) / (time.perf_counter() - t0), lat, errors[0]


def ms(lat: list[float], q: float) -> float:
    return float(np.percentile(lat, q) * 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="portable .onnx (default: random yolov5n-s2)")
    p.add_argument("--demo", action="store_true", help="the bundled trained demo model (demo.pt) at --imgsz")
    p.add_argument("--servers", type=int, nargs="+", default=[1],
                   help="numbers of identical local servers to compare (e.g. 1 2)")
    p.add_argument("--imgsz", type=int, default=320, help="input size of the random model")
    p.add_argument("--images", type=Path, default=ROOT / "demo" / "assets" / "images")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    p.add_argument("--instances", type=int, default=None, help="default: s2serve export's, from the cores")
    p.add_argument("--cpu-threads", type=int, default=None,
                   help="ONNX Runtime threads per instance (default: s2serve export's, from the cores)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-delay-us", type=int, default=2000)
    a = p.parse_args()

    from s2trt.serve.repository import RepoOptions, export_repository, with_core_defaults
    from s2trt.serve.server import TritonServer

    with tempfile.TemporaryDirectory() as tmp:
        if a.demo:
            model = demo_model(Path(tmp) / "demo.onnx", a.imgsz)
        else:
            model = a.model or random_model(Path(tmp) / "bench.onnx", a.imgsz)
        images = load_images(a.images, 8)
        repo = Path(tmp) / "repo"
        opts = with_core_defaults(RepoOptions(max_batch_size=a.max_batch, instances=a.instances, kind="cpu",
                                              cpu_threads=a.cpu_threads, queue_delay_us=a.queue_delay_us))
        export_repository(model, repo, opts)
        layout = f"{opts.instances} instance(s) x {opts.cpu_threads or 'default'} thread(s)"
        base_rps, base_lat = baseline(model, images, min(a.requests, 100), 0)  # ONNX Runtime's own threads
        rows = [("in-process (no server)", 1, base_rps, ms(base_lat, 50), ms(base_lat, 99), 0)]
        for n in a.servers:
            servers = []
            try:
                for _ in range(n):
                    servers.append(TritonServer(repo).start())
                url = ",".join(s.endpoints.grpc_url for s in servers)
                load(url, images, 2, 10)  # warm-up: sessions, connections
                for c in a.concurrency:
                    rps, lat, err = load(url, images, c, max(1, a.requests // c))
                    rows.append((f"Triton, {n} server(s) x {layout}", c, rps, ms(lat, 50), ms(lat, 99), err))
            finally:
                for s in servers:
                    s.stop()
    cpu = platform.processor() or platform.machine()
    what = (f"demo.pt {a.imgsz}x{a.imgsz}" if a.demo else model.name if a.model
            else f"random yolov5n-s2 {a.imgsz}x{a.imgsz}")
    print(f"\nmachine: {os.cpu_count()} CPU cores ({cpu}), load average {os.getloadavg()[0]:.1f}; "
          f"model {what}; {len(images)} images; {layout} per server, max batch {a.max_batch}")
    print("| path | concurrency | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for name, c, rps, p50, p99, err in rows:
        print(f"| {name} | {c} | {rps:.1f} | {p50:.1f} | {p99:.1f} | {err} |")


if __name__ == "__main__":
    main()
