// Rotary position embedding, applied in place to Q or K of shape [T, heads, head_dim]
// (strided views into a fused QKV buffer are fine: last dim contiguous). Runs on the CPU or on
// CUDA, chosen by the tensors' device. rope_kv_cache_write (kv_cache_write.h) fuses it with the KV-cache
// write.
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// kNeox: rotate the two halves of the rotary dims (x[i], x[i + d/2]) — Llama / Hugging Face style.
// kInterleaved: rotate adjacent pairs (x[2i], x[2i+1]) — GPT-J / Meta original style.
enum class RopeStyle { kNeox, kInterleaved };

// kNone: theta^(-2i/d). kLinear: positions divided by factor. kLlama3: Llama 3.1 frequency-band
// scaling (factor, low_freq_factor, high_freq_factor, original_max_position).
// kDynamicNTK: base scaled by the sequence length when it exceeds original_max_position.
enum class RopeScaling { kNone, kLinear, kLlama3, kDynamicNTK };

struct RopeParams {
  RopeStyle style = RopeStyle::kNeox;
  float theta = 10000.0f;
  int rotary_dim = 0;  // 0 = whole head_dim; else the first rotary_dim dims are rotated
  RopeScaling scaling = RopeScaling::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position = 0;
};

// Inverse frequencies (rotary_dim / 2 of them) for the params; seq_len matters for kDynamicNTK only.
// Computed with transformers' float32 arithmetic (modeling_rope_utils.py), so angles match its own
// to the last bit but for rare 1-ulp differences of its SLEEF pow.
std::vector<float> rope_inv_freq(const RopeParams& p, int head_dim, int64_t seq_len = 0);

// x: [T, H, D] (in place; strided views allowed, last dim contiguous); positions: int32 or int64
// [T], contiguous, each >= 0. On the CPU x is float32; on CUDA (x and positions on one GPU) x may
// be float32, float16 or bfloat16 (rotated in float32, rounded once), the work runs on ctx.stream
// without synchronising the host, and position values are not checked (the caller's duty).
// On the GPU the inverse frequencies are rope_inv_freq's, computed on the host and passed with
// the launch, and cos / sin of the float32 angle are taken in double: the same angles as the CPU.
// seq_len matters for kDynamicNTK only: the sequence length whose frequencies apply. 0 (default)
// means max(positions) + 1 over the call, as transformers takes it for one forward (apply it per
// sequence when a batch mixes sequences); the CPU reads it from positions, but on CUDA the host
// cannot read positions without a sync, so kDynamicNTK on a GPU needs seq_len > 0 (given by the
// caller, who knows the batch's lengths) and throws InvalidArgument otherwise. When given, the
// CPU checks every position is < seq_len.
void apply_rope(const Context& ctx, const RopeParams& p, Tensor& x, const Tensor& positions,
                int64_t seq_len = 0);

}  // namespace fastattn::kernels
