/*
 * S2SplitAttention CUDA kernels behind a plain C ABI, so that tests can drive them through ctypes
 * without TensorRT and the TensorRT glue stays free of CUDA device code.
 *
 * Math (docs/DESIGN.md §1, step 4), for inputs x1, x2, x3 of shape (B, C, H, W), NCHW:
 *   a[b, c]      = sum over h, w of (x1 + x2 + x3)[b, c, h, w]
 *   hid[b, :]    = GELU_erf(W1 · a[b, :])            W1: (C, C) row-major (out, in)
 *   hat[b, k, c] = (W2 · hid[b, :])[k * C + c]        W2: (3C, C) row-major (out, in)
 *   bar[b, :, c] = softmax over k of hat[b, k, c]
 *   out          = bar[:, 0] * x1 + bar[:, 1] * x2 + bar[:, 2] * x3
 * All sums are accumulated in FP32, whatever the storage type.
 */
#ifndef S2TRT_S2_SPLIT_ATTENTION_KERNEL_H
#define S2TRT_S2_SPLIT_ATTENTION_KERNEL_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#if defined(_WIN32)
#define S2SA_API __declspec(dllexport)
#else
#define S2SA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Storage types, numbered like nvinfer1::DataType (kFLOAT = 0, kHALF = 1). */
enum
{
    S2SA_DTYPE_FLOAT32 = 0,
    S2SA_DTYPE_FLOAT16 = 1
};

/* The channel count must be a multiple of this: weight rows are read as aligned float4. */
enum
{
    S2SA_CHANNEL_MULTIPLE = 4
};

/* Bytes of device scratch memory s2sa_forward needs for a batch of B images of C channels. */
S2SA_API size_t s2sa_workspace_size(int B, int C);

/*
 * Runs the op on `stream`. x1, x2, x3 and out are device pointers to B*C*H*W elements of `dtype`;
 * w1_dev (C*C) and w2_dev (3C*C) are FP32 device pointers; workspace holds at least
 * s2sa_workspace_size(B, C) bytes and is 16-byte aligned. `out` must not alias an input.
 * C must be a multiple of S2SA_CHANNEL_MULTIPLE and H*W below 2^29.
 * Returns 0 (cudaSuccess) or a cudaError_t value: cudaErrorInvalidValue (1) for bad arguments,
 * otherwise the error of the launches. Asynchronous: errors of the kernels' execution surface later.
 */
S2SA_API int s2sa_forward(void const* x1, void const* x2, void const* x3, void* out, float const* w1_dev,
    float const* w2_dev, int B, int C, int H, int W, int dtype, void* workspace, size_t workspace_bytes,
    cudaStream_t stream);

/* Human-readable text for a value returned by s2sa_forward or s2sa_check_device. */
S2SA_API char const* s2sa_error_string(int status);

/*
 * Whether the current device can run this library's kernels: 0, or the cudaError_t value that loading
 * them gave. s2sa_is_missing_code() tells "this build has no code for the GPU" (rebuild with its
 * architecture) from errors that have nothing to do with the build (no device, no driver).
 * Cached per device, so it is cheap to call at every plugin creation. Clears only its own error from
 * the thread's last-error slot.
 */
S2SA_API int s2sa_check_device(void);

/* The CUDA architectures the library was built for, as CMAKE_CUDA_ARCHITECTURES with commas. */
S2SA_API char const* s2sa_cuda_architectures(void);

/* A status of s2sa_check_device meaning: no cubin for this GPU, and no PTX its driver can compile. */
static inline int s2sa_is_missing_code(int status)
{
    return status == cudaErrorNoKernelImageForDevice || status == cudaErrorInvalidDeviceFunction
        || status == cudaErrorInvalidKernelImage || status == cudaErrorInvalidPtx
        || status == cudaErrorUnsupportedPtxVersion || status == cudaErrorJitCompilerNotFound
        || status == cudaErrorJitCompilationDisabled;
}

#ifdef __cplusplus
}
#endif

#endif /* S2TRT_S2_SPLIT_ATTENTION_KERNEL_H */
