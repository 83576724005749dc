// The one registry of compiled CUDA attention instances, FlashAttention-2 (prefill) and split-KV
// decode alike. The table is generated at configure time (cmake/generate_attention_instances.py)
// from the architectures and head dims the build was asked for; each row names the kernel it
// belongs to (attention_dispatch.h) and the SASS targets it was compiled for, and a row runs
// only on a GPU that one of those targets runs on.
#pragma once

#include <cuda_runtime.h>

#include "fastattn/core/dtype.h"
#include "fastattn/kernels/attention/attention_dispatch.h"
#include "fastattn/kernels/cuda/attention/decode/decode_launch.h"
#include "fastattn/kernels/cuda/attention/fmha_device_params.h"

namespace fastattn::kernels::cuda {

using FmhaLaunchFn = void (*)(const FmhaDeviceParams&, cudaStream_t);
// A decode instance file's kernels, one entry per row tile; count in *n.
using DecodeEntriesFn = const DecodeKernelEntry* (*)(int* n);

struct AttentionInstance {
  AttentionKernel kernel;  // a FlashAttention-2 MMA path or a decode copy path
  int head_dim;
  DType dtype;
  const char* archs;               // the SASS targets it was compiled for, e.g. "80;90"
  FmhaLaunchFn fmha_launch;        // FlashAttention-2 instances (null for decode)
  DecodeEntriesFn decode_entries;  // decode instances (null for FlashAttention-2); the two copy
                                   // paths of one (head dim, dtype) share one file's entries
};

// All compiled instances (generated); count in *n.
const AttentionInstance* attention_instance_table(int* n);

// The instance of `kernel` for (head dim, dtype) with code for a GPU of compute capability cc,
// or null.
const AttentionInstance* find_attention_instance(AttentionKernel kernel, int head_dim, DType dtype,
                                                 int cc);

// Whether code compiled for sm_<arch> runs on a GPU of compute capability `cc`: the build embeds
// SASS only (no PTX), which runs on the same major version with an equal or newer minor one.
bool sass_runs_on(int arch, int cc);

// Whether `archs` ("80;90", an instance's SASS targets) holds one that runs on `cc`.
bool archs_run_on(const char* archs, int cc);

}  // namespace fastattn::kernels::cuda
