/*
 * CUDA error-state hygiene shared by the plugins' launchers and TensorRT glue: a plugin must not
 * leave its own failure in the thread's last-error slot, nor erase someone else's.
 */
#ifndef S2TRT_COMMON_CUDA_ERROR_H
#define S2TRT_COMMON_CUDA_ERROR_H

#include <cuda_runtime_api.h>

namespace s2trt
{

// Only our own error is cleared: when `pendingBefore` (a cudaPeekAtLastError() taken before the call)
// shows an earlier, unrelated error, it stays for its owner to see.
inline void clearOwnError(cudaError_t pendingBefore)
{
    if (pendingBefore == cudaSuccess)
    {
        static_cast<void>(cudaGetLastError());
    }
}

} // namespace s2trt

#endif // S2TRT_COMMON_CUDA_ERROR_H
