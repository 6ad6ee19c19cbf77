/*
 * S2SplitAttention kernels. Three launches per forward, each for a reason:
 *   1. branchSumKernel  — the global sum a[b, c] needs every pixel of the three branches before any
 *                         attention weight can exist: one warp per (b, c) row streams H*W values of
 *                         x1, x2, x3 with coalesced (vectorised where aligned) loads.
 *   2. hiddenKernel     — hid = GELU(W1 · a) is a batched mat-vec over all of a; it cannot start before
 *                         launch 1 ends, and spreading its C output rows over many SMs keeps batch 1
 *                         from waiting on one SM reading the whole C×C matrix.
 *   3. attendKernel     — W2 · hid, the softmax over the three branches and the weighted sum, fused:
 *                         the warp that owns channel c computes its three logits per image, then
 *                         streams that channel's rows, so the attention weights never go to memory.
 * On sm_90+ launches 2 and 3 use programmatic dependent launch: their blocks get resident and pull
 * their weight rows into L2 while the previous kernel finishes, which hides most launch gaps
 * (S2SA_NO_PDL=1 turns it off, to compare; inside a graph capture only where CUDA can record it, see
 * s2trt::captureAllowsProgrammatic). A buffer the previous launch writes (`a`, `hid`) is
 * therefore written while the reading kernel already runs: it is never `const __restrict__` (which lets
 * the compiler use the read-only cache, valid only for data constant over the kernel's lifetime) and is
 * read with ld.global.cg (L2, coherent) after griddepcontrol.wait.
 */
#include "s2SplitAttentionKernel.h"

#include "../common/s2trtConvert.cuh"
#include "../common/s2trtCudaError.h"
#include "../common/s2trtLaunch.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

// CMake passes its CUDA_ARCHITECTURES list (commas for semicolons); other builds say they do not know.
#ifndef S2SA_CUDA_ARCHITECTURES
#define S2SA_CUDA_ARCHITECTURES "unknown"
#endif

namespace
{

constexpr int kWarp = 32;
constexpr int kReduceWarps = 8; // (b, c) rows per block in launch 1
constexpr int kMlpWarps = 4;    // channels per block in launches 2 and 3: 128 blocks at C = 512
// Images per block. A block reads its weight rows once for this many images, so the weights are read
// ceil(B / tile) times in all (from L2 after the first); larger tiles mean fewer blocks at small B.
constexpr int kHiddenBatch = 8;
constexpr int kAttendBatch = 4;
constexpr size_t kWorkspaceAlign = 256;

using s2trt::captureAllowsProgrammatic;
using s2trt::clearOwnError;
using s2trt::DeviceLauncher;
using s2trt::fromFloat;
using s2trt::toFloat;

// V consecutive elements moved as one aligned load/store (16 bytes when V * sizeof(T) == 16).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack
{
    T v[V];
};

__device__ __forceinline__ float warpSum(float v)
{
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

__device__ __forceinline__ float dot4(float4 a, float4 b)
{
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// Programmatic dependent launch (sm_90+); both are no-ops for a kernel launched without the attribute.
__device__ __forceinline__ void waitForPreviousKernel()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allowNextKernel()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Warms L2 with one weight row (128-byte lines) before the data it multiplies exists.
__device__ __forceinline__ void prefetchRow([[maybe_unused]] float const* row, [[maybe_unused]] int n,
    [[maybe_unused]] int lane)
{
#if defined(__CUDA_ARCH__)
    for (int i = lane * 32; i < n; i += kWarp * 32)
    {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(row + i));
    }
#endif
}

template <typename T, int V>
__global__ void __launch_bounds__(kReduceWarps* kWarp) branchSumKernel(T const* __restrict__ x1,
    T const* __restrict__ x2, T const* __restrict__ x3, float* __restrict__ a, int64_t rows, int hw)
{
    allowNextKernel();
    int const warp = threadIdx.x / kWarp;
    int const lane = threadIdx.x % kWarp;
    int64_t const row = int64_t(blockIdx.x) * kReduceWarps + warp;
    if (row >= rows)
    {
        return;
    }
    using P = Pack<T, V>;
    int const nvec = hw / V;
    size_t const base = size_t(row) * nvec;
    P const* p1 = reinterpret_cast<P const*>(x1) + base;
    P const* p2 = reinterpret_cast<P const*>(x2) + base;
    P const* p3 = reinterpret_cast<P const*>(x3) + base;
    float s = 0.F;
#pragma unroll 2
    for (int i = lane; i < nvec; i += kWarp)
    {
        P const u = p1[i];
        P const v = p2[i];
        P const w = p3[i];
#pragma unroll
        for (int j = 0; j < V; ++j)
        {
            s += toFloat(u.v[j]) + toFloat(v.v[j]) + toFloat(w.v[j]);
        }
    }
    s = warpSum(s);
    if (lane == 0)
    {
        a[row] = s;
    }
}

// One warp per output row j for up to kHiddenBatch images: hid[b, j] = GELU(W1[j, :] · a[b, :]).
// `a` comes from launch 1 under programmatic launch: no __restrict__, L2 loads (see the top).
__global__ void __launch_bounds__(kMlpWarps* kWarp) hiddenKernel(
    float const* a, float const* __restrict__ w1, float* hid, int B, int C)
{
    int const warp = threadIdx.x / kWarp;
    int const lane = threadIdx.x % kWarp;
    int const j = blockIdx.x * kMlpWarps + warp;
    int const b0 = blockIdx.y * kHiddenBatch;
    int const nb = min(kHiddenBatch, B - b0);
    bool const active = j < C;
    if (active)
    {
        prefetchRow(w1 + size_t(j) * C, C, lane);
    }
    allowNextKernel();
    // `a` is written by launch 1: nothing of it may be read before this point.
    waitForPreviousKernel();
    if (!active)
    {
        return;
    }
    int const c4 = C / 4;
    float4 const* wrow = reinterpret_cast<float4 const*>(w1 + size_t(j) * C);
    float4 const* a4 = reinterpret_cast<float4 const*>(a + size_t(b0) * C);
    float acc[kHiddenBatch] = {};
    for (int i = lane; i < c4; i += kWarp)
    {
        float4 const w = __ldg(wrow + i);
#pragma unroll
        for (int r = 0; r < kHiddenBatch; ++r)
        {
            if (r < nb)
            {
                acc[r] += dot4(w, __ldcg(a4 + size_t(r) * c4 + i));
            }
        }
    }
    float mine = 0.F;
#pragma unroll
    for (int r = 0; r < kHiddenBatch; ++r)
    {
        float const total = warpSum(acc[r]);
        mine = (r == lane) ? total : mine;
    }
    if (lane < nb)
    {
        // Exact (erf) GELU, as torch.nn.GELU() by default.
        hid[size_t(b0 + lane) * C + j] = 0.5F * mine * (1.F + erff(mine * 0.70710678118654752440F));
    }
}

// One warp per channel c for up to kAttendBatch images: the three logits W2[k*C + c, :] · hid[b, :],
// their softmax over k, then out[b, c, :] = sum_k bar_k * x_k[b, c, :]. The inputs x1..x3 were complete
// before launch 1 (an ordinary launch) began; `hid` comes from launch 2: no __restrict__, L2 loads.
template <typename T, int V>
__global__ void __launch_bounds__(kMlpWarps* kWarp) attendKernel(T const* __restrict__ x1,
    T const* __restrict__ x2, T const* __restrict__ x3, T* __restrict__ out, float const* hid,
    float const* __restrict__ w2, int B, int C, int hw)
{
    __shared__ float sBar[kMlpWarps][kAttendBatch][3];
    int const warp = threadIdx.x / kWarp;
    int const lane = threadIdx.x % kWarp;
    int const c = blockIdx.x * kMlpWarps + warp;
    int const b0 = blockIdx.y * kAttendBatch;
    int const nb = min(kAttendBatch, B - b0);
    bool const active = c < C;
    if (active)
    {
#pragma unroll
        for (int k = 0; k < 3; ++k)
        {
            prefetchRow(w2 + (size_t(k) * C + c) * C, C, lane);
        }
    }
    // `hid` is written by launch 2: nothing of it may be read before this point.
    waitForPreviousKernel();
    if (!active)
    {
        return;
    }
    int const c4 = C / 4;
    float4 const* r0 = reinterpret_cast<float4 const*>(w2 + size_t(c) * C);
    float4 const* r1 = reinterpret_cast<float4 const*>(w2 + (size_t(C) + c) * C);
    float4 const* r2 = reinterpret_cast<float4 const*>(w2 + (2 * size_t(C) + c) * C);
    float4 const* h4 = reinterpret_cast<float4 const*>(hid + size_t(b0) * C);
    float acc[3][kAttendBatch] = {};
    for (int i = lane; i < c4; i += kWarp)
    {
        float4 const u0 = __ldg(r0 + i);
        float4 const u1 = __ldg(r1 + i);
        float4 const u2 = __ldg(r2 + i);
#pragma unroll
        for (int r = 0; r < kAttendBatch; ++r)
        {
            if (r < nb)
            {
                float4 const h = __ldcg(h4 + size_t(r) * c4 + i);
                acc[0][r] += dot4(u0, h);
                acc[1][r] += dot4(u1, h);
                acc[2][r] += dot4(u2, h);
            }
        }
    }
    float logit[3] = {0.F, 0.F, 0.F};
#pragma unroll
    for (int r = 0; r < kAttendBatch; ++r)
    {
#pragma unroll
        for (int k = 0; k < 3; ++k)
        {
            float const total = warpSum(acc[k][r]);
            logit[k] = (r == lane) ? total : logit[k];
        }
    }
    if (lane < nb)
    {
        float const m = fmaxf(logit[0], fmaxf(logit[1], logit[2]));
        float const e0 = expf(logit[0] - m);
        float const e1 = expf(logit[1] - m);
        float const e2 = expf(logit[2] - m);
        float const inv = 1.F / (e0 + e1 + e2);
        sBar[warp][lane][0] = e0 * inv;
        sBar[warp][lane][1] = e1 * inv;
        sBar[warp][lane][2] = e2 * inv;
    }
    __syncwarp();

    // The rows of the nb images are walked as one index space so that short rows (H*W = 400 is 50
    // 16-byte packs in FP16) still keep all 32 lanes loading.
    using P = Pack<T, V>;
    int const nvec = hw / V;
    int const total = nb * nvec;
    P const* p1 = reinterpret_cast<P const*>(x1);
    P const* p2 = reinterpret_cast<P const*>(x2);
    P const* p3 = reinterpret_cast<P const*>(x3);
    P* po = reinterpret_cast<P*>(out);
#pragma unroll 2
    for (int idx = lane; idx < total; idx += kWarp)
    {
        int const r = idx / nvec;
        int const v = idx - r * nvec;
        size_t const off = (size_t(b0 + r) * C + c) * nvec + v;
        float const g0 = sBar[warp][r][0];
        float const g1 = sBar[warp][r][1];
        float const g2 = sBar[warp][r][2];
        P const u = p1[off];
        P const s = p2[off];
        P const t = p3[off];
        P o;
#pragma unroll
        for (int j = 0; j < V; ++j)
        {
            o.v[j] = fromFloat<T>(g0 * toFloat(u.v[j]) + g1 * toFloat(s.v[j]) + g2 * toFloat(t.v[j]));
        }
        po[off] = o;
    }
}

size_t alignUp(size_t n)
{
    return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

bool aligned16(void const* p)
{
    return (reinterpret_cast<std::uintptr_t>(p) & 15U) == 0;
}

// A failed runtime call also leaves its error in the calling thread's "last error" slot, where the
// next cudaGetLastError() of TensorRT or the application would find it and blame its own launch.
// Devices whose compute capability is cached; an ordinal beyond them is queried on every call.
constexpr int kCachedDevices = 64;

// Major compute capability of the current device, queried once per device and cached, so that a
// forward costs no device query (cudaGetDevice only reads the thread's current device). -1: unknown.
int currentDeviceMajor()
{
    static std::atomic<int> cache[kCachedDevices];
    cudaError_t const pending = cudaPeekAtLastError();
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
    {
        clearOwnError(pending);
        return -1;
    }
    bool const cacheable = device >= 0 && device < kCachedDevices;
    // 0 = not cached yet (no CUDA device has compute capability 0.x).
    int major = cacheable ? cache[device].load(std::memory_order_relaxed) : 0;
    if (major > 0)
    {
        return major;
    }
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    {
        clearOwnError(pending);
        return -1; // not cached: a later call asks again
    }
    if (cacheable)
    {
        cache[device].store(major, std::memory_order_relaxed);
    }
    return major;
}

// Programmatic dependent launch needs sm_90, a real stream (the implicitly synchronizing default
// streams are left alone) and, while TensorRT or the application captures the stream into a CUDA graph,
// a runtime and driver that can record it there (s2trt::captureAllowsProgrammatic); the environment
// switch exists to measure its effect.
bool useProgrammaticLaunch(cudaStream_t stream)
{
    if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread)
    {
        return false;
    }
    static bool const disabled = [] {
        char const* v = std::getenv("S2SA_NO_PDL");
        return v != nullptr && v[0] != '\0' && v[0] != '0';
    }();
    return !disabled && currentDeviceMajor() >= 9 && captureAllowsProgrammatic(stream);
}

// Launches on the GPU and returns that launch's own status (never cudaGetLastError(), which would
// also return, and clear, the error of some earlier launch that is not ours). forward() takes the
// launcher as a parameter so that the CPU emulation in plugins/emulation/ runs this file's host logic
// and kernels unchanged.
// A programmatic launch that the driver or the stream refuses is retried as an ordinary, fully
// ordered one; the refusal's error is ours and does not outlive the retry. (Under graph capture a
// refusal would already have invalidated the capture: useProgrammaticLaunch asks first.)
template <typename Launcher, typename... Params, typename... Args>
cudaError_t launchDependent(Launcher const& launch, void (*kernel)(Params...), dim3 grid, dim3 block,
    cudaStream_t stream, bool programmatic, Args... args)
{
    cudaError_t const pending = cudaPeekAtLastError();
    cudaError_t status = launch(kernel, grid, block, stream, programmatic, args...);
    if (programmatic && (status == cudaErrorNotSupported || status == cudaErrorInvalidValue))
    {
        clearOwnError(pending);
        status = launch(kernel, grid, block, stream, false, args...);
    }
    return status;
}

template <typename T, int V, typename Launcher>
cudaError_t forward(void const* x1, void const* x2, void const* x3, void* out, float const* w1, float const* w2,
    int B, int C, int hw, float* a, float* hid, cudaStream_t stream, Launcher const& launch)
{
    auto const* t1 = static_cast<T const*>(x1);
    auto const* t2 = static_cast<T const*>(x2);
    auto const* t3 = static_cast<T const*>(x3);
    int64_t const rows = int64_t(B) * C;
    bool const pdl = useProgrammaticLaunch(stream);

    dim3 const grid1(static_cast<unsigned>((rows + kReduceWarps - 1) / kReduceWarps));
    // Launch 1 is an ordinary launch: it must see everything earlier on the stream (the inputs).
    cudaError_t status
        = launch(branchSumKernel<T, V>, grid1, dim3(kReduceWarps * kWarp), stream, false, t1, t2, t3, a, rows, hw);
    if (status != cudaSuccess)
    {
        return status;
    }
    unsigned const channelBlocks = static_cast<unsigned>((C + kMlpWarps - 1) / kMlpWarps);
    dim3 const grid2(channelBlocks, static_cast<unsigned>((B + kHiddenBatch - 1) / kHiddenBatch));
    status = launchDependent(launch, hiddenKernel, grid2, dim3(kMlpWarps * kWarp), stream, pdl, a, w1, hid, B, C);
    if (status != cudaSuccess)
    {
        return status;
    }
    dim3 const grid3(channelBlocks, static_cast<unsigned>((B + kAttendBatch - 1) / kAttendBatch));
    return launchDependent(launch, attendKernel<T, V>, grid3, dim3(kMlpWarps * kWarp), stream, pdl, t1, t2, t3,
        static_cast<T*>(out), hid, w2, B, C, hw);
}

} // namespace

extern "C" size_t s2sa_workspace_size(int B, int C)
{
    if (B <= 0 || C <= 0)
    {
        return 0;
    }
    return 2 * alignUp(size_t(B) * size_t(C) * sizeof(float));
}

namespace
{

template <typename Launcher>
int checkedForward(void const* x1, void const* x2, void const* x3, void* out, float const* w1_dev,
    float const* w2_dev, int B, int C, int H, int W, int dtype, void* workspace, size_t workspace_bytes,
    cudaStream_t stream, Launcher const& launch)
{
    if (B < 0 || C <= 0 || H < 0 || W < 0 || C % S2SA_CHANNEL_MULTIPLE != 0
        || (dtype != S2SA_DTYPE_FLOAT32 && dtype != S2SA_DTYPE_FLOAT16))
    {
        return cudaErrorInvalidValue;
    }
    int64_t const hw64 = int64_t(H) * W;
    if (B == 0 || hw64 == 0)
    {
        return cudaSuccess;
    }
    // attendKernel indexes the rows of one image tile with 32-bit integers.
    if (hw64 > INT32_MAX / kAttendBatch || x1 == nullptr || x2 == nullptr || x3 == nullptr || out == nullptr
        || w1_dev == nullptr || w2_dev == nullptr || workspace == nullptr || !aligned16(w1_dev) || !aligned16(w2_dev)
        || !aligned16(workspace) || workspace_bytes < s2sa_workspace_size(B, C))
    {
        return cudaErrorInvalidValue;
    }
    int const hw = static_cast<int>(hw64);
    auto* a = static_cast<float*>(workspace);
    auto* hid = reinterpret_cast<float*>(static_cast<char*>(workspace) + alignUp(size_t(B) * C * sizeof(float)));
    // 16-byte packs need every row to start on a 16-byte boundary: H*W a multiple of the pack length
    // and aligned base pointers. Other shapes take the element-wise path.
    bool const pointersAligned = aligned16(x1) && aligned16(x2) && aligned16(x3) && aligned16(out);
    if (dtype == S2SA_DTYPE_FLOAT32)
    {
        if (pointersAligned && hw % 4 == 0)
        {
            return forward<float, 4>(x1, x2, x3, out, w1_dev, w2_dev, B, C, hw, a, hid, stream, launch);
        }
        return forward<float, 1>(x1, x2, x3, out, w1_dev, w2_dev, B, C, hw, a, hid, stream, launch);
    }
    if (pointersAligned && hw % 8 == 0)
    {
        return forward<__half, 8>(x1, x2, x3, out, w1_dev, w2_dev, B, C, hw, a, hid, stream, launch);
    }
    return forward<__half, 1>(x1, x2, x3, out, w1_dev, w2_dev, B, C, hw, a, hid, stream, launch);
}

} // namespace

extern "C" int s2sa_forward(void const* x1, void const* x2, void const* x3, void* out, float const* w1_dev,
    float const* w2_dev, int B, int C, int H, int W, int dtype, void* workspace, size_t workspace_bytes,
    cudaStream_t stream)
{
    return checkedForward(
        x1, x2, x3, out, w1_dev, w2_dev, B, C, H, W, dtype, workspace, workspace_bytes, stream, DeviceLauncher{});
}

extern "C" char const* s2sa_error_string(int status)
{
    return cudaGetErrorString(static_cast<cudaError_t>(status));
}

extern "C" int s2sa_check_device(void)
{
    // Per device: the answer cannot change within a process, and loading the module costs once.
    static std::atomic<int> cache[kCachedDevices];
    cudaError_t const pending = cudaPeekAtLastError();
    int device = 0;
    cudaError_t status = cudaGetDevice(&device);
    bool const cacheable = status == cudaSuccess && device >= 0 && device < kCachedDevices;
    // cache holds status + 1, so that 0 means "not asked yet".
    int const cached = cacheable ? cache[device].load(std::memory_order_relaxed) : 0;
    if (cached > 0)
    {
        return cached - 1;
    }
    if (status == cudaSuccess)
    {
        // Fails when the library holds neither a cubin for this GPU nor PTX the driver can compile for
        // it; every kernel of this file is built for the same architectures, so one stands for all.
        void (*const kernel)(float const*, float const*, float const*, float*, int64_t, int) = branchSumKernel<float, 1>;
        cudaFuncAttributes attributes{};
        status = cudaFuncGetAttributes(&attributes, reinterpret_cast<void const*>(kernel));
    }
    if (status != cudaSuccess)
    {
        clearOwnError(pending);
    }
    if (cacheable && (status == cudaSuccess || s2sa_is_missing_code(status)))
    {
        cache[device].store(status + 1, std::memory_order_relaxed);
    }
    return status;
}

extern "C" char const* s2sa_cuda_architectures(void)
{
    return S2SA_CUDA_ARCHITECTURES;
}
