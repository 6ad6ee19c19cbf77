"""YOLOv5 v5.0-v7.0 modules with the S2Attention block, model configs and safe checkpoint loading."""

from s2trt.models.checkpoint import LoadedModel, load_checkpoint
from s2trt.models.yolo import DetectionModel, config_path, load_config

__all__ = ["DetectionModel", "LoadedModel", "config_path", "load_checkpoint", "load_config"]
