"""s2trt: YOLOv5 + S2Attention detectors, exported to ONNX and TensorRT."""

__version__ = "0.1.0"
