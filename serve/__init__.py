"""s2trt.serve: Triton Inference Server model repository and server launcher (s2serve).

- repository.py: `export_repository` writes `s2trt_detector` (+ the optional ensemble);
- server.py: find and run `tritonserver` (NVIDIA's, or the one bundled in nvidia-pytriton), locked
  down (loopback, admin protocols behind a key), supervised (dies with its launcher, its own ports
  and readiness, a dead model process noticed), and the Prometheus series worth watching;
- the admin key reaches tritonserver without its command line through s2trt.argv_secret (core/);
- the client (`TritonClient`, `TritonBackend` for `s2infer --triton`) and its server pool are runtime
  backends: s2trt.runtime.backends.triton and .triton_pool;
- detector.py / stages.py: what the Python-backend models do, testable without Triton;
- triton_model.py / triton_stage.py: the `model.py` files copied into the repository.
"""
