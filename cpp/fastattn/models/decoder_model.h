// DecoderModel: a config-driven decoder-only transformer (Llama / Qwen2 / Mistral, and GPT- or
// Pangu-style models through the config keys norm_type, activation, gated_ffn, biases and tied
// embeddings). Loads one tensor-parallel rank's weights, memory-mapped and zero-copy, and runs a
// varlen batch through embedding, decoder layers (writing the paged KV cache) and the LM head.
// The model holds no per-request state: activations live in a ModelScratch the caller owns.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fastattn/kvcache/kv_cache.h"
#include "fastattn/layers/decoder_layer.h"
#include "fastattn/layers/embedding.h"
#include "fastattn/layers/forward_batch.h"
#include "fastattn/layers/lm_head.h"
#include "fastattn/models/model_config.h"
#include "fastattn/models/weight_arena.h"
#include "fastattn/models/weight_store.h"

namespace fastattn::models {

// Activation buffers for forward passes; they grow to the largest batch seen and are reused.
struct ModelScratch {
  explicit ModelScratch(Allocator* a = host_allocator())
      : hidden(a, DType::kFloat32, {0}),
        head_rows(a, DType::kFloat32, {0}),
        vocab_shard(a, DType::kFloat32, {0}),
        position_rows(a, DType::kFloat32, {0}),
        layer(a) {}
  OwnedTensor hidden;         // [T, H]: the residual stream after forward()
  OwnedTensor head_rows;      // [R, H]: rows gathered for the LM head
  OwnedTensor vocab_shard;    // [R, Vr]: tensor-parallel LM head only
  OwnedTensor position_rows;  // [T, H]: learned position embeddings only
  layers::LayerScratch layer;
};

class DecoderModel {
 public:
  // Reads MODEL_DIR/config.json and maps MODEL_DIR/rank{rank}/*.fat. Throws FileError naming the
  // file for anything missing or malformed. On a GPU `device` the weights are copied to it
  // (OutOfMemory, before any copy, when they do not fit).
  // `load`: how the weight files are held on the CPU (models/weight_store.h).
  explicit DecoderModel(const std::string& model_dir, int rank = 0, Device device = {},
                        WeightLoad load = WeightLoad::kMmap);
  // In-memory weights: a parsed config (parse_model_config) and rank `rank`'s tensors in `store`
  // (WeightStore::from_memory; names and shapes as in the files). On the CPU the tensors are
  // used in place (zero-copy); on a GPU they are copied to it and the store lets go of them.
  // Throws FileError naming the tensor that is missing or of the wrong dtype or shape.
  DecoderModel(ModelConfig config, WeightStore store, int rank, Device device = {});

  const ModelConfig& config() const { return config_; }
  // The model directory (in memory: the store's label).
  const std::string& model_dir() const { return model_dir_; }
  size_t weight_bytes() const { return store_.mapped_bytes(); }
  Device device() const { return arena_.device(); }
  // Bytes of weights copied to the GPU (0 on the CPU, where they stay memory-mapped).
  size_t device_weight_bytes() const { return arena_.device_bytes(); }
  // dtype of the activations (and of the KV cache): float32 on the CPU, the weights' dtype on a GPU.
  DType activation_dtype() const;
  // Shape of the KV cache this model needs per rank (num_blocks and block_size left to the caller).
  kvcache::KvCacheConfig kv_cache_config(int64_t num_blocks, int block_size, DType dtype) const;

  // Runs the decoder layers over the batch: embeds batch.token_ids (plus, with learned positions,
  // the position table's rows at batch.positions; batch.max_total_len, when set, must not exceed
  // max_position_embeddings, else InvalidArgument), writes each layer's K/V into
  // the cache and leaves the final residual stream (before the final norm) in scratch.hidden.
  // host_cache: the host pool of a spilled (two-tier) KV cache, needed when the batch has
  // host-resident keys (ForwardBatch::has_host_kv).
  void forward(const Context& ctx, const layers::ForwardBatch& batch, kvcache::KvCache& cache,
               ModelScratch& scratch, kvcache::KvCache* host_cache = nullptr) const;

  // logits[R, vocab_size] for rows `rows` of scratch.hidden (rows are copied first, so the
  // hidden state is left intact).
  void logits_for_rows(const Context& ctx, ModelScratch& scratch, const std::vector<int64_t>& rows,
                       Tensor& logits) const;
  // logits[T, vocab_size] for every row of scratch.hidden (normalises scratch.hidden in place).
  void logits_all(const Context& ctx, ModelScratch& scratch, Tensor& logits) const;

 private:
  void load_weights();
  layers::NormWeights load_norm(const std::string& prefix);
  // A weight tensor where the model runs (a zero-copy file view on the CPU).
  Tensor load(const std::string& name, const std::vector<int64_t>& shape);

  std::string model_dir_;
  int rank_;
  ModelConfig config_;
  WeightStore store_;
  WeightArena arena_;
  std::unique_ptr<layers::Embedding> embedding_;
  std::vector<layers::DecoderLayer> layers_;
  std::unique_ptr<layers::LmHead> lm_head_;
};

}  // namespace fastattn::models
