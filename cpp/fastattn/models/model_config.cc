#include "fastattn/models/model_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "fastattn/core/error.h"

namespace fastattn::models {
namespace {

using json = nlohmann::json;

const char* json_type(const json& v) { return v.type_name(); }

// Largest config.json accepted: real ones are a few KB; a bigger file is not a config (e.g. a
// link to /dev/zero or to a weight file).
constexpr int64_t kMaxConfigBytes = 16 << 20;

// The largest head dim the attention kernels take (kernels/attention/fmha.cc kMaxHeadDim): a
// model with a larger one is refused at load, not at its first generate.
constexpr int64_t kMaxHeadDim = 256;

// At most `max` bytes of `s`, with every byte outside printable ASCII written as \xNN: text from
// a file (a key's value, a parser's token) may be huge or not valid UTF-8, and must neither flood
// nor break the message that quotes it.
std::string printable(const std::string& s, size_t max = 60) {
  std::string out;
  for (const char ch : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// A short excerpt of a JSON value: nesting below `depth` levels and text past ~60 characters are
// elided, without recursing into them (a value nested 100,000 levels deep must not overflow the
// stack while its error message is built).
void excerpt_into(const json& v, int depth, std::string& out) {
  if (out.size() > 60) return;
  if (v.is_array() || v.is_object()) {
    const bool arr = v.is_array();
    out += arr ? '[' : '{';
    if (depth <= 0) {
      if (!v.empty()) out += "...";
    } else {
      bool first = true;
      for (auto it = v.begin(); it != v.end() && out.size() <= 60; ++it) {
        if (!first) out += ',';
        first = false;
        if (!arr) out += json(it.key()).dump(-1, ' ', false, json::error_handler_t::replace) + ':';
        excerpt_into(*it, depth - 1, out);
      }
    }
    out += arr ? ']' : '}';
    return;
  }
  out += v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Reads keys of one JSON object; `prefix` ("" or "rope." ...) makes the full key name in messages.
class KeyReader {
 public:
  KeyReader(const json& obj, std::string file, std::string prefix)
      : obj_(obj), file_(std::move(file)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    FA_THROW_AS(FileError, file_, ": key '", prefix_, key, "' ", what);
  }

  bool has(const std::string& key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }

  const json& require(const std::string& key) const {
    if (!obj_.contains(key)) fail(key, "is missing");
    return obj_.at(key);
  }

  int64_t integer(const std::string& key, int64_t min_value) const {
    const json& v = require(key);
    if (!v.is_number_integer()) fail(key, std::string("must be an integer, got ") + dump(v));
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(key, "is too large: " + dump(v));
    }
    const int64_t x = v.get<int64_t>();
    if (x < min_value) fail(key, "must be >= " + std::to_string(min_value) + ", got " + dump(v));
    return x;
  }

  double number(const std::string& key) const {
    const json& v = require(key);
    if (!v.is_number()) fail(key, std::string("must be a number, got ") + dump(v));
    return v.get<double>();
  }

  double positive_number(const std::string& key) const {
    const double x = number(key);
    if (!(x > 0)) fail(key, "must be > 0, got " + dump(obj_.at(key)));
    return x;
  }

  // A positive number the runtime keeps as a float32: refused where float32 would make it inf or
  // a denormal / zero, rather than loading a different value than the file says.
  float positive_float(const std::string& key) const {
    const double x = positive_number(key);
    if (x > static_cast<double>(std::numeric_limits<float>::max())) {
      fail(key, "is too large for float32 (max 3.4e38), got " + dump(obj_.at(key)));
    }
    if (x < static_cast<double>(std::numeric_limits<float>::min())) {
      fail(key, "is too small for float32 (min normal 1.2e-38), got " + dump(obj_.at(key)));
    }
    return static_cast<float>(x);
  }

  bool boolean(const std::string& key) const {
    const json& v = require(key);
    if (!v.is_boolean()) fail(key, std::string("must be true or false, got ") + dump(v));
    return v.get<bool>();
  }

  std::string string(const std::string& key) const {
    const json& v = require(key);
    if (!v.is_string()) fail(key, std::string("must be a string, got ") + dump(v));
    return v.get<std::string>();
  }

  // A string that must be one of `choices` (listed in the message otherwise).
  std::string choice(const std::string& key, const std::vector<std::string>& choices) const {
    const std::string s = string(key);
    for (const auto& c : choices) {
      if (s == c) return s;
    }
    std::string list;
    for (size_t i = 0; i < choices.size(); ++i) list += (i ? ", " : "") + choices[i];
    fail(key, "has unknown value '" + printable(s) + "' (expected one of: " + list + ")");
  }

  KeyReader object(const std::string& key) const {
    const json& v = require(key);
    if (!v.is_object()) fail(key, std::string("must be an object, got ") + json_type(v));
    return KeyReader(v, file_, prefix_ + key + ".");
  }

  static std::string dump(const json& v) {
    std::string s;
    excerpt_into(v, 3, s);
    return printable(s);
  }

 private:
  const json& obj_;
  std::string file_;
  std::string prefix_;
};

int to_int(const KeyReader& r, const std::string& key, int64_t v) {
  if (v > (1LL << 31) - 1) r.fail(key, "is too large: " + std::to_string(v));
  return static_cast<int>(v);
}

// Rotation angles are position * inverse frequency / factor in float32: refuse a theta (below 1
// the frequencies grow past 1 radian per position) and scaling factor (below 1 they are
// multiplied) that would make an angle inf, and so NaN outputs, at some position a session can
// reach (max_seq_len is at most 2^31 - 1).
void check_rope_range(const KeyReader& r, const kernels::RopeParams& rope) {
  const double rd = rope.rotary_dim;
  const double max_inv_freq =
      rd > 2 ? std::max(1.0, std::pow(static_cast<double>(rope.theta), -(rd - 2) / rd)) : 1.0;
  const double factor = rope.scaling == kernels::RopeScaling::kNone ? 1.0 : rope.factor;
  const double max_angle = 2147483647.0 * max_inv_freq / std::min(1.0, factor);
  if (!(max_angle < 1e30)) {
    r.fail("theta", "(" + KeyReader::dump(json(rope.theta)) + ") with rotary_dim " +
                        std::to_string(rope.rotary_dim) + " and scaling factor " +
                        KeyReader::dump(json(factor)) + " makes rotation angles overflow " +
                        "float32 (up to " + KeyReader::dump(json(max_angle)) +
                        " radians); theta >= 1 and factor >= 1 are always safe");
  }
}

void parse_rope(const KeyReader& root, ModelConfig& c) {
  const KeyReader r = root.object("rope");
  c.rope.theta = r.positive_float("theta");
  const std::string style = r.choice("style", {"neox", "interleaved"});
  c.rope.style = style == "neox" ? kernels::RopeStyle::kNeox : kernels::RopeStyle::kInterleaved;
  c.rope.rotary_dim = c.head_dim;
  if (r.has("rotary_dim")) {
    const int64_t rd = r.integer("rotary_dim", 2);
    if (rd > c.head_dim || rd % 2 != 0) {
      r.fail("rotary_dim", "must be even and at most head_dim (" + std::to_string(c.head_dim) +
                               "), got " + std::to_string(rd));
    }
    c.rope.rotary_dim = static_cast<int>(rd);
  }
  c.rope.scaling = kernels::RopeScaling::kNone;
  if (!r.has("scaling")) return check_rope_range(r, c.rope);
  const KeyReader s = r.object("scaling");
  const std::string type = s.choice("type", {"none", "linear", "dynamic", "llama3"});
  if (type == "none") return check_rope_range(r, c.rope);
  c.rope.factor = s.positive_float("factor");
  if (type == "linear") {
    c.rope.scaling = kernels::RopeScaling::kLinear;
    return check_rope_range(r, c.rope);
  }
  c.rope.original_max_position =
      s.has("original_max_position")
          ? to_int(s, "original_max_position", s.integer("original_max_position", 1))
          : static_cast<int>(c.max_position_embeddings);
  if (type == "dynamic") {
    c.rope.scaling = kernels::RopeScaling::kDynamicNTK;
    if (c.rope.rotary_dim <= 2) {  // the NTK base rescaling divides by rotary_dim - 2
      s.fail("type",
             "'dynamic' needs a rotated dimension > 2 (rope.rotary_dim, default head_dim), "
             "got " +
                 std::to_string(c.rope.rotary_dim));
    }
    return check_rope_range(r, c.rope);
  }
  c.rope.scaling = kernels::RopeScaling::kLlama3;
  c.rope.low_freq_factor = s.positive_float("low_freq_factor");
  c.rope.high_freq_factor = s.positive_float("high_freq_factor");
  if (!(c.rope.high_freq_factor > c.rope.low_freq_factor)) {
    s.fail("high_freq_factor", "must be greater than low_freq_factor");
  }
  check_rope_range(r, c.rope);
}

void parse_tokens(const KeyReader& r, const json& root, ModelConfig& c) {
  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id", 0);
  if (!r.has("eos_token_id")) return;
  const json& e = root.at("eos_token_id");
  if (e.is_number_integer()) {
    c.eos_token_ids.push_back(r.integer("eos_token_id", 0));
    return;
  }
  if (!e.is_array()) r.fail("eos_token_id", "must be an integer, a list of integers or null");
  for (const json& t : e) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0) {
      r.fail("eos_token_id", "must hold non-negative integers, got " + KeyReader::dump(t));
    }
    c.eos_token_ids.push_back(t.get<int64_t>());
  }
}

// Relations between keys (divisibility, tensor-parallel split).
void check_consistency(const KeyReader& r, const ModelConfig& c) {
  if (c.num_heads % c.num_kv_heads != 0) {
    r.fail("num_kv_heads", "(" + std::to_string(c.num_kv_heads) + ") must divide num_heads (" +
                               std::to_string(c.num_heads) + ")");
  }
  if (c.vocab_size_padded < c.vocab_size || c.vocab_size_padded % c.tp_size != 0) {
    r.fail("vocab_size_padded", "(" + std::to_string(c.vocab_size_padded) +
                                    ") must be >= vocab_size (" + std::to_string(c.vocab_size) +
                                    ") and a multiple of tp_size (" + std::to_string(c.tp_size) +
                                    ")");
  }
  if (c.num_heads % c.tp_size != 0) {
    r.fail("tp_size", "(" + std::to_string(c.tp_size) + ") must divide num_heads (" +
                          std::to_string(c.num_heads) + ")");
  }
  if (c.num_kv_heads % c.tp_size != 0 && c.tp_size % c.num_kv_heads != 0) {
    r.fail("tp_size", "(" + std::to_string(c.tp_size) + ") must divide or be a multiple of " +
                          "num_kv_heads (" + std::to_string(c.num_kv_heads) + ")");
  }
  if (c.intermediate_size % c.tp_size != 0) {
    r.fail("tp_size", "(" + std::to_string(c.tp_size) + ") must divide intermediate_size (" +
                          std::to_string(c.intermediate_size) + ")");
  }
  if (c.architecture == "pangu") {  // the family's graph (docs/FORMAT.md "Architecture families")
    if (c.norm_type != kernels::NormType::kLayerNorm) {
      r.fail("norm_type", "must be 'layernorm' for architecture 'pangu' (pre-LayerNorm with bias)");
    }
    if (c.gated_ffn) {
      r.fail("gated_ffn",
             "must be false for architecture 'pangu' (a plain GeLU FFN: down(gelu(up(x))))");
    }
    if (c.activation == Activation::kSilu) {
      r.fail("activation", "must be 'gelu' or 'gelu_tanh' for architecture 'pangu'");
    }
  }
  if (c.gated_ffn == false && c.activation == Activation::kSilu) {
    r.fail("activation",
           "'silu' needs gated_ffn = true (SwiGLU); a plain FFN supports gelu and "
           "gelu_tanh");
  }
}

}  // namespace

const char* position_embedding_name(PositionEmbedding p) {
  return p == PositionEmbedding::kLearned ? "learned" : "rotary";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kSilu:
      return "silu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
  }
  return "unknown";
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& file) {
  json root;
  // The key whose value is being read when the parser fails (a number out of range, bad UTF-8):
  // one entry per open object / array, so the message names e.g. 'rope.theta'.
  std::vector<std::string> path;
  const json::parser_callback_t track = [&path](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        path.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!path.empty()) path.pop_back();
        break;
      case json::parse_event_t::key:
        if (!path.empty()) path.back() = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  try {
    root = json::parse(json_text, track);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e400
    std::string key;
    for (const auto& k : path) {
      if (!k.empty()) key += (key.empty() ? "" : ".") + k;
    }
    FA_THROW_AS(FileError, file, ": not valid JSON", key.empty() ? "" : " at key '", printable(key),
                key.empty() ? "" : "'", " (", printable(e.what(), 200), ")");
  }
  if (!root.is_object()) FA_THROW_AS(FileError, file, ": expected a JSON object at the top level");
  const KeyReader r(root, file, "");
  ModelConfig c;
  c.file = file;

  if (r.string("format") != "fastattention") {
    r.fail("format", "must be \"fastattention\", got " + KeyReader::dump(root.at("format")));
  }
  if (r.integer("format_version", 0) != 1) {
    r.fail("format_version",
           "is " + KeyReader::dump(root.at("format_version")) + "; this build reads version 1");
  }
  c.architecture = r.choice("architecture", {"llama", "qwen2", "mistral", "gpt", "pangu"});
  c.dtype = dtype_from_name(r.choice("dtype", {"float32", "float16", "bfloat16"}));
  c.tp_size = to_int(r, "tp_size", r.integer("tp_size", 1));

  c.vocab_size = r.integer("vocab_size", 1);
  c.vocab_size_padded = r.integer("vocab_size_padded", 1);
  c.hidden_size = r.integer("hidden_size", 1);
  c.num_layers = to_int(r, "num_layers", r.integer("num_layers", 1));
  c.num_heads = to_int(r, "num_heads", r.integer("num_heads", 1));
  c.num_kv_heads = to_int(r, "num_kv_heads", r.integer("num_kv_heads", 1));
  c.head_dim = to_int(r, "head_dim", r.integer("head_dim", 1));
  if (c.head_dim > kMaxHeadDim) {
    r.fail("head_dim", "is " + std::to_string(c.head_dim) + "; the attention kernels support 1.." +
                           std::to_string(kMaxHeadDim));
  }
  c.intermediate_size = r.integer("intermediate_size", 1);
  // The range of max_seq_len (SessionOptions), which defaults to it.
  c.max_position_embeddings =
      to_int(r, "max_position_embeddings", r.integer("max_position_embeddings", 1));
  if (c.vocab_size > (1LL << 31) - 1) r.fail("vocab_size", "does not fit token ids in int32");

  c.norm_type = r.choice("norm_type", {"rmsnorm", "layernorm"}) == "rmsnorm"
                    ? kernels::NormType::kRMSNorm
                    : kernels::NormType::kLayerNorm;
  c.norm_eps = r.positive_float("norm_eps");
  const std::string act = r.choice("activation", {"silu", "gelu", "gelu_tanh"});
  c.activation = act == "silu"   ? Activation::kSilu
                 : act == "gelu" ? Activation::kGelu
                                 : Activation::kGeluTanh;
  c.gated_ffn = r.boolean("gated_ffn");
  c.qkv_bias = r.boolean("qkv_bias");
  c.o_bias = r.boolean("o_bias");
  c.mlp_bias = r.boolean("mlp_bias");
  c.tie_word_embeddings = r.boolean("tie_word_embeddings");

  if (r.has("position_embedding")) {
    c.position_embedding = r.choice("position_embedding", {"rotary", "learned"}) == "learned"
                               ? PositionEmbedding::kLearned
                               : PositionEmbedding::kRotary;
  }
  if (!c.learned_positions()) {
    parse_rope(r, c);
  } else if (r.has("rope")) {
    r.fail("rope",
           "must be absent or null with position_embedding 'learned' (the model has no "
           "rotary positions)");
  }
  if (r.has("sliding_window")) {
    c.sliding_window = to_int(r, "sliding_window", r.integer("sliding_window", 1));
  }
  parse_tokens(r, root, c);
  check_consistency(r, c);
  return c;
}

ModelConfig load_model_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  // O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses anything that is
  // not a regular file of a config's size (a FIFO, a device such as /dev/zero, a directory).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      FA_THROW_AS(FileError, path, ": cannot open the model config (is '", model_dir,
                  "' an exported model directory?)");
    }
    FA_THROW_AS(FileError, path, ": cannot open the model config (", std::strerror(err), ")");
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    FA_THROW_AS(FileError, path, ": not a regular file (a FIFO, device or directory?)");
  }
  if (st.st_size > kMaxConfigBytes) {
    ::close(fd);
    FA_THROW_AS(FileError, path, ": ", st.st_size, " bytes, too large for a model config (at most ",
                kMaxConfigBytes, ")");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      FA_THROW_AS(FileError, path, ": read error (", n < 0 ? std::strerror(err) : "file shrank",
                  ")");
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return parse_model_config(text, path);
}

}  // namespace fastattn::models
