// DecodeGraphs: a GPU session's decode step (embedding, every layer, the final norm and LM head,
// the sampler) captured as CUDA graphs and replayed, so a step costs one graph launch instead of
// ~10 kernel launches per layer.
//
// One graph per (batch bucket, decode split count). A step of B sequences runs in the smallest
// bucket >= B (decode_graph_buckets), padded with rows that write no KV (slot -1) and attend to
// no key; the split-KV kernel's split count is fixed per graph, so steps whose context length
// gives another count (a few powers of two as the context grows) use another graph. A pair's
// first step runs the same work eagerly (it initialises what the kernels create lazily: kernel
// attributes, cuBLAS workspaces, the split kernel's counters); its second is captured, then
// replayed from then on.
//
// Graph-safe by construction: every per-step input (token ids, positions, KV slots, block
// tables, key lengths, the sampler's rows with this step's random draws) is uploaded into fixed
// device buffers before the launch; each bucket draws its activations and the kernels'
// workspaces from a pool of its own (core/pool_allocator.h) that lives as long as its graphs; the
// split kernel's arrival counters are zeroed inside the graph. Not captured (the session runs
// those steps eagerly): batches with host-resident KV (spilled), tensor-parallel sessions (NCCL
// capture is not yet tested here), dynamic-NTK RoPE (its frequencies change with the length).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/sample_row.h"
#include "fastattn/layers/forward_batch.h"
#include "fastattn/models/model_config.h"

namespace fastattn::runtime {

// Batch sizes a decode graph is captured for, up to max_batch: 1, 2, 4, 8, then multiples of 8,
// and max_batch itself.
inline std::vector<int> decode_graph_buckets(int max_batch) {
  std::vector<int> b;
  for (int n = 1; n < std::min(max_batch, 8); n *= 2) b.push_back(n);
  for (int n = 8; n < max_batch; n += 8) b.push_back(n);
  b.push_back(max_batch);
  return b;
}

// Whether a model's decode step can be captured at all (see above); `why` says why not.
bool decode_graphs_supported(const models::ModelConfig& c, int world_size, const char** why);

}  // namespace fastattn::runtime

#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/core/pool_allocator.h"
#include "fastattn/kvcache/kv_cache.h"
#include "fastattn/models/decoder_model.h"
#include "fastattn/runtime/gpu_runtime.h"

namespace fastattn::runtime {

struct DecodeGraphStats {
  int64_t replays = 0;   // steps run by launching a captured graph
  int64_t captures = 0;  // graphs captured
  int64_t eager = 0;     // first steps of a (bucket, splits) pair, run eagerly
};

class DecodeGraphs {
 public:
  // ctx: the session's GPU context (stream, allocator); max_blocks_per_seq: the widest block
  // table a sequence can have. Allocates the fixed input buffers; graphs come lazily.
  DecodeGraphs(const Context& ctx, const models::DecoderModel& model, kvcache::KvCache& cache,
               int max_batch, int64_t max_blocks_per_seq);
  ~DecodeGraphs();  // waits for the stream, then frees graphs and pools
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  // Whether this host batch is a step these graphs run: one token per sequence, at most
  // max_batch sequences, no host-resident KV.
  bool accepts(const layers::ForwardBatch& host) const;
  // One decode step over the host batch (BatchBuilder::build) with the sampler's rows (one per
  // sequence, kernels::prepare_sample_row): writes the sampled tokens to tokens[0..B) after
  // waiting for the stream. Throws what the kernels throw; the graphs stay usable after.
  void step(const layers::ForwardBatch& host, const std::vector<kernels::SampleRow>& rows,
            int32_t* tokens);
  // float32 [B, vocab] logits of the last step, on the device (valid until the next step).
  Tensor last_logits() const;
  const DecodeGraphStats& stats() const { return stats_; }

 private:
  struct Bucket;
  Bucket& bucket_for(int batch);
  // The device view of the uploaded inputs for a bucket of `size` rows.
  layers::ForwardBatch device_batch(const layers::ForwardBatch& host, int size, int splits) const;
  void upload(const layers::ForwardBatch& host, const std::vector<kernels::SampleRow>& rows,
              int size);
  // The step's work on the stream: forward, LM head, sampler (captured or not).
  void enqueue(Bucket& b, const layers::ForwardBatch& batch);

  Context ctx_;
  const models::DecoderModel& model_;
  kvcache::KvCache& cache_;
  int max_batch_;
  int64_t width_;  // block-table row pitch (max_blocks_per_seq)
  // int32 offsets of each input in the device buffer and its pinned mirror.
  int64_t off_ids_, off_pos_, off_slot_, off_cu_q_, off_seqlens_, off_cu_k_, off_rows_, off_table_;
  OwnedTensor inputs_;   // device
  OwnedTensor staging_;  // pinned host
  std::vector<std::unique_ptr<Bucket>> buckets_;
  Bucket* last_ = nullptr;
  int last_batch_ = 0;
  DecodeGraphStats stats_;
};

}  // namespace fastattn::runtime
#endif
