// Kernel-level bindings for tests: norm, linear, bias, activations and the embedding lookup on
// numpy arrays / torch tensors (CPU or CUDA), zero-copy through DLPack. Every function writes
// into preallocated outputs and runs on the device its tensors live on; `stream` is a
// cudaStream_t as an int (0 = the default stream; ignored on the CPU). The GIL is released while
// the kernel runs. Bad input raises ValueError naming the argument.
#include <cstdint>
#include <string>

#include "fastattn/bindings/bindings.h"
#include "fastattn/core/context.h"
#include "fastattn/kernels/activation.h"
#include "fastattn/kernels/embedding.h"
#include "fastattn/kernels/gemm.h"
#include "fastattn/kernels/norm.h"

#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/linear_cuda.h"
#endif

namespace fastattn::py_bind {
namespace {

kernels::NormParams norm_params(const std::string& type, float eps) {
  kernels::NormParams p;
  if (type == "rms") {
    p.type = kernels::NormType::kRMSNorm;
  } else if (type == "layer") {
    p.type = kernels::NormType::kLayerNorm;
  } else {
    FA_THROW_AS(InvalidArgument, "type: expected 'rms' or 'layer', got '", type, "'");
  }
  p.eps = eps;
  return p;
}

kernels::GeluApprox gelu_approx(const std::string& approx) {
  if (approx == "erf" || approx == "none") return kernels::GeluApprox::kErf;
  if (approx == "tanh") return kernels::GeluApprox::kTanh;
  FA_THROW_AS(InvalidArgument, "approximate: expected 'erf' (or 'none') or 'tanh', got '", approx,
              "'");
}

void norm_py(const py::handle& x, const py::handle& weight, const py::handle& bias,
             const py::handle& out, const std::string& type, float eps, int num_threads,
             uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const kernels::NormParams p = norm_params(type, eps);
  const Tensor xt = tensor_from_py(x, "x"), wt = tensor_from_py(weight, "weight");
  const Tensor bt = optional_tensor_from_py(bias, "bias");
  Tensor ot = tensor_from_py(out, "out");
  py::gil_scoped_release release;
  kernels::norm(ctx, p, xt, wt, bt, ot);
}

void add_norm_py(const py::handle& residual, const py::handle& x, const py::handle& weight,
                 const py::handle& bias, const py::handle& out, const std::string& type, float eps,
                 int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const kernels::NormParams p = norm_params(type, eps);
  Tensor rt = tensor_from_py(residual, "residual");
  const Tensor xt = tensor_from_py(x, "x"), wt = tensor_from_py(weight, "weight");
  const Tensor bt = optional_tensor_from_py(bias, "bias");
  Tensor ot = tensor_from_py(out, "out");
  py::gil_scoped_release release;
  kernels::add_norm(ctx, p, rt, xt, wt, bt, ot);
}

void linear_py(const py::handle& x, const py::handle& w, const py::handle& bias,
               const py::handle& y, const std::string& impl, int gemv_warps, int gemv_stages,
               int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const Tensor xt = tensor_from_py(x, "x"), wt = tensor_from_py(w, "w");
  const Tensor bt = optional_tensor_from_py(bias, "bias");
  Tensor yt = tensor_from_py(y, "y");
  FA_CHECK(impl == "auto" || impl == "cublas" || impl == "gemv",
           "impl: expected 'auto', 'cublas' or 'gemv', got '", impl, "'");
  FA_CHECK(gemv_warps >= 0, "gemv_warps: expected >= 0 (0 = the heuristic), got ", gemv_warps);
  FA_CHECK(gemv_stages >= 0, "gemv_stages: expected >= 0 (0 = the default), got ", gemv_stages);
  if (xt.device().type != DeviceType::kCUDA) {
    FA_CHECK(impl == "auto" && gemv_warps == 0 && gemv_stages == 0,
             "impl / gemv_warps / gemv_stages choose a CUDA kernel; x is on ", xt.device().str());
    py::gil_scoped_release release;
    kernels::linear(ctx, xt, wt, bt, yt);
    return;
  }
#if defined(FASTATTN_WITH_CUDA)
  kernels::cuda::LinearCudaOptions options;
  options.impl = impl == "cublas" ? kernels::cuda::LinearCudaImpl::kCublas
                 : impl == "gemv" ? kernels::cuda::LinearCudaImpl::kSmallBatchGemv
                                  : kernels::cuda::LinearCudaImpl::kAuto;
  options.gemv_warps = gemv_warps;
  options.gemv_stages = gemv_stages;
  py::gil_scoped_release release;
  kernels::cuda::linear_cuda(ctx, xt, wt, bt, yt, options);
#else
  FA_THROW_AS(InvalidArgument, "x: a CUDA tensor, but this build has no CUDA");
#endif
}

void add_bias_py(const py::handle& bias, const py::handle& y, int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const Tensor bt = tensor_from_py(bias, "bias");
  Tensor yt = tensor_from_py(y, "y");
  py::gil_scoped_release release;
  kernels::add_bias(ctx, bt, yt);
}

void swiglu_py(const py::handle& gate_up, const py::handle& out, int num_threads,
               uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const Tensor gt = tensor_from_py(gate_up, "gate_up");
  Tensor ot = tensor_from_py(out, "out");
  py::gil_scoped_release release;
  kernels::swiglu(ctx, gt, ot);
}

void geglu_py(const py::handle& gate_up, const py::handle& out, const std::string& approximate,
              int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const kernels::GeluApprox approx = gelu_approx(approximate);
  const Tensor gt = tensor_from_py(gate_up, "gate_up");
  Tensor ot = tensor_from_py(out, "out");
  py::gil_scoped_release release;
  kernels::geglu(ctx, gt, ot, approx);
}

void gelu_py(const py::handle& x, const py::handle& out, const std::string& approximate,
             int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const kernels::GeluApprox approx = gelu_approx(approximate);
  const Tensor xt = tensor_from_py(x, "x");
  Tensor ot = tensor_from_py(out, "out");
  py::gil_scoped_release release;
  kernels::gelu(ctx, xt, ot, approx);
}

void add_py(const py::handle& a, const py::handle& b, const py::handle& out, int num_threads,
            uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const Tensor at = tensor_from_py(a, "a"), bt = tensor_from_py(b, "b");
  Tensor ot = tensor_from_py(out, "out");
  py::gil_scoped_release release;
  kernels::add(ctx, at, bt, ot);
}

void embedding_py(const py::handle& ids, const py::handle& table, const py::handle& out,
                  int64_t vocab_start, bool vocab_parallel, int num_threads, uintptr_t stream) {
  const Context ctx = call_context(num_threads, stream);
  const Tensor it = tensor_from_py(ids, "ids"), tt = tensor_from_py(table, "table");
  Tensor ot = tensor_from_py(out, "out");
  py::gil_scoped_release release;
  kernels::embedding_lookup(ctx, it, tt, ot, vocab_start, vocab_parallel);
}

}  // namespace

void bind_kernels(py::module_& m) {
  const auto threads = py::arg("num_threads") = 0;
  const auto stream = py::arg("stream") = 0;
  m.def("kernel_norm", &norm_py, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::kw_only(), py::arg("type") = "rms", py::arg("eps") = 1e-6f, threads, stream,
        "out[T, H] = RMSNorm (type='rms') or LayerNorm (type='layer') of x[T, H] * weight "
        "(+ bias, LayerNorm only; None for none). out may be x.");
  m.def("kernel_add_norm", &add_norm_py, py::arg("residual"), py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("out"), py::kw_only(), py::arg("type") = "rms",
        py::arg("eps") = 1e-6f, threads, stream,
        "residual += x (in place), then out = norm(residual) as kernel_norm.");
  m.def(
      "kernel_linear", &linear_py, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"),
      py::kw_only(), py::arg("impl") = "auto", py::arg("gemv_warps") = 0,
      py::arg("gemv_stages") = 0, threads, stream,
      "y[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]; None for none). On CUDA y may be float32 for "
      "16-bit x / w, and impl picks the kernel: 'auto', 'cublas' or 'gemv' (the small-batch "
      "GEMV, M <= 16; gemv_warps: its warps per block, 0 = heuristic; gemv_stages: 1, 2 or 3 load "
      "groups in flight per warp, 0 = default).");
  m.def("kernel_add_bias", &add_bias_py, py::arg("bias"), py::arg("y"), py::kw_only(), threads,
        stream, "y[t, :] += bias (in place).");
  m.def("kernel_swiglu", &swiglu_py, py::arg("gate_up"), py::arg("out"), py::kw_only(), threads,
        stream, "out[T, I] = silu(gate_up[:, :I]) * gate_up[:, I:].");
  m.def("kernel_geglu", &geglu_py, py::arg("gate_up"), py::arg("out"), py::kw_only(),
        py::arg("approximate") = "erf", threads, stream,
        "out[T, I] = gelu(gate_up[:, :I]) * gate_up[:, I:] (approximate 'erf' or 'tanh').");
  m.def("kernel_gelu", &gelu_py, py::arg("x"), py::arg("out"), py::kw_only(),
        py::arg("approximate") = "erf", threads, stream,
        "out = gelu(x) (approximate 'erf' or 'tanh'); out may be x.");
  m.def("kernel_add", &add_py, py::arg("a"), py::arg("b"), py::arg("out"), py::kw_only(), threads,
        stream, "out = a + b; out may be a or b.");
  m.def("kernel_embedding", &embedding_py, py::arg("ids"), py::arg("table"), py::arg("out"),
        py::kw_only(), py::arg("vocab_start") = 0, py::arg("vocab_parallel") = false, threads,
        stream,
        "out[T, H] = table[ids - vocab_start]. CPU: out float32, bad ids raise ValueError. CUDA: "
        "out of table's dtype or float32; ids outside the table give zero rows.");
}

}  // namespace fastattn::py_bind
