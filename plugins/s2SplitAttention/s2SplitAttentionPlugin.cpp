#include "s2SplitAttentionPlugin.h"

#include "s2SplitAttentionKernel.h"

#include "../common/s2trtCudaError.h"

#include <cuda_runtime_api.h>

#include <exception>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace s2trt
{
namespace plugin
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::ILogger;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

constexpr int32_t kNB_INPUTS = 3;
constexpr int32_t kNB_OUTPUTS = 1;

void logError(std::string const& where, std::string const& what) noexcept
{
    logMessage(ILogger::Severity::kERROR, std::string(kS2SA_PLUGIN_NAME) + "::" + where + ": " + what);
}

// Every noexcept entry point runs its body through this, so no C++ exception crosses the TensorRT ABI.
template <typename Result, typename Body>
Result guarded(char const* where, Result onError, Body&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        logError(where, e.what());
    }
    catch (...)
    {
        logError(where, "unknown exception");
    }
    return onError;
}

bool isSupportedType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

std::string dimsText(nvinfer1::Dims const& d)
{
    std::ostringstream os;
    os << "(";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        os << (i ? ", " : "") << d.d[i];
    }
    os << ")";
    return os.str();
}

// A GPU this build has no code for is refused where the plugin is created (by the ONNX parser when an
// engine is built, by deserialization when it is loaded), with the fix, instead of failing at the first
// enqueue. Other states (no device, no driver) are left to TensorRT, which reports them itself.
void checkDeviceCode()
{
    int const status = s2sa_check_device();
    if (!s2sa_is_missing_code(status))
    {
        return;
    }
    cudaError_t const pending = cudaPeekAtLastError();
    int device = -1;
    int major = -1;
    int minor = -1;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess
        || cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    {
        clearOwnError(pending);
    }
    std::string const cc = std::to_string(major) + "." + std::to_string(minor);
    throw std::runtime_error("libs2trt_plugins.so has no code for GPU " + std::to_string(device)
        + " (compute capability " + cc + "): it was built for CUDA architectures " + s2sa_cuda_architectures()
        + " (" + s2sa_error_string(status) + "). Rebuild it with -DCMAKE_CUDA_ARCHITECTURES="
        + std::to_string(major) + std::to_string(minor) + " (see plugins/s2SplitAttention/README.md)");
}

} // namespace

DeviceWeights::~DeviceWeights()
{
    if (mData != nullptr)
    {
        // At process exit the CUDA context may already be gone; nothing useful can be done then, but the
        // failure must not be left for someone else's cudaGetLastError (an earlier error stays).
        cudaError_t const pending = cudaPeekAtLastError();
        if (cudaFree(mData) != cudaSuccess)
        {
            clearOwnError(pending);
        }
    }
}

int32_t DeviceWeights::upload(std::vector<float> const& w1, std::vector<float> const& w2)
{
    std::lock_guard<std::mutex> lock(mMutex);
    int device = -1;
    cudaError_t status = cudaGetDevice(&device);
    if (status != cudaSuccess)
    {
        return status;
    }
    if (mData != nullptr)
    {
        return device == mDevice ? cudaSuccess : cudaErrorInvalidDevice;
    }
    size_t const bytes = (w1.size() + w2.size()) * sizeof(float);
    void* raw = nullptr;
    status = cudaMalloc(&raw, bytes);
    if (status != cudaSuccess)
    {
        return status;
    }
    auto* data = static_cast<float*>(raw);
    status = cudaMemcpy(data, w1.data(), w1.size() * sizeof(float), cudaMemcpyHostToDevice);
    if (status == cudaSuccess)
    {
        status = cudaMemcpy(data + w1.size(), w2.data(), w2.size() * sizeof(float), cudaMemcpyHostToDevice);
    }
    if (status != cudaSuccess)
    {
        cudaFree(data);
        return status;
    }
    mData = data;
    mW1Count = w1.size();
    mDevice = device;
    mReady.store(true, std::memory_order_release);
    return cudaSuccess;
}

S2SplitAttentionPlugin::S2SplitAttentionPlugin(
    int32_t channels, std::vector<float> mlp1Weight, std::vector<float> mlp2Weight)
    : mChannels(channels)
    , mMlp1Weight(std::move(mlp1Weight))
    , mMlp2Weight(std::move(mlp2Weight))
    , mDeviceWeights(std::make_shared<DeviceWeights>())
{
    if (mChannels <= 0 || mChannels % S2SA_CHANNEL_MULTIPLE != 0)
    {
        throw std::invalid_argument(
            "channels must be a positive multiple of " + std::to_string(S2SA_CHANNEL_MULTIPLE) + ", got "
            + std::to_string(mChannels));
    }
    size_t const cc = size_t(mChannels) * size_t(mChannels);
    if (mMlp1Weight.size() != cc)
    {
        throw std::invalid_argument("mlp1_weight must hold channels*channels = " + std::to_string(cc)
            + " floats, got " + std::to_string(mMlp1Weight.size()));
    }
    if (mMlp2Weight.size() != 3 * cc)
    {
        throw std::invalid_argument("mlp2_weight must hold 3*channels*channels = " + std::to_string(3 * cc)
            + " floats, got " + std::to_string(mMlp2Weight.size()));
    }
}

// Clones share the read-only device copy of the weights instead of each uploading its own.
S2SplitAttentionPlugin::S2SplitAttentionPlugin(S2SplitAttentionPlugin const& other)
    : nvinfer1::IPluginV3(other)
    , nvinfer1::IPluginV3OneCore(other)
    , nvinfer1::IPluginV3OneBuild(other)
    , nvinfer1::IPluginV3OneRuntime(other)
    , mChannels(other.mChannels)
    , mMlp1Weight(other.mMlp1Weight)
    , mMlp2Weight(other.mMlp2Weight)
    , mDeviceWeights(other.mDeviceWeights)
{
}

nvinfer1::IPluginCapability* S2SplitAttentionPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept
{
    return guarded<nvinfer1::IPluginCapability*>("getCapabilityInterface", nullptr,
        [&]() -> nvinfer1::IPluginCapability* {
            switch (type)
            {
            case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME:
                return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
            }
            return nullptr;
        });
}

nvinfer1::IPluginV3* S2SplitAttentionPlugin::clone() noexcept
{
    return guarded<nvinfer1::IPluginV3*>("clone", nullptr, [&] { return new S2SplitAttentionPlugin(*this); });
}

char const* S2SplitAttentionPlugin::getPluginName() const noexcept
{
    return kS2SA_PLUGIN_NAME;
}

char const* S2SplitAttentionPlugin::getPluginVersion() const noexcept
{
    return kS2SA_PLUGIN_VERSION;
}

char const* S2SplitAttentionPlugin::getPluginNamespace() const noexcept
{
    return kS2SA_PLUGIN_NAMESPACE;
}

std::string S2SplitAttentionPlugin::checkShapes(nvinfer1::Dims const* inputs, int32_t nbInputs, int32_t nbOutputs) const
{
    if (nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
    {
        return "expects 3 inputs and 1 output, got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
    }
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        nvinfer1::Dims const& d = inputs[i];
        if (d.nbDims != 4)
        {
            return "input " + std::to_string(i) + " must be (B, C, H, W), got " + dimsText(d);
        }
        // -1 marks a dimension not known at build time.
        if (d.d[1] != -1 && d.d[1] != mChannels)
        {
            return "input " + std::to_string(i) + " has " + std::to_string(d.d[1]) + " channels, the plugin "
                + std::to_string(mChannels);
        }
        for (int32_t k = 0; k < 4; ++k)
        {
            if (d.d[k] != inputs[0].d[k] && d.d[k] != -1 && inputs[0].d[k] != -1)
            {
                return "inputs must have one shape, got " + dimsText(inputs[0]) + " and " + dimsText(d);
            }
        }
    }
    return {};
}

int32_t S2SplitAttentionPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    return guarded<int32_t>("configurePlugin", -1, [&] {
        std::vector<nvinfer1::Dims> dims;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims.push_back(in[i].desc.dims);
        }
        std::string const why = checkShapes(dims.data(), nbInputs, nbOutputs);
        if (!why.empty())
        {
            logError("configurePlugin", why);
            return -1;
        }
        return 0;
    });
}

int32_t S2SplitAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guarded<int32_t>("getOutputDataTypes", -1, [&] {
        if (nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
        {
            logError("getOutputDataTypes", "expects 3 inputs and 1 output");
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    });
}

int32_t S2SplitAttentionPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /* exprBuilder */) noexcept
{
    return guarded<int32_t>("getOutputShapes", -1, [&] {
        if (nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || inputs[0].nbDims != 4)
        {
            logError("getOutputShapes", "expects 3 inputs of shape (B, C, H, W) and 1 output");
            return -1;
        }
        outputs[0] = inputs[0];
        return 0;
    });
}

bool S2SplitAttentionPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guarded<bool>("supportsFormatCombination", false, [&] {
        if (nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0 || pos >= nbInputs + nbOutputs)
        {
            return false;
        }
        nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != nvinfer1::TensorFormat::kLINEAR)
        {
            return false;
        }
        // TensorRT asks position by position; later positions must match the type chosen for input 0.
        return pos == 0 ? isSupportedType(desc.type) : desc.type == inOut[0].desc.type;
    });
}

int32_t S2SplitAttentionPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

size_t S2SplitAttentionPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /* outputs */, int32_t /* nbOutputs */) const noexcept
{
    return guarded<size_t>("getWorkspaceSize", 0, [&]() -> size_t {
        if (nbInputs < 1 || inputs[0].max.nbDims != 4 || inputs[0].max.d[0] < 0)
        {
            return 0;
        }
        return s2sa_workspace_size(static_cast<int>(inputs[0].max.d[0]), mChannels);
    });
}

int32_t S2SplitAttentionPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    return guarded<int32_t>("onShapeChange", -1, [&] {
        std::vector<nvinfer1::Dims> dims;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims.push_back(in[i].dims);
        }
        std::string const why = checkShapes(dims.data(), nbInputs, nbOutputs);
        if (!why.empty())
        {
            logError("onShapeChange", why);
            return -1;
        }
        // The builder's timing runs enqueue on plugins that were never attached to a context; it calls
        // this first (NvInferRuntime.h, IPluginV3OneRuntime::onShapeChange). After attachToContext the
        // weights are there already and this only checks the device.
        int32_t const status = mDeviceWeights->upload(mMlp1Weight, mMlp2Weight);
        if (status != 0)
        {
            logError("onShapeChange", std::string("cannot place the weights on the device: ") + s2sa_error_string(status));
            return -1;
        }
        return 0;
    });
}

int32_t S2SplitAttentionPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /* outputDesc */, void const* const* inputs, void* const* outputs,
    void* workspace, cudaStream_t stream) noexcept
{
    return guarded<int32_t>("enqueue", -1, [&] {
        nvinfer1::Dims const& d = inputDesc[0].dims;
        if (d.nbDims != 4 || !isSupportedType(inputDesc[0].type))
        {
            logError("enqueue", "input 0 must be (B, C, H, W) in FP32 or FP16, got " + dimsText(d));
            return -1;
        }
        // No allocation or copy here: this call may be captured into a CUDA graph.
        if (!mDeviceWeights->ready())
        {
            logError("enqueue", "the weights are not on the device: onShapeChange or attachToContext must run first");
            return -1;
        }
        int const b = static_cast<int>(d.d[0]);
        int const dtype = inputDesc[0].type == DataType::kHALF ? S2SA_DTYPE_FLOAT16 : S2SA_DTYPE_FLOAT32;
        int32_t const status = s2sa_forward(inputs[0], inputs[1], inputs[2], outputs[0], mDeviceWeights->w1(),
            mDeviceWeights->w2(), b, mChannels, static_cast<int>(d.d[2]), static_cast<int>(d.d[3]), dtype, workspace,
            s2sa_workspace_size(b, mChannels), stream);
        if (status != 0)
        {
            logError("enqueue", std::string("kernel launch failed: ") + s2sa_error_string(status));
            return -1;
        }
        return 0;
    });
}

nvinfer1::IPluginV3* S2SplitAttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext* /* context */) noexcept
{
    return guarded<nvinfer1::IPluginV3*>("attachToContext", nullptr, [&]() -> nvinfer1::IPluginV3* {
        auto copy = std::make_unique<S2SplitAttentionPlugin>(*this);
        // Upload now, at context creation, outside any CUDA graph capture that may wrap an enqueue.
        int32_t const status = copy->mDeviceWeights->upload(mMlp1Weight, mMlp2Weight);
        if (status != 0)
        {
            logError("attachToContext", std::string("cannot place the weights on the device: ")
                + s2sa_error_string(status));
            return nullptr;
        }
        return copy.release();
    });
}

nvinfer1::PluginFieldCollection const* S2SplitAttentionPlugin::getFieldsToSerialize() noexcept
{
    return guarded<nvinfer1::PluginFieldCollection const*>("getFieldsToSerialize", nullptr, [&] {
        mFieldsToSerialize.clear();
        mFieldsToSerialize.emplace_back(kFIELD_CHANNELS, &mChannels, PluginFieldType::kINT32, 1);
        mFieldsToSerialize.emplace_back(kFIELD_MLP1_WEIGHT, mMlp1Weight.data(), PluginFieldType::kFLOAT32,
            static_cast<int32_t>(mMlp1Weight.size()));
        mFieldsToSerialize.emplace_back(kFIELD_MLP2_WEIGHT, mMlp2Weight.data(), PluginFieldType::kFLOAT32,
            static_cast<int32_t>(mMlp2Weight.size()));
        mFieldCollection.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
        mFieldCollection.fields = mFieldsToSerialize.data();
        return &mFieldCollection;
    });
}

S2SplitAttentionPluginCreator::S2SplitAttentionPluginCreator()
{
    mFieldNames.emplace_back(kFIELD_CHANNELS, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFIELD_MLP1_WEIGHT, nullptr, PluginFieldType::kFLOAT32, 0);
    mFieldNames.emplace_back(kFIELD_MLP2_WEIGHT, nullptr, PluginFieldType::kFLOAT32, 0);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* S2SplitAttentionPluginCreator::getPluginName() const noexcept
{
    return kS2SA_PLUGIN_NAME;
}

char const* S2SplitAttentionPluginCreator::getPluginVersion() const noexcept
{
    return kS2SA_PLUGIN_VERSION;
}

char const* S2SplitAttentionPluginCreator::getPluginNamespace() const noexcept
{
    return kS2SA_PLUGIN_NAMESPACE;
}

nvinfer1::PluginFieldCollection const* S2SplitAttentionPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

// Build and runtime phases rebuild the plugin from the same fields: the serialized engine holds exactly
// what getFieldsToSerialize emitted.
nvinfer1::IPluginV3* S2SplitAttentionPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /* phase */) noexcept
{
    return guarded<nvinfer1::IPluginV3*>("createPlugin", nullptr, [&]() -> nvinfer1::IPluginV3* {
        std::string const node = name != nullptr ? name : "";
        if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
        {
            throw std::invalid_argument("node '" + node + "': no plugin fields");
        }
        int32_t channels = -1;
        std::vector<float> w1;
        std::vector<float> w2;
        bool seen[3] = {false, false, false};
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            std::string const field = f.name != nullptr ? f.name : "";
            if (field == kFIELD_CHANNELS)
            {
                if (f.type != PluginFieldType::kINT32 || f.length != 1 || f.data == nullptr)
                {
                    throw std::invalid_argument("node '" + node + "': field channels must be one INT32");
                }
                channels = *static_cast<int32_t const*>(f.data);
                seen[0] = true;
            }
            else if (field == kFIELD_MLP1_WEIGHT || field == kFIELD_MLP2_WEIGHT)
            {
                if (f.type != PluginFieldType::kFLOAT32 || f.length < 0 || (f.length > 0 && f.data == nullptr))
                {
                    throw std::invalid_argument("node '" + node + "': field " + field + " must be FLOAT32 values");
                }
                auto const* values = static_cast<float const*>(f.data);
                bool const first = field == kFIELD_MLP1_WEIGHT;
                (first ? w1 : w2).assign(values, values + f.length);
                seen[first ? 1 : 2] = true;
            }
        }
        for (int32_t k = 0; k < 3; ++k)
        {
            if (!seen[k])
            {
                throw std::invalid_argument(
                    "node '" + node + "': missing field " + std::string(mFieldNames[k].name));
            }
        }
        checkDeviceCode();
        return new S2SplitAttentionPlugin(channels, std::move(w1), std::move(w2));
    });
}

} // namespace plugin
} // namespace s2trt
