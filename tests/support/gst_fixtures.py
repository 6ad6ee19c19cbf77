"""What the GStreamer tests need: Debian's real GStreamer (software decoders) and H.264/H.265 clips.

Debian/Ubuntu: apt-get install -y gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
libgstrtspserver-1.0-dev gcc pkg-config ffmpeg
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from s2trt.runtime.inputs.gst import has_element

GST_ELEMENTS = ("gdppay", "avdec_h264", "avdec_h265", "rtspsrc", "x264enc", "x265enc")
HAVE_GST = shutil.which("gst-launch-1.0") is not None and all(has_element(e) for e in GST_ELEMENTS)
needs_gst = pytest.mark.skipif(not HAVE_GST, reason="needs GStreamer with gdppay, the libav decoders, "
                               "rtspsrc and x264/x265 (apt-get install -y gstreamer1.0-tools "
                               "gstreamer1.0-plugins-{base,good,bad,ugly} gstreamer1.0-libav "
                               "gstreamer1.0-rtsp)")


def encode(path: Path, codec: str = "libx264", frames: int = 20, size: str = "160x120", fps: int = 25,
           extra: tuple[str, ...] = ()) -> Path:
    """A test-pattern clip (yuv420p, a keyframe every 5 frames) encoded by ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is needed to make the test clips (apt-get install -y ffmpeg)"
    codec_args = ["-x265-params", "log-level=error"] if codec == "libx265" else []
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate={fps}", "-frames:v", str(frames), "-pix_fmt", "yuv420p",
                    "-c:v", codec, *codec_args, "-g", "5", "-bf", "0", *extra, str(path)],
                   check=True, timeout=120)
    return path
