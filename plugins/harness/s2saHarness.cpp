/*
 * Drives libs2trt_plugins.so the way TensorRT does, without TensorRT: dlopen + getCreators (the
 * plugin-library convention of IPluginRegistry::loadLibrary), createPlugin in the build phase,
 * capability queries, format/type/shape/workspace negotiation, field serialization, re-creation in
 * the runtime phase, clone + attachToContext, then enqueue on device buffers against a float64 CPU
 * reference, also inside a CUDA graph capture (as TensorRT may run it). The plugin needs no libnvinfer
 * symbol, so none is supplied here.
 *
 * usage: s2sa_harness <path/to/libs2trt_plugins.so> [--no-gpu]
 *   --no-gpu  everything up to (not including) device memory: the CPU-only check of the glue.
 * Exit status 0 when every check passed.
 */
#include "harnessExprBuilder.h"

#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace
{

using namespace nvinfer1;
using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinder = void (*)(ILoggerFinder*);

int gFailures = 0;

void expect(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    gFailures += ok ? 0 : 1;
}

void require(bool ok, std::string const& what)
{
    if (!ok)
    {
        throw std::runtime_error(what);
    }
}

void cudaCheck(cudaError_t status, char const* what)
{
    require(status == cudaSuccess, std::string(what) + ": " + cudaGetErrorString(status));
}

class Logger : public ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        std::printf("     [plugin log %d] %s\n", static_cast<int>(severity), msg);
        errors += severity <= Severity::kERROR ? 1 : 0;
    }
    int errors{0};
};

class LoggerFinder : public ILoggerFinder
{
public:
    explicit LoggerFinder(Logger& logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() noexcept override
    {
        return &mLogger;
    }

private:
    Logger& mLogger;
};

class ResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
};

struct Case
{
    int64_t b, c, h, w;
    DataType type;
};

std::string caseName(Case const& k)
{
    return std::string(k.type == DataType::kHALF ? "fp16" : "fp32") + " B=" + std::to_string(k.b) + " C="
        + std::to_string(k.c) + " " + std::to_string(k.h) + "x" + std::to_string(k.w);
}

Dims dims4(Case const& k)
{
    Dims d{};
    d.nbDims = 4;
    d.d[0] = k.b;
    d.d[1] = k.c;
    d.d[2] = k.h;
    d.d[3] = k.w;
    return d;
}

DynamicPluginTensorDesc dynDesc(Dims const& d, DataType type, TensorFormat format)
{
    DynamicPluginTensorDesc x{};
    x.desc.dims = d;
    x.desc.type = type;
    x.desc.format = format;
    x.desc.scale = 1.F;
    x.min = d;
    x.opt = d;
    x.max = d;
    return x;
}

template <typename T>
T* capability(IPluginV3* plugin, PluginCapabilityType type, char const* kind)
{
    IPluginCapability* cap = plugin->getCapabilityInterface(type);
    require(cap != nullptr, std::string("capability ") + kind + " is missing");
    require(std::strcmp(cap->getInterfaceInfo().kind, kind) == 0, std::string("capability kind is not ") + kind);
    return static_cast<T*>(cap);
}

// Deep copy of a field collection: what an engine file keeps between build and runtime.
struct StoredFields
{
    std::vector<std::string> names;
    std::vector<std::vector<char>> bytes;
    std::vector<PluginField> fields;
    PluginFieldCollection collection{};

    explicit StoredFields(PluginFieldCollection const& fc)
    {
        for (int32_t i = 0; i < fc.nbFields; ++i)
        {
            PluginField const& f = fc.fields[i];
            size_t const width = f.type == PluginFieldType::kINT32 || f.type == PluginFieldType::kFLOAT32 ? 4 : 1;
            auto const* p = static_cast<char const*>(f.data);
            names.emplace_back(f.name);
            bytes.emplace_back(p, p + width * static_cast<size_t>(f.length));
        }
        for (size_t i = 0; i < names.size(); ++i)
        {
            fields.emplace_back(names[i].c_str(), bytes[i].data(), fc.fields[i].type, fc.fields[i].length);
        }
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.data();
    }
};

struct Problem
{
    Case k;
    std::vector<float> w1, w2;
    std::vector<float> x[3]; // values exactly representable in the storage type
    int32_t channels;

    Problem(Case const& kc, uint32_t seed)
        : k(kc)
        , channels(static_cast<int32_t>(kc.c))
    {
        std::mt19937 rng(seed);
        std::uniform_real_distribution<float> u(-1.F, 1.F);
        float const scale = 1.F / std::sqrt(static_cast<float>(k.c));
        w1.resize(size_t(k.c * k.c));
        w2.resize(size_t(3 * k.c * k.c));
        for (float& v : w1)
        {
            v = u(rng) * scale;
        }
        for (float& v : w2)
        {
            v = u(rng) * scale;
        }
        for (auto& xi : x)
        {
            xi.resize(size_t(k.b * k.c * k.h * k.w));
            for (float& v : xi)
            {
                v = k.type == DataType::kHALF ? __half2float(__float2half(u(rng))) : u(rng);
            }
        }
    }

    std::vector<PluginField> fields() const
    {
        return {PluginField("channels", &channels, PluginFieldType::kINT32, 1),
            PluginField("mlp1_weight", w1.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(w1.size())),
            PluginField("mlp2_weight", w2.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(w2.size()))};
    }

    std::vector<double> reference() const
    {
        int64_t const hw = k.h * k.w;
        std::vector<double> out(x[0].size());
        for (int64_t b = 0; b < k.b; ++b)
        {
            std::vector<double> a(size_t(k.c), 0.0), hid(size_t(k.c), 0.0);
            for (int64_t c = 0; c < k.c; ++c)
            {
                for (int64_t i = 0; i < hw; ++i)
                {
                    size_t const at = size_t((b * k.c + c) * hw + i);
                    a[size_t(c)] += double(x[0][at]) + double(x[1][at]) + double(x[2][at]);
                }
            }
            for (int64_t j = 0; j < k.c; ++j)
            {
                double s = 0.0;
                for (int64_t c = 0; c < k.c; ++c)
                {
                    s += double(w1[size_t(j * k.c + c)]) * a[size_t(c)];
                }
                hid[size_t(j)] = 0.5 * s * (1.0 + std::erf(s / std::sqrt(2.0)));
            }
            for (int64_t c = 0; c < k.c; ++c)
            {
                double logit[3];
                for (int64_t br = 0; br < 3; ++br)
                {
                    double s = 0.0;
                    for (int64_t j = 0; j < k.c; ++j)
                    {
                        s += double(w2[size_t((br * k.c + c) * k.c + j)]) * hid[size_t(j)];
                    }
                    logit[br] = s;
                }
                double const m = std::fmax(logit[0], std::fmax(logit[1], logit[2]));
                double e[3], sum = 0.0;
                for (int br = 0; br < 3; ++br)
                {
                    e[br] = std::exp(logit[br] - m);
                    sum += e[br];
                }
                for (int64_t i = 0; i < hw; ++i)
                {
                    size_t const at = size_t((b * k.c + c) * hw + i);
                    out[at] = (e[0] * x[0][at] + e[1] * x[1][at] + e[2] * x[2][at]) / sum;
                }
            }
        }
        return out;
    }
};

// Device copies of the inputs, output and workspace, and the comparison with the reference.
class DeviceRun
{
public:
    DeviceRun(Problem const& p, size_t workspaceBytes)
        : mP(p)
        , mElems(p.x[0].size())
        , mElemBytes(p.k.type == DataType::kHALF ? 2 : 4)
    {
        cudaCheck(cudaStreamCreate(&mStream), "cudaStreamCreate");
        for (int i = 0; i < 4; ++i)
        {
            cudaCheck(cudaMalloc(&mBuf[i], mElems * mElemBytes), "cudaMalloc");
        }
        cudaCheck(cudaMalloc(&mWorkspace, workspaceBytes > 0 ? workspaceBytes : 1), "cudaMalloc");
        for (int i = 0; i < 3; ++i)
        {
            std::vector<char> host = pack(p.x[i]);
            cudaCheck(cudaMemcpy(mBuf[i], host.data(), host.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
        }
    }
    ~DeviceRun()
    {
        for (void* b : mBuf)
        {
            cudaFree(b);
        }
        cudaFree(mWorkspace);
        cudaStreamDestroy(mStream);
    }

    //! Enqueues through the runtime capability and returns the largest error beyond tolerance (<= 0: pass).
    //! captured: the enqueue is recorded into a CUDA graph (global capture mode, which refuses
    //! allocations and synchronous copies) and the graph is replayed; onShapeChange runs before the
    //! capture, as in TensorRT's first enqueueV3.
    double run(IPluginV3OneRuntime* rt, bool captured = false)
    {
        Dims const d = dims4(mP.k);
        PluginTensorDesc desc[4];
        for (auto& x : desc)
        {
            x = PluginTensorDesc{d, mP.k.type, TensorFormat::kLINEAR, 1.F};
        }
        cudaCheck(cudaMemset(mBuf[3], 0xFF, mElems * mElemBytes), "cudaMemset");
        require(rt->onShapeChange(desc, 3, desc + 3, 1) == 0, "onShapeChange refused valid shapes");
        void const* inputs[3] = {mBuf[0], mBuf[1], mBuf[2]};
        void* outputs[1] = {mBuf[3]};
        if (captured)
        {
            cudaGraph_t graph{};
            cudaGraphExec_t exec{};
            cudaCheck(cudaStreamBeginCapture(mStream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
            int32_t const status = rt->enqueue(desc, desc + 3, inputs, outputs, mWorkspace, mStream);
            cudaError_t const ended = cudaStreamEndCapture(mStream, &graph);
            require(status == 0, "enqueue failed inside a CUDA graph capture");
            cudaCheck(ended, "cudaStreamEndCapture");
            cudaCheck(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
            cudaCheck(cudaGraphLaunch(exec, mStream), "cudaGraphLaunch");
            cudaCheck(cudaStreamSynchronize(mStream), "graph execution");
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
        }
        else
        {
            require(rt->enqueue(desc, desc + 3, inputs, outputs, mWorkspace, mStream) == 0, "enqueue failed");
            cudaCheck(cudaStreamSynchronize(mStream), "kernel execution");
        }
        std::vector<char> host(mElems * mElemBytes);
        cudaCheck(cudaMemcpy(host.data(), mBuf[3], host.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
        std::vector<double> const ref = mP.reference();
        // FP16: one rounding of the output (2^-11 relative) plus FP32 sums; FP32: FP32 sums only.
        double const tol = mP.k.type == DataType::kHALF ? 2e-3 : 2e-5;
        double worst = -1.0;
        for (size_t i = 0; i < mElems; ++i)
        {
            double const got = unpack(host, i);
            double const excess = std::fabs(got - ref[i]) - tol * (1.0 + std::fabs(ref[i]));
            worst = std::isnan(got) ? 1e30 : std::fmax(worst, excess);
        }
        return worst;
    }

private:
    std::vector<char> pack(std::vector<float> const& v) const
    {
        std::vector<char> out(v.size() * mElemBytes);
        for (size_t i = 0; i < v.size(); ++i)
        {
            if (mElemBytes == 2)
            {
                __half const h = __float2half(v[i]);
                std::memcpy(out.data() + 2 * i, &h, 2);
            }
            else
            {
                std::memcpy(out.data() + 4 * i, &v[i], 4);
            }
        }
        return out;
    }
    double unpack(std::vector<char> const& host, size_t i) const
    {
        if (mElemBytes == 2)
        {
            __half h;
            std::memcpy(&h, host.data() + 2 * i, 2);
            return __half2float(h);
        }
        float f;
        std::memcpy(&f, host.data() + 4 * i, 4);
        return f;
    }

    Problem const& mP;
    size_t mElems;
    size_t mElemBytes;
    cudaStream_t mStream{};
    void* mBuf[4]{};
    void* mWorkspace{};
};

void checkFormats(IPluginV3OneBuild* build, Case const& k)
{
    Dims const d = dims4(k);
    DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT8};
    TensorFormat const formats[] = {TensorFormat::kLINEAR, TensorFormat::kCHW32};
    bool allRight = true;
    for (DataType t0 : types)
    {
        for (TensorFormat f0 : formats)
        {
            DynamicPluginTensorDesc io[4];
            io[0] = dynDesc(d, t0, f0);
            bool const ok0 = (t0 == DataType::kFLOAT || t0 == DataType::kHALF) && f0 == TensorFormat::kLINEAR;
            allRight &= build->supportsFormatCombination(0, io, 3, 1) == ok0;
            if (!ok0)
            {
                continue;
            }
            for (int32_t pos = 1; pos < 4; ++pos)
            {
                for (DataType t : types)
                {
                    for (TensorFormat f : formats)
                    {
                        io[pos] = dynDesc(d, t, f);
                        bool const want = t == t0 && f == TensorFormat::kLINEAR;
                        allRight &= build->supportsFormatCombination(pos, io, 3, 1) == want;
                    }
                }
                io[pos] = dynDesc(d, t0, f0);
            }
        }
    }
    expect(allRight, "supportsFormatCombination: FP32/FP16 linear, one type for all tensors");
}

void checkBuild(IPluginV3OneBuild* build, Problem const& p, Logger& logger)
{
    Case const& k = p.k;
    expect(build->getNbOutputs() == 1, "getNbOutputs == 1");
    checkFormats(build, k);

    DataType const in[3] = {k.type, k.type, k.type};
    DataType out[1] = {DataType::kINT8};
    expect(build->getOutputDataTypes(out, 1, in, 3) == 0 && out[0] == k.type, "getOutputDataTypes: input type");

    s2trt::harness::ExprBuilder exprs;
    DimsExprs inShapes[3];
    for (auto& s : inShapes)
    {
        s.nbDims = 4;
        int64_t const v[4] = {k.b, k.c, k.h, k.w};
        for (int i = 0; i < 4; ++i)
        {
            s.d[i] = exprs.constant(v[i]);
        }
    }
    DimsExprs outShape{};
    bool shapeOk = build->getOutputShapes(inShapes, 3, nullptr, 0, &outShape, 1, exprs) == 0 && outShape.nbDims == 4;
    for (int i = 0; shapeOk && i < 4; ++i)
    {
        shapeOk = outShape.d[i] != nullptr && outShape.d[i]->isConstant()
            && outShape.d[i]->getConstantValue() == inShapes[0].d[i]->getConstantValue();
    }
    expect(shapeOk, "getOutputShapes: output shape == input shape");

    Dims const d = dims4(k);
    DynamicPluginTensorDesc io[4];
    for (auto& x : io)
    {
        x = dynDesc(d, k.type, TensorFormat::kLINEAR);
    }
    expect(build->configurePlugin(io, 3, io + 3, 1) == 0, "configurePlugin accepts (B, C, H, W)");
    size_t const ws = build->getWorkspaceSize(io, 3, io + 3, 1);
    expect(ws >= size_t(2 * k.b * k.c) * sizeof(float), "getWorkspaceSize holds two FP32 (B, C) vectors");

    DynamicPluginTensorDesc bad[4];
    Case wrong = k;
    wrong.c = k.c + 4;
    for (auto& x : bad)
    {
        x = dynDesc(dims4(wrong), k.type, TensorFormat::kLINEAR);
    }
    int const before = logger.errors;
    expect(build->configurePlugin(bad, 3, bad + 3, 1) != 0 && logger.errors > before,
        "configurePlugin refuses a channel count other than the field's, with a logged error");
}

void checkBadFields(IPluginCreatorV3One* creator, Logger& logger)
{
    Problem const p(Case{1, 8, 2, 2, DataType::kFLOAT}, 7);
    std::vector<PluginField> f = p.fields();
    struct Variant
    {
        char const* what;
        std::vector<PluginField> fields;
    };
    std::vector<Variant> variants;
    variants.push_back({"missing mlp2_weight", {f[0], f[1]}});
    std::vector<PluginField> shortW1 = f;
    shortW1[1].length -= 1;
    variants.push_back({"mlp1_weight one value short", shortW1});
    int32_t const odd = 6;
    std::vector<PluginField> oddC = f;
    oddC[0].data = &odd;
    variants.push_back({"channels not a multiple of 4", oddC});
    std::vector<PluginField> typed = f;
    typed[0].type = PluginFieldType::kFLOAT32;
    variants.push_back({"channels with the wrong field type", typed});
    for (auto const& v : variants)
    {
        PluginFieldCollection fc{static_cast<int32_t>(v.fields.size()), v.fields.data()};
        int const before = logger.errors;
        IPluginV3* plugin = creator->createPlugin("bad", &fc, TensorRTPhase::kBUILD);
        expect(plugin == nullptr && logger.errors > before, std::string("createPlugin refuses ") + v.what);
        delete plugin;
    }
}

void runCase(IPluginCreatorV3One* creator, Case const& k, bool gpu, Logger& logger)
{
    std::printf("---- %s\n", caseName(k).c_str());
    Problem const p(k, 1234);
    std::vector<PluginField> fields = p.fields();
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    std::unique_ptr<IPluginV3> built(creator->createPlugin("s2sa_node", &fc, TensorRTPhase::kBUILD));
    require(built != nullptr, "createPlugin (build phase) returned nullptr");

    auto* core = capability<IPluginV3OneCore>(built.get(), PluginCapabilityType::kCORE, "PLUGIN_V3ONE_CORE");
    expect(std::strcmp(core->getPluginName(), "S2SplitAttention") == 0
            && std::strcmp(core->getPluginVersion(), "1") == 0 && std::strcmp(core->getPluginNamespace(), "s2trt") == 0,
        "core: name S2SplitAttention, version 1, namespace s2trt");
    auto* build = capability<IPluginV3OneBuild>(built.get(), PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD");
    checkBuild(build, p, logger);

    Dims const d = dims4(k);
    DynamicPluginTensorDesc io[4];
    for (auto& x : io)
    {
        x = dynDesc(d, k.type, TensorFormat::kLINEAR);
    }
    size_t const ws = build->getWorkspaceSize(io, 3, io + 3, 1);
    std::unique_ptr<IPluginV3> timing(built->clone());
    require(timing != nullptr, "clone (build phase) returned nullptr");

    auto* rtBuilt = capability<IPluginV3OneRuntime>(built.get(), PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    PluginFieldCollection const* serialized = rtBuilt->getFieldsToSerialize();
    require(serialized != nullptr, "getFieldsToSerialize returned nullptr");
    StoredFields const stored(*serialized);
    PluginFieldCollection const* advertised = creator->getFieldNames();
    bool sameNames = stored.collection.nbFields == advertised->nbFields;
    for (int32_t i = 0; sameNames && i < advertised->nbFields; ++i)
    {
        sameNames = std::strcmp(stored.fields[size_t(i)].name, advertised->fields[i].name) == 0
            && stored.fields[size_t(i)].type == advertised->fields[i].type;
    }
    expect(sameNames, "getFieldsToSerialize emits exactly the creator's fields, with their types");
    built.reset(); // the runtime plugin must not depend on the build-phase object

    std::unique_ptr<IPluginV3> runtime(creator->createPlugin("s2sa_node", &stored.collection, TensorRTPhase::kRUNTIME));
    require(runtime != nullptr, "createPlugin (runtime phase) returned nullptr");
    auto* rtFields = capability<IPluginV3OneRuntime>(runtime.get(), PluginCapabilityType::kRUNTIME,
        "PLUGIN_V3ONE_RUNTIME")->getFieldsToSerialize();
    bool sameValues = rtFields != nullptr && rtFields->nbFields == stored.collection.nbFields;
    for (int32_t i = 0; sameValues && i < rtFields->nbFields; ++i)
    {
        size_t const n = stored.bytes[size_t(i)].size();
        sameValues = rtFields->fields[i].length == stored.fields[size_t(i)].length
            && std::memcmp(rtFields->fields[i].data, stored.bytes[size_t(i)].data(), n) == 0;
    }
    expect(sameValues, "runtime-phase plugin serializes the same field values");
    if (!gpu)
    {
        return;
    }

    DeviceRun dev(p, ws);
    auto* rtTiming = capability<IPluginV3OneRuntime>(timing.get(), PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    double const e1 = dev.run(rtTiming);
    expect(e1 <= 0, "build-phase clone enqueue matches the float64 reference (excess " + std::to_string(e1) + ")");

    // A plugin of its own (no clone shares its weights) that only saw onShapeChange.
    std::unique_ptr<IPluginV3> fresh(creator->createPlugin("s2sa_node", &fc, TensorRTPhase::kBUILD));
    require(fresh != nullptr, "createPlugin (build phase) returned nullptr");
    double const e0 = dev.run(
        capability<IPluginV3OneRuntime>(fresh.get(), PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME"), true);
    expect(e0 <= 0, "captured enqueue of a never-attached plugin matches the reference (excess " + std::to_string(e0)
            + ")");

    std::unique_ptr<IPluginV3> perContext(runtime->clone());
    require(perContext != nullptr, "clone (runtime phase) returned nullptr");
    ResourceContext context;
    std::unique_ptr<IPluginV3> attached(capability<IPluginV3OneRuntime>(perContext.get(),
        PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME")->attachToContext(&context));
    require(attached != nullptr, "attachToContext returned nullptr");
    perContext.reset();
    runtime.reset(); // the attached clone must outlive the objects it came from
    auto* rt = capability<IPluginV3OneRuntime>(attached.get(), PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    double const e2 = dev.run(rt);
    expect(e2 <= 0, "runtime-phase attached clone enqueue matches the reference (excess " + std::to_string(e2) + ")");
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2)
    {
        std::fprintf(stderr, "usage: %s <libs2trt_plugins.so> [--no-gpu]\n", argv[0]);
        return 2;
    }
    bool const gpu = !(argc > 2 && std::strcmp(argv[2], "--no-gpu") == 0);
    try
    {
        void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (lib == nullptr)
        {
            throw std::runtime_error(std::string("dlopen: ") + dlerror());
        }
        auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
        auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
        require(getCreators != nullptr && setLoggerFinder != nullptr, "getCreators/setLoggerFinder not exported");
        Logger logger;
        LoggerFinder finder(logger);
        setLoggerFinder(&finder);

        int32_t n = 0;
        IPluginCreatorInterface* const* creators = getCreators(n);
        require(creators != nullptr && n >= 1, "getCreators returned no creator");
        IPluginCreatorV3One* creator = nullptr;
        for (int32_t i = 0; i < n; ++i)
        {
            // TensorRT tells creator kinds apart by their interface info before any cast.
            if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0)
            {
                auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
                if (std::strcmp(c->getPluginName(), "S2SplitAttention") == 0
                    && std::strcmp(c->getPluginVersion(), "1") == 0 && std::strcmp(c->getPluginNamespace(), "s2trt") == 0)
                {
                    creator = c;
                }
            }
        }
        require(creator != nullptr, "no V3One creator S2SplitAttention/1 in namespace s2trt");
        expect(true, "getCreators lists S2SplitAttention v1 (s2trt) as an IPluginCreatorV3One");
        checkBadFields(creator, logger);

        Case const cases[] = {{2, 64, 5, 7, DataType::kFLOAT}, {2, 64, 5, 7, DataType::kHALF},
            {3, 128, 8, 8, DataType::kFLOAT}, {3, 128, 8, 8, DataType::kHALF}, {9, 64, 1, 1, DataType::kHALF}};
        for (Case const& k : cases)
        {
            runCase(creator, k, gpu, logger);
        }
    }
    catch (std::exception const& e)
    {
        std::printf("FAIL %s\n", e.what());
        return 1;
    }
    std::printf("%s: %d failure(s)%s\n", gFailures == 0 ? "PASS" : "FAILED", gFailures, gpu ? "" : " (no GPU run)");
    return gFailures == 0 ? 0 : 1;
}
