// What every attention backend derives the same way from FmhaParams (kernels/attention/fmha.h):
// the softmax scale's default, the log2-domain scale, and the key window a causal mask leaves.
// Plain values only, so CUDA code includes it too.
#pragma once

#include <algorithm>
#include <cmath>

namespace fastattn::kernels {

// log2(e): the kernels compute softmax with exp2 on scores pre-scaled by it.
constexpr float kLog2e = 1.4426950408889634f;

// softmax_scale, or 1 / sqrt(head_dim) when it is 0 (the default).
inline float softmax_scale_or_default(float softmax_scale, int head_dim) {
  return softmax_scale > 0.f ? softmax_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

// The right edge of the key window: a causal mask (bottom-right aligned) allows no key right of
// the diagonal, so it caps window_right at 0 (-1 = unbounded becomes 0).
inline int causal_window_right(bool causal, int window_right) {
  return causal ? (window_right < 0 ? 0 : std::min(window_right, 0)) : window_right;
}

}  // namespace fastattn::kernels
