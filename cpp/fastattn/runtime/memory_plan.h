// MemoryPlan: how a GPU session divides device memory, computed at load before any KV memory is
// allocated: weights (already on the device), activations for the largest forward pass (a
// prefill chunk), and what is left for the paged KV cache, in whole blocks. Printed at load
// (verbose) and put into the OutOfMemory message when the options cannot be met.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fastattn/core/dtype.h"
#include "fastattn/models/model_config.h"

namespace fastattn::runtime {

struct MemoryPlanInput {
  size_t device_total = 0;  // bytes of device memory
  size_t device_free = 0;   // free after the weights were uploaded
  size_t weight_bytes = 0;
  double memory_fraction = 0.9;  // of device_total this process may use in all
  DType activation_dtype = DType::kFloat16;
  int64_t prefill_chunk_tokens = 0;
  int max_batch = 1;
  int64_t max_seq_len = 0;
  int kv_block_size = 16;
  DType kv_dtype = DType::kFloat16;
  int64_t requested_cache_tokens = 0;  // 0 = as many as the budget allows
  // Batch sizes of the decode step's CUDA graphs (runtime/decode_graphs.h); empty = no graphs.
  std::vector<int> decode_graph_buckets;
};

struct MemoryPlan {
  size_t weights = 0;
  size_t activations = 0;    // reserved for scratch: activations, logits, kernel workspaces
  size_t decode_graphs = 0;  // the decode graphs' own scratch (one pool per batch bucket)
  size_t kv_bytes_per_token = 0;
  int64_t kv_blocks = 0;
  int64_t kv_tokens = 0;
  size_t kv_bytes = 0;
  size_t budget = 0;           // memory_fraction * device_total
  size_t device_total = 0;     // 0 for a CPU session
  int64_t host_kv_tokens = 0;  // the host pool of a spilled KV cache
  size_t host_kv_bytes = 0;
  std::string describe() const;  // one line: weights, activations, KV, tokens, budget
};

// Throws OutOfMemory (with the plan in the message) when the weights and activations leave no
// room for max_batch sequences of at least one block, or when requested_cache_tokens do not fit.
MemoryPlan plan_gpu_memory(const models::ModelConfig& c, const MemoryPlanInput& in);

// Bytes of activation scratch a forward pass over `tokens` tokens needs (largest buffers live
// at once, in the activation dtype), plus the float32 logits of `logit_rows` rows.
size_t activation_bytes(const models::ModelConfig& c, DType act, int64_t tokens,
                        int64_t logit_rows);

// Scratch the decode graphs hold: per bucket of b rows, the activations of a b-token pass, b
// float32 logit rows and an allowance for the split-KV partials (bounded by the waves of CTAs the
// split heuristic fills, not by b).
size_t decode_graph_bytes(const models::ModelConfig& c, DType act, const std::vector<int>& buckets);

}  // namespace fastattn::runtime
