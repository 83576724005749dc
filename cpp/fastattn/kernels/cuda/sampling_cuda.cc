// Host side of sample() on CUDA: turns each row's SamplingParams into what the kernel needs
// (prepare_sample_row) and launches kSampleRowsPerLaunch rows at a time with the rows'
// parameters inside the launch, so nothing is copied to the GPU and the host never waits.
#include <algorithm>
#include <vector>

#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/kernels/cuda/launch_checks.h"
#include "fastattn/kernels/cuda/sampling_cuda.h"
#include "fastattn/kernels/cuda/sampling_launch.h"

namespace fastattn::kernels::cuda {

void sample_cuda(const Context& ctx, const Tensor& logits,
                 const std::vector<SamplingParams>& params, const std::vector<uint64_t>& steps,
                 Tensor& out) {
  // sample() has checked dtypes, shapes, devices and parameters.
  const int64_t B = logits.size(0), V = logits.size(1);
  FA_CHECK(V <= kSampleMaxVocab, "logits: a vocabulary of ", V,
           " exceeds the CUDA sampler's limit of ", kSampleMaxVocab, " tokens");
  if (B == 0) return;
  const DeviceGuard guard(logits.device().index);
  SampleLaunch L;
  L.ld = logits.stride(0);
  L.vocab = static_cast<int32_t>(V);
  for (int64_t b0 = 0; b0 < B; b0 += kSampleRowsPerLaunch) {
    L.rows = static_cast<int>(std::min<int64_t>(kSampleRowsPerLaunch, B - b0));
    L.logits = logits.data_as<const float>() + b0 * L.ld;
    L.out = out.data_as<int32_t>() + b0;
    for (int r = 0; r < L.rows; ++r) {
      const auto i = static_cast<size_t>(b0 + r);
      L.row[r] = prepare_sample_row(params[i], steps[i]);
    }
    launch_sample(L, stream_of(ctx));
  }
}

void sample_prepared_cuda(const Context& ctx, const Tensor& logits, const Tensor& rows,
                          Tensor& out) {
  const int64_t B = logits.size(0), V = logits.size(1);
  FA_CHECK(V <= kSampleMaxVocab, "logits: a vocabulary of ", V,
           " exceeds the CUDA sampler's limit of ", kSampleMaxVocab, " tokens");
  const DeviceGuard guard(logits.device().index);
  SampleLaunch L;
  L.ld = logits.stride(0);
  L.vocab = static_cast<int32_t>(V);
  const auto* all = static_cast<const SampleRow*>(rows.data());
  for (int64_t b0 = 0; b0 < B; b0 += kSampleRowsPerLaunch) {
    L.rows = static_cast<int>(std::min<int64_t>(kSampleRowsPerLaunch, B - b0));
    L.logits = logits.data_as<const float>() + b0 * L.ld;
    L.out = out.data_as<int32_t>() + b0;
    L.device_rows = all + b0;
    launch_sample(L, stream_of(ctx));
  }
}

}  // namespace fastattn::kernels::cuda
