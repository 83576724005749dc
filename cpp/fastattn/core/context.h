// The per-device Context every kernel and layer takes: where it runs, which allocator gives its
// scratch memory, how many CPU threads it may use. GPU builds add the stream and BLAS handle;
// tensor parallelism adds the communicator.
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/device.h"

namespace fastattn {

namespace comm {
class Communicator;  // comm/communicator.h (tensor parallelism)
}

struct Context {
  Device device{};
  Allocator* allocator = host_allocator();
  // CPU threads for OpenMP-parallel kernels; 0 = OpenMP's default (OMP_NUM_THREADS or all cores).
  int num_threads = 0;
  comm::Communicator* comm = nullptr;  // null = single rank
  void* stream = nullptr;              // cudaStream_t in CUDA builds
  void* blas_handle = nullptr;  // cublasHandle_t bound to `stream` (CUDA builds; null = none yet)
  // SMs a CUDA GEMM may use (cuBLAS's SM count target); 0 = all. The tiling-AllReduce sets it so
  // that the tile GEMMs leave SMs to the all-reduce running beside them.
  int gemm_sm_target = 0;
};

// A Context for the CPU with the default allocator.
inline Context cpu_context(int num_threads = 0) {
  Context c;
  c.num_threads = num_threads;
  return c;
}

// Threads an OpenMP region started by a kernel should use for this context.
int context_threads(const Context& ctx);

}  // namespace fastattn
