// cuBLAS handles for the CUDA linear kernels and cuBLAS status checks.
#pragma once

#include <cublas_v2.h>

#include "fastattn/core/context.h"

namespace fastattn::kernels::cuda {

[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* what, const char* file,
                                     int line);

// A cuBLAS status other than success becomes a fastattn::Error naming the call.
#define FA_CUBLAS_CHECK(call)                                                           \
  do {                                                                                  \
    const cublasStatus_t fa_st_ = (call);                                               \
    if (fa_st_ != CUBLAS_STATUS_SUCCESS) {                                              \
      ::fastattn::kernels::cuda::throw_cublas_error(fa_st_, #call, __FILE__, __LINE__); \
    }                                                                                   \
  } while (0)

// The handle for work on `device` (which must be the current device), bound to ctx.stream:
//   - ctx.blas_handle when set (the caller's handle, used as configured: its math mode and
//     workspace are the caller's; it must belong to `device`);
//   - else this thread's handle for `device`, created on first use and destroyed when the thread
//     ends. Its math mode disallows reduced-precision (16-bit) split-K reductions, so fp16 / bf16
//     GEMMs accumulate in float32 all the way.
// cublasSetStream(handle, ctx.stream) is called every time (it is cheap), so the handle always
// runs on the context's stream.
cublasHandle_t cublas_handle(const Context& ctx, int device);

// Sets the handle's SM count target (cublasSetSmCountTarget) for one GEMM and restores the one it
// had; sm_count 0 leaves the handle alone.
class SmCountTarget {
 public:
  SmCountTarget(cublasHandle_t handle, int sm_count);
  ~SmCountTarget();
  SmCountTarget(const SmCountTarget&) = delete;
  SmCountTarget& operator=(const SmCountTarget&) = delete;

 private:
  cublasHandle_t handle_;
  int previous_ = 0;
  bool set_ = false;
};

}  // namespace fastattn::kernels::cuda
