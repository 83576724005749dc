// config.json parsing (every required key, bad values) and tensor-file header checks.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "fastattn/models/model_config.h"
#include "fastattn/models/weight_store.h"
#include "test_util.h"

using fastattn::FileError;
using fastattn::models::ModelConfig;
using fastattn::models::parse_model_config;

namespace {

using Entries = std::vector<std::pair<std::string, std::string>>;

Entries rope_entries() {
  return {{"theta", "10000.0"},
          {"style", "\"neox\""},
          {"rotary_dim", "16"},
          {"scaling", "{\"type\": \"none\"}"}};
}

Entries base_entries() {
  return {{"format", "\"fastattention\""},
          {"format_version", "1"},
          {"architecture", "\"llama\""},
          {"dtype", "\"float16\""},
          {"tp_size", "1"},
          {"vocab_size", "1000"},
          {"vocab_size_padded", "1024"},
          {"hidden_size", "64"},
          {"num_layers", "2"},
          {"num_heads", "4"},
          {"num_kv_heads", "2"},
          {"head_dim", "16"},
          {"intermediate_size", "128"},
          {"max_position_embeddings", "256"},
          {"norm_type", "\"rmsnorm\""},
          {"norm_eps", "1e-5"},
          {"activation", "\"silu\""},
          {"gated_ffn", "true"},
          {"qkv_bias", "false"},
          {"o_bias", "false"},
          {"mlp_bias", "false"},
          {"tie_word_embeddings", "false"},
          {"rope", ""},  // filled from rope_entries
          {"sliding_window", "null"},
          {"bos_token_id", "1"},
          {"eos_token_id", "[2]"}};
}

std::string object(const Entries& e) {
  std::string s = "{";
  for (size_t i = 0; i < e.size(); ++i) {
    s += (i ? ", \"" : "\"") + e[i].first + "\": " + e[i].second;
  }
  return s + "}";
}

std::string make_json(Entries top, const Entries& rope) {
  for (auto& kv : top) {
    if (kv.first == "rope" && kv.second.empty()) kv.second = object(rope);
  }
  return object(top);
}

std::string with(const std::string& key, const std::string& value) {
  Entries e = base_entries();
  for (auto& kv : e) {
    if (kv.first == key) kv.second = value;
  }
  return make_json(e, rope_entries());
}

std::string with_rope(const std::string& key, const std::string& value) {
  Entries r = rope_entries();
  for (auto& kv : r) {
    if (kv.first == key) kv.second = value;
  }
  return make_json(base_entries(), r);
}

const char* kFile = "/models/tiny/config.json";

}  // namespace

TEST(parses_a_complete_config) {
  const ModelConfig c = parse_model_config(make_json(base_entries(), rope_entries()), kFile);
  CHECK(c.architecture == "llama");
  CHECK(c.dtype == fastattn::DType::kFloat16);
  CHECK(c.vocab_size == 1000 && c.vocab_size_padded == 1024);
  CHECK(c.hidden_size == 64 && c.num_layers == 2 && c.num_heads == 4 && c.num_kv_heads == 2);
  CHECK(c.head_dim == 16 && c.intermediate_size == 128 && c.max_position_embeddings == 256);
  CHECK(c.norm_type == fastattn::kernels::NormType::kRMSNorm);
  CHECK_NEAR(c.norm_eps, 1e-5, 1e-12);
  CHECK(c.gated_ffn && !c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.tie_word_embeddings);
  CHECK_NEAR(c.rope.theta, 10000.0, 0);
  CHECK(c.rope.style == fastattn::kernels::RopeStyle::kNeox && c.rope.rotary_dim == 16);
  CHECK(c.sliding_window == 0 && c.window_left() == -1);
  CHECK(c.bos_token_id == 1 && c.eos_token_ids == std::vector<int64_t>{2});
  CHECK(c.qkv_rows() == (4 + 2 * 2) * 16);
  CHECK(c.local_vocab() == 1024);
  CHECK(c.file == kFile);
}

TEST(every_required_key_missing_is_named) {
  const Entries base = base_entries();
  const std::vector<std::string> optional = {"sliding_window", "bos_token_id", "eos_token_id"};
  int checked = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    if (std::find(optional.begin(), optional.end(), base[i].first) != optional.end()) continue;
    Entries entries = base;
    entries.erase(entries.begin() + static_cast<int64_t>(i));
    const std::string key = "key '" + base[i].first + "' is missing";
    CHECK_THROWS(parse_model_config(make_json(entries, rope_entries()), kFile), FileError, key);
    CHECK_THROWS(parse_model_config(make_json(entries, rope_entries()), kFile), FileError, kFile);
    ++checked;
  }
  CHECK(checked == 23);
  for (const std::string k : {"theta", "style"}) {
    Entries r = rope_entries();
    r.erase(std::remove_if(r.begin(), r.end(), [&](const auto& kv) { return kv.first == k; }),
            r.end());
    CHECK_THROWS(parse_model_config(make_json(base, r), kFile), FileError,
                 "key 'rope." + k + "' is missing");
  }
}

TEST(optional_keys_take_defaults) {
  Entries r = {{"theta", "500000"}, {"style", "\"interleaved\""}};
  Entries entries = base_entries();
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const auto& kv) {
                                 return kv.first == "sliding_window" ||
                                        kv.first == "bos_token_id" || kv.first == "eos_token_id";
                               }),
                entries.end());
  const ModelConfig c = parse_model_config(make_json(entries, r), kFile);
  CHECK(c.rope.rotary_dim == 16);  // head_dim
  CHECK(c.rope.scaling == fastattn::kernels::RopeScaling::kNone);
  CHECK(c.rope.style == fastattn::kernels::RopeStyle::kInterleaved);
  CHECK(c.sliding_window == 0 && c.bos_token_id == -1 && c.eos_token_ids.empty());
}

TEST(bad_values_are_named) {
  struct Bad {
    std::string key, value, needle;
  };
  const std::vector<Bad> bad = {
      {"format", "\"gguf\"", "key 'format' must be \"fastattention\""},
      {"format_version", "2", "key 'format_version' is 2"},
      {"architecture", "\"bert\"", "key 'architecture' has unknown value 'bert'"},
      {"dtype", "\"int8\"", "key 'dtype' has unknown value 'int8'"},
      {"dtype", "16", "key 'dtype' must be a string"},
      {"hidden_size", "\"64\"", "key 'hidden_size' must be an integer"},
      {"hidden_size", "64.5", "key 'hidden_size' must be an integer"},
      {"hidden_size", "0", "key 'hidden_size' must be >= 1"},
      {"num_layers", "-2", "key 'num_layers' must be >= 1"},
      {"num_heads", "5", "key 'num_kv_heads' (2) must divide num_heads (5)"},
      {"vocab_size_padded", "999", "key 'vocab_size_padded' (999) must be >= vocab_size"},
      {"tp_size", "3",
       "key 'vocab_size_padded' (1024) must be >= vocab_size (1000) and a "
       "multiple of tp_size (3)"},
      {"norm_type", "\"batchnorm\"", "key 'norm_type' has unknown value 'batchnorm'"},
      {"norm_eps", "0", "key 'norm_eps' must be > 0"},
      {"norm_eps", "\"small\"", "key 'norm_eps' must be a number"},
      {"activation", "\"relu\"", "key 'activation' has unknown value 'relu'"},
      {"gated_ffn", "1", "key 'gated_ffn' must be true or false"},
      {"qkv_bias", "\"no\"", "key 'qkv_bias' must be true or false"},
      {"rope", "[1]", "key 'rope' must be an object"},
      {"sliding_window", "0", "key 'sliding_window' must be >= 1"},
      {"sliding_window", "\"4096\"", "key 'sliding_window' must be an integer"},
      {"eos_token_id", "\"</s>\"", "key 'eos_token_id' must be an integer, a list"},
      {"eos_token_id", "[2, -1]", "key 'eos_token_id' must hold non-negative integers"},
      {"max_position_embeddings", "0", "key 'max_position_embeddings' must be >= 1"},
  };
  for (const Bad& b : bad) {
    CHECK_THROWS(parse_model_config(with(b.key, b.value), kFile), FileError, b.needle);
    CHECK_THROWS(parse_model_config(with(b.key, b.value), kFile), FileError, kFile);
  }
  // silu needs the gated (SwiGLU) FFN
  {
    Entries entries = base_entries();
    for (auto& kv : entries) {
      if (kv.first == "gated_ffn") kv.second = "false";
    }
    CHECK_THROWS(parse_model_config(make_json(entries, rope_entries()), kFile), FileError,
                 "key 'activation' 'silu' needs gated_ffn = true");
  }
}

TEST(bad_rope_values_are_named) {
  CHECK_THROWS(parse_model_config(with_rope("theta", "-1"), kFile), FileError,
               "key 'rope.theta' must be > 0");
  CHECK_THROWS(parse_model_config(with_rope("style", "\"gptj\""), kFile), FileError,
               "key 'rope.style' has unknown value 'gptj'");
  CHECK_THROWS(parse_model_config(with_rope("rotary_dim", "15"), kFile), FileError,
               "key 'rope.rotary_dim' must be even");
  CHECK_THROWS(parse_model_config(with_rope("rotary_dim", "32"), kFile), FileError,
               "key 'rope.rotary_dim' must be even and at most head_dim (16)");
  CHECK_THROWS(parse_model_config(with_rope("scaling", "{\"type\": \"yarn\"}"), kFile), FileError,
               "key 'rope.scaling.type' has unknown value 'yarn'");
  CHECK_THROWS(parse_model_config(with_rope("scaling", "{\"type\": \"linear\"}"), kFile), FileError,
               "key 'rope.scaling.factor' is missing");
  CHECK_THROWS(
      parse_model_config(with_rope("scaling",
                                   "{\"type\": \"llama3\", \"factor\": 8.0, "
                                   "\"low_freq_factor\": 1.0, \"original_max_position\": 8192}"),
                         kFile),
      FileError, "key 'rope.scaling.high_freq_factor' is missing");
  const ModelConfig c = parse_model_config(
      with_rope("scaling",
                "{\"type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                "\"high_freq_factor\": 4.0, \"original_max_position\": 8192}"),
      kFile);
  CHECK(c.rope.scaling == fastattn::kernels::RopeScaling::kLlama3);
  CHECK_NEAR(c.rope.factor, 8.0, 0);
  CHECK_NEAR(c.rope.high_freq_factor, 4.0, 0);
  CHECK(c.rope.original_max_position == 8192);
  const ModelConfig d =
      parse_model_config(with_rope("scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}"), kFile);
  CHECK(d.rope.scaling == fastattn::kernels::RopeScaling::kDynamicNTK);
  CHECK(d.rope.original_max_position == 256);  // defaults to max_position_embeddings
}

TEST(not_json_and_not_an_object) {
  CHECK_THROWS(parse_model_config("{\"format\": ", kFile), FileError, "not valid JSON");
  CHECK_THROWS(parse_model_config("[1, 2]", kFile), FileError, "JSON object at the top level");
}

TEST(sliding_window_and_tensor_parallel_sizes) {
  ModelConfig c = parse_model_config(with("sliding_window", "4096"), kFile);
  CHECK(c.sliding_window == 4096 && c.window_left() == 4095);
  // tp_size 2 with 2 KV heads: one each; tp 4: KV heads replicated.
  c = parse_model_config(with("tp_size", "2"), kFile);
  CHECK(c.local_heads() == 2 && c.local_kv_heads() == 1 && c.local_intermediate() == 64);
  CHECK(c.local_vocab() == 512);
  c = parse_model_config(with("tp_size", "4"), kFile);
  CHECK(c.local_heads() == 1 && c.local_kv_heads() == 1 && c.local_vocab() == 256);
  CHECK_THROWS(parse_model_config(with("tp_size", "8"), kFile), FileError,
               "key 'tp_size' (8) must divide num_heads (4)");
}

TEST(missing_config_file) {
  CHECK_THROWS(fastattn::models::load_model_config("/nonexistent/model"), FileError,
               "/nonexistent/model/config.json: cannot open");
}

// ---- tensor file headers ----

namespace {

std::vector<unsigned char> tensor_file(uint32_t dtype, const std::vector<uint64_t>& shape,
                                       size_t itemsize) {
  const uint32_t ndim = static_cast<uint32_t>(shape.size());
  const uint32_t offset = 64;
  size_t numel = 1;
  for (uint64_t s : shape) numel *= s;
  std::vector<unsigned char> f(offset + numel * itemsize, 0);
  std::memcpy(f.data(), "FASTATTN", 8);
  const uint32_t version = 1;
  std::memcpy(f.data() + 8, &version, 4);
  std::memcpy(f.data() + 12, &dtype, 4);
  std::memcpy(f.data() + 16, &ndim, 4);
  std::memcpy(f.data() + 20, &offset, 4);
  for (uint32_t i = 0; i < ndim; ++i) std::memcpy(f.data() + 24 + 8 * i, &shape[i], 8);
  for (size_t i = offset; i < f.size(); ++i) f[i] = static_cast<unsigned char>(i * 7);
  return f;
}

}  // namespace

TEST(tensor_header_checks) {
  using fastattn::models::parse_tensor_header;
  const std::string path = "w.fat";
  std::vector<unsigned char> f = tensor_file(1, {3, 5}, 2);
  const auto h = parse_tensor_header(f.data(), f.size(), path);
  CHECK(h.dtype == fastattn::DType::kFloat16 && h.shape == (std::vector<int64_t>{3, 5}));
  CHECK(h.data_offset == 64);

  CHECK_THROWS(parse_tensor_header(f.data(), 10, path), FileError, "w.fat: truncated");
  CHECK_THROWS(parse_tensor_header(f.data(), f.size() - 1, path), FileError, "w.fat: truncated");
  CHECK_THROWS(parse_tensor_header(f.data(), 64, path), FileError, "w.fat: truncated");
  std::vector<unsigned char> longer = f;
  longer.push_back(0);
  CHECK_THROWS(parse_tensor_header(longer.data(), longer.size(), path), FileError,
               "1 unexpected trailing bytes");
  // One header byte changed at a time, and the error that names it.
  const struct {
    size_t at;
    unsigned char value;
    const char* message;
  } corruptions[] = {{0, 'X', "w.fat: bad magic"},
                     {8, 2, "format version 2"},
                     {12, 9, "unknown dtype code 9"},
                     {16, 7, "ndim 7 out of range"},
                     {20, 40, "bad data_offset 40"}};
  for (const auto& c : corruptions) {
    std::vector<unsigned char> g = f;
    g[c.at] = c.value;
    CHECK_THROWS(parse_tensor_header(g.data(), g.size(), path), FileError, c.message);
  }
}

TEST(weight_store_maps_and_checks) {
  char dir_template[] = "/tmp/fa_test_ws_XXXXXX";
  const char* dir = mkdtemp(dir_template);
  CHECK(dir != nullptr);
  const std::string d = dir;
  const std::vector<unsigned char> f = tensor_file(0, {2, 3}, 4);
  {
    std::ofstream out(d + "/a.weight.fat", std::ios::binary);
    out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
    std::ofstream extra(d + "/unused.fat", std::ios::binary);
    extra.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
  }
  {
    fastattn::models::WeightStore store(d);
    const fastattn::Tensor t = store.load("a.weight", fastattn::DType::kFloat32, {2, 3});
    CHECK(t.shape() == (std::vector<int64_t>{2, 3}));
    CHECK(std::memcmp(t.data(), f.data() + 64, 24) == 0);
    CHECK(store.mapped_bytes() == f.size());
    CHECK(store.unused_files() == std::vector<std::string>{"unused.fat"});
    CHECK_THROWS(store.load("a.weight", fastattn::DType::kFloat16, {2, 3}), FileError,
                 "a.weight.fat: dtype float32, but the config says float16");
    CHECK_THROWS(store.load("a.weight", fastattn::DType::kFloat32, {3, 2}), FileError,
                 "a.weight.fat: shape [2, 3], but the config implies [3, 2]");
    CHECK_THROWS(store.load("b.weight", fastattn::DType::kFloat32, {2, 3}), FileError,
                 "b.weight.fat: weight file is missing");
  }
  CHECK_THROWS(fastattn::models::WeightStore(d + "/rank7"), FileError, "rank7: weight directory");
  std::remove((d + "/a.weight.fat").c_str());
  std::remove((d + "/unused.fat").c_str());
  rmdir(dir);
}

TEST_MAIN()
