// The CPU kernels' spin team (kernels/cpu/spin_team.h; off by default, switched on here): every
// share runs exactly once per run,
// back to back and after the workers have gone to sleep; a nested call and a call while another
// thread's run is in flight are refused (the caller falls back); and linear() (whose GEMV runs on
// the team) gives correct results from two threads at once and after idle pauses.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/cpu/spin_team.h"
#include "fastattn/kernels/gemm.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using kernels::cpu::set_team_enabled;
using kernels::cpu::team_run;

namespace {

struct Counts {
  std::vector<std::atomic<int>> hits;
  std::atomic<int> bad_nt{0};
  int nt;
  explicit Counts(int n) : hits(static_cast<size_t>(n)), nt(n) {}
};

void count_share(void* arg, int t, int nt) {
  auto* c = static_cast<Counts*>(arg);
  if (nt != c->nt || t < 0 || t >= nt) {
    c->bad_nt.fetch_add(1);
    return;
  }
  c->hits[static_cast<size_t>(t)].fetch_add(1);
}

int hardware_threads() { return static_cast<int>(std::thread::hardware_concurrency()); }

// y = x @ w^T for x [1, K], w [N, K] float32, against float64; true when every output is within
// the fp32 accumulation bound.
bool linear_matches(int64_t N, int64_t K, uint32_t seed) {
  const std::vector<float> x = fa_test::randn(static_cast<size_t>(K), seed);
  const std::vector<float> w = fa_test::randn(static_cast<size_t>(N * K), seed + 1);
  std::vector<float> y(static_cast<size_t>(N), fa_test::kPoison);
  Tensor xt(const_cast<float*>(x.data()), DType::kFloat32, {1, K});
  Tensor wt(const_cast<float*>(w.data()), DType::kFloat32, {N, K});
  Tensor yt(y.data(), DType::kFloat32, {1, N});
  kernels::linear(cpu_context(2), xt, wt, Tensor(), yt);
  for (int64_t n = 0; n < N; ++n) {
    double ref = 0, mag = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double p = static_cast<double>(x[k]) * w[n * K + k];
      ref += p;
      mag += std::fabs(p);
    }
    if (!(std::fabs(y[n] - ref) <= (K + 2) * std::ldexp(1.0, -24) * mag + 1e-30)) return false;
  }
  return true;
}

}  // namespace

TEST(team_is_on_by_default_and_switches) {
  if (std::getenv("FASTATTN_SPIN_TEAM") == nullptr) CHECK(kernels::cpu::team_enabled());
  set_team_enabled(false);
  CHECK(!team_run(2, &count_share, nullptr));  // off: refused, nothing runs
  CHECK(!set_team_enabled(true));
  CHECK(kernels::cpu::team_enabled());
}

TEST(team_runs_every_share_once) {
  set_team_enabled(true);
  const int nt = std::min(2, std::max(1, hardware_threads()));
  if (nt < 2) {
    CHECK(!team_run(2, &count_share, nullptr));  // one hardware thread: always refused
    return;
  }
  Counts c(nt);
  const int runs = 2000;
  int taken = 0;
  for (int i = 0; i < runs; ++i) taken += team_run(nt, &count_share, &c) ? 1 : 0;
  CHECK(taken == runs);
  // After each pause the workers have gone to sleep (> the 300 us spin): the wake-up path.
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    taken += team_run(nt, &count_share, &c) ? 1 : 0;
  }
  CHECK(taken == runs + 20);
  CHECK(c.bad_nt.load() == 0);
  for (int t = 0; t < nt; ++t) CHECK(c.hits[static_cast<size_t>(t)].load() == taken);
}

TEST(team_refuses_what_it_cannot_take) {
  set_team_enabled(true);
  CHECK(!team_run(1, &count_share, nullptr));
  CHECK(!team_run(hardware_threads() + 1, &count_share, nullptr));
  if (hardware_threads() < 2) return;
  // A run started from inside a run (the team is busy) is refused; the outer one completes.
  struct Nested {
    std::atomic<int> refused{0}, ran{0};
  } n;
  auto outer = [](void* arg, int, int) {
    auto* s = static_cast<Nested*>(arg);
    s->ran.fetch_add(1);
    if (!team_run(2, [](void*, int, int) {}, nullptr)) s->refused.fetch_add(1);
  };
  CHECK(team_run(2, outer, &n));
  CHECK(n.ran.load() == 2);
  CHECK(n.refused.load() == 2);
}

TEST(linear_on_the_team_from_two_threads_and_after_pauses) {
  set_team_enabled(true);
  // N * K above the GEMV's threading threshold, so 2-thread calls go to the team; two callers at
  // once: one gets the team, the other OpenMP; both must be right.
  std::atomic<int> wrong{0};
  auto caller = [&](uint32_t seed) {
    for (int i = 0; i < 40; ++i)
      if (!linear_matches(257, 300, seed + static_cast<uint32_t>(i))) wrong.fetch_add(1);
  };
  std::thread a(caller, 10u), b(caller, 1000u);
  a.join();
  b.join();
  CHECK(wrong.load() == 0);
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    CHECK(linear_matches(300, 257, 50u + static_cast<uint32_t>(i)));
  }
}

TEST_MAIN()
