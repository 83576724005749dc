// The softmax and mask values of one attention call as every backend (CPU, CUDA FlashAttention-2,
// CUDA decode) reads them, converted from FmhaParams in one place.
#pragma once

#include <cstdint>

#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/attention/softmax_params.h"

namespace fastattn::kernels {

struct FmhaSoftmax {
  float softmax_scale = 0.f;  // FmhaParams::softmax_scale, or 1 / sqrt(head dim) for 0
  float scale_log2 = 0.f;  // softmax_scale * log2(e): the kernels' scores live in the log2 domain
  int window_left = -1;    // -1 = unbounded
  int window_right = -1;   // -1 = unbounded; causal caps it at 0 (causal_window_right)
  const float* alibi_slopes = nullptr;  // null, or [Hq] / [B, Hq] float32
  int64_t alibi_batch_stride = 0;       // 0 for [Hq] (one slope per head for every sequence)
  int64_t alibi_head_stride = 0;
};

inline FmhaSoftmax fmha_softmax(const FmhaParams& p, int head_dim) {
  FmhaSoftmax s;
  s.softmax_scale = softmax_scale_or_default(p.softmax_scale, head_dim);
  s.scale_log2 = s.softmax_scale * kLog2e;
  s.window_left = p.window_left;
  s.window_right = causal_window_right(p.causal, p.window_right);
  if (p.alibi_slopes.defined()) {
    const Tensor& a = p.alibi_slopes;
    s.alibi_slopes = a.data_as<float>();
    s.alibi_batch_stride = a.dim() == 2 ? a.stride(0) : 0;
    s.alibi_head_stride = a.stride(a.dim() - 1);
  }
  return s;
}

}  // namespace fastattn::kernels
