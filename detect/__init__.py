"""s2trt.detect: the detection core that export, calibration, the runtime, the Triton model and the demo
share, on NumPy and OpenCV only.

- letterbox.py: letterbox and preprocess (frames to the network's input), LetterboxInfo;
- boxes.py: YOLOv5 output decode, class-aware NMS, boxes back to the frame, the NMS-output layout;
- image_limits.py: an encoded image's size from its header, checked against a pixel limit before decoding;
- media.py: which file suffixes are images and videos;
- evaluate.py: COCO-style mAP of any backend on a YOLO-format dataset.
"""
