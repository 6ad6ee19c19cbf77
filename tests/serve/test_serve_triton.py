"""Against a real Triton Inference Server on 127.0.0.1 (the binary of the nvidia-pytriton wheel, or a
`tritonserver` on PATH): same detections as the local runtime, a bounded load test, malformed
requests, a server killed mid-run, and s2serve's start/stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from s2trt.errors import S2Error
from s2trt.serve import repository as R

grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (s2trt[triton])")

from s2trt.serve import server as S  # noqa: E402

try:
    S.find_tritonserver()
    HAVE_SERVER = True
except S2Error:
    HAVE_SERVER = False
pytestmark = pytest.mark.skipif(not HAVE_SERVER,
                                reason="no tritonserver: pip install --no-deps nvidia-pytriton (x86_64)")

import paths  # noqa: E402
import serve_fixtures as F  # noqa: E402

MAX_DET = 100
DEMO_IMAGES = sorted((paths.DEMO_ASSETS / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The bundled demo checkpoint (trained on the shapes the images show), at 224x256: not square."""
    return F.export_demo_model(tmp_path_factory.mktemp("model") / "demo.onnx")


@pytest.fixture(scope="module")
def repo(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("repo")
    # Two instances of one thread each: parallel instances on the 2-core CI machine, not oversubscribed.
    R.export_repository(model, path, R.RepoOptions(max_batch_size=8, instances=2, cpu_threads=1,
                                                   max_det=MAX_DET, queue_delay_us=1000, ensemble=True))
    return path


@pytest.fixture(scope="module")
def small_repo(model, tmp_path_factory):
    """The detector alone, one instance: quick to start for the tests that run servers of their own."""
    path = tmp_path_factory.mktemp("small_repo")
    R.export_repository(model, path, R.RepoOptions(max_det=MAX_DET, instances=1, cpu_threads=1))
    return path


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    with S.TritonServer(repo, log_path=tmp_path_factory.mktemp("log") / "triton.log") as s:
        yield s


@pytest.fixture(scope="module")
def images():
    """(encoded file bytes, decoded BGR frame) for synthetic images and the bundled demo images."""
    files = [F.encode_jpeg(img) for img in F.sample_images(5)] + [p.read_bytes() for p in DEMO_IMAGES]
    return [(b, cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)) for b in files]


@pytest.fixture(scope="module")
def local(model, images):
    """The local runtime's detections: ONNX Runtime backend, shared letterbox and NMS."""
    from s2trt.detect.options import DetectOptions
    from s2trt.runtime.backends.ort import OrtBackend
    from s2trt.serve.detector import Detector

    def run(conf_thres=0.25):
        with OrtBackend(model, "cpu") as backend:
            det = Detector(backend, DetectOptions(conf_thres=conf_thres, max_det=MAX_DET))
            return [det.detect([frame])[0] for _, frame in images]
    return run


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_array_equal(g[:, 5], w[:, 5])
        np.testing.assert_allclose(g[:, :4], w[:, :4], atol=1e-2)  # pixels; batching may reorder FP sums
        np.testing.assert_allclose(g[:, 4], w[:, 4], atol=1e-4)


@pytest.mark.parametrize("model_name, as_frames",
                         [(R.DETECTOR, False), (R.DETECTOR, True), (R.ENSEMBLE, False)])
def test_server_detections_equal_local_runtime(server, images, local, model_name, as_frames):
    from s2trt.runtime.backends.triton import TritonClient

    want = local()
    assert sum(len(w) for w in want) > 10  # the comparison is not between empty lists
    with TritonClient(server.endpoints.grpc_url, model_name) as client:
        got = client.detect([frame if as_frames else data for data, frame in images])
    assert_same(got, want)


def test_request_parameters_override_server_thresholds(server, images, local):
    from s2trt.runtime.backends.triton import TritonClient

    want = local(conf_thres=0.6)
    assert sum(len(w) for w in want) < sum(len(w) for w in local())
    with TritonClient(server.endpoints.grpc_url, params={"conf_thres": 0.6}) as client:
        assert_same(client.detect([data for data, _ in images]), want)


def test_s2infer_backend_matches_onnx_backend(server, model, images):
    """The runtime's own path (letterbox -> backend.infer -> NMS -> scale) with both backends."""
    from s2trt.detect.boxes import postprocess, scale_boxes
    from s2trt.detect.letterbox import preprocess
    from s2trt.detect.options import DetectOptions
    from s2trt.runtime.backends.ort import OrtBackend
    from s2trt.runtime.backends.triton import TritonBackend

    frames = [frame for _, frame in images]
    results = []
    for backend in (OrtBackend(model, "cpu"), TritonBackend(server.endpoints.grpc_url)):
        with_meta = backend.meta
        x, infos = preprocess(frames, backend.imgsz, stride=with_meta.stride)
        dets = postprocess(backend.infer(x), DetectOptions(max_det=MAX_DET))
        results.append([scale_boxes(d, i) for d, i in zip(dets, infos, strict=True)])
        backend.close()
    assert_same(results[1], results[0])


def test_load_8_clients_50_requests_each(server, images, local):
    from s2trt.runtime.backends.triton import TritonClient

    want = local()
    n_clients, n_requests = 8, 50
    latencies: list[float] = []
    errors: list[BaseException] = []
    mismatches = []

    def worker(k: int) -> None:
        try:
            with TritonClient(server.endpoints.grpc_url) as client:
                for j in range(n_requests):
                    i = (k + j) % len(images)
                    t0 = time.perf_counter()
                    got = client.submit(images[i][0]).result()
                    latencies.append(time.perf_counter() - t0)
                    if got.shape != want[i].shape or not np.allclose(got[:, :4], want[i][:, :4], atol=1e-2):
                        mismatches.append(i)
        except BaseException as e:
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    wall = time.perf_counter() - t0
    assert not errors and not mismatches
    assert len(latencies) == n_clients * n_requests
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"\nTriton load test: {n_clients} clients x {n_requests} requests, "
          f"{len(latencies) / wall:.1f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def png_claiming(w: int, h: int) -> bytes:
    """A 1x1 PNG whose header claims w x h, like a decompression bomb's (only the header is read)."""
    import struct

    data = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", w, h)
    return bytes(data)


JPEG_HEADER_ONLY = b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03" + bytes(40)  # 16x16, no data


def infer_raw(server, inputs, model_name=R.DETECTOR):
    client = grpcclient.InferenceServerClient(server.endpoints.grpc_url)
    tensors = []
    for name, array in inputs:
        t = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "UINT8")
        t.set_data_from_numpy(array)
        tensors.append(t)
    try:
        return client.infer(model_name, tensors)
    finally:
        client.close()


@pytest.mark.parametrize("inputs, message", [
    ([("FRAME", np.zeros((1, 32, 32), np.uint8))], "unexpected shape"),
    ([("FRAME", np.zeros((1, 32, 32, 3), np.float32))], "expects 'UINT8'"),
    ([("IMAGE", np.frombuffer(b"\xff\xd8 not a jpeg at all", np.uint8)[None])], "not an image whose size"),
    ([("IMAGE", np.frombuffer(JPEG_HEADER_ONLY, np.uint8)[None])], "not a decodable image"),
    ([("IMAGE", np.frombuffer(png_claiming(20000, 20000), np.uint8)[None])],
     "20000x20000 is 400.0 megapixels, above the limit"),
    ([("IMAGE", np.zeros((0, 16), np.uint8))], "byte size mismatch"),  # an empty batch
    ([("FRAME", np.zeros((0, 32, 32, 3), np.uint8))], "byte size mismatch"),
    ([], "0 inputs"),  # no input at all
    ([("IMAGE", np.ones((1, 8), np.uint8)), ("FRAME", np.zeros((1, 8, 8, 3), np.uint8))], "exactly one"),
    ([("SOMETHING", np.zeros((1, 3), np.uint8))], "unexpected inference input"),
])
def test_malformed_requests_get_an_error_and_the_server_keeps_serving(server, images, inputs, message):
    with pytest.raises(grpcclient.InferenceServerException, match=message):
        infer_raw(server, inputs)
    assert server.running()
    good = infer_raw(server, [("IMAGE", np.frombuffer(images[0][0], np.uint8)[None])])
    assert good.as_numpy("num_dets").shape == (1, 1)


def test_bad_image_fails_only_its_own_request(server, images):
    from s2trt.runtime.backends.triton import TritonClient

    with TritonClient(server.endpoints.grpc_url) as client:
        bad = client.submit(b"garbage")
        good = [client.submit(data) for data, _ in images]
        with pytest.raises(S2Error, match=r"rejected the request: .*not an image whose size can be checked"):
            bad.result()
        assert all(f.result().shape[1] == 6 for f in good)


@pytest.mark.parametrize("model_name", [R.DETECTOR, R.ENSEMBLE])
def test_degenerate_images_in_busy_batches_do_not_fail_their_batch_mates(server, images, model_name):
    """Issue 15: one 1x5000 image failed the other requests of its scheduler batch (135 of 240)."""
    from s2trt.runtime.backends.triton import TritonClient

    degenerate = [cv2.imencode(".png", np.full(shape, 90, np.uint8))[1].tobytes()
                  for shape in ((1, 5000, 3), (5000, 1, 3))]
    with TritonClient(server.endpoints.grpc_url, model_name, max_in_flight=64) as client:
        good, bad = [], []
        for k in range(48):  # all in flight together, so the dynamic batcher mixes them
            if k % 6 == 3:
                bad.append(client.submit(degenerate[k % 2]))
            else:
                good.append((k % len(images), client.submit(images[k % len(images)][0])))
        failed = []
        for i, f in good:
            try:
                f.result()
            except S2Error as e:
                failed.append((i, str(e)))
        assert not failed
        for f in bad:  # each succeeds (sides kept >= 1 pixel) or fails alone; never takes the server down
            try:
                assert f.result().shape[1] == 6
            except S2Error as e:
                assert "rejected the request" in str(e)
    assert server.running()


def test_client_names_what_is_wrong_with_the_model(server):
    from s2trt.runtime.backends.triton import TritonClient

    with pytest.raises(S2Error, match="no ready model 'nope'"):
        TritonClient(server.endpoints.grpc_url, "nope")
    with pytest.raises(S2Error, match="not an s2trt detector"):
        TritonClient(server.endpoints.grpc_url, R.ENGINE)  # one of ours, but not a detector


def model_metrics(server, model=R.DETECTOR) -> dict[str, float]:
    """The documented series (S.METRICS) of one model, from the Prometheus text of the metrics port."""
    text = urllib.request.urlopen(server.endpoints.metrics_url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in S.METRICS and f'model="{model}"' in line:
            out[name] = out.get(name, 0.0) + float(line.split()[-1])
    return out


def test_documented_metrics_move_with_the_requests(server, images):
    """Each series README and the HPA rely on exists for the model and counts what it says."""
    from s2trt.runtime.backends.triton import TritonClient

    before = model_metrics(server)
    assert set(before) == set(S.METRICS), set(S.METRICS) - set(before)
    with TritonClient(server.endpoints.grpc_url) as client:
        client.detect([data for data, _ in images])
        with pytest.raises(S2Error):  # refused by the model: Triton 2.51 counts it as a success
            client.detect([b"garbage"])
    after = model_metrics(server)
    d = {k: after[k] - before[k] for k in S.METRICS}
    assert d["nv_inference_request_success"] == len(images) + 1
    assert d["nv_inference_request_failure"] == 0
    assert d["nv_inference_count"] == len(images) + 1  # images that reached the model
    assert 1 <= d["nv_inference_exec_count"] <= d["nv_inference_count"]  # batches: some were merged or not
    assert d["nv_inference_compute_infer_duration_us"] > 0 and d["nv_inference_queue_duration_us"] > 0
    assert d["nv_inference_request_duration_us"] >= d["nv_inference_compute_infer_duration_us"]


def test_killed_server_gives_the_client_one_clear_error(small_repo, images):
    from s2trt.runtime.backends.triton import TritonClient

    srv = S.TritonServer(small_repo).start()
    try:
        client = TritonClient(srv.endpoints.grpc_url, timeout=20)
        errors: list[S2Error] = []

        def run() -> None:
            try:
                for _ in range(1000):
                    client.detect([data for data, _ in images])
            except S2Error as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        srv.kill()
        t.join(timeout=60)
        assert not t.is_alive() and len(errors) == 1
        assert srv.endpoints.grpc_url in str(errors[0]) and "unreachable" in str(errors[0])
        with pytest.raises(S2Error, match="unreachable"):
            TritonClient(srv.endpoints.grpc_url, timeout=5)
    finally:
        srv.stop()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_s2serve_starts_prints_endpoints_and_stops_on_ctrl_c(small_repo, stop_signal):
    ports = [S.free_port() for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2trt.serve.cli", str(small_repo), "--host", "127.0.0.1",
         "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "Triton is ready" in out, out
        assert f"127.0.0.1:{ports[1]}" in out and f"http://127.0.0.1:{ports[2]}/metrics" in out
        health = f"http://127.0.0.1:{ports[0]}/v2/health/ready"
        assert urllib.request.urlopen(health, timeout=5).status == 200
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(health, timeout=2)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


SAMPLE_VIDEO = paths.DEMO_ASSETS / "sample.mp4"


def read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(not SAMPLE_VIDEO.is_file(), reason="the bundled sample video is not there yet")
def test_s2infer_triton_matches_s2infer_onnx_on_the_sample_video(server, model, tmp_path):
    from s2trt.runtime.cli import main as s2infer

    common = [str(SAMPLE_VIDEO), "--no-save", "--vid-stride", "10", "--batch", "4", "--max-det", str(MAX_DET),
              "-q"]
    url = server.endpoints.grpc_url
    assert s2infer([*common, "--triton", url, "--save-json", str(tmp_path / "t.jsonl")]) == 0
    assert s2infer([*common, "--onnx", str(model), "--save-json", str(tmp_path / "o.jsonl")]) == 0
    remote, local = read_jsonl(tmp_path / "t.jsonl"), read_jsonl(tmp_path / "o.jsonl")
    assert len(remote) == len(local) == 25 and sum(len(r["boxes"]) for r in local) > 0
    for r, o in zip(remote, local, strict=True):
        assert (r["frame"], r["class_ids"], r["names"]) == (o["frame"], o["class_ids"], o["names"])
        np.testing.assert_allclose(np.array(r["boxes"]).reshape(-1, 4), np.array(o["boxes"]).reshape(-1, 4),
                                   atol=0.02)
        np.testing.assert_allclose(r["scores"], o["scores"], atol=2e-4)


def test_s2infer_against_a_server_killed_mid_run_prints_one_error_line(small_repo, tmp_path):
    video = F.long_video(tmp_path / "long.mp4")
    srv = S.TritonServer(small_repo).start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from s2trt.runtime.cli import main; raise SystemExit(main())",
             str(video), "--triton", srv.endpoints.grpc_url, "--no-save", "--save-json",
             str(tmp_path / "p.jsonl"), "--batch", "2", "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while F.successes(srv) < 20 and time.monotonic() < deadline:  # mid-run: frames are flowing
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        srv.kill()
        _, err = proc.communicate(timeout=120)
    finally:
        srv.stop()
    lines = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode == 1 and len(lines) == 1, err
    assert lines[0].startswith("s2infer: error: Triton server at") and "unreachable" in lines[0]
