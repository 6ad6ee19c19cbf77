/*
 * Entry points of libs2trt_plugins.so for TensorRT's plugin-library loader
 * (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, IBuilderConfig plugins_to_serialize):
 * getCreators lists the creators, setLoggerFinder hands over TensorRT's logger. Nothing registers
 * itself at load time, so the library loads without libnvinfer and only the loader decides.
 */
#include "s2SplitAttention/s2SplitAttentionPlugin.h"

#include <atomic>
#include <cstdio>

#define S2TRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace s2trt
{
namespace plugin
{
namespace
{

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

char const* severityText(nvinfer1::ILogger::Severity severity)
{
    switch (severity)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR: return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING: return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO: return "INFO";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "VERBOSE";
    }
    return "LOG";
}

} // namespace

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, message.c_str());
            return;
        }
        std::fprintf(stderr, "[s2trt] %s: %s\n", severityText(severity), message.c_str());
    }
    catch (...)
    {
        std::fputs("[s2trt] a log message was lost\n", stderr);
    }
}

} // namespace plugin
} // namespace s2trt

S2TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    try
    {
        static s2trt::plugin::S2SplitAttentionPluginCreator sS2SplitAttentionCreator;
        static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&sS2SplitAttentionCreator};
        nbCreators = static_cast<int32_t>(sizeof(kCreators) / sizeof(kCreators[0]));
        return kCreators;
    }
    catch (...)
    {
        s2trt::plugin::logMessage(nvinfer1::ILogger::Severity::kERROR, "S2SplitAttention: cannot create the creator");
        nbCreators = 0;
        return nullptr;
    }
}

S2TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    nvinfer1::ILoggerFinder* expected = nullptr;
    // The first finder wins, as TensorRT's own plugin libraries do.
    s2trt::plugin::gLoggerFinder.compare_exchange_strong(expected, finder);
}
