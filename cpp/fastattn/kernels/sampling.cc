// The device-neutral part of kernels/sampling.h: the argument checks (once, for every device),
// the counter-based draw, the GPU's prepared rows, and the choice of backend (kernels/cuda/ for
// CUDA tensors in CUDA builds, else kernels/cpu/sampling.cc).
#include "fastattn/kernels/sampling.h"

#include <cmath>
#include <limits>
#include <vector>

#include "fastattn/kernels/cpu/sampling_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/sampling_cuda.h"
#endif

namespace fastattn::kernels {
namespace {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void check_params(const SamplingParams& p, int64_t row) {
  FA_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.0f, "sampling: temperature ",
           p.temperature, " of row ", row, " must be a finite number >= 0 (0 = greedy)");
  FA_CHECK(p.top_k >= 0, "sampling: top_k ", p.top_k, " of row ", row,
           " must be >= 0 (0 = no limit)");
  FA_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "sampling: top_p ", p.top_p, " of row ", row,
           " must lie in (0, 1] (1 = no limit)");
}

}  // namespace

float uniform_from_counter(uint64_t seed, uint64_t counter) {
  // Two rounds of splitmix64 over (seed, counter): a counter-based generator, so any (seed, step)
  // is drawn directly without advancing state. Top 24 bits -> a float in [0, 1).
  const uint64_t bits = splitmix64(splitmix64(seed) ^ (counter * 0xD1B54A32D192ED03ull));
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

SampleRow prepare_sample_row(const SamplingParams& p, uint64_t step) {
  check_params(p, 0);
  SampleRow row;
  const bool greedy = p.temperature == 0.0f || p.top_k == 1;
  row.top_k = greedy ? 1 : p.top_k;
  row.top_p = p.top_p;
  row.inv_temperature = greedy ? 1.0f : 1.0f / p.temperature;
  row.u = uniform_from_counter(p.seed, step);
  return row;
}

void sample_prepared(const Context& ctx, const Tensor& logits, const Tensor& rows, Tensor& out) {
#if defined(FASTATTN_WITH_CUDA)
  FA_CHECK(logits.device().type == DeviceType::kCUDA && rows.device() == logits.device() &&
               out.device() == logits.device(),
           "sample_prepared: logits, rows and out must be on one GPU, got ", logits.describe(),
           ", ", rows.describe(), ", ", out.describe());
  check_dtype(logits, "logits", DType::kFloat32);
  check_dim(logits, "logits", 2);
  check_last_dim_contiguous(logits, "logits");
  const int64_t B = logits.size(0);
  check_dtype(rows, "rows", DType::kInt32);
  check_shape(rows, "rows", {B, static_cast<int64_t>(sizeof(SampleRow) / sizeof(int32_t))});
  check_contiguous(rows, "rows");
  check_dtype(out, "out", DType::kInt32);
  check_shape(out, "out", {B});
  check_contiguous(out, "out");
  cuda::sample_prepared_cuda(ctx, logits, rows, out);
#else
  (void)ctx;
  (void)rows;
  (void)out;
  FA_THROW_AS(InvalidArgument, "sample_prepared: GPU tensors only; this build has no CUDA (got ",
              logits.describe(), ")");
#endif
}

void sample(const Context& ctx, const Tensor& logits, const std::vector<SamplingParams>& params,
            const std::vector<uint64_t>& steps, Tensor& out) {
  // Shapes and parameters are checked here for both devices; the CUDA path gets checked input.
#if defined(FASTATTN_WITH_CUDA)
  const bool on_gpu = !logits.device().is_cpu_addressable();
#else
  constexpr bool on_gpu = false;
#endif
  if (on_gpu) {
    FA_CHECK(out.device() == logits.device(), "out is on ", out.device().str(),
             " but logits is on ", logits.device().str(),
             ": every tensor of one call must be on the same device");
  } else {
    check_cpu(logits, "logits");
    check_cpu(out, "out");
  }
  check_dtype(logits, "logits", DType::kFloat32);
  check_dim(logits, "logits", 2);
  check_last_dim_contiguous(logits, "logits");
  const int64_t B = logits.size(0), V = logits.size(1);
  FA_CHECK(V > 0, "logits: empty vocabulary in ", logits.describe());
  FA_CHECK(V <= std::numeric_limits<int32_t>::max(), "logits: vocabulary of ", V,
           " does not fit int32 token ids");
  check_dtype(out, "out", DType::kInt32);
  check_shape(out, "out", {B});
  check_contiguous(out, "out");
  FA_CHECK(static_cast<int64_t>(params.size()) == B, "sampling: ", params.size(),
           " parameter sets for a batch of ", B, " rows");
  FA_CHECK(static_cast<int64_t>(steps.size()) == B, "sampling: ", steps.size(),
           " steps for a batch of ", B, " rows");
  for (int64_t b = 0; b < B; ++b) check_params(params[b], b);
#if defined(FASTATTN_WITH_CUDA)
  if (on_gpu) {
    cuda::sample_cuda(ctx, logits, params, steps, out);
    return;
  }
#endif
  cpu::sample_cpu(ctx, logits, params, steps, out);
}

}  // namespace fastattn::kernels
