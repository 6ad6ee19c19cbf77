# s2trt for NVIDIA GPUs: Jetson Orin (JetPack 6, TensorRT 10.3) and x86 servers (TensorRT 10/11).
#
# x86 (default):
#   docker build -t s2trt .
# Jetson Orin, JetPack 6.1 (build on the Jetson itself, or with buildx --platform linux/arm64):
#   docker build -t s2trt:jetson \
#     --build-arg BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 \
#     --build-arg RUNTIME_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 \
#     --build-arg CUDA_ARCHS=87 .
# TensorRT 11 (an NGC image on CUDA 13, R580+ driver): --build-arg PIP_EXTRAS=ort,gpu-cu13.
#
# BASE_IMAGE must hold TensorRT's headers and CUDA's compiler; RUNTIME_IMAGE TensorRT's libraries
# and Python module. The plugin is compiled in the first stage only, so no compiler is added to
# the image that runs. CI builds this file on Debian stand-ins of both bases (docker/standin/,
# tests/packaging/test_docker_image.py), which have no TensorRT or CUDA libraries.
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:24.08-py3
ARG RUNTIME_IMAGE=nvcr.io/nvidia/tensorrt:24.08-py3

FROM ${BASE_IMAGE} AS build
# Empty: the plugin's own default list (T4 … H100 and PTX for newer GPUs); a Jetson passes 87.
ARG CUDA_ARCHS=""
# Empty: found where the base image keeps NvInfer.h (/usr/include/<arch>-linux-gnu on NGC and L4T).
ARG TENSORRT_INCLUDE_DIR=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY plugins/ plugins/
RUN TRT_INC="${TENSORRT_INCLUDE_DIR:-$(dirname "$(find /usr/include /usr/local /opt -name NvInfer.h -print -quit)")}" \
    && cmake -S plugins -B plugins/build -DCMAKE_BUILD_TYPE=Release \
        ${CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS}"} -DTENSORRT_INCLUDE_DIR="${TRT_INC}" \
    && cmake --build plugins/build -j"$(nproc)"
COPY pyproject.toml README.md ./
COPY core/ core/
COPY trt/ trt/
COPY detect/ detect/
COPY models/ models/
COPY export/ export/
COPY calib/ calib/
COPY runtime/ runtime/
COPY serve/ serve/
COPY demo/ demo/
RUN python3 -m pip wheel --no-cache-dir --no-deps -w /wheels .

FROM ${RUNTIME_IMAGE}
# ort: ONNX Runtime backend; gpu: cuda-python 12.x for the TensorRT backend (--engine), which runs on
# JetPack 6 (CUDA 12.6) and every driver from R525 on; gpu-cu13 instead on a CUDA 13 base; engine:
# onnx + onnx-graphsurgeon, so s2export builds engines from ONNX files here with their FP32 islands
# pinned and checked (and s2trt doctor checks them). Add ",export" for s2export from a .pt (torch).
ARG PIP_EXTRAS=ort,gpu,engine
ENV S2TRT_PLUGIN_LIB=/opt/s2trt/lib/libs2trt_plugins.so \
    PYTHONUNBUFFERED=1
COPY --from=build /src/plugins/build/libs2trt_plugins.so /src/plugins/build/libs2trt_kernels.so /opt/s2trt/lib/
COPY --from=build /wheels/ /tmp/wheels/
RUN python3 -m pip install --no-cache-dir "$(ls /tmp/wheels/s2trt-*.whl)[${PIP_EXTRAS}]" \
    && rm -rf /tmp/wheels \
    && groupadd --gid 10001 s2trt \
    && useradd --create-home --uid 10001 --gid 10001 --groups video s2trt
# Numeric, so that the host resolves it; uid 1000 is taken in Ubuntu 24.04-based images.
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["s2infer"]
CMD ["--help"]
