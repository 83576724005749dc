#include "fastattn/kernels/cpu/spin_team.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#include <unistd.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "fastattn/core/env.h"

namespace fastattn::kernels::cpu {
namespace {

using Clock = std::chrono::steady_clock;

// Polls without yielding for this long, then with sched_yield() between polls until kSpinMicros,
// then sleeps. The gaps between a decode step's GEMVs (norms, RoPE, single-threaded attention
// at short contexts) are 5-100 us, so a worker is still polling when the next run comes.
constexpr int64_t kPauseMicros = 5;
constexpr int64_t kSpinMicros = 300;
// Contention: a run whose workers finish more than this long after the caller's own share (and
// more than a quarter of that share's time) means a worker did not have a core, e.g. beside a
// CPU-bound neighbour. Polling then keeps the caller's core busy, so the scheduler cannot move the
// waiting worker onto it: for kCalmMillis after such a run nobody polls (waits sleep at once, as
// OpenMP's passive waits do), then polling is tried again. A late run soon after the previous
// calm period doubles the period (up to kCalmMaxMillis: a lasting neighbour costs one late run a
// second); an isolated one (another process's burst) starts again from kCalmMinMillis.
constexpr int64_t kLateMicros = 100;
constexpr int64_t kCalmMinMillis = 5;
constexpr int64_t kCalmMaxMillis = 1000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

inline void yield_core() {
#if defined(__unix__) || defined(__APPLE__)
  sched_yield();
#else
  std::this_thread::yield();
#endif
}

int current_pid() {
#if defined(__unix__) || defined(__APPLE__)
  return static_cast<int>(getpid());
#else
  return 0;
#endif
}

class Team {
 public:
  Team() : pid_(current_pid()) {}

  bool run(int nt, TeamFn fn, void* arg) {
    std::unique_lock<std::mutex> lock(run_mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return false;  // another caller's run, or nested inside ours
    while (static_cast<int>(workers_) < nt - 1) start_worker(static_cast<int>(workers_) + 1);
    fn_ = fn;
    arg_ = arg;
    nt_ = nt;
    pending_.store(static_cast<int>(workers_), std::memory_order_seq_cst);
    generation_.fetch_add(1, std::memory_order_seq_cst);  // publishes fn_, arg_, nt_
    // A sleeping worker is late by its wake-up (tens of us on a VM), which says nothing about
    // contention: only runs whose workers were all polling can start a calm period.
    const bool all_polling = sleepers_.load(std::memory_order_seq_cst) == 0;
    notify_sleepers();
    const Clock::time_point start = Clock::now();
    fn(arg, 0, nt);
    const Clock::time_point mine = Clock::now();
    wait_until([this] { return pending_.load(std::memory_order_seq_cst) == 0; });
    const Clock::time_point done = Clock::now();
    const auto late = done - mine;
    if (all_polling && late > std::chrono::microseconds(kLateMicros) && late * 4 > mine - start)
      note_late(done);
    return true;
  }

  int pid() const { return pid_; }

  // A late run at `now` (called under run_mutex_): starts or lengthens a calm period.
  void note_late(Clock::time_point now) {
    const bool recent = now - last_late_ < 4 * std::chrono::milliseconds(calm_millis_);
    calm_millis_ = recent ? std::min(2 * calm_millis_, kCalmMaxMillis) : kCalmMinMillis;
    last_late_ = now;
    calm_until_.store((now + std::chrono::milliseconds(calm_millis_)).time_since_epoch().count(),
                      std::memory_order_relaxed);
  }

  // True while waits should sleep at once (after a late run; see kLateMicros).
  bool calm(Clock::time_point now) const {
    return now.time_since_epoch().count() < calm_until_.load(std::memory_order_relaxed);
  }

 private:
  void start_worker(int t) {
    // Detached: the team lives as long as the process (never destroyed, so no thread is joined
    // during static destruction while Python shuts down).
    // It starts from the current generation: the next bump is its first run.
    const uint64_t seen = generation_.load(std::memory_order_seq_cst);
    std::thread([this, t, seen] { worker_loop(t, seen); }).detach();
    ++workers_;
  }

  void worker_loop(int t, uint64_t seen) {
    for (;;) {
      wait_until([&] { return generation_.load(std::memory_order_seq_cst) != seen; });
      seen = generation_.load(std::memory_order_acquire);
      if (t < nt_) fn_(arg_, t, nt_);
      if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1) notify_sleepers();
    }
  }

  // Polls ready() (see the header comment for the phases), then sleeps until it holds.
  template <class Ready>
  void wait_until(Ready ready) {
    if (ready()) return;
    Clock::time_point now = Clock::now();
    const Clock::time_point start = now;
    for (uint32_t i = 1; !calm(now); ++i) {
      if (ready()) return;
      cpu_relax();
      if (i % 32 == 0) {
        now = Clock::now();
        const int64_t us =
            std::chrono::duration_cast<std::chrono::microseconds>(now - start).count();
        if (us >= kSpinMicros) break;
        if (us >= kPauseMicros) yield_core();
      }
    }
    std::unique_lock<std::mutex> lock(sleep_mutex_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    wake_.wait(lock, ready);
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  }

  // After a seq_cst change of the state a sleeper waits on: either the sleeper registered
  // before (we see it and wake it, under the mutex so it cannot be between its check and its
  // wait) or it checks after our change and does not sleep.
  void notify_sleepers() {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    wake_.notify_all();
  }

  const int pid_;
  std::mutex run_mutex_;
  size_t workers_ = 0;  // guarded by run_mutex_
  TeamFn fn_ = nullptr;
  void* arg_ = nullptr;
  int nt_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<Clock::rep> calm_until_{0};  // steady_clock ticks
  Clock::time_point last_late_{};          // guarded by run_mutex_, as calm_millis_
  int64_t calm_millis_ = kCalmMinMillis;
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
};

std::atomic<Team*> g_team{nullptr};
std::mutex g_team_mutex;

// The process's team; a child process after fork() gets a new one (the parent's workers do not
// exist in the child; the old object is left alone, its mutexes may be held).
Team* team() {
  Team* t = g_team.load(std::memory_order_acquire);
  if (t != nullptr && t->pid() == current_pid()) return t;
  std::lock_guard<std::mutex> lock(g_team_mutex);
  t = g_team.load(std::memory_order_acquire);
  if (t == nullptr || t->pid() != current_pid()) {
    t = new Team();  // never deleted (see start_worker)
    g_team.store(t, std::memory_order_release);
  }
  return t;
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> enabled{[] {
    // On unless FASTATTN_SPIN_TEAM=0: on the quiet 2-core VM a SmolLM2-135M decode step took
    // 8.69 vs 15.06 ms (bf16) and 15.89 vs 21.81 ms (f32) against OpenMP regions, and beside a
    // busy neighbour stayed within the reliability goal (docs/CPU_DECODE.md).
    return env_flag("FASTATTN_SPIN_TEAM", true);
  }()};
  return enabled;
}

}  // namespace

bool team_enabled() { return enabled_flag().load(std::memory_order_relaxed); }

bool set_team_enabled(bool enabled) { return enabled_flag().exchange(enabled); }

bool team_run(int nt, TeamFn fn, void* arg) {
  if (nt < 2 || !team_enabled()) return false;
  static const int hw = static_cast<int>(std::thread::hardware_concurrency());
  if (hw > 0 && nt > hw) return false;
#if defined(_OPENMP)
  if (omp_in_parallel()) return false;
#endif
  return team()->run(nt, fn, arg);
}

}  // namespace fastattn::kernels::cpu
