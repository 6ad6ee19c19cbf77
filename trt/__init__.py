"""s2trt.trt: TensorRT and CUDA support shared by export, calib, runtime and serve.

- versions.py: importing TensorRT, what each version can do, network creation and precision;
- plugin_lib.py: the plugin library's lookup, private copy, digest, loading and registry check;
- gpu.py: the CUDA device's name and compute capability, and selecting it;
- sidecar.py: the engine sidecar, written, read back and checked against this machine;
- cuda_mem.py: device memory, streams and CUDA graphs through cuda-python.

Nothing here imports tensorrt or CUDA at module level.
"""
