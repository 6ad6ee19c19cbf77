/* Stand-ins for the nine C entry points that TensorRT's Python module (tensorrt.so) imports from
 * libnvinfer, libnvinfer_plugin and libnvonnxparser. Compiled once per soname so the real module
 * imports and its API can be listed; calling any of them means a test touched the GPU path. */
#include <stdio.h>
#include <stdlib.h>

#define S2_STUB(ret, name, ...)                                                     \
    ret name(__VA_ARGS__)                                                          \
    {                                                                              \
        fprintf(stderr, "s2trt TensorRT stub: %s called, no TensorRT here\n", #name); \
        abort();                                                                   \
    }

S2_STUB(void*, createInferBuilder_INTERNAL, void* logger, int version)
S2_STUB(void*, createInferRuntime_INTERNAL, void* logger, int version)
S2_STUB(void*, createInferRefitter_INTERNAL, void* engine, void* logger, int version)
S2_STUB(void*, createNvOnnxParser_INTERNAL, void* network, void* logger, int version)
S2_STUB(void*, createNvOnnxParserRefitter_INTERNAL, void* refitter, void* logger, int version)
S2_STUB(int, getNvOnnxParserVersion, void)
S2_STUB(void*, getPluginRegistry, void)
S2_STUB(void*, getBuilderPluginRegistry, int capability)
S2_STUB(int, initLibNvInferPlugins, void* logger, char const* libNamespace)
