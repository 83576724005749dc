// One row's sampling as the GPU sampler applies it, prepared on the host: this step's random draw
// and the row's filters. Plain data, shared by the host code and the CUDA kernel, so the rows can
// travel inside a launch or sit in device memory (a CUDA graph replays with new rows uploaded).
#pragma once

#include <cstdint>

namespace fastattn::kernels {

struct SampleRow {
  float u = 0.0f;                // uniform_from_counter(seed, step), in [0, 1)
  float inv_temperature = 1.0f;  // 1.0f / temperature, rounded as the CPU rounds it
  int32_t top_k = 0;             // 0 = no limit; greedy rows (temperature 0) carry 1
  float top_p = 1.0f;            // 1 = no limit
};

}  // namespace fastattn::kernels
