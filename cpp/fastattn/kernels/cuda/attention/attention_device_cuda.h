// The AttentionDevice (kernels/attention/attention_dispatch.h) of a GPU: its compute capability
// and which instances of the attention registry (attention_registry.h) run on it.
#pragma once

#include "fastattn/kernels/attention/attention_dispatch.h"

namespace fastattn::kernels::cuda {

AttentionDevice attention_device(int device);

}  // namespace fastattn::kernels::cuda
