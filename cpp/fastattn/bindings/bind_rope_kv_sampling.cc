// Kernel-level test bindings (part B): rotary embedding, KV-cache write, the fused rope + cache
// write and sampling, on numpy arrays / torch tensors (CPU or CUDA), zero-copy through DLPack.
// CUDA work runs on `stream` (a cudaStream_t as int; 0 = the default stream). The GIL is
// released while a kernel runs.
#include <cstdint>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "fastattn/bindings/bindings.h"
#include "fastattn/core/context.h"
#include "fastattn/kernels/kv_cache_write.h"
#include "fastattn/kernels/rope.h"
#include "fastattn/kernels/sampling.h"

namespace fastattn::py_bind {

namespace {

// RopeParams from a dict {style, theta, rotary_dim, scaling, factor, low_freq_factor,
// high_freq_factor, original_max_position}; missing keys keep RopeParams' defaults.
kernels::RopeParams rope_params(const py::dict& d) {
  kernels::RopeParams p;
  for (const auto& item : d) {
    const std::string key = py::str(item.first);
    const py::handle v = item.second;
    if (key == "style") {
      const std::string s = py::str(v);
      FA_CHECK(s == "neox" || s == "interleaved", "rope.style: '", s,
               "' is not one of neox, interleaved");
      p.style = s == "neox" ? kernels::RopeStyle::kNeox : kernels::RopeStyle::kInterleaved;
    } else if (key == "scaling") {
      const std::string s = py::str(v);
      if (s == "none") {
        p.scaling = kernels::RopeScaling::kNone;
      } else if (s == "linear") {
        p.scaling = kernels::RopeScaling::kLinear;
      } else if (s == "llama3") {
        p.scaling = kernels::RopeScaling::kLlama3;
      } else if (s == "dynamic") {
        p.scaling = kernels::RopeScaling::kDynamicNTK;
      } else {
        FA_THROW_AS(InvalidArgument, "rope.scaling: '", s,
                    "' is not one of none, linear, llama3, dynamic");
      }
    } else if (key == "theta") {
      p.theta = v.cast<float>();
    } else if (key == "rotary_dim") {
      p.rotary_dim = v.cast<int>();
    } else if (key == "factor") {
      p.factor = v.cast<float>();
    } else if (key == "low_freq_factor") {
      p.low_freq_factor = v.cast<float>();
    } else if (key == "high_freq_factor") {
      p.high_freq_factor = v.cast<float>();
    } else if (key == "original_max_position") {
      p.original_max_position = v.cast<int>();
    } else {
      FA_THROW_AS(InvalidArgument, "rope: unknown key '", key,
                  "' (known: style, theta, rotary_dim, scaling, factor, low_freq_factor, "
                  "high_freq_factor, original_max_position)");
    }
  }
  return p;
}

void rope_py(const py::handle& x, const py::handle& positions, const py::dict& rope,
             int64_t seq_len, int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const kernels::RopeParams p = rope_params(rope);
  Tensor xt = tensor_from_py(x, "x");
  const Tensor pt = tensor_from_py(positions, "positions");
  py::gil_scoped_release release;
  kernels::apply_rope(ctx, p, xt, pt, seq_len);
}

void kv_cache_write_py(const py::handle& k_new, const py::handle& v_new, const py::handle& k_cache,
                       const py::handle& v_cache, const py::handle& slot_mapping, int num_threads,
                       uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const Tensor k = tensor_from_py(k_new, "k_new");
  const Tensor v = tensor_from_py(v_new, "v_new");
  Tensor kc = tensor_from_py(k_cache, "k_cache");
  Tensor vc = tensor_from_py(v_cache, "v_cache");
  const Tensor slots = tensor_from_py(slot_mapping, "slot_mapping");
  py::gil_scoped_release release;
  kernels::kv_cache_write(ctx, k, v, kc, vc, slots);
}

void rope_kv_cache_write_py(const py::handle& q, const py::handle& k, const py::handle& v,
                            const py::handle& positions, const py::handle& k_cache,
                            const py::handle& v_cache, const py::handle& slot_mapping,
                            const py::dict& rope, int64_t seq_len, int num_threads,
                            uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const kernels::RopeParams p = rope_params(rope);
  Tensor qt = tensor_from_py(q, "q");
  Tensor kt = tensor_from_py(k, "k");
  const Tensor vt = tensor_from_py(v, "v");
  const Tensor pt = tensor_from_py(positions, "positions");
  Tensor kc = tensor_from_py(k_cache, "k_cache");
  Tensor vc = tensor_from_py(v_cache, "v_cache");
  const Tensor slots = tensor_from_py(slot_mapping, "slot_mapping");
  py::gil_scoped_release release;
  kernels::rope_kv_cache_write(ctx, p, qt, kt, vt, pt, kc, vc, slots, seq_len);
}

// One value per row: a sequence of `rows` values, or a single value for every row.
template <typename T>
std::vector<T> per_row(const py::handle& obj, int64_t rows, const char* name) {
  if (py::isinstance<py::sequence>(obj) && !py::isinstance<py::str>(obj)) {
    const py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    FA_CHECK(static_cast<int64_t>(seq.size()) == rows, name, ": expected ", rows,
             " values (one per row) or a single value, got ", seq.size());
    std::vector<T> out;
    for (const py::handle item : seq) out.push_back(item.cast<T>());
    return out;
  }
  return std::vector<T>(static_cast<size_t>(rows), obj.cast<T>());
}

void sample_py(const py::handle& logits, const py::handle& out, const py::handle& temperature,
               const py::handle& top_k, const py::handle& top_p, const py::handle& seed,
               const py::handle& step, int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const Tensor lt = tensor_from_py(logits, "logits");
  Tensor ot = tensor_from_py(out, "out");
  FA_CHECK(lt.dim() == 2, "logits: expected 2 dimensions [B, V], got ", lt.describe());
  const int64_t rows = lt.size(0);
  const std::vector<float> temps = per_row<float>(temperature, rows, "temperature");
  const std::vector<int> ks = per_row<int>(top_k, rows, "top_k");
  const std::vector<float> ps = per_row<float>(top_p, rows, "top_p");
  const std::vector<uint64_t> seeds = per_row<uint64_t>(seed, rows, "seed");
  const std::vector<uint64_t> steps = per_row<uint64_t>(step, rows, "step");
  std::vector<kernels::SamplingParams> params(static_cast<size_t>(rows));
  for (size_t b = 0; b < params.size(); ++b) {
    params[b].temperature = temps[b];
    params[b].top_k = ks[b];
    params[b].top_p = ps[b];
    params[b].seed = seeds[b];
  }
  py::gil_scoped_release release;
  kernels::sample(ctx, lt, params, steps, ot);
}

}  // namespace

void bind_rope_kv_sampling(py::module_& m) {
  const char* rope_doc =
      "`rope` is a dict of RopeParams: style ('neox' | 'interleaved'), theta, rotary_dim "
      "(0 = head dim), scaling ('none' | 'linear' | 'llama3' | 'dynamic'), factor, "
      "low_freq_factor, high_freq_factor, original_max_position.";
  m.def("kernel_rope", &rope_py, py::arg("x"), py::arg("positions"), py::kw_only(),
        py::arg("rope") = py::dict(), py::arg("seq_len") = 0, py::arg("num_threads") = 0,
        py::arg("stream") = 0,
        (std::string("apply_rope in place on x [T, H, D] (float32 on the CPU; float32 / float16 / "
                     "bfloat16 on CUDA) with positions int32 / int64 [T]. seq_len: dynamic NTK's "
                     "sequence length (0 = max(positions) + 1; CUDA needs it given). ") +
         rope_doc)
            .c_str());
  m.def(
      "kernel_rope_inv_freq",
      [](int head_dim, const py::dict& rope, int64_t seq_len) {
        return kernels::rope_inv_freq(rope_params(rope), head_dim, seq_len);
      },
      py::arg("head_dim"), py::kw_only(), py::arg("rope") = py::dict(), py::arg("seq_len") = 0,
      "The float32 inverse frequencies apply_rope uses (rotary_dim / 2 values).");
  m.def("kernel_kv_cache_write", &kv_cache_write_py, py::arg("k_new"), py::arg("v_new"),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("slot_mapping"), py::kw_only(),
        py::arg("num_threads") = 0, py::arg("stream") = 0,
        "kv_cache_write: k_new / v_new [T, Hk, D] into paged caches [blocks, block_size, Hk, D] "
        "at slot_mapping int32 [T] (-1 skips; on CUDA out-of-range slots are skipped too).");
  m.def("kernel_rope_kv_cache_write", &rope_kv_cache_write_py, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("positions"), py::arg("k_cache"), py::arg("v_cache"),
        py::arg("slot_mapping"), py::kw_only(), py::arg("rope") = py::dict(),
        py::arg("seq_len") = 0, py::arg("num_threads") = 0, py::arg("stream") = 0,
        (std::string("rope_kv_cache_write: rotates q and k in place and writes the rotated k and "
                     "v into the caches (one kernel on CUDA). ") +
         rope_doc)
            .c_str());
  m.def("kernel_sample", &sample_py, py::arg("logits"), py::arg("out"), py::kw_only(),
        py::arg("temperature") = 0.0f, py::arg("top_k") = 0, py::arg("top_p") = 1.0f,
        py::arg("seed") = 0, py::arg("step") = 0, py::arg("num_threads") = 0, py::arg("stream") = 0,
        "sample: logits float32 [B, V] -> out int32 [B] (same device). temperature, top_k, top_p, "
        "seed and step: one value for every row or a sequence of B values.");
}

}  // namespace fastattn::py_bind
