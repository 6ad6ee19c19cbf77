/*
 * Letterbox + BGR->RGB + 1/255 + HWC->NCHW of a batch of uint8 frames, one launch per 16 frames: one
 * thread per output pixel writes its three planes. The geometry is computed on the host exactly as
 * runtime/preprocess.py does (double precision, Python's rounding), the resampling on the device with
 * cv2.resize's INTER_LINEAR arithmetic for 8-bit images: source coordinate (d + 0.5) * scale - 0.5 as
 * OpenCV computes it in double (reproduced exactly in integers, see sourceCoordinate), clamped at the
 * edges; weights rounded to 1/2048 (INTER_RESIZE_COEF_BITS = 11); the horizontal pass in integers; the
 * vertical one as OpenCV's vectorised path rounds it. The same integers give OpenCV's INTER_AREA result
 * for an exact halving, which cv2.resize switches to. Measured against OpenCV 5.0: identical on
 * >= 99.6 % of resampled pixels, never more than one 8-bit level apart.
 * No FP64 instruction runs per pixel: FP64 throughput is 1/64 of FP32 on sm_86/87/89 (A10, Orin, L4),
 * and a test keeps .f64 out of the kernel's PTX.
 */
#include "s2PreprocessKernel.h"

#include "../common/s2trtConvert.cuh"
#include "../common/s2trtLaunch.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace
{

constexpr int kThreads = 256;
// Frames per launch: their descriptors travel as a kernel parameter (well under the 4 KiB limit), so
// no descriptor upload is needed and the call stays capturable in a CUDA graph.
constexpr int kFramesPerLaunch = 16;

// A positive double scale as mantissa * 2^-shift, mantissa holding all 53 significant bits.
struct AxisScale
{
    uint64_t mantissa;
    int shift;
};

struct FrameDesc
{
    unsigned char const* src;
    int h, w, pitch;
    int nh, nw, top, left;
    AxisScale scaleY, scaleX; // source pixels per resized pixel, as cv2.resize computes them (double)
};

struct FrameBatch
{
    FrameDesc f[kFramesPerLaunch];
};

using s2trt::DeviceLauncher;
using s2trt::fromFloat;

// The CPU emulation compiles the kernels as host code (GCC), where __clzll does not exist.
__device__ __forceinline__ int leadingZeros(uint64_t v)
{
#if defined(__CUDA_ARCH__)
    return __clzll(static_cast<long long>(v));
#else
    return __builtin_clzll(v);
#endif
}

// float((d + 0.5) * scale - 0.5) with the two operations in double, as cv2.resize computes a source
// coordinate, bit for bit, in integers. With scale = M * 2^-k: (d + 0.5) * scale = (2d + 1) * M * 2^-(k+1)
// exactly, an integer product of at most 32 + 53 bits, which double rounds to 53 significant bits
// (nearest, ties to even). Subtracting 0.5 from a double u >= 0.5 is exact (u < 2^32 here, so 0.5 is a
// whole number of u's units); below 0.5 the result is negative, and any negative coordinate is clamped
// to the first pixel alike, so -1 stands for all of them. The final rounding to float is the conversion
// of the integer, then an exact power-of-two scaling.
__device__ __forceinline__ float sourceCoordinate(int d, AxisScale scale)
{
    // The product as high:low 64-bit words, from 32 x 32 and 32 x 21-bit partial products.
    uint64_t const odd = 2 * static_cast<uint64_t>(d) + 1;
    uint64_t const lowPart = odd * (scale.mantissa & 0xffffffffU);
    uint64_t const mid = odd * (scale.mantissa >> 32) + (lowPart >> 32);
    uint64_t const high = mid >> 32;
    uint64_t const low = (mid << 32) | (lowPart & 0xffffffffU);
    int const bits = high != 0 ? 128 - leadingZeros(high) : 64 - leadingZeros(low);
    // At most 85 bits: dropping the excess over 53 never reaches into the high word.
    int const dropped = bits > 53 ? bits - 53 : 0;
    uint64_t u = low;
    if (dropped > 0)
    {
        u = (low >> dropped) | (high << (64 - dropped));
        uint64_t const rest = low & ((uint64_t(1) << dropped) - 1);
        uint64_t const half = uint64_t(1) << (dropped - 1);
        if (rest > half || (rest == half && (u & 1U) != 0))
        {
            ++u;
        }
    }
    // u counts units of 2^(dropped - k - 1); 0.5 is 2^(k - dropped) of them (k - dropped >= 1: u < 2^32).
    int const halfExponent = scale.shift - dropped;
    if (halfExponent > 62 || u < (uint64_t(1) << halfExponent))
    {
        return -1.F;
    }
    return ldexpf(static_cast<float>(u - (uint64_t(1) << halfExponent)), -(halfExponent + 1));
}

// cv2's source indices and fixed-point weights (sum about 2048) for resized coordinate d along an axis of
// n source pixels: the coordinate as sourceCoordinate computes it, weights rounded half to even.
__device__ __forceinline__ void sourceCoord(int d, AxisScale scale, int n, int& s0, int& s1, int& w0, int& w1)
{
    float const f = sourceCoordinate(d, scale);
    int s = static_cast<int>(floorf(f));
    float frac = f - static_cast<float>(s);
    if (s < 0)
    {
        s = 0;
        frac = 0.F;
    }
    if (s >= n - 1)
    {
        s = n - 1;
        frac = 0.F;
    }
    s0 = s;
    s1 = min(s + 1, n - 1);
    w0 = static_cast<int>(rintf((1.F - frac) * 2048.F));
    w1 = static_cast<int>(rintf(frac * 2048.F));
}

// out points at this launch's first frame; blockIdx.y is the frame within the launch.
template <typename T>
__global__ void __launch_bounds__(kThreads) letterboxKernel(
    FrameBatch batch, T* out, int dstH, int dstW, float padLevel, float toUnit)
{
    FrameDesc const& d = batch.f[blockIdx.y];
    int64_t const plane = int64_t(dstH) * dstW;
    int64_t const p = int64_t(blockIdx.x) * kThreads + threadIdx.x;
    if (p >= plane)
    {
        return;
    }
    int const y = static_cast<int>(p / dstW);
    int const x = static_cast<int>(p - int64_t(y) * dstW);
    int const ry = y - d.top;
    int const rx = x - d.left;
    float level[3] = {padLevel, padLevel, padLevel}; // B, G, R
    if (ry >= 0 && ry < d.nh && rx >= 0 && rx < d.nw)
    {
        int y0, y1, x0, x1, b0, b1, a0, a1;
        sourceCoord(ry, d.scaleY, d.h, y0, y1, b0, b1);
        sourceCoord(rx, d.scaleX, d.w, x0, x1, a0, a1);
        unsigned char const* r0 = d.src + int64_t(y0) * d.pitch;
        unsigned char const* r1 = d.src + int64_t(y1) * d.pitch;
#pragma unroll
        for (int c = 0; c < 3; ++c)
        {
            int const top = r0[3 * x0 + c] * a0 + r0[3 * x1 + c] * a1;
            int const bottom = r1[3 * x0 + c] * a0 + r1[3 * x1 + c] * a1;
            // OpenCV's VResizeLinearVec_32s8u: 2^22 scale brought down in steps of 4, 16 and 2 bits.
            int const v = (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2;
            level[c] = static_cast<float>(v < 0 ? 0 : (v > 255 ? 255 : v));
        }
    }
    T* o = out + int64_t(blockIdx.y) * 3 * plane + p;
    o[0] = fromFloat<T>(level[2] * toUnit); // R
    o[plane] = fromFloat<T>(level[1] * toUnit);
    o[2 * plane] = fromFloat<T>(level[0] * toUnit);
}

// Python's round(): half to even.
double roundHalfEven(double v)
{
    double const f = std::floor(v);
    double const diff = v - f;
    if (diff > 0.5)
    {
        return f + 1.0;
    }
    if (diff < 0.5)
    {
        return f;
    }
    return std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

int geometry(int h, int w, int dstH, int dstW, int scaleup, int* g)
{
    if (h <= 0 || w <= 0 || dstH <= 0 || dstW <= 0 || g == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    double r = std::fmin(static_cast<double>(dstH) / h, static_cast<double>(dstW) / w);
    if (!scaleup)
    {
        r = std::fmin(r, 1.0);
    }
    // At least one row and column, as runtime/preprocess.py keeps for a 1xN frame.
    int const nw = std::max(static_cast<int>(roundHalfEven(w * r)), 1);
    int const nh = std::max(static_cast<int>(roundHalfEven(h * r)), 1);
    g[0] = nh;
    g[1] = nw;
    g[2] = static_cast<int>(roundHalfEven((dstH - nh) / 2.0 - 0.1));
    g[3] = static_cast<int>(roundHalfEven((dstW - nw) / 2.0 - 0.1));
    return cudaSuccess;
}

// cv2.resize's scale along an axis of n source and resized pixels, 1 / (resized / n) in double (once per
// frame, on the host), split for sourceCoordinate.
AxisScale axisScale(int n, int resized)
{
    int exponent = 0;
    double const fraction = std::frexp(1.0 / (static_cast<double>(resized) / n), &exponent);
    return AxisScale{static_cast<uint64_t>(std::ldexp(fraction, 53)), 53 - exponent};
}

// Launches on the GPU with the launch's own status (see s2SplitAttentionKernel.cu); the CPU emulation
// passes its own launcher.
struct Request
{
    unsigned char const* const* frames;
    int const* heights;
    int const* widths;
    int const* pitches;
    int dstH, dstW, scaleup;
};

// Frame i's descriptor; cudaErrorInvalidValue for a frame that cannot be letterboxed.
int describe(Request const& q, int i, FrameDesc& d)
{
    int g[4];
    d.src = q.frames[i];
    d.h = q.heights[i];
    d.w = q.widths[i];
    d.pitch = q.pitches != nullptr && q.pitches[i] != 0 ? q.pitches[i] : 3 * d.w;
    if (geometry(d.h, d.w, q.dstH, q.dstW, q.scaleup, g) != cudaSuccess || d.src == nullptr || d.w > INT32_MAX / 3
        || d.pitch < 3 * d.w)
    {
        return cudaErrorInvalidValue;
    }
    d.nh = g[0];
    d.nw = g[1];
    d.top = g[2];
    d.left = g[3];
    d.scaleY = axisScale(d.h, d.nh);
    d.scaleX = axisScale(d.w, d.nw);
    return cudaSuccess;
}

template <typename T, typename Launcher>
int launchAll(Request const& q, int batch, T* out, float padLevel, cudaStream_t stream, Launcher const& launch)
{
    int64_t const plane = int64_t(q.dstH) * q.dstW;
    unsigned const blocks = static_cast<unsigned>((plane + kThreads - 1) / kThreads);
    // numpy's float32(1 / 255): the double quotient rounded once to float.
    float const toUnit = static_cast<float>(1.0 / 255.0);
    for (int first = 0; first < batch; first += kFramesPerLaunch)
    {
        int const n = batch - first < kFramesPerLaunch ? batch - first : kFramesPerLaunch;
        FrameBatch chunk{};
        for (int i = 0; i < n; ++i)
        {
            describe(q, first + i, chunk.f[i]);
        }
        cudaError_t const status = launch(letterboxKernel<T>, dim3(blocks, static_cast<unsigned>(n)), dim3(kThreads),
            stream, false, chunk, out + int64_t(first) * 3 * plane, q.dstH, q.dstW, padLevel, toUnit);
        if (status != cudaSuccess)
        {
            return status;
        }
    }
    return cudaSuccess;
}

template <typename Launcher>
int checkedLetterbox(unsigned char const* const* frames, int const* heights, int const* widths, int const* pitches,
    int batch, void* out, int dstH, int dstW, int dtype, int padValue, int scaleup, cudaStream_t stream,
    Launcher const& launch)
{
    if (batch < 0 || dstH <= 0 || dstW <= 0 || padValue < 0 || padValue > 255
        || (dtype != S2PP_DTYPE_FLOAT32 && dtype != S2PP_DTYPE_FLOAT16) || int64_t(dstH) * dstW > INT32_MAX / 3)
    {
        return cudaErrorInvalidValue;
    }
    if (batch == 0)
    {
        return cudaSuccess;
    }
    if (frames == nullptr || heights == nullptr || widths == nullptr || out == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    Request const q{frames, heights, widths, pitches, dstH, dstW, scaleup};
    // Every frame is checked before the first launch, so a bad one leaves `out` untouched.
    for (int i = 0; i < batch; ++i)
    {
        FrameDesc d;
        if (describe(q, i, d) != cudaSuccess)
        {
            return cudaErrorInvalidValue;
        }
    }
    float const pad = static_cast<float>(padValue);
    return dtype == S2PP_DTYPE_FLOAT32 ? launchAll(q, batch, static_cast<float*>(out), pad, stream, launch)
                                       : launchAll(q, batch, static_cast<__half*>(out), pad, stream, launch);
}

} // namespace

extern "C" int s2pp_letterbox_geometry(int src_h, int src_w, int dst_h, int dst_w, int scaleup, int* geometry_out)
{
    return geometry(src_h, src_w, dst_h, dst_w, scaleup, geometry_out);
}

extern "C" int s2pp_letterbox(unsigned char const* const* frames, int const* heights, int const* widths,
    int const* pitches, int batch, void* out, int dst_h, int dst_w, int dtype, int pad_value, int scaleup,
    cudaStream_t stream)
{
    return checkedLetterbox(frames, heights, widths, pitches, batch, out, dst_h, dst_w, dtype, pad_value, scaleup,
        stream, DeviceLauncher{});
}
