// In-memory weights: WeightStore::from_memory (zero-copy views, checks naming the tensor, owner
// lifetime), the split-independent random fill (models/random_weights.h), the pangu family's key
// checks, and an InferenceSession over in-memory weights.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fastattn/core/allocator.h"
#include "fastattn/core/dtype.h"
#include "fastattn/models/model_config.h"
#include "fastattn/models/random_weights.h"
#include "fastattn/models/weight_store.h"
#include "fastattn/runtime/session.h"
#include "test_util.h"

using fastattn::DType;
using fastattn::FileError;
using fastattn::InvalidArgument;
using fastattn::OwnedTensor;
using fastattn::Tensor;
using fastattn::models::RandomFillParams;
using fastattn::models::WeightStore;

namespace {

// A 2-layer pangu model: hidden 32, 4 heads of 8, FFN 128, vocab 29.
std::string pangu_json(const std::string& extra = "") {
  return R"({"format": "fastattention", "format_version": 1, "architecture": "pangu",
    "dtype": "float32", "tp_size": 1, "vocab_size": 29, "vocab_size_padded": 29,
    "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4, "head_dim": 8,
    "intermediate_size": 128, "max_position_embeddings": 64, "norm_eps": 1e-5,
    "qkv_bias": true, "o_bias": true, "mlp_bias": true, "tie_word_embeddings": false,
    "rope": {"theta": 10000.0, "style": "neox"}, )" +
         (extra.empty() ? std::string(R"("norm_type": "layernorm", "activation": "gelu",
    "gated_ffn": false)")
                        : extra) +
         "}";
}

OwnedTensor rows_of(const std::vector<int64_t>& rows) {
  OwnedTensor t(fastattn::host_allocator(), DType::kInt64, {static_cast<int64_t>(rows.size())});
  for (size_t i = 0; i < rows.size(); ++i) t.data_as<int64_t>()[i] = rows[i];
  return t;
}

OwnedTensor random_tensor(const std::string& name, const std::vector<int64_t>& shape,
                          uint64_t seed = 1, DType dtype = DType::kFloat32) {
  OwnedTensor t(fastattn::host_allocator(), dtype, shape);
  std::vector<int64_t> rows(static_cast<size_t>(shape[0]));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  RandomFillParams p;
  p.seed = seed;
  p.name = name;
  p.logical_cols = shape.size() == 2 ? shape[1] : 1;
  p.scale = 0.1;
  fastattn::models::fill_random_weight(fastattn::cpu_context(1), p, rows_of(rows), t.view());
  return t;
}

// Every tensor of pangu_json()'s model at tp = 1.
std::map<std::string, OwnedTensor> pangu_weights() {
  std::map<std::string, OwnedTensor> w;
  const int64_t H = 32, V = 29, I = 128;
  w["embed.weight"] = random_tensor("embed.weight", {V, H});
  w["lm_head.weight"] = random_tensor("lm_head.weight", {V, H});
  for (const std::string n : {"final_norm.weight", "final_norm.bias"}) w[n] = random_tensor(n, {H});
  for (int i = 0; i < 2; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    for (const std::string n : {"attn_norm.weight", "attn_norm.bias", "ffn_norm.weight",
                                "ffn_norm.bias", "attn.o.bias", "ffn.down.bias"}) {
      w[p + n] = random_tensor(p + n, {H});
    }
    w[p + "attn.qkv.weight"] = random_tensor(p + "attn.qkv.weight", {3 * H, H});
    w[p + "attn.qkv.bias"] = random_tensor(p + "attn.qkv.bias", {3 * H});
    w[p + "attn.o.weight"] = random_tensor(p + "attn.o.weight", {H, H});
    w[p + "ffn.up.weight"] = random_tensor(p + "ffn.up.weight", {I, H});
    w[p + "ffn.up.bias"] = random_tensor(p + "ffn.up.bias", {I});
    w[p + "ffn.down.weight"] = random_tensor(p + "ffn.down.weight", {H, I});
  }
  return w;
}

std::map<std::string, Tensor> views(const std::map<std::string, OwnedTensor>& w) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : w) out[name] = t.view();
  return out;
}

}  // namespace

TEST(memory_store_hands_out_the_callers_buffers) {
  OwnedTensor a = random_tensor("a", {3, 4});
  auto owner = std::make_shared<int>(7);
  std::weak_ptr<int> watch = owner;
  WeightStore s = WeightStore::from_memory({{"a", a.view()}, {"extra", a.view()}}, "test store",
                                           std::move(owner));
  CHECK(s.in_memory() && s.dir() == "test store" && s.memory_tensors() == 2);
  CHECK(s.memory_bytes() == 2 * 3 * 4 * sizeof(float));
  const Tensor t = s.load("a", DType::kFloat32, {3, 4});
  CHECK(t.data() == a.view().data());  // zero-copy
  CHECK(s.mapped_bytes() == 3 * 4 * sizeof(float));
  CHECK(s.unused_files() == std::vector<std::string>{"extra"});
  CHECK(!watch.expired());
  s.release_memory();
  CHECK(watch.expired());
}

TEST(memory_store_errors_name_the_tensor) {
  OwnedTensor a = random_tensor("a", {3, 4});
  WeightStore s = WeightStore::from_memory({{"a", a.view()}, {"strided", a.view().slice(1, 0, 2)}},
                                           "rank 5 weights");
  CHECK_THROWS(s.load("b", DType::kFloat32, {3, 4}), FileError,
               "rank 5 weights: tensor 'b' is missing (the config needs float32[3, 4])");
  CHECK_THROWS(s.load("a", DType::kFloat16, {3, 4}), FileError,
               "tensor 'a' is float32, but the config says float16");
  CHECK_THROWS(s.load("a", DType::kFloat32, {4, 3}), FileError,
               "tensor 'a' has shape [3, 4], but the config implies [4, 3]");
  CHECK_THROWS(s.load("strided", DType::kFloat32, {3, 2}), FileError,
               "tensor 'strided' is not contiguous");
}

TEST(random_fill_shards_are_slices_of_the_logical_tensor) {
  // The logical [6, 10] tensor, then a shard: rows {4, -1, 1}, columns 3 .. 7.
  OwnedTensor full = random_tensor("w", {6, 10}, 9);
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    OwnedTensor shard(fastattn::host_allocator(), dt, {3, 4});
    RandomFillParams p;
    p.seed = 9;
    p.name = "w";
    p.logical_cols = 10;
    p.col_offset = 3;
    p.scale = 0.1;
    fastattn::models::fill_random_weight(fastattn::cpu_context(2), p, rows_of({4, -1, 1}),
                                         shard.view());
    std::vector<float> got(12);
    fastattn::convert_to_float(shard.view().data(), dt, got.data(), 12);
    const float* f = full.data_as<float>();
    const int64_t src_rows[3] = {4, -1, 1};
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) {
        const float want = src_rows[r] < 0 ? 0.0f : f[src_rows[r] * 10 + 3 + c];
        uint32_t stored = 0;  // want in dt (round to nearest even), read back as float
        float rounded = 0.0f;
        fastattn::convert_from_float(&want, &stored, dt, 1);
        fastattn::convert_to_float(&stored, dt, &rounded, 1);
        CHECK(got[static_cast<size_t>(r * 4 + c)] == rounded);
      }
    }
  }
  double sum = 0, sq = 0;
  const float* f = full.data_as<float>();
  for (int i = 0; i < 60; ++i) {
    CHECK(std::fabs(f[i]) <= 0.1f && f[i] != 0.0f);
    sum += f[i];
    sq += f[i] * f[i];
  }
  CHECK(std::fabs(sum / 60) < 0.03 && std::sqrt(sq / 60) > 0.03);
}

TEST(random_fill_errors) {
  OwnedTensor out(fastattn::host_allocator(), DType::kFloat32, {2, 4});
  RandomFillParams p;
  p.name = "w";
  p.logical_cols = 5;
  p.col_offset = 2;
  CHECK_THROWS(fastattn::models::fill_random_weight(fastattn::cpu_context(1), p, rows_of({0, 1}),
                                                    out.view()),
               InvalidArgument, "random weight 'w': columns 2 .. 6 do not fit");
  p.col_offset = 0;
  CHECK_THROWS(fastattn::models::fill_random_weight(fastattn::cpu_context(1), p, rows_of({0, -2}),
                                                    out.view()),
               InvalidArgument, "logical_rows[1] = -2");
  OwnedTensor ints(fastattn::host_allocator(), DType::kInt32, {2, 4});
  CHECK_THROWS(fastattn::models::fill_random_weight(fastattn::cpu_context(1), p, rows_of({0, 1}),
                                                    ints.view()),
               InvalidArgument, "random weight 'w'");
}

TEST(pangu_family_keys_are_checked) {
  const auto c = fastattn::models::parse_model_config(pangu_json(), "pangu.json");
  CHECK(c.architecture == "pangu" && !c.gated_ffn && c.has_norm_bias());
  const std::string rms = R"("norm_type": "rmsnorm", "activation": "gelu", "gated_ffn": false)";
  CHECK_THROWS(fastattn::models::parse_model_config(pangu_json(rms), "pangu.json"), FileError,
               "pangu.json: key 'norm_type' must be 'layernorm' for architecture 'pangu'");
  const std::string gated = R"("norm_type": "layernorm", "activation": "gelu", "gated_ffn": true)";
  CHECK_THROWS(fastattn::models::parse_model_config(pangu_json(gated), "pangu.json"), FileError,
               "key 'gated_ffn' must be false for architecture 'pangu'");
  const std::string silu = R"("norm_type": "layernorm", "activation": "silu", "gated_ffn": false)";
  CHECK_THROWS(fastattn::models::parse_model_config(pangu_json(silu), "pangu.json"), FileError,
               "key 'activation' must be 'gelu' or 'gelu_tanh' for architecture 'pangu'");
}

TEST(session_over_memory_weights_holds_the_owner) {
  const auto config = fastattn::models::parse_model_config(pangu_json(), "in-memory config");
  const auto weights = pangu_weights();
  auto owner = std::make_shared<int>(1);
  std::weak_ptr<int> watch = owner;
  std::vector<float> first;
  {
    fastattn::runtime::SessionOptions o;
    o.num_threads = 1;
    o.max_batch = 1;
    fastattn::runtime::InferenceSession s(config, views(weights), o, std::move(owner));
    CHECK(!watch.expired());  // the CPU session reads the caller's buffers
    CHECK(s.weight_bytes() > 0 && s.config().architecture == "pangu");
    const OwnedTensor logits = s.logits({3, 1, 4, 1, 5});
    const float* l = logits.data_as<float>();
    for (int i = 0; i < 5 * 29; ++i) CHECK(std::isfinite(l[i]));
    first.assign(l, l + 5 * 29);
    const OwnedTensor again = s.logits({3, 1, 4, 1, 5});
    for (int i = 0; i < 5 * 29; ++i) {
      CHECK(again.data_as<float>()[i] == first[static_cast<size_t>(i)]);
    }
  }
  CHECK(watch.expired());
  auto missing = views(weights);
  missing.erase("layers.1.attn.o.bias");
  CHECK_THROWS(fastattn::runtime::InferenceSession(config, missing), FileError,
               "in-memory weights of rank 0: tensor 'layers.1.attn.o.bias' is missing");
}

TEST_MAIN()
