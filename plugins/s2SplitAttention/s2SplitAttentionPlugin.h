/*
 * TensorRT glue of the S2SplitAttention op (IPluginV3). The math lives in s2SplitAttentionKernel.cu;
 * this file only validates, describes and serializes the op for TensorRT.
 */
#ifndef S2TRT_S2_SPLIT_ATTENTION_PLUGIN_H
#define S2TRT_S2_SPLIT_ATTENTION_PLUGIN_H

#include <NvInferRuntime.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace s2trt
{
namespace plugin
{

constexpr char const* kS2SA_PLUGIN_NAME{"S2SplitAttention"};
constexpr char const* kS2SA_PLUGIN_VERSION{"1"};
constexpr char const* kS2SA_PLUGIN_NAMESPACE{"s2trt"};

// Field names: the attribute names of the ONNX node the exporter emits.
constexpr char const* kFIELD_CHANNELS{"channels"};
constexpr char const* kFIELD_MLP1_WEIGHT{"mlp1_weight"};
constexpr char const* kFIELD_MLP2_WEIGHT{"mlp2_weight"};

//! Sends one message to the logger TensorRT gave the library (stderr when it gave none).
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

//! The FP32 weights on the device, shared by a plugin and its clones: copied from the host at most
//! once per object set, and freed with the last of them. Uploaded where TensorRT prepares execution
//! (onShapeChange, attachToContext), never in enqueue: enqueue may be captured into a CUDA graph, where
//! an allocation or a synchronous copy is refused and would invalidate the capture.
class DeviceWeights
{
public:
    DeviceWeights() = default;
    DeviceWeights(DeviceWeights const&) = delete;
    DeviceWeights& operator=(DeviceWeights const&) = delete;
    ~DeviceWeights();

    //! Uploads on the first call (synchronously: clones on other streams may use the copy at once),
    //! later calls only check the device; returns 0 or a cudaError_t value.
    int32_t upload(std::vector<float> const& w1, std::vector<float> const& w2);
    //! Whether upload() succeeded: enqueue reads this flag and nothing else of the device state.
    bool ready() const noexcept
    {
        return mReady.load(std::memory_order_acquire);
    }
    float const* w1() const noexcept
    {
        return mData;
    }
    float const* w2() const noexcept
    {
        return mData + mW1Count;
    }

private:
    std::mutex mMutex;
    float* mData{nullptr};
    size_t mW1Count{0};
    int mDevice{-1};
    std::atomic<bool> mReady{false};
};

class S2SplitAttentionPlugin : public nvinfer1::IPluginV3,
                               public nvinfer1::IPluginV3OneCore,
                               public nvinfer1::IPluginV3OneBuild,
                               public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Throws std::invalid_argument when the weights do not match `channels`.
    S2SplitAttentionPlugin(int32_t channels, std::vector<float> mlp1Weight, std::vector<float> mlp2Weight);
    S2SplitAttentionPlugin(S2SplitAttentionPlugin const& other);
    S2SplitAttentionPlugin& operator=(S2SplitAttentionPlugin const&) = delete;
    ~S2SplitAttentionPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Empty when the three inputs and the output are a valid (B, C, H, W) set, else why not.
    std::string checkShapes(nvinfer1::Dims const* inputs, int32_t nbInputs, int32_t nbOutputs) const;

    int32_t mChannels;
    std::vector<float> mMlp1Weight;
    std::vector<float> mMlp2Weight;
    std::shared_ptr<DeviceWeights> mDeviceWeights;
    std::vector<nvinfer1::PluginField> mFieldsToSerialize;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class S2SplitAttentionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    S2SplitAttentionPluginCreator();
    ~S2SplitAttentionPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace s2trt

#endif // S2TRT_S2_SPLIT_ATTENTION_PLUGIN_H
