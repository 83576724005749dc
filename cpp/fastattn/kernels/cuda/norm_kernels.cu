// RMSNorm / LayerNorm (with the fused residual add) on the GPU: one CTA per row.
//
// The row is read in 16-byte vectors (scalar elements when a row's alignment or length does
// not allow it) and the statistics are accumulated in float32, per thread and then over the
// block. Passes over the row:
//   1. (add_norm) residual = round(residual + x), written back; the sum (LayerNorm) or sum of
//      squares (RMSNorm) of the input to normalise;
//   2. (LayerNorm) the sum of squared deviations from the mean, reading the row again: two
//      passes keep the variance accurate where one-pass E[x^2] - mean^2 would cancel;
//   3. out = normalised row * weight (+ bias), rounded once to the activation dtype.
// Each thread re-reads exactly the elements it wrote or read before, so the repeat reads hit
// L1/L2 and the kernel works in place (out == x, or out == residual) with no race.
#include <algorithm>

#include "fastattn/core/cuda/dtype_vec.cuh"
#include "fastattn/kernels/cuda/norm_launch.h"

namespace fastattn::kernels::cuda {
namespace {

constexpr int kMaxThreads = 512;

template <class E, int N>
__global__ void __launch_bounds__(kMaxThreads) norm_kernel(const NormLaunch p) {
  using Raw = typename E::Raw;
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int64_t nvec = p.cols / N;
  const float n = static_cast<float>(p.cols);
  const bool layer = p.layer_norm;

  const Raw* in = nullptr;  // the row to normalise
  float acc = 0.0f;         // LayerNorm: sum; RMSNorm: sum of squares
  if (p.residual != nullptr) {
    Raw* r = static_cast<Raw*>(p.residual) + row * p.ldr;
    const Raw* x = static_cast<const Raw*>(p.x) + row * p.ldx;
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      float a[N], b[N];
      load_vec<E, N>(r + v * N, a);
      load_vec<E, N>(x + v * N, b);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        a[j] = E::load(E::store(a[j] + b[j]));  // the value stored, as pass 3 will read it
        acc += layer ? a[j] : a[j] * a[j];
      }
      store_vec<E, N>(r + v * N, a);
    }
    in = r;
  } else {
    in = static_cast<const Raw*>(p.x) + row * p.ldx;
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      float a[N];
      load_vec<E, N>(in + v * N, a);
#pragma unroll
      for (int j = 0; j < N; ++j) acc += layer ? a[j] : a[j] * a[j];
    }
  }
  const float total = block_sum(acc, scratch);

  float mean = 0.0f, scale;
  if (layer) {
    mean = total / n;
    float ss = 0.0f;
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      float a[N];
      load_vec<E, N>(in + v * N, a);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float d = a[j] - mean;
        ss += d * d;
      }
    }
    scale = 1.0f / sqrtf(block_sum(ss, scratch) / n + p.eps);
  } else {
    scale = 1.0f / sqrtf(total / n + p.eps);
  }

  Raw* out = static_cast<Raw*>(p.out) + row * p.ldo;
  for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
    float a[N], w[N];
    load_vec<E, N>(in + v * N, a);
    load_vec_any<N>(p.weight, p.weight_type, v * N, w);
    if (!layer) {
#pragma unroll
      for (int j = 0; j < N; ++j) a[j] = w[j] * (a[j] * scale);  // Hugging Face's order
    } else {
      float b[N];
      if (p.bias != nullptr) {
        load_vec_any<N>(p.bias, p.bias_type, v * N, b);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) b[j] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < N; ++j) a[j] = (a[j] - mean) * scale * w[j] + b[j];
    }
    store_vec<E, N>(out + v * N, a);
  }
}

template <class E, int N>
void launch_typed(const NormLaunch& p, cudaStream_t stream) {
  const int64_t nvec = p.cols / N;
  const int64_t threads =
      std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (nvec + 31) / 32 * 32));
  norm_kernel<E, N>
      <<<static_cast<unsigned>(p.rows), static_cast<unsigned>(threads), 0, stream>>>(p);
}

}  // namespace

void launch_norm(const NormLaunch& p, cudaStream_t stream) {
  dispatch_dtype_vec(p.act, p.vec, [&](auto elem, auto width) {
    launch_typed<decltype(elem), decltype(width)::value>(p, stream);
  });
}

}  // namespace fastattn::kernels::cuda
