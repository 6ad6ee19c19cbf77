/*
 * libs2sa_emulation.so: s2sa_emulate_forward is s2sa_forward with every launch run on the CPU by
 * cudaHostEmulation.h, on host pointers. Same argument checks, dispatch and kernels as the GPU build:
 * the .cu file is compiled here as plain C++. The stream is only looked at, never used: a non-null
 * value takes the host path of a real stream (programmatic launch on a 9.x fake device).
 */
#include "cudaHostEmulation.h"

#include "../s2SplitAttention/s2SplitAttentionKernel.cu"

extern "C" S2SA_API int s2sa_emulate_forward(void const* x1, void const* x2, void const* x3, void* out,
    float const* w1, float const* w2, int B, int C, int H, int W, int dtype, void* workspace, size_t workspace_bytes,
    cudaStream_t stream)
{
    return checkedForward(x1, x2, x3, out, w1, w2, B, C, H, W, dtype, workspace, workspace_bytes, stream,
        s2trt::emulation::HostLauncher{});
}

// The fake device that the forward's host code sees from now on; resets the counters.
extern "C" S2SA_API void s2sa_emulate_set_device(int ordinal, int major, int fail_queries, int refuse_programmatic)
{
    auto& d = s2trt::emulation::gDevice;
    d.ordinal = ordinal;
    d.major = major;
    d.failQueries = fail_queries != 0;
    d.refuseProgrammatic = refuse_programmatic != 0;
    d.queries = 0;
    d.programmaticLaunches = 0;
}

// The capture state every stream reports from now on (a cudaStreamCaptureStatus, or -1: the query
// fails) and the runtime and driver versions the library sees.
extern "C" S2SA_API void s2sa_emulate_set_capture(int status, int runtime_version, int driver_version)
{
    auto& d = s2trt::emulation::gDevice;
    d.capture = status;
    d.runtimeVersion = runtime_version;
    d.driverVersion = driver_version;
}

extern "C" S2SA_API int s2sa_emulate_capture_status(void)
{
    return s2trt::emulation::gDevice.capture.load();
}

extern "C" S2SA_API int s2sa_emulate_device_queries(void)
{
    return s2trt::emulation::gDevice.queries.load();
}

extern "C" S2SA_API int s2sa_emulate_programmatic_launches(void)
{
    return s2trt::emulation::gDevice.programmaticLaunches.load();
}

// The calling thread's last-error slot, as cudaGetLastError would find it (without clearing it).
extern "C" S2SA_API void s2sa_emulate_set_last_error(int status)
{
    s2trt::emulation::tLastError = static_cast<cudaError_t>(status);
}

extern "C" S2SA_API int s2sa_emulate_last_error(void)
{
    return s2trt::emulation::tLastError;
}
