// Argument checks and launch of the CUDA activation kernels (activation_kernels.cu).
#include "fastattn/kernels/cuda/activation_cuda.h"

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/activation_launch.h"
#include "fastattn/kernels/cuda/launch_checks.h"

namespace fastattn::kernels::cuda {
namespace {

// Vector width when every operand's rows allow 16-byte accesses, else 1.
int pick_vec(const EltLaunch& L) {
  const int vec = vec16(L.dtype);
  const size_t es = dtype_size(L.dtype);
  // Gated ops read 2 * cols per row of a; cols % vec == 0 keeps the up half aligned too.
  bool ok = vector_ok(L.a, L.lda, L.cols, es, vec) && vector_ok(L.out, L.ldo, L.cols, es, vec);
  if (L.b != nullptr) ok = ok && vector_ok(L.b, L.ldb, L.cols, es, vec);
  return ok ? vec : 1;
}

void launch(const Context& ctx, const Tensor& ref, EltLaunch& L, const char* what) {
  L.vec = pick_vec(L);
  if (L.rows == 0 || L.cols == 0) return;
  const DeviceGuard device(ref.device().index);
  launch_eltwise(L, stream_of(ctx));
  FA_CUDA_CHECK_LAUNCH(what);
}

// out[T, I] = f(gate_up[:, :I]) * gate_up[:, I:2I].
void gated(const Context& ctx, const Tensor& gate_up, Tensor& out, EltOp op, const char* what) {
  check_same_device(out, "out", gate_up, "gate_up");
  check_activation_dtype(gate_up, "gate_up");
  check_dim(gate_up, "gate_up", 2);
  FA_CHECK(gate_up.size(1) % 2 == 0, "gate_up: expected [T, 2 * intermediate], got ",
           gate_up.describe(), " (odd last dimension)");
  const int64_t T = gate_up.size(0), I = gate_up.size(1) / 2;
  check_same_dtype(out, "out", gate_up, "gate_up");
  check_shape(out, "out", {T, I});
  const RowLayout g = row_layout(gate_up, "gate_up");
  const RowLayout o = row_layout(out, "out");
  EltLaunch L;
  L.op = op;
  L.dtype = gate_up.dtype();
  L.a = gate_up.data();
  L.lda = g.ld;
  L.out = out.data();
  L.ldo = o.ld;
  L.rows = T;
  L.cols = I;
  launch(ctx, gate_up, L, what);
}

}  // namespace

void swiglu_cuda(const Context& ctx, const Tensor& gate_up, Tensor& out) {
  gated(ctx, gate_up, out, EltOp::kSwiglu, "swiglu");
}

void geglu_cuda(const Context& ctx, const Tensor& gate_up, Tensor& out, GeluApprox approx) {
  gated(ctx, gate_up, out, approx == GeluApprox::kTanh ? EltOp::kGegluTanh : EltOp::kGegluErf,
        "geglu");
}

void gelu_cuda(const Context& ctx, const Tensor& x, Tensor& out, GeluApprox approx) {
  check_same_device(out, "out", x, "x");
  check_activation_dtype(x, "x");
  check_same_dtype(out, "out", x, "x");
  check_shape(out, "out", x.shape());
  const RowLayout xr = row_layout(x, "x");
  const RowLayout o = row_layout(out, "out");
  EltLaunch L;
  L.op = approx == GeluApprox::kTanh ? EltOp::kGeluTanh : EltOp::kGeluErf;
  L.dtype = x.dtype();
  L.a = x.data();
  L.lda = xr.ld;
  L.out = out.data();
  L.ldo = o.ld;
  L.rows = xr.rows;
  L.cols = xr.cols;
  launch(ctx, x, L, "gelu");
}

void add_cuda(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  check_same_device(b, "b", a, "a");
  check_same_device(out, "out", a, "a");
  check_activation_dtype(a, "a");
  check_same_dtype(b, "b", a, "a");
  check_same_dtype(out, "out", a, "a");
  check_shape(b, "b", a.shape());
  check_shape(out, "out", a.shape());
  const RowLayout ar = row_layout(a, "a");
  const RowLayout br = row_layout(b, "b");
  const RowLayout o = row_layout(out, "out");
  EltLaunch L;
  L.op = EltOp::kAdd;
  L.dtype = a.dtype();
  L.a = a.data();
  L.lda = ar.ld;
  L.b = b.data();
  L.ldb = br.ld;
  L.out = out.data();
  L.ldo = o.ld;
  L.rows = ar.rows;
  L.cols = ar.cols;
  launch(ctx, a, L, "add");
}

}  // namespace fastattn::kernels::cuda
