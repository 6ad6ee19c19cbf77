/*
 * The smallest IExprBuilder that lets the harness call getOutputShapes as TensorRT's builder does.
 * TensorRT's expression classes forward to an implementation object (apiv::V*); the harness supplies
 * that object for constant expressions, which is all a fixed-shape build needs.
 */
#ifndef S2TRT_HARNESS_EXPR_BUILDER_H
#define S2TRT_HARNESS_EXPR_BUILDER_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <deque>
#include <memory>

namespace s2trt
{
namespace harness
{

class ConstantExpr : public nvinfer1::IDimensionExpr
{
public:
    explicit ConstantExpr(int64_t value);
    ~ConstantExpr() override = default;

private:
    class Impl : public nvinfer1::apiv::VDimensionExpr
    {
    public:
        explicit Impl(int64_t value)
            : mValue(value)
        {
        }
        bool isConstant() const override
        {
            return true;
        }
        int64_t getConstantValue() const override
        {
            return mValue;
        }
        bool isSizeTensor() const override
        {
            return false;
        }

    private:
        int64_t mValue;
    };
    Impl mImplObject;
};

class ExprBuilder : public nvinfer1::IExprBuilder
{
public:
    ExprBuilder();
    ~ExprBuilder() override = default;

    //! Owned by the builder, like TensorRT's expressions.
    nvinfer1::IDimensionExpr const* make(int64_t value);

private:
    class Impl : public nvinfer1::apiv::VExprBuilder
    {
    public:
        explicit Impl(ExprBuilder& owner)
            : mOwner(owner)
        {
        }
        nvinfer1::IDimensionExpr const* constant(int64_t value) override;
        nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op,
            nvinfer1::IDimensionExpr const& first, nvinfer1::IDimensionExpr const& second) override;
        nvinfer1::IDimensionExpr const* declareSizeTensor(
            int32_t outputIndex, nvinfer1::IDimensionExpr const& opt, nvinfer1::IDimensionExpr const& upper) override;

    private:
        ExprBuilder& mOwner;
    };
    Impl mImplObject;
    std::deque<std::unique_ptr<ConstantExpr>> mExprs;
};

} // namespace harness
} // namespace s2trt

#endif // S2TRT_HARNESS_EXPR_BUILDER_H
