"""s2trt.runtime: the detection runtime behind s2infer.

Shared pieces others import: `preprocess` (letterbox, preprocess, LetterboxInfo), `postprocess`
(non_max_suppression, scale_boxes, from_nms_outputs), `backend` (the Backend protocol,
BatchedBackend, decode), `image_guard` (an encoded image's size from its header, checked against a
pixel limit before decoding). Backends live in backend_ort / backend_trt / backend_torch and are imported
only when used, so importing this package pulls in neither torch, onnxruntime nor tensorrt.
"""
