#include "fastattn/layers/attention_layer.h"

#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/gemm.h"
#include "fastattn/kernels/kv_copy.h"
#include "fastattn/layers/parallel.h"

namespace fastattn::layers {

void AttentionLayer::forward(const Context& ctx, const ForwardBatch& batch, const Tensor& x,
                             Tensor& k_cache, Tensor& v_cache, AttentionScratch& scratch,
                             Tensor& out) const {
  const int64_t T = batch.num_tokens;
  const int64_t D = p_.head_dim;
  const int64_t hq = p_.num_heads;
  const int64_t hk = p_.num_kv_heads;
  const int64_t qkv_cols = (hq + 2 * hk) * D;

  const DType act = x.dtype();  // float32 on the CPU, the model's dtype on a GPU
  scratch.qkv.resize(act, {T, qkv_cols});
  kernels::linear(ctx, x, w_.qkv_weight, w_.qkv_bias, scratch.qkv.view());

  // Q, K and V as strided [T, heads, D] views into the fused projection output.
  char* base = static_cast<char*>(scratch.qkv.view().data());
  const size_t esize = dtype_size(act);
  const Device dev = scratch.qkv.view().device();
  Tensor q(base, act, {T, hq, D}, {qkv_cols, D, 1}, dev);
  Tensor k(base + hq * D * esize, act, {T, hk, D}, {qkv_cols, D, 1}, dev);
  Tensor v(base + (hq + hk) * D * esize, act, {T, hk, D}, {qkv_cols, D, 1}, dev);

  kernels::apply_rope(ctx, p_.rope, q, batch.positions);
  kernels::apply_rope(ctx, p_.rope, k, batch.positions);
  kernels::kv_cache_write(ctx, k, v, k_cache, v_cache, batch.slot_mapping);

  scratch.attn.resize(act, {T, hq, D});
  kernels::FmhaParams fp;
  fp.q = q;
  fp.out = scratch.attn.view();
  fp.cu_seqlens_q = batch.cu_seqlens_q;
  if (batch.no_cached_prefix && dev.type == DeviceType::kCUDA && act != DType::kFloat32) {
    // First prefill chunk on a GPU: the keys are exactly this batch's, so the tensor-core
    // prefill kernel reads them from the projection output instead of the paged cache.
    fp.k = k;
    fp.v = v;
    fp.cu_seqlens_k = batch.cu_seqlens_q;
  } else {
    fp.k = k_cache;
    fp.v = v_cache;
    fp.block_table = batch.block_table;
    fp.seqlens_k = batch.seqlens_k;
  }
  fp.causal = true;  // bottom-right aligned: new tokens see the cached prefix and themselves
  fp.window_left = p_.window_left;
  fp.max_seqlen_q = batch.max_seqlen_q;
  kernels::fmha_forward(ctx, fp);

  const Tensor attn2d = scratch.attn.view().reshape({T, hq * D});
  row_parallel_linear(ctx, attn2d, w_.o_weight, w_.o_bias, out);
}

}  // namespace fastattn::layers
