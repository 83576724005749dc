// Dense linear layers. Weights are stored [out, in] (as in Hugging Face checkpoints).
//
// Where they run: on the device x lives on; every tensor of a call must be there (else
// InvalidArgument naming the tensor).
//   CPU:  float32 activations; weights in float32, float16 or bfloat16. 16-bit weights are
//         widened to float32 inside the kernel (fp32 arithmetic), so decode reads half the bytes.
//   CUDA: x and w of one dtype (float32, float16 or bfloat16; the model converts weights to the
//         activation dtype at upload); y of x's dtype or float32 (e.g. float32 logits from
//         float16 activations). Decode-sized M (<= 16, 16-bit, sm_80+, K % 8 == 0, aligned): the
//         small-batch GEMV (kernels/cuda/gemv_launch.h, tensor cores, float32 accumulation,
//         no cuBLAS). Otherwise cublasGemmEx with float32 accumulation (float32 data:
//         CUBLAS_COMPUTE_32F_PEDANTIC, never TF32, so results match the CPU closely). The cuBLAS
//         handle is ctx.blas_handle, or, when that is null, a per-thread, per-device handle
//         created on first use; cublasSetStream(ctx.stream) is applied before every call. No
//         scratch memory beyond cuBLAS's own workspace; never synchronises the host.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// y[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]).
// x: rows may be strided (last dim contiguous). w: contiguous [N, K]. bias: undefined Tensor or
// contiguous [N] of any float dtype. y: [M, N], last dim contiguous, rows may be strided.
// CPU: x, y float32; w any float dtype. Large M goes through BLAS sgemm (16-bit weights
// converted panel by panel); small M (decode) through a multithreaded GEMV-style kernel that
// streams the weights once. Both split N over context_threads(ctx) OpenMP threads.
// CUDA: see above; the bias is broadcast into y first and the GEMM adds the product with
// beta = 1, so the bias is added in float32 and y is rounded once (a bias is first rounded to
// y's dtype: exact when it has y's dtype or y is float32).
// y must not overlap x, w or bias. K = 0 gives y = bias (or zeros).
void linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);

// y[t, :] += bias for every row t of y [M, N] (last dim contiguous, rows may be strided); bias:
// contiguous [N] of any float dtype. For the tensor-parallel row-parallel linear, whose bias is
// added once after the all-reduce. CPU: y float32. CUDA: y float32 / float16 / bfloat16, the
// sum computed in float32 and rounded once. y must not overlap bias.
void add_bias(const Context& ctx, const Tensor& bias, Tensor& y);

// Row-major float32 GEMM through BLAS (CPU only): C = alpha * op(A) @ op(B) + beta * C.
// Runs in the calling thread: the kernels parallelise with OpenMP and call it from inside their
// parallel regions, so OpenBLAS's own thread pool is set to one thread on first use.
void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc);

// Name of the BLAS the build links (for reports), e.g. "OpenBLAS 0.3.x (scipy-openblas32)".
const char* blas_name();

}  // namespace fastattn::kernels
