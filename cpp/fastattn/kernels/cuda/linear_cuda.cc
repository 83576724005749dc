// linear() on the GPU: y[M, N] = x[M, K] @ w[N, K]^T (+ bias) through the small-batch GEMV
// (decode-sized M, gemv_launch.h) or cublasGemmEx, and the bias kernels' host side.
//
// cuBLAS is column-major. Read column-major, w [N, K] (row-major) is a K x N matrix with ld K,
// x [M, K] with row pitch ldx a K x M matrix with ld ldx, and y [M, N] with pitch ldy an N x M
// matrix with ld ldy; so y = x w^T is, column-major, y (N x M) = w^T (N x K) * x (K x M):
// cublasGemmEx(op_T, op_N, m = N, n = M, k = K). Strided x rows need nothing but ldx.
// Accumulation is float32 (CUBLAS_COMPUTE_32F; for float32 data the pedantic variant, which
// never uses TF32, so results match the CPU closely). A bias is first broadcast into y and the
// GEMM runs with beta = 1: the bias is added in float32 inside the GEMM and y is rounded once.
#include "fastattn/kernels/cuda/linear_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/env.h"
#include "fastattn/kernels/cuda/cublas_handle.h"
#include "fastattn/kernels/cuda/device_props.h"
#include "fastattn/kernels/cuda/gemv_launch.h"
#include "fastattn/kernels/cuda/launch_checks.h"
#include "fastattn/kernels/cuda/linear_launch.h"

namespace fastattn::kernels::cuda {
namespace {

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::kFloat16:
      return CUDA_R_16F;
    case DType::kBFloat16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

bool ranges_overlap(const void* a, size_t na, const void* b, size_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return na > 0 && nb > 0 && pa < pb + nb && pb < pa + na;
}

// Bytes spanned by `rows` rows of `cols` elements `ld` apart.
size_t span_bytes(int64_t rows, int64_t cols, int64_t ld, DType dt) {
  if (rows == 0 || cols == 0) return 0;
  return static_cast<size_t>((rows - 1) * ld + cols) * dtype_size(dt);
}

void check_bias(const Tensor& bias, const Tensor& ref, const char* ref_name, int64_t N) {
  check_same_device(bias, "bias", ref, ref_name);
  check_floating(bias, "bias");
  check_shape(bias, "bias", {N});
  check_contiguous(bias, "bias");
}

// y = bias broadcast (add = false) or y += bias (add = true) on the current device.
void bias_rows(const Context& ctx, const Tensor& bias, void* y, DType y_type, int64_t ldy,
               int64_t M, int64_t N, bool add) {
  if (M == 0 || N == 0) return;
  BiasLaunch L;
  L.y = y;
  L.y_type = y_type;
  L.ldy = ldy;
  L.rows = M;
  L.cols = N;
  L.bias = bias.data();
  L.bias_type = bias.dtype();
  L.add = add;
  const int vec = vec16(y_type);
  L.vec = vector_ok(y, ldy, N, dtype_size(y_type), vec) &&
                  vector_ok(bias.data(), N, N, dtype_size(bias.dtype()), vec)
              ? vec
              : 1;
  launch_bias_rows(L, stream_of(ctx));
  FA_CUDA_CHECK_LAUNCH("bias_rows_kernel");
}

// FASTATTN_SMALL_BATCH_GEMV=0 in the environment makes kAuto always take cuBLAS (read once): the
// same program with and without the GEMV, for end-to-end comparisons (bench e2e).
bool small_batch_gemv_enabled() {
  static const bool enabled = env_flag("FASTATTN_SMALL_BATCH_GEMV", true);
  return enabled;
}

}  // namespace

void linear_cuda(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                 Tensor& y, const LinearCudaOptions& options) {
  check_same_device(w, "w", x, "x");
  check_same_device(bias, "bias", x, "x");
  check_same_device(y, "y", x, "x");
  check_activation_dtype(x, "x");
  check_dim(x, "x", 2);
  check_last_dim_contiguous(x, "x");
  check_same_dtype(w, "w", x, "x");
  check_dim(w, "w", 2);
  check_contiguous(w, "w");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  FA_CHECK(w.size(1) == K, "w: expected [N, ", K, "] to match x ", x.describe(),
           " (weights are stored [out_features, in_features]), got ", w.describe());
  if (bias.defined()) check_bias(bias, x, "x", N);
  FA_CHECK(y.dtype() == x.dtype() || y.dtype() == DType::kFloat32, "y: expected x's dtype (",
           dtype_name(x.dtype()), ") or float32, got ", y.describe());
  check_shape(y, "y", {M, N});
  check_last_dim_contiguous(y, "y");
  const int64_t ldx = M <= 1 ? std::max<int64_t>(K, 1) : x.stride(0);
  const int64_t ldy = M <= 1 ? std::max<int64_t>(N, 1) : y.stride(0);
  FA_CHECK(ldx >= K, "x: row stride ", x.stride(0), " is smaller than its row length ", K);
  FA_CHECK(ldy >= N, "y: row stride ", y.stride(0), " is smaller than its row length ", N);
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  FA_CHECK(M <= kMax && N <= kMax && K <= kMax && ldx <= kMax && ldy <= kMax, "linear: x ",
           x.describe(), " / w ", w.describe(), " exceed cuBLAS's 32-bit sizes");
  const size_t y_bytes = span_bytes(M, N, ldy, y.dtype());
  FA_CHECK(!ranges_overlap(y.data(), y_bytes, x.data(), span_bytes(M, K, ldx, x.dtype())),
           "y: must not overlap x (linear does not work in place)");
  FA_CHECK(!ranges_overlap(y.data(), y_bytes, w.data(), w.nbytes()), "y: must not overlap w");
  if (bias.defined()) {
    FA_CHECK(!ranges_overlap(y.data(), y_bytes, bias.data(), bias.nbytes()),
             "y: must not overlap bias");
  }
  if (M == 0 || N == 0) return;

  const int device = x.device().index;
  const DeviceGuard guard(device);
  const cudaStream_t stream = stream_of(ctx);
  if (options.impl != LinearCudaImpl::kCublas) {
    const DeviceProps props = device_props(device);
    const bool fits = small_batch_gemv_fits(props.cc, x.dtype(), M, K, x.data(), ldx, w.data());
    if (options.impl == LinearCudaImpl::kSmallBatchGemv) {
      FA_CHECK(fits, "linear: the small-batch GEMV needs sm_80+, float16 / bfloat16, 1 <= M <= ",
               kSmallBatchGemvMaxRows,
               ", K a multiple of 8, 16-byte aligned x / w and a row stride "
               "of x that is a multiple of 8; got x ",
               x.describe(), " (row stride ", ldx, "), w ", w.describe(), " on sm_", props.cc);
    }
    // auto: up to one token tile (M <= 8). At M = 16 the two-tile kernel (191 registers) lost
    // to cuBLAS end to end on the H100 (decode batch 16: 6.77 vs 6.26 ms/step, 2026-12-07).
    const bool auto_takes =
        ctx.gemm_sm_target == 0 && M <= kSmallBatchGemvAutoRows && small_batch_gemv_enabled();
    if (fits && (options.impl == LinearCudaImpl::kSmallBatchGemv || auto_takes)) {
      SmallBatchGemvLaunch L;
      L.x = x.data();
      L.ldx = ldx;
      L.w = w.data();
      L.dtype = x.dtype();
      L.y = y.data();
      L.ldy = ldy;
      L.y_type = y.dtype();
      if (bias.defined()) {
        L.bias = bias.data();
        L.bias_type = bias.dtype();
      }
      L.M = static_cast<int>(M);
      L.N = static_cast<int>(N);
      L.K = static_cast<int>(K);
      L.warps =
          options.gemv_warps > 0 ? options.gemv_warps : small_batch_gemv_warps(N, K, props.sms);
      if (options.gemv_stages > 0) L.stages = options.gemv_stages;
      launch_small_batch_gemv(L, stream);
      FA_CUDA_CHECK_LAUNCH("small_batch_gemv_kernel");
      return;
    }
  }
  if (bias.defined()) bias_rows(ctx, bias, y.data(), y.dtype(), ldy, M, N, /*add=*/false);
  if (K == 0) {  // an empty sum: y = bias, or zeros (all-zero bits are 0.0 in every float dtype)
    if (!bias.defined()) {
      const size_t es = dtype_size(y.dtype());
      FA_CUDA_CHECK(cudaMemset2DAsync(y.data(), static_cast<size_t>(ldy) * es, 0,
                                      static_cast<size_t>(N) * es, static_cast<size_t>(M), stream));
    }
    return;
  }
  const float alpha = 1.0f, beta = bias.defined() ? 1.0f : 0.0f;
  const cublasComputeType_t compute =
      x.dtype() == DType::kFloat32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  const cublasHandle_t handle = cublas_handle(ctx, device);
  const SmCountTarget sm_target(handle, ctx.gemm_sm_target);
  FA_CUBLAS_CHECK(
      cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                   static_cast<int>(K), &alpha, w.data(), cuda_type(w.dtype()), static_cast<int>(K),
                   x.data(), cuda_type(x.dtype()), static_cast<int>(ldx), &beta, y.data(),
                   cuda_type(y.dtype()), static_cast<int>(ldy), compute, CUBLAS_GEMM_DEFAULT));
}

void add_bias_cuda(const Context& ctx, const Tensor& bias, Tensor& y) {
  check_same_device(bias, "bias", y, "y");
  check_activation_dtype(y, "y");
  check_dim(y, "y", 2);
  check_last_dim_contiguous(y, "y");
  const int64_t M = y.size(0), N = y.size(1);
  FA_CHECK(bias.defined(), "bias: required, got an undefined tensor");
  check_bias(bias, y, "y", N);
  const int64_t ldy = M <= 1 ? std::max<int64_t>(N, 1) : y.stride(0);
  FA_CHECK(ldy >= N, "y: row stride ", y.stride(0), " is smaller than its row length ", N);
  FA_CHECK(!ranges_overlap(y.data(), span_bytes(M, N, ldy, y.dtype()), bias.data(), bias.nbytes()),
           "y: must not overlap bias");
  if (M == 0 || N == 0) return;
  const DeviceGuard guard(y.device().index);
  bias_rows(ctx, bias, y.data(), y.dtype(), ldy, M, N, /*add=*/true);
}

}  // namespace fastattn::kernels::cuda
