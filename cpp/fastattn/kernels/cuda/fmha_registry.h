// The registry of compiled FMHA instances, keyed by (kernel, head dim, dtype, archs).
// The table itself is generated at configure time (cmake/generate_fmha_instances.py) from the
// architectures and head dims the build was asked for.
#pragma once

#include <cuda_runtime.h>

#include "fastattn/core/dtype.h"
#include "fastattn/kernels/cuda/fmha_cuda.h"
#include "fastattn/kernels/cuda/fmha_device_params.h"

namespace fastattn::kernels::cuda {

using FmhaLaunchFn = void (*)(const FmhaDeviceParams&, cudaStream_t);

struct FmhaInstance {
  AttentionKernel kernel;  // kFmha884 / kFmha884Plain / kFmha1688 / kFmha16816
  int head_dim;
  DType dtype;
  const char* archs;  // the SASS targets it was compiled for, e.g. "80;90"
  FmhaLaunchFn launch;
};

// All compiled instances (generated); count in *n.
const FmhaInstance* fmha_instance_table(int* n);

}  // namespace fastattn::kernels::cuda
