// SwiGLU, GeGLU, GELU (erf and tanh forms) and add on the GPU: one element-wise kernel template,
// float32 arithmetic, one rounding to the storage dtype, 16-byte vector accesses where the rows
// allow them. Each thread reads and writes the same elements, so out may alias an input.
//
// Forms (as on the CPU, accurate in relative terms over the whole range):
//   silu(g)       = g * sigmoid(g)
//   gelu_erf(x)   = x * 0.5 * erfc(-x / sqrt 2)      (erfc keeps the negative tail accurate)
//   gelu_tanh(x)  = x * sigmoid(2u) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
#include <algorithm>

#include "fastattn/core/cuda/dtype_vec.cuh"
#include "fastattn/kernels/cuda/activation_launch.h"

namespace fastattn::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;

__device__ __forceinline__ float silu_f(float g) { return g * sigmoid_f(g); }
__device__ __forceinline__ float gelu_erf_f(float x) { return x * (0.5f * erfcf(-x * kInvSqrt2)); }
__device__ __forceinline__ float gelu_tanh_f(float x) {
  const float u = kSqrt2OverPi * fmaf(kGeluCubic * x, x * x, x);
  return x * sigmoid_f(2.0f * u);
}

template <EltOp kOp>
__device__ __forceinline__ float unary(float x) {
  if constexpr (kOp == EltOp::kSwiglu) {
    return silu_f(x);
  } else if constexpr (kOp == EltOp::kGegluErf || kOp == EltOp::kGeluErf) {
    return gelu_erf_f(x);
  } else {
    return gelu_tanh_f(x);
  }
}

template <class E, int N, EltOp kOp>
__global__ void __launch_bounds__(kThreads) eltwise_kernel(const EltLaunch p) {
  using Raw = typename E::Raw;
  constexpr bool kGated =
      kOp == EltOp::kSwiglu || kOp == EltOp::kGegluErf || kOp == EltOp::kGegluTanh;
  const int64_t nvec = p.cols / N;
  const int64_t total = p.rows * nvec;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / nvec, c = (i - r * nvec) * N;
    const Raw* a = static_cast<const Raw*>(p.a) + r * p.lda + c;
    float v[N];
    load_vec<E, N>(a, v);
    if constexpr (kGated) {
      float up[N];
      load_vec<E, N>(a + p.cols, up);
#pragma unroll
      for (int j = 0; j < N; ++j) v[j] = unary<kOp>(v[j]) * up[j];
    } else if constexpr (kOp == EltOp::kAdd) {
      float w[N];
      load_vec<E, N>(static_cast<const Raw*>(p.b) + r * p.ldb + c, w);
#pragma unroll
      for (int j = 0; j < N; ++j) v[j] += w[j];
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) v[j] = unary<kOp>(v[j]);
    }
    store_vec<E, N>(static_cast<Raw*>(p.out) + r * p.ldo + c, v);
  }
}

template <class E, int N, EltOp kOp>
void launch_op(const EltLaunch& p, cudaStream_t stream) {
  const int64_t total = p.rows * (p.cols / N);
  if (total == 0) return;
  // Grid-stride loop: enough blocks to fill any GPU, few enough to keep the grid small.
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65536);
  eltwise_kernel<E, N, kOp><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
}

template <class E, int N>
void launch_typed(const EltLaunch& p, cudaStream_t stream) {
  switch (p.op) {
    case EltOp::kSwiglu:
      return launch_op<E, N, EltOp::kSwiglu>(p, stream);
    case EltOp::kGegluErf:
      return launch_op<E, N, EltOp::kGegluErf>(p, stream);
    case EltOp::kGegluTanh:
      return launch_op<E, N, EltOp::kGegluTanh>(p, stream);
    case EltOp::kGeluErf:
      return launch_op<E, N, EltOp::kGeluErf>(p, stream);
    case EltOp::kGeluTanh:
      return launch_op<E, N, EltOp::kGeluTanh>(p, stream);
    case EltOp::kAdd:
      return launch_op<E, N, EltOp::kAdd>(p, stream);
  }
}

}  // namespace

void launch_eltwise(const EltLaunch& p, cudaStream_t stream) {
  dispatch_dtype_vec(p.dtype, p.vec, [&](auto elem, auto width) {
    launch_typed<decltype(elem), decltype(width)::value>(p, stream);
  });
}

}  // namespace fastattn::kernels::cuda
