// A process-wide team of worker threads for the short parallel regions of a CPU decode step
// (internal to the CPU kernels).
//
// Why not OpenMP: the package makes OpenMP's idle threads wait passively (README, "Busy
// machines"), so every parallel region wakes a sleeping thread through the kernel, and on the
// 2-core development VM that costs 10-60 us per region (bench cpu-step's "region cost"); a
// batch-1 decode step of a 30-layer model opens ~120 such regions (four GEMVs a layer). OpenMP's
// spinning waits remove that cost on an idle machine but, on a loaded one, a spinning worker that
// shares a core with the thread that has work holds the core for its whole spin count.
//
// This team's workers, between runs, first spin on a flag for a few microseconds, then keep
// polling with sched_yield() between polls (so a thread with work on the same core, ours or a
// neighbour's, gets the core), and after kSpinMicros without work sleep on a condition variable.
// Back-to-back regions of a decode step therefore cost a cache-line handoff, and an idle process
// costs nothing after a fraction of a millisecond. When a run's workers finish well after the
// caller's own share although every worker was polling when the run began (a polling worker
// had no core: a CPU-bound neighbour; a sleeping one is late by its wake-up alone, which does
// not count), nobody polls for a while
// (5 ms, doubling while late runs keep coming, up to 1 s): a polling caller would keep its core busy so the scheduler could not move the waiting
// worker onto it (measured: 10x slower decode beside one spinning neighbour without this).
#pragma once

namespace fastattn::kernels::cpu {

// fn(arg, t, nt) is run for t = 0 .. nt-1, t = 0 on the calling thread; returns when all are
// done. fn must not throw. Returns false, running nothing, when the team cannot take the call:
// nt < 2, nt above the machine's hardware threads, the team busy with another caller's run
// (another thread's, or a nested call from inside a run), or inside an OpenMP parallel region;
// the caller then runs the work some other way.
using TeamFn = void (*)(void* arg, int t, int nt);
bool team_run(int nt, TeamFn fn, void* arg);

// Whether the team is used (team_run returns false while it is not): on unless
// FASTATTN_SPIN_TEAM=0 is set in the environment (measured on a quiet machine:
// docs/CPU_DECODE.md); set_team_enabled switches it at run time (for
// measuring the team against OpenMP regions in one process: bench cpu-step --compare-team).
// set_team_enabled returns the old value.
bool team_enabled();
bool set_team_enabled(bool enabled);

}  // namespace fastattn::kernels::cpu
