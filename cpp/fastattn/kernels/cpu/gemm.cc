// linear(): argument checks, the choice between the decode GEMV kernel (gemv.cc) and BLAS sgemm,
// and the bias; add_bias(). CUDA tensors go to kernels/cuda/linear_cuda.cc.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/gemm_cpu.h"
#include "fastattn/kernels/cpu/linear_impl.h"
#include "fastattn/kernels/gemm.h"

namespace fastattn::kernels {
namespace cpu {
namespace {

// Rows of a 16-bit weight widened per sgemm call: ~1 MiB of fp32, which stays in L2 while
// sgemm reads it, for a few rows of x; 8 MiB (L3) from kBigPanelRows rows of x on. Every sgemm
// call packs all of x again, which a prefill chunk's many rows make costly: with 1 MiB panels a
// 512-row GEMM against a [2048, 5632] bf16 weight (the ~1B model's down projection: 46-row
// panels) ran at 67 GFLOP/s on one thread against 87 with 8 MiB ones and 92 for float32
// weights; the 134M model's shapes gained 1.5-3% (CPU time, quiet machine).
constexpr int64_t kPanelFloats = int64_t{1} << 18;
constexpr int64_t kBigPanelFloats = int64_t{1} << 21;
constexpr int64_t kBigPanelRows = 128;

// y[:, n_begin, n_end) by sgemm in the calling thread. 16-bit weights: widen a panel of rows,
// multiply it, move on; the widening is one pass over the panel, shared by all M rows of x.
void gemm_rows(const LinearArgs& a, int64_t n_begin, int64_t n_end) {
  if (a.w_type == DType::kFloat32) {
    gemm_f32(false, true, a.M, n_end - n_begin, a.K, 1.0f, a.x, a.ldx,
             static_cast<const float*>(a.w) + n_begin * a.K, a.K, 0.0f, a.y + n_begin, a.ldy);
    return;
  }
  const int64_t floats = a.M >= kBigPanelRows ? kBigPanelFloats : kPanelFloats;
  const int64_t panel = std::min(n_end - n_begin, std::max<int64_t>(16, floats / a.K));
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(panel * a.K)) scratch.resize(panel * a.K);
  const auto* w16 = static_cast<const uint16_t*>(a.w);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += panel) {
    const int64_t rows = std::min(panel, n_end - n0);
    convert_to_float(w16 + n0 * a.K, a.w_type, scratch.data(), rows * a.K);
    gemm_f32(false, true, a.M, rows, a.K, 1.0f, a.x, a.ldx, scratch.data(), a.K, 0.0f, a.y + n0,
             a.ldy);
  }
}

// y[m, :] += bias for m < M (rows ldy floats apart); bias: [N] of any float dtype.
void add_bias_rows(const Context& ctx, const Tensor& bias, float* y, int64_t ldy, int64_t M,
                   int64_t N) {
  std::vector<float> widened;
  const float* b = as_float(bias, widened);
  const int threads = threads_for(ctx, M * N);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    float* row = y + m * ldy;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) row[n] += b[n];
  }
}

}  // namespace

void gemm_blas(const LinearArgs& a, int num_threads) {
  // Contiguous ranges of N (multiples of 16 rows) per thread; at least 64 rows each.
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, a.N / 64)));
#pragma omp parallel num_threads(threads)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = (a.N + nt - 1) / nt;
    const int64_t chunk = (per + 15) / 16 * 16;
    const int64_t n_begin = std::min(a.N, t * chunk), n_end = std::min(a.N, n_begin + chunk);
    if (n_end > n_begin) gemm_rows(a, n_begin, n_end);
  }
}

}  // namespace cpu

void cpu::linear_cpu(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                     Tensor& y) {
  check_cpu(x, "x");
  check_cpu(w, "w");
  check_cpu(y, "y");
  check_dtype(x, "x", DType::kFloat32);
  check_dim(x, "x", 2);
  check_last_dim_contiguous(x, "x");
  check_floating(w, "w");
  check_dim(w, "w", 2);
  check_contiguous(w, "w");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  FA_CHECK(w.size(1) == K, "w: expected [N, ", K, "] to match x ", x.describe(),
           " (weights are stored [out_features, in_features]), got ", w.describe());
  if (bias.defined()) {
    check_cpu(bias, "bias");
    check_floating(bias, "bias");
    check_shape(bias, "bias", {N});
    check_contiguous(bias, "bias");
  }
  check_dtype(y, "y", DType::kFloat32);
  check_shape(y, "y", {M, N});
  check_last_dim_contiguous(y, "y");
  // Rows must not overlap (BLAS needs ld >= row length); a single row may carry any stride.
  const int64_t ldx = M <= 1 ? std::max<int64_t>(K, 1) : x.stride(0);
  const int64_t ldy = M <= 1 ? std::max<int64_t>(N, 1) : y.stride(0);
  FA_CHECK(ldx >= K, "x: row stride ", x.stride(0), " is smaller than its row length ", K);
  FA_CHECK(ldy >= N, "y: row stride ", y.stride(0), " is smaller than its row length ", N);
  if (M == 0 || N == 0) return;
  const size_t y_bytes = static_cast<size_t>(((M - 1) * ldy + N) * 4);
  FA_CHECK(!cpu::ranges_overlap(y.data(), y_bytes, x.data(),
                                static_cast<size_t>(((M - 1) * ldx + K) * 4)),
           "y: must not overlap x (linear does not work in place)");
  FA_CHECK(!cpu::ranges_overlap(y.data(), y_bytes, w.data(), w.nbytes()), "y: must not overlap w");

  float* yp = y.data_as<float>();
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(yp + m * ldy, yp + m * ldy + N, 0.0f);
  } else {
    cpu::LinearArgs a;
    a.x = x.data_as<const float>();
    a.ldx = ldx;
    a.w = w.data();
    a.w_type = w.dtype();
    a.y = yp;
    a.ldy = ldy;
    a.M = M;
    a.N = N;
    a.K = K;
    if (M <= cpu::gemv_max_m(w.dtype())) {
      cpu::gemv_rows(a, context_threads(ctx));
    } else {
      cpu::gemm_blas(a, context_threads(ctx));
    }
  }
  if (bias.defined()) cpu::add_bias_rows(ctx, bias, yp, ldy, M, N);
}

void cpu::add_bias_cpu(const Context& ctx, const Tensor& bias, Tensor& y) {
  check_cpu(y, "y");
  check_dtype(y, "y", DType::kFloat32);
  check_dim(y, "y", 2);
  check_last_dim_contiguous(y, "y");
  const int64_t M = y.size(0), N = y.size(1);
  FA_CHECK(bias.defined(), "bias: required, got an undefined tensor");
  check_cpu(bias, "bias");
  check_floating(bias, "bias");
  check_shape(bias, "bias", {N});
  check_contiguous(bias, "bias");
  const int64_t ldy = M <= 1 ? std::max<int64_t>(N, 1) : y.stride(0);
  FA_CHECK(ldy >= N, "y: row stride ", y.stride(0), " is smaller than its row length ", N);
  FA_CHECK(!cpu::ranges_overlap(y.data(), static_cast<size_t>(M == 0 ? 0 : ((M - 1) * ldy + N) * 4),
                                bias.data(), bias.nbytes()),
           "y: must not overlap bias");
  if (M == 0 || N == 0) return;
  cpu::add_bias_rows(ctx, bias, y.data_as<float>(), ldy, M, N);
}

}  // namespace fastattn::kernels
