// ModelConfig: the parsed and validated config.json of an exported model (docs/FORMAT.md).
// Every key is type- and range-checked; an error names the key and the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fastattn/core/dtype.h"
#include "fastattn/kernels/norm.h"
#include "fastattn/kernels/rope.h"
#include "fastattn/layers/ffn_layer.h"

namespace fastattn::models {

using Activation = layers::FfnActivation;
const char* activation_name(Activation a);

// How token positions enter the model: rotary embedding in attention (RoPE), or a learned
// absolute table pos_embed.weight [max_position_embeddings, H] added to the token embedding
// (GPT-2 / Megatron GPT: FasterTransformer's [gpt] checkpoints).
enum class PositionEmbedding { kRotary, kLearned };
const char* position_embedding_name(PositionEmbedding p);

struct ModelConfig {
  std::string file;  // the config.json it was read from (for messages)
  // llama | qwen2 | mistral | gpt | pangu. The graph is driven by the keys below; "pangu" also
  // requires its family's keys (layernorm, gated_ffn false, gelu / gelu_tanh: docs/FORMAT.md).
  std::string architecture;
  DType dtype = DType::kFloat16;  // dtype of every tensor file
  int tp_size = 1;

  int64_t vocab_size = 0;
  int64_t vocab_size_padded = 0;  // multiple of tp_size, >= vocab_size
  int64_t hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;

  kernels::NormType norm_type = kernels::NormType::kRMSNorm;
  float norm_eps = 1e-5f;
  Activation activation = Activation::kSilu;
  bool gated_ffn = true;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;

  PositionEmbedding position_embedding = PositionEmbedding::kRotary;
  // Rotary models: rotary_dim is always set (never 0) after parsing. Learned positions: unused
  // (the "rope" key may be absent or null).
  kernels::RopeParams rope;
  int sliding_window = 0;  // 0 = none; else a query sees itself and sliding_window - 1 keys before

  int64_t bos_token_id = -1;           // -1 = none
  std::vector<int64_t> eos_token_ids;  // may be empty

  // Per-rank sizes (docs/FORMAT.md "Tensors of rank r").
  int local_heads() const { return num_heads / tp_size; }
  int local_kv_heads() const { return num_kv_heads >= tp_size ? num_kv_heads / tp_size : 1; }
  int64_t local_intermediate() const { return intermediate_size / tp_size; }
  int64_t local_vocab() const { return vocab_size_padded / tp_size; }
  int64_t qkv_rows() const {
    return static_cast<int64_t>(local_heads() + 2 * local_kv_heads()) * head_dim;
  }
  bool has_norm_bias() const { return norm_type == kernels::NormType::kLayerNorm; }
  bool learned_positions() const { return position_embedding == PositionEmbedding::kLearned; }
  // window_left for the attention kernel: sliding_window - 1, or -1 (unbounded).
  int window_left() const { return sliding_window > 0 ? sliding_window - 1 : -1; }
};

// Parses config text; `file` names the source in error messages. Throws FileError naming the
// key and the file for a missing key, a value of the wrong type or a value out of range.
ModelConfig parse_model_config(const std::string& json_text, const std::string& file);

// Reads MODEL_DIR/config.json. Throws FileError if it is missing or unreadable, or as above.
ModelConfig load_model_config(const std::string& model_dir);

}  // namespace fastattn::models
