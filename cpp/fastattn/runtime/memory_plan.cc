#include "fastattn/runtime/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "fastattn/core/error.h"
#include "fastattn/kvcache/kv_cache.h"

namespace fastattn::runtime {
namespace {

std::string gib(size_t b) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

// cuBLAS workspaces, split-KV partial outputs, the allocator's rounding: a fixed allowance.
constexpr size_t kWorkspaceBytes = size_t{256} << 20;

}  // namespace

size_t activation_bytes(const models::ModelConfig& c, DType act, int64_t tokens,
                        int64_t logit_rows) {
  const int64_t H = c.hidden_size;
  const int64_t D = c.head_dim;
  const int64_t qkv = (c.local_heads() + 2 * c.local_kv_heads()) * D;
  const int64_t attn = c.local_heads() * D;
  const int64_t I = c.local_intermediate();
  // hidden, normed, branch_out + qkv + attention output + gate_up (2I) + act (I).
  const int64_t per_token = 3 * H + qkv + attn + 3 * I;
  const size_t esize = dtype_size(act);
  const size_t logits = static_cast<size_t>(logit_rows) * static_cast<size_t>(c.vocab_size) * 4 * 2;
  return static_cast<size_t>(tokens * per_token) * esize + logits + kWorkspaceBytes;
}

size_t decode_graph_bytes(const models::ModelConfig& c, DType act,
                          const std::vector<int>& buckets) {
  constexpr size_t kPartialsBytes = size_t{16} << 20;
  size_t total = 0;
  for (int b : buckets) {
    total += activation_bytes(c, act, b, b) - kWorkspaceBytes + kPartialsBytes;
  }
  return total;
}

std::string MemoryPlan::describe() const {
  std::string s = "weights " + gib(weights) + ", activations " + gib(activations);
  if (decode_graphs > 0) s += ", decode graphs " + gib(decode_graphs);
  s += ", KV cache " + gib(kv_bytes) + " (" + std::to_string(kv_tokens) + " tokens in " +
       std::to_string(kv_blocks) + " blocks)";
  if (host_kv_tokens > 0) {
    s += ", host KV " + gib(host_kv_bytes) + " (" + std::to_string(host_kv_tokens) + " tokens)";
  }
  s += ", longest context " + std::to_string(kv_tokens + host_kv_tokens) + " tokens";
  if (device_total > 0) s += ", budget " + gib(budget) + " of " + gib(device_total);
  return s;
}

MemoryPlan plan_gpu_memory(const models::ModelConfig& c, const MemoryPlanInput& in) {
  FA_CHECK(in.memory_fraction > 0.0 && in.memory_fraction <= 1.0,
           "gpu_memory_fraction: must be in (0, 1], got ", in.memory_fraction);
  MemoryPlan p;
  p.device_total = in.device_total;
  p.weights = in.weight_bytes;
  p.budget = static_cast<size_t>(in.memory_fraction * static_cast<double>(in.device_total));
  const int64_t chunk = std::max<int64_t>(in.prefill_chunk_tokens, in.max_batch);
  p.activations = activation_bytes(c, in.activation_dtype, chunk, in.max_batch);
  p.decode_graphs = decode_graph_bytes(c, in.activation_dtype, in.decode_graph_buckets);

  kvcache::KvCacheConfig kc;
  kc.num_layers = c.num_layers;
  kc.num_kv_heads = c.local_kv_heads();
  kc.head_dim = c.head_dim;
  kc.dtype = in.kv_dtype;
  p.kv_bytes_per_token = kvcache::KvCache::bytes_per_token(kc);
  const size_t block_bytes = p.kv_bytes_per_token * static_cast<size_t>(in.kv_block_size);

  // What the process may still take: the budget minus what it holds, and never more than is free.
  const size_t used = in.device_total - std::min(in.device_total, in.device_free);
  const size_t allowed = p.budget > used ? std::min(p.budget - used, in.device_free) : 0;
  const size_t scratch = p.activations + p.decode_graphs;
  const size_t for_kv = allowed > scratch ? allowed - scratch : 0;
  const int64_t fit_blocks = static_cast<int64_t>(for_kv / block_bytes);

  if (in.requested_cache_tokens > 0) {
    p.kv_blocks = (in.requested_cache_tokens + in.kv_block_size - 1) / in.kv_block_size;
    p.kv_tokens = p.kv_blocks * in.kv_block_size;
    p.kv_bytes = static_cast<size_t>(p.kv_blocks) * block_bytes;
    if (p.kv_blocks > fit_blocks) {
      FA_THROW_AS(OutOfMemory, "max_cache_tokens = ", in.requested_cache_tokens, " needs ",
                  gib(p.kv_bytes), " of KV cache, but only ", gib(for_kv),
                  " is left for it: ", p.describe(),
                  ". Lower max_cache_tokens, prefill_chunk_tokens or max_batch, or raise "
                  "gpu_memory_fraction");
    }
    return p;
  }
  // As many tokens as fit, but no more than max_batch full-length sequences can use.
  const int64_t per_seq_blocks = (in.max_seq_len + in.kv_block_size - 1) / in.kv_block_size;
  p.kv_blocks = std::min<int64_t>(fit_blocks, per_seq_blocks * in.max_batch);
  p.kv_tokens = p.kv_blocks * in.kv_block_size;
  p.kv_bytes = static_cast<size_t>(p.kv_blocks) * block_bytes;
  if (p.kv_blocks < in.max_batch) {
    FA_THROW_AS(OutOfMemory, "the GPU has no room for a KV cache of even one block per sequence (",
                in.max_batch, " x ", in.kv_block_size, " tokens): ", p.describe(), ", ",
                gib(in.device_free),
                " free after the weights. Lower prefill_chunk_tokens or "
                "max_batch, raise gpu_memory_fraction, or use a GPU with more memory");
  }
  return p;
}

}  // namespace fastattn::runtime
