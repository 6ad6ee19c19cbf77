#include "harnessExprBuilder.h"

namespace s2trt
{
namespace harness
{

ConstantExpr::ConstantExpr(int64_t value)
    : mImplObject(value)
{
    mImpl = &mImplObject;
}

ExprBuilder::ExprBuilder()
    : mImplObject(*this)
{
    mImpl = &mImplObject;
}

nvinfer1::IDimensionExpr const* ExprBuilder::make(int64_t value)
{
    mExprs.push_back(std::make_unique<ConstantExpr>(value));
    return mExprs.back().get();
}

nvinfer1::IDimensionExpr const* ExprBuilder::Impl::constant(int64_t value)
{
    return mOwner.make(value);
}

// Folds constants as TensorRT does; a symbolic operand is beyond a fixed-shape harness (nullptr).
nvinfer1::IDimensionExpr const* ExprBuilder::Impl::operation(
    nvinfer1::DimensionOperation op, nvinfer1::IDimensionExpr const& first, nvinfer1::IDimensionExpr const& second)
{
    if (!first.isConstant() || !second.isConstant())
    {
        return nullptr;
    }
    int64_t const a = first.getConstantValue();
    int64_t const b = second.getConstantValue();
    using Op = nvinfer1::DimensionOperation;
    switch (op)
    {
    case Op::kSUM: return mOwner.make(a + b);
    case Op::kPROD: return mOwner.make(a * b);
    case Op::kMAX: return mOwner.make(a > b ? a : b);
    case Op::kMIN: return mOwner.make(a < b ? a : b);
    case Op::kSUB: return mOwner.make(a - b);
    case Op::kEQUAL: return mOwner.make(a == b ? 1 : 0);
    case Op::kLESS: return mOwner.make(a < b ? 1 : 0);
    case Op::kFLOOR_DIV:
        return b == 0 ? nullptr : mOwner.make(a / b - ((a % b != 0 && ((a < 0) != (b < 0))) ? 1 : 0));
    case Op::kCEIL_DIV:
        return b == 0 ? nullptr : mOwner.make(a / b + ((a % b != 0 && ((a < 0) == (b < 0))) ? 1 : 0));
    }
    return nullptr;
}

nvinfer1::IDimensionExpr const* ExprBuilder::Impl::declareSizeTensor(
    int32_t /* outputIndex */, nvinfer1::IDimensionExpr const& /* opt */, nvinfer1::IDimensionExpr const& /* upper */)
{
    return nullptr;
}

} // namespace harness
} // namespace s2trt
