"""s2trt.serve: Triton Inference Server model repository, server launcher (s2serve) and client backend.

- repository.py: `export_repository` writes `s2trt_detector` (+ the optional ensemble);
- server.py: find and run `tritonserver` (NVIDIA's, or the one bundled in nvidia-pytriton), locked
  down (loopback, admin protocols behind a key), and the Prometheus series worth watching;
- client.py: `TritonClient` (gRPC, requests in flight, one or several servers) and `TritonBackend`
  for `s2infer --triton`;
- pool.py: several servers behind one client: least outstanding first, failover, backoff probing;
- detector.py / stages.py: what the Python-backend models do, testable without Triton;
- triton_model.py / triton_stage.py: the `model.py` files copied into the repository.
"""
