// The AttentionDevice (kernels/attention/attention_dispatch.h) of a GPU: its compute capability
// and which compiled attention instances run on it.
#pragma once

#include "fastattn/kernels/attention/attention_dispatch.h"

namespace fastattn::kernels::cuda {

AttentionDevice attention_device(int device);

// Whether code compiled for sm_<arch> runs on a GPU of compute capability `cc`: the build embeds
// SASS only (no PTX), which runs on the same major version with an equal or newer minor one.
bool sass_runs_on(int arch, int cc);

// Whether `archs` ("80;90", an instance's SASS targets) holds one that runs on `cc`.
bool archs_run_on(const char* archs, int cc);

}  // namespace fastattn::kernels::cuda
