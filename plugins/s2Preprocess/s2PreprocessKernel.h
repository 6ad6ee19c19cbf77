/*
 * The network input made on the GPU (docs/DESIGN.md §3), behind a plain C ABI: a batch of uint8 BGR frames
 * (HWC, each its own size) is letterboxed to (dst_h, dst_w), converted to RGB, scaled to [0, 1] and
 * written as NCHW FP32 or FP16. The upload is the 8-bit frame; nothing is resized on the CPU.
 *
 * It computes what runtime/preprocess.py computes with OpenCV, within one 8-bit step per pixel:
 *   r = min(dst_h / h, dst_w / w) (at most 1 when scaleup is 0); resized (nh, nw) = (round(h*r),
 *   round(w*r)) with Python's round (half to even), at least 1; top = round((dst_h - nh)/2 - 0.1),
 *   left likewise;
 *   bilinear resampling as cv2.resize INTER_LINEAR (pixel centres at +0.5, edges clamped), rounded to
 *   an 8-bit level; pad value elsewhere; every level times float32(1/255).
 */
#ifndef S2TRT_S2_PREPROCESS_KERNEL_H
#define S2TRT_S2_PREPROCESS_KERNEL_H

#include <cuda_runtime_api.h>

#if defined(_WIN32)
#define S2PP_API __declspec(dllexport)
#else
#define S2PP_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Output types, numbered like nvinfer1::DataType (kFLOAT = 0, kHALF = 1). */
enum
{
    S2PP_DTYPE_FLOAT32 = 0,
    S2PP_DTYPE_FLOAT16 = 1
};

/*
 * Where a frame of src_h x src_w lands in a dst_h x dst_w input: geometry[0..3] = resized height,
 * resized width, top padding, left padding. Returns 0, or cudaErrorInvalidValue (1) for a size that is
 * not positive.
 */
S2PP_API int s2pp_letterbox_geometry(int src_h, int src_w, int dst_h, int dst_w, int scaleup, int* geometry);

/*
 * Letterboxes `batch` frames into `out` on `stream`. frames: host array of `batch` device pointers to
 * uint8 BGR HWC images; heights, widths: host arrays; pitches: host array of row strides in bytes
 * (NULL, or 0 for a frame, means 3 * width). out: device pointer to batch * 3 * dst_h * dst_w elements
 * of `dtype`, frame i at element i * 3 * dst_h * dst_w. pad_value: 0..255.
 * Returns 0 (cudaSuccess) or a cudaError_t value: cudaErrorInvalidValue (1) for bad arguments, checked
 * before any launch, otherwise the error of the launches. Asynchronous; the host arrays may be
 * reused as soon as it returns.
 */
S2PP_API int s2pp_letterbox(unsigned char const* const* frames, int const* heights, int const* widths,
    int const* pitches, int batch, void* out, int dst_h, int dst_w, int dtype, int pad_value, int scaleup,
    cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* S2TRT_S2_PREPROCESS_KERNEL_H */
