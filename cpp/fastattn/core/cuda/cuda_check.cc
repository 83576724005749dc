#include "fastattn/core/cuda/cuda_check.h"

#include "fastattn/core/error.h"

namespace fastattn::detail {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  FA_THROW_AS(Error, "CUDA error '", cudaGetErrorString(err), "' from ", what, " at ", file, ":",
              line);
}

void throw_cuda_launch_error(cudaError_t err, const char* what) {
  FA_THROW_AS(Error, "CUDA launch of ", what, " failed: ", cudaGetErrorString(err));
}

}  // namespace fastattn::detail
