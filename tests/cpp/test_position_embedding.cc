// config.json's position_embedding key: rotary (the default: the rope object is required) or
// learned (no rope: absent or null; pos_embed.weight is loaded instead, tests/python/
// test_export_ft_gpt.py runs such models end to end).
#include <string>

#include "fastattn/models/model_config.h"
#include "test_util.h"

using fastattn::FileError;
using fastattn::models::ModelConfig;
using fastattn::models::parse_model_config;
using fastattn::models::PositionEmbedding;

namespace {

// A GPT-2-like config; `positions` and `rope` are spliced in verbatim (empty = key left out).
std::string config(const std::string& positions, const std::string& rope) {
  std::string s = R"({"format": "fastattention", "format_version": 1, "architecture": "gpt",
    "dtype": "float32", "tp_size": 1, "vocab_size": 97, "vocab_size_padded": 97,
    "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4, "head_dim": 16,
    "intermediate_size": 256, "max_position_embeddings": 64, "norm_type": "layernorm",
    "norm_eps": 1e-6, "activation": "gelu_tanh", "gated_ffn": false, "qkv_bias": true,
    "o_bias": true, "mlp_bias": true, "tie_word_embeddings": true)";
  if (!positions.empty()) s += R"(, "position_embedding": )" + positions;
  if (!rope.empty()) s += R"(, "rope": )" + rope;
  return s + "}";
}

const char* kRope = R"({"theta": 10000.0, "style": "neox", "rotary_dim": 8})";

}  // namespace

TEST(rotary_is_the_default) {
  const ModelConfig c = parse_model_config(config("", kRope), "c.json");
  CHECK(c.position_embedding == PositionEmbedding::kRotary && !c.learned_positions());
  CHECK(c.rope.rotary_dim == 8);
  const ModelConfig r = parse_model_config(config("\"rotary\"", kRope), "c.json");
  CHECK(!r.learned_positions());
  CHECK_THROWS(parse_model_config(config("\"rotary\"", ""), "c.json"), FileError, "'rope'");
}

TEST(learned_positions_take_no_rope) {
  const ModelConfig a = parse_model_config(config("\"learned\"", ""), "c.json");
  CHECK(a.learned_positions());
  CHECK(std::string(fastattn::models::position_embedding_name(a.position_embedding)) == "learned");
  const ModelConfig b = parse_model_config(config("\"learned\"", "null"), "c.json");
  CHECK(b.learned_positions());
  CHECK_THROWS(parse_model_config(config("\"learned\"", kRope), "c.json"), FileError,
               "key 'rope' must be absent or null with position_embedding 'learned'");
}

TEST(bad_position_embedding_values) {
  CHECK_THROWS(parse_model_config(config("\"alibi\"", kRope), "c.json"), FileError,
               "c.json: key 'position_embedding' has unknown value 'alibi'");
  CHECK_THROWS(parse_model_config(config("3", kRope), "c.json"), FileError,
               "key 'position_embedding' must be a string");
}

TEST_MAIN()
