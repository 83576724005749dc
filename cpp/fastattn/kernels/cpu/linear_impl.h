// The two regimes of linear() on the CPU (internal; linear() in gemm.cc checks the arguments
// and picks one).
#pragma once

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cpu {

// y[m, n] = sum_k x[m, k] * w[n, k] for m < M, n < N. x rows ldx floats apart, y rows ldy apart,
// w contiguous [N, K] of w_type (float32 / float16 / bfloat16). No bias.
struct LinearArgs {
  const float* x = nullptr;
  int64_t ldx = 0;
  const void* w = nullptr;
  DType w_type = DType::kFloat32;
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t M = 0, N = 0, K = 0;
};

// Largest M for which the streaming GEMV kernel beats BLAS sgemm (measured on the 2-core Zen 4
// development VM, 2048x768 weights from DRAM, 1 and 2 threads: fp32 ties at M = 32; 16-bit
// weights, whose BLAS path pays for widening, still favour the GEMV at M = 32).
inline int64_t gemv_max_m(DType w_type) { return w_type == DType::kFloat32 ? 24 : 32; }

// Decode regime: streams each weight row once (widening 16-bit weights in registers) and
// computes all M outputs of that row from it; OpenMP over N.
void gemv_rows(const LinearArgs& a, int num_threads);

// Name of the SIMD path gemv_rows was compiled with ("avx512", "avx2" or "scalar").
const char* gemv_isa();

// Prefill regime: BLAS sgemm; 16-bit weights are widened panel by panel into a scratch buffer.
// Threads are OpenMP's: each takes a contiguous range of N and calls a single-threaded sgemm, so
// the BLAS's own thread pool never competes with OpenMP's (spinning) workers for the cores.
void gemm_blas(const LinearArgs& a, int num_threads);

}  // namespace fastattn::kernels::cpu
