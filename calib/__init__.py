"""s2trt.calib: INT8 calibration data, Q/DQ ONNX, the TensorRT ≤ 10 calibrator and its cache, and the
accuracy report (DESIGN §5)."""
