"""The bundled demo checkpoint exported small, and synthetic images, for the serving tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import paths
import pytest


def sample_images(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """BGR frames of varied sizes with filled shapes on a noisy background."""
    rng = np.random.default_rng(seed)
    sizes = [(240, 320), (200, 200), (300, 180), (120, 400), (256, 256), (181, 333)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(6):
            c = tuple(int(v) for v in rng.integers(60, 255, 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(8, max(9, min(h, w) // 4)))
            if rng.random() < 0.5:
                cv2.circle(img, (x, y), r, c, -1)
            else:
                cv2.rectangle(img, (x - r, y - r), (x + r, y + r), c, -1)
        out.append(img)
    return out


def infer_one_frame(client) -> np.ndarray:
    """`num_dets` of one sample frame sent as FRAME to s2trt_detector through a tritonclient.grpc client."""
    import tritonclient.grpc as g

    frame = sample_images(1)[0][None]
    inp = g.InferInput("FRAME", list(frame.shape), "UINT8")
    inp.set_data_from_numpy(frame)
    return client.infer("s2trt_detector", [inp]).as_numpy("num_dets")


def encode_jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


DEMO_CHECKPOINT = paths.DEMO_ASSETS / "demo.pt"


_exported: dict[tuple[int, int], Path] = {}  # one export per size and test session, copied after


def export_demo_model(path: Path, imgsz: tuple[int, int] = (224, 256)) -> Path:
    """The bundled trained checkpoint, exported small (dynamic batch) so the server tests stay quick."""
    import shutil

    done = _exported.get(tuple(imgsz))
    if done is not None and done.is_file():
        shutil.copyfile(done, path)
        return path
    import onnx

    from s2trt.export.onnx_export import torch_to_onnx
    from s2trt.meta import ModelMeta
    from s2trt.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(DEMO_CHECKPOINT)
    proto = torch_to_onnx(loaded, imgsz, None)
    meta = ModelMeta(names=list(loaded.names), imgsz=list(imgsz), stride=int(max(loaded.stride)),
                     batch="dynamic")
    for k, v in meta.to_props().items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    _exported[tuple(imgsz)] = path
    return path


def have_tritonserver() -> bool:
    try:
        import tritonclient.grpc  # noqa: F401
    except ImportError:
        return False
    from s2trt.errors import S2Error
    from s2trt.serve.server import find_tritonserver

    try:
        find_tritonserver()
    except S2Error:
        return False
    return True


NO_SERVER = ("no tritonserver or tritonclient: pip install --no-deps nvidia-pytriton; "
             "pip install 's2trt[triton]'")


def small_repository(model: Path, path: Path, **options: object) -> Path:
    """The detector alone, one single-threaded instance: quick to start, light on the 2-core CI machine."""
    from s2trt.serve import repository as R

    kw: dict = {"instances": 1, "cpu_threads": 1, **options}
    R.export_repository(model, path, R.RepoOptions(max_det=100, **kw))
    return path


def demo_repository(factory: pytest.TempPathFactory) -> Path:
    """The demo model, exported small, in a small_repository of its own: what the server tests serve."""
    return small_repository(export_demo_model(factory.mktemp("model") / "demo.onnx"), factory.mktemp("repo"))


def long_video(path: Path, frames: int = 3000, size: tuple[int, int] = (96, 80)) -> Path:
    """A video long enough that a run is still going when a test acts on its servers."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for img in sample_images(frames, seed=3):
        writer.write(cv2.resize(img, size))
    writer.release()
    return path


def successes(server: object) -> float:
    """nv_inference_request_success summed over the server's models (Prometheus text format)."""
    import urllib.request

    url = server.endpoints.metrics_url  # type: ignore[attr-defined]
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(float(x.split()[-1]) for x in text.splitlines()
               if x.startswith("nv_inference_request_success"))


def http_status(url: str, method: str = "GET", body: dict | None = None, key: str | None = None) -> int:
    """The HTTP status Triton answers, with the s2serve admin key header when given."""
    from s2trt.serve.server import ADMIN_HEADER

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if key is not None:
        req.add_header(ADMIN_HEADER, key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


GRPC_SERVICE = "/inference.GRPCInferenceService/"


def grpc_raw(endpoint: str, method: str, message: object, metadata: list[tuple[bytes, bytes]]) -> int | None:
    """One gRPC call made by hand over HTTP/2 (the h2 package), with metadata sent byte for byte as
    given, which grpcio would refuse (a line break, a colon in a name): the grpc-status the server
    answers, or None when it reset the stream or closed the connection instead."""
    import socket
    import struct

    import h2.config
    import h2.connection
    import h2.events

    host, port = endpoint.rsplit(":", 1)
    body = message.SerializeToString()  # type: ignore[attr-defined]
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    path = (GRPC_SERVICE + method).encode()
    conn.send_headers(stream, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                               (b":authority", endpoint.encode()), (b"content-type", b"application/grpc"),
                               (b"te", b"trailers"), *metadata])
    conn.send_data(stream, struct.pack(">?I", False, len(body)) + body, end_stream=True)
    headers: dict[bytes, bytes] = {}
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(conn.data_to_send())
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers.update(dict(event.headers))
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return None
                elif isinstance(event, h2.events.StreamEnded):
                    return int(headers.get(b"grpc-status", b"-1"))
            sock.sendall(conn.data_to_send())


def http_raw(base_url: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> int:
    """An HTTP/1.1 request written by hand (http.client refuses some header names and values): its status."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    req = (f"{method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{head}Content-Length: {len(body)}\r\n"
           "Connection: close\r\n\r\n").encode() + body
    with socket.create_connection((u.hostname, u.port), timeout=20) as sock:
        sock.sendall(req)
        first = sock.recv(64).split(b"\r\n", 1)[0]
    return int(first.split()[1])
