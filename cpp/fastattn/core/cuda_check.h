// CUDA return-code checks that throw fastattn::Error with the call and the CUDA message.
#pragma once

#include <cuda_runtime.h>

#include "fastattn/core/error.h"

#define FA_CUDA_CHECK(call)                                                              \
  do {                                                                                   \
    const cudaError_t fa_err_ = (call);                                                  \
    if (fa_err_ != cudaSuccess) {                                                        \
      FA_THROW_AS(Error, "CUDA error '", cudaGetErrorString(fa_err_), "' from ", #call, \
                  " at ", __FILE__, ":", __LINE__);                                      \
    }                                                                                    \
  } while (0)

// After a kernel launch: a launch error (bad configuration, missing image for this GPU).
#define FA_CUDA_CHECK_LAUNCH(what)                                                        \
  do {                                                                                    \
    const cudaError_t fa_err_ = cudaGetLastError();                                       \
    if (fa_err_ != cudaSuccess) {                                                         \
      FA_THROW_AS(Error, "CUDA launch of ", what, " failed: ", cudaGetErrorString(fa_err_)); \
    }                                                                                     \
  } while (0)
