#include "fastattn/models/decoder_model.h"

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"
#include "fastattn/core/logging.h"

namespace fastattn::models {
namespace {

std::string rank_dir(const std::string& model_dir, int rank, const ModelConfig& c) {
  FA_CHECK(rank >= 0 && rank < c.tp_size, "rank ", rank, " out of range for tp_size ", c.tp_size,
           " in ", c.file);
  return model_dir + "/rank" + std::to_string(rank);
}

}  // namespace

DecoderModel::DecoderModel(const std::string& model_dir, int rank, Device device, WeightLoad load)
    : model_dir_(model_dir),
      rank_(rank),
      config_(load_model_config(model_dir)),
      store_(rank_dir(model_dir, rank, config_), load),
      arena_(device, store_.dir()) {
  load_weights();
  arena_.finish();
}

DecoderModel::DecoderModel(ModelConfig config, WeightStore store, int rank, Device device)
    : model_dir_(store.dir()),
      rank_(rank),
      config_(std::move(config)),
      store_(std::move(store)),
      arena_(device, store_.memory_bytes(), store_.memory_tensors(), store_.dir()) {
  FA_CHECK(store_.in_memory(), "DecoderModel: this constructor takes in-memory weights ",
           "(WeightStore::from_memory); got the directory ", store_.dir());
  FA_CHECK(rank >= 0 && rank < config_.tp_size, "rank ", rank, " out of range for tp_size ",
           config_.tp_size, " in ", config_.file);
  load_weights();
  arena_.finish();
  if (arena_.device().type != DeviceType::kCPU) store_.release_memory();
}

DType DecoderModel::activation_dtype() const {
  return device().type == DeviceType::kCPU ? DType::kFloat32 : config_.dtype;
}

Tensor DecoderModel::load(const std::string& name, const std::vector<int64_t>& shape) {
  return arena_.place(store_.load(name, config_.dtype, shape));
}

layers::NormWeights DecoderModel::load_norm(const std::string& prefix) {
  const int64_t H = config_.hidden_size;
  layers::NormWeights n;
  n.weight = load(prefix + ".weight", {H});
  if (config_.has_norm_bias()) n.bias = load(prefix + ".bias", {H});
  return n;
}

void DecoderModel::load_weights() {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size;
  const int64_t D = c.head_dim;
  const int64_t hq = c.local_heads();
  const int64_t I = c.local_intermediate();
  const int64_t Vr = c.local_vocab();

  layers::EmbeddingWeights ew;
  ew.table = load("embed.weight", {Vr, H});
  ew.vocab_start = rank_ * Vr;
  ew.vocab_parallel = c.tp_size > 1;
  if (c.learned_positions()) {
    ew.position_table = load("pos_embed.weight", {c.max_position_embeddings, H});
  }
  embedding_ = std::make_unique<layers::Embedding>(ew);

  layers::DecoderLayerParams lp;
  lp.norm = kernels::NormParams{c.norm_type, c.norm_eps};
  lp.attention.num_heads = c.local_heads();
  lp.attention.num_kv_heads = c.local_kv_heads();
  lp.attention.head_dim = c.head_dim;
  lp.attention.rotary = !c.learned_positions();
  lp.attention.rope = c.rope;
  lp.attention.window_left = c.window_left();
  lp.ffn.intermediate = I;
  lp.ffn.gated = c.gated_ffn;
  lp.ffn.activation = c.activation;

  layers_.reserve(static_cast<size_t>(c.num_layers));
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    layers::DecoderLayerWeights w;
    w.attn_norm = load_norm(p + "attn_norm");
    w.attention.qkv_weight = load(p + "attn.qkv.weight", {c.qkv_rows(), H});
    if (c.qkv_bias) w.attention.qkv_bias = load(p + "attn.qkv.bias", {c.qkv_rows()});
    w.attention.o_weight = load(p + "attn.o.weight", {H, hq * D});
    if (c.o_bias) w.attention.o_bias = load(p + "attn.o.bias", {H});
    w.ffn_norm = load_norm(p + "ffn_norm");
    const std::string up = c.gated_ffn ? "ffn.gate_up" : "ffn.up";
    const int64_t up_rows = c.gated_ffn ? 2 * I : I;
    w.ffn.up_weight = load(p + up + ".weight", {up_rows, H});
    if (c.mlp_bias) w.ffn.up_bias = load(p + up + ".bias", {up_rows});
    w.ffn.down_weight = load(p + "ffn.down.weight", {H, I});
    if (c.mlp_bias) w.ffn.down_bias = load(p + "ffn.down.bias", {H});
    layers_.emplace_back(lp, w);
  }

  layers::LmHeadParams hp;
  hp.norm = lp.norm;
  hp.vocab_size = c.vocab_size;
  layers::LmHeadWeights hw;
  hw.final_norm = load_norm("final_norm");
  hw.weight = c.tie_word_embeddings ? ew.table : load("lm_head.weight", {Vr, H});
  lm_head_ = std::make_unique<layers::LmHead>(hp, hw);

  const std::vector<std::string> unused = store_.unused_files();
  if (!unused.empty()) {
    std::string list;
    for (const auto& f : unused) list += (list.empty() ? "" : ", ") + f;
    FA_LOG(kWarning, store_.dir(), ": ", unused.size(),
           " tensor file(s) the config does not use (does config.json match the weights?): ", list);
  }
}

kvcache::KvCacheConfig DecoderModel::kv_cache_config(int64_t num_blocks, int block_size,
                                                     DType dtype) const {
  kvcache::KvCacheConfig kc;
  kc.num_layers = config_.num_layers;
  kc.num_blocks = num_blocks;
  kc.block_size = block_size;
  kc.num_kv_heads = config_.local_kv_heads();
  kc.head_dim = config_.head_dim;
  kc.dtype = dtype;
  return kc;
}

void DecoderModel::forward(const Context& ctx, const layers::ForwardBatch& batch,
                           kvcache::KvCache& cache, ModelScratch& scratch,
                           kvcache::KvCache* host_cache) const {
  FA_CHECK(!batch.has_host_kv() || host_cache != nullptr,
           "forward: the batch has host-resident KV but no host cache was given");
  FA_CHECK(config_.tp_size == 1 || ctx.comm != nullptr, config_.file,
           ": tp_size = ", config_.tp_size,
           ": a tensor-parallel model needs a communicator (run under mpirun)");
  FA_CHECK(cache.config().num_layers == config_.num_layers, "KV cache has ",
           cache.config().num_layers, " layers, the model ", config_.num_layers);
  scratch.hidden.resize(activation_dtype(), {batch.num_tokens, config_.hidden_size});
  Tensor& hidden = scratch.hidden.view();
  FA_CHECK(!config_.learned_positions() || batch.max_total_len <= config_.max_position_embeddings,
           config_.file, ": a sequence of ", batch.max_total_len, " tokens exceeds the learned ",
           "position table (max_position_embeddings = ", config_.max_position_embeddings, ")");
  embedding_->forward(ctx, batch.token_ids, batch.positions, hidden, scratch.position_rows);
  for (int i = 0; i < config_.num_layers; ++i) {
    layers::LayerKv kv;
    kv.k = &cache.k(i);
    kv.v = &cache.v(i);
    if (host_cache != nullptr) {
      kv.host_k = &host_cache->k(i);
      kv.host_v = &host_cache->v(i);
    }
    layers::LayerLink link;
    link.input_normed = i > 0;  // the previous layer ended with add + this layer's attn_norm
    link.next = i + 1 < config_.num_layers ? &layers_[static_cast<size_t>(i) + 1] : nullptr;
    layers_[static_cast<size_t>(i)].forward(ctx, batch, hidden, kv, scratch.layer, link);
  }
}

void DecoderModel::logits_for_rows(const Context& ctx, ModelScratch& scratch,
                                   const std::vector<int64_t>& rows, Tensor& logits) const {
  const int64_t R = static_cast<int64_t>(rows.size());
  const Tensor& hidden = scratch.hidden.view();
  scratch.head_rows.resize(hidden.dtype(), {R, config_.hidden_size});
  copy_rows(ctx, hidden, rows, scratch.head_rows.view());
  lm_head_->forward(ctx, scratch.head_rows.view(), scratch.vocab_shard, logits);
}

void DecoderModel::logits_all(const Context& ctx, ModelScratch& scratch, Tensor& logits) const {
  lm_head_->forward(ctx, scratch.hidden.view(), scratch.vocab_shard, logits);
}

}  // namespace fastattn::models
