/*
 * s2pp_emulate_letterbox (in libs2sa_emulation.so) is s2pp_letterbox with its launches run on the CPU
 * by cudaHostEmulation.h, on host pointers: the same checks, geometry and kernel source.
 */
#include "cudaHostEmulation.h"

#include "../s2Preprocess/s2PreprocessKernel.cu"

extern "C" S2PP_API int s2pp_emulate_letterbox(unsigned char const* const* frames, int const* heights,
    int const* widths, int const* pitches, int batch, void* out, int dst_h, int dst_w, int dtype, int pad_value,
    int scaleup, cudaStream_t stream)
{
    return checkedLetterbox(frames, heights, widths, pitches, batch, out, dst_h, dst_w, dtype, pad_value, scaleup,
        stream, s2trt::emulation::HostLauncher{});
}
