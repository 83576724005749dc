// CUDA return-code checks that throw fastattn::Error with the call and the CUDA message.
// The message is built in cuda_check.cc (compiled by the C++ compiler), so translation units
// compiled by nvcc never run iostream formatting themselves.
#pragma once

#include <cuda_runtime.h>

namespace fastattn::detail {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cuda_launch_error(cudaError_t err, const char* what);
}  // namespace fastattn::detail

#define FA_CUDA_CHECK(call)                                                     \
  do {                                                                          \
    const cudaError_t fa_err_ = (call);                                         \
    if (fa_err_ != cudaSuccess) {                                               \
      ::fastattn::detail::throw_cuda_error(fa_err_, #call, __FILE__, __LINE__); \
    }                                                                           \
  } while (0)

// After a kernel launch: a launch error (bad configuration, missing image for this GPU).
#define FA_CUDA_CHECK_LAUNCH(what)                                \
  do {                                                            \
    const cudaError_t fa_err_ = cudaGetLastError();               \
    if (fa_err_ != cudaSuccess) {                                 \
      ::fastattn::detail::throw_cuda_launch_error(fa_err_, what); \
    }                                                             \
  } while (0)
