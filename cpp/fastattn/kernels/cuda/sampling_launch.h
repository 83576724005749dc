// Launch description shared by the host code (sampling_cuda.cc, plain C++) and the kernel
// (sampling_kernel.cu) of sample() on CUDA. Passed by value as the kernel parameter: the rows'
// parameters travel with the launch (no upload), kSampleRowsPerLaunch rows at a time, or are
// read from device memory (sample_prepared: graph-captured decode steps).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/kernels/sample_row.h"

namespace fastattn::kernels::cuda {

constexpr int kSampleRowsPerLaunch = 128;

using kernels::SampleRow;

struct SampleLaunch {
  const float* logits = nullptr;  // [rows, vocab] with row pitch ld (elements)
  int64_t ld = 0;
  int32_t vocab = 0;
  int32_t* out = nullptr;  // [rows]
  int rows = 0;            // <= kSampleRowsPerLaunch
  // The rows' parameters: in device memory when `device_rows` is set (read at run time, so a
  // captured launch replays with whatever rows were uploaded), else carried in `row`.
  const SampleRow* device_rows = nullptr;
  SampleRow row[kSampleRowsPerLaunch];
};

// Largest vocabulary the kernel takes (its loops index tokens with int).
constexpr int32_t kSampleMaxVocab = 1 << 30;

// Enqueues one thread block per row on `stream`; throws fastattn::Error on a launch failure.
void launch_sample(const SampleLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
