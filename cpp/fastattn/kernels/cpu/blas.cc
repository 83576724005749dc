// The BLAS entry points the CPU kernels use, behind one wrapper so the symbol prefix of the
// linked OpenBLAS (plain `cblas_` or the scipy-openblas32 wheel's `scipy_cblas_`) stays here.
#include <cblas.h>

#include <limits>

#include "fastattn/kernels/gemm.h"

#if defined(FASTATTN_BLAS_PREFIX_SCIPY)
#define FA_CBLAS(name) scipy_cblas_##name
#else
#define FA_CBLAS(name) cblas_##name
// Present in OpenBLAS; other BLAS libraries lack it (then the BLAS decides its own threading).
extern "C" void openblas_set_num_threads(int num_threads) __attribute__((weak));
#endif

#ifndef FASTATTN_BLAS_NAME
#define FASTATTN_BLAS_NAME "BLAS"
#endif

namespace fastattn::kernels {
namespace {

// The CPU kernels parallelise with OpenMP and call sgemm from inside their parallel regions, so
// OpenBLAS's own thread pool is set to one thread, once: two pools (OpenMP's spinning workers and
// OpenBLAS's) competing for the same cores cost far more than they bring.
void blas_single_threaded_once() {
  static const bool done = [] {
#if defined(FASTATTN_BLAS_PREFIX_SCIPY)
    scipy_openblas_set_num_threads(1);
#else
    if (openblas_set_num_threads != nullptr) openblas_set_num_threads(1);
#endif
    return true;
  }();
  (void)done;
}

}  // namespace

void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  FA_CHECK(m <= kMax && n <= kMax && k <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax,
           "gemm_f32: dimensions ", m, "x", n, "x", k, " exceed the 32-bit BLAS interface");
  if (m == 0 || n == 0) return;
  blas_single_threaded_once();
  FA_CBLAS(sgemm)(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                  trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                  static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb),
                  beta, c, static_cast<int>(ldc));
}

const char* blas_name() { return FASTATTN_BLAS_NAME; }

}  // namespace fastattn::kernels
