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

using cpu::TokenHook;

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

// cos / sin of float32(position) * inv_freq for every token of a call, [T][2 * half] (cos then
// sin). Each value is a double cos / sin, which dominates the cost of RoPE, and every layer of a
// forward rotates the same positions with the same frequencies: the calling thread keeps the
// last table and reuses it when both match exactly (tables up to kMaxCachedTableFloats).
constexpr size_t kMaxCachedTableFloats = size_t{1} << 20;  // 4 MiB

struct RopeTable {
  std::vector<float> inv;
  std::vector<int64_t> positions;
  std::vector<float> cs;
};

template <typename P>
const float* rope_table(const Context& ctx, const std::vector<float>& inv, const P* pos, int64_t T,
                        RopeTable& own) {
  thread_local RopeTable cached;
  const int64_t half = static_cast<int64_t>(inv.size());
  const size_t floats = static_cast<size_t>(T) * static_cast<size_t>(2 * half);
  RopeTable& t = floats <= kMaxCachedTableFloats ? cached : own;
  bool same = t.inv == inv && t.positions.size() == static_cast<size_t>(T) && t.cs.size() == floats;
  for (int64_t i = 0; same && i < T; ++i) same = t.positions[i] == static_cast<int64_t>(pos[i]);
  if (same) return t.cs.data();
  t.inv = inv;
  t.positions.assign(pos, pos + T);
  t.cs.resize(floats);
  float* cs = t.cs.data();
#pragma omp parallel for num_threads(cpu::threads_for(ctx, T * half * 16)) schedule(static)
  for (int64_t tok = 0; tok < T; ++tok) {
    const float position = static_cast<float>(pos[tok]);  // position_ids.float()
    float* c = cs + tok * 2 * half;
    for (int64_t i = 0; i < half; ++i) {
      const float angle = position * inv[i];
      c[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      c[half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return cs;
}

// Rotates the H heads of one token's row (head stride sh) by the token's cos / sin.
inline void rotate_token(float* row, int64_t H, int64_t sh, const float* c, int64_t half,
                         bool neox) {
  const float* s = c + half;
  for (int64_t h = 0; h < H; ++h) {
    float* v = row + h * sh;
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

// Checks x [T, H, D] (float32, head dim contiguous) and positions [T] (int32 / int64, >= 0 and
// below seq_len when given); returns the inverse frequencies (dynamic NTK needs the sequence
// length: max position + 1, as transformers derives it from position_ids, unless given).
std::vector<float> checked_inv_freq(const RopeParams& p, const Tensor& x, const Tensor& positions,
                                    int64_t seq_len) {
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
  int64_t max_pos = -1;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t v = positions.dtype() == DType::kInt32 ? positions.data_as<const int32_t>()[t]
                                                         : positions.data_as<const int64_t>()[t];
    FA_CHECK(v >= 0, "positions: position ", v, " at index ", t, " is negative");
    FA_CHECK(seq_len == 0 || v < seq_len, "positions: position ", v, " at index ", t,
             " is not below seq_len ", seq_len);
    max_pos = std::max(max_pos, v);
  }
  return rope_inv_freq(p, static_cast<int>(D), seq_len > 0 ? seq_len : max_pos + 1);
}

template <typename P>
void rope_rows(const Context& ctx, const RopeParams& p, const std::vector<float>& inv, const P* pos,
               Tensor& x, Tensor* y, const TokenHook& after) {
  const int64_t T = x.size(0);
  const int64_t half = static_cast<int64_t>(inv.size());
  RopeTable own;
  const float* cs = rope_table(ctx, inv, pos, T, own);
  const bool neox = p.style == RopeStyle::kNeox;
  float* xb = x.data_as<float>();
  float* yb = y != nullptr ? y->data_as<float>() : nullptr;
  const int64_t work = T * (x.size(1) + (y != nullptr ? y->size(1) : 0)) * x.size(2);
#pragma omp parallel for num_threads(cpu::threads_for(ctx, work)) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cs + t * 2 * half;
    rotate_token(xb + t * x.stride(0), x.size(1), x.stride(1), c, half, neox);
    if (yb != nullptr) rotate_token(yb + t * y->stride(0), y->size(1), y->stride(1), c, half, neox);
    if (after) after(t);
  }
}

void rope_dispatch(const Context& ctx, const RopeParams& p, const std::vector<float>& inv,
                   const Tensor& positions, Tensor& x, Tensor* y, const TokenHook& after) {
  if (x.size(0) == 0) return;
  if (positions.dtype() == DType::kInt32)
    rope_rows(ctx, p, inv, positions.data_as<const int32_t>(), x, y, after);
  else
    rope_rows(ctx, p, inv, positions.data_as<const int64_t>(), x, y, after);
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
  const std::vector<float> inv = checked_inv_freq(p, x, positions, seq_len);
  if (x.size(1) == 0) return;
  rope_dispatch(ctx, p, inv, positions, x, nullptr, TokenHook());
}

void cpu::apply_rope_qk_cpu(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                            const Tensor& positions, int64_t seq_len, const TokenHook& after) {
  const std::vector<float> inv = checked_inv_freq(p, q, positions, seq_len);
  checked_inv_freq(p, k, positions, seq_len);
  FA_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2), "q ", q.describe(), " and k ",
           k.describe(), " must have the same number of tokens and head dim");
  rope_dispatch(ctx, p, inv, positions, q, &k, after);
}

}  // namespace fastattn::kernels
