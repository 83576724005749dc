// Rotary position embedding on the CPU.
//
// Angles follow Hugging Face transformers' float32 arithmetic step by step, because at positions
// in the thousands the rounding of `position * inv_freq` (float32) moves the angle by ~1e-4 rad
// and a double-precision angle would differ from transformers by that much:
//   inv_freq = 1 / base^(arange(0, dim, 2) / dim)   (float32 exponent, pow rounded to float32)
//   angle    = float32(position) * inv_freq          (float32 product)
//   cos/sin of the float32 angle (computed in double, rounded to float32)
// Each scaling type replays the float32 tensor ops of transformers' modeling_rope_utils.py
// (_compute_linear_scaling_rope_parameters, _compute_llama3_parameters,
// _compute_dynamic_ntk_parameters); comments name the Python line each step mirrors.
// transformers' pow/cos/sin are SLEEF's 1-ulp versions, so a rare last-bit difference remains.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/rope_cpu.h"
#include "fastattn/kernels/rope.h"

namespace fastattn::kernels {
namespace {

// float32 base ** float32 exponent, rounded once (torch.pow on float32 tensors).
inline float pow_f32(float base, float e) {
  return static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(e)));
}

// 1 / base^(arange(0, dim, 2) / dim) in float32, base already a float32 value.
std::vector<float> default_inv_freq(float base, int dim) {
  std::vector<float> inv(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[i] = 1.0f / pow_f32(base, e);
  }
  return inv;
}

void check_params(const RopeParams& p, int head_dim) {
  FA_CHECK(head_dim > 0, "rope: head_dim must be positive, got ", head_dim);
  FA_CHECK(p.rotary_dim >= 0 && p.rotary_dim <= head_dim, "rope: rotary_dim ", p.rotary_dim,
           " must lie in [0, head_dim = ", head_dim, "] (0 = whole head)");
  const int dim = p.rotary_dim == 0 ? head_dim : p.rotary_dim;
  FA_CHECK(dim % 2 == 0, "rope: the rotated dimension ", dim, " must be even");
  FA_CHECK(std::isfinite(p.theta) && p.theta > 0.0f, "rope: theta must be positive, got ", p.theta);
  if (p.scaling == RopeScaling::kNone) return;
  FA_CHECK(std::isfinite(p.factor) && p.factor > 0.0f,
           "rope: scaling factor must be positive, got ", p.factor);
  if (p.scaling == RopeScaling::kLlama3) {
    FA_CHECK(p.original_max_position > 0,
             "rope: llama3 scaling needs original_max_position > 0, got ", p.original_max_position);
    FA_CHECK(p.low_freq_factor > 0.0f && p.high_freq_factor > p.low_freq_factor,
             "rope: llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got ",
             p.low_freq_factor, " and ", p.high_freq_factor);
  }
  if (p.scaling == RopeScaling::kDynamicNTK) {
    FA_CHECK(p.original_max_position > 0,
             "rope: dynamic NTK scaling needs original_max_position > 0, got ",
             p.original_max_position);
    FA_CHECK(dim > 2, "rope: dynamic NTK scaling needs a rotated dimension > 2, got ", dim);
  }
}

// _compute_llama3_parameters, op by op in float32 (Python scalars become float32 operands).
std::vector<float> llama3_inv_freq(const RopeParams& p, int dim) {
  std::vector<float> inv = default_inv_freq(p.theta, dim);
  const double old_context_len = p.original_max_position;
  const float low_freq_wavelen = static_cast<float>(old_context_len / p.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(old_context_len / p.high_freq_factor);
  const float two_pi = static_cast<float>(2.0 * 3.141592653589793);  // 2 * math.pi
  const float old_len_f = static_cast<float>(old_context_len);
  const float band =
      static_cast<float>(static_cast<double>(p.high_freq_factor) - p.low_freq_factor);
  for (float& f : inv) {
    const float recip = 1.0f / f;
    const float wavelen = recip * two_pi;                         // 2 * math.pi / inv_freq
    float llama = wavelen > low_freq_wavelen ? f / p.factor : f;  // torch.where(...)
    const float ratio = (1.0f / wavelen) * old_len_f;             // old_context_len / wavelen
    const float smooth = (ratio - p.low_freq_factor) / band;
    const float smoothed = (1.0f - smooth) * llama / p.factor + smooth * llama;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (medium) llama = smoothed;
    f = llama;
  }
  return inv;
}

template <typename P>
void rope_typed(const Context& ctx, const RopeParams& p, Tensor& x, const P* pos,
                const std::vector<float>& inv) {
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2);
  const int64_t half = static_cast<int64_t>(inv.size());
  const int64_t st = x.stride(0), sh = x.stride(1);
  float* base = x.data_as<float>();
  const bool neox = p.style == RopeStyle::kNeox;
#pragma omp parallel num_threads(cpu::threads_for(ctx, T * H * D))
  {
    std::vector<float> cs(static_cast<size_t>(2 * half));
    float* c = cs.data();
    float* s = cs.data() + half;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float position = static_cast<float>(pos[t]);  // position_ids.float()
      for (int64_t i = 0; i < half; ++i) {
        const float angle = position * inv[i];
        c[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
        s[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
      for (int64_t h = 0; h < H; ++h) {
        float* v = base + t * st + h * sh;
        if (neox) {  // q * cos + rotate_half(q) * sin over the first 2 * half dims
#pragma omp simd
          for (int64_t i = 0; i < half; ++i) {
            const float a = v[i], b = v[i + half];
            v[i] = a * c[i] - b * s[i];
            v[i + half] = b * c[i] + a * s[i];
          }
        } else {  // rotate_every_two: adjacent pairs
          for (int64_t i = 0; i < half; ++i) {
            const float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c[i] - b * s[i];
            v[2 * i + 1] = b * c[i] + a * s[i];
          }
        }
      }
    }
  }
}

}  // namespace

std::vector<float> rope_inv_freq(const RopeParams& p, int head_dim, int64_t seq_len) {
  check_params(p, head_dim);
  const int dim = p.rotary_dim == 0 ? head_dim : p.rotary_dim;
  switch (p.scaling) {
    case RopeScaling::kNone:
      return default_inv_freq(p.theta, dim);
    case RopeScaling::kLinear: {
      std::vector<float> inv = default_inv_freq(p.theta, dim);
      for (float& f : inv) f /= p.factor;  // inv_freq /= factor
      return inv;
    }
    case RopeScaling::kLlama3:
      return llama3_inv_freq(p, dim);
    case RopeScaling::kDynamicNTK: {
      // transformers keeps the original frequencies until the sequence outgrows
      // max_position_embeddings; past it, seq_len is a tensor and the new base is float32 math:
      // base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2)).
      if (seq_len <= p.original_max_position) return default_inv_freq(p.theta, dim);
      const float grown =
          static_cast<float>(seq_len) * p.factor / static_cast<float>(p.original_max_position) -
          static_cast<float>(static_cast<double>(p.factor) - 1.0);
      const float expo = static_cast<float>(static_cast<double>(dim) / (dim - 2));
      const float base = p.theta * pow_f32(grown, expo);
      return default_inv_freq(base, dim);
    }
  }
  FA_THROW_AS(InvalidArgument, "rope: unknown scaling type ", static_cast<int>(p.scaling));
}

void cpu::apply_rope_cpu(const Context& ctx, const RopeParams& p, Tensor& x,
                         const Tensor& positions, int64_t seq_len) {
  check_cpu(x, "x");
  check_cpu(positions, "positions");
  check_dtype(x, "x", DType::kFloat32);
  check_dim(x, "x", 3);
  FA_CHECK(x.last_dim_contiguous(), "x: the last dimension (head_dim) must be contiguous, got ",
           x.describe(), " with strides ", shape_str(x.strides()));
  FA_CHECK(positions.dtype() == DType::kInt32 || positions.dtype() == DType::kInt64,
           "positions: expected int32 or int64, got ", positions.describe());
  check_shape(positions, "positions", {x.size(0)});
  check_contiguous(positions, "positions");
  FA_CHECK(seq_len >= 0, "rope: seq_len must be >= 0 (0 = max(positions) + 1), got ", seq_len);
  const int64_t T = x.size(0);
  const int64_t D = x.size(2);
  FA_CHECK(D <= (int64_t{1} << 30), "x: head_dim ", D, " is too large");
  // Positions must be valid; dynamic NTK needs the sequence length (max position + 1), as
  // transformers derives it from position_ids, unless the caller gives it.
  int64_t max_pos = -1;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t v = positions.dtype() == DType::kInt32 ? positions.data_as<const int32_t>()[t]
                                                         : positions.data_as<const int64_t>()[t];
    FA_CHECK(v >= 0, "positions: position ", v, " at index ", t, " is negative");
    FA_CHECK(seq_len == 0 || v < seq_len, "positions: position ", v, " at index ", t,
             " is not below seq_len ", seq_len);
    max_pos = std::max(max_pos, v);
  }
  const std::vector<float> inv =
      rope_inv_freq(p, static_cast<int>(D), seq_len > 0 ? seq_len : max_pos + 1);
  if (T == 0 || x.size(1) == 0) return;
  if (positions.dtype() == DType::kInt32)
    rope_typed(ctx, p, x, positions.data_as<const int32_t>(), inv);
  else
    rope_typed(ctx, p, x, positions.data_as<const int64_t>(), inv);
}

}  // namespace fastattn::kernels
