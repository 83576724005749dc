// merge_attention on the GPU: one warp per (token, head) row, float32 math.
#include <cuda_runtime.h>

#include <cmath>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/cuda/dtype_vec.cuh"
#include "fastattn/core/error.h"
#include "fastattn/kernels/cuda/attention/merge_attention_cuda.h"

namespace fastattn::kernels::cuda {
namespace {

struct MergeArgs {
  const void* a;
  const void* b;
  void* out;
  const float* lse_a;
  const float* lse_b;
  float* lse_out;  // null = not wanted
  int64_t lse_out_h;
  int64_t a_t, a_h, b_t, b_h, o_t, o_h;  // token / head strides in elements
  int64_t lse_a_h, lse_b_h;              // head strides of the lse tensors
  int T, H, D;
};

template <class A, class B, class O>
__global__ void merge_kernel(const MergeArgs p) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= p.T * p.H) return;
  const int t = row / p.H, h = row % p.H;
  const float la = p.lse_a[h * p.lse_a_h + t];
  const float lb = p.lse_b[h * p.lse_b_h + t];
  const float m = fmaxf(la, lb);
  const bool none = m == -INFINITY;
  const float wa = none ? 0.f : __expf(la - m);
  const float wb = none ? 0.f : __expf(lb - m);
  const float inv = wa + wb != 0.f ? 1.f / (wa + wb) : 0.f;
  const auto* a = static_cast<const typename A::Raw*>(p.a) + t * p.a_t + h * p.a_h;
  const auto* b = static_cast<const typename B::Raw*>(p.b) + t * p.b_t + h * p.b_h;
  auto* o = static_cast<typename O::Raw*>(p.out) + t * p.o_t + h * p.o_h;
  for (int d = threadIdx.x % 32; d < p.D; d += 32) {
    o[d] = O::store((wa * A::load(a[d]) + wb * B::load(b[d])) * inv);
  }
  // Every lane has read its lse values above: lse_out may alias lse_a / lse_b.
  __syncwarp();
  if (p.lse_out != nullptr && threadIdx.x % 32 == 0) {
    p.lse_out[h * p.lse_out_h + t] = wa + wb != 0.f ? m + __logf(wa + wb) : -INFINITY;
  }
}

template <class A, class B>
void launch_out(const MergeArgs& p, DType out, cudaStream_t s, dim3 grid, dim3 block) {
  switch (out) {
    case DType::kFloat32:
      merge_kernel<A, B, F32><<<grid, block, 0, s>>>(p);
      break;
    case DType::kFloat16:
      merge_kernel<A, B, F16><<<grid, block, 0, s>>>(p);
      break;
    case DType::kBFloat16:
      merge_kernel<A, B, BF16><<<grid, block, 0, s>>>(p);
      break;
    default:
      FA_THROW_AS(InvalidArgument, "merge_attention: out must be a float tensor");
  }
}

template <class A>
void launch_b(const MergeArgs& p, DType b, DType out, cudaStream_t s, dim3 grid, dim3 block) {
  switch (b) {
    case DType::kFloat32:
      launch_out<A, F32>(p, out, s, grid, block);
      break;
    case DType::kFloat16:
      launch_out<A, F16>(p, out, s, grid, block);
      break;
    case DType::kBFloat16:
      launch_out<A, BF16>(p, out, s, grid, block);
      break;
    default:
      FA_THROW_AS(InvalidArgument, "merge_attention: out_b must be a float tensor");
  }
}

}  // namespace

void merge_attention(const Context& ctx, const Tensor& out_a, const Tensor& lse_a,
                     const Tensor& out_b, const Tensor& lse_b, Tensor& out, Tensor* lse_out) {
  MergeArgs p{};
  p.a = out_a.data();
  p.b = out_b.data();
  p.out = out.data();
  p.lse_a = lse_a.data_as<const float>();
  p.lse_b = lse_b.data_as<const float>();
  p.a_t = out_a.stride(0), p.a_h = out_a.stride(1);
  p.b_t = out_b.stride(0), p.b_h = out_b.stride(1);
  p.o_t = out.stride(0), p.o_h = out.stride(1);
  p.lse_a_h = lse_a.stride(0), p.lse_b_h = lse_b.stride(0);
  p.lse_out = lse_out != nullptr ? lse_out->data_as<float>() : nullptr;
  p.lse_out_h = lse_out != nullptr ? lse_out->stride(0) : 0;
  p.T = static_cast<int>(out.size(0));
  p.H = static_cast<int>(out.size(1));
  p.D = static_cast<int>(out.size(2));
  const int rows = p.T * p.H;
  if (rows == 0) return;
  const dim3 block(256);
  const dim3 grid((rows + 7) / 8);
  const auto s = static_cast<cudaStream_t>(ctx.stream);
  switch (out_a.dtype()) {
    case DType::kFloat32:
      launch_b<F32>(p, out_b.dtype(), out.dtype(), s, grid, block);
      break;
    case DType::kFloat16:
      launch_b<F16>(p, out_b.dtype(), out.dtype(), s, grid, block);
      break;
    case DType::kBFloat16:
      launch_b<BF16>(p, out_b.dtype(), out.dtype(), s, grid, block);
      break;
    default:
      FA_THROW_AS(InvalidArgument, "merge_attention: out_a must be a float tensor");
  }
  FA_CUDA_CHECK_LAUNCH("merge_attention");
}

}  // namespace fastattn::kernels::cuda
