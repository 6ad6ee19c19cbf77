"""The media file kinds, by suffix: what s2infer reads as an image or a video, and what calibration
takes from a folder."""

IMAGE_EXTS = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"}
VIDEO_EXTS = {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv",
              ".webm"}
