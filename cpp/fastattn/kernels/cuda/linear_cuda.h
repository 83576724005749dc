// CUDA entry points of linear() and add_bias() (kernels/gemm.h), called by the public functions
// when the tensors live on a GPU. CUDA specifics are documented in gemm.h.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels::cuda {

// Which kernel computes a CUDA linear(): kAuto takes the small-batch GEMV (gemv_launch.h) where
// it fits and ctx.gemm_sm_target is 0 (it uses every SM), else cuBLAS; the environment variable
// FASTATTN_SMALL_BATCH_GEMV=0 turns that choice off (cuBLAS always) for comparisons. The others force one
// (kSmallBatchGemv throws InvalidArgument when the call does not fit it); tests and benchmarks
// use them to compare the two.
enum class LinearCudaImpl { kAuto, kCublas, kSmallBatchGemv };

struct LinearCudaOptions {
  LinearCudaImpl impl = LinearCudaImpl::kAuto;
  int gemv_warps = 0;   // warps per block of the small-batch GEMV; 0 = its heuristic
  int gemv_stages = 0;  // its load groups in flight per warp (1 or 2); 0 = the default
};

void linear_cuda(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                 Tensor& y, const LinearCudaOptions& options = {});

void add_bias_cuda(const Context& ctx, const Tensor& bias, Tensor& y);

}  // namespace fastattn::kernels::cuda
