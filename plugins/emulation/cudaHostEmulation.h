/*
 * Just enough of CUDA's device side, on the host, to run the S2SplitAttention kernels' own source on
 * the CPU: every CUDA thread is a std::thread, the 32 threads of a warp meet at a barrier for each
 * shuffle and __syncwarp, and blocks run one after another so that __shared__ can be a static.
 * A test tool for machines without a GPU (it checks indexing, tiling and the host dispatch, not
 * timing or the memory model); include it before the .cu file.
 *
 * The host code's use of the runtime is observable too: a fake device (ordinal, compute capability,
 * failing queries, refused programmatic launches) answers cudaGetDevice / cudaDeviceGetAttribute,
 * counts the queries, and keeps the per-thread last-error slot that cudaGetLastError /
 * cudaPeekAtLastError read, so tests can see whether a forward swallows an error it does not own.
 * A fake stream capture (cudaStreamIsCapturing, with the runtime and driver versions that
 * cudaRuntimeGetVersion / cudaDriverGetVersion report) refuses a programmatic launch that those
 * versions cannot record in a graph and is invalidated by it, as a real capture is by a refused call;
 * the launches of a capture still run at once, standing in for the graph's replay.
 */
#ifndef S2TRT_CUDA_HOST_EMULATION_H
#define S2TRT_CUDA_HOST_EMULATION_H

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>

// The CUDA headers are already in, so these replace their host-side meanings for the .cu that follows.
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace s2trt
{
namespace emulation
{

struct Warp
{
    std::barrier<> barrier{32};
    float lanes[32]{};
};

inline thread_local Warp* tWarp = nullptr;
inline thread_local uint3 tThreadIdx{};
inline thread_local uint3 tBlockIdx{};

struct FakeDevice
{
    std::atomic<int> ordinal{0};
    std::atomic<int> major{9};
    std::atomic<bool> failQueries{false};
    std::atomic<bool> refuseProgrammatic{false};
    std::atomic<int> queries{0};
    std::atomic<int> programmaticLaunches{0};
    // cudaStreamCaptureStatus of every stream, or -1: the capture query fails.
    std::atomic<int> capture{cudaStreamCaptureStatusNone};
    std::atomic<int> runtimeVersion{CUDART_VERSION};
    std::atomic<int> driverVersion{CUDART_VERSION};
};

// CUDA 12.3: the first runtime and driver that record a programmatic launch in a captured graph.
constexpr int kCaptureRecordsProgrammatic = 12030;

inline FakeDevice gDevice;
inline thread_local cudaError_t tLastError = cudaSuccess;

// What the runtime does with a failed call: the error also lands in the thread's last-error slot.
inline cudaError_t recordError(cudaError_t status)
{
    if (status != cudaSuccess)
    {
        tLastError = status;
    }
    return status;
}

inline cudaError_t fakeGetDevice(int* device)
{
    *device = gDevice.ordinal.load();
    return cudaSuccess;
}

inline cudaError_t fakeDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /* device */)
{
    ++gDevice.queries;
    if (gDevice.failQueries.load())
    {
        return recordError(cudaErrorInvalidDevice);
    }
    *value = attr == cudaDevAttrComputeCapabilityMajor ? gDevice.major.load() : 0;
    return cudaSuccess;
}

inline cudaError_t fakeStreamIsCapturing(cudaStream_t /* stream */, cudaStreamCaptureStatus* status)
{
    int const capture = gDevice.capture.load();
    if (capture < 0)
    {
        return recordError(cudaErrorInvalidResourceHandle);
    }
    *status = static_cast<cudaStreamCaptureStatus>(capture);
    return cudaSuccess;
}

inline cudaError_t fakeRuntimeGetVersion(int* version)
{
    *version = gDevice.runtimeVersion.load();
    return cudaSuccess;
}

inline cudaError_t fakeDriverGetVersion(int* version)
{
    *version = gDevice.driverVersion.load();
    return cudaSuccess;
}

inline cudaError_t fakeGetLastError()
{
    cudaError_t const status = tLastError;
    tLastError = cudaSuccess;
    return status;
}

inline cudaError_t fakePeekAtLastError()
{
    return tLastError;
}

// Runs kernel(args...) over the grid: one pool of block.x threads, blocks in sequence.
struct HostLauncher
{
    template <typename... Params, typename... Args>
    cudaError_t operator()(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t /* stream */,
        bool programmatic, Args... args) const
    {
        if (gDevice.capture.load() == cudaStreamCaptureStatusInvalidated)
        {
            return recordError(cudaErrorStreamCaptureInvalidated);
        }
        if (programmatic)
        {
            if (gDevice.capture.load() == cudaStreamCaptureStatusActive
                && std::min(gDevice.runtimeVersion.load(), gDevice.driverVersion.load()) < kCaptureRecordsProgrammatic)
            {
                gDevice.capture = cudaStreamCaptureStatusInvalidated;
                return recordError(cudaErrorStreamCaptureUnsupported);
            }
            if (gDevice.refuseProgrammatic.load())
            {
                return recordError(cudaErrorNotSupported);
            }
            ++gDevice.programmaticLaunches;
        }
        unsigned const threads = block.x;
        std::vector<std::unique_ptr<Warp>> warps;
        for (unsigned w = 0; w < (threads + 31) / 32; ++w)
        {
            warps.push_back(std::make_unique<Warp>());
        }
        std::barrier<> blockDone(static_cast<std::ptrdiff_t>(threads));
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t)
        {
            pool.emplace_back([&, t] {
                tThreadIdx = uint3{t, 0, 0};
                tWarp = warps[t / 32].get();
                for (unsigned by = 0; by < grid.y; ++by)
                {
                    for (unsigned bx = 0; bx < grid.x; ++bx)
                    {
                        tBlockIdx = uint3{bx, by, 0};
                        kernel(static_cast<Params>(args)...);
                        blockDone.arrive_and_wait();
                    }
                }
            });
        }
        for (auto& t : pool)
        {
            t.join();
        }
        return cudaSuccess;
    }
};

} // namespace emulation
} // namespace s2trt

#define threadIdx (s2trt::emulation::tThreadIdx)
#define blockIdx (s2trt::emulation::tBlockIdx)
#define cudaGetDevice s2trt::emulation::fakeGetDevice
#define cudaDeviceGetAttribute s2trt::emulation::fakeDeviceGetAttribute
#define cudaStreamIsCapturing s2trt::emulation::fakeStreamIsCapturing
#define cudaRuntimeGetVersion s2trt::emulation::fakeRuntimeGetVersion
#define cudaDriverGetVersion s2trt::emulation::fakeDriverGetVersion
#define cudaGetLastError s2trt::emulation::fakeGetLastError
#define cudaPeekAtLastError s2trt::emulation::fakePeekAtLastError

inline float __shfl_xor_sync(unsigned /* mask */, float v, int laneMask)
{
    auto* warp = s2trt::emulation::tWarp;
    unsigned const lane = s2trt::emulation::tThreadIdx.x % 32;
    warp->lanes[lane] = v;
    warp->barrier.arrive_and_wait();
    float const other = warp->lanes[lane ^ static_cast<unsigned>(laneMask)];
    warp->barrier.arrive_and_wait();
    return other;
}

inline void __syncwarp(unsigned /* mask */ = 0xffffffffu)
{
    s2trt::emulation::tWarp->barrier.arrive_and_wait();
}

inline float4 __ldg(float4 const* p)
{
    return *p;
}

inline float4 __ldcg(float4 const* p)
{
    return *p;
}

using std::min;

#endif // S2TRT_CUDA_HOST_EMULATION_H
