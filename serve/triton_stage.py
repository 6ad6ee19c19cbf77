"""The `model.py` of the ensemble's Python steps; the config parameter `stage` says which one it is.

- preprocess: `IMAGE` (encoded images) -> `images` (3, h, w) float32 letterboxed, and `letterbox`
  (ratio, dw, dh, h0, w0) for mapping boxes back;
- network: `images` -> the model's raw outputs on s2trt's runtime (the stand-in for Triton's TensorRT
  backend where a server has none);
- postprocess: the network's outputs and `letterbox` -> docs/DESIGN.md §3's NMS layout in frame pixels
  (and a segmentation model's coefficients and input boxes of each detection, docs/DESIGN.md §7).

Like triton_model.py it adds the exporting environment's site folders before importing s2trt.
"""

import json
import os
import site
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils


def _add_site_dirs(paths: str) -> None:
    for p in paths.split(os.pathsep):
        if p and os.path.isdir(p) and p not in sys.path:
            site.addsitedir(p)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        _add_site_dirs(params.get("python_path", ""))
        from s2trt.meta import ModelMeta
        from s2trt.serve import pb_io, stages

        pb_io.quiet_capsule_deleter()
        self.io = pb_io
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        meta = ModelMeta.from_props(json.loads(params["s2trt_meta"]), args["model_name"])
        stage = params.get("stage")
        if stage == "preprocess":
            self.run = stages.Preprocess(meta, int(params.get("max_pixels") or stages.DEFAULT_MAX_PIXELS))
        elif stage == "postprocess":
            self.run = stages.Postprocess(meta, params)
        elif stage == "network":
            model_dir = Path(args["model_repository"]) / args["model_version"]
            self.run = stages.Network(model_dir, params, args.get("model_instance_kind", "CPU"),
                                      int(args.get("model_instance_device_id", "0") or 0))
        else:
            raise ValueError(f"unknown stage {stage!r}: preprocess, network or postprocess")

    def execute(self, requests: list) -> list:
        feeds = [{name: self.io.as_array(pb_utils.get_input_tensor_by_name(r, name)) for name in self.inputs}
                 for r in requests]
        try:
            results = self.run(feeds)
        except Exception as e:  # the step itself failed: this server's fault (INTERNAL), so clients
            # send the requests elsewhere
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"the model failed: {e}"))
                    for _ in requests]
        invalid = pb_utils.TritonError.INVALID_ARG  # a request's own fault: HTTP 400, gRPC INVALID_ARGUMENT
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(r), invalid))
                if isinstance(r, Exception)
                else pb_utils.InferenceResponse(
                    output_tensors=[self.io.to_tensor(pb_utils, k, r[k]) for k in self.outputs])
                for r in results]

    def finalize(self) -> None:
        close = getattr(self.run, "close", None)
        if close is not None:
            close()
