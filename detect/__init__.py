"""s2trt.detect: the detection core that export, calibration, the runtime, the Triton model and the demo
share, on NumPy and OpenCV only.

- letterbox.py: letterbox and preprocess (frames to the network's input), LetterboxInfo;
- options.py: DetectOptions, the one checked set of detection options (thresholds, classes, max_det);
- boxes.py: from the network's outputs to detections (class-aware NMS, the filters), boxes back to
  the frame, the NMS-output layout;
- image_limits.py: an encoded image's size from its header, checked against a pixel limit before decoding;
- media.py: which file suffixes are images and videos;
- evaluate.py: COCO-style mAP of any backend on a YOLO-format dataset.
"""
