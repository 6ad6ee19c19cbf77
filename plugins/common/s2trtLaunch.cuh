/*
 * The launcher the plugins' kernels go through on a real device (the CPU emulation passes its own):
 * cudaLaunchKernelEx, with programmatic dependent launch when asked for; and whether a stream that is
 * being captured into a CUDA graph can take a programmatic launch at all.
 */
#ifndef S2TRT_COMMON_LAUNCH_CUH
#define S2TRT_COMMON_LAUNCH_CUH

#include "s2trtCudaError.h"

#include <cuda_runtime.h>

namespace s2trt
{

struct DeviceLauncher
{
    template <typename... Params, typename... Args>
    cudaError_t operator()(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, bool programmatic,
        Args... args) const
    {
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t config{};
        config.gridDim = grid;
        config.blockDim = block;
        config.dynamicSmemBytes = 0;
        config.stream = stream;
        config.attrs = attr;
        config.numAttrs = programmatic ? 1 : 0;
        return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
    }
};

// A graph holds a programmatic dependency as an edge of type cudaGraphDependencyTypeProgrammatic
// (cudaGraphEdgeData, driver_types.h), and stream capture records one for a programmatic launch. Graph
// edge data and the capture calls that carry it (cudaStreamGetCaptureInfo's edgeData_out,
// cudaStreamBeginCaptureToGraph) came with CUDA 12.3: an older runtime or driver has no way to put the
// launch into the graph, and a launch the capture refuses invalidates the whole capture (a retry cannot
// repair it). Both versions count: the runtime is linked into the library, the driver is the machine's.
constexpr int kProgrammaticCaptureVersion = 12030;

// Whether a programmatic launch on `stream` is safe as far as graph capture goes: always when the stream
// is not capturing; during an active capture only with runtime and driver >= 12.3; never when the
// capture state is unknown or the capture is already invalidated (an ordinary launch is always correct,
// only slower). Clears only its own error from the thread's last-error slot.
inline bool captureAllowsProgrammatic(cudaStream_t stream)
{
    cudaError_t const pending = cudaPeekAtLastError();
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess)
    {
        clearOwnError(pending);
        return false;
    }
    if (capture != cudaStreamCaptureStatusActive)
    {
        return capture == cudaStreamCaptureStatusNone;
    }
    int runtime = 0;
    int driver = 0;
    if (cudaRuntimeGetVersion(&runtime) != cudaSuccess || cudaDriverGetVersion(&driver) != cudaSuccess)
    {
        clearOwnError(pending);
        return false;
    }
    return runtime >= kProgrammaticCaptureVersion && driver >= kProgrammaticCaptureVersion;
}

} // namespace s2trt

#endif // S2TRT_COMMON_LAUNCH_CUH
