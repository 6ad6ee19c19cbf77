"""What a run is asked to do: the model, the sources and s2infer's options, as one checked value.

s2infer maps its command line onto a `RunRequest` and `s2trt.Detector` its keyword arguments onto the
same options, so both refuse the same values with the same one-line messages (they name the
command-line options). Standard library and s2trt's light modules only: s2infer builds a request
while it parses, and `s2infer --help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s2trt.detect.image_limits import DEFAULT_MAX_PIXELS
from s2trt.detect.options import DetectOptions
from s2trt.errors import UsageError
from s2trt.runtime.model import TRITON_BATCH, BackendOptions, ModelRef

QUEUE_SIZE = 4  # batches buffered between the pipeline's stages


@dataclass(frozen=True)
class InputOptions:
    """How the sources are read (s2infer's input options)."""

    vid_stride: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images and frames are refused undecoded
    stream_timeout: float = 10.0  # a camera or stream stalled this long is reopened
    reconnect_timeout: float = 60.0  # ... and this long, reopening included, ends
    decoder: str = "auto"  # auto | nv | sw | opencv
    push_timeout: float | None = None  # several sources: None, one frame interval of the fastest

    def check(self) -> None:
        if self.push_timeout is not None and not self.push_timeout > 0:  # also refuses nan
            raise UsageError("--push-timeout must be above 0 seconds")
        check_count("--vid-stride", self.vid_stride)
        check_count("--max-pixels", self.max_pixels, "--max-pixels must be 1 or more")
        if not (self.stream_timeout > 0 and self.reconnect_timeout > 0):  # also refuses nan
            raise UsageError("--stream-timeout and --reconnect-timeout must be above 0 seconds")


@dataclass(frozen=True)
class OutputOptions:
    """What a run writes and shows (s2infer's output options)."""

    save: bool = True  # annotated images and videos
    save_json: str | None = None  # None: none; "": predictions.jsonl in the run folder; "-": stdout
    project: str = "runs/detect"
    name: str = "exp"
    exist_ok: bool = False
    output: str | None = None  # -o: one file (one image or video source) or a folder
    show: bool = False
    line_width: int | None = None
    hide_labels: bool = False
    hide_conf: bool = False


@dataclass(frozen=True)
class RunRequest:
    """One run of s2infer: the model, the sources (as given: files, folders, globs, camera indexes,
    URLs, .streams files) and the options."""

    model: ModelRef
    sources: tuple[str, ...]
    backend: BackendOptions = field(default_factory=BackendOptions)
    detect: DetectOptions = field(default_factory=DetectOptions)
    inputs: InputOptions = field(default_factory=InputOptions)
    outputs: OutputOptions = field(default_factory=OutputOptions)
    batch: int | None = None  # None: see requested_batch
    sequential: bool = False  # no stage overlap
    queue_size: int = QUEUE_SIZE
    verbose: bool = False  # the per-source table while sources are live, FFmpeg's own logging
    quiet: bool = False  # no progress bar

    def check(self) -> None:
        check_count("--batch", self.batch)
        self.inputs.check()
        check_count("--queue-size", self.queue_size)


def check_count(flag: str, value: object, message: str | None = None) -> None:
    """A count given for `flag` (None: not given) must be an integer, 1 or more."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(message or f"{flag} {value} must be 1 or more")


def requested_batch(batch: int | None, model: ModelRef) -> int | None:
    """The batch asked for, with Triton's default: TRITON_BATCH frames, each its own request, all in
    flight for the server's dynamic batcher. None elsewhere: the pipeline's default (one frame of
    each camera and stream per batch, runtime/pipeline.py plan_batch)."""
    return TRITON_BATCH if batch is None and model.kind == "triton" else batch
