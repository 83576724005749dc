// Launch description shared by the host code (sampling_cuda.cc, plain C++) and the kernel
// (sampling_kernel.cu) of sample() on CUDA. Passed by value as the kernel parameter: the rows'
// parameters travel with the launch (no upload), kSampleRowsPerLaunch rows at a time.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fastattn::kernels::cuda {

constexpr int kSampleRowsPerLaunch = 128;

// One row's sampling, prepared on the host. Greedy rows (temperature 0) carry top_k = 1.
struct SampleRow {
  float u = 0.0f;                // uniform_from_counter(seed, step), in [0, 1)
  float inv_temperature = 1.0f;  // 1.0f / temperature, rounded as the CPU rounds it
  int32_t top_k = 0;             // 0 = no limit
  float top_p = 1.0f;            // 1 = no limit
};

struct SampleLaunch {
  const float* logits = nullptr;  // [rows, vocab] with row pitch ld (elements)
  int64_t ld = 0;
  int32_t vocab = 0;
  int32_t* out = nullptr;  // [rows]
  int rows = 0;            // <= kSampleRowsPerLaunch
  SampleRow row[kSampleRowsPerLaunch];
};

// Largest vocabulary the kernel takes (its loops index tokens with int).
constexpr int32_t kSampleMaxVocab = 1 << 30;

// Enqueues one thread block per row on `stream`; throws fastattn::Error on a launch failure.
void launch_sample(const SampleLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
