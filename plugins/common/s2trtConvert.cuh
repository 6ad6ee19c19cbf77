/*
 * Float <-> storage-type conversions shared by the plugins' kernels: every kernel computes in float
 * and stores T (float, or __half rounded to nearest even as TensorRT's own FP16 layers round).
 */
#ifndef S2TRT_COMMON_CONVERT_CUH
#define S2TRT_COMMON_CONVERT_CUH

#include <cuda_fp16.h>

namespace s2trt
{

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}

__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float v);

template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}

template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

} // namespace s2trt

#endif // S2TRT_COMMON_CONVERT_CUH
