// Model and session bindings: _C.SessionOptions and _C.InferenceSession (generate / logits with
// the GIL released, timings, config as a dict; from_memory for weights built in memory), and
// _C.fill_random_weight (models/random_weights.h).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>

#include "fastattn/bindings/bindings.h"
#include "fastattn/models/random_weights.h"
#include "fastattn/models/weight_store.h"
#include "fastattn/runtime/session.h"

namespace fastattn::py_bind {
namespace {

using runtime::GenerateOptions;
using runtime::InferenceSession;
using runtime::SessionOptions;

const char* rope_scaling_name(kernels::RopeScaling s) {
  switch (s) {
    case kernels::RopeScaling::kNone:
      return "none";
    case kernels::RopeScaling::kLinear:
      return "linear";
    case kernels::RopeScaling::kLlama3:
      return "llama3";
    case kernels::RopeScaling::kDynamicNTK:
      return "dynamic";
  }
  return "unknown";
}

py::dict config_dict(const models::ModelConfig& c) {
  py::dict d;
  d["architecture"] = c.architecture;
  d["dtype"] = dtype_name(c.dtype);
  d["tp_size"] = c.tp_size;
  d["vocab_size"] = c.vocab_size;
  d["vocab_size_padded"] = c.vocab_size_padded;
  d["hidden_size"] = c.hidden_size;
  d["num_layers"] = c.num_layers;
  d["num_heads"] = c.num_heads;
  d["num_kv_heads"] = c.num_kv_heads;
  d["head_dim"] = c.head_dim;
  d["intermediate_size"] = c.intermediate_size;
  d["max_position_embeddings"] = c.max_position_embeddings;
  d["norm_type"] = c.norm_type == kernels::NormType::kRMSNorm ? "rmsnorm" : "layernorm";
  d["norm_eps"] = c.norm_eps;
  d["activation"] = models::activation_name(c.activation);
  d["gated_ffn"] = c.gated_ffn;
  d["qkv_bias"] = c.qkv_bias;
  d["o_bias"] = c.o_bias;
  d["mlp_bias"] = c.mlp_bias;
  d["tie_word_embeddings"] = c.tie_word_embeddings;
  py::dict rope;
  rope["theta"] = c.rope.theta;
  rope["style"] = c.rope.style == kernels::RopeStyle::kNeox ? "neox" : "interleaved";
  rope["rotary_dim"] = c.rope.rotary_dim;
  py::dict scaling;
  scaling["type"] = rope_scaling_name(c.rope.scaling);
  if (c.rope.scaling != kernels::RopeScaling::kNone) {
    scaling["factor"] = c.rope.factor;
  }
  if (c.rope.scaling == kernels::RopeScaling::kLlama3 ||
      c.rope.scaling == kernels::RopeScaling::kDynamicNTK) {
    scaling["original_max_position"] = c.rope.original_max_position;
  }
  if (c.rope.scaling == kernels::RopeScaling::kLlama3) {
    scaling["low_freq_factor"] = c.rope.low_freq_factor;
    scaling["high_freq_factor"] = c.rope.high_freq_factor;
  }
  rope["scaling"] = scaling;
  d["position_embedding"] = models::position_embedding_name(c.position_embedding);
  d["rope"] = c.position_embedding == models::PositionEmbedding::kLearned ? py::object(py::none())
                                                                          : py::object(rope);
  d["sliding_window"] = c.sliding_window > 0 ? py::object(py::int_(c.sliding_window)) : py::none();
  d["bos_token_id"] = c.bos_token_id >= 0 ? py::object(py::int_(c.bos_token_id)) : py::none();
  d["eos_token_id"] = c.eos_token_ids;
  d["file"] = c.file;
  return d;
}

// The generate() hook of the binding: checks for pending signals (Ctrl-C raises
// KeyboardInterrupt at the next step instead of after the whole call), then calls the user's
// on_step(tokens) if given; its result (None = go on) decides whether the call goes on.
std::function<bool(const std::vector<runtime::StepToken>&)> step_hook(py::object on_step) {
  auto fn = std::make_shared<py::object>(std::move(on_step));
  return [fn](const std::vector<runtime::StepToken>& tokens) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (fn->is_none()) return true;
    py::list items;
    for (const runtime::StepToken& t : tokens) items.append(py::make_tuple(t.index, t.token));
    const py::object result = (*fn)(items);
    return result.is_none() || result.cast<bool>();
  };
}

py::dict timings_dict(const runtime::Timings& t) {
  py::dict d;
  d["prefill_tokens"] = t.prefill_tokens;
  d["prefill_seconds"] = t.prefill_seconds;
  d["prefill_tokens_per_s"] = t.prefill_tokens_per_s();
  d["decode_steps"] = t.decode_steps;
  d["decode_seconds"] = t.decode_seconds;
  d["decode_ms_per_step"] = t.decode_ms_per_step();
  d["spill_stream_steps"] = t.spill_stream_steps;
  d["spill_cpu_steps"] = t.spill_cpu_steps;
  d["decode_graph_steps"] = t.decode_graph_steps;
  d["decode_graph_captures"] = t.decode_graph_captures;
  return d;
}

// The in-memory session: zero-copy views of the arrays in `tensors`; a shallow copy of the dict
// is held (as the session's weights owner) until the session no longer needs the arrays.
std::unique_ptr<InferenceSession> session_from_memory(const std::string& config_json,
                                                      const py::dict& tensors,
                                                      const SessionOptions& options) {
  const models::ModelConfig config = models::parse_model_config(config_json, "in-memory config");
  std::map<std::string, Tensor> views;
  for (const auto& item : tensors) {
    if (!py::isinstance<py::str>(item.first)) {
      throw py::type_error("tensors: keys must be tensor names (str), got " +
                           std::string(py::str(py::type::of(item.first).attr("__name__"))));
    }
    const std::string name = item.first.cast<std::string>();
    views[name] = readonly_tensor_from_py(item.second, ("tensors['" + name + "']").c_str());
  }
  // Deleted with the GIL held: the last owner may be released where the GIL is not.
  // A shallow copy: the arrays stay held whatever later happens to the caller's dict.
  auto* held = new py::object(tensors.attr("copy")());
  std::shared_ptr<const void> owner(held, [](const void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<const py::object*>(p);
  });
  py::gil_scoped_release release;
  return std::make_unique<InferenceSession>(config, views, options, std::move(owner));
}

void fill_random(py::handle out, uint64_t seed, const std::string& name, py::handle logical_rows,
                 int64_t logical_cols, int64_t col_offset, double scale, double shift,
                 int num_threads) {
  Tensor t = tensor_from_py(out, "out");
  const Tensor rows = tensor_from_py(logical_rows, "logical_rows");
  models::RandomFillParams p;
  p.seed = seed;
  p.name = name;
  p.logical_cols = logical_cols;
  p.col_offset = col_offset;
  p.scale = scale;
  p.shift = shift;
  FA_CHECK(num_threads >= 0, "num_threads: must be >= 0 (0 = default), got ", num_threads);
  const Context ctx = cpu_context(num_threads);
  py::gil_scoped_release release;
  models::fill_random_weight(ctx, p, rows, t);
}

}  // namespace

void bind_model(py::module_& m) {
  m.def("fill_random_weight", &fill_random, py::arg("out"), py::arg("seed"), py::arg("name"),
        py::arg("logical_rows"), py::arg("logical_cols"), py::arg("col_offset") = 0,
        py::arg("scale") = 1.0, py::arg("shift") = 0.0, py::arg("num_threads") = 0,
        "Fills out ([rows] or [rows, cols], float32/16, bfloat16) with the split-independent "
        "random values of models/random_weights.h: row i is logical row logical_rows[i] (-1: "
        "zeros), columns start at logical column col_offset of logical_cols.");

  py::class_<SessionOptions>(m, "SessionOptions", "Options of an InferenceSession.")
      .def(py::init<>())
      .def_readwrite("device", &SessionOptions::device)
      .def_readwrite("num_threads", &SessionOptions::num_threads)
      .def_readwrite("max_batch", &SessionOptions::max_batch)
      .def_readwrite("max_seq_len", &SessionOptions::max_seq_len)
      .def_readwrite("kv_block_size", &SessionOptions::kv_block_size)
      .def_readwrite("kv_dtype", &SessionOptions::kv_dtype)
      .def_readwrite("max_cache_tokens", &SessionOptions::max_cache_tokens)
      .def_readwrite("prefill_chunk_tokens", &SessionOptions::prefill_chunk_tokens)
      .def_readwrite("gpu_memory_fraction", &SessionOptions::gpu_memory_fraction)
      .def_readwrite("gpu_kv_budget", &SessionOptions::gpu_kv_budget)
      .def_readwrite("host_kv_tokens", &SessionOptions::host_kv_tokens)
      .def_readwrite("spill_attention", &SessionOptions::spill_attention)
      .def_readwrite("verbose", &SessionOptions::verbose)
      .def_readwrite("tp_overlap", &SessionOptions::tp_overlap)
      .def_readwrite("tp_tiles", &SessionOptions::tp_tiles)
      .def_readwrite("cuda_graphs", &SessionOptions::cuda_graphs)
      .def_readwrite("load", &SessionOptions::load)
      .def("__repr__", [](const SessionOptions& o) {
        return "SessionOptions(device='" + o.device +
               "', num_threads=" + std::to_string(o.num_threads) +
               ", max_batch=" + std::to_string(o.max_batch) +
               ", max_seq_len=" + std::to_string(o.max_seq_len) +
               ", kv_block_size=" + std::to_string(o.kv_block_size) + ", kv_dtype='" + o.kv_dtype +
               "', max_cache_tokens=" + std::to_string(o.max_cache_tokens) +
               ", prefill_chunk_tokens=" + std::to_string(o.prefill_chunk_tokens) + ")";
      });

  py::class_<InferenceSession>(m, "InferenceSession",
                               "A loaded model with its KV cache, serving generate() and logits().")
      .def(py::init<const std::string&, const SessionOptions&>(), py::arg("model_dir"),
           py::arg("options") = SessionOptions(), py::call_guard<py::gil_scoped_release>())
      .def_static("from_memory", &session_from_memory, py::arg("config_json"), py::arg("tensors"),
                  py::arg("options") = SessionOptions(),
                  "A session over this rank's weights in memory: config_json is a config.json "
                  "text, tensors maps names to arrays (docs/FORMAT.md), used in place on the "
                  "CPU, copied to a GPU.")
      .def(
          "generate",
          [](InferenceSession& s, const std::vector<std::vector<int64_t>>& prompts,
             int64_t max_new_tokens, float temperature, int top_k, float top_p, uint64_t seed,
             const std::vector<int64_t>& stop_tokens, py::object on_step) {
            GenerateOptions o;
            o.max_new_tokens = max_new_tokens;
            o.sampling = sampling_params(temperature, top_k, top_p, seed);
            o.stop_tokens = stop_tokens;
            o.on_step = step_hook(std::move(on_step));
            py::gil_scoped_release release;
            return s.generate(prompts, o);
          },
          py::arg("prompts"), py::arg("max_new_tokens"), py::arg("temperature") = 0.0f,
          py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("seed") = 0,
          py::arg("stop_tokens") = std::vector<int64_t>(), py::arg("on_step") = py::none(),
          "New tokens for each prompt (the stop token, if hit, is included). on_step(tokens), if "
          "given, is called after each step with [(request index, token), ...]; returning False "
          "stops the call (the tokens so far are returned). A pending signal (Ctrl-C) raises "
          "KeyboardInterrupt at the next step.")
      .def(
          "logits",
          [](InferenceSession& s, const std::vector<int64_t>& prompt) {
            py::array_t<float> out({static_cast<py::ssize_t>(prompt.size()),
                                    static_cast<py::ssize_t>(s.config().vocab_size)});
            Tensor view(out.mutable_data(), DType::kFloat32,
                        {static_cast<int64_t>(prompt.size()), s.config().vocab_size});
            {
              py::gil_scoped_release release;
              s.logits_into(prompt, view);
            }
            return out;
          },
          py::arg("prompt"), "float32 [len(prompt), vocab_size] logits at every position.")
      .def_property_readonly("timings",
                             [](const InferenceSession& s) { return timings_dict(s.timings()); })
      .def_property_readonly("config",
                             [](const InferenceSession& s) { return config_dict(s.config()); })
      .def_property_readonly("options", [](const InferenceSession& s) { return s.options(); })
      .def_property_readonly("kv_cache_bytes", &InferenceSession::kv_cache_bytes)
      .def_property_readonly("memory_plan",
                             [](const InferenceSession& s) { return s.memory_plan().describe(); })
      .def_property_readonly("spilled_blocks", &InferenceSession::spilled_blocks)
      .def_property_readonly("host_kv_bytes", &InferenceSession::host_kv_bytes)
      .def_property_readonly("weight_bytes", &InferenceSession::weight_bytes)
      .def_property_readonly("rank", &InferenceSession::rank)
      .def_property_readonly("world_size", &InferenceSession::world_size)
      .def_property_readonly("uses_cuda_graphs", &InferenceSession::uses_cuda_graphs)
      .def_property_readonly("cuda_graphs_off_reason", &InferenceSession::cuda_graphs_off_reason)
      .def(
          "step_logits",
          [](const InferenceSession& s) {
            const Tensor logits = s.step_logits();
            py::array_t<float> out({static_cast<py::ssize_t>(logits.size(0)),
                                    static_cast<py::ssize_t>(logits.size(1))});
            Tensor view(out.mutable_data(), DType::kFloat32, {logits.size(0), logits.size(1)});
            s.copy_step_logits(view);
            return out;
          },
          "float32 [B, vocab] logits of the last step of generate() (for on_step hooks and "
          "checks; call it from the generating thread).");
}

}  // namespace fastattn::py_bind
