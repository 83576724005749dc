// Kernel-level ops: attention (fmha_forward) on numpy arrays / torch tensors, zero-copy through
// DLPack. The GIL is released while the kernel runs.
#include <cstdint>
#include <string>

#include "fastattn/bindings/bindings.h"
#include "fastattn/core/context.h"
#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/cpu/read_loop.h"
#include "fastattn/kernels/cpu/spin_team.h"

namespace fastattn::py_bind {

namespace {

void fmha_forward_py(const py::handle& q, const py::handle& k, const py::handle& v,
                     const py::handle& out, const py::handle& lse, const py::handle& cu_seqlens_q,
                     const py::handle& cu_seqlens_k, const py::handle& block_table,
                     const py::handle& seqlens_k, float softmax_scale, bool causal, int window_left,
                     int window_right, const py::handle& alibi_slopes, int num_threads,
                     int max_seqlen_q, int max_seqlen_k, int num_splits, const std::string& impl,
                     uintptr_t stream) {
  kernels::FmhaParams p;
  p.q = tensor_from_py(q, "q");
  p.k = tensor_from_py(k, "k");
  p.v = tensor_from_py(v, "v");
  p.out = tensor_from_py(out, "out");
  p.lse = optional_tensor_from_py(lse, "lse");
  p.cu_seqlens_q = tensor_from_py(cu_seqlens_q, "cu_seqlens_q");
  p.cu_seqlens_k = optional_tensor_from_py(cu_seqlens_k, "cu_seqlens_k");
  p.block_table = optional_tensor_from_py(block_table, "block_table");
  p.seqlens_k = optional_tensor_from_py(seqlens_k, "seqlens_k");
  p.alibi_slopes = optional_tensor_from_py(alibi_slopes, "alibi_slopes");
  p.softmax_scale = softmax_scale;
  p.causal = causal;
  p.window_left = window_left;
  p.window_right = window_right;
  p.max_seqlen_q = max_seqlen_q;
  p.max_seqlen_k = max_seqlen_k;
  p.num_splits = num_splits;
  p.impl = impl;
  const Context ctx = call_context(num_threads, stream);
  // The views stay valid without the GIL: the caller's arguments keep the arrays alive.
  py::gil_scoped_release release;
  kernels::fmha_forward(ctx, p);
}

uint64_t read_loop_py(const py::buffer& data, int num_threads) {
  const py::buffer_info info = data.request();
  FA_CHECK(info.ndim == 1 && info.strides[0] == info.itemsize,
           "read_loop: data must be a contiguous 1-D buffer");
  const size_t bytes = static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize);
  py::gil_scoped_release release;
  return kernels::cpu::read_loop(info.ptr, bytes, num_threads);
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def("fmha_forward", &fmha_forward_py, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("lse") = py::none(), py::kw_only(), py::arg("cu_seqlens_q"),
        py::arg("cu_seqlens_k") = py::none(), py::arg("block_table") = py::none(),
        py::arg("seqlens_k") = py::none(), py::arg("softmax_scale") = 0.0f,
        py::arg("causal") = false, py::arg("window_left") = -1, py::arg("window_right") = -1,
        py::arg("alibi_slopes") = py::none(), py::arg("num_threads") = 0,
        py::arg("max_seqlen_q") = 0, py::arg("max_seqlen_k") = 0, py::arg("num_splits") = 0,
        py::arg("impl") = "auto", py::arg("stream") = 0,
        R"doc(FlashAttention-2 forward into preallocated `out` (and optionally `lse`).

Layouts (FlashAttention's varlen convention): q, out [total_q, Hq, D]; contiguous k, v
[total_k, Hk, D] with cu_seqlens_k, or paged k, v [num_blocks, block_size, Hk, D] with
block_table [B, max_blocks] and seqlens_k [B]; cu_seqlens_q int32 [B + 1]; lse float32
[Hq, total_q] (natural log). Masks are bottom-right aligned. Any float dtype for q, k / v, out.
On CUDA tensors (a CUDA build): q, k, v, out of one dtype, runs on `stream` (a cudaStream_t as
int; 0 = the default stream). `impl`: "auto" (paged KV, float32 or few queries per sequence: the
split-KV decode kernel; else FlashAttention-2 on the native MMA path), "884" / "1688" / "16816"
(that FlashAttention-2 path; contiguous fp16 / bf16), "decode" / "decode-async" /
"decode-regstage" (the decode kernel; -async / -regstage force its cp.async or its sm_70 / sm_75
register-staged copies). `max_seqlen_q` / `max_seqlen_k` (0 = unknown)
spare reading the index arrays back; `num_splits` fixes the decode kernel's KV split count
(0 = heuristic, 1 = no split). CPU tensors take impl="auto" and ignore the GPU-only options.
Bad input raises ValueError naming the argument.)doc");
  m.def("read_loop", &read_loop_py, py::arg("data"), py::arg("num_threads") = 0,
        R"doc(Reads a contiguous 1-D buffer once on num_threads OpenMP threads (0 = the default) and
returns the sum of its 64-bit words: the plain read loop `bench spill-cpu` compares the CPU
attention kernel's KV bandwidth against. The GIL is released.)doc");
  m.def(
      "cpu_spin_team",
      [](py::object enabled) {
        if (enabled.is_none()) return kernels::cpu::team_enabled();
        return kernels::cpu::set_team_enabled(enabled.cast<bool>());
      },
      py::arg("enabled") = py::none(),
      R"doc(Whether the CPU GEMV runs its threads on the spin team (kernels/cpu/spin_team.h) instead
of OpenMP regions. With `enabled` (a bool) switches it and returns the old value (for A/B
measurements, `bench cpu-step --compare-team`); default off, on with FASTATTN_SPIN_TEAM=1.)doc");
}

}  // namespace fastattn::py_bind
