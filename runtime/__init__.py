"""s2trt.runtime: the detection runtime behind s2infer.

- inputs/: where frames come from (files, cameras, streams);
- backends/: where they run (ONNX Runtime, TensorRT, PyTorch, Triton), behind one Backend protocol;
- outputs/: where detections go (sinks; plan.py: the output files planned and checked);
- model.py: the backend for a model file or Triton servers, opened and checked;
- request.py: one run's options, checked; run.py: a run's life (signals, sources, outputs, model,
  summary), whose `Session` s2infer and `Detector.stream()` share;
- pipeline.py: the threaded read → preprocess → infer → postprocess → write loop; stats.py its timings;
  results.py: one frame's detections (`Result`);
- the faces on the pipeline: cli.py (s2infer), api.py (`s2trt.Detector`), evaluate.py
  (`python -m s2trt.runtime.evaluate`).

Letterbox, NMS and image limits are s2trt.detect's; TensorRT support is s2trt.trt's. Backends are
imported only when used, so importing this package pulls in neither torch, onnxruntime nor tensorrt.
"""
