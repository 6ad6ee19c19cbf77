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

// The source pixels and fixed-point weights the kernel uses along one axis of `src` pixels resized to
// `resized`: first[d], second[d] (the clamped neighbour), weight0[d] + weight1[d] (about 2048), for every
// resized coordinate d. For tests that compare the kernel's integer coordinate arithmetic with
// cv2.resize's double one directly, over more sizes than whole frames could cover.
extern "C" S2PP_API void s2pp_emulate_axis(
    int src, int resized, int* first, int* second, int* weight0, int* weight1)
{
    AxisScale const scale = axisScale(src, resized);
    for (int d = 0; d < resized; ++d)
    {
        sourceCoord(d, scale, src, first[d], second[d], weight0[d], weight1[d]);
    }
}
