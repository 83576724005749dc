// Benchmark of linear() in the decode regime: achieved weight bandwidth (GB/s) per weight dtype
// and shape, 1 and 2 threads, weights streamed from DRAM (many copies cycled, > L3) and hot in
// cache; OpenBLAS sgemv / sgemm at M=1 for comparison; a whole ~100M-param Llama decode step's
// GEMMs; the GEMV-vs-sgemm crossover in M. Not a ctest (timings): the C++ test build
// (tests/run_all.sh, build/tests) builds it; run it by hand:
//   build/tests/tests/cpp/bench_linear [all|shapes|step|crossover] [percentile, default 0.1]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/cpu/linear_impl.h"
#include "fastattn/kernels/gemm.h"
#include "kernel_test_util.h"

#if defined(FASTATTN_BLAS_PREFIX_SCIPY)
#define FA_CBLAS(name) scipy_cblas_##name
#define FA_BLAS_THREADS scipy_openblas_set_num_threads
#else
#define FA_CBLAS(name) cblas_##name
#define FA_BLAS_THREADS openblas_set_num_threads
#endif

using namespace fastattn;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kColdBytes = size_t{384} << 20;  // > 32 MiB L3 many times over

struct Weights {
  std::vector<fa_test::FloatData> copies;
  Weights(DType dt, int64_t N, int64_t K, bool cold) {
    const size_t bytes = static_cast<size_t>(N * K) * dtype_size(dt);
    const size_t n = cold ? std::max<size_t>(2, kColdBytes / bytes) : 1;
    for (size_t i = 0; i < n; ++i)
      copies.push_back(fa_test::make_float_data(dt, static_cast<size_t>(N * K), 1 + i % 4, 0.05f));
  }
};

// Seconds per call: a low percentile (default the 10th) of individually timed calls over
// >= 0.5 s, cycling through `copies` weight copies (> L3, so every call reads from DRAM). The
// development machine is shared: a call one of whose threads was descheduled waits a whole time
// slice (~4-8 ms), so means are meaningless; the low percentile is the undisturbed time.
double g_percentile = 0.1;
template <class F>
double time_per_call(F&& f, size_t copies) {
  for (size_t i = 0; i < copies; ++i) f(i);  // warm up (page in, thread pools)
  std::vector<double> t;
  const auto start = Clock::now();
  size_t next = 0;
  while (t.size() < 15 || std::chrono::duration<double>(Clock::now() - start).count() < 0.5) {
    const auto t0 = Clock::now();
    f(next++ % copies);
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  const size_t k = static_cast<size_t>(g_percentile * static_cast<double>(t.size() - 1));
  std::nth_element(t.begin(), t.begin() + k, t.end());
  return t[k];
}

double gbps(int64_t N, int64_t K, DType dt, double sec) {
  return static_cast<double>(N * K) * dtype_size(dt) / sec / 1e9;
}

void bench_shape(int64_t N, int64_t K, bool cold) {
  std::vector<float> x = fa_test::randn(static_cast<size_t>(16 * K), 5), y(16 * N);
  for (DType dt : fa_test::kFloatTypes) {
    Weights w(dt, N, K, cold);
    for (int threads : {1, 2}) {
      auto run = [&](size_t i) {
        Tensor xt(x.data(), DType::kFloat32, {1, K});
        Tensor wt(w.copies[i].data(), dt, {N, K});
        Tensor yt(y.data(), DType::kFloat32, {1, N});
        kernels::linear(cpu_context(threads), xt, wt, Tensor(), yt);
      };
      const double s = time_per_call(run, w.copies.size());
      std::printf("%-5s %6ldx%-5ld %-8s threads=%d  linear M=1: %8.1f us  %6.1f GB/s\n",
                  cold ? "cold" : "hot", static_cast<long>(N), static_cast<long>(K), dtype_name(dt),
                  threads, s * 1e6, gbps(N, K, dt, s));
      if (dt != DType::kFloat32) continue;
      FA_BLAS_THREADS(threads);
      auto sgemv = [&](size_t i) {
        FA_CBLAS(sgemv)(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), 1.0f,
                        static_cast<const float*>(w.copies[i].data()), static_cast<int>(K),
                        x.data(), 1, 0.0f, y.data(), 1);
      };
      const double sv = time_per_call(sgemv, w.copies.size());
      auto sgemm = [&](size_t i) {
        kernels::gemm_f32(false, true, 1, N, K, 1.0f, x.data(), K,
                          static_cast<const float*>(w.copies[i].data()), K, 0.0f, y.data(), N);
      };
      const double sm = time_per_call(sgemm, w.copies.size());
      std::printf(
          "%-5s %6ldx%-5ld %-8s threads=%d  OpenBLAS sgemv: %8.1f us  %6.1f GB/s   "
          "sgemm: %8.1f us  %6.1f GB/s\n",
          cold ? "cold" : "hot", static_cast<long>(N), static_cast<long>(K), "float32", threads,
          sv * 1e6, gbps(N, K, dt, sv), sm * 1e6, gbps(N, K, dt, sm));
      FA_BLAS_THREADS(2);
    }
  }
}

// One decode step's projections of a Llama-shaped model: hidden 768, intermediate 2048, vocab
// 32000, 12 layers, 12 heads (fused qkv 2304x768, o 768x768, fused gate_up 4096x768, down 768x2048).
void bench_decode_step(int threads) {
  struct Shape {
    int64_t N, K;
  };
  const std::vector<Shape> layer = {{2304, 768}, {768, 768}, {4096, 768}, {768, 2048}};
  std::vector<float> x = fa_test::randn(2048, 9), y(32000);
  for (DType dt : fa_test::kFloatTypes) {
    std::vector<fa_test::FloatData> ws;
    std::vector<Shape> shapes;
    for (int l = 0; l < 12; ++l)
      for (const Shape& s : layer) {
        ws.push_back(fa_test::make_float_data(dt, static_cast<size_t>(s.N * s.K), l + 1, 0.05f));
        shapes.push_back(s);
      }
    ws.push_back(fa_test::make_float_data(dt, 32000 * 768, 99, 0.05f));
    shapes.push_back({32000, 768});
    size_t bytes = 0;
    for (const Shape& s : shapes) bytes += static_cast<size_t>(s.N * s.K) * dtype_size(dt);
    auto step = [&](size_t) {
      for (size_t i = 0; i < ws.size(); ++i) {
        Tensor xt(x.data(), DType::kFloat32, {1, shapes[i].K});
        Tensor wt(ws[i].data(), dt, {shapes[i].N, shapes[i].K});
        Tensor yt(y.data(), DType::kFloat32, {1, shapes[i].N});
        kernels::linear(cpu_context(threads), xt, wt, Tensor(), yt);
      }
    };
    const double s = time_per_call(step, 1);
    std::printf("decode step (49 GEMVs, %.0f MB of %s weights) threads=%d: %6.2f ms  %5.1f GB/s\n",
                bytes / 1e6, dtype_name(dt), threads, s * 1e3, bytes / s / 1e9);
  }
}

// Time of the two regimes for M rows (weights cold): where the GEMV stops paying.
void bench_crossover(int threads) {
  const int64_t N = 2048, K = 768;
  std::vector<float> x = fa_test::randn(static_cast<size_t>(32 * K), 5), y(32 * N);
  for (DType dt : fa_test::kFloatTypes) {
    Weights w(dt, N, K, true);
    for (int64_t M : {1, 2, 4, 8, 12, 16, 24, 32}) {
      auto args = [&](size_t i) {
        kernels::cpu::LinearArgs a;
        a.x = x.data();
        a.ldx = K;
        a.w = w.copies[i].data();
        a.w_type = dt;
        a.y = y.data();
        a.ldy = N;
        a.M = M;
        a.N = N;
        a.K = K;
        return a;
      };
      const double g = time_per_call([&](size_t i) { kernels::cpu::gemv_rows(args(i), threads); },
                                     w.copies.size());
      const double b = time_per_call([&](size_t i) { kernels::cpu::gemm_blas(args(i), threads); },
                                     w.copies.size());
      std::printf("crossover %ldx%ld %-8s threads=%d M=%2ld  gemv: %8.1f us   blas: %8.1f us\n",
                  static_cast<long>(N), static_cast<long>(K), dtype_name(dt), threads,
                  static_cast<long>(M), g * 1e6, b * 1e6);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "all";
  if (argc > 2) g_percentile = std::atof(argv[2]);  // e.g. 0.5 for the median
  std::printf("BLAS: %s\n", kernels::blas_name());
  if (what == "all" || what == "shapes") {
    for (bool cold : {true, false})
      for (auto nk :
           {std::pair<int64_t, int64_t>{2048, 768}, {768, 2048}, {32000, 768}, {2304, 768}})
        bench_shape(nk.first, nk.second, cold);
  }
  if (what == "all" || what == "step") {
    bench_decode_step(1);
    bench_decode_step(2);
  }
  if (what == "step2") bench_decode_step(2);
  if (what == "all" || what == "crossover") {
    bench_crossover(1);
    bench_crossover(2);
  }
  return 0;
}
