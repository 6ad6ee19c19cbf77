"""s2trt.calib: INT8 calibration data, Q/DQ ONNX placed the way TensorRT fuses it, its INT8+FP16 form
for strongly typed TensorRT, the TensorRT ≤ 10 calibrator and its cache, and the accuracy report
(docs/DESIGN.md §5)."""
