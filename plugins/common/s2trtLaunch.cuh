/*
 * The launcher the plugins' kernels go through on a real device (the CPU emulation passes its own):
 * cudaLaunchKernelEx, with programmatic dependent launch when asked for.
 */
#ifndef S2TRT_COMMON_LAUNCH_CUH
#define S2TRT_COMMON_LAUNCH_CUH

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

} // namespace s2trt

#endif // S2TRT_COMMON_LAUNCH_CUH
