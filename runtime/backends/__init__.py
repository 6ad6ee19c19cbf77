"""Where frames run: the Backend protocol and the batching they share (base.py), ONNX Runtime (ort.py),
TensorRT (trt.py, with the GPU letterbox in gpu_letterbox.py), a PyTorch checkpoint (pytorch.py), and
Triton servers (triton.py, over the server pool in triton_pool.py). Each is imported only when used."""
