"""s2trt.runtime: the detection runtime behind s2infer.

- inputs/: where frames come from (files, cameras, streams);
- backends/: where they run (ONNX Runtime, TensorRT, PyTorch, Triton), behind one Backend protocol;
- outputs/: where detections go (sinks);
- pipeline.py: the threaded read → preprocess → infer → postprocess → write loop; stats.py its timings;
- cli.py: s2infer, a thin face over the pipeline; evaluate.py: `python -m s2trt.runtime.evaluate`.

Letterbox, NMS and image limits are s2trt.detect's; TensorRT support is s2trt.trt's. Backends are
imported only when used, so importing this package pulls in neither torch, onnxruntime nor tensorrt.
"""
