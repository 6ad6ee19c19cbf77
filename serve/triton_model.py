"""The `model.py` of the Triton model `s2trt_detector` (copied into the repository by the exporter).

It runs inside Triton's Python backend stub, whose interpreter does not see the exporting
environment's packages: `initialize` first adds the site folders named in the config parameter
`python_path` (with site.addsitedir, so .pth files such as editable installs work), and only then
imports s2trt. The work itself is s2trt.serve.detector's; this file only speaks Triton's API.
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
        from s2trt.runtime.backends.triton import INPUT_FRAME, INPUT_IMAGE
        from s2trt.serve import pb_io
        from s2trt.serve.detector import Detector

        pb_io.quiet_capsule_deleter()
        self.io = pb_io
        self.inputs = (INPUT_IMAGE, INPUT_FRAME)
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.detector = Detector.from_params(model_dir, params, args.get("model_instance_kind", "CPU"),
                                             int(args.get("model_instance_device_id", "0") or 0))

    def execute(self, requests: list) -> list:
        batch = []
        for request in requests:
            try:
                params = json.loads(request.parameters() or "{}")
            except ValueError:
                params = {}
            image, frame = (self.io.as_array(pb_utils.get_input_tensor_by_name(request, name))
                            for name in self.inputs)
            batch.append((image, frame, params))
        try:
            results = self.detector.run_requests(batch)
        except Exception as e:  # the network itself failed: this server's fault (INTERNAL), so clients
            # send the requests elsewhere
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"the model failed: {e}"))
                    for _ in requests]
        responses = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, Exception):  # the request's own fault: HTTP 400, gRPC INVALID_ARGUMENT
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:  # only what the request asks for: a client of boxes alone skips the prototypes' copy
                wanted = set(request.requested_output_names())
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    self.io.to_tensor(pb_utils, k, v) for k, v in result.items() if k in wanted]))
        return responses

    def finalize(self) -> None:
        self.detector.close()
