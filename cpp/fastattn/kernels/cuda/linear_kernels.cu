// Bias kernels of the CUDA linear path: the broadcast that pre-fills y with the bias before a
// GEMM with beta = 1 (so the bias is added in the GEMM's float32 epilogue and y is rounded
// once), and the in-place add of add_bias().
#include <algorithm>

#include "fastattn/core/cuda/dtype_vec.cuh"
#include "fastattn/kernels/cuda/linear_launch.h"

namespace fastattn::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <class E, int N>
__global__ void __launch_bounds__(kThreads) bias_rows_kernel(const BiasLaunch p) {
  using Raw = typename E::Raw;
  const int64_t nvec = p.cols / N;
  const int64_t total = p.rows * nvec;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / nvec, c = (i - r * nvec) * N;
    Raw* y = static_cast<Raw*>(p.y) + r * p.ldy + c;
    float b[N];
    load_vec_any<N>(p.bias, p.bias_type, c, b);
    if (p.add) {
      float v[N];
      load_vec<E, N>(y, v);
#pragma unroll
      for (int j = 0; j < N; ++j) b[j] += v[j];
    }
    store_vec<E, N>(y, b);
  }
}

template <class E, int N>
void launch_typed(const BiasLaunch& p, cudaStream_t stream) {
  const int64_t total = p.rows * (p.cols / N);
  if (total == 0) return;
  // Grid-stride loop: enough blocks to fill any GPU, few enough to keep the grid small.
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65536);
  bias_rows_kernel<E, N><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
}

}  // namespace

void launch_bias_rows(const BiasLaunch& p, cudaStream_t stream) {
  dispatch_dtype_vec(p.y_type, p.vec, [&](auto elem, auto width) {
    launch_typed<decltype(elem), decltype(width)::value>(p, stream);
  });
}

}  // namespace fastattn::kernels::cuda
