/*
 * libs2sa_emulation.so: s2sa_emulate_forward is s2sa_forward with every launch run on the CPU by
 * cudaHostEmulation.h, on host pointers. Same argument checks, dispatch and kernels as the GPU build:
 * the .cu file is compiled here as plain C++.
 */
#include "cudaHostEmulation.h"

#include "../s2SplitAttention/s2SplitAttentionKernel.cu"

extern "C" S2SA_API int s2sa_emulate_forward(void const* x1, void const* x2, void const* x3, void* out,
    float const* w1, float const* w2, int B, int C, int H, int W, int dtype, void* workspace, size_t workspace_bytes)
{
    return checkedForward(x1, x2, x3, out, w1, w2, B, C, H, W, dtype, workspace, workspace_bytes, nullptr,
        s2trt::emulation::HostLauncher{});
}
