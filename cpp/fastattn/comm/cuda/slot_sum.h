// The reduction step of the gather all-reduce (nccl_communicator.cc): after an all-gather put
// every rank's copy of a buffer side by side, out = slot 0 + slot 1 + ... in rank order, so that
// every rank computes bit-identical sums.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::comm::cuda {

// out[i] = sum over k < num_slots of slots[k * count + i], for i < count, on `stream`.
// Floats are summed in float32 (16-bit inputs rounded once at the end), integers exactly in
// their own type. `out` may not overlap `slots`.
void launch_slot_sum(const void* slots, void* out, int64_t count, int num_slots, DType dtype,
                     cudaStream_t stream);

}  // namespace fastattn::comm::cuda
