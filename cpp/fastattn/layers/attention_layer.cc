#include "fastattn/layers/attention_layer.h"

#include <utility>

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"
#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/attention/merge.h"
#include "fastattn/kernels/gemm.h"
#include "fastattn/kernels/kv_cache_write.h"
#include "fastattn/layers/paged_gather.h"
#include "fastattn/layers/parallel.h"

namespace fastattn::layers {
namespace {

// Prefill chunks with more queries than this per sequence read the device part of a paged cache
// through contiguous staging and the tensor-core kernel; fewer (decode) use the split-KV kernel.
constexpr int kGatherMinQueries = 16;

}  // namespace
}  // namespace fastattn::layers

namespace fastattn::layers {

void AttentionLayer::forward(const Context& ctx, const ForwardBatch& batch, const Tensor& x,
                             const LayerKv& kv, AttentionScratch& scratch, Tensor& out) const {
  Tensor& k_cache = *kv.k;
  Tensor& v_cache = *kv.v;
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

  // RoPE on q and k fused with the KV-cache write (one kernel on a GPU), or the write alone
  // (learned positions). seq_len matters only for dynamic-NTK scaling, which a GPU cannot derive
  // from device-side positions.
  if (p_.rotary) {
    kernels::rope_kv_cache_write(ctx, p_.rope, q, k, v, batch.positions, k_cache, v_cache,
                                 batch.slot_mapping, batch.max_total_len);
  } else {
    kernels::kv_cache_write(ctx, k, v, k_cache, v_cache, batch.slot_mapping);
  }

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
  } else if (dev.type == DeviceType::kCUDA && act != DType::kFloat32 &&
             batch.max_seqlen_q > kGatherMinQueries && batch.block_table_host.defined()) {
    // A later prefill chunk on a GPU: the cached keys are gathered into contiguous staging
    // (device-to-device copies, a small fraction of the attention's time) for the prefill kernel.
    const int64_t total_k = batch.cu_seqlens_k_total();
    scratch.dense_k.resize(act, {total_k, hk, D});
    scratch.dense_v.resize(act, {total_k, hk, D});
    const int32_t* table = batch.block_table_host.data_as<const int32_t>();
    const int64_t stride = batch.block_table_host.stride(0);
    const int32_t* lens = batch.seqlens_k_host.data_as<const int32_t>();
    gather_paged(ctx, k_cache, table, stride, lens, batch.num_seqs, scratch.dense_k.view());
    gather_paged(ctx, v_cache, table, stride, lens, batch.num_seqs, scratch.dense_v.view());
    fp.k = scratch.dense_k.view();
    fp.v = scratch.dense_v.view();
    fp.cu_seqlens_k = batch.cu_seqlens_k;
  } else {
    fp.k = k_cache;
    fp.v = v_cache;
    fp.block_table = batch.block_table;
    fp.seqlens_k = batch.seqlens_k;
    fp.num_splits = batch.decode_num_splits;
  }
  fp.causal = true;  // bottom-right aligned: new tokens see the cached prefix and themselves
  fp.window_left = p_.window_left;
  fp.max_seqlen_q = batch.max_seqlen_q;
  fp.max_seqlen_k = batch.no_cached_prefix ? batch.max_seqlen_q : batch.max_seqlen_k;
  if (batch.has_host_kv() && batch.spill_path == ForwardBatch::SpillPath::kStream) {
    scratch.lse.resize(DType::kFloat32, {hq, T});
    fp.lse = scratch.lse.view();
    kernels::fmha_forward(ctx, fp);
    stream_host_part(ctx, batch, q, kv, scratch, fp.out);
  } else if (batch.has_host_kv()) {
    // On a GPU, q's copy to the host is queued first, so the CPU can start on the host part
    // while the GPU computes the device part (recent keys only; its lse lets the parts merge).
    StreamEvent q_on_host;
    stage_query_on_host(ctx, q, scratch, q_on_host);
    scratch.lse.resize(DType::kFloat32, {hq, T});
    fp.lse = scratch.lse.view();
    kernels::fmha_forward(ctx, fp);
    attend_host_part(ctx, batch, q, kv, scratch, q_on_host, fp.out);
  } else {
    kernels::fmha_forward(ctx, fp);
  }

  const Tensor attn2d = scratch.attn.view().reshape({T, hq * D});
  row_parallel_linear(ctx, attn2d, w_.o_weight, w_.o_bias, out);
}

void AttentionLayer::stage_query_on_host(const Context& ctx, const Tensor& q,
                                         AttentionScratch& scratch, StreamEvent& done) const {
  if (ctx.device.type != DeviceType::kCUDA) return;
  const int64_t T = q.size(0), hq = q.size(1), D = q.size(2);
  scratch.host_q.resize(q.dtype(), {T, hq, D});
  const Tensor q2d(q.data(), q.dtype(), {T, hq * D}, {q.stride(0), 1}, q.device());
  Tensor host2d = scratch.host_q.view().reshape({T, hq * D});
  copy_matrix(ctx, q2d, host2d);
  done.record(ctx);
}

void AttentionLayer::stream_host_part(const Context& ctx, const ForwardBatch& batch,
                                      const Tensor& q, const LayerKv& kv, AttentionScratch& scratch,
                                      const Tensor& out) const {
  const Tensor& hk_pool = *kv.host_k;
  const Tensor& hv_pool = *kv.host_v;
  const int64_t T = q.size(0), hq = q.size(1), D = q.size(2);
  const int64_t hk = hk_pool.size(2);
  const int B = batch.num_seqs;
  const int32_t* cu_k = batch.host_cu_seqlens_k.data_as<const int32_t>();
  const int32_t* table = batch.host_block_table.data_as<const int32_t>();
  const int64_t width = batch.host_block_table.size(1);
  const int64_t total = cu_k[B];
  const DType dt = hk_pool.dtype();
  scratch.stage_k.resize(dt, {total, hk, D});
  scratch.stage_v.resize(dt, {total, hk, D});
  // This layer's host blocks, sequence after sequence, into contiguous [total, hk, D] staging.
  const int32_t* host_lens = batch.host_seqlens_k.data_as<const int32_t>();
  gather_paged(ctx, hk_pool, table, width, host_lens, B, scratch.stage_k.view());
  gather_paged(ctx, hv_pool, table, width, host_lens, B, scratch.stage_v.view());
  kernels::FmhaParams sp;
  sp.q = q;
  sp.k = scratch.stage_k.view();
  sp.v = scratch.stage_v.view();
  scratch.part.resize(q.dtype(), {T, hq, D});
  scratch.part_lse.resize(DType::kFloat32, {hq, T});
  sp.out = scratch.part.view();
  sp.lse = scratch.part_lse.view();
  sp.cu_seqlens_q = batch.cu_seqlens_q;
  sp.cu_seqlens_k =
      ctx.device.type == DeviceType::kCUDA ? batch.host_cu_seqlens_k_dev : batch.host_cu_seqlens_k;
  sp.causal = false;  // every host key precedes every query
  sp.max_seqlen_q = batch.max_seqlen_q;
  sp.max_seqlen_k = batch.max_host_seqlen_k;
  kernels::fmha_forward(ctx, sp);
  Tensor merged = out;
  kernels::merge_attention(ctx, out, scratch.lse.view(), scratch.part.view(),
                           scratch.part_lse.view(), merged);
}

void AttentionLayer::attend_host_part(const Context& ctx, const ForwardBatch& batch,
                                      const Tensor& q, const LayerKv& kv, AttentionScratch& scratch,
                                      StreamEvent& q_on_host, const Tensor& out) const {
  FA_CHECK(kv.host_k != nullptr && kv.host_v != nullptr,
           "attention: the batch has host-resident KV but the layer has no host cache");
  FA_CHECK(p_.window_left < 0,
           "attention: a sliding-window model cannot spill KV to the host (its old keys are "
           "never attended); size the KV cache to the window instead");
  const int64_t T = q.size(0), hq = q.size(1), D = q.size(2);
  const bool on_gpu = ctx.device.type == DeviceType::kCUDA;
  const Context cpu = cpu_context(ctx.num_threads);

  // Host part: every host key precedes every query, so no causal mask. It runs on the CPU.
  kernels::FmhaParams hp;
  hp.k = *kv.host_k;
  hp.v = *kv.host_v;
  hp.cu_seqlens_q = batch.host_cu_seqlens_q;
  hp.block_table = batch.host_block_table;
  hp.seqlens_k = batch.host_seqlens_k;
  hp.causal = false;
  hp.max_seqlen_q = batch.max_seqlen_q;
  scratch.part.resize(DType::kFloat32, {T, hq, D});
  scratch.part_lse.resize(DType::kFloat32, {hq, T});
  if (on_gpu) {
    scratch.host_part.resize(DType::kFloat32, {T, hq, D});
    scratch.host_lse.resize(DType::kFloat32, {hq, T});
    hp.q = scratch.host_q.view();
    hp.out = scratch.host_part.view();
    hp.lse = scratch.host_lse.view();
    q_on_host.wait();  // only q's copy: the device part may still be running
    kernels::fmha_forward(cpu, hp);
    // Only the partial output and its lse cross the bus. The next layer's q_on_host.wait()
    // comes after these uploads in stream order, so the CPU never overwrites them early.
    copy_tensor(ctx, scratch.host_part.view(), scratch.part.view());
    copy_tensor(ctx, scratch.host_lse.view(), scratch.part_lse.view());
  } else {
    hp.q = q;
    hp.out = scratch.part.view();
    hp.lse = scratch.part_lse.view();
    kernels::fmha_forward(cpu, hp);
  }
  Tensor merged = out;
  kernels::merge_attention(ctx, out, scratch.lse.view(), scratch.part.view(),
                           scratch.part_lse.view(), merged);
}

}  // namespace fastattn::layers
