// Dense linear layers on the CPU. Activations are float32; weights are stored [out, in] (as in
// Hugging Face checkpoints) in float32, float16 or bfloat16. 16-bit weights are widened to
// float32 inside the kernel (fp32 arithmetic), so decode reads half the bytes.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// y[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]).
// x: float32, rows may be strided (last dim contiguous). w: contiguous [N, K], any float dtype.
// bias: undefined Tensor or [N] of any float dtype. y: float32 [M, N], last dim contiguous.
// Large M goes through BLAS sgemm (16-bit weights converted panel by panel); small M (decode)
// through a multithreaded GEMV-style kernel that streams the weights once. Both split N over
// context_threads(ctx) OpenMP threads. y must not overlap x or w.
void linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);

// Row-major float32 GEMM through BLAS: C = alpha * op(A) @ op(B) + beta * C.
// Runs in the calling thread: the kernels parallelise with OpenMP and call it from inside their
// parallel regions, so OpenBLAS's own thread pool is set to one thread on first use.
void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc);

// Name of the BLAS the build links (for reports), e.g. "OpenBLAS 0.3.x (scipy-openblas32)".
const char* blas_name();

}  // namespace fastattn::kernels
